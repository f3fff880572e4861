//! Identity's use cases, one method each, on parsed input: logging in, refreshing
//! and ending sessions, changing passwords ([`sessions`], with the brute-force
//! throttle in [`throttle`] and the tokens they issue in [`tokens`]); users and their
//! roles ([`users`]); API keys and their exchange for tokens ([`api_keys`]); service
//! accounts and their tokens ([`service_accounts`]); the signing keys ([`keys`], over
//! [`signing`]); and the audit trail ([`audit`]). [`bootstrap`] is what the first
//! start creates.
//!
//! Authentication failures never say which part was wrong (unknown user, wrong
//! password and disabled user read the same) and cost the same time. Partner
//! principals only ever see their own partner's users and keys; anything else is
//! NOT_FOUND.

mod api_keys;
mod audit;
mod bootstrap;
mod keys;
mod partners;
mod service_accounts;
mod sessions;
mod signing;
mod throttle;
mod tokens;
mod users;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use retail_kit::auth::{Principal, Verifier};
use retail_kit::error::{ServiceError, ServiceResult};
use sea_orm::DatabaseConnection;

use crate::domain::fields::Password;
use crate::domain::lockout::LockoutPolicy;
use crate::domain::passwords::PasswordHasherConfig;
use crate::domain::users::UserKind;
use crate::settings::{Settings, TokenSettings};
use crate::store::{self, Audit, user};
use signing::{KeyRing, StoreKeySource};

pub(crate) use api_keys::{ApiKeyCreated, NewApiKey};
pub(crate) use service_accounts::{NewServiceAccount, ServiceAccountCreated};
pub(crate) use sessions::Login;
pub(crate) use tokens::Tokens;
pub(crate) use users::{NewUser, UserUpdate};

/// The service's state and its use cases.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) db: DatabaseConnection,
    keys: Arc<KeyRing>,
    pub(crate) verifier: Arc<Verifier>,
    hasher: PasswordHasherConfig,
    lockout: LockoutPolicy,
    tokens: TokenSettings,
    /// Bounds the memory-hard hashes running at once (each takes ~19 MiB and a core);
    /// beyond it, callers wait briefly and then get UNAVAILABLE.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Where partners are known (channel-partner), if `partner_id`s are checked.
    partners: partners::PartnerDirectory,
}

/// Who is asking, as identity needs it.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The principal's subject: the actor of audit events, the owner of request ids.
    pub(crate) subject: String,
    /// The partner a partner principal is confined to.
    pub(crate) partner: Option<String>,
    /// The session of a user's token (kept when the user changes the password).
    pub(crate) session: Option<String>,
}

impl From<&Principal> for Caller {
    fn from(p: &Principal) -> Self {
        Self {
            subject: p.subject.clone(),
            partner: p.partner_scope().map(str::to_owned),
            session: p.session_id.clone(),
        }
    }
}

impl Caller {
    /// A partner principal sees a partner-owned resource only if it is its own
    /// partner's.
    fn sees(&self, owner_partner: Option<&str>) -> bool {
        match &self.partner {
            None => true,
            Some(own) => owner_partner == Some(own.as_str()),
        }
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A user's kind as stored; a value this build does not know is an internal error.
pub(crate) fn kind_of(user: &user::Model) -> ServiceResult<UserKind> {
    UserKind::parse(&user.kind)
        .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored user kind {:?}", user.kind)))
}

impl App {
    /// Creates what the first start must (the first admin, the configured service
    /// accounts, the first signing key) and loads the current signing key.
    pub(crate) async fn start(db: DatabaseConnection, settings: &Settings) -> anyhow::Result<Self> {
        let hasher = PasswordHasherConfig::new(&settings.passwords)?;
        bootstrap::run(&db, &settings.bootstrap, &hasher).await?;
        // A retired key verifies as long as any token it signed can live, plus one
        // reload interval during which another replica may still sign with it.
        let grace = settings.tokens.access_ttl()
            + Duration::from_secs(settings.tokens.key_reload_secs)
            + Duration::from_secs(60);
        let keys = Arc::new(
            KeyRing::load(
                db.clone(),
                grace,
                Duration::from_secs(settings.tokens.key_rotation_secs),
            )
            .await?,
        );
        let verifier = Arc::new(Verifier::new(
            &settings.tokens.issuer,
            Arc::new(StoreKeySource { db: db.clone() }),
            Duration::from_secs(1),
        ));
        Ok(Self {
            db,
            keys,
            verifier,
            hasher,
            lockout: LockoutPolicy::new(&settings.lockout),
            tokens: settings.tokens.clone(),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            )),
            partners: partners::PartnerDirectory::new(&settings.partners)?,
        })
    }

    async fn hashing_permit(&self) -> ServiceResult<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(Duration::from_secs(2), self.hashing.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ServiceError::Unavailable(
                "too many password checks in progress, retry shortly".into(),
            )),
        }
    }

    async fn verify_password(&self, password: &str, hash: Option<String>) -> ServiceResult<bool> {
        let permit = self.hashing_permit().await?;
        let hasher = self.hasher.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match hash {
                Some(hash) => hasher.verify(&password, &hash),
                None => {
                    hasher.verify_dummy(&password);
                    false
                }
            }
        })
        .await
        .map_err(ServiceError::internal)
    }

    async fn hash_password(&self, password: &Password) -> ServiceResult<String> {
        let permit = self.hashing_permit().await?;
        let hasher = self.hasher.clone();
        let password = password.expose().to_owned();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hasher.hash(&password)
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::Internal)
    }

    async fn audit(&self, event: Audit<'_>) -> ServiceResult<()> {
        store::record_audit(&self.db, event, now()).await
    }
}

//! The gRPC adapter of identity: parses requests into domain types, authorises them,
//! runs the flows against the store and maps results back to protobuf.
//!
//! Authentication failures never say which part was wrong (unknown user, wrong
//! password and disabled user read the same) and cost the same time. Partner
//! principals only ever see their own partner's users and keys; anything else is
//! NOT_FOUND.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use retail_kit::auth::{AUDIENCE, Claims, Principal, PrincipalKind, Verifier};
use retail_kit::convert::{duration, from_timestamp, opt_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::limits;
use retail_kit::paging::Page;
use retail_proto::identity as pb;
use retail_proto::identity::identity_service_server::IdentityService;
use sea_orm::{ActiveValue::Set, DatabaseConnection, IntoActiveModel};
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::domain::fields::{self, Email, Password, Username};
use crate::domain::lockout::{Gate, LockoutPolicy, ThrottleState};
use crate::domain::passwords::PasswordHasherConfig;
use crate::domain::scopes::{self, Role};
use crate::domain::secrets;
use crate::settings::TokenSettings;
use crate::signing::KeyRing;
use crate::store::{self, Audit, RefreshUse};

/// Everything the handlers share.
#[derive(Debug)]
pub struct State {
    pub db: DatabaseConnection,
    pub keys: Arc<KeyRing>,
    pub verifier: Arc<Verifier>,
    pub hasher: PasswordHasherConfig,
    pub lockout: LockoutPolicy,
    pub tokens: TokenSettings,
    /// Bounds the memory-hard hashes running at once (each takes ~19 MiB and a core);
    /// beyond it, callers wait briefly and then get UNAVAILABLE.
    pub hashing: Arc<tokio::sync::Semaphore>,
}

/// Methods callable without a token.
pub const PUBLIC_METHODS: &[&str] = &[
    "/retail.identity.v1.IdentityService/Login",
    "/retail.identity.v1.IdentityService/RefreshToken",
    "/retail.identity.v1.IdentityService/Logout",
    "/retail.identity.v1.IdentityService/ExchangeApiKey",
    "/retail.identity.v1.IdentityService/IssueServiceToken",
    "/retail.identity.v1.IdentityService/ListPublicKeys",
];

#[derive(Debug, Clone)]
pub struct IdentityApi {
    state: Arc<State>,
}

impl IdentityApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

const INVALID_CREDENTIALS: &str = "invalid username or password";
const MAX_SECRET_INPUT: usize = 256;

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn kind_str(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::Staff => "staff",
        PrincipalKind::PartnerUser => "partner_user",
        PrincipalKind::PartnerSystem => "partner_system",
        PrincipalKind::Service => "service",
    }
}

fn kind_of_user(kind: &str) -> PrincipalKind {
    if kind == "partner_user" {
        PrincipalKind::PartnerUser
    } else {
        PrincipalKind::Staff
    }
}

fn pb_kind(kind: PrincipalKind) -> pb::PrincipalKind {
    match kind {
        PrincipalKind::Staff => pb::PrincipalKind::Staff,
        PrincipalKind::PartnerUser => pb::PrincipalKind::PartnerUser,
        PrincipalKind::PartnerSystem => pb::PrincipalKind::PartnerSystem,
        PrincipalKind::Service => pb::PrincipalKind::Service,
    }
}

fn pb_role(role: Role) -> pb::Role {
    match role {
        Role::Admin => pb::Role::Admin,
        Role::StoreManager => pb::Role::StoreManager,
        Role::Analyst => pb::Role::Analyst,
        Role::Support => pb::Role::Support,
    }
}

fn role_of_pb(value: i32) -> Option<Role> {
    match pb::Role::try_from(value).ok()? {
        pb::Role::Admin => Some(Role::Admin),
        pb::Role::StoreManager => Some(Role::StoreManager),
        pb::Role::Analyst => Some(Role::Analyst),
        pb::Role::Support => Some(Role::Support),
        pb::Role::Unspecified => None,
    }
}

fn parse_roles(stored: &str) -> Vec<Role> {
    stored.split_whitespace().filter_map(Role::parse).collect()
}

fn join_roles(roles: &[Role]) -> String {
    let set: BTreeSet<_> = roles.iter().map(|r| r.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

fn split_scopes(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}

fn user_to_pb(u: &store::user::Model) -> pb::User {
    pb::User {
        name: format!("users/{}", u.id),
        username: u.username.clone(),
        email: u.email.clone().unwrap_or_default(),
        display_name: u.display_name.clone(),
        kind: pb_kind(kind_of_user(&u.kind)) as i32,
        roles: parse_roles(&u.roles).into_iter().map(|r| pb_role(r) as i32).collect(),
        partner_id: u.partner_id.clone().unwrap_or_default(),
        disabled: u.disabled,
        create_time: Some(timestamp(u.created_at)),
        update_time: Some(timestamp(u.updated_at)),
        last_login_time: opt_timestamp(u.last_login_at),
    }
}

fn api_key_to_pb(k: &store::api_key::Model) -> pb::ApiKey {
    pb::ApiKey {
        name: format!("apiKeys/{}", k.id),
        display_name: k.display_name.clone(),
        partner_id: k.partner_id.clone(),
        scopes: split_scopes(&k.scopes),
        prefix: k.prefix.clone(),
        create_time: Some(timestamp(k.created_at)),
        last_use_time: opt_timestamp(k.last_used_at),
        revoke_time: opt_timestamp(k.revoked_at),
        expire_time: opt_timestamp(k.expires_at),
    }
}

fn service_account_to_pb(a: &store::service_account::Model) -> pb::ServiceAccount {
    pb::ServiceAccount {
        name: format!("serviceAccounts/{}", a.id),
        client_id: a.client_id.clone(),
        scopes: split_scopes(&a.scopes),
        create_time: Some(timestamp(a.created_at)),
    }
}

fn public_key_to_pb(k: &store::signing_key::Model) -> pb::PublicKey {
    pb::PublicKey {
        key_id: k.id.clone(),
        algorithm: "EdDSA".into(),
        public_key: k.public_key.clone(),
        create_time: Some(timestamp(k.created_at)),
        retire_time: opt_timestamp(k.retired_at),
        expire_time: opt_timestamp(k.expires_at),
    }
}

/// Rejects oversized secret inputs before any work, and empty ones.
fn secret_input(field: &str, value: &str) -> ServiceResult<()> {
    if value.is_empty() {
        return Err(ServiceError::invalid(field, "is required"));
    }
    if value.len() > MAX_SECRET_INPUT {
        return Err(ServiceError::invalid(
            field,
            format!("must be at most {MAX_SECRET_INPUT} bytes"),
        ));
    }
    Ok(())
}

/// A partner principal sees a partner-owned resource only if it is its own partner's.
fn visible_to(principal: &Principal, owner_partner: Option<&str>) -> bool {
    match principal.partner_scope() {
        None => true,
        Some(own) => owner_partner == Some(own),
    }
}

/// The partner filter of a list request. A partner principal is confined to its own
/// partner; `None` when it asks for another partner's rows (an empty page, which
/// reveals nothing about them).
fn partner_filter(principal: &Principal, requested: &str) -> ServiceResult<Option<Option<String>>> {
    let requested = if requested.is_empty() {
        None
    } else {
        Some(fields::external_id("partner_id", requested)?)
    };
    match principal.partner_scope() {
        None => Ok(Some(requested)),
        Some(own) if requested.as_deref().is_none_or(|p| p == own) => Ok(Some(Some(own.to_owned()))),
        Some(_) => Ok(None),
    }
}

/// What a failed attempt reveals to the caller, after the throttle was consulted.
fn throttled(gate: Gate) -> ServiceResult<()> {
    match gate {
        Gate::Open => Ok(()),
        Gate::Wait(delay) => Err(ServiceError::ResourceExhausted {
            message: "too many failed attempts, retry later".into(),
            retry_after: Some(delay),
        }),
        Gate::Locked(delay) => Err(ServiceError::ResourceExhausted {
            message: "too many failed attempts, temporarily locked".into(),
            retry_after: Some(delay),
        }),
    }
}

impl State {
    fn issue_access(
        &self,
        subject: &str,
        kind: PrincipalKind,
        roles: &[Role],
        scopes: &[String],
        partner_id: Option<&str>,
        session_id: Option<&str>,
    ) -> ServiceResult<(String, Duration)> {
        let ttl = self.tokens.access_ttl();
        let issued = now();
        let claims = Claims {
            iss: self.tokens.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: subject.to_owned(),
            exp: (issued + chrono_of(ttl)).timestamp(),
            iat: issued.timestamp(),
            nbf: issued.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            kind,
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            scope: scopes.join(" "),
            partner_id: partner_id.map(str::to_owned),
            sid: session_id.map(str::to_owned),
        };
        Ok((self.keys.sign(&claims)?, ttl))
    }

    fn user_scopes(user: &store::user::Model) -> Vec<String> {
        match kind_of_user(&user.kind) {
            PrincipalKind::PartnerUser => scopes::PARTNER.iter().map(|s| s.to_string()).collect(),
            _ => scopes::for_roles(&parse_roles(&user.roles))
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }

    fn user_token_pair(
        &self,
        user: &store::user::Model,
        session_id: &str,
        refresh_token: String,
    ) -> ServiceResult<pb::TokenPair> {
        let roles = parse_roles(&user.roles);
        let scopes = Self::user_scopes(user);
        let (access, ttl) = self.issue_access(
            &user.id,
            kind_of_user(&user.kind),
            &roles,
            &scopes,
            user.partner_id.as_deref(),
            Some(session_id),
        )?;
        Ok(pb::TokenPair {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: Some(duration(ttl)),
            refresh_token,
            refresh_expires_in: Some(duration(self.tokens.refresh_ttl())),
            scopes,
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

    /// Claims one attempt for `subject` before its credential is checked. The attempt
    /// is counted first, atomically, so however many arrive at once, no more than the
    /// policy allows are ever checked; a success clears the count again.
    async fn claim_attempt(&self, subject: &str) -> ServiceResult<u32> {
        let at = now();
        if let Some(row) = store::throttle(&self.db, subject).await? {
            if row.locked_until.is_some_and(|t| t <= at) {
                store::reset_expired_lock(&self.db, subject, at).await?;
            } else {
                let state = ThrottleState {
                    failures: u32::try_from(row.failures).unwrap_or(0),
                    next_attempt_at: row.next_attempt_at,
                    locked_until: row.locked_until,
                };
                throttled(self.lockout.gate(&state, at))?;
            }
        }
        let attempt = store::count_failure(&self.db, subject, at).await?;
        if attempt > self.lockout.lock_after() {
            // Racing attempts beyond the limit: refused unchecked.
            let locked = self.lockout.state_for(attempt, at);
            store::raise_throttle(&self.db, subject, None, locked.locked_until).await?;
            throttled(Gate::Locked(self.lockout.lock_duration()))?;
        }
        Ok(attempt)
    }

    /// The claimed attempt failed: waits and locks follow from its count. Returns
    /// whether the subject is now locked.
    async fn attempt_failed(&self, subject: &str, attempt: u32) -> ServiceResult<bool> {
        let state = self.lockout.state_for(attempt, now());
        store::raise_throttle(&self.db, subject, state.next_attempt_at, state.locked_until).await?;
        Ok(state.locked_until.is_some())
    }

    async fn audit(&self, event: Audit<'_>) -> ServiceResult<()> {
        store::record_audit(&self.db, event, now()).await
    }

    async fn user_for_update(
        &self,
        name: &str,
        field: &str,
        principal: &Principal,
    ) -> ServiceResult<store::user::Model> {
        let id = fields::resource_id(field, name, "users").map_err(ServiceError::from)?;
        match store::find_user(&self.db, &id).await? {
            Some(user) if visible_to(principal, user.partner_id.as_deref()) => Ok(user),
            _ => Err(ServiceError::not_found("user", name)),
        }
    }

    async fn api_key_visible(&self, name: &str, principal: &Principal) -> ServiceResult<store::api_key::Model> {
        let id = fields::resource_id("name", name, "apiKeys").map_err(ServiceError::from)?;
        match store::find_api_key(&self.db, &id).await? {
            Some(key) if visible_to(principal, Some(&key.partner_id)) => Ok(key),
            _ => Err(ServiceError::not_found("api key", name)),
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    #[tracing::instrument(skip_all)]
    async fn login(&self, request: Request<pb::LoginRequest>) -> Rpc<pb::LoginResponse> {
        let s = &self.state;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.username.trim().is_empty() {
            v.add("username", "is required");
        } else if req.username.len() > 64 {
            v.add("username", "must be at most 64 characters");
        }
        if req.password.is_empty() {
            v.add("password", "is required");
        } else if req.password.len() > 4 * fields::MAX_PASSWORD_CHARS {
            v.add("password", "is too long");
        }
        v.finish()?;

        // Throttle by the normalised name whether or not such a user exists, so a
        // lock reveals nothing.
        let name = req.username.trim().to_lowercase();
        let subject = format!("user:{name}");
        let attempt = s.claim_attempt(&subject).await?;
        let user = store::find_user_by_username(&s.db, &name).await?;
        let valid = s
            .verify_password(&req.password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        let user = match user {
            Some(user) if valid && !user.disabled => user,
            other => {
                let reason = match &other {
                    None => "unknown_user",
                    Some(u) if u.disabled && valid => "disabled",
                    Some(_) => "bad_password",
                };
                let locked = s.attempt_failed(&subject, attempt).await?;
                let target = other.as_ref().map(|u| u.id.clone()).unwrap_or_default();
                s.audit(Audit {
                    action: "login.failed",
                    actor: "",
                    target: &target,
                    detail: json!({ "reason": reason }),
                })
                .await?;
                if locked {
                    s.audit(Audit {
                        action: "login.locked",
                        actor: "",
                        target: &target,
                        detail: json!({ "lock_secs": s.lockout_secs() }),
                    })
                    .await?;
                }
                return Err(ServiceError::Unauthenticated(INVALID_CREDENTIALS.into()).into());
            }
        };

        store::clear_throttle(&s.db, &subject).await?;
        let at = now();
        let refresh = secrets::new_refresh_token();
        let refresh_hash = secrets::hash(&refresh);
        let refresh_ttl = chrono_of(s.tokens.refresh_ttl());
        let user_id = user.id.clone();
        let session_id = idempotency::transaction(&s.db, |txn| {
            let (user_id, refresh_hash) = (user_id.clone(), refresh_hash.clone());
            Box::pin(async move {
                let session_id = store::create_session(txn, &user_id, at, at + refresh_ttl).await?;
                store::insert_refresh_token(txn, refresh_hash, &session_id, at, at + refresh_ttl).await?;
                store::record_login(txn, &user_id, at).await?;
                store::record_audit(
                    txn,
                    Audit {
                        action: "login.succeeded",
                        actor: &user_id,
                        target: &user_id,
                        detail: json!({ "session": session_id }),
                    },
                    at,
                )
                .await?;
                Ok(session_id)
            })
        })
        .await?;
        tracing::info!(user_id = %user.id, "user logged in");
        let tokens = s.user_token_pair(&user, &session_id, refresh)?;
        ok(pb::LoginResponse { tokens: Some(tokens) })
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(&self, request: Request<pb::RefreshTokenRequest>) -> Rpc<pb::RefreshTokenResponse> {
        let s = &self.state;
        let req = request.into_inner();
        secret_input("refresh_token", &req.refresh_token)?;
        let at = now();
        let presented = secrets::hash(&req.refresh_token);
        let txn = retail_kit::db::begin_write(&s.db).await.map_err(ServiceError::from)?;
        let outcome = store::use_refresh_token(&txn, &presented, at).await?;
        let session = match outcome {
            RefreshUse::Exchanged(session) => session,
            RefreshUse::Reused { session_id } => {
                // A used-up token came back: someone holds a copy. End the session
                // for both holders.
                store::revoke_session(&txn, &session_id, "reuse_detected", at).await?;
                store::record_audit(
                    &txn,
                    Audit {
                        action: "token.reuse_detected",
                        actor: "",
                        target: &session_id,
                        detail: json!({}),
                    },
                    at,
                )
                .await?;
                txn.commit().await.map_err(ServiceError::from)?;
                return Err(ServiceError::Unauthenticated("refresh token already used; session revoked".into()).into());
            }
            RefreshUse::Invalid => return Err(ServiceError::Unauthenticated("invalid refresh token".into()).into()),
        };
        let user = match store::find_user(&txn, &session.user_id).await? {
            Some(user) if !user.disabled => user,
            _ => {
                store::revoke_session(&txn, &session.id, "disabled", at).await?;
                txn.commit().await.map_err(ServiceError::from)?;
                return Err(ServiceError::Unauthenticated("invalid refresh token".into()).into());
            }
        };
        let refresh = secrets::new_refresh_token();
        // The new token lives no longer than its session.
        store::insert_refresh_token(&txn, secrets::hash(&refresh), &session.id, at, session.expires_at).await?;
        txn.commit().await.map_err(ServiceError::from)?;
        let tokens = s.user_token_pair(&user, &session.id, refresh)?;
        ok(pb::RefreshTokenResponse { tokens: Some(tokens) })
    }

    #[tracing::instrument(skip_all)]
    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Rpc<pb::LogoutResponse> {
        let s = &self.state;
        let req = request.into_inner();
        secret_input("refresh_token", &req.refresh_token)?;
        // Logging out twice, or with an unknown token, changes nothing and succeeds.
        let presented = secrets::hash(&req.refresh_token);
        idempotency::transaction(&s.db, |txn| {
            let presented = presented.clone();
            Box::pin(async move {
                let at = now();
                if let Some(session) = store::find_session_of_refresh_token(txn, &presented).await?
                    && store::revoke_session(txn, &session.id, "logout", at).await?
                {
                    store::record_audit(
                        txn,
                        Audit {
                            action: "logout",
                            actor: &session.user_id,
                            target: &session.id,
                            detail: json!({}),
                        },
                        at,
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
        ok(pb::LogoutResponse {})
    }

    #[tracing::instrument(skip_all)]
    async fn exchange_api_key(&self, request: Request<pb::ExchangeApiKeyRequest>) -> Rpc<pb::ExchangeApiKeyResponse> {
        let s = &self.state;
        let req = request.into_inner();
        secret_input("api_key", &req.api_key)?;
        let invalid = || Status::from(ServiceError::Unauthenticated("invalid API key".into()));
        let Some(prefix) = secrets::api_key_prefix(&req.api_key) else {
            return Err(invalid());
        };
        let subject = format!("api_key:{prefix}");
        let attempt = s.claim_attempt(&subject).await?;
        let at = now();
        let key = store::find_api_key_by_prefix(&s.db, prefix).await?;
        let key = match key {
            Some(k)
                if secrets::matches(&req.api_key, &k.secret_hash)
                    && k.revoked_at.is_none()
                    && k.expires_at.is_none_or(|e| e > at) =>
            {
                k
            }
            other => {
                s.attempt_failed(&subject, attempt).await?;
                s.audit(Audit {
                    action: "api_key.exchange_failed",
                    actor: "",
                    target: other.as_ref().map(|k| k.id.as_str()).unwrap_or(prefix),
                    detail: json!({ "prefix": prefix }),
                })
                .await?;
                return Err(invalid());
            }
        };
        store::clear_throttle(&s.db, &subject).await?;
        store::touch_api_key(&s.db, &key.id, at).await?;
        let scopes = split_scopes(&key.scopes);
        let (access, ttl) = s.issue_access(
            &key.id,
            PrincipalKind::PartnerSystem,
            &[],
            &scopes,
            Some(&key.partner_id),
            None,
        )?;
        ok(pb::ExchangeApiKeyResponse {
            tokens: Some(pb::TokenPair {
                access_token: access,
                token_type: "Bearer".into(),
                expires_in: Some(duration(ttl)),
                refresh_token: String::new(),
                refresh_expires_in: None,
                scopes,
            }),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Rpc<pb::IssueServiceTokenResponse> {
        let s = &self.state;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.client_id.is_empty() || req.client_id.len() > 64 {
            v.add("client_id", "must be 1-64 characters");
        }
        if req.client_secret.is_empty() || req.client_secret.len() > MAX_SECRET_INPUT {
            v.add("client_secret", format!("must be 1-{MAX_SECRET_INPUT} bytes"));
        }
        v.finish()?;
        // No lockout here: client secrets are 256-bit random (nothing to guess), and a
        // lock on a well-known client id would let anyone cut a service off.
        let account = match store::find_service_account_by_client_id(&s.db, &req.client_id).await? {
            Some(a) if secrets::matches(&req.client_secret, &a.secret_hash) => a,
            Some(a) => {
                s.audit(Audit {
                    action: "service_token.failed",
                    actor: "",
                    target: &a.id,
                    detail: json!({}),
                })
                .await?;
                return Err(ServiceError::Unauthenticated("invalid client credentials".into()).into());
            }
            None => return Err(ServiceError::Unauthenticated("invalid client credentials".into()).into()),
        };
        let scopes = split_scopes(&account.scopes);
        let (access, ttl) = s.issue_access(&account.id, PrincipalKind::Service, &[], &scopes, None, None)?;
        ok(pb::IssueServiceTokenResponse {
            tokens: Some(pb::TokenPair {
                access_token: access,
                token_type: "Bearer".into(),
                expires_in: Some(duration(ttl)),
                refresh_token: String::new(),
                refresh_expires_in: None,
                scopes,
            }),
        })
    }

    async fn list_public_keys(&self, _request: Request<pb::ListPublicKeysRequest>) -> Rpc<pb::ListPublicKeysResponse> {
        let keys = store::verifying_keys(&self.state.db, now()).await?;
        ok(pb::ListPublicKeysResponse {
            keys: keys.iter().map(public_key_to_pb).collect(),
        })
    }

    async fn get_current_principal(&self, request: Request<pb::GetCurrentPrincipalRequest>) -> Rpc<pb::Principal> {
        let p = Principal::of(&request)?;
        ok(pb::Principal {
            subject: p.subject.clone(),
            kind: pb_kind(p.kind) as i32,
            roles: p
                .roles
                .iter()
                .filter_map(|r| Role::parse(r))
                .map(|r| pb_role(r) as i32)
                .collect(),
            scopes: p.scopes.iter().cloned().collect(),
            partner_id: p.partner_id.clone().unwrap_or_default(),
            expire_time: Some(timestamp(p.expires_at)),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn change_password(&self, request: Request<pb::ChangePasswordRequest>) -> Rpc<pb::ChangePasswordResponse> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        if !matches!(principal.kind, PrincipalKind::Staff | PrincipalKind::PartnerUser) {
            return Err(ServiceError::FailedPrecondition("only users have passwords".into()).into());
        }
        let Some(user) = store::find_user(&s.db, &principal.subject).await? else {
            return Err(ServiceError::Unauthenticated("the token's user no longer exists".into()).into());
        };
        secret_input("current_password", &req.current_password)?;
        let username = Username::parse("username", &user.username).map_err(ServiceError::from)?;
        let new_password =
            Password::parse("new_password", &req.new_password, Some(&username)).map_err(ServiceError::from)?;
        if req.new_password == req.current_password {
            return Err(ServiceError::invalid("new_password", "must differ from the current password").into());
        }
        // A stolen access token must not become a way to guess the password.
        let subject = format!("user:{}", user.username);
        let attempt = s.claim_attempt(&subject).await?;
        if !s
            .verify_password(&req.current_password, Some(user.password_hash.clone()))
            .await?
        {
            s.attempt_failed(&subject, attempt).await?;
            s.audit(Audit {
                action: "password.change_failed",
                actor: &user.id,
                target: &user.id,
                detail: json!({}),
            })
            .await?;
            return Err(ServiceError::invalid("current_password", "is not the current password").into());
        }
        store::clear_throttle(&s.db, &subject).await?;
        let hash = s.hash_password(&new_password).await?;
        let at = now();
        let (user_id, keep) = (user.id.clone(), principal.session_id.clone());
        idempotency::transaction(&s.db, |txn| {
            let (user_id, keep, hash) = (user_id.clone(), keep.clone(), hash.clone());
            Box::pin(async move {
                store::set_password(txn, &user_id, hash, at).await?;
                let ended = store::revoke_user_sessions(txn, &user_id, keep.as_deref(), "password_changed", at).await?;
                store::record_audit(
                    txn,
                    Audit {
                        action: "password.changed",
                        actor: &user_id,
                        target: &user_id,
                        detail: json!({ "sessions_ended": ended }),
                    },
                    at,
                )
                .await
            })
        })
        .await?;
        ok(pb::ChangePasswordResponse {})
    }

    #[tracing::instrument(skip_all)]
    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Rpc<pb::User> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(scopes::USERS_WRITE)?;
        let req = request.into_inner();
        // The fingerprint must not be a fast hash of the password.
        let caller = principal.subject.clone();
        let key = IdempotencyKey::from_request(
            "identity.CreateUser",
            &caller,
            &req.request_id,
            &pb::CreateUserRequest {
                password: String::new(),
                ..req.clone()
            },
        )?;
        let mut v = Violations::new();
        let Some(user) = req.user.as_ref() else {
            return Err(ServiceError::invalid("user", "is required").into());
        };
        let username = v.check(Username::parse("user.username", &user.username));
        let email = v.check(Email::parse_optional("user.email", &user.email)).flatten();
        let display_name = v
            .check(fields::display_text(
                "user.display_name",
                &user.display_name,
                200,
                false,
            ))
            .unwrap_or_default();
        let password = v.check(Password::parse("password", &req.password, username.as_ref()));
        let kind = match pb::PrincipalKind::try_from(user.kind) {
            Ok(pb::PrincipalKind::Staff) => Some(PrincipalKind::Staff),
            Ok(pb::PrincipalKind::PartnerUser) => Some(PrincipalKind::PartnerUser),
            _ => {
                v.add(
                    "user.kind",
                    "must be PRINCIPAL_KIND_STAFF or PRINCIPAL_KIND_PARTNER_USER",
                );
                None
            }
        };
        let mut roles = Vec::new();
        let n = v.at_most("user.roles", &user.roles, limits::MAX_ROLES);
        for (i, r) in user.roles.iter().enumerate().take(n) {
            match role_of_pb(*r) {
                Some(role) => roles.push(role),
                None => v.add(format!("user.roles[{i}]"), "is not a role"),
            }
        }
        let mut partner_id = None;
        match kind {
            Some(PrincipalKind::Staff) => {
                if roles.is_empty() && user.roles.is_empty() {
                    v.add("user.roles", "a staff user needs at least one role");
                }
                if !user.partner_id.is_empty() {
                    v.add("user.partner_id", "must be empty for staff users");
                }
            }
            Some(_) => {
                if !user.roles.is_empty() {
                    v.add("user.roles", "must be empty for partner users");
                }
                partner_id = v.check(fields::external_id("user.partner_id", &user.partner_id));
            }
            None => {}
        }
        v.finish()?;
        let (Some(username), Some(password), Some(kind)) = (username, password, kind) else {
            return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")).into());
        };
        if let Some(own) = principal.partner_scope()
            && partner_id.as_deref() != Some(own)
        {
            return Err(ServiceError::PermissionDenied("partners can only create their own users".into()).into());
        }
        let hash = s.hash_password(&password).await?;
        let at = now();
        let model = store::user::Model {
            id: store::new_id(),
            username: username.as_str().to_owned(),
            email: email.map(|e| e.as_str().to_owned()),
            display_name: if display_name.is_empty() {
                username.as_str().to_owned()
            } else {
                display_name
            },
            kind: kind_str(kind).into(),
            roles: join_roles(&roles),
            partner_id,
            password_hash: hash,
            disabled: false,
            created_at: at,
            updated_at: at,
            last_login_at: None,
            password_changed_at: at,
        };
        let actor = principal.subject.clone();
        let created = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (model, actor) = (model.clone(), actor.clone());
            Box::pin(async move {
                let created = store::insert_user(txn, model).await?;
                store::record_audit(
                    txn,
                    Audit {
                        action: "user.created",
                        actor: &actor,
                        target: &created.id,
                        detail: json!({ "kind": created.kind, "roles": created.roles, "partner_id": created.partner_id }),
                    },
                    at,
                )
                .await?;
                Ok(user_to_pb(&created))
            })
        })
        .await?;
        ok(created)
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Rpc<pb::User> {
        let principal = Principal::of(&request)?;
        principal.require_scope(scopes::USERS_READ)?;
        let user = self
            .state
            .user_for_update(&request.get_ref().name, "name", principal)
            .await?;
        ok(user_to_pb(&user))
    }

    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Rpc<pb::ListUsersResponse> {
        let principal = Principal::of(&request)?;
        principal.require_scope(scopes::USERS_READ)?;
        let req = request.get_ref();
        let Some(partner) = partner_filter(principal, &req.partner_id)? else {
            return ok(pb::ListUsersResponse::default());
        };
        let page = Page::parse(req.page_size, &req.page_token, &format!("partner={partner:?}"))?;
        let rows = store::list_users(&self.state.db, &page, partner.as_deref()).await?;
        let (rows, next_page_token) = page.finish(rows, |u| u.id.clone());
        ok(pb::ListUsersResponse {
            users: rows.iter().map(user_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Rpc<pb::User> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(scopes::USERS_WRITE)?;
        let req = request.into_inner();
        let Some(changes) = req.user else {
            return Err(ServiceError::invalid("user", "is required").into());
        };
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(ServiceError::invalid("update_mask", "must name the fields to update").into());
        }
        let current = s.user_for_update(&changes.name, "user.name", &principal).await?;
        let mut v = Violations::new();
        let mut active = current.clone().into_active_model();
        let mut changed = Vec::new();
        let old_roles = parse_roles(&current.roles);
        let mut new_roles = old_roles.clone();
        let mut disable = None;
        for path in v.mask_paths("update_mask", &paths) {
            match path.as_str() {
                "email" => {
                    if let Some(email) = v.check(Email::parse_optional("user.email", &changes.email)) {
                        active.email = Set(email.map(|e| e.as_str().to_owned()));
                        changed.push("email");
                    }
                }
                "display_name" => {
                    if let Some(name) = v.check(fields::display_text(
                        "user.display_name",
                        &changes.display_name,
                        200,
                        true,
                    )) {
                        active.display_name = Set(name);
                        changed.push("display_name");
                    }
                }
                "roles" => {
                    if current.kind != "staff" {
                        v.add("user.roles", "partner users have no roles");
                        continue;
                    }
                    let mut roles = Vec::new();
                    let n = v.at_most("user.roles", &changes.roles, limits::MAX_ROLES);
                    for (i, r) in changes.roles.iter().enumerate().take(n) {
                        match role_of_pb(*r) {
                            Some(role) => roles.push(role),
                            None => v.add(format!("user.roles[{i}]"), "is not a role"),
                        }
                    }
                    if roles.is_empty() {
                        v.add("user.roles", "a staff user needs at least one role");
                    }
                    new_roles = roles;
                    active.roles = Set(join_roles(&new_roles));
                    changed.push("roles");
                }
                "disabled" => {
                    disable = Some(changes.disabled);
                    active.disabled = Set(changes.disabled);
                    changed.push("disabled");
                }
                other => v.add("update_mask", format!("cannot update `{other}`")),
            }
        }
        v.finish()?;
        if current.id == principal.subject {
            if disable == Some(true) {
                return Err(ServiceError::FailedPrecondition("you cannot disable yourself".into()).into());
            }
            if old_roles.contains(&Role::Admin) && !new_roles.contains(&Role::Admin) {
                return Err(ServiceError::FailedPrecondition("you cannot remove your own admin role".into()).into());
            }
        }
        let at = now();
        active.updated_at = Set(at);
        let actor = principal.subject.clone();
        let roles_changed = join_roles(&old_roles) != join_roles(&new_roles);
        let disabled_now = disable == Some(true) && !current.disabled;
        let (old_roles_s, new_roles_s) = (join_roles(&old_roles), join_roles(&new_roles));
        let changed_s: Vec<String> = changed.iter().map(|c| c.to_string()).collect();
        let updated = idempotency::transaction(&s.db, |txn| {
            let (active, actor, old_roles_s, new_roles_s, changed_s) = (
                active.clone(),
                actor.clone(),
                old_roles_s.clone(),
                new_roles_s.clone(),
                changed_s.clone(),
            );
            Box::pin(async move {
                let updated = store::update_user(txn, active).await?;
                store::record_audit(
                    txn,
                    Audit {
                        action: "user.updated",
                        actor: &actor,
                        target: &updated.id,
                        detail: json!({ "fields": changed_s }),
                    },
                    at,
                )
                .await?;
                if roles_changed {
                    store::record_audit(
                        txn,
                        Audit {
                            action: "user.roles_changed",
                            actor: &actor,
                            target: &updated.id,
                            detail: json!({ "from": old_roles_s, "to": new_roles_s }),
                        },
                        at,
                    )
                    .await?;
                }
                if disabled_now {
                    store::revoke_user_sessions(txn, &updated.id, None, "disabled", at).await?;
                    store::record_audit(
                        txn,
                        Audit {
                            action: "user.disabled",
                            actor: &actor,
                            target: &updated.id,
                            detail: json!({}),
                        },
                        at,
                    )
                    .await?;
                }
                Ok(updated)
            })
        })
        .await?;
        ok(user_to_pb(&updated))
    }

    #[tracing::instrument(skip_all)]
    async fn reset_user_password(
        &self,
        request: Request<pb::ResetUserPasswordRequest>,
    ) -> Rpc<pb::ResetUserPasswordResponse> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(scopes::USERS_WRITE)?;
        let req = request.into_inner();
        let user = s.user_for_update(&req.name, "name", &principal).await?;
        let username = Username::parse("name", &user.username).map_err(ServiceError::from)?;
        let password =
            Password::parse("new_password", &req.new_password, Some(&username)).map_err(ServiceError::from)?;
        let hash = s.hash_password(&password).await?;
        let at = now();
        let (user_id, actor) = (user.id.clone(), principal.subject.clone());
        idempotency::transaction(&s.db, |txn| {
            let (user_id, actor, hash) = (user_id.clone(), actor.clone(), hash.clone());
            Box::pin(async move {
                store::set_password(txn, &user_id, hash, at).await?;
                store::revoke_user_sessions(txn, &user_id, None, "password_reset", at).await?;
                store::record_audit(
                    txn,
                    Audit {
                        action: "password.reset",
                        actor: &actor,
                        target: &user_id,
                        detail: json!({}),
                    },
                    at,
                )
                .await
            })
        })
        .await?;
        store::clear_throttle(&s.db, &format!("user:{}", user.username)).await?;
        ok(pb::ResetUserPasswordResponse {})
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(&self, request: Request<pb::CreateApiKeyRequest>) -> Rpc<pb::CreateApiKeyResponse> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(scopes::API_KEYS_WRITE)?;
        let req = request.into_inner();
        let caller = principal.subject.clone();
        let key = IdempotencyKey::from_request("identity.CreateApiKey", &caller, &req.request_id, &req)?;
        let Some(spec) = req.api_key.as_ref() else {
            return Err(ServiceError::invalid("api_key", "is required").into());
        };
        let at = now();
        let mut v = Violations::new();
        let display_name = v.check(fields::display_text(
            "api_key.display_name",
            &spec.display_name,
            200,
            true,
        ));
        let partner_id = v.check(fields::external_id("api_key.partner_id", &spec.partner_id));
        if spec.scopes.is_empty() {
            v.add("api_key.scopes", "at least one scope is required");
        }
        if spec.scopes.len() > scopes::PARTNER.len() {
            v.add("api_key.scopes", "too many scopes");
        }
        for (i, scope) in spec.scopes.iter().enumerate().take(scopes::PARTNER.len()) {
            if !scopes::is_partner_scope(scope) {
                v.add(
                    format!("api_key.scopes[{i}]"),
                    format!("must be one of {}", scopes::PARTNER.join(", ")),
                );
            }
        }
        let expires_at = match &spec.expire_time {
            None => None,
            Some(ts) => match from_timestamp(ts) {
                Some(t) if t > at => Some(t),
                _ => {
                    v.add("api_key.expire_time", "must be a valid time in the future");
                    None
                }
            },
        };
        v.finish()?;
        let (Some(display_name), Some(partner_id)) = (display_name, partner_id) else {
            return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")).into());
        };
        if principal.partner_scope().is_some_and(|own| own != partner_id) {
            return Err(ServiceError::not_found("partner", partner_id).into());
        }
        let scope_set: BTreeSet<_> = spec.scopes.iter().cloned().collect();
        let (secret, prefix) = secrets::new_api_key();
        let model = store::api_key::Model {
            id: store::new_id(),
            prefix,
            secret_hash: secrets::hash(&secret),
            display_name,
            partner_id,
            scopes: scope_set.into_iter().collect::<Vec<_>>().join(" "),
            created_by: principal.subject.clone(),
            created_at: at,
            last_used_at: None,
            revoked_at: None,
            expires_at,
        };
        let actor = principal.subject.clone();
        // A replay returns the key without its secret: the secret is shown once.
        let without_secret = |r: &pb::CreateApiKeyResponse| pb::CreateApiKeyResponse {
            api_key: r.api_key.clone(),
            secret: String::new(),
        };
        let response = idempotency::execute(&s.db, key.as_ref(), without_secret, |txn| {
            let (model, actor, secret) = (model.clone(), actor.clone(), secret.clone());
            Box::pin(async move {
                let created = store::insert_api_key(txn, model).await?;
                store::record_audit(
                    txn,
                    Audit {
                        action: "api_key.created",
                        actor: &actor,
                        target: &created.id,
                        detail: json!({ "prefix": created.prefix, "partner_id": created.partner_id, "scopes": created.scopes }),
                    },
                    at,
                )
                .await?;
                Ok(pb::CreateApiKeyResponse {
                    api_key: Some(api_key_to_pb(&created)),
                    secret,
                })
            })
        })
        .await?;
        ok(response)
    }

    async fn get_api_key(&self, request: Request<pb::GetApiKeyRequest>) -> Rpc<pb::ApiKey> {
        let principal = Principal::of(&request)?;
        principal.require_scope(scopes::API_KEYS_READ)?;
        let key = self.state.api_key_visible(&request.get_ref().name, principal).await?;
        ok(api_key_to_pb(&key))
    }

    async fn list_api_keys(&self, request: Request<pb::ListApiKeysRequest>) -> Rpc<pb::ListApiKeysResponse> {
        let principal = Principal::of(&request)?;
        principal.require_scope(scopes::API_KEYS_READ)?;
        let req = request.get_ref();
        let Some(partner) = partner_filter(principal, &req.partner_id)? else {
            return ok(pb::ListApiKeysResponse::default());
        };
        let page = Page::parse(req.page_size, &req.page_token, &format!("partner={partner:?}"))?;
        let rows = store::list_api_keys(&self.state.db, &page, partner.as_deref()).await?;
        let (rows, next_page_token) = page.finish(rows, |k| k.id.clone());
        ok(pb::ListApiKeysResponse {
            api_keys: rows.iter().map(api_key_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Rpc<pb::ApiKey> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(scopes::API_KEYS_WRITE)?;
        let key = s.api_key_visible(&request.get_ref().name, &principal).await?;
        let at = now();
        let (key_id, actor, prefix, partner) = (
            key.id.clone(),
            principal.subject.clone(),
            key.prefix.clone(),
            key.partner_id.clone(),
        );
        // The revocation and its audit event commit together.
        idempotency::transaction(&s.db, |txn| {
            let (key_id, actor, prefix, partner) = (key_id.clone(), actor.clone(), prefix.clone(), partner.clone());
            Box::pin(async move {
                if store::revoke_api_key(txn, &key_id, at).await? {
                    store::record_audit(
                        txn,
                        Audit {
                            action: "api_key.revoked",
                            actor: &actor,
                            target: &key_id,
                            detail: json!({ "prefix": prefix, "partner_id": partner }),
                        },
                        at,
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
        let key = store::find_api_key(&s.db, &key.id)
            .await?
            .ok_or_else(|| ServiceError::not_found("api key", request.get_ref().name.clone()))?;
        ok(api_key_to_pb(&key))
    }

    #[tracing::instrument(skip_all)]
    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Rpc<pb::CreateServiceAccountResponse> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(scopes::SERVICE_ACCOUNTS_WRITE)?;
        let req = request.into_inner();
        let caller = principal.subject.clone();
        let key = IdempotencyKey::from_request("identity.CreateServiceAccount", &caller, &req.request_id, &req)?;
        let Some(spec) = req.service_account.as_ref() else {
            return Err(ServiceError::invalid("service_account", "is required").into());
        };
        let mut v = Violations::new();
        let client_id = v.check(fields::external_id("service_account.client_id", &spec.client_id));
        let n = v.at_most("service_account.scopes", &spec.scopes, limits::MAX_SCOPES);
        for (i, scope) in spec.scopes.iter().enumerate().take(n) {
            if !scopes::is_known(scope) {
                v.add(format!("service_account.scopes[{i}]"), "is not a known scope");
            }
        }
        v.finish()?;
        let Some(client_id) = client_id else {
            return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")).into());
        };
        let secret = secrets::new_client_secret();
        let at = now();
        let scope_set: BTreeSet<_> = spec.scopes.iter().cloned().collect();
        let model = store::service_account::Model {
            id: store::new_id(),
            client_id,
            secret_hash: secrets::hash(&secret),
            scopes: scope_set.into_iter().collect::<Vec<_>>().join(" "),
            created_at: at,
        };
        let actor = principal.subject.clone();
        let without_secret = |r: &pb::CreateServiceAccountResponse| pb::CreateServiceAccountResponse {
            service_account: r.service_account.clone(),
            client_secret: String::new(),
        };
        let response = idempotency::execute(&s.db, key.as_ref(), without_secret, |txn| {
            let (model, actor, secret) = (model.clone(), actor.clone(), secret.clone());
            Box::pin(async move {
                let created = store::insert_service_account(txn, model).await?;
                store::record_audit(
                    txn,
                    Audit {
                        action: "service_account.created",
                        actor: &actor,
                        target: &created.id,
                        detail: json!({ "client_id": created.client_id, "scopes": created.scopes }),
                    },
                    at,
                )
                .await?;
                Ok(pb::CreateServiceAccountResponse {
                    service_account: Some(service_account_to_pb(&created)),
                    client_secret: secret,
                })
            })
        })
        .await?;
        ok(response)
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Rpc<pb::ListServiceAccountsResponse> {
        let principal = Principal::of(&request)?;
        principal.require_scope(scopes::SERVICE_ACCOUNTS_READ)?;
        let req = request.get_ref();
        let page = Page::parse(req.page_size, &req.page_token, "")?;
        let rows = store::list_service_accounts(&self.state.db, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |a| a.id.clone());
        ok(pb::ListServiceAccountsResponse {
            service_accounts: rows.iter().map(service_account_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Rpc<pb::RotateSigningKeyResponse> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(scopes::KEYS_WRITE)?;
        let key = s.keys.rotate().await?;
        s.verifier.refresh().await;
        s.audit(Audit {
            action: "signing_key.rotated",
            actor: &principal.subject,
            target: &key.id,
            detail: json!({}),
        })
        .await?;
        ok(pb::RotateSigningKeyResponse {
            key: Some(public_key_to_pb(&key)),
        })
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Rpc<pb::ListAuditEventsResponse> {
        let principal = Principal::of(&request)?;
        principal.require_scope(scopes::AUDIT_READ)?;
        let req = request.get_ref();
        let action = if req.action.is_empty() {
            None
        } else if req.action.len() > 64
            || !req
                .action
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        {
            return Err(ServiceError::invalid("action", "must be an action name such as login.failed").into());
        } else {
            Some(req.action.as_str())
        };
        let page = Page::parse(req.page_size, &req.page_token, &format!("action={action:?}"))?;
        let rows = store::list_audit_events(&self.state.db, &page, action).await?;
        let (rows, next_page_token) = page.finish(rows, |e| e.id.clone());
        ok(pb::ListAuditEventsResponse {
            audit_events: rows
                .iter()
                .map(|e| pb::AuditEvent {
                    name: format!("auditEvents/{}", e.id),
                    action: e.action.clone(),
                    actor: e.actor.clone(),
                    target: e.target.clone(),
                    create_time: Some(timestamp(e.created_at)),
                    detail_json: e.detail_json.clone(),
                })
                .collect(),
            next_page_token,
        })
    }
}

impl State {
    fn lockout_secs(&self) -> u64 {
        self.lockout.lock_duration().as_secs()
    }
}

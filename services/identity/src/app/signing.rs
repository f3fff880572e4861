//! The signing keys of access tokens: Ed25519, one current key per deployment, rotated
//! on demand or when it grows old. A retired key keeps verifying until every token it
//! signed has expired. Replicas reload the current key periodically, so a rotation on
//! one replica reaches all of them within `key_reload_secs`.
//!
//! Private keys are stored in identity's database as PKCS#8 DER; nothing else reads
//! that database.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use retail_kit::auth::{Claims, KeySource, VerificationKey};
use retail_kit::error::ServiceResult;
use sea_orm::DatabaseConnection;

use crate::store::{self, signing_key};

struct ActiveKey {
    kid: String,
    key: EncodingKey,
    created_at: DateTime<Utc>,
}

/// Signs tokens with the current key.
pub(crate) struct KeyRing {
    db: DatabaseConnection,
    current: RwLock<Arc<ActiveKey>>,
    /// How long a retired key keeps verifying: the longest token lifetime plus the
    /// reload interval (a replica may sign with it until it reloads).
    verify_grace: Duration,
    rotation: Duration,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kid", &self.current_kid())
            .finish_non_exhaustive()
    }
}

fn generate() -> anyhow::Result<signing_key::Model> {
    let mut seed = [0u8; 32];
    rand::rng().fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let der = key.to_pkcs8_der().context("failed to encode a signing key")?;
    Ok(signing_key::Model {
        id: store::new_id(),
        private_key: der.as_bytes().to_vec(),
        public_key: key.verifying_key().to_bytes().to_vec(),
        created_at: Utc::now(),
        retired_at: None,
        expires_at: None,
    })
}

fn activate(model: &signing_key::Model) -> Arc<ActiveKey> {
    Arc::new(ActiveKey {
        kid: model.id.clone(),
        key: EncodingKey::from_ed_der(&model.private_key),
        created_at: model.created_at,
    })
}

impl KeyRing {
    /// Loads the current key, creating the first one on a fresh database.
    pub(crate) async fn load(
        db: DatabaseConnection,
        verify_grace: Duration,
        rotation: Duration,
    ) -> anyhow::Result<Self> {
        let model = match store::current_signing_key(&db).await.map_err(anyhow_of)? {
            Some(model) => model,
            None => {
                let model = generate()?;
                store::insert_signing_key(&db, model.clone()).await.map_err(anyhow_of)?;
                tracing::info!(kid = %model.id, "created the first token signing key");
                model
            }
        };
        Ok(Self {
            db,
            current: RwLock::new(activate(&model)),
            verify_grace,
            rotation,
        })
    }

    fn current(&self) -> Arc<ActiveKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn current_kid(&self) -> String {
        self.current().kid.clone()
    }

    pub(crate) fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let key = self.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.key).context("failed to sign a token")
    }

    /// Creates a new key, retires the others, and starts signing with the new one.
    pub(crate) async fn rotate(&self) -> ServiceResult<signing_key::Model> {
        let model = generate()?;
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(self.verify_grace).unwrap_or(chrono::Duration::hours(1));
        let txn = retail_kit::db::begin_write(&self.db).await?;
        store::insert_signing_key(&txn, model.clone()).await?;
        store::retire_signing_keys(&txn, &model.id, now, expires_at).await?;
        txn.commit().await?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = activate(&model);
        tracing::info!(kid = %model.id, "rotated the token signing key");
        Ok(model)
    }

    /// Picks up a rotation made by another replica; rotates when the key is too old.
    pub(crate) async fn maintain(&self) -> ServiceResult<()> {
        if let Some(model) = store::current_signing_key(&self.db).await?
            && model.id != self.current().kid
        {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = activate(&model);
            tracing::info!(kid = %model.id, "switched to the newest token signing key");
        }
        let age = (Utc::now() - self.current().created_at).to_std().unwrap_or_default();
        if age >= self.rotation {
            self.rotate().await?;
        }
        Ok(())
    }
}

fn anyhow_of(err: retail_kit::ServiceError) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

/// Identity verifies its own tokens from its own table, through the same verifier
/// the other services use.
#[derive(Debug, Clone)]
pub(crate) struct StoreKeySource {
    pub(crate) db: DatabaseConnection,
}

#[async_trait::async_trait]
impl KeySource for StoreKeySource {
    async fn fetch(&self) -> anyhow::Result<Vec<VerificationKey>> {
        let keys = store::verifying_keys(&self.db, Utc::now()).await.map_err(anyhow_of)?;
        Ok(keys
            .into_iter()
            .map(|k| VerificationKey {
                key_id: k.id,
                public_key: k.public_key,
                expires_at: k.expires_at,
            })
            .collect())
    }
}

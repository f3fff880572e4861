//! API keys of partner systems: creating them (the secret is shown once), reading,
//! listing and revoking them, and exchanging one for an access token (throttled per
//! key prefix).

use chrono::{DateTime, Utc};
use retail_kit::auth::PrincipalKind;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use serde_json::json;

use super::tokens::Grant;
use super::{App, Caller, Tokens, now};
use crate::domain::ids::ApiKeyId;
use crate::domain::{scopes, secrets};
use crate::store::{self, Audit, api_key};

/// An API key to create.
#[derive(Debug)]
pub(crate) struct NewApiKey {
    pub(crate) display_name: String,
    pub(crate) partner_id: String,
    /// Partner scopes only.
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// A key just created, with its secret (empty in a replay: the secret is shown once).
pub(crate) struct ApiKeyCreated {
    pub(crate) key: api_key::Model,
    pub(crate) secret: String,
}

impl std::fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCreated")
            .field("key", &self.key.id)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Creates an API key for a partner.
    /// Idempotent by `key`: a replay answers what the first request answered, as
    /// `render` made it and `forget_secret` stored it.
    pub(crate) async fn create_api_key<R>(
        &self,
        caller: &Caller,
        new: NewApiKey,
        key: Option<&IdempotencyKey>,
        render: fn(&ApiKeyCreated) -> R,
        forget_secret: fn(&R) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + 'static,
    {
        self.require_partner("api_key.partner_id", &new.partner_id).await?;
        let at = now();
        let (secret, prefix) = secrets::new_api_key();
        let model = api_key::Model {
            id: store::new_id(),
            prefix,
            secret_hash: secrets::hash(&secret),
            display_name: new.display_name,
            partner_id: new.partner_id,
            scopes: scopes::join(&new.scopes),
            created_by: caller.subject.clone(),
            created_at: at,
            last_used_at: None,
            revoked_at: None,
            expires_at: new.expires_at,
        };
        let actor = caller.subject.clone();
        idempotency::execute(&self.db, key, forget_secret, |txn| {
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
                Ok(render(&ApiKeyCreated { key: created, secret }))
            })
        })
        .await
    }

    /// The key if the caller may see it; NOT_FOUND otherwise (existence never leaks).
    pub(crate) async fn api_key(&self, caller: &Caller, id: &ApiKeyId) -> ServiceResult<api_key::Model> {
        match store::find_api_key(&self.db, id.as_str()).await? {
            Some(key) if caller.sees(Some(&key.partner_id)) => Ok(key),
            _ => Err(ServiceError::not_found("api key", id.name())),
        }
    }

    /// A page of API keys, of one partner if `partner` names one. Returns the page
    /// and the next page's token.
    pub(crate) async fn list_api_keys(
        &self,
        partner: Option<&str>,
        page: &Page,
    ) -> ServiceResult<(Vec<api_key::Model>, String)> {
        let rows = store::list_api_keys(&self.db, page, partner).await?;
        Ok(page.finish(rows, |k| k.id.clone()))
    }

    /// Revokes a key the caller may see (once: revoking again changes nothing) and
    /// answers it as it is now.
    pub(crate) async fn revoke_api_key(&self, caller: &Caller, id: &ApiKeyId) -> ServiceResult<api_key::Model> {
        let key = self.api_key(caller, id).await?;
        let at = now();
        let (key_id, actor, prefix, partner) = (
            key.id.clone(),
            caller.subject.clone(),
            key.prefix.clone(),
            key.partner_id.clone(),
        );
        // The revocation and its audit event commit together.
        idempotency::transaction(&self.db, |txn| {
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
        store::find_api_key(&self.db, &key.id)
            .await?
            .ok_or_else(|| ServiceError::not_found("api key", id.name()))
    }

    /// Exchanges a live API key for an access token of its partner system.
    pub(crate) async fn exchange_api_key(&self, presented: &str) -> ServiceResult<Tokens> {
        let invalid = || ServiceError::Unauthenticated("invalid API key".into());
        let Some(prefix) = secrets::api_key_prefix(presented) else {
            return Err(invalid());
        };
        let subject = format!("api_key:{prefix}");
        let attempt = self.claim_attempt(&subject).await?;
        let at = now();
        let key = store::find_api_key_by_prefix(&self.db, prefix).await?;
        let key = match key {
            Some(k)
                if secrets::matches(presented, &k.secret_hash)
                    && k.revoked_at.is_none()
                    && k.expires_at.is_none_or(|e| e > at) =>
            {
                k
            }
            other => {
                self.attempt_failed(&subject, attempt).await?;
                self.audit(Audit {
                    action: "api_key.exchange_failed",
                    actor: "",
                    target: other.as_ref().map(|k| k.id.as_str()).unwrap_or(prefix),
                    detail: json!({ "prefix": prefix }),
                })
                .await?;
                return Err(invalid());
            }
        };
        self.require_active_partner(&key.partner_id).await?;
        store::clear_throttle(&self.db, &subject).await?;
        store::touch_api_key(&self.db, &key.id, at).await?;
        self.issue(Grant {
            subject: &key.id,
            kind: PrincipalKind::PartnerSystem,
            roles: &[],
            scopes: scopes::split(&key.scopes),
            partner_id: Some(&key.partner_id),
            session_id: None,
            stores: Vec::new(),
        })
    }
}

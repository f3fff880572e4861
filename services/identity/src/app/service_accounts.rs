//! Service accounts (the other services' clients): creating them (the secret is
//! shown once), listing them, and issuing their access tokens.

use retail_kit::auth::PrincipalKind;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use serde_json::json;

use super::tokens::Grant;
use super::{App, Caller, Tokens, now};
use crate::domain::{scopes, secrets};
use crate::store::{self, Audit, service_account};

/// A service account to create.
#[derive(Debug)]
pub(crate) struct NewServiceAccount {
    pub(crate) client_id: String,
    /// Known scopes only.
    pub(crate) scopes: Vec<String>,
}

/// An account just created, with its client secret (empty in a replay: the secret
/// is shown once).
pub(crate) struct ServiceAccountCreated {
    pub(crate) account: service_account::Model,
    pub(crate) client_secret: String,
}

impl std::fmt::Debug for ServiceAccountCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountCreated")
            .field("account", &self.account.id)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Creates a service account. Idempotent by `key`: a replay answers what the
    /// first request answered, as `render` made it and `forget_secret` stored it.
    pub(crate) async fn create_service_account<R>(
        &self,
        caller: &Caller,
        new: NewServiceAccount,
        key: Option<&IdempotencyKey>,
        render: fn(&ServiceAccountCreated) -> R,
        forget_secret: fn(&R) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + 'static,
    {
        let secret = secrets::new_client_secret();
        let at = now();
        let model = service_account::Model {
            id: store::new_id(),
            client_id: new.client_id,
            secret_hash: secrets::hash(&secret),
            scopes: scopes::join(&new.scopes),
            created_at: at,
        };
        let actor = caller.subject.clone();
        idempotency::execute(&self.db, key, forget_secret, |txn| {
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
                Ok(render(&ServiceAccountCreated {
                    account: created,
                    client_secret: secret,
                }))
            })
        })
        .await
    }

    /// A page of service accounts and the next page's token.
    pub(crate) async fn list_service_accounts(
        &self,
        page: &Page,
    ) -> ServiceResult<(Vec<service_account::Model>, String)> {
        let rows = store::list_service_accounts(&self.db, page).await?;
        Ok(page.finish(rows, |a| a.id.clone()))
    }

    /// An access token for a service with its client credentials. No lockout here:
    /// client secrets are 256-bit random (nothing to guess), and a lock on a
    /// well-known client id would let anyone cut a service off.
    pub(crate) async fn issue_service_token(&self, client_id: &str, client_secret: &str) -> ServiceResult<Tokens> {
        let invalid = || ServiceError::Unauthenticated("invalid client credentials".into());
        let account = match store::find_service_account_by_client_id(&self.db, client_id).await? {
            Some(a) if secrets::matches(client_secret, &a.secret_hash) => a,
            Some(a) => {
                self.audit(Audit {
                    action: "service_token.failed",
                    actor: "",
                    target: &a.id,
                    detail: json!({}),
                })
                .await?;
                return Err(invalid());
            }
            None => return Err(invalid()),
        };
        self.issue(Grant {
            subject: &account.id,
            kind: PrincipalKind::Service,
            roles: &[],
            scopes: scopes::split(&account.scopes),
            partner_id: None,
            session_id: None,
            stores: Vec::new(),
        })
    }
}

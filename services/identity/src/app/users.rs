//! Users: creating them (idempotent by request id), reading and listing them,
//! updating their fields and roles, disabling them, resetting their passwords.

use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::{ActiveValue::Set, IntoActiveModel};
use serde_json::json;

use super::{App, Caller, now};
use crate::domain::fields::{Email, Password, Username};
use crate::domain::ids::UserId;
use crate::domain::scopes::{self, Role};
use crate::domain::users::UserKind;
use crate::store::{self, Audit, user};

/// A user to create.
#[derive(Debug)]
pub(crate) struct NewUser {
    pub(crate) username: Username,
    pub(crate) email: Option<Email>,
    /// Empty: the username.
    pub(crate) display_name: String,
    pub(crate) password: Password,
    pub(crate) kind: UserKind,
    pub(crate) roles: Vec<Role>,
    /// A partner user's partner.
    pub(crate) partner_id: Option<String>,
    /// A staff user's stores, space-separated.
    pub(crate) stores: String,
}

/// The fields an update sets, each `Some` if the update mask names it.
#[derive(Debug, Default)]
pub(crate) struct UserUpdate {
    pub(crate) email: Option<Option<Email>>,
    pub(crate) display_name: Option<String>,
    pub(crate) roles: Option<Vec<Role>>,
    pub(crate) disabled: Option<bool>,
    /// Store codes, space-separated.
    pub(crate) stores: Option<String>,
    /// The mask's fields in its order (for the audit trail).
    pub(crate) fields: Vec<&'static str>,
}

impl App {
    /// Creates a user. Idempotent by `key`: a replay answers what the first request
    /// answered, as `render` made it.
    pub(crate) async fn create_user<R>(
        &self,
        caller: &Caller,
        new: NewUser,
        key: Option<&IdempotencyKey>,
        render: fn(&user::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + 'static,
    {
        if let Some(partner) = &new.partner_id {
            self.require_partner("user.partner_id", partner).await?;
        }
        let hash = self.hash_password(&new.password).await?;
        let at = now();
        let model = user::Model {
            id: store::new_id(),
            username: new.username.as_str().to_owned(),
            email: new.email.map(|e| e.as_str().to_owned()),
            display_name: if new.display_name.is_empty() {
                new.username.as_str().to_owned()
            } else {
                new.display_name
            },
            kind: new.kind.as_str().into(),
            roles: scopes::join_roles(&new.roles),
            partner_id: new.partner_id,
            password_hash: hash,
            disabled: false,
            created_at: at,
            updated_at: at,
            last_login_at: None,
            password_changed_at: at,
            stores: new.stores,
        };
        let actor = caller.subject.clone();
        idempotency::execute(&self.db, key, Clone::clone, |txn| {
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
                Ok(render(&created))
            })
        })
        .await
    }

    /// The user if the caller may see it; NOT_FOUND otherwise (existence never leaks).
    pub(crate) async fn user(&self, caller: &Caller, id: &UserId) -> ServiceResult<user::Model> {
        match store::find_user(&self.db, id.as_str()).await? {
            Some(user) if caller.sees(user.partner_id.as_deref()) => Ok(user),
            _ => Err(ServiceError::not_found("user", id.name())),
        }
    }

    /// A page of users, of one partner if `partner` names one. Returns the page and
    /// the next page's token.
    pub(crate) async fn list_users(
        &self,
        partner: Option<&str>,
        page: &Page,
    ) -> ServiceResult<(Vec<user::Model>, String)> {
        let rows = store::list_users(&self.db, page, partner).await?;
        Ok(page.finish(rows, |u| u.id.clone()))
    }

    /// Applies `update` to `current` (as read by [`App::user`]). Disabling a user ends
    /// its sessions; no one disables themself or takes away their own admin role.
    pub(crate) async fn update_user(
        &self,
        caller: &Caller,
        current: user::Model,
        update: UserUpdate,
    ) -> ServiceResult<user::Model> {
        let old_roles = scopes::roles_of(&current.roles);
        let new_roles = update.roles.clone().unwrap_or_else(|| old_roles.clone());
        if current.id == caller.subject {
            if update.disabled == Some(true) {
                return Err(ServiceError::FailedPrecondition("you cannot disable yourself".into()));
            }
            if old_roles.contains(&Role::Admin) && !new_roles.contains(&Role::Admin) {
                return Err(ServiceError::FailedPrecondition(
                    "you cannot remove your own admin role".into(),
                ));
            }
        }
        let at = now();
        let disabled_now = update.disabled == Some(true) && !current.disabled;
        let mut active = current.into_active_model();
        if let Some(email) = update.email {
            active.email = Set(email.map(|e| e.as_str().to_owned()));
        }
        if let Some(name) = update.display_name {
            active.display_name = Set(name);
        }
        if update.roles.is_some() {
            active.roles = Set(scopes::join_roles(&new_roles));
        }
        if let Some(disabled) = update.disabled {
            active.disabled = Set(disabled);
        }
        if let Some(stores) = update.stores {
            active.stores = Set(stores);
        }
        active.updated_at = Set(at);
        let actor = caller.subject.clone();
        let (old_roles_s, new_roles_s) = (scopes::join_roles(&old_roles), scopes::join_roles(&new_roles));
        let roles_changed = old_roles_s != new_roles_s;
        let changed_s: Vec<String> = update.fields.iter().map(|c| c.to_string()).collect();
        idempotency::transaction(&self.db, |txn| {
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
        .await
    }

    /// Sets a new password for `user` (as read by [`App::user`]), ends all its
    /// sessions and lifts any lock on it.
    pub(crate) async fn reset_password(
        &self,
        caller: &Caller,
        user: &user::Model,
        password: &Password,
    ) -> ServiceResult<()> {
        let hash = self.hash_password(password).await?;
        let at = now();
        let (user_id, actor) = (user.id.clone(), caller.subject.clone());
        idempotency::transaction(&self.db, |txn| {
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
        store::clear_throttle(&self.db, &format!("user:{}", user.username)).await
    }
}

//! Sessions: logging in (throttled), refreshing (each refresh token once; a reused
//! one ends its session), logging out, and changing one's own password.

use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency;
use serde_json::json;

use super::{App, Caller, Tokens, chrono_of, now};
use crate::domain::fields::Password;
use crate::domain::secrets;
use crate::store::{self, Audit, RefreshUse, user};

const INVALID_CREDENTIALS: &str = "invalid username or password";

/// A login attempt.
pub(crate) struct Login {
    /// Trimmed and lower-cased, as usernames are stored; not checked further, so
    /// any name fails the same way.
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Checks the password and opens a session: its token pair.
    pub(crate) async fn login(&self, login: Login) -> ServiceResult<Tokens> {
        // Throttle by the normalised name whether or not such a user exists, so a
        // lock reveals nothing.
        let subject = format!("user:{}", login.username);
        let attempt = self.claim_attempt(&subject).await?;
        let user = store::find_user_by_username(&self.db, &login.username).await?;
        let valid = self
            .verify_password(&login.password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        let user = match user {
            Some(user) if valid && !user.disabled => user,
            other => {
                let reason = match &other {
                    None => "unknown_user",
                    Some(u) if u.disabled && valid => "disabled",
                    Some(_) => "bad_password",
                };
                let locked = self.attempt_failed(&subject, attempt).await?;
                let target = other.as_ref().map(|u| u.id.clone()).unwrap_or_default();
                self.audit(Audit {
                    action: "login.failed",
                    actor: "",
                    target: &target,
                    detail: json!({ "reason": reason }),
                })
                .await?;
                if locked {
                    self.audit(Audit {
                        action: "login.locked",
                        actor: "",
                        target: &target,
                        detail: json!({ "lock_secs": self.lockout_secs() }),
                    })
                    .await?;
                }
                return Err(ServiceError::Unauthenticated(INVALID_CREDENTIALS.into()));
            }
        };

        if let Some(partner) = &user.partner_id {
            self.require_active_partner(partner).await?;
        }
        store::clear_throttle(&self.db, &subject).await?;
        let at = now();
        let refresh = secrets::new_refresh_token();
        let refresh_hash = secrets::hash(&refresh);
        let refresh_ttl = chrono_of(self.tokens.refresh_ttl());
        let user_id = user.id.clone();
        let session_id = idempotency::transaction(&self.db, |txn| {
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
        self.user_tokens(&user, &session_id, refresh)
    }

    /// Exchanges a refresh token, once, for a new pair of the same session.
    pub(crate) async fn refresh(&self, refresh_token: &str) -> ServiceResult<Tokens> {
        let at = now();
        let presented = secrets::hash(refresh_token);
        let txn = retail_kit::db::begin_write(&self.db).await?;
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
                txn.commit().await?;
                return Err(ServiceError::Unauthenticated(
                    "refresh token already used; session revoked".into(),
                ));
            }
            RefreshUse::Invalid => return Err(ServiceError::Unauthenticated("invalid refresh token".into())),
        };
        let user = match store::find_user(&txn, &session.user_id).await? {
            Some(user) if !user.disabled => user,
            _ => {
                store::revoke_session(&txn, &session.id, "disabled", at).await?;
                txn.commit().await?;
                return Err(ServiceError::Unauthenticated("invalid refresh token".into()));
            }
        };
        if let Some(partner) = &user.partner_id {
            // Refused before the commit: the refresh token stays usable.
            self.require_active_partner(partner).await?;
        }
        let refresh = secrets::new_refresh_token();
        // The new token lives no longer than its session.
        store::insert_refresh_token(&txn, secrets::hash(&refresh), &session.id, at, session.expires_at).await?;
        txn.commit().await?;
        self.user_tokens(&user, &session.id, refresh)
    }

    /// Ends the session of a refresh token. Logging out twice, or with an unknown
    /// token, changes nothing and succeeds.
    pub(crate) async fn logout(&self, refresh_token: &str) -> ServiceResult<()> {
        let presented = secrets::hash(refresh_token);
        idempotency::transaction(&self.db, |txn| {
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
        .await
    }

    /// The user a user's token names; UNAUTHENTICATED if it no longer exists.
    pub(crate) async fn own_user(&self, caller: &Caller) -> ServiceResult<user::Model> {
        store::find_user(&self.db, &caller.subject)
            .await?
            .ok_or_else(|| ServiceError::Unauthenticated("the token's user no longer exists".into()))
    }

    /// Changes the caller's own password after checking the current one (throttled
    /// like a login: a stolen access token must not become a way to guess it), and
    /// ends the user's other sessions.
    pub(crate) async fn change_password(
        &self,
        caller: &Caller,
        user: &user::Model,
        current: &str,
        new_password: &Password,
    ) -> ServiceResult<()> {
        let subject = format!("user:{}", user.username);
        let attempt = self.claim_attempt(&subject).await?;
        if !self.verify_password(current, Some(user.password_hash.clone())).await? {
            self.attempt_failed(&subject, attempt).await?;
            self.audit(Audit {
                action: "password.change_failed",
                actor: &user.id,
                target: &user.id,
                detail: json!({}),
            })
            .await?;
            return Err(ServiceError::invalid("current_password", "is not the current password"));
        }
        store::clear_throttle(&self.db, &subject).await?;
        let hash = self.hash_password(new_password).await?;
        let at = now();
        let (user_id, keep) = (user.id.clone(), caller.session.clone());
        idempotency::transaction(&self.db, |txn| {
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
        .await
    }
}

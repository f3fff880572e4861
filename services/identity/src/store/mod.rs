//! Identity's tables and the queries and conditional updates over them.
//!
//! Functions take any connection (`&impl ConnectionTrait`) so callers compose them
//! inside one transaction. Database errors are translated here: a unique violation
//! becomes `AlreadyExists`, everything else `Internal`.

mod entities;
pub(crate) mod migration;

use chrono::{DateTime, Utc};
use retail_kit::db::is_unique_violation;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

pub use entities::{api_key, audit_event, login_throttle, refresh_token, service_account, session, signing_key, user};

/// A new time-ordered id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn translate(err: sea_orm::DbErr, what: &str) -> ServiceError {
    if is_unique_violation(&err) {
        ServiceError::AlreadyExists(format!("{what} already exists"))
    } else {
        err.into()
    }
}

// ---- users ----

pub(crate) async fn insert_user(conn: &impl ConnectionTrait, model: user::Model) -> ServiceResult<user::Model> {
    let active: user::ActiveModel = model.into();
    active
        .insert(conn)
        .await
        .map_err(|e| translate(e, "a user with this username or email"))
}

pub(crate) async fn find_user(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub(crate) async fn find_user_by_username(
    conn: &impl ConnectionTrait,
    username: &str,
) -> ServiceResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(conn)
        .await?)
}

pub(crate) async fn list_users(
    conn: &impl ConnectionTrait,
    page: &Page,
    partner_id: Option<&str>,
) -> ServiceResult<Vec<user::Model>> {
    let mut query = user::Entity::find()
        .order_by_asc(user::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(user::Column::Id.gt(after.as_str()));
    }
    if let Some(partner) = partner_id {
        query = query.filter(user::Column::PartnerId.eq(partner));
    }
    Ok(query.all(conn).await?)
}

pub(crate) async fn update_user(conn: &impl ConnectionTrait, active: user::ActiveModel) -> ServiceResult<user::Model> {
    active
        .update(conn)
        .await
        .map_err(|e| translate(e, "a user with this email"))
}

pub(crate) async fn record_login(conn: &impl ConnectionTrait, user_id: &str, at: DateTime<Utc>) -> ServiceResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::LastLoginAt, Expr::value(at))
        .filter(user::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

pub(crate) async fn set_password(
    conn: &impl ConnectionTrait,
    user_id: &str,
    password_hash: String,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(user::Column::PasswordChangedAt, Expr::value(at))
        .col_expr(user::Column::UpdatedAt, Expr::value(at))
        .filter(user::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

// ---- sessions and refresh tokens ----

pub(crate) async fn create_session(
    conn: &impl ConnectionTrait,
    user_id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> ServiceResult<String> {
    let id = new_id();
    session::ActiveModel {
        id: Set(id.clone()),
        user_id: Set(user_id.to_owned()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        revoke_reason: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(id)
}

pub(crate) async fn insert_refresh_token(
    conn: &impl ConnectionTrait,
    token_hash: String,
    session_id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> ServiceResult<()> {
    refresh_token::ActiveModel {
        token_hash: Set(token_hash),
        session_id: Set(session_id.to_owned()),
        issued_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefreshUse {
    /// First use of a live token of a live session: it is now used up.
    Exchanged(session::Model),
    /// The token was used before: the session must be treated as stolen.
    Reused { session_id: String },
    /// Unknown, expired, or its session ended.
    Invalid,
}

/// Uses up a refresh token with one conditional update, so of two racing exchanges
/// exactly one wins.
pub(crate) async fn use_refresh_token(
    conn: &impl ConnectionTrait,
    token_hash: &str,
    now: DateTime<Utc>,
) -> ServiceResult<RefreshUse> {
    let updated = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(token_hash))
        .filter(refresh_token::Column::UsedAt.is_null())
        .filter(refresh_token::Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    let Some(token) = refresh_token::Entity::find_by_id(token_hash.to_owned())
        .one(conn)
        .await?
    else {
        return Ok(RefreshUse::Invalid);
    };
    if updated.rows_affected == 0 {
        return Ok(if token.used_at.is_some() {
            RefreshUse::Reused {
                session_id: token.session_id,
            }
        } else {
            RefreshUse::Invalid
        });
    }
    match session::Entity::find_by_id(token.session_id).one(conn).await? {
        Some(s) if s.revoked_at.is_none() && s.expires_at > now => Ok(RefreshUse::Exchanged(s)),
        _ => Ok(RefreshUse::Invalid),
    }
}

pub(crate) async fn find_session_of_refresh_token(
    conn: &impl ConnectionTrait,
    token_hash: &str,
) -> ServiceResult<Option<session::Model>> {
    let Some(token) = refresh_token::Entity::find_by_id(token_hash.to_owned())
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(session::Entity::find_by_id(token.session_id).one(conn).await?)
}

pub(crate) async fn revoke_session(
    conn: &impl ConnectionTrait,
    session_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let result = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .col_expr(session::Column::RevokeReason, Expr::value(reason))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Ends every live session of a user, except `keep`.
pub(crate) async fn revoke_user_sessions(
    conn: &impl ConnectionTrait,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> ServiceResult<u64> {
    let mut update = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .col_expr(session::Column::RevokeReason, Expr::value(reason))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(session::Column::Id.ne(keep));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

// ---- API keys ----

pub(crate) async fn insert_api_key(
    conn: &impl ConnectionTrait,
    model: api_key::Model,
) -> ServiceResult<api_key::Model> {
    let active: api_key::ActiveModel = model.into();
    active
        .insert(conn)
        .await
        .map_err(|e| translate(e, "an API key with this prefix"))
}

pub(crate) async fn find_api_key(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<api_key::Model>> {
    Ok(api_key::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub(crate) async fn find_api_key_by_prefix(
    conn: &impl ConnectionTrait,
    prefix: &str,
) -> ServiceResult<Option<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::Prefix.eq(prefix))
        .one(conn)
        .await?)
}

pub(crate) async fn list_api_keys(
    conn: &impl ConnectionTrait,
    page: &Page,
    partner_id: Option<&str>,
) -> ServiceResult<Vec<api_key::Model>> {
    let mut query = api_key::Entity::find()
        .order_by_asc(api_key::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(api_key::Column::Id.gt(after.as_str()));
    }
    if let Some(partner) = partner_id {
        query = query.filter(api_key::Column::PartnerId.eq(partner));
    }
    Ok(query.all(conn).await?)
}

/// Revokes once; false if it was already revoked.
pub(crate) async fn revoke_api_key(conn: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> ServiceResult<bool> {
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

pub(crate) async fn touch_api_key(conn: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> ServiceResult<()> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

// ---- service accounts ----

pub(crate) async fn insert_service_account(
    conn: &impl ConnectionTrait,
    model: service_account::Model,
) -> ServiceResult<service_account::Model> {
    let active: service_account::ActiveModel = model.into();
    active
        .insert(conn)
        .await
        .map_err(|e| translate(e, "a service account with this client id"))
}

pub(crate) async fn find_service_account_by_client_id(
    conn: &impl ConnectionTrait,
    client_id: &str,
) -> ServiceResult<Option<service_account::Model>> {
    Ok(service_account::Entity::find()
        .filter(service_account::Column::ClientId.eq(client_id))
        .one(conn)
        .await?)
}

pub(crate) async fn list_service_accounts(
    conn: &impl ConnectionTrait,
    page: &Page,
) -> ServiceResult<Vec<service_account::Model>> {
    let mut query = service_account::Entity::find()
        .order_by_asc(service_account::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(service_account::Column::Id.gt(after.as_str()));
    }
    Ok(query.all(conn).await?)
}

pub(crate) async fn update_service_account_credentials(
    conn: &impl ConnectionTrait,
    id: &str,
    secret_hash: String,
    scopes: String,
) -> ServiceResult<()> {
    service_account::Entity::update_many()
        .col_expr(service_account::Column::SecretHash, Expr::value(secret_hash))
        .col_expr(service_account::Column::Scopes, Expr::value(scopes))
        .filter(service_account::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

// ---- signing keys ----

pub(crate) async fn insert_signing_key(conn: &impl ConnectionTrait, model: signing_key::Model) -> ServiceResult<()> {
    let active: signing_key::ActiveModel = model.into();
    active.insert(conn).await?;
    Ok(())
}

/// The newest key that still signs.
pub(crate) async fn current_signing_key(conn: &impl ConnectionTrait) -> ServiceResult<Option<signing_key::Model>> {
    Ok(signing_key::Entity::find()
        .filter(signing_key::Column::RetiredAt.is_null())
        .order_by_desc(signing_key::Column::CreatedAt)
        .order_by_desc(signing_key::Column::Id)
        .one(conn)
        .await?)
}

/// Keys that may still verify a valid token, newest first.
pub(crate) async fn verifying_keys(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> ServiceResult<Vec<signing_key::Model>> {
    Ok(signing_key::Entity::find()
        .filter(
            sea_orm::Condition::any()
                .add(signing_key::Column::ExpiresAt.is_null())
                .add(signing_key::Column::ExpiresAt.gt(now)),
        )
        .order_by_desc(signing_key::Column::CreatedAt)
        .all(conn)
        .await?)
}

/// Retires every signing key but `keep`; they verify until `expires_at`.
pub(crate) async fn retire_signing_keys(
    conn: &impl ConnectionTrait,
    keep: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> ServiceResult<()> {
    signing_key::Entity::update_many()
        .col_expr(signing_key::Column::RetiredAt, Expr::value(now))
        .col_expr(signing_key::Column::ExpiresAt, Expr::value(expires_at))
        .filter(signing_key::Column::RetiredAt.is_null())
        .filter(signing_key::Column::Id.ne(keep))
        .exec(conn)
        .await?;
    Ok(())
}

// ---- audit ----

/// A security event to record. `detail` must never hold a secret.
#[derive(Debug, Clone)]
pub(crate) struct Audit<'a> {
    pub(crate) action: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) target: &'a str,
    pub(crate) detail: serde_json::Value,
}

pub(crate) async fn record_audit(
    conn: &impl ConnectionTrait,
    event: Audit<'_>,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    audit_event::ActiveModel {
        id: Set(new_id()),
        action: Set(event.action.to_owned()),
        actor: Set(event.actor.chars().take(64).collect()),
        target: Set(event.target.chars().take(128).collect()),
        detail_json: Set(event.detail.to_string()),
        created_at: Set(now),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Newest first: the keyset runs backwards over the time-ordered ids.
pub(crate) async fn list_audit_events(
    conn: &impl ConnectionTrait,
    page: &Page,
    action: Option<&str>,
) -> ServiceResult<Vec<audit_event::Model>> {
    let mut query = audit_event::Entity::find()
        .order_by_desc(audit_event::Column::Id)
        .limit(page.fetch_limit());
    if let Some(before) = &page.after {
        query = query.filter(audit_event::Column::Id.lt(before.as_str()));
    }
    if let Some(action) = action {
        query = query.filter(audit_event::Column::Action.eq(action));
    }
    Ok(query.all(conn).await?)
}

// ---- brute-force throttle ----

pub(crate) async fn throttle(
    conn: &impl ConnectionTrait,
    subject: &str,
) -> ServiceResult<Option<login_throttle::Model>> {
    Ok(login_throttle::Entity::find_by_id(subject.to_owned()).one(conn).await?)
}

/// Counts one more attempt atomically and returns the new count.
pub(crate) async fn count_failure(
    conn: &impl ConnectionTrait,
    subject: &str,
    now: DateTime<Utc>,
) -> ServiceResult<u32> {
    let inserted = login_throttle::ActiveModel {
        subject: Set(subject.to_owned()),
        failures: Set(1),
        next_attempt_at: Set(None),
        locked_until: Set(None),
        updated_at: Set(now),
    }
    .insert(conn)
    .await;
    match inserted {
        Ok(_) => return Ok(1),
        Err(err) if is_unique_violation(&err) => {}
        Err(err) => return Err(err.into()),
    }
    login_throttle::Entity::update_many()
        .col_expr(
            login_throttle::Column::Failures,
            Expr::col(login_throttle::Column::Failures).add(1),
        )
        .col_expr(login_throttle::Column::UpdatedAt, Expr::value(now))
        .filter(login_throttle::Column::Subject.eq(subject))
        .exec(conn)
        .await?;
    let row = throttle(conn, subject).await?;
    Ok(row.map(|r| u32::try_from(r.failures).unwrap_or(0)).unwrap_or(1))
}

/// Moves the throttle's times forward, never back: racing failures cannot undo a
/// lock or a wait another one set.
pub(crate) async fn raise_throttle(
    conn: &impl ConnectionTrait,
    subject: &str,
    next_attempt_at: Option<DateTime<Utc>>,
    locked_until: Option<DateTime<Utc>>,
) -> ServiceResult<()> {
    if let Some(next) = next_attempt_at {
        login_throttle::Entity::update_many()
            .col_expr(login_throttle::Column::NextAttemptAt, Expr::value(next))
            .filter(login_throttle::Column::Subject.eq(subject))
            .filter(
                sea_orm::Condition::any()
                    .add(login_throttle::Column::NextAttemptAt.is_null())
                    .add(login_throttle::Column::NextAttemptAt.lt(next)),
            )
            .exec(conn)
            .await?;
    }
    if let Some(until) = locked_until {
        login_throttle::Entity::update_many()
            .col_expr(login_throttle::Column::LockedUntil, Expr::value(until))
            .filter(login_throttle::Column::Subject.eq(subject))
            .filter(
                sea_orm::Condition::any()
                    .add(login_throttle::Column::LockedUntil.is_null())
                    .add(login_throttle::Column::LockedUntil.lt(until)),
            )
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// Starts a fresh count once a lock has run out (only if it has).
pub(crate) async fn reset_expired_lock(
    conn: &impl ConnectionTrait,
    subject: &str,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    login_throttle::Entity::update_many()
        .col_expr(login_throttle::Column::Failures, Expr::value(0))
        .col_expr(
            login_throttle::Column::LockedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            login_throttle::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(login_throttle::Column::Subject.eq(subject))
        .filter(login_throttle::Column::LockedUntil.lte(now))
        .exec(conn)
        .await?;
    Ok(())
}

pub(crate) async fn clear_throttle(conn: &impl ConnectionTrait, subject: &str) -> ServiceResult<()> {
    login_throttle::Entity::delete_by_id(subject.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}

//! Idempotent creates (AIP-155): a mutating request's `request_id` is stored with its
//! response in the same transaction as its effect. A retry with the same id and the
//! same request returns the stored response; the same id with a different request is
//! rejected. Racing retries are settled by the primary key: the loser rolls back and
//! replays the winner's response.

use std::future::Future;
use std::pin::Pin;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
};
use sha2::{Digest, Sha256};

use crate::db::{GuardedWrite, is_retryable, is_unique_violation};
use crate::error::{ServiceError, ServiceResult};

/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

pub mod entity {
    //! One row per idempotent request that committed.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        /// The operation, so that ids of different RPCs never collide.
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        /// SHA-256 of the encoded request, to reject a reused id.
        pub fingerprint: Vec<u8>,
        /// The encoded response to replay (secrets already removed).
        pub response: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration {
    //! The `idempotency_keys` table; every service's migrator lists it.
    use sea_orm_migration::{prelude::*, schema::*};

    #[derive(Debug)]
    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261122_000001_create_idempotency_keys"
        }
    }

    #[derive(DeriveIden)]
    enum IdempotencyKeys {
        Table,
        Scope,
        RequestId,
        Fingerprint,
        Response,
        CreatedAt,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(IdempotencyKeys::Table)
                        .if_not_exists()
                        .col(string_len(IdempotencyKeys::Scope, 64))
                        .col(string_len(IdempotencyKeys::RequestId, 128))
                        .col(blob(IdempotencyKeys::Fingerprint))
                        .col(blob(IdempotencyKeys::Response))
                        .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                        .primary_key(
                            Index::create()
                                .col(IdempotencyKeys::Scope)
                                .col(IdempotencyKeys::RequestId),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("idx_idempotency_keys_created_at")
                        .table(IdempotencyKeys::Table)
                        .col(IdempotencyKeys::CreatedAt)
                        .if_not_exists()
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
                .await
        }
    }
}

/// The check of every request id a request carries: at most
/// [`MAX_REQUEST_ID_LEN`] characters of printable ASCII without spaces. An empty
/// id passes; whether one is required is the caller's rule.
pub fn check_request_id(field: &str, request_id: &str) -> Result<(), crate::error::Violation> {
    if request_id.len() > MAX_REQUEST_ID_LEN {
        return Err(crate::error::Violation::new(
            field,
            format!("must be at most {MAX_REQUEST_ID_LEN} characters"),
        ));
    }
    if !request_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(crate::error::Violation::new(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// A validated request id bound to its operation and request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// Operation and a short hash of the caller.
    scope: String,
    request_id: String,
    fingerprint: Vec<u8>,
}

impl IdempotencyKey {
    /// `None` when the request carries no id (the create is then not idempotent).
    /// The fingerprint is over the encoded request (map fields are BTreeMaps, so the
    /// encoding is deterministic).
    /// `caller` (the principal's subject) is part of the key: one caller's request id
    /// never replays, or reveals, another caller's result.
    pub fn from_request(
        scope: &'static str,
        caller: &str,
        request_id: &str,
        request: &impl prost::Message,
    ) -> ServiceResult<Option<Self>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        check_request_id("request_id", request_id)?;
        let mut caller_hash = crate::convert::sha256_hex(caller.as_bytes());
        caller_hash.truncate(16);
        Ok(Some(Self {
            scope: format!("{scope}:{caller_hash}"),
            request_id: request_id.to_owned(),
            fingerprint: Sha256::digest(request.encode_to_vec()).to_vec(),
        }))
    }

    /// The row that stores `response` under this key.
    fn row(&self, response: Vec<u8>) -> entity::ActiveModel {
        entity::ActiveModel {
            scope: Set(self.scope.clone()),
            request_id: Set(self.request_id.clone()),
            fingerprint: Set(self.fingerprint.clone()),
            response: Set(response),
            created_at: Set(Utc::now()),
        }
    }

    /// The stored fingerprint and response as scalar subqueries with their aliases
    /// (NULL when nothing is stored), so that a read the caller makes anyway fetches
    /// them in the same statement; [`Self::stored_in`] takes them from its row and
    /// [`Self::replay`] turns them into the replay.
    pub fn stored_columns(&self) -> [(sea_orm::sea_query::Expr, &'static str); 2] {
        use sea_orm::ColumnTrait;
        use sea_orm::sea_query::{Expr, Query};
        let of = |col: entity::Column| {
            let select = Query::select()
                .column(col)
                .from(entity::Entity)
                .and_where(entity::Column::Scope.eq(self.scope.as_str()))
                .and_where(entity::Column::RequestId.eq(self.request_id.as_str()))
                .to_owned();
            Expr::SubQuery(None, Box::new(select.into()))
        };
        [
            (of(entity::Column::Fingerprint), STORED_FINGERPRINT),
            (of(entity::Column::Response), STORED_RESPONSE),
        ]
    }

    /// What a row read with [`Self::stored_columns`] holds of this key.
    pub fn stored_in(&self, row: &sea_orm::QueryResult) -> ServiceResult<Stored> {
        let fingerprint: Option<Vec<u8>> = row.try_get("", STORED_FINGERPRINT)?;
        let response: Option<Vec<u8>> = row.try_get("", STORED_RESPONSE)?;
        Ok(Stored(fingerprint.zip(response)))
    }

    async fn stored<R: prost::Message + Default>(&self, db: &impl ConnectionTrait) -> ServiceResult<Option<R>> {
        let row = entity::Entity::find_by_id((self.scope.clone(), self.request_id.clone()))
            .one(db)
            .await?;
        self.replay(Stored(row.map(|row| (row.fingerprint, row.response))))
    }

    /// The response an earlier run of this request stored, if any; INVALID_ARGUMENT
    /// if the id was stored with another request. A caller that answers NOT_FOUND to
    /// some callers decides that first, so the answer here reveals nothing to them.
    pub fn replay<R: prost::Message + Default>(&self, stored: Stored) -> ServiceResult<Option<R>> {
        match stored.0 {
            None => Ok(None),
            Some((fingerprint, _)) if fingerprint != self.fingerprint => Err(ServiceError::invalid(
                "request_id",
                "was already used for a different request",
            )),
            Some((_, response)) => R::decode(response.as_slice())
                .map(Some)
                .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("stored response is unreadable"))),
        }
    }
}

/// What an earlier run of a request stored under its key (fingerprint, response),
/// read with [`IdempotencyKey::stored_columns`].
#[derive(Debug, Default)]
pub struct Stored(Option<(Vec<u8>, Vec<u8>)>);

/// Aliases of [`IdempotencyKey::stored_columns`].
const STORED_FINGERPRINT: &str = "stored_key_fingerprint";
const STORED_RESPONSE: &str = "stored_key_response";

/// The work of a transaction: borrows the transaction, returns the response.
pub type TxnWork<'t, R> = Pin<Box<dyn Future<Output = ServiceResult<R>> + Send + 't>>;

/// How often a transaction is retried on serialization failures or a busy database.
const ATTEMPTS: usize = 5;

/// Runs `work` in a transaction, retrying it when the database asks for a retry.
pub async fn transaction<R, F>(db: &DatabaseConnection, work: F) -> ServiceResult<R>
where
    R: Send,
    F: for<'t> Fn(&'t DatabaseTransaction) -> TxnWork<'t, R>,
{
    run(
        db,
        None,
        |r: &R| -> Option<Vec<u8>> {
            let _ = r;
            None
        },
        work,
    )
    .await
}

/// Runs `work` once per `key`: replays the stored response of an earlier run with the
/// same key. `stored_form` is what is kept for replays (remove secrets there).
pub async fn execute<R, F>(
    db: &DatabaseConnection,
    key: Option<&IdempotencyKey>,
    stored_form: impl Fn(&R) -> R,
    work: F,
) -> ServiceResult<R>
where
    R: prost::Message + Default + Send,
    F: for<'t> Fn(&'t DatabaseTransaction) -> TxnWork<'t, R>,
{
    if let Some(key) = key
        && let Some(replayed) = key.stored::<R>(db).await?
    {
        return Ok(replayed);
    }
    execute_after_replay(db, key, stored_form, work).await
}

/// [`execute`] for a caller that has just looked for a replay itself with
/// [`IdempotencyKey::replay`] (to answer it before validating against current
/// state): it does not look again. A twin committing in between is still caught, by
/// the key's unique insert, and replayed.
pub async fn execute_after_replay<R, F>(
    db: &DatabaseConnection,
    key: Option<&IdempotencyKey>,
    stored_form: impl Fn(&R) -> R,
    work: F,
) -> ServiceResult<R>
where
    R: prost::Message + Default + Send,
    F: for<'t> Fn(&'t DatabaseTransaction) -> TxnWork<'t, R>,
{
    let result = run(db, key, |r: &R| Some(stored_form(r).encode_to_vec()), work).await;
    match (result, key) {
        (Ok(response), _) => Ok(response),
        // A racing twin may have committed first: its effect can collide with ours
        // (unique names) or its key with our key. Replay it if so.
        (Err(err), Some(key)) => match key.stored::<R>(db).await? {
            Some(replayed) => Ok(replayed),
            None => Err(err),
        },
        (Err(err), None) => Err(err),
    }
}

/// Applies guarded writes (see [`GuardedWrite`]) with a transaction's retries:
/// true if they took effect, false if the guard matched nothing. A unique violation
/// (a row that exists already) is ALREADY_EXISTS; contention that outlasts the
/// retries is ABORTED.
pub async fn apply(db: &DatabaseConnection, writes: &GuardedWrite) -> ServiceResult<bool> {
    with_retries(|| async { writes.run(db).await.map_err(Attempt::from) }).await
}

/// Applies `writes` once per `key`, storing `response` with them (`stored_form` is
/// what is kept for replays). `Some(response)` if they took effect; the stored
/// response if a twin with the same key took effect first; `None` if the guard
/// matched nothing (the state the writes expect is gone). INVALID_ARGUMENT if the key
/// was used for another request, ALREADY_EXISTS if the writes collide with a row
/// that is not a twin's.
pub async fn write_guarded<R>(
    db: &DatabaseConnection,
    key: Option<&IdempotencyKey>,
    response: R,
    stored_form: impl Fn(&R) -> R,
    mut writes: GuardedWrite,
) -> ServiceResult<Option<R>>
where
    R: prost::Message + Default,
{
    if let Some(key) = key {
        writes = writes.insert([key.row(stored_form(&response).encode_to_vec())])?;
    }
    match (apply(db, &writes).await, key) {
        (Ok(true), _) => Ok(Some(response)),
        (Ok(false), None) => Ok(None),
        // A twin that committed first changed the state the guard expects, or
        // stored the key first: replay it.
        (Ok(false), Some(key)) => key.stored::<R>(db).await,
        (Err(ServiceError::AlreadyExists(collision)), Some(key)) => match key.stored::<R>(db).await? {
            Some(replayed) => Ok(Some(replayed)),
            None => Err(ServiceError::AlreadyExists(collision)),
        },
        (Err(err), _) => Err(err),
    }
}

/// Runs `once` until it succeeds, fails for good, or the database has asked for a
/// retry [`ATTEMPTS`] times (then ABORTED: contention, not a fault, so the caller
/// may retry later).
async fn with_retries<T, F, Fut>(mut once: F) -> ServiceResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match once().await {
            Ok(done) => return Ok(done),
            Err(Attempt::Failed(err)) => return Err(err),
            Err(Attempt::Retry(err)) if attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %err, "retrying transaction");
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
            }
            Err(Attempt::Retry(err)) => {
                tracing::warn!(error = %err, "transaction still contended after retries");
                return Err(ServiceError::Aborted("too much contention, retry".into()));
            }
        }
    }
}

async fn run<R, F>(
    db: &DatabaseConnection,
    key: Option<&IdempotencyKey>,
    encode: impl Fn(&R) -> Option<Vec<u8>>,
    work: F,
) -> ServiceResult<R>
where
    R: Send,
    F: for<'t> Fn(&'t DatabaseTransaction) -> TxnWork<'t, R>,
{
    let (encode, work) = (&encode, &work);
    with_retries(move || attempt_once(db, key, encode, work)).await
}

enum Attempt {
    Retry(sea_orm::DbErr),
    Failed(ServiceError),
}

impl From<sea_orm::DbErr> for Attempt {
    fn from(err: sea_orm::DbErr) -> Self {
        if is_retryable(&err) {
            Attempt::Retry(err)
        } else if is_unique_violation(&err) {
            Attempt::Failed(ServiceError::AlreadyExists("already exists".into()))
        } else {
            Attempt::Failed(err.into())
        }
    }
}

async fn attempt_once<R, F>(
    db: &DatabaseConnection,
    key: Option<&IdempotencyKey>,
    encode: &impl Fn(&R) -> Option<Vec<u8>>,
    work: &F,
) -> Result<R, Attempt>
where
    F: for<'t> Fn(&'t DatabaseTransaction) -> TxnWork<'t, R>,
{
    let txn = crate::db::begin_write(db).await?;
    let response = match work(&txn).await {
        Ok(response) => response,
        Err(ServiceError::Internal(err)) => {
            // Rolls back on drop; a busy or serialization error inside the work is
            // retried like one at commit.
            drop(txn);
            return match err.downcast::<sea_orm::DbErr>() {
                Ok(db_err) => Err(db_err.into()),
                Err(other) => Err(Attempt::Failed(ServiceError::Internal(other))),
            };
        }
        Err(err) => return Err(Attempt::Failed(err)),
    };
    if let (Some(key), Some(bytes)) = (key, encode(&response)) {
        key.row(bytes).insert(&txn).await?;
    }
    txn.commit().await?;
    Ok(response)
}

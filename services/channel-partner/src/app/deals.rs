//! Rights protection (deal registration): a partner locks a customer, an
//! opportunity or an order. The first registration of a customer wins: every
//! active lock holds its normalised keys ([`crate::domain::sales::customer_keys`])
//! as primary keys of `deal_lock_keys`, so of racing registrations exactly one
//! inserts them and the others fail on the constraint. Locks run out by the
//! service's clock (the sweep, or the next registration that meets the key),
//! are extended once by the brand, and are released by the holder or the brand.

use chrono::{DateTime, Duration, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{App, Caller};
use crate::domain::ids::PartnerId;
use crate::domain::partner::PartnerState;
use crate::domain::sales::{LockState, SubjectKind, customer_keys, subject_key};
use crate::events;
use crate::store::{self, deal_lock, deal_lock_key};

/// A customer as a lock, lead or opportunity names it (already checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerInput {
    pub name: String,
    pub region: String,
    pub tax_id: String,
}

impl CustomerInput {
    pub fn keys(&self) -> Vec<String> {
        customer_keys(&self.name, &self.region, &self.tax_id)
    }
}

/// A lock to register.
#[derive(Debug, Clone)]
pub struct NewLock {
    pub kind: SubjectKind,
    pub subject_ref: String,
    pub customer: CustomerInput,
}

pub fn lock_name(partner: &str, id: &str) -> String {
    format!("partners/{partner}/dealLocks/{id}")
}

fn lock_not_found(partner: &PartnerId, id: &str) -> ServiceError {
    ServiceError::not_found("deal lock", lock_name(partner.as_str(), id))
}

/// The collision every losing registration gets; it never names the holder.
fn already_locked() -> ServiceError {
    ServiceError::AlreadyExists(
        "the customer (or the opportunity or order) is already registered by a deal lock".into(),
    )
}

/// Ends an active lock (`to` released or expired) by a conditional update, frees
/// its keys and publishes the change. False when it was no longer active.
async fn end_lock(
    txn: &DatabaseTransaction,
    lock: &deal_lock::Model,
    to: LockState,
    reason: &str,
    at: DateTime<Utc>,
) -> ServiceResult<bool> {
    let r = deal_lock::Entity::update_many()
        .col_expr(deal_lock::Column::State, Expr::value(to.as_str()))
        .col_expr(deal_lock::Column::EndedAt, Expr::value(at))
        .col_expr(deal_lock::Column::EndReason, Expr::value(reason))
        .filter(deal_lock::Column::Id.eq(lock.id.as_str()))
        .filter(deal_lock::Column::State.eq(LockState::Active.as_str()))
        .exec(txn)
        .await?;
    if r.rows_affected != 1 {
        return Ok(false);
    }
    deal_lock_key::Entity::delete_many()
        .filter(deal_lock_key::Column::LockId.eq(lock.id.as_str()))
        .exec(txn)
        .await?;
    events::deal_lock_changed(lock, to.as_str(), reason, at)
        .publish(txn, &lock.id)
        .await?;
    Ok(true)
}

const EXPIRED: &str = "the registration period ended";

impl App {
    /// Registers `new` for `partner` (active, and the caller's own unless the
    /// brand): ALREADY_EXISTS when an active lock holds one of its keys.
    pub async fn register_lock<R>(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        new: NewLock,
        key: Option<&IdempotencyKey>,
        respond: fn(&deal_lock::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let p = self.partner(caller, partner).await?;
        if p.state != PartnerState::Active.as_str() {
            return Err(ServiceError::FailedPrecondition(format!(
                "partner {} is {}, not active",
                partner.resource_name(),
                p.state
            )));
        }
        let now = self.now();
        let mut keys = new.customer.keys();
        keys.extend(subject_key(new.kind, &new.subject_ref));
        let model = deal_lock::Model {
            id: store::new_id(),
            partner_id: partner.as_str().to_owned(),
            subject_kind: new.kind.as_str().to_owned(),
            subject_ref: new.subject_ref,
            customer_name: new.customer.name,
            customer_region: new.customer.region,
            customer_tax_id: new.customer.tax_id,
            state: LockState::Active.as_str().to_owned(),
            registered_by: caller.subject.clone(),
            created_at: now,
            expires_at: now + Duration::days(i64::from(self.settings.sales.lock_days)),
            extended: false,
            extension_reason: String::new(),
            ended_at: None,
            end_reason: String::new(),
        };
        let result = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, keys) = (model.clone(), keys.clone());
            Box::pin(async move {
                // A lock that ran out but was not swept yet frees its keys now.
                let held = deal_lock_key::Entity::find()
                    .filter(deal_lock_key::Column::Key.is_in(keys.clone()))
                    .all(txn)
                    .await?;
                for k in held {
                    if let Some(old) = deal_lock::Entity::find_by_id(k.lock_id).one(txn).await?
                        && old.expires_at <= now
                    {
                        end_lock(txn, &old, LockState::Expired, EXPIRED, now).await?;
                    }
                }
                deal_lock::Entity::insert(deal_lock::ActiveModel::from(model.clone()))
                    .exec_without_returning(txn)
                    .await?;
                deal_lock_key::Entity::insert_many(keys.iter().map(|k| {
                    deal_lock_key::ActiveModel::from(deal_lock_key::Model {
                        key: k.clone(),
                        lock_id: model.id.clone(),
                    })
                }))
                .exec_without_returning(txn)
                .await?;
                events::deal_lock_changed(&model, "registered", "", now)
                    .publish(txn, &model.id)
                    .await?;
                Ok(respond(&model))
            })
        })
        .await;
        match result {
            Ok(r) => {
                self.log.committed();
                Ok(r)
            }
            Err(ServiceError::AlreadyExists(_)) => Err(already_locked()),
            Err(e) => Err(e),
        }
    }

    /// A lock the caller may see (the holder's principals and the brand).
    pub async fn deal_lock(&self, caller: &Caller, partner: &PartnerId, id: &str) -> ServiceResult<deal_lock::Model> {
        match deal_lock::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(l) if l.partner_id == partner.as_str() && caller.sees(&l.partner_id) => Ok(l),
            _ => Err(lock_not_found(partner, id)),
        }
    }

    /// Locks newest first: of `partner`, or (None) of every partner the caller
    /// sees (a partner principal: its own).
    pub async fn list_deal_locks(
        &self,
        caller: &Caller,
        partner: Option<&PartnerId>,
        state: Option<LockState>,
        page: &Page,
    ) -> ServiceResult<(Vec<deal_lock::Model>, String)> {
        let only = match (partner, &caller.partner) {
            (Some(p), _) => {
                self.partner(caller, p).await?;
                Some(p.as_str().to_owned())
            }
            (None, own) => own.clone(),
        };
        let mut q = deal_lock::Entity::find().order_by_desc(deal_lock::Column::Id);
        if let Some(p) = only {
            q = q.filter(deal_lock::Column::PartnerId.eq(p));
        }
        if let Some(s) = state {
            q = q.filter(deal_lock::Column::State.eq(s.as_str()));
        }
        if let Some(after) = &page.after {
            q = q.filter(deal_lock::Column::Id.lt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        Ok(page.finish(rows, |r| r.id.clone()))
    }

    /// Extends an active, unexpired lock once. Brand only.
    pub async fn extend_lock(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
        reason: &str,
    ) -> ServiceResult<deal_lock::Model> {
        let current = self.deal_lock(caller, partner, id).await?;
        caller.require_brand("extends deal locks")?;
        let now = self.now();
        let until = current.expires_at + Duration::days(i64::from(self.settings.sales.lock_extension_days));
        let reason = reason.to_owned();
        idempotency::transaction(&self.db, |txn| {
            let (current, reason) = (current.clone(), reason.clone());
            Box::pin(async move {
                let r = deal_lock::Entity::update_many()
                    .col_expr(deal_lock::Column::ExpiresAt, Expr::value(until))
                    .col_expr(deal_lock::Column::Extended, Expr::value(true))
                    .col_expr(deal_lock::Column::ExtensionReason, Expr::value(reason.as_str()))
                    .filter(deal_lock::Column::Id.eq(current.id.as_str()))
                    .filter(deal_lock::Column::State.eq(LockState::Active.as_str()))
                    .filter(deal_lock::Column::Extended.eq(false))
                    .filter(deal_lock::Column::ExpiresAt.gt(now))
                    .exec(txn)
                    .await?;
                if r.rows_affected != 1 {
                    return Err(ServiceError::FailedPrecondition(
                        "only an active lock that was never extended can be extended".into(),
                    ));
                }
                let extended = deal_lock::Model {
                    expires_at: until,
                    ..current
                };
                events::deal_lock_changed(&extended, "extended", &reason, now)
                    .publish(txn, &extended.id)
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        self.deal_lock(caller, partner, id).await
    }

    /// Releases an active lock (the holder or the brand); FAILED_PRECONDITION when
    /// it has ended (a lock that ran out expires instead).
    pub async fn release_lock(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
        reason: &str,
    ) -> ServiceResult<deal_lock::Model> {
        let current = self.deal_lock(caller, partner, id).await?;
        let now = self.now();
        let reason = reason.to_owned();
        let released = idempotency::transaction(&self.db, |txn| {
            let (current, reason) = (current.clone(), reason.clone());
            Box::pin(async move {
                if current.expires_at <= now {
                    end_lock(txn, &current, LockState::Expired, EXPIRED, now).await?;
                    return Ok(false);
                }
                end_lock(txn, &current, LockState::Released, &reason, now).await
            })
        })
        .await?;
        self.log.committed();
        if !released {
            return Err(ServiceError::FailedPrecondition(format!(
                "deal lock {} is no longer active",
                lock_name(partner.as_str(), id)
            )));
        }
        self.deal_lock(caller, partner, id).await
    }

    /// Expires the active locks whose time ran out at `now`, each in its own
    /// transaction with its event; how many.
    pub async fn expire_locks(&self, now: DateTime<Utc>) -> ServiceResult<usize> {
        let due = deal_lock::Entity::find()
            .filter(deal_lock::Column::State.eq(LockState::Active.as_str()))
            .filter(deal_lock::Column::ExpiresAt.lte(now))
            .order_by_asc(deal_lock::Column::ExpiresAt)
            .limit(1000)
            .all(&self.db)
            .await?;
        let mut expired = 0;
        for lock in due {
            let ended = idempotency::transaction(&self.db, |txn| {
                let lock = lock.clone();
                Box::pin(async move { end_lock(txn, &lock, LockState::Expired, EXPIRED, now).await })
            })
            .await?;
            expired += usize::from(ended);
        }
        if expired > 0 {
            self.log.committed();
        }
        Ok(expired)
    }

    /// Whether an active, unexpired lock of a partner other than `partner` holds
    /// one of the customer's keys. A partner principal asks only for itself.
    pub async fn locked_to_other(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        customer: &CustomerInput,
    ) -> ServiceResult<bool> {
        if !caller.sees(partner.as_str()) {
            return Err(super::partner_not_found(partner));
        }
        locked_to_other(&self.db, partner.as_str(), &customer.keys(), self.now()).await
    }
}

async fn locked_to_other(
    conn: &impl ConnectionTrait,
    partner: &str,
    keys: &[String],
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let lock_ids: Vec<String> = deal_lock_key::Entity::find()
        .filter(deal_lock_key::Column::Key.is_in(keys.to_vec()))
        .all(conn)
        .await?
        .into_iter()
        .map(|k| k.lock_id)
        .collect();
    if lock_ids.is_empty() {
        return Ok(false);
    }
    let other = deal_lock::Entity::find()
        .filter(deal_lock::Column::Id.is_in(lock_ids))
        .filter(deal_lock::Column::State.eq(LockState::Active.as_str()))
        .filter(deal_lock::Column::ExpiresAt.gt(now))
        .filter(deal_lock::Column::PartnerId.ne(partner))
        .one(conn)
        .await?;
    Ok(other.is_some())
}

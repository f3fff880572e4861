//! The redemption catalog and redemptions: a request takes the points (from the
//! ledger's lots, never more than its balance) and the stock at once; the brand
//! approves or rejects it (a rejection gives both back) and marks an approved one
//! fulfilled. Each move is a conditional update on the state read, so two racing
//! decisions cannot both pass.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{App, Caller};
use crate::domain::ids::{RedemptionName, Subject};
use crate::domain::partner::PartnerState;
use crate::domain::points::{Category, LedgerKind, MAX_POINTS, RedemptionState};
use crate::events;
use crate::store::{self, catalog_item, ledgers, redemption};

/// A catalog item to add.
#[derive(Debug, Clone)]
pub struct NewCatalogItem {
    pub category: Category,
    pub display_name: String,
    pub points_price: i64,
    /// `None` = unlimited.
    pub stock: Option<i64>,
}

fn ledger_kind(subject: &Subject) -> LedgerKind {
    match subject {
        Subject::Partner(_) => LedgerKind::Collective,
        Subject::Rep(_) => LedgerKind::Individual,
    }
}

/// Takes `n` units of stock (gives them back for `n` negative); false if short.
async fn move_stock(conn: &impl ConnectionTrait, item: &str, n: i64) -> ServiceResult<bool> {
    let r = catalog_item::Entity::update_many()
        .col_expr(
            catalog_item::Column::Stock,
            Expr::col(catalog_item::Column::Stock).sub(n),
        )
        .filter(catalog_item::Column::Id.eq(item))
        .filter(catalog_item::Column::Stock.is_not_null())
        .filter(Expr::col(catalog_item::Column::Stock).sub(n).gte(0))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

impl App {
    pub async fn create_catalog_item(
        &self,
        caller: &Caller,
        new: NewCatalogItem,
        at: DateTime<Utc>,
    ) -> ServiceResult<catalog_item::Model> {
        caller.require_brand("keeps the catalog")?;
        let model = catalog_item::Model {
            id: store::new_id(),
            category: new.category.as_str().to_owned(),
            ledger_kind: new.category.ledger_kind().as_str().to_owned(),
            display_name: new.display_name,
            points_price: new.points_price,
            stock: new.stock,
            created_at: at,
        };
        Ok(catalog_item::ActiveModel::from(model).insert(&self.db).await?)
    }

    pub async fn list_catalog_items(
        &self,
        kind: Option<LedgerKind>,
        page: &Page,
    ) -> ServiceResult<(Vec<catalog_item::Model>, String)> {
        let mut q = catalog_item::Entity::find().order_by_asc(catalog_item::Column::Id);
        if let Some(kind) = kind {
            q = q.filter(catalog_item::Column::LedgerKind.eq(kind.as_str()));
        }
        if let Some(after) = &page.after {
            q = q.filter(catalog_item::Column::Id.gt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        Ok(page.finish(rows, |i| i.id.clone()))
    }

    /// Requests a redemption of `quantity` units of `item` from the subject's
    /// ledger. NOT_FOUND for a ledger or item the caller may not see;
    /// FAILED_PRECONDITION for an item of the other kind of ledger, a partner not
    /// active, too few points or too little stock. Idempotent by `key`.
    #[allow(clippy::too_many_arguments)]
    pub async fn request_redemption<R>(
        &self,
        caller: &Caller,
        subject: &Subject,
        item_id: &str,
        quantity: i64,
        key: Option<&IdempotencyKey>,
        at: DateTime<Utc>,
        respond: fn(&Subject, &redemption::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let partner = self.subject_partner(&self.db, caller, subject).await?;
        let item = catalog_item::Entity::find_by_id(item_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| ServiceError::not_found("catalog item", format!("catalogItems/{item_id}")))?;
        if item.ledger_kind != ledger_kind(subject).as_str() {
            return Err(ServiceError::FailedPrecondition(format!(
                "{} items are redeemed from {} ledgers",
                item.category, item.ledger_kind
            )));
        }
        if !partner.is_empty() {
            let standing = store::partner(&self.db, &partner).await?.map(|p| p.state);
            if standing.as_deref() != Some(PartnerState::Active.as_str()) {
                return Err(ServiceError::FailedPrecondition(
                    "only an active partner's ledgers redeem points".into(),
                ));
            }
        }
        let points = (item.points_price as i128 * quantity as i128).min(MAX_POINTS as i128 + 1) as i64;
        let model = redemption::Model {
            id: store::new_id(),
            ledger_id: subject.ledger_id(),
            partner_id: partner,
            item_id: item.id.clone(),
            quantity,
            points,
            state: RedemptionState::Requested.as_str().to_owned(),
            reason: String::new(),
            decided_by: String::new(),
            created_at: at,
            decided_at: None,
        };
        let subject = subject.clone();
        let limited = item.stock.is_some();
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, subject) = (model.clone(), subject.clone());
            Box::pin(async move {
                if limited && !move_stock(txn, &model.item_id, model.quantity).await? {
                    return Err(ServiceError::FailedPrecondition("not enough stock of the item".into()));
                }
                redemption::ActiveModel::from(model.clone()).insert(txn).await?;
                let change = ledgers::redeem(txn, &model.ledger_id, model.points, &model.id, at).await?;
                events::points_changed(&subject.ledger_name(), &change)
                    .publish(txn, &model.ledger_id)
                    .await?;
                Ok(respond(&subject, &model))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// A redemption the caller may see; NOT_FOUND otherwise.
    pub async fn redemption(&self, caller: &Caller, name: &RedemptionName) -> ServiceResult<redemption::Model> {
        let not_found = || ServiceError::not_found("redemption", name.resource_name());
        match redemption::Entity::find_by_id(name.id.clone()).one(&self.db).await? {
            Some(r) if r.ledger_id == name.ledger.ledger_id() && caller.sees(&r.partner_id) => Ok(r),
            _ => Err(not_found()),
        }
    }

    pub async fn list_redemptions(
        &self,
        caller: &Caller,
        subject: &Subject,
        page: &Page,
    ) -> ServiceResult<(Vec<redemption::Model>, String)> {
        self.ledger(caller, subject).await?;
        let mut q = redemption::Entity::find()
            .filter(redemption::Column::LedgerId.eq(subject.ledger_id()))
            .order_by_desc(redemption::Column::Id);
        if let Some(after) = &page.after {
            q = q.filter(redemption::Column::Id.lt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        Ok(page.finish(rows, |r| r.id.clone()))
    }

    /// Moves a redemption to `to` (approved, rejected, fulfilled) if its state
    /// allows; a rejection gives the points and the stock back. Brand only.
    pub async fn decide_redemption(
        &self,
        caller: &Caller,
        name: &RedemptionName,
        to: RedemptionState,
        reason: &str,
        at: DateTime<Utc>,
    ) -> ServiceResult<redemption::Model> {
        let current = self.redemption(caller, name).await?;
        caller.require_brand("decides redemptions")?;
        let (id, actor, reason) = (current.id.clone(), caller.subject.clone(), reason.to_owned());
        let ledger_name = name.ledger.ledger_name();
        let redemption_name = name.resource_name();
        idempotency::transaction(&self.db, |txn| {
            let (id, actor, reason) = (id.clone(), actor.clone(), reason.clone());
            let (ledger_name, redemption_name) = (ledger_name.clone(), redemption_name.clone());
            Box::pin(async move { decide(txn, &id, to, &reason, &actor, at, &ledger_name, &redemption_name).await })
        })
        .await?;
        self.log.committed();
        self.redemption(caller, name).await
    }
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    txn: &DatabaseTransaction,
    id: &str,
    to: RedemptionState,
    reason: &str,
    actor: &str,
    at: DateTime<Utc>,
    ledger_name: &str,
    redemption_name: &str,
) -> ServiceResult<()> {
    let Some(row) = redemption::Entity::find_by_id(id.to_owned()).one(txn).await? else {
        return Err(ServiceError::not_found("redemption", redemption_name.to_owned()));
    };
    let from = RedemptionState::parse(&row.state).ok_or_else(|| store::corrupt("redemption state", &row.state))?;
    if !to.reached_from().contains(&from) {
        return Err(ServiceError::FailedPrecondition(format!(
            "a {} redemption cannot become {}",
            from.as_str(),
            to.as_str()
        )));
    }
    let r = redemption::Entity::update_many()
        .col_expr(redemption::Column::State, Expr::value(to.as_str()))
        .col_expr(redemption::Column::Reason, Expr::value(reason))
        .col_expr(redemption::Column::DecidedBy, Expr::value(actor))
        .col_expr(redemption::Column::DecidedAt, Expr::value(Some(at)))
        .filter(redemption::Column::Id.eq(id))
        .filter(redemption::Column::State.eq(from.as_str()))
        .exec(txn)
        .await?;
    if r.rows_affected != 1 {
        return Err(ServiceError::Aborted(
            "the redemption changed concurrently; try again".into(),
        ));
    }
    if to == RedemptionState::Rejected {
        let item = catalog_item::Entity::find_by_id(row.item_id.clone()).one(txn).await?;
        if item.is_some_and(|i| i.stock.is_some()) {
            move_stock(txn, &row.item_id, -row.quantity).await?;
        }
        if let Some(change) = ledgers::give_back(txn, &row.ledger_id, &row.id, at).await? {
            events::points_changed(ledger_name, &change)
                .publish(txn, &row.ledger_id)
                .await?;
        }
    }
    events::redemption_decided(redemption_name, &row.partner_id, to, reason)
        .publish(txn, &row.id)
        .await?;
    Ok(())
}

//! Warehouses and stock: receiving, adjusting and moving units between buckets, each
//! change audited and published with the stock row as it left it.

use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;

use super::{App, kind_of};
use crate::domain::codes::{SkuCode, WarehouseCode};
use crate::domain::stock::MovementKind;
use crate::events;
use crate::store::inventory::{self as db, Delta, Movement};
use crate::store::{stock, stock_movement, warehouse};

/// A change of one SKU's stock in one warehouse.
#[derive(Debug, Clone)]
pub(crate) struct StockChange {
    pub(crate) sku: SkuCode,
    pub(crate) warehouse: WarehouseCode,
    pub(crate) kind: MovementKind,
    pub(crate) delta: Delta,
    /// The audit row's reason (a purchase order, a count).
    pub(crate) reason: String,
}

impl App {
    pub(crate) async fn create_warehouse(
        &self,
        code: &WarehouseCode,
        display_name: String,
        priority: i32,
    ) -> ServiceResult<warehouse::Model> {
        let model = warehouse::Model {
            code: code.as_str().to_owned(),
            display_name,
            priority,
            created_at: now(),
        };
        db::insert_warehouse(&self.db, model.clone()).await?;
        Ok(model)
    }

    /// Every warehouse by priority, then code.
    pub(crate) async fn warehouses(&self) -> ServiceResult<Vec<warehouse::Model>> {
        db::warehouses(&self.db).await
    }

    /// Applies a stock change with its audit row (by `actor`) and event in one
    /// transaction; FAILED_PRECONDITION if a bucket would go below zero. Idempotent by
    /// `key`: a replay answers what the first request answered, as `render` made it.
    pub(crate) async fn change_stock<R>(
        &self,
        key: Option<&IdempotencyKey>,
        change: StockChange,
        actor: &str,
        render: fn(&stock::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let StockChange {
            sku,
            warehouse: wh,
            kind,
            delta,
            reason,
        } = change;
        self.sku_must_exist(&sku).await?;
        self.warehouse_must_exist(&wh).await?;
        let level = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (sku, wh, reason, actor) = (sku.clone(), wh.clone(), reason.clone(), actor.to_owned());
            Box::pin(async move {
                let now = now();
                db::ensure_stock_row(txn, sku.as_str(), wh.as_str(), now).await?;
                if !db::change_stock(txn, sku.as_str(), wh.as_str(), delta, now).await? {
                    let have = db::find_stock(txn, sku.as_str(), wh.as_str()).await?;
                    let (sellable, unsellable) = have.map(|h| (h.sellable, h.unsellable)).unwrap_or_default();
                    return Err(ServiceError::FailedPrecondition(format!(
                        "stock of {} in {} cannot go below zero (sellable {sellable}, unsellable {unsellable})",
                        sku.resource_name(),
                        wh.resource_name()
                    )));
                }
                db::record_movement(
                    txn,
                    Movement {
                        sku_code: sku.as_str(),
                        warehouse_code: wh.as_str(),
                        kind,
                        delta,
                        reason: &reason,
                        actor: &actor,
                    },
                    now,
                )
                .await?;
                let row = db::find_stock(txn, sku.as_str(), wh.as_str())
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("stock row vanished")))?;
                events::stock_changed(kind, &row).publish(txn, &row.sku_code).await?;
                Ok(render(&row))
            })
        })
        .await?;
        self.log.committed();
        Ok(level)
    }

    /// The stock rows of a SKU, by warehouse code.
    pub(crate) async fn stock(&self, sku: &SkuCode) -> ServiceResult<Vec<stock::Model>> {
        self.sku_must_exist(sku).await?;
        db::stock_of(&self.db, sku.as_str()).await
    }

    /// The stock changes of a SKU, newest first; returns the page and the next page's
    /// token.
    pub(crate) async fn movements(
        &self,
        sku: &SkuCode,
        page: &Page,
    ) -> ServiceResult<(Vec<stock_movement::Model>, String)> {
        self.sku_must_exist(sku).await?;
        let rows = db::movements(&self.db, sku.as_str(), page).await?;
        for m in &rows {
            kind_of(m)?;
        }
        Ok(page.finish(rows, |m| m.id.clone()))
    }
}

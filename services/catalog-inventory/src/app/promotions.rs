//! Promotions: a discount off the list price of some SKUs (or every SKU) for a time.

use chrono::{DateTime, Utc};
use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;

use super::App;
use crate::domain::codes::{PromotionId, SkuCode};
use crate::events;
use crate::store::{self, pricing as db, promotion};

/// A promotion to create.
#[derive(Debug, Clone)]
pub(crate) struct NewPromotion {
    pub(crate) display_name: String,
    pub(crate) discount_bp: u32,
    /// Each once; none: every SKU.
    pub(crate) skus: Vec<SkuCode>,
    pub(crate) starts_at: DateTime<Utc>,
    pub(crate) ends_at: DateTime<Utc>,
}

/// A promotion with the codes of its SKUs (none: every SKU).
#[derive(Debug, Clone)]
pub(crate) struct PromotionView {
    pub(crate) promotion: promotion::Model,
    pub(crate) skus: Vec<String>,
}

fn not_found(id: &PromotionId) -> ServiceError {
    ServiceError::not_found("promotion", id.resource_name())
}

impl App {
    /// Creates a promotion; NOT_FOUND for a SKU that does not exist. Idempotent by
    /// `key`: a replay answers what the first request answered, as `render` made it.
    pub(crate) async fn create_promotion<R>(
        &self,
        key: Option<&IdempotencyKey>,
        input: NewPromotion,
        render: fn(&PromotionView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let codes: Vec<String> = input.skus.iter().map(|c| c.as_str().to_owned()).collect();
        let known = store::sku_views(&self.db, &codes).await?;
        if let Some(missing) = codes.iter().find(|c| !known.iter().any(|v| v.sku.code == **c)) {
            return Err(ServiceError::not_found("sku", format!("skus/{missing}")));
        }
        let model = promotion::Model {
            id: PromotionId::new().as_str().to_owned(),
            display_name: input.display_name,
            all_skus: codes.is_empty(),
            discount_bp: input.discount_bp as i32,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            created_at: now(),
        };
        let discount_bp = input.discount_bp;
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, codes) = (model.clone(), codes.clone());
            Box::pin(async move {
                db::insert_promotion(txn, model.clone(), &codes).await?;
                events::promotion_changed(&model.id, discount_bp)
                    .publish(txn, &model.id)
                    .await?;
                Ok(render(&PromotionView {
                    promotion: model,
                    skus: codes,
                }))
            })
        })
        .await?;
        self.price_committed();
        Ok(response)
    }

    /// Promotions newest first, optionally only those active at a time; returns the
    /// page and the next page's token.
    pub(crate) async fn promotions(
        &self,
        active_at: Option<DateTime<Utc>>,
        page: &Page,
    ) -> ServiceResult<(Vec<PromotionView>, String)> {
        let rows = db::list_promotions(&self.db, page, active_at).await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        let mut views = Vec::with_capacity(rows.len());
        for promotion in rows {
            let skus = db::promotion_skus(&self.db, &promotion.id).await?;
            views.push(PromotionView { promotion, skus });
        }
        Ok((views, next_page_token))
    }

    /// Ends a promotion now, if it would run longer.
    pub(crate) async fn end_promotion(&self, id: &PromotionId) -> ServiceResult<PromotionView> {
        if db::find_promotion(&self.db, id.as_str()).await?.is_none() {
            return Err(not_found(id));
        }
        idempotency::transaction(&self.db, |txn| {
            let id = id.clone();
            Box::pin(async move {
                db::end_promotion(txn, id.as_str(), now()).await?;
                events::promotion_changed(id.as_str(), 0)
                    .publish(txn, id.as_str())
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.price_committed();
        let promotion = db::find_promotion(&self.db, id.as_str())
            .await?
            .ok_or_else(|| not_found(id))?;
        let skus = db::promotion_skus(&self.db, id.as_str()).await?;
        Ok(PromotionView { promotion, skus })
    }
}

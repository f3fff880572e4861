//! List prices, tier discounts, partner price lists and competitor observations.
//! Every price change drops this replica's price cache right after its commit (see
//! [`super::price_cache`]).

use chrono::{DateTime, Utc};
use retail_kit::convert::now;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency;
use retail_kit::paging::Page;

use super::{App, QuoteFor};
use crate::domain::codes::{Channel, SkuCode};
use crate::domain::pricing as rules;
use crate::events;
use crate::store::{competitor_price, list_price, partner_price, pricing as db, tier_discount};

/// A competitor's price of a SKU, observed at a time.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub(crate) sku: SkuCode,
    pub(crate) source: String,
    pub(crate) currency: String,
    pub(crate) amount_minor: i64,
    pub(crate) at: DateTime<Utc>,
}

impl App {
    /// A price changed and committed: quotes on this replica show it at once.
    pub(super) fn price_committed(&self) {
        self.prices.changed();
        self.log.committed();
    }

    /// Sets the list price of a SKU in a currency.
    pub(crate) async fn set_list_price(
        &self,
        code: &SkuCode,
        currency: &str,
        amount_minor: i64,
    ) -> ServiceResult<list_price::Model> {
        self.sku_must_exist(code).await?;
        let row = list_price::Model {
            sku_code: code.as_str().to_owned(),
            currency: currency.to_owned(),
            amount_minor,
            updated_at: now(),
        };
        idempotency::transaction(&self.db, |txn| {
            let (row, code) = (row.clone(), code.clone());
            Box::pin(async move {
                let event = events::list_price_changed(&code, &row.currency, row.amount_minor);
                db::upsert_list_price(txn, row).await?;
                event.publish(txn, code.as_str()).await?;
                Ok(())
            })
        })
        .await?;
        self.price_committed();
        Ok(row)
    }

    /// Sets a tier's discount; 0 removes it.
    pub(crate) async fn set_tier_discount(&self, tier: &str, discount_bp: u32) -> ServiceResult<()> {
        idempotency::transaction(&self.db, |txn| {
            let tier = tier.to_owned();
            Box::pin(async move {
                if discount_bp == 0 {
                    db::delete_tier_discount(txn, &tier).await?;
                } else {
                    db::upsert_tier_discount(
                        txn,
                        tier_discount::Model {
                            tier: tier.clone(),
                            discount_bp: discount_bp as i32,
                            updated_at: now(),
                        },
                    )
                    .await?;
                }
                events::tier_discount_changed(&tier, discount_bp)
                    .publish(txn, &tier)
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.price_committed();
        Ok(())
    }

    pub(crate) async fn tier_discounts(&self) -> ServiceResult<Vec<tier_discount::Model>> {
        db::tier_discounts(&self.db).await
    }

    /// Sets the wholesale price of a SKU on a partner level's price list.
    pub(crate) async fn set_partner_price(
        &self,
        level: &str,
        code: &SkuCode,
        currency: &str,
        amount_minor: i64,
    ) -> ServiceResult<partner_price::Model> {
        self.sku_must_exist(code).await?;
        let row = partner_price::Model {
            level: level.to_owned(),
            sku_code: code.as_str().to_owned(),
            currency: currency.to_owned(),
            amount_minor,
            updated_at: now(),
        };
        idempotency::transaction(&self.db, |txn| {
            let (row, code) = (row.clone(), code.clone());
            Box::pin(async move {
                let event = events::partner_price_changed(&row.level, &code, &row.currency, row.amount_minor);
                db::upsert_partner_price(txn, row).await?;
                event.publish(txn, code.as_str()).await?;
                Ok(())
            })
        })
        .await?;
        self.price_committed();
        Ok(row)
    }

    /// Records a competitor's price against ours (a guest's consumer price at that
    /// time); an undercut beyond `pricing.competitor_alert_bp` raises an alert.
    pub(crate) async fn record_competitor_price(&self, o: Observation) -> ServiceResult<competitor_price::Model> {
        let who = QuoteFor {
            channel: Channel::Online,
            currency: o.currency.clone(),
            tier: None,
            partner_level: None,
            at: o.at,
            coupon: None,
        };
        let ours = self.quote(&who, &[(o.sku.clone(), 1)]).await?;
        let our_minor = ours.lines.first().map(|l| l.unit.unit_minor).unwrap_or(0);
        let undercut = rules::undercut_bp(our_minor, o.amount_minor);
        let row = competitor_price::Model {
            sku_code: o.sku.as_str().to_owned(),
            source: o.source,
            currency: o.currency,
            amount_minor: o.amount_minor,
            our_amount_minor: our_minor,
            undercut_bp: undercut,
            alert: rules::is_alert(undercut, self.settings.pricing.competitor_alert_bp),
            observed_at: o.at,
        };
        idempotency::transaction(&self.db, |txn| {
            let row = row.clone();
            Box::pin(async move {
                db::record_competitor_price(txn, row.clone()).await?;
                if row.alert {
                    events::competitor_undercut(&row).publish(txn, &row.sku_code).await?;
                }
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        Ok(row)
    }

    /// The latest observations that raise an alert; returns the page and the next
    /// page's token.
    pub(crate) async fn competitor_alerts(&self, page: &Page) -> ServiceResult<(Vec<competitor_price::Model>, String)> {
        let rows = db::competitor_alerts(&self.db, page).await?;
        Ok(page.finish(rows, |c| format!("{}\u{1f}{}", c.sku_code, c.source)))
    }
}

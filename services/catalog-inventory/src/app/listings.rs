//! Listings of SKUs per sales channel, their history, and the reconciliation of a
//! channel's listings with its stock.

use std::sync::Arc;
use std::time::Duration;

use retail_kit::convert::now;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency;
use retail_kit::paging::Page;

use super::App;
use crate::domain::codes::{Channel, SkuCode};
use crate::domain::reconcile::{self, Report};
use crate::events;
use crate::store::{self, listing, listing_change};

impl App {
    /// Lists or delists a SKU on a channel, audited with `actor` and `reason`. Setting
    /// the state it already has changes nothing and publishes nothing.
    pub(crate) async fn set_listing(
        &self,
        code: &SkuCode,
        channel: Channel,
        listed: bool,
        actor: &str,
        reason: &str,
    ) -> ServiceResult<listing::Model> {
        self.sku_must_exist(code).await?;
        let listing = idempotency::transaction(&self.db, |txn| {
            let (code, actor, reason) = (code.clone(), actor.to_owned(), reason.to_owned());
            Box::pin(async move {
                let now = now();
                let current = store::find_listing(txn, code.as_str(), channel.as_str()).await?;
                if let Some(current) = current
                    && current.listed == listed
                {
                    return Ok(current);
                }
                let row =
                    store::set_listing(txn, code.as_str(), channel.as_str(), listed, &actor, &reason, now).await?;
                events::listing_changed(&code, channel, listed)
                    .publish(txn, code.as_str())
                    .await?;
                Ok(row)
            })
        })
        .await?;
        self.log.committed();
        Ok(listing)
    }

    /// The listing decisions of a SKU, newest first; returns the page and the next
    /// page's token.
    pub(crate) async fn listing_changes(
        &self,
        code: &SkuCode,
        page: &Page,
    ) -> ServiceResult<(Vec<listing_change::Model>, String)> {
        self.sku_must_exist(code).await?;
        let rows = store::listing_changes(&self.db, code.as_str(), page).await?;
        Ok(page.finish(rows, |c| c.id.clone()))
    }

    /// The reconciliation report of a channel (also run daily by the service).
    pub(crate) async fn reconcile(&self, channel: Channel) -> ServiceResult<Report> {
        let facts = store::reconciliation_facts(&self.db, channel.as_str()).await?;
        Ok(reconcile::reconcile(&facts))
    }

    /// Logs the reconciliation of every channel once a day (the report is also on
    /// demand through `ReconcileListings`), until the task is aborted.
    pub(crate) fn spawn_daily_reconciliation(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(24 * 3600));
            tick.tick().await;
            loop {
                tick.tick().await;
                for channel in Channel::ALL {
                    match app.reconcile(channel).await {
                        Ok(r) => tracing::info!(
                            channel = channel.as_str(),
                            listed_without_stock = r.listed_without_stock.len(),
                            unlisted_with_stock = r.unlisted_with_stock.len(),
                            duplicates = r.duplicates.len(),
                            "listing reconciliation"
                        ),
                        Err(err) => tracing::warn!(error = %err, "listing reconciliation failed"),
                    }
                }
            }
        })
    }
}

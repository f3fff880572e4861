//! Store and online KPIs from the touchpoint rollups: the store funnel, SKU flags,
//! staff figures and the online funnel.

use std::collections::BTreeMap;

use retail_kit::error::ServiceResult;

use super::{App, Period, rollup_sums};
use crate::domain::kpi::{self, ratio};
use crate::store::{self, rows};

#[derive(Debug, Clone, PartialEq)]
pub struct PlaceRate {
    pub place: String,
    pub base: i64,
    pub count: i64,
    pub rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreFunnel {
    pub passed_by: i64,
    pub entered: i64,
    pub entry_rate: f64,
    pub pass_through: Vec<PlaceRate>,
    pub upstairs: Vec<PlaceRate>,
    pub dwell: Vec<PlaceRate>,
    pub purchase: Vec<PlaceRate>,
    pub touch_rate: f64,
    pub try_on_rate: f64,
    pub receipts: i64,
    pub average_transaction_seconds: f64,
    pub average_reception_seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkuFlags {
    pub sku: String,
    pub triers: i64,
    pub try_on_buyers: i64,
    pub try_on_rate: f64,
    pub try_on_conversion: f64,
    pub touchers: i64,
    pub touch_buyers: i64,
    pub touch_rate: f64,
    pub touch_conversion: f64,
    pub try_on_flag: bool,
    pub touch_flag: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaffFigures {
    pub staff: String,
    pub steps: i64,
    pub served: i64,
    pub shown: i64,
    pub try_ons: i64,
    pub receipts: i64,
    pub sales: i64,
    pub conversion: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnlineFunnel {
    pub reach: i64,
    pub visits: i64,
    pub effective_entry_rate: f64,
    pub home_visits: i64,
    pub average_depth: f64,
    pub bounce_rate: f64,
    pub inquiries: i64,
    pub add_to_carts: i64,
    pub add_to_cart_conversion: f64,
    pub paid_orders: i64,
    pub payment_conversion: f64,
    pub repurchase_rate: f64,
}

impl App {
    /// Sums per dimension value of one touchpoint dimension (day grain).
    async fn touch_by_key(&self, period: Period, dim: &str) -> ServiceResult<BTreeMap<String, BTreeMap<String, i64>>> {
        let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for row in rows(
            &self.db,
            "SELECT dim_key, metric, CAST(SUM(value) AS BIGINT) FROM touch_rollups WHERE grain = 'h' AND dim = ? \
             AND bucket >= ? AND bucket < ? GROUP BY dim_key, metric",
            vec![dim.into(), period.start.into(), period.end.into()],
        )
        .await?
        {
            *out.entry(store::text(&row, 0)?)
                .or_default()
                .entry(store::text(&row, 1)?)
                .or_default() += store::int(&row, 2)?;
        }
        Ok(out)
    }

    fn rates(by: &BTreeMap<String, BTreeMap<String, i64>>, base: &str, count: &str) -> Vec<PlaceRate> {
        by.iter()
            .map(|(place, m)| {
                let (b, c) = (m.get(base).copied().unwrap_or(0), m.get(count).copied().unwrap_or(0));
                PlaceRate {
                    place: place.clone(),
                    base: b,
                    count: c,
                    rate: ratio(c as f64, b as f64),
                }
            })
            .collect()
    }

    pub async fn store_funnel(&self, period: Period, store: &str) -> ServiceResult<StoreFunnel> {
        let sums = rollup_sums(
            &self.db,
            "touch_rollups",
            period,
            "store",
            store,
            &[
                "passed_by",
                "entered",
                "touches",
                "receipts",
                "transaction_secs",
                "reception_secs",
            ],
        )
        .await?;
        let get = |m: &str| sums.get(m).copied().unwrap_or(0);
        let entered = get("entered");
        let zones = self.touch_by_key(period, &format!("zone:{store}")).await?;
        let triers = crate::store::triers::count(&self.db, store, &super::buckets(period)).await?;
        Ok(StoreFunnel {
            passed_by: get("passed_by"),
            entered,
            entry_rate: ratio(entered as f64, get("passed_by") as f64),
            pass_through: Self::rates(
                &self.touch_by_key(period, &format!("aisle:{store}")).await?,
                "surveyed",
                "passed",
            ),
            upstairs: Self::rates(
                &self.touch_by_key(period, &format!("floor:{store}")).await?,
                "entered",
                "went_up",
            ),
            dwell: Self::rates(&zones, "passed", "stayed"),
            purchase: Self::rates(&zones, "stayed", "purchasers"),
            touch_rate: ratio(get("touches") as f64, entered as f64),
            try_on_rate: ratio(triers as f64, entered as f64),
            receipts: get("receipts"),
            average_transaction_seconds: ratio(get("transaction_secs") as f64, get("receipts") as f64),
            average_reception_seconds: ratio(get("reception_secs") as f64, get("receipts") as f64),
        })
    }

    /// Per SKU of a store: triers and touchers of the period, those who bought the
    /// SKU after (a receipt at or after their first try or touch), the rates
    /// against the store's entries, and the flags.
    pub async fn sku_flags(
        &self,
        period: Period,
        store: &str,
        top_share: f64,
        low_factor: f64,
    ) -> ServiceResult<Vec<SkuFlags>> {
        let entered = rollup_sums(&self.db, "touch_rollups", period, "store", store, &["entered"])
            .await?
            .get("entered")
            .copied()
            .unwrap_or(0) as f64;
        let (s, e) = (period.start, period.end);
        let found = rows(
            &self.db,
            "SELECT sku, \
             SUM(CASE WHEN tried_at >= ? AND tried_at < ? THEN 1 ELSE 0 END), \
             SUM(CASE WHEN tried_at >= ? AND tried_at < ? AND bought_at >= tried_at THEN 1 ELSE 0 END), \
             SUM(CASE WHEN touched_at >= ? AND touched_at < ? THEN 1 ELSE 0 END), \
             SUM(CASE WHEN touched_at >= ? AND touched_at < ? AND bought_at >= touched_at THEN 1 ELSE 0 END) \
             FROM subject_skus WHERE store = ? AND ((tried_at >= ? AND tried_at < ?) OR (touched_at >= ? AND touched_at < ?)) \
             GROUP BY sku ORDER BY sku",
            vec![
                s.into(),
                e.into(),
                s.into(),
                e.into(),
                s.into(),
                e.into(),
                s.into(),
                e.into(),
                store.into(),
                s.into(),
                e.into(),
                s.into(),
                e.into(),
            ],
        )
        .await?;
        let mut out = Vec::with_capacity(found.len());
        for row in &found {
            let (triers, tb, touchers, hb) = (
                store::int(row, 1)?,
                store::int(row, 2)?,
                store::int(row, 3)?,
                store::int(row, 4)?,
            );
            out.push(SkuFlags {
                sku: store::text(row, 0)?,
                triers,
                try_on_buyers: tb,
                try_on_rate: ratio(triers as f64, entered),
                try_on_conversion: ratio(tb as f64, triers as f64),
                touchers,
                touch_buyers: hb,
                touch_rate: ratio(touchers as f64, entered),
                touch_conversion: ratio(hb as f64, touchers as f64),
                ..Default::default()
            });
        }
        let try_flags = kpi::flags(
            &out.iter()
                .map(|f| (f.try_on_rate, f.try_on_conversion))
                .collect::<Vec<_>>(),
            top_share,
            low_factor,
        );
        let touch_flags = kpi::flags(
            &out.iter()
                .map(|f| (f.touch_rate, f.touch_conversion))
                .collect::<Vec<_>>(),
            top_share,
            low_factor,
        );
        for ((f, t), h) in out.iter_mut().zip(try_flags).zip(touch_flags) {
            f.try_on_flag = t;
            f.touch_flag = h;
        }
        Ok(out)
    }

    pub async fn staff(&self, period: Period, store: &str) -> ServiceResult<Vec<StaffFigures>> {
        let by = self.touch_by_key(period, &format!("staff:{store}")).await?;
        Ok(by
            .into_iter()
            .map(|(staff, m)| {
                let get = |k: &str| m.get(k).copied().unwrap_or(0);
                StaffFigures {
                    steps: get("steps"),
                    served: get("served"),
                    shown: get("shown"),
                    try_ons: get("try_ons"),
                    receipts: get("receipts"),
                    sales: get("sales"),
                    conversion: ratio(get("receipts") as f64, get("served") as f64),
                    staff,
                }
            })
            .collect())
    }

    pub async fn online_funnel(&self, period: Period) -> ServiceResult<OnlineFunnel> {
        let sums = rollup_sums(
            &self.db,
            "touch_rollups",
            period,
            "online",
            "",
            &[
                "reach",
                "visits",
                "home_visits",
                "page_views",
                "bounces",
                "inquiries",
                "add_to_carts",
            ],
        )
        .await?;
        let get = |m: &str| sums.get(m).copied().unwrap_or(0);
        let paid = rollup_sums(&self.db, "rollups", period, "channel", "online", &["orders"])
            .await?
            .get("orders")
            .copied()
            .unwrap_or(0);
        let found = rows(
            &self.db,
            "SELECT COUNT(DISTINCT p.member_id), COUNT(DISTINCT CASE WHEN m.first_purchase < p.paid_at THEN p.member_id END) \
             FROM purchases p JOIN members m ON m.member_id = p.member_id \
             WHERE p.channel = 'online' AND p.paid_at >= ? AND p.paid_at < ?",
            vec![period.start.into(), period.end.into()],
        )
        .await?;
        let (customers, returning) = match found.first() {
            Some(row) => (store::int(row, 0)?, store::int(row, 1)?),
            None => (0, 0),
        };
        let visits = get("visits");
        Ok(OnlineFunnel {
            reach: get("reach"),
            visits,
            effective_entry_rate: ratio(visits as f64, get("reach") as f64),
            home_visits: get("home_visits"),
            average_depth: ratio(get("page_views") as f64, visits as f64),
            bounce_rate: ratio(get("bounces") as f64, visits as f64),
            inquiries: get("inquiries"),
            add_to_carts: get("add_to_carts"),
            add_to_cart_conversion: ratio(get("add_to_carts") as f64, visits as f64),
            paid_orders: paid,
            payment_conversion: ratio(paid as f64, get("add_to_carts") as f64),
            repurchase_rate: ratio(returning as f64, customers as f64),
        })
    }
}

//! Sales, satisfaction, customer value, goods and product classes.

use std::collections::BTreeMap;

use retail_kit::error::{ServiceError, ServiceResult};
use sea_orm::Value;

use super::{App, Period, rollup_sums, rollup_sums_of};
use crate::domain::kpi::{self, ratio};
use crate::store::{self, exec, rows};

/// The dimensions sales are rolled up by.
pub const SALES_DIMENSIONS: &[&str] = &[
    "all", "channel", "store", "partner", "rep", "tier", "region", "sku", "category",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SalesFigures {
    pub revenue: i64,
    pub orders: i64,
    pub aov: f64,
    pub customers: i64,
    pub spend_per_customer: f64,
    pub units: i64,
    pub items_per_ticket: f64,
    pub refunded: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SalesReport {
    pub current: SalesFigures,
    pub previous: SalesFigures,
    pub revenue_growth: f64,
    pub orders_growth: f64,
    pub aov_growth: f64,
    pub items_per_ticket_growth: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Satisfaction {
    pub ratings: i64,
    pub average_rating: f64,
    pub nps: kpi::Nps,
}

impl Default for kpi::Nps {
    fn default() -> Self {
        kpi::nps(0, 0, 0)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelValue {
    pub channel: String,
    pub customers: i64,
    pub aov: f64,
    pub purchases_per_year: f64,
    pub clv: f64,
    pub return_rate: f64,
    pub cac: i64,
    pub effective_cac: f64,
    pub cac_to_clv: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GoodsLine {
    pub sku: String,
    pub warehouse: String,
    pub sellable: i64,
    pub last_sale: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProductClass {
    pub sku: String,
    pub ctr: f64,
    pub units: i64,
    pub class: &'static str,
}

impl App {
    pub async fn sales_figures(&self, period: Period, dim: &str, key: &str) -> ServiceResult<SalesFigures> {
        Ok(self
            .sales_figures_of(&[period], dim, key)
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// The figures of several periods: one statement for the rollups of all of
    /// them, one for their distinct customers.
    async fn sales_figures_of(&self, periods: &[Period], dim: &str, key: &str) -> ServiceResult<Vec<SalesFigures>> {
        let sums = rollup_sums_of(
            &self.db,
            "rollups",
            periods,
            dim,
            key,
            &["revenue", "orders", "units", "refunded", "customers"],
        )
        .await?;
        let customers = match dim {
            "sku" | "category" => sums.iter().map(|s| s.get("customers").copied().unwrap_or(0)).collect(),
            _ => self.distinct_customers(periods, dim, key).await?,
        };
        Ok(sums
            .iter()
            .zip(customers)
            .map(|(sums, customers)| {
                let get = |m: &str| sums.get(m).copied().unwrap_or(0);
                let revenue = get("revenue") - get("refunded");
                let orders = get("orders");
                SalesFigures {
                    revenue,
                    orders,
                    aov: ratio(revenue as f64, orders as f64),
                    customers,
                    spend_per_customer: ratio(revenue as f64, customers as f64),
                    units: get("units"),
                    items_per_ticket: ratio(get("units") as f64, orders as f64),
                    refunded: get("refunded"),
                }
            })
            .collect())
    }

    /// The distinct members who paid for an order in each period (guests left
    /// out), under one dimension value: the union of the buyers bitmaps of the
    /// hours at the period's edges and the days in between, the buckets its
    /// revenue is read from, in one statement.
    async fn distinct_customers(&self, periods: &[Period], dim: &str, key: &str) -> ServiceResult<Vec<i64>> {
        if !["all", "channel", "store", "partner", "tier", "region", "rep"].contains(&dim) {
            return Err(ServiceError::invalid("dimension", format!("unknown dimension {dim:?}")));
        }
        let groups: Vec<_> = periods.iter().map(|p| super::buckets(*p)).collect();
        store::buyers::count_distinct(&self.db, &groups, dim, key).await
    }

    pub async fn sales(&self, period: Period, dim: &str, key: &str) -> ServiceResult<SalesReport> {
        let mut both = self.sales_figures_of(&[period, period.previous()], dim, key).await?;
        let previous = both.pop().unwrap_or_default();
        let current = both.pop().unwrap_or_default();
        Ok(SalesReport {
            revenue_growth: kpi::growth(current.revenue as f64, previous.revenue as f64),
            orders_growth: kpi::growth(current.orders as f64, previous.orders as f64),
            aov_growth: kpi::growth(current.aov, previous.aov),
            items_per_ticket_growth: kpi::growth(current.items_per_ticket, previous.items_per_ticket),
            current,
            previous,
        })
    }

    pub async fn satisfaction(&self, period: Period, dim: &str, key: &str) -> ServiceResult<Satisfaction> {
        let sums = rollup_sums(
            &self.db,
            "rollups",
            period,
            dim,
            key,
            &[
                "ratings",
                "rating_sum",
                "nps_respondents",
                "nps_promoters",
                "nps_detractors",
            ],
        )
        .await?;
        let get = |m: &str| sums.get(m).copied().unwrap_or(0);
        Ok(Satisfaction {
            ratings: get("ratings"),
            average_rating: ratio(get("rating_sum") as f64, get("ratings") as f64),
            nps: kpi::nps(get("nps_promoters"), get("nps_detractors"), get("nps_respondents")),
        })
    }

    /// CLV and effective CAC per acquisition channel (the channel of the
    /// customer's first purchase), from the period's purchases of its customers.
    pub async fn customer_value(&self, period: Period) -> ServiceResult<Vec<ChannelValue>> {
        let mut by_channel: BTreeMap<String, ChannelValue> = BTreeMap::new();
        for row in rows(
            &self.db,
            "SELECT acquisition_channel, COUNT(*) FROM members WHERE first_purchase IS NOT NULL GROUP BY acquisition_channel",
            vec![],
        )
        .await?
        {
            let channel = store::text(&row, 0)?;
            by_channel.entry(channel.clone()).or_default().customers = store::int(&row, 1)?;
        }
        let years = period.days() / 365.0;
        for row in rows(
            &self.db,
            "SELECT m.acquisition_channel, COUNT(*), CAST(SUM(p.amount) AS BIGINT), CAST(SUM(p.refunded) AS BIGINT), \
             COUNT(DISTINCT p.member_id) FROM purchases p JOIN members m ON m.member_id = p.member_id \
             WHERE p.paid_at >= ? AND p.paid_at < ? GROUP BY m.acquisition_channel",
            vec![period.start.into(), period.end.into()],
        )
        .await?
        {
            let value = by_channel.entry(store::text(&row, 0)?).or_default();
            let (orders, paid, refunded, buyers) = (
                store::int(&row, 1)? as f64,
                store::int(&row, 2)? as f64,
                store::int(&row, 3)? as f64,
                store::int(&row, 4)? as f64,
            );
            value.aov = ratio(paid - refunded, orders);
            value.purchases_per_year = ratio(ratio(orders, buyers), years);
            value.return_rate = ratio(refunded, paid);
        }
        for row in rows(&self.db, "SELECT channel, cac_minor FROM acquisition_costs", vec![]).await? {
            by_channel.entry(store::text(&row, 0)?).or_default().cac = store::int(&row, 1)?;
        }
        let rules = &self.settings.analytics;
        Ok(by_channel
            .into_iter()
            .map(|(channel, mut v)| {
                v.channel = channel;
                v.clv = kpi::clv(v.aov, v.purchases_per_year, rules.lifetime_years, rules.gross_margin);
                v.effective_cac = kpi::effective_cac(v.cac as f64, v.return_rate);
                v.cac_to_clv = ratio(v.effective_cac, v.clv);
                v
            })
            .collect())
    }

    pub async fn set_acquisition_cost(&self, channel: &str, cac: i64, at: i64) -> ServiceResult<()> {
        exec(
            &self.db,
            "INSERT INTO acquisition_costs (channel, cac_minor, updated_at) VALUES (?,?,?) \
             ON CONFLICT (channel) DO UPDATE SET cac_minor = excluded.cac_minor, updated_at = excluded.updated_at",
            vec![channel.into(), cac.into(), at.into()],
        )
        .await?;
        Ok(())
    }

    /// Stock-outs (listed SKUs without sellable stock at a warehouse) and slow
    /// movers (in stock, no sale since `as_of - slow_days`).
    pub async fn goods(
        &self,
        as_of: i64,
        slow_days: i64,
        warehouse: &str,
    ) -> ServiceResult<(Vec<GoodsLine>, Vec<GoodsLine>)> {
        let filter = if warehouse.is_empty() {
            ""
        } else {
            " AND s.warehouse = ?"
        };
        let with = |mut v: Vec<Value>| {
            if !warehouse.is_empty() {
                v.push(warehouse.into());
            }
            v
        };
        let read = |found: Vec<sea_orm::QueryResult>| -> ServiceResult<Vec<GoodsLine>> {
            found
                .iter()
                .map(|row| {
                    Ok(GoodsLine {
                        sku: store::text(row, 0)?,
                        warehouse: store::text(row, 1)?,
                        sellable: store::int(row, 2)?,
                        last_sale: store::opt_int(row, 3)?,
                    })
                })
                .collect()
        };
        let outs = rows(
            &self.db,
            &format!(
                "SELECT s.sku, s.warehouse, s.sellable, ls.sold_at FROM stock s LEFT JOIN last_sales ls ON ls.sku = s.sku \
                 WHERE s.sellable <= 0 AND EXISTS (SELECT 1 FROM listings l WHERE l.sku = s.sku AND l.listed = 1){filter} \
                 ORDER BY s.sku, s.warehouse LIMIT 1000"
            ),
            with(vec![]),
        )
        .await?;
        let slow = rows(
            &self.db,
            &format!(
                "SELECT s.sku, s.warehouse, s.sellable, ls.sold_at FROM stock s LEFT JOIN last_sales ls ON ls.sku = s.sku \
                 WHERE s.sellable > 0 AND (ls.sold_at IS NULL OR ls.sold_at < ?){filter} ORDER BY s.sku, s.warehouse LIMIT 1000"
            ),
            with(vec![(as_of - slow_days * crate::domain::DAY).into()]),
        )
        .await?;
        Ok((read(outs)?, read(slow)?))
    }

    /// A/B/C/D of a category's SKUs by click-through (online clicks / impressions)
    /// and units sold, against the category's medians; in display order.
    pub async fn product_classes(
        &self,
        period: Period,
        category: &str,
    ) -> ServiceResult<(Vec<ProductClass>, f64, f64)> {
        let skus: Vec<String> = rows(
            &self.db,
            "SELECT sku FROM skus WHERE category = ? ORDER BY sku",
            vec![category.into()],
        )
        .await?
        .iter()
        .map(|r| store::text(r, 0))
        .collect::<ServiceResult<_>>()?;
        let mut figures: BTreeMap<String, (i64, i64, i64)> = skus.iter().map(|s| (s.clone(), (0, 0, 0))).collect();
        for chunk in skus.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            for (table, metrics) in [("touch_rollups", "'impressions','clicks'"), ("rollups", "'units'")] {
                let mut values: Vec<Value> = vec![period.start.into(), period.end.into()];
                values.extend(chunk.iter().map(|s| s.clone().into()));
                for row in rows(
                    &self.db,
                    &format!(
                        "SELECT dim_key, metric, CAST(SUM(value) AS BIGINT) FROM {table} WHERE grain = 'd' AND dim = 'sku' \
                         AND bucket >= ? AND bucket < ? AND dim_key IN ({placeholders}) AND metric IN ({metrics}) \
                         GROUP BY dim_key, metric"
                    ),
                    values,
                )
                .await?
                {
                    let entry = figures.entry(store::text(&row, 0)?).or_default();
                    let v = store::int(&row, 2)?;
                    match store::text(&row, 1)?.as_str() {
                        "impressions" => entry.0 += v,
                        "clicks" => entry.1 += v,
                        _ => entry.2 += v,
                    }
                }
            }
        }
        let ctrs: Vec<f64> = figures.values().map(|(i, c, _)| ratio(*c as f64, *i as f64)).collect();
        let units: Vec<f64> = figures.values().map(|(_, _, u)| *u as f64).collect();
        let (median_ctr, median_units) = (kpi::median(&ctrs), kpi::median(&units));
        let mut classes: Vec<ProductClass> = figures
            .into_iter()
            .map(|(sku, (i, c, u))| {
                let ctr = ratio(c as f64, i as f64);
                ProductClass {
                    sku,
                    ctr,
                    units: u,
                    class: kpi::product_class(ctr, u as f64, median_ctr, median_units),
                }
            })
            .collect();
        classes.sort_by(|a, b| a.class.cmp(b.class).then(b.units.cmp(&a.units)).then(a.sku.cmp(&b.sku)));
        Ok((classes, median_ctr, median_units))
    }
}

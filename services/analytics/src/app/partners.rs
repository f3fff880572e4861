//! Partners and sales reps: target attainment, its projection to the period's end
//! and the ranking among peers; lead conversion; pipeline conversion per stage.
//!
//! Actual sales of a target are the attributed paid orders less refunds of its
//! subject from the sales rollups (`partner`, or `rep` keyed `partner/rep`) from
//! the period's start to `as_of` (to the hour), the same figures as the sales
//! report. Targets, leads and opportunity stages come from channel-partner's log.

use std::collections::BTreeMap;

use retail_kit::error::{ServiceError, ServiceResult};
use sea_orm::Value;

use super::{App, Period, rollup_sums, rollup_sums_by_key};
use crate::domain::partner::{self, STAGES, Standing, next_stage, rate};
use crate::store::{self, rows};

/// A target with its standing at `as_of`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStanding {
    pub target_id: String,
    /// "partner" or "rep".
    pub subject_kind: String,
    pub partner: String,
    pub rep: String,
    /// The partner's level as last published (empty if unknown).
    pub level: String,
    pub period_kind: String,
    pub start: i64,
    pub end: i64,
    pub amount: i64,
    pub actual: i64,
    pub attainment: f64,
    pub projected: i64,
    pub projected_attainment: f64,
    /// 1 is first among the targets of the same kind of subject, period kind and
    /// start.
    pub rank: u32,
    pub peers: u32,
    pub attained_at: Option<i64>,
}

/// Lead counts of a partner (or of all, with an empty partner) over a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadConversion {
    pub partner: String,
    pub offered: i64,
    pub accepted: i64,
    pub declined: i64,
    pub timed_out: i64,
    pub unassigned: i64,
    pub won: i64,
    pub lost: i64,
    /// accepted / offered.
    pub acceptance_rate: f64,
    /// declined / offered.
    pub decline_rate: f64,
    /// timed out / offered.
    pub timeout_rate: f64,
    /// won / accepted.
    pub win_rate: f64,
}

/// One pipeline stage: the opportunities that reached it in the period and what
/// became of them by the period's end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageConversion {
    pub stage: String,
    pub reached: i64,
    /// Of those, reached the next stage by the period's end.
    pub advanced: i64,
    /// Of those, lost without reaching the next stage by the period's end.
    pub lost: i64,
    /// advanced / reached.
    pub conversion: f64,
    /// Mean days from reaching the stage to reaching the next (of those advanced).
    pub average_days: f64,
}

const LEAD_METRICS: [&str; 7] = [
    "leads_offered",
    "leads_accepted",
    "leads_declined",
    "leads_timed_out",
    "leads_unassigned",
    "leads_won",
    "leads_lost",
];

fn lead_conversion(partner: String, sums: &BTreeMap<String, i64>) -> LeadConversion {
    let get = |m: &str| sums.get(m).copied().unwrap_or(0);
    let (offered, accepted) = (get("leads_offered"), get("leads_accepted"));
    LeadConversion {
        partner,
        offered,
        accepted,
        declined: get("leads_declined"),
        timed_out: get("leads_timed_out"),
        unassigned: get("leads_unassigned"),
        won: get("leads_won"),
        lost: get("leads_lost"),
        acceptance_rate: rate(accepted, offered),
        decline_rate: rate(get("leads_declined"), offered),
        timeout_rate: rate(get("leads_timed_out"), offered),
        win_rate: rate(get("leads_won"), accepted),
    }
}

impl App {
    /// The targets of `subject_kind` ("partner" or "rep") whose period contains
    /// `as_of` (of `period_kind` if not empty), ranked among their peers, those of
    /// `partner` if not empty; in ranking order.
    pub async fn target_standings(
        &self,
        as_of: i64,
        subject_kind: &str,
        period_kind: &str,
        partner: &str,
    ) -> ServiceResult<Vec<TargetStanding>> {
        if !matches!(subject_kind, "partner" | "rep") {
            return Err(ServiceError::invalid("subject_kind", "must be \"partner\" or \"rep\""));
        }
        let mut sql = String::from(
            "SELECT t.target_id, t.partner, t.rep, t.period_kind, t.start_at, t.end_at, t.amount, t.attained_at, \
             COALESCE(p.level, '') FROM targets t LEFT JOIN partners p ON p.partner_id = t.partner \
             WHERE t.subject_kind = ? AND t.start_at <= ? AND t.end_at > ?",
        );
        let mut values: Vec<Value> = vec![subject_kind.into(), as_of.into(), as_of.into()];
        if !period_kind.is_empty() {
            sql.push_str(" AND t.period_kind = ?");
            values.push(period_kind.into());
        }
        let mut all = Vec::new();
        for row in rows(&self.db, &sql, values).await? {
            let (partner_id, rep) = (store::text(&row, 1)?, store::text(&row, 2)?);
            let (start, end, amount) = (store::int(&row, 4)?, store::int(&row, 5)?, store::int(&row, 6)?);
            let (dim, key) = if subject_kind == "rep" {
                ("rep", format!("{partner_id}/{rep}"))
            } else {
                ("partner", partner_id.clone())
            };
            let upto = Period {
                start,
                end: as_of.min(end),
            };
            let sums = rollup_sums(&self.db, "rollups", upto, dim, &key, &["revenue", "refunded"]).await?;
            let actual = sums.get("revenue").copied().unwrap_or(0) - sums.get("refunded").copied().unwrap_or(0);
            let projected = partner::projection(actual, start, end, as_of);
            all.push(TargetStanding {
                target_id: store::text(&row, 0)?,
                subject_kind: subject_kind.to_owned(),
                partner: partner_id,
                rep,
                level: store::text(&row, 8)?,
                period_kind: store::text(&row, 3)?,
                start,
                end,
                amount,
                actual,
                attainment: partner::attainment(actual, amount),
                projected,
                projected_attainment: partner::attainment(projected, amount),
                rank: 0,
                peers: 0,
                attained_at: store::opt_int(&row, 7)?,
            });
        }
        let standing = |t: &TargetStanding| Standing {
            target_id: t.target_id.clone(),
            actual_minor: t.actual,
            attainment: t.attainment,
        };
        all.sort_by(|a, b| {
            (a.period_kind.as_str(), a.start)
                .cmp(&(b.period_kind.as_str(), b.start))
                .then_with(|| partner::rank_order(&standing(a), &standing(b)))
        });
        let mut i = 0;
        while i < all.len() {
            let group = (all[i].period_kind.clone(), all[i].start);
            let j = all[i..]
                .iter()
                .position(|t| (t.period_kind.clone(), t.start) != group)
                .map_or(all.len(), |n| i + n);
            for (k, t) in all[i..j].iter_mut().enumerate() {
                t.rank = k as u32 + 1;
                t.peers = (j - i) as u32;
            }
            i = j;
        }
        all.retain(|t| partner.is_empty() || t.partner == partner);
        all.sort_by(|a, b| {
            a.rank
                .cmp(&b.rank)
                .then(a.period_kind.cmp(&b.period_kind))
                .then(a.start.cmp(&b.start))
                .then(a.target_id.cmp(&b.target_id))
        });
        Ok(all)
    }

    /// Lead counts and rates over `period`: all leads, and per partner (only
    /// `partner` if not empty).
    pub async fn lead_conversion(
        &self,
        period: Period,
        partner: &str,
    ) -> ServiceResult<(LeadConversion, Vec<LeadConversion>)> {
        let total = if partner.is_empty() {
            rollup_sums(&self.db, "rollups", period, "all", "", &LEAD_METRICS).await?
        } else {
            rollup_sums(&self.db, "rollups", period, "partner", partner, &LEAD_METRICS).await?
        };
        let by_partner = rollup_sums_by_key(&self.db, "rollups", period, "partner", &LEAD_METRICS).await?;
        let partners = by_partner
            .into_iter()
            .filter(|(p, _)| partner.is_empty() || p == partner)
            .map(|(p, sums)| lead_conversion(p, &sums))
            .collect();
        Ok((lead_conversion(partner.to_owned(), &total), partners))
    }

    /// Conversion per pipeline stage of the opportunities that reached each stage
    /// in `period` (of `partner` if not empty), in funnel order, then `lost`.
    pub async fn pipeline_conversion(&self, period: Period, partner: &str) -> ServiceResult<Vec<StageConversion>> {
        let mut out = Vec::new();
        for stage in STAGES.iter().copied().chain(["lost"]) {
            let next = next_stage(stage).unwrap_or("");
            let mut sql = String::from(
                "SELECT COUNT(*), \
                 CAST(SUM(CASE WHEN n.reached_at < ? THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN n.reached_at < ? THEN n.reached_at - s.reached_at ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN (n.reached_at IS NULL OR n.reached_at >= ?) AND l.reached_at < ? THEN 1 ELSE 0 END) AS BIGINT) \
                 FROM opportunity_stages s \
                 LEFT JOIN opportunity_stages n ON n.opportunity = s.opportunity AND n.stage = ? \
                 LEFT JOIN opportunity_stages l ON l.opportunity = s.opportunity AND l.stage = 'lost' \
                 WHERE s.stage = ? AND s.reached_at >= ? AND s.reached_at < ?",
            );
            let mut values: Vec<Value> = vec![
                period.end.into(),
                period.end.into(),
                period.end.into(),
                period.end.into(),
                next.into(),
                stage.into(),
                period.start.into(),
                period.end.into(),
            ];
            if !partner.is_empty() {
                sql.push_str(" AND s.partner = ?");
                values.push(partner.into());
            }
            let found = rows(&self.db, &sql, values).await?;
            let Some(row) = found.first() else { continue };
            let (reached, advanced, seconds) = (store::int(row, 0)?, store::int(row, 1)?, store::int(row, 2)?);
            let lost = if stage == "won" || stage == "lost" {
                0
            } else {
                store::int(row, 3)?
            };
            out.push(StageConversion {
                stage: stage.to_owned(),
                reached,
                advanced,
                lost,
                conversion: rate(advanced, reached),
                average_days: crate::domain::kpi::ratio(seconds as f64, advanced as f64) / crate::domain::DAY as f64,
            });
        }
        Ok(out)
    }
}

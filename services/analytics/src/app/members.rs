//! Member KPIs: RFM and its segments, the pyramid, member counts, lifecycle and
//! flows, stickiness (repeat rate, ARPU, churn, cohorts) and purchase cycles.
//! They read the per-member facts (`purchases`, `members`); the active member
//! counts read the week and month rollups.

use std::collections::BTreeMap;

use retail_kit::error::ServiceResult;

use super::{App, Period};
use crate::domain::DAY;
use crate::domain::kpi::{self, RfmInput, Segment, ratio};
use crate::domain::lifecycle::{self, State};
use crate::projection::{day, month, week};
use crate::store::{self, rows, scalar};

#[derive(Debug, Clone, PartialEq)]
pub struct MemberRfm {
    pub member: String,
    pub recency_days: i64,
    pub frequency: i64,
    pub monetary: i64,
    pub score: kpi::RfmScore,
    pub cycle_days: Option<f64>,
    pub next_purchase: Option<i64>,
}

/// A member's scoring: RFM when it bought in the window, and its predicted tags.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberScore {
    pub member: String,
    pub rfm: Option<kpi::RfmScore>,
    pub predicted: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: &'static str,
    pub headcount: i64,
    pub share_of_customers: f64,
    pub revenue: i64,
    pub share_of_revenue: f64,
    pub orders: i64,
    pub aov: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberStats {
    pub registered: i64,
    pub registered_in_period: i64,
    pub activated: i64,
    pub purchasing: i64,
    pub marketable: i64,
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lifecycle {
    pub distribution: Vec<(State, i64)>,
    pub flows: Vec<(State, State, i64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cohort {
    pub month: String,
    pub customers: i64,
    pub retention: Vec<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stickiness {
    pub repeat_rate: f64,
    pub active_arpu: f64,
    pub churn_rate: f64,
    pub cohorts: Vec<Cohort>,
    /// Sleeping members contacted by a campaign in the period, and how many bought
    /// again within its attribution window.
    pub wake_up: WinBack,
    /// The same among the campaigns' control members (contacted by nobody).
    pub wake_up_control: WinBack,
    /// Lost members contacted by a campaign in the period (the reactivation rate).
    pub reactivation: WinBack,
    pub reactivation_control: WinBack,
}

/// The win-back figures of a period: sleeping members (wake-up) and lost members
/// (reactivation) contacted by a campaign, and those held back as its control.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WinBackRates {
    pub wake_up: WinBack,
    pub wake_up_control: WinBack,
    pub reactivation: WinBack,
    pub reactivation_control: WinBack,
}

/// Members a campaign decided for in a period (contacted, or held back as
/// control), those of them who bought again within the decision's attribution
/// window, and the share.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WinBack {
    pub members: i64,
    pub bought_again: i64,
    pub rate: f64,
}

/// Of the members with a campaign decision of `outcome` in `[start, end)` while in
/// lifecycle state `lifecycle`, each person counted once (a member merged since
/// as its final survivor, so one contacted before and after a merge is one): all,
/// and those with a paid purchase (not cancelled) after such a decision and at the
/// latest at its attribution window's end. The survivor's purchases include those
/// of every member merged into it.
const WIN_BACK: &str = "SELECT COUNT(DISTINCT x.person), COUNT(DISTINCT CASE WHEN EXISTS (\
     SELECT 1 FROM purchases p WHERE p.cancelled = 0 AND p.paid_at > x.contacted_at AND p.paid_at <= x.window_end \
     AND p.member_id = x.person) THEN x.person END) \
     FROM (SELECT COALESCE(m.survivor_id, c.member_id) AS person, c.contacted_at, c.window_end \
     FROM campaign_contacts c LEFT JOIN member_merges m ON m.merged_id = c.member_id \
     WHERE c.lifecycle = ? AND c.outcome = ? AND c.contacted_at >= ? AND c.contacted_at < ?) x";

#[derive(Debug, Clone, PartialEq)]
pub struct Overdue {
    pub member: String,
    pub cycle_days: f64,
    pub days_since_last: i64,
    pub last: i64,
    pub next: i64,
}

/// Each purchasing member's purchase times (ascending) and amounts (net of
/// refunds), up to `end`; cancelled orders left out.
type Histories = BTreeMap<String, Vec<(i64, i64)>>;

impl App {
    async fn histories(&self, end: i64) -> ServiceResult<Histories> {
        let mut out: Histories = BTreeMap::new();
        for row in rows(
            &self.db,
            "SELECT member_id, paid_at, amount - refunded FROM purchases WHERE member_id <> '' AND cancelled = 0 \
             AND paid_at < ? ORDER BY member_id, paid_at",
            vec![end.into()],
        )
        .await?
        {
            out.entry(store::text(&row, 0)?)
                .or_default()
                .push((store::int(&row, 1)?, store::int(&row, 2)?));
        }
        Ok(out)
    }

    /// RFM of every member who bought in the window before `as_of`, by member id.
    pub async fn rfm(&self, as_of: i64, window_days: i64) -> ServiceResult<(Vec<MemberRfm>, (f64, f64, f64))> {
        let histories = self.histories(as_of + 1).await?;
        Ok(rfm_of(&histories, as_of, window_days))
    }

    /// Every member who ever bought (net of cancelled orders) scored at `as_of`:
    /// RFM in the window (`None` without a purchase in it) and the predicted tags
    /// ([`kpi::predicted_tags`], overdue by `factor`), by member id.
    pub async fn member_scores(&self, as_of: i64, window_days: i64, factor: f64) -> ServiceResult<Vec<MemberScore>> {
        let histories = self.histories(as_of + 1).await?;
        let (scored, _) = rfm_of(&histories, as_of, window_days);
        let mut scored: BTreeMap<String, kpi::RfmScore> = scored.into_iter().map(|m| (m.member, m.score)).collect();
        Ok(histories
            .into_iter()
            .map(|(member, purchases)| {
                let times: Vec<i64> = purchases.iter().map(|(t, _)| *t).collect();
                MemberScore {
                    rfm: scored.remove(&member),
                    predicted: kpi::predicted_tags(&times, as_of, factor),
                    member,
                }
            })
            .collect())
    }

    /// Members in the eight segments, with their spend.
    pub async fn rfm_distribution(
        &self,
        as_of: i64,
        window_days: i64,
    ) -> ServiceResult<(Vec<(Segment, i64, i64)>, (f64, f64, f64))> {
        let (members, means) = self.rfm(as_of, window_days).await?;
        let out = Segment::ALL
            .iter()
            .map(|seg| {
                let of: Vec<&MemberRfm> = members.iter().filter(|m| m.score.segment == *seg).collect();
                (*seg, of.len() as i64, of.iter().map(|m| m.monetary).sum())
            })
            .collect();
        Ok((out, means))
    }

    /// The pyramid of a period: members who bought in it and had bought before,
    /// ranked by the period's spend into the layers; the base layer holds the
    /// members whose first purchase fell in the period and guest orders (one
    /// customer each).
    pub async fn pyramid(&self, period: Period) -> ServiceResult<Vec<Layer>> {
        let found = rows(
            &self.db,
            "SELECT p.member_id, CAST(SUM(p.amount - p.refunded) AS BIGINT), COUNT(*), MIN(m.first_purchase) \
             FROM purchases p LEFT JOIN members m ON m.member_id = p.member_id \
             WHERE p.paid_at >= ? AND p.paid_at < ? AND p.cancelled = 0 GROUP BY p.member_id",
            vec![period.start.into(), period.end.into()],
        )
        .await?;
        let mut ranked = Vec::new();
        let (mut base_heads, mut base_revenue, mut base_orders) = (0i64, 0i64, 0i64);
        for row in &found {
            let (member, spend, orders) = (store::text(row, 0)?, store::int(row, 1)?, store::int(row, 2)?);
            let first = store::opt_int(row, 3)?;
            if member.is_empty() {
                base_heads += orders;
                base_revenue += spend;
                base_orders += orders;
            } else if first.is_some_and(|f| f >= period.start) {
                base_heads += 1;
                base_revenue += spend;
                base_orders += orders;
            } else {
                ranked.push((member, spend, orders));
            }
        }
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let n = ranked.len();
        let total_revenue: i64 = ranked.iter().map(|r| r.1).sum::<i64>() + base_revenue;
        let mut layers: Vec<Layer> = kpi::PYRAMID_LAYERS
            .iter()
            .map(|(name, _)| Layer {
                name,
                headcount: 0,
                share_of_customers: 0.0,
                revenue: 0,
                share_of_revenue: 0.0,
                orders: 0,
                aov: 0.0,
            })
            .collect();
        for (rank, (_, spend, orders)) in ranked.iter().enumerate() {
            let layer = &mut layers[kpi::pyramid_layer(rank, n)];
            layer.headcount += 1;
            layer.revenue += spend;
            layer.orders += orders;
        }
        layers.push(Layer {
            name: "base",
            headcount: base_heads,
            share_of_customers: 0.0,
            revenue: base_revenue,
            share_of_revenue: 0.0,
            orders: base_orders,
            aov: 0.0,
        });
        let all_heads = n as f64 + base_heads as f64;
        for layer in &mut layers {
            let of = if layer.name == "base" { all_heads } else { n as f64 };
            layer.share_of_customers = ratio(layer.headcount as f64, of);
            layer.share_of_revenue = ratio(layer.revenue as f64, total_revenue as f64);
            layer.aov = ratio(layer.revenue as f64, layer.orders as f64);
        }
        Ok(layers)
    }

    pub async fn member_stats(&self, period: Period) -> ServiceResult<MemberStats> {
        let (start, end) = (period.start, period.end);
        let last = end - 1;
        let active = |grain: &'static str, bucket: i64| {
            scalar(
                &self.db,
                "SELECT value FROM rollups WHERE grain = ? AND dim = 'all' AND dim_key = '' AND metric = 'active_members' \
                 AND bucket = ?",
                vec![grain.into(), bucket.into()],
            )
        };
        Ok(MemberStats {
            registered: scalar(
                &self.db,
                "SELECT COUNT(*) FROM members WHERE erased = 0 AND registered_at < ?",
                vec![end.into()],
            )
            .await?,
            registered_in_period: scalar(
                &self.db,
                "SELECT COUNT(*) FROM members WHERE erased = 0 AND registered_at >= ? AND registered_at < ?",
                vec![start.into(), end.into()],
            )
            .await?,
            activated: scalar(
                &self.db,
                "SELECT COUNT(*) FROM members WHERE erased = 0 AND registered_at IS NOT NULL AND activated_at < ?",
                vec![end.into()],
            )
            .await?,
            purchasing: scalar(
                &self.db,
                "SELECT COUNT(DISTINCT member_id) FROM purchases WHERE member_id <> '' AND paid_at >= ? AND paid_at < ?",
                vec![start.into(), end.into()],
            )
            .await?,
            marketable: scalar(
                &self.db,
                "SELECT COUNT(DISTINCT c.member_id) FROM consents c JOIN members m ON m.member_id = c.member_id \
                 WHERE c.granted = 1 AND m.erased = 0",
                vec![],
            )
            .await?,
            daily: active("d", day(last)).await?,
            weekly: active("w", week(last)).await?,
            monthly: active("m", month(last)).await?,
        })
    }

    /// Every member's state at `at`, prospects included (registered, never bought);
    /// a merged member is its survivor.
    async fn states(&self, histories: &Histories, at: i64, w_days: i64) -> ServiceResult<BTreeMap<String, State>> {
        let mut out: BTreeMap<String, State> = BTreeMap::new();
        for row in rows(
            &self.db,
            "SELECT member_id FROM members WHERE erased = 0 AND registered_at IS NOT NULL AND registered_at <= ? \
             AND member_id NOT IN (SELECT merged_id FROM member_merges)",
            vec![at.into()],
        )
        .await?
        {
            out.insert(store::text(&row, 0)?, State::Prospect);
        }
        for (member, purchases) in histories {
            let times: Vec<i64> = purchases.iter().map(|(t, _)| *t).collect();
            let state = lifecycle::state(&times, at, w_days);
            if state != State::Prospect {
                out.insert(member.clone(), state);
            }
        }
        Ok(out)
    }

    pub async fn lifecycle(&self, period: Period, w_days: i64) -> ServiceResult<Lifecycle> {
        let histories = self.histories(period.end).await?;
        let before = self.states(&histories, period.start - 1, w_days).await?;
        let after = self.states(&histories, period.end - 1, w_days).await?;
        let mut distribution: BTreeMap<State, i64> = State::ALL.iter().map(|s| (*s, 0)).collect();
        let mut flows: BTreeMap<(State, State), i64> = BTreeMap::new();
        for (member, state) in &after {
            *distribution.entry(*state).or_default() += 1;
            let from = before.get(member).copied().unwrap_or(State::Prospect);
            *flows.entry((from, *state)).or_default() += 1;
        }
        Ok(Lifecycle {
            distribution: distribution.into_iter().collect(),
            flows: flows.into_iter().map(|((a, b), n)| (a, b, n)).collect(),
        })
    }

    pub async fn stickiness(&self, period: Period, w_days: i64) -> ServiceResult<Stickiness> {
        let histories = self.histories(period.end).await?;
        let in_period = |p: &Vec<(i64, i64)>| {
            p.iter()
                .filter(|(t, _)| *t >= period.start && *t < period.end)
                .copied()
                .collect::<Vec<_>>()
        };
        let (mut customers, mut repeaters, mut revenue) = (0i64, 0i64, 0i64);
        for purchases in histories.values() {
            let within = in_period(purchases);
            if !within.is_empty() {
                customers += 1;
                revenue += within.iter().map(|(_, a)| a).sum::<i64>();
                if within.len() >= 2 {
                    repeaters += 1;
                }
            }
        }
        // Churn: of the valid members at the start, those lost at the end.
        let before = self.states(&histories, period.start - 1, w_days).await?;
        let after = self.states(&histories, period.end - 1, w_days).await?;
        let valid: Vec<&String> = before.iter().filter(|(_, s)| s.is_valid()).map(|(m, _)| m).collect();
        let lost = valid.iter().filter(|m| after.get(**m) == Some(&State::Lost)).count();
        // Cohorts: months of the first purchase from the period's first month.
        let first_month = month(period.start);
        let last_month = month(period.end - 1);
        let months = month_starts(first_month, last_month, 24);
        let mut cohorts: Vec<Cohort> = months
            .iter()
            .map(|m| Cohort {
                month: chrono::DateTime::from_timestamp(*m, 0)
                    .map(|d| d.format("%Y-%m").to_string())
                    .unwrap_or_default(),
                customers: 0,
                retention: Vec::new(),
            })
            .collect();
        let mut bought: Vec<Vec<i64>> = months
            .iter()
            .enumerate()
            .map(|(i, _)| vec![0; months.len() - i - 1])
            .collect();
        for purchases in histories.values() {
            let Some((first, _)) = purchases.first() else { continue };
            let Some(ci) = months.iter().position(|m| *m == month(*first)) else {
                continue;
            };
            cohorts[ci].customers += 1;
            let mut months_bought: Vec<usize> = purchases
                .iter()
                .filter_map(|(t, _)| months.iter().position(|m| *m == month(*t)))
                .collect();
            months_bought.dedup();
            for mi in months_bought {
                if mi > ci {
                    bought[ci][mi - ci - 1] += 1;
                }
            }
        }
        for (cohort, counts) in cohorts.iter_mut().zip(&bought) {
            cohort.retention = kpi::retention(cohort.customers, counts);
        }
        let rates = self.win_back_rates(period).await?;
        Ok(Stickiness {
            repeat_rate: ratio(repeaters as f64, customers as f64),
            active_arpu: ratio(revenue as f64, customers as f64),
            churn_rate: ratio(lost as f64, valid.len() as f64),
            cohorts,
            wake_up: rates.wake_up,
            wake_up_control: rates.wake_up_control,
            reactivation: rates.reactivation,
            reactivation_control: rates.reactivation_control,
        })
    }

    /// The wake-up and reactivation rates of the period, targeted and control
    /// (the same figures as [`Stickiness`]'s, without the rest of it).
    pub async fn win_back_rates(&self, period: Period) -> ServiceResult<WinBackRates> {
        Ok(WinBackRates {
            wake_up: self.win_back(period, State::Sleeping, "contacted").await?,
            wake_up_control: self.win_back(period, State::Sleeping, "control").await?,
            reactivation: self.win_back(period, State::Lost, "contacted").await?,
            reactivation_control: self.win_back(period, State::Lost, "control").await?,
        })
    }

    /// Members in `lifecycle` a campaign decided for with `outcome` in the period,
    /// and those who bought again within the window ([`WIN_BACK`]).
    async fn win_back(&self, period: Period, lifecycle: State, outcome: &str) -> ServiceResult<WinBack> {
        let found = rows(
            &self.db,
            WIN_BACK,
            vec![
                lifecycle.as_str().into(),
                outcome.into(),
                period.start.into(),
                period.end.into(),
            ],
        )
        .await?;
        let (members, bought_again) = match found.first() {
            Some(row) => (store::int(row, 0)?, store::int(row, 1)?),
            None => (0, 0),
        };
        Ok(WinBack {
            members,
            bought_again,
            rate: ratio(bought_again as f64, members as f64),
        })
    }

    /// Members overdue at `as_of` by `factor`, by member id.
    pub async fn overdue(&self, as_of: i64, factor: f64) -> ServiceResult<Vec<Overdue>> {
        let histories = self.histories(as_of + 1).await?;
        Ok(histories
            .into_iter()
            .filter_map(|(member, purchases)| {
                let times: Vec<i64> = purchases.iter().map(|(t, _)| *t).collect();
                let cycle = kpi::purchase_cycle_days(&times)?;
                let last = *times.last()?;
                let since = (as_of - last) as f64 / DAY as f64;
                kpi::is_overdue(since, cycle, factor).then(|| Overdue {
                    member,
                    cycle_days: cycle,
                    days_since_last: (as_of - last).div_euclid(DAY),
                    last,
                    next: last + (cycle * DAY as f64) as i64,
                })
            })
            .collect())
    }
}

/// RFM of every member of `histories` who bought in the window before `as_of`.
fn rfm_of(histories: &Histories, as_of: i64, window_days: i64) -> (Vec<MemberRfm>, (f64, f64, f64)) {
    let from = as_of - window_days * DAY;
    let mut members = Vec::new();
    let mut inputs = Vec::new();
    for (member, purchases) in histories {
        let in_window: Vec<&(i64, i64)> = purchases.iter().filter(|(t, _)| *t > from).collect();
        let Some(last) = in_window.last() else { continue };
        inputs.push(RfmInput {
            recency_days: (as_of - last.0).div_euclid(DAY),
            frequency: in_window.len() as i64,
            monetary: in_window.iter().map(|(_, a)| a).sum(),
        });
        members.push((member.clone(), purchases));
    }
    let (scores, means) = kpi::rfm(&inputs);
    let out = members
        .into_iter()
        .zip(inputs)
        .zip(scores)
        .map(|(((member, purchases), input), score)| {
            let times: Vec<i64> = purchases.iter().map(|(t, _)| *t).collect();
            let cycle = kpi::purchase_cycle_days(&times);
            let last = times.last().copied().unwrap_or(0);
            MemberRfm {
                member,
                recency_days: input.recency_days,
                frequency: input.frequency,
                monetary: input.monetary,
                score,
                cycle_days: cycle,
                next_purchase: cycle.map(|c| last + (c * DAY as f64) as i64),
            }
        })
        .collect();
    (out, means)
}

/// The first seconds of the months from `first` to `last` (both month starts),
/// at most `max`, the latest kept.
fn month_starts(first: i64, last: i64, max: usize) -> Vec<i64> {
    let mut out = Vec::new();
    let mut m = first;
    while m <= last {
        out.push(m);
        m = month(m + 32 * DAY);
    }
    if out.len() > max {
        out.drain(..out.len() - max);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_starts_walk_calendar_months() {
        // 2026-01-01 .. 2026-03-01.
        let jan = 1_767_225_600;
        let mar = 1_772_323_200;
        let got = month_starts(jan, mar, 24);
        assert_eq!(got, vec![jan, 1_769_904_000, mar]);
        assert_eq!(month_starts(jan, mar, 2), vec![1_769_904_000, mar]);
    }
}

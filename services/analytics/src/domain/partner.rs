//! The partner and sales-rep figures: attainment of a target, its projection to
//! the period's end at the run rate, the ranking among peers, and the pipeline's
//! stages.

use std::cmp::Ordering;

use super::kpi::ratio;

/// The pipeline's stages in funnel order; an opportunity moves one stage forward
/// at a time, or to `lost` from any open stage.
pub const STAGES: [&str; 6] = [
    "identified",
    "proposed",
    "confirmed",
    "understood",
    "negotiating",
    "won",
];

/// The stage after `stage` in the funnel (none after `won` or for `lost`).
pub fn next_stage(stage: &str) -> Option<&'static str> {
    let i = STAGES.iter().position(|s| *s == stage)?;
    STAGES.get(i + 1).copied()
}

/// Actual as a share of the target's amount (1.0 = attained); 0 without a
/// positive amount. Negative when refunds outweigh sales.
pub fn attainment(actual_minor: i64, amount_minor: i64) -> f64 {
    if amount_minor <= 0 {
        return 0.0;
    }
    actual_minor as f64 / amount_minor as f64
}

/// The actual at the period's end `[start, end)` if it goes on at the rate of
/// `[start, as_of)`: actual / elapsed x length, rounded down; 0 before the start,
/// the actual itself from the end on.
pub fn projection(actual_minor: i64, start: i64, end: i64, as_of: i64) -> i64 {
    if as_of <= start {
        return 0;
    }
    if as_of >= end {
        return actual_minor;
    }
    let elapsed = i128::from(as_of - start);
    let length = i128::from(end - start);
    let projected = (i128::from(actual_minor) * length).div_euclid(elapsed);
    projected.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// One target's standing, for the ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub target_id: String,
    pub actual_minor: i64,
    pub attainment: f64,
}

/// Ranking order: higher attainment first, then the higher actual, then the
/// target id.
pub fn rank_order(a: &Standing, b: &Standing) -> Ordering {
    b.attainment
        .partial_cmp(&a.attainment)
        .unwrap_or(Ordering::Equal)
        .then(b.actual_minor.cmp(&a.actual_minor))
        .then(a.target_id.cmp(&b.target_id))
}

/// A rate with its numerator and denominator (0 without a denominator).
pub fn rate(count: i64, base: i64) -> f64 {
    ratio(count as f64, base as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_by_hand() {
        // A 30-day period, 10 days in, 1,000.00 sold: 3,000.00 at the end.
        let day = 86_400;
        assert_eq!(projection(100_000, 0, 30 * day, 10 * day), 300_000);
        // 7 of 30 days: 100 x 30 / 7 = 428.57 -> 428 (rounded down).
        assert_eq!(projection(100, 0, 30 * day, 7 * day), 428);
        assert_eq!(projection(100, 10, 20, 5), 0);
        assert_eq!(projection(100, 10, 20, 25), 100);
        assert_eq!(projection(-70, 0, 30, 10), -210);
    }

    #[test]
    fn attainment_and_stages() {
        assert!((attainment(75, 100) - 0.75).abs() < 1e-12);
        assert_eq!(attainment(75, 0), 0.0);
        assert_eq!(next_stage("identified"), Some("proposed"));
        assert_eq!(next_stage("negotiating"), Some("won"));
        assert_eq!(next_stage("won"), None);
        assert_eq!(next_stage("lost"), None);
    }

    #[test]
    fn ranking_breaks_ties_by_actual_then_id() {
        let s = |id: &str, actual: i64, att: f64| Standing {
            target_id: id.into(),
            actual_minor: actual,
            attainment: att,
        };
        let mut all = [s("c", 50, 0.5), s("a", 80, 0.8), s("b", 60, 0.5), s("d", 60, 0.5)];
        all.sort_by(rank_order);
        let ids: Vec<&str> = all.iter().map(|s| s.target_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d", "c"]);
    }
}

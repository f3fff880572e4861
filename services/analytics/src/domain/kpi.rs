//! The KPI formulas (docs/domain.md, Analytics), each a pure function of the
//! figures the projections hold.

/// `numerator / denominator`, 0 when there is nothing to divide by.
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 || !denominator.is_finite() {
        0.0
    } else {
        numerator / denominator
    }
}

/// Growth of `current` against `previous`: `(current - previous) / previous`, 0
/// without a previous figure.
pub fn growth(current: f64, previous: f64) -> f64 {
    ratio(current - previous, previous)
}

/// Quintile scores 1-5: a value's score is `1 + floor(5 * below / n)`, where
/// `below` counts the values strictly worse than it. Ties share the score of the
/// lowest rank among them, so equal figures always score alike. `higher_is_better`
/// false scores the smallest value best (recency in days).
pub fn quintile_scores(values: &[f64], higher_is_better: bool) -> Vec<u8> {
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sorted: Vec<f64> = values.iter().map(|v| if higher_is_better { *v } else { -*v }).collect();
    sorted.sort_by(f64::total_cmp);
    values
        .iter()
        .map(|v| {
            let key = if higher_is_better { *v } else { -*v };
            let below = sorted.partition_point(|s| s.total_cmp(&key).is_lt());
            (1 + (5 * below) / n) as u8
        })
        .collect()
}

/// The eight RFM segments, in their documented order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Champion,
    PotentialLoyalist,
    AtRiskLoyal,
    CannotLose,
    LoyalLowSpend,
    NewLowSpend,
    HibernatingFrequent,
    LostLowValue,
}

impl Segment {
    pub const ALL: [Segment; 8] = [
        Self::Champion,
        Self::PotentialLoyalist,
        Self::AtRiskLoyal,
        Self::CannotLose,
        Self::LoyalLowSpend,
        Self::NewLowSpend,
        Self::HibernatingFrequent,
        Self::LostLowValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Champion => "champion",
            Self::PotentialLoyalist => "potential_loyalist",
            Self::AtRiskLoyal => "at_risk_loyal",
            Self::CannotLose => "cannot_lose",
            Self::LoyalLowSpend => "loyal_low_spend",
            Self::NewLowSpend => "new_low_spend",
            Self::HibernatingFrequent => "hibernating_frequent",
            Self::LostLowValue => "lost_low_value",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|seg| seg.as_str() == s)
    }

    /// The segment of scores `(r, f, m)` against the population's mean scores: a
    /// score at or above its mean is high (R high = recent).
    pub fn of(scores: (u8, u8, u8), means: (f64, f64, f64)) -> Self {
        let high = |score: u8, mean: f64| f64::from(score) >= mean;
        match (
            high(scores.0, means.0),
            high(scores.1, means.1),
            high(scores.2, means.2),
        ) {
            (true, true, true) => Self::Champion,
            (true, false, true) => Self::PotentialLoyalist,
            (false, true, true) => Self::AtRiskLoyal,
            (false, false, true) => Self::CannotLose,
            (true, true, false) => Self::LoyalLowSpend,
            (true, false, false) => Self::NewLowSpend,
            (false, true, false) => Self::HibernatingFrequent,
            (false, false, false) => Self::LostLowValue,
        }
    }
}

/// One member's RFM figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RfmInput {
    pub recency_days: i64,
    pub frequency: i64,
    pub monetary: i64,
}

/// Scores and segment of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmScore {
    pub r: u8,
    pub f: u8,
    pub m: u8,
    pub segment: Segment,
}

/// Scores every member against the population and segments them; also returns
/// the mean scores.
pub fn rfm(population: &[RfmInput]) -> (Vec<RfmScore>, (f64, f64, f64)) {
    let r = quintile_scores(
        &population.iter().map(|p| p.recency_days as f64).collect::<Vec<_>>(),
        false,
    );
    let f = quintile_scores(&population.iter().map(|p| p.frequency as f64).collect::<Vec<_>>(), true);
    let m = quintile_scores(&population.iter().map(|p| p.monetary as f64).collect::<Vec<_>>(), true);
    let mean = |s: &[u8]| ratio(s.iter().map(|x| f64::from(*x)).sum(), s.len() as f64);
    let means = (mean(&r), mean(&f), mean(&m));
    let scores = (0..population.len())
        .map(|i| RfmScore {
            r: r[i],
            f: f[i],
            m: m[i],
            segment: Segment::of((r[i], f[i], m[i]), means),
        })
        .collect();
    (scores, means)
}

/// The member layers of the pyramid by their upper edge, in basis points of the
/// ranked members.
pub const PYRAMID_LAYERS: [(&str, u64); 6] = [
    ("top_2", 200),
    ("2_5", 500),
    ("5_10", 1_000),
    ("10_15", 1_500),
    ("15_20", 2_000),
    ("20_100", 10_000),
];

/// The layer index of each rank (0 = the top spender) among `n` ranked members:
/// the first layer whose edge count `ceil(n x edge)` exceeds the rank. Integer
/// arithmetic, so 5% of 100 is exactly 5 members.
pub fn pyramid_layer(rank: usize, n: usize) -> usize {
    let n = n as u64;
    PYRAMID_LAYERS
        .iter()
        .position(|(_, bp)| (rank as u64) < (n * bp).div_ceil(10_000))
        .unwrap_or(PYRAMID_LAYERS.len() - 1)
}

/// NPS figures of recommend answers 0-10 (others are not answers and are left out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nps {
    pub respondents: i64,
    pub promoters: i64,
    pub detractors: i64,
    pub score: f64,
}

/// NPS = (promoters - detractors) / respondents x 100; promoters answer 9-10,
/// detractors 0-6.
pub fn nps(promoters: i64, detractors: i64, respondents: i64) -> Nps {
    Nps {
        respondents,
        promoters,
        detractors,
        score: ratio((promoters - detractors) as f64, respondents as f64) * 100.0,
    }
}

/// Whether a recommend answer is a promoter's (9-10) or a detractor's (0-6); `None`
/// for a passive (7-8) or an answer out of range.
pub fn nps_class(score: i32) -> Option<bool> {
    match score {
        9..=10 => Some(true),
        0..=6 => Some(false),
        _ => None,
    }
}

/// Customer lifetime value: AOV x purchases per year x lifetime years x margin.
pub fn clv(aov: f64, purchases_per_year: f64, lifetime_years: f64, gross_margin: f64) -> f64 {
    aov * purchases_per_year * lifetime_years * gross_margin
}

/// Effective CAC = CAC / (1 - return rate); 0 when every sale came back (no
/// customer kept at any cost).
pub fn effective_cac(cac: f64, return_rate: f64) -> f64 {
    if return_rate >= 1.0 {
        0.0
    } else {
        cac / (1.0 - return_rate.max(0.0))
    }
}

/// Mean days between purchases of ascending purchase times (seconds); `None` with
/// fewer than two.
pub fn purchase_cycle_days(times: &[i64]) -> Option<f64> {
    match (times.first(), times.last()) {
        (Some(first), Some(last)) if times.len() >= 2 => {
            Some((last - first) as f64 / super::DAY as f64 / (times.len() - 1) as f64)
        }
        _ => None,
    }
}

/// Overdue: the days since the last purchase exceed the cycle x `factor`.
pub fn is_overdue(days_since_last: f64, cycle_days: f64, factor: f64) -> bool {
    cycle_days > 0.0 && days_since_last > cycle_days * factor
}

/// The predicted tag of a member likely to churn.
pub const LIKELY_TO_CHURN: &str = "likely_to_churn";

/// The tags predicted for a member from its purchase times (ascending, seconds) at
/// `as_of`: `likely_to_churn` when the member is overdue ([`is_overdue`]: the days
/// since the last purchase exceed the member's own purchase cycle x `factor`), so
/// only members with two or more purchases can be predicted to churn.
pub fn predicted_tags(times: &[i64], as_of: i64, factor: f64) -> Vec<&'static str> {
    let (Some(cycle), Some(last)) = (purchase_cycle_days(times), times.last()) else {
        return Vec::new();
    };
    let since = (as_of - last) as f64 / super::DAY as f64;
    if is_overdue(since, cycle, factor) {
        vec![LIKELY_TO_CHURN]
    } else {
        Vec::new()
    }
}

/// Retention of one cohort: `bought[k]` customers of the `size` bought in month
/// M+k+1.
pub fn retention(size: i64, bought: &[i64]) -> Vec<f64> {
    bought.iter().map(|b| ratio(*b as f64, size as f64)).collect()
}

/// SKU flags of a store: a SKU whose rate (try-on or touch) ranks in the top
/// `top_share` of the SKUs with any (at least one SKU) while its conversion is below
/// `low_factor` x the average conversion of those SKUs. `(rate, conversion)` per SKU.
pub fn flags(skus: &[(f64, f64)], top_share: f64, low_factor: f64) -> Vec<bool> {
    let active: Vec<&(f64, f64)> = skus.iter().filter(|(rate, _)| *rate > 0.0).collect();
    if active.is_empty() {
        return vec![false; skus.len()];
    }
    let mut rates: Vec<f64> = active.iter().map(|(r, _)| *r).collect();
    rates.sort_by(|a, b| b.total_cmp(a));
    // The small allowance keeps 10 x 0.1 at one SKU whatever the rounding.
    let top = ((rates.len() as f64 * top_share - 1e-9).ceil() as usize).clamp(1, rates.len());
    let threshold = rates[top - 1];
    let average = ratio(active.iter().map(|(_, c)| *c).sum(), active.len() as f64);
    skus.iter()
        .map(|(rate, conversion)| *rate > 0.0 && *rate >= threshold && *conversion < low_factor * average)
        .collect()
}

/// The median (mean of the two middle values for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Display class of a product against its category's medians: a figure at or
/// above the median is high. `A` high click-through and high sales, `B` low
/// click-through and high sales, `C` high click-through and low sales, `D` both low.
pub fn product_class(ctr: f64, units: f64, median_ctr: f64, median_units: f64) -> &'static str {
    match (ctr >= median_ctr, units >= median_units) {
        (true, true) => "A",
        (false, true) => "B",
        (true, false) => "C",
        (false, false) => "D",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_past_its_cycle_times_the_factor_is_likely_to_churn() {
        let d = super::super::DAY;
        // Purchases on days 0, 10, 20: a 10-day cycle; factor 1.5 -> 15 days.
        let times = [0, 10 * d, 20 * d];
        assert!(
            predicted_tags(&times, 35 * d, 1.5).is_empty(),
            "exactly 15 days is not past it"
        );
        assert_eq!(predicted_tags(&times, 35 * d + 1, 1.5), vec![LIKELY_TO_CHURN]);
        assert!(predicted_tags(&times, 35 * d + 1, 2.0).is_empty());
        // One purchase has no cycle: never predicted.
        assert!(predicted_tags(&[0], 400 * d, 1.5).is_empty());
        assert!(predicted_tags(&[], 400 * d, 1.5).is_empty());
    }

    #[test]
    fn quintile_edges_split_ten_values_two_per_score() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quintile_scores(&values, true), vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        // Recency: the fewest days score 5.
        assert_eq!(quintile_scores(&values, false), vec![5, 5, 4, 4, 3, 3, 2, 2, 1, 1]);
        // Five values, one per score.
        assert_eq!(
            quintile_scores(&[50.0, 10.0, 40.0, 20.0, 30.0], true),
            vec![5, 1, 4, 2, 3]
        );
    }

    #[test]
    fn ties_share_the_lowest_score_of_their_ranks() {
        // Four 5s rank 1..4 after the 1: below = 1 for each, 1 + 5*1/5 = 2.
        assert_eq!(quintile_scores(&[5.0, 5.0, 5.0, 5.0, 1.0], true), vec![2, 2, 2, 2, 1]);
        // All equal: nothing is below anyone.
        assert_eq!(quintile_scores(&[3.0, 3.0, 3.0], true), vec![1, 1, 1]);
        // Seven values, tie in the middle: below = 0,1,2,2,2,5,6 -> 1+5b/7.
        let v = [1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0];
        assert_eq!(quintile_scores(&v, true), vec![1, 1, 2, 2, 2, 4, 5]);
        assert!(quintile_scores(&[], true).is_empty());
    }

    #[test]
    fn each_of_the_eight_segments_follows_from_high_and_low_scores() {
        let means = (3.0, 3.0, 3.0);
        let cases = [
            ((5, 5, 5), Segment::Champion),
            ((4, 1, 3), Segment::PotentialLoyalist),
            ((2, 3, 5), Segment::AtRiskLoyal),
            ((1, 2, 4), Segment::CannotLose),
            ((3, 3, 2), Segment::LoyalLowSpend),
            ((5, 1, 1), Segment::NewLowSpend),
            ((1, 5, 2), Segment::HibernatingFrequent),
            ((1, 1, 1), Segment::LostLowValue),
        ];
        for (scores, expected) in cases {
            assert_eq!(Segment::of(scores, means), expected, "{scores:?}");
            assert_eq!(Segment::parse(expected.as_str()), Some(expected));
        }
        // 2.9 against a mean of 3.0 is low; the mean itself is high.
        assert_eq!(Segment::of((3, 3, 3), (3.0, 3.1, 3.0)), Segment::PotentialLoyalist);
    }

    #[test]
    fn rfm_scores_a_population_by_hand() {
        // Five members: recency 1..5 days, frequency 5..1, spend 10,20,30,40,50.
        let pop: Vec<RfmInput> = (0..5)
            .map(|i| RfmInput {
                recency_days: i + 1,
                frequency: 5 - i,
                monetary: 10 * (i + 1),
            })
            .collect();
        let (scores, means) = rfm(&pop);
        assert_eq!(means, (3.0, 3.0, 3.0));
        let got: Vec<(u8, u8, u8)> = scores.iter().map(|s| (s.r, s.f, s.m)).collect();
        assert_eq!(got, vec![(5, 5, 1), (4, 4, 2), (3, 3, 3), (2, 2, 4), (1, 1, 5)]);
        let segs: Vec<Segment> = scores.iter().map(|s| s.segment).collect();
        assert_eq!(
            segs,
            vec![
                Segment::LoyalLowSpend,
                Segment::LoyalLowSpend,
                Segment::Champion,
                Segment::CannotLose,
                Segment::CannotLose
            ]
        );
    }

    #[test]
    fn pyramid_bands_of_100_and_of_10_members() {
        let bands = |n: usize| {
            let mut count = [0usize; 6];
            for rank in 0..n {
                count[pyramid_layer(rank, n)] += 1;
            }
            count
        };
        // 100 members: 2, 3, 5, 5, 5, 80.
        assert_eq!(bands(100), [2, 3, 5, 5, 5, 80]);
        // 10 members: ceil edges 1,1,1,2,2,10 -> 1, 0, 0, 1, 0, 8.
        assert_eq!(bands(10), [1, 0, 0, 1, 0, 8]);
        // 1 member is the top.
        assert_eq!(bands(1), [1, 0, 0, 0, 0, 0]);
        // 1000 members: 20, 30, 50, 50, 50, 800.
        assert_eq!(bands(1000), [20, 30, 50, 50, 50, 800]);
    }

    #[test]
    fn nps_counts_9_and_10_as_promoters_0_to_6_as_detractors() {
        let answers = [0, 6, 7, 8, 9, 10];
        let classes: Vec<Option<bool>> = answers.iter().map(|a| nps_class(*a)).collect();
        assert_eq!(
            classes,
            vec![Some(false), Some(false), None, None, Some(true), Some(true)]
        );
        let promoters = classes.iter().filter(|c| **c == Some(true)).count() as i64;
        let detractors = classes.iter().filter(|c| **c == Some(false)).count() as i64;
        // (2 - 2) / 6 = 0.
        assert_eq!(nps(promoters, detractors, 6).score, 0.0);
        // 3 promoters, 1 detractor, 1 passive: (3-1)/5*100 = 40.
        assert!((nps(3, 1, 5).score - 40.0).abs() < 1e-9);
        assert_eq!(nps(0, 0, 0).score, 0.0);
        assert_eq!(nps_class(11), None);
        assert_eq!(nps_class(-1), None);
    }

    #[test]
    fn clv_and_effective_cac_by_hand() {
        // AOV 50.00, 4 a year, 3 years, 40% margin = 240.00.
        assert!((clv(5_000.0, 4.0, 3.0, 0.4) - 24_000.0).abs() < 1e-9);
        // CAC 60.00 with 20% returns: 75.00.
        assert!((effective_cac(6_000.0, 0.2) - 7_500.0).abs() < 1e-9);
        assert_eq!(effective_cac(6_000.0, 0.0), 6_000.0);
        assert_eq!(effective_cac(6_000.0, 1.0), 0.0);
    }

    #[test]
    fn rates_growth_and_cycle_by_hand() {
        assert_eq!(ratio(30.0, 120.0), 0.25);
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert!((growth(120.0, 100.0) - 0.2).abs() < 1e-12);
        assert!((growth(80.0, 100.0) + 0.2).abs() < 1e-12);
        assert_eq!(growth(5.0, 0.0), 0.0);
        let day = crate::domain::DAY;
        // Purchases on days 0, 10, 40: (40 - 0) / 2 = 20 days.
        assert_eq!(purchase_cycle_days(&[0, 10 * day, 40 * day]), Some(20.0));
        assert_eq!(purchase_cycle_days(&[5]), None);
        // Cycle 20, factor 1.5: overdue after 30 days, not at 30.
        assert!(!is_overdue(30.0, 20.0, 1.5));
        assert!(is_overdue(30.5, 20.0, 1.5));
        assert!(!is_overdue(100.0, 0.0, 1.5));
        assert_eq!(retention(4, &[2, 1, 0]), vec![0.5, 0.25, 0.0]);
        assert!(retention(0, &[0]).iter().all(|r| *r == 0.0));
    }

    #[test]
    fn flags_take_the_top_decile_with_half_the_average_conversion() {
        // Ten SKUs with rates 0.01..0.10; top 10% = the 0.10 one.
        let mut skus: Vec<(f64, f64)> = (1..=10).map(|i| (f64::from(i) / 100.0, 0.5)).collect();
        // Its conversion 0.05; average = (9 x 0.5 + 0.05) / 10 = 0.455; half 0.2275.
        skus[9].1 = 0.05;
        let f = flags(&skus, 0.1, 0.5);
        assert_eq!(f.iter().filter(|x| **x).count(), 1);
        assert!(f[9]);
        // The same conversion on a SKU outside the top decile is not flagged.
        let mut skus2 = skus.clone();
        skus2[9].1 = 0.5;
        skus2[3].1 = 0.05;
        assert!(flags(&skus2, 0.1, 0.5).iter().all(|x| !x));
        // A top SKU converting at exactly half the average is not below it.
        let pair = [(0.9, 0.25), (0.1, 0.75)];
        // average 0.5, half 0.25: 0.25 is not below.
        assert_eq!(flags(&pair, 0.1, 0.5), vec![false, false]);
        assert_eq!(flags(&[(0.9, 0.2), (0.1, 0.8)], 0.1, 0.5), vec![true, false]);
        // SKUs without any try-on are never flagged.
        assert_eq!(flags(&[(0.0, 0.0)], 0.1, 0.5), vec![false]);
    }

    #[test]
    fn classes_by_category_median() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        // Category: ctr 0.1, 0.2, 0.3, 0.4 (median 0.25); units 10, 40, 20, 30 (median 25).
        let ctr = [0.1, 0.2, 0.3, 0.4];
        let units = [10.0, 40.0, 20.0, 30.0];
        let (mc, mu) = (median(&ctr), median(&units));
        assert_eq!((mc, mu), (0.25, 25.0));
        let classes: Vec<&str> = (0..4).map(|i| product_class(ctr[i], units[i], mc, mu)).collect();
        assert_eq!(classes, vec!["D", "B", "C", "A"]);
        // At the median is high.
        assert_eq!(product_class(0.25, 25.0, 0.25, 25.0), "A");
    }
}

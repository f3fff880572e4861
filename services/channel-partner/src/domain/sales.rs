//! The sales side's rules, without I/O: normalised customer keys (deal locks),
//! the MAN qualification rule, the choice of the partner a lead is offered to, and
//! the pipeline's stages and report.

use chrono::{DateTime, Utc};

/// What a deal lock protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Customer,
    Opportunity,
    Order,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Opportunity => "opportunity",
            Self::Order => "order",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Customer, Self::Opportunity, Self::Order]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

/// Where a deal lock is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Active,
    Released,
    Expired,
}

impl LockState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Active, Self::Released, Self::Expired]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

/// Lower case, letters and digits only, every other run of characters one space,
/// trimmed: "  ACME  Pumps, Ltd." and "acme pumps ltd" are the same.
pub fn normalise_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut gap = false;
    for c in raw.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// Upper case, letters and digits only: "de 123.456-789" is "DE123456789".
pub fn normalise_tax_id(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_uppercase)
        .collect()
}

/// A customer's normalised keys: name + region always, the tax id when given.
/// Two customers are the same when any key is equal.
pub fn customer_keys(name: &str, region: &str, tax_id: &str) -> Vec<String> {
    let mut keys = vec![format!("name:{}|{}", normalise_text(name), normalise_text(region))];
    let tax = normalise_tax_id(tax_id);
    if !tax.is_empty() {
        keys.push(format!("tax:{tax}"));
    }
    keys
}

/// The key of an opportunity or order reference (a customer has none of its own).
pub fn subject_key(kind: SubjectKind, reference: &str) -> Option<String> {
    match kind {
        SubjectKind::Customer => None,
        k => Some(format!("{}:{}", k.as_str(), reference.trim())),
    }
}

/// A customer's financial trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    Positive,
    Stable,
    Negative,
}

impl Trend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Stable => "stable",
            Self::Negative => "negative",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Positive, Self::Stable, Self::Negative]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }

    fn adjustment(self) -> i64 {
        match self {
            Self::Positive => 1,
            Self::Stable => 0,
            Self::Negative => -1,
        }
    }
}

/// One billion major units, in minor units of a currency with `minor_exponent`
/// digits.
pub fn billion_minor(minor_exponent: u32) -> i64 {
    1_000_000_000_i64.saturating_mul(10_i64.saturating_pow(minor_exponent))
}

/// The inputs of the MAN rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManInputs {
    /// Annual budget in minor units, not negative.
    pub annual_budget_minor: i64,
    /// Earmarked special budget in minor units, not negative.
    pub special_budget_minor: i64,
    pub trend: Trend,
    /// 1-5.
    pub authority: u8,
    /// 1-5.
    pub need: u8,
}

/// The MAN scores; the total in tenths (0.4 M + 0.3 A + 0.3 N, exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManScore {
    pub money: u8,
    pub authority: u8,
    pub need: u8,
    pub total_tenths: u32,
}

impl ManScore {
    /// "3.4".
    pub fn total_text(&self) -> String {
        format!("{}.{}", self.total_tenths / 10, self.total_tenths % 10)
    }
}

/// The money score: one point per started billion (major units) of the annual
/// budget plus the special budget (0 for no budget), then +1 for a positive
/// trend, -1 for a negative one, clamped to 1-5.
pub fn money_score(annual_budget_minor: i64, special_budget_minor: i64, trend: Trend, minor_exponent: u32) -> u8 {
    let budget = i128::from(annual_budget_minor.max(0)) + i128::from(special_budget_minor.max(0));
    let billion = i128::from(billion_minor(minor_exponent));
    // Each started billion counts: round up.
    let billions = (budget + billion - 1) / billion;
    let score = billions + i128::from(trend.adjustment());
    // Clamped to [1, 5]; in range, so the cast is exact.
    score.clamp(1, 5) as u8
}

/// The MAN rule. Authority and need are clamped to 1-5 (callers check them).
pub fn man_score(inputs: &ManInputs, minor_exponent: u32) -> ManScore {
    let money = money_score(
        inputs.annual_budget_minor,
        inputs.special_budget_minor,
        inputs.trend,
        minor_exponent,
    );
    let authority = inputs.authority.clamp(1, 5);
    let need = inputs.need.clamp(1, 5);
    // Integers in tenths: 4 M + 3 A + 3 N, exact to one decimal.
    let total_tenths = 4 * u32::from(money) + 3 * u32::from(authority) + 3 * u32::from(need);
    ManScore {
        money,
        authority,
        need,
        total_tenths,
    }
}

/// Leads in ranking order: higher total first, ties the earlier lead first.
pub fn rank<T>(leads: &mut [T], key: impl Fn(&T) -> (u32, DateTime<Utc>, String)) {
    leads.sort_by(|a, b| {
        let (ta, ca, ia) = key(a);
        let (tb, cb, ib) = key(b);
        tb.cmp(&ta).then(ca.cmp(&cb)).then(ia.cmp(&ib))
    });
}

/// A customer's size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerClass {
    S,
    A,
    B,
    C,
}

impl CustomerClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S => "S",
            Self::A => "A",
            Self::B => "B",
            Self::C => "C",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::S, Self::A, Self::B, Self::C]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

/// Where a lead is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadState {
    Unassigned,
    Offered,
    Accepted,
    Won,
    Lost,
}

impl LeadState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unassigned => "unassigned",
            Self::Offered => "offered",
            Self::Accepted => "accepted",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Unassigned, Self::Offered, Self::Accepted, Self::Won, Self::Lost]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

/// A partner that might be offered a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub partner_id: String,
    pub region: String,
    pub level: String,
    /// The level's lead priority (higher first).
    pub priority: u32,
    /// Leads offered to it or accepted by it and not closed.
    pub open_leads: u32,
    /// How many open leads it may hold.
    pub capacity: u32,
}

/// The partner to offer a lead to and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub partner_id: String,
    pub reason: String,
}

/// Chooses the partner a lead in `region` goes to: active candidates (the caller
/// passes only those) of the lead's region that were never offered it
/// (`excluded`) and have room (open leads under capacity), by level priority
/// (highest first), then fewest open leads, then partner id. `None` when no
/// candidate is eligible. The reason says why this partner.
pub fn choose_partner(region: &str, candidates: &[Candidate], excluded: &[String]) -> Option<Choice> {
    let region_key = normalise_text(region);
    let mut eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| normalise_text(&c.region) == region_key)
        .filter(|c| !excluded.contains(&c.partner_id))
        .filter(|c| c.open_leads < c.capacity)
        .collect();
    eligible.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.open_leads.cmp(&b.open_leads))
            .then(a.partner_id.cmp(&b.partner_id))
    });
    let first = eligible.first()?;
    Some(Choice {
        partner_id: first.partner_id.clone(),
        reason: format!(
            "region {}; level {} (lead priority {}); {} of {} open leads; first of {} eligible partner(s); {} excluded after earlier offers",
            first.region,
            first.level,
            first.priority,
            first.open_leads,
            first.capacity,
            eligible.len(),
            excluded.len()
        ),
    })
}

/// A pipeline stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Identified,
    Proposed,
    Confirmed,
    Understood,
    Negotiating,
    Won,
    Lost,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Identified,
        Stage::Proposed,
        Stage::Confirmed,
        Stage::Understood,
        Stage::Negotiating,
        Stage::Won,
        Stage::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identified => "identified",
            Self::Proposed => "proposed",
            Self::Confirmed => "confirmed",
            Self::Understood => "understood",
            Self::Negotiating => "negotiating",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Won | Self::Lost)
    }

    /// The stage after this one in the funnel (won after negotiating).
    pub fn next(self) -> Option<Stage> {
        match self {
            Self::Identified => Some(Self::Proposed),
            Self::Proposed => Some(Self::Confirmed),
            Self::Confirmed => Some(Self::Understood),
            Self::Understood => Some(Self::Negotiating),
            Self::Negotiating => Some(Self::Won),
            Self::Won | Self::Lost => None,
        }
    }

    /// Whether an opportunity may move from this stage to `to`: one stage forward,
    /// or to lost from any open stage.
    pub fn may_move_to(self, to: Stage) -> bool {
        !self.is_final() && (to == Stage::Lost || self.next() == Some(to))
    }
}

/// One stage change of an opportunity, as the report reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEvent {
    pub opportunity_id: String,
    pub to: Stage,
    pub at: DateTime<Utc>,
}

/// One stage's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageLine {
    pub stage: Stage,
    pub reached: i64,
    pub current: i64,
    /// Of those that reached it, the share that reached the next stage, in basis
    /// points (0 when none reached it, or for won and lost).
    pub conversion_to_next_bp: i64,
    pub completed_stays: i64,
    pub mean_seconds: i64,
}

/// Conversion between stages and time in stage from the stage changes of a set of
/// opportunities (any order; each opportunity's changes are taken by time, its
/// creation at identified included).
pub fn pipeline_report(events: &[StageEvent]) -> Vec<StageLine> {
    let mut by_opportunity: std::collections::BTreeMap<&str, Vec<&StageEvent>> = std::collections::BTreeMap::new();
    for e in events {
        by_opportunity.entry(e.opportunity_id.as_str()).or_default().push(e);
    }
    let index = |s: Stage| Stage::ALL.iter().position(|x| *x == s).unwrap_or(0);
    let mut reached = [0_i64; 7];
    let mut current = [0_i64; 7];
    let mut stays = [0_i64; 7];
    let mut seconds = [0_i64; 7];
    for changes in by_opportunity.values_mut() {
        changes.sort_by_key(|e| e.at);
        let mut seen = [false; 7];
        for (i, e) in changes.iter().enumerate() {
            let s = index(e.to);
            seen[s] = true;
            if let Some(next) = changes.get(i + 1) {
                stays[s] += 1;
                seconds[s] += (next.at - e.at).num_seconds();
            } else {
                current[s] += 1;
            }
        }
        for (r, s) in reached.iter_mut().zip(seen) {
            *r += i64::from(s);
        }
    }
    Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let conversion = match stage.next() {
                Some(next) if reached[i] > 0 => reached[index(next)] * 10_000 / reached[i],
                _ => 0,
            };
            StageLine {
                stage: *stage,
                reached: reached[i],
                current: current[i],
                conversion_to_next_bp: conversion,
                completed_stays: stays[i],
                mean_seconds: if stays[i] > 0 { seconds[i] / stays[i] } else { 0 },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const B: i64 = 100_000_000_000; // one billion in cents

    #[test]
    fn money_score_counts_each_started_billion() {
        use Trend::*;
        // (annual, special, trend, expected)
        let cases: &[(i64, i64, Trend, u8)] = &[
            (0, 0, Stable, 1),               // no budget: clamped up to 1
            (0, 0, Negative, 1),             // 0 - 1 clamped to 1
            (0, 0, Positive, 1),             // 0 + 1
            (1, 0, Stable, 1),               // one cent starts the first billion
            (B, 0, Stable, 1),               // exactly one billion
            (B + 1, 0, Stable, 2),           // one billion and one cent: the second started
            (B + 1, 0, Negative, 1),         // 2 - 1
            (B + 1, 0, Positive, 3),         // 2 + 1
            (B, 0, Negative, 1),             // 1 - 1 = 0, clamped to 1
            (2 * B, 0, Positive, 3),         // 2 + 1
            (B, 1, Stable, 2),               // the special budget adds to the annual one
            (0, B + 1, Stable, 2),           // special budget alone
            (B / 2, B / 2, Stable, 1),       // two halves make exactly one
            (3 * B, B, Stable, 4),           // 4 billions
            (3 * B, B, Positive, 5),         // 4 + 1
            (4 * B, 1, Positive, 5),         // 5 + 1 clamped to 5
            (9 * B, 0, Negative, 5),         // 9 - 1 clamped to 5
            (5 * B, 0, Negative, 4),         // 5 - 1
            (i64::MAX, i64::MAX, Stable, 5), // no overflow
        ];
        for (annual, special, trend, want) in cases {
            assert_eq!(
                money_score(*annual, *special, *trend, 2),
                *want,
                "annual {annual} special {special} {trend:?}"
            );
        }
        // The billion is in major units: with no minor digits one unit over is the second.
        assert_eq!(money_score(1_000_000_000, 0, Trend::Stable, 0), 1);
        assert_eq!(money_score(1_000_000_001, 0, Trend::Stable, 0), 2);
    }

    #[test]
    fn man_total_is_exact_to_one_decimal() {
        let inputs = |annual, trend, authority, need| ManInputs {
            annual_budget_minor: annual,
            special_budget_minor: 0,
            trend,
            authority,
            need,
        };
        // (inputs, money, total tenths, text)
        let cases = [
            (inputs(B, Trend::Stable, 1, 1), 1, 10, "1.0"),
            (inputs(B + 1, Trend::Stable, 3, 4), 2, 8 + 9 + 12, "2.9"),
            (inputs(4 * B, Trend::Positive, 5, 5), 5, 50, "5.0"),
            (inputs(2 * B, Trend::Negative, 2, 5), 1, 4 + 6 + 15, "2.5"),
            (inputs(3 * B, Trend::Stable, 4, 2), 3, 12 + 12 + 6, "3.0"),
            (inputs(3 * B, Trend::Positive, 1, 2), 4, 16 + 3 + 6, "2.5"),
        ];
        for (i, want_money, want_tenths, want_text) in cases {
            let s = man_score(&i, 2);
            assert_eq!(s.money, want_money, "{i:?}");
            assert_eq!(s.total_tenths, want_tenths, "{i:?}");
            assert_eq!(s.total_text(), want_text, "{i:?}");
            // The same total computed as 0.4 M + 0.3 A + 0.3 N in floating point, rounded to one decimal.
            let f = 0.4 * f64::from(s.money) + 0.3 * f64::from(s.authority) + 0.3 * f64::from(s.need);
            assert_eq!(format!("{f:.1}"), want_text);
        }
    }

    #[test]
    fn leads_rank_by_total_then_earlier_first() {
        let t = |h| Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap();
        let mut leads = vec![(25, t(3), "c"), (30, t(5), "b"), (25, t(1), "d"), (30, t(2), "a")];
        rank(&mut leads, |l| (l.0, l.1, l.2.to_owned()));
        let order: Vec<&str> = leads.iter().map(|l| l.2).collect();
        assert_eq!(order, ["a", "b", "d", "c"]);
    }

    #[test]
    fn customer_keys_are_normalised() {
        assert_eq!(
            customer_keys("  ACME  Pumps, Ltd.", "North", ""),
            customer_keys("acme pumps ltd", " north ", "")
        );
        assert_ne!(
            customer_keys("Acme Pumps", "north", ""),
            customer_keys("Acme Pumps", "south", "")
        );
        assert_eq!(customer_keys("x", "y", "de 123.456-789")[1], "tax:DE123456789");
        assert_eq!(customer_keys("x", "y", " - ").len(), 1);
    }

    fn candidate(id: &str, region: &str, priority: u32, open: u32, capacity: u32) -> Candidate {
        Candidate {
            partner_id: id.into(),
            region: region.into(),
            level: format!("l{priority}"),
            priority,
            open_leads: open,
            capacity,
        }
    }

    #[test]
    fn leads_go_by_region_priority_load_and_capacity() {
        let cs = vec![
            candidate("a", "north", 1, 0, 5),
            candidate("b", "north", 3, 2, 5),
            candidate("c", "north", 3, 1, 5),
            candidate("d", "south", 4, 0, 5),
            candidate("e", "north", 4, 5, 5),
        ];
        // e is full, d in another region; b and c share priority 3, c has fewer open.
        assert_eq!(choose_partner("North", &cs, &[]).unwrap().partner_id, "c");
        // c declined: b; then a; then nobody.
        assert_eq!(choose_partner("north", &cs, &["c".into()]).unwrap().partner_id, "b");
        assert_eq!(
            choose_partner("north", &cs, &["c".into(), "b".into()])
                .unwrap()
                .partner_id,
            "a"
        );
        assert_eq!(
            choose_partner("north", &cs, &["c".into(), "b".into(), "a".into()]),
            None
        );
        let why = choose_partner("north", &cs, &[]).unwrap().reason;
        assert!(
            why.contains("region north") && why.contains("lead priority 3") && why.contains("1 of 5"),
            "{why}"
        );
    }

    #[test]
    fn stages_move_one_forward_or_to_lost() {
        use Stage::*;
        for from in Stage::ALL {
            for to in Stage::ALL {
                let legal = match (from, to) {
                    (Won | Lost, _) => false,
                    (_, Lost) => true,
                    (Identified, Proposed)
                    | (Proposed, Confirmed)
                    | (Confirmed, Understood)
                    | (Understood, Negotiating)
                    | (Negotiating, Won) => true,
                    _ => false,
                };
                assert_eq!(from.may_move_to(to), legal, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn report_counts_conversion_and_time_in_stage() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let at = |h: i64| t0 + chrono::Duration::hours(h);
        let ev = |o: &str, to, h| StageEvent {
            opportunity_id: o.into(),
            to,
            at: at(h),
        };
        let events = vec![
            ev("a", Stage::Identified, 0),
            ev("a", Stage::Proposed, 2),
            ev("a", Stage::Lost, 5),
            ev("b", Stage::Identified, 0),
            ev("b", Stage::Proposed, 4),
            ev("c", Stage::Identified, 1),
        ];
        let r = pipeline_report(&events);
        let line = |s| r.iter().find(|l| l.stage == s).unwrap();
        assert_eq!(line(Stage::Identified).reached, 3);
        assert_eq!(line(Stage::Identified).current, 1);
        assert_eq!(line(Stage::Identified).conversion_to_next_bp, 2 * 10_000 / 3);
        assert_eq!(line(Stage::Identified).completed_stays, 2);
        assert_eq!(line(Stage::Identified).mean_seconds, 3 * 3600);
        assert_eq!(line(Stage::Proposed).reached, 2);
        assert_eq!(line(Stage::Proposed).current, 1);
        assert_eq!(line(Stage::Proposed).conversion_to_next_bp, 0);
        assert_eq!(line(Stage::Proposed).mean_seconds, 3 * 3600);
        assert_eq!(line(Stage::Lost).current, 1);
    }
}

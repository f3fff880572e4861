//! Engagement (docs/domain.md, Engagement): tag categories and durability, the tags
//! membership computes from purchases, segment rules and their evaluation, and the
//! campaign rules (lifecycle, control group, contact limits, message rendering).
//! Everything here is pure: "now" is an explicit `as_of`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lifecycle::LifecycleState;

/// The categories a tag belongs to, named by the first segment of its path
/// (`interest/outdoor/hiking` is an interest tag). Other first segments are
/// uncategorised. `predicted` tags are analytics' predictions (`MemberScored`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagCategory {
    Demographic,
    Interest,
    Social,
    Consumption,
    Predicted,
}

impl TagCategory {
    pub(crate) fn of(path: &str) -> Option<Self> {
        match path.split('/').next().unwrap_or_default() {
            "demographic" => Some(Self::Demographic),
            "interest" => Some(Self::Interest),
            "social" => Some(Self::Social),
            "consumption" => Some(Self::Consumption),
            "predicted" => Some(Self::Predicted),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Demographic => "demographic",
            Self::Interest => "interest",
            Self::Social => "social",
            Self::Consumption => "consumption",
            Self::Predicted => "predicted",
        }
    }
}

/// The eight RFM segments analytics scores members in (docs/domain.md, RFM).
pub(crate) const RFM_SEGMENTS: [&str; 8] = [
    "champion",
    "potential_loyalist",
    "at_risk_loyal",
    "cannot_lose",
    "loyal_low_spend",
    "new_low_spend",
    "hibernating_frequent",
    "lost_low_value",
];

/// A scored member holds at most this many predicted tags; further ones in an
/// event are passed over.
pub(crate) const MAX_PREDICTED_TAGS: usize = 8;

/// The tag path of analytics' prediction `name` (`predicted/likely_to_churn`), if
/// the name is one segment of a tag path.
pub(crate) fn predicted_tag_path(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    ok.then(|| format!("{}/{name}", TagCategory::Predicted.as_str()))
}

/// Whether a tag with expiry `expires_at` still holds at `as_of` (a tag is true
/// before its expiry, and forever without one).
pub(crate) fn tag_holds(expires_at: Option<DateTime<Utc>>, as_of: DateTime<Utc>) -> bool {
    expires_at.is_none_or(|end| as_of < end)
}

/// The path of the computed tag naming the channel a member buys through most.
pub(crate) const PREFERRED_CHANNEL: &str = "consumption/preferred_channel";
/// The path of the computed tag naming the channel of the latest purchase.
pub(crate) const LAST_CHANNEL: &str = "consumption/last_channel";

/// A paid purchase as the computed tags see it.
#[derive(Debug, Clone)]
pub(crate) struct PaidPurchase {
    pub(crate) at: DateTime<Utc>,
    pub(crate) channel: String,
}

/// The tags computed from a member's paid purchases: the preferred channel (most
/// purchases; a tie goes to the channel bought through most recently) and the channel
/// of the latest purchase. Purchases without a channel count for neither.
pub(crate) fn computed_tags(paid: &[PaidPurchase]) -> Vec<(String, String)> {
    let mut counts: BTreeMap<&str, (usize, DateTime<Utc>)> = BTreeMap::new();
    let mut last: Option<&PaidPurchase> = None;
    for p in paid.iter().filter(|p| !p.channel.is_empty()) {
        let e = counts.entry(p.channel.as_str()).or_insert((0, p.at));
        e.0 += 1;
        e.1 = e.1.max(p.at);
        if last.is_none_or(|l| p.at >= l.at) {
            last = Some(p);
        }
    }
    let mut out = Vec::new();
    if let Some((channel, _)) = counts.iter().max_by_key(|(_, (n, at))| (*n, *at)) {
        out.push((PREFERRED_CHANNEL.to_owned(), (*channel).to_owned()));
    }
    if let Some(p) = last {
        out.push((LAST_CHANNEL.to_owned(), p.channel.clone()));
    }
    out
}

/// Rules nest at most this deep.
pub(crate) const MAX_RULE_DEPTH: usize = 8;
/// A rule has at most this many nodes.
pub(crate) const MAX_RULE_NODES: usize = 200;

/// A segment rule: conditions on what membership knows of a member, combined with
/// and/or/not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rule {
    /// Every rule holds (non-empty).
    All(Vec<Rule>),
    /// At least one rule holds (non-empty).
    Any(Vec<Rule>),
    Not(Box<Rule>),
    /// A tag at `path` or below it (`interest` matches `interest/outdoor`), with
    /// `value` when given. Expired tags do not count; computed tags do.
    Tag {
        path: String,
        value: Option<String>,
    },
    Tier(BTreeSet<String>),
    Lifecycle(BTreeSet<LifecycleState>),
    Region(BTreeSet<String>),
    /// Paid purchases within the last `within_days` days (ever when `None`), from
    /// `min` to `max` (inclusive, unbounded when `None`).
    PurchaseCount {
        min: u32,
        max: Option<u32>,
        within_days: Option<u32>,
    },
    /// Days since the latest paid purchase, from `min_days` to `max_days` inclusive.
    /// A member who never bought does not match.
    DaysSinceLastPurchase {
        min_days: u32,
        max_days: Option<u32>,
    },
    /// The RFM segment analytics last scored the member in is one of these
    /// ([`RFM_SEGMENTS`]); an unscored member does not match.
    RfmSegment(BTreeSet<String>),
}

/// What a rule is evaluated against: one member at `as_of`.
#[derive(Debug, Clone)]
pub(crate) struct MemberFacts {
    /// Tags that hold at `as_of` (stored and computed), as (path, value).
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) tier: String,
    pub(crate) lifecycle: LifecycleState,
    pub(crate) region: String,
    /// The RFM segment analytics last scored the member in.
    pub(crate) rfm_segment: Option<String>,
    /// Paid purchase times.
    pub(crate) paid_at: Vec<DateTime<Utc>>,
    pub(crate) as_of: DateTime<Utc>,
}

fn path_under(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

impl Rule {
    pub(crate) fn matches(&self, f: &MemberFacts) -> bool {
        match self {
            Self::All(rules) => rules.iter().all(|r| r.matches(f)),
            Self::Any(rules) => rules.iter().any(|r| r.matches(f)),
            Self::Not(rule) => !rule.matches(f),
            Self::Tag { path, value } => f
                .tags
                .iter()
                .any(|(p, v)| path_under(p, path) && value.as_ref().is_none_or(|want| want == v)),
            Self::Tier(tiers) => tiers.contains(&f.tier),
            Self::Lifecycle(states) => states.contains(&f.lifecycle),
            Self::Region(regions) => regions.contains(&f.region),
            Self::PurchaseCount { min, max, within_days } => {
                let from = within_days.map(|d| f.as_of - Duration::days(i64::from(d)));
                let n = f
                    .paid_at
                    .iter()
                    .filter(|t| **t <= f.as_of && from.is_none_or(|from| **t >= from))
                    .count();
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                n >= *min && max.is_none_or(|max| n <= max)
            }
            Self::DaysSinceLastPurchase { min_days, max_days } => {
                let Some(last) = f.paid_at.iter().filter(|t| **t <= f.as_of).max() else {
                    return false;
                };
                let days = (f.as_of - *last).num_days();
                let days = u32::try_from(days).unwrap_or(u32::MAX);
                days >= *min_days && max_days.is_none_or(|max| days <= max)
            }
            Self::RfmSegment(segments) => f.rfm_segment.as_ref().is_some_and(|s| segments.contains(s)),
        }
    }
}

/// A campaign's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CampaignState {
    Draft,
    Scheduled,
    Running,
    Finished,
    Cancelled,
}

impl CampaignState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(Self::Draft),
            "scheduled" => Some(Self::Scheduled),
            "running" => Some(Self::Running),
            "finished" => Some(Self::Finished),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Whether a campaign may move from `self` to `to`: draft -> scheduled ->
    /// running -> finished, and to cancelled from any state before finished.
    pub(crate) fn may_become(self, to: Self) -> bool {
        use CampaignState::*;
        matches!(
            (self, to),
            (Draft, Scheduled) | (Scheduled, Running) | (Running, Finished) | (Draft | Scheduled | Running, Cancelled)
        )
    }
}

/// What starts a campaign's contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TriggerKind {
    /// Once, at the campaign's send time, to the whole audience.
    Planned,
    /// When a member moves up a tier.
    TierUpgrade,
    /// When a member's purchase is recorded.
    Purchase,
    /// When the periodic run finds a member's lifecycle state changed.
    LifecycleChange,
    /// When analytics finds a member overdue against its own purchase cycle.
    Overdue,
    /// When a member checks in at a store or a partner outlet.
    CheckIn,
    /// When a member views or tries a product.
    Content,
}

impl TriggerKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::TierUpgrade => "tier_upgrade",
            Self::Purchase => "purchase",
            Self::LifecycleChange => "lifecycle_change",
            Self::Overdue => "overdue",
            Self::CheckIn => "check_in",
            Self::Content => "content",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "planned" => Some(Self::Planned),
            "tier_upgrade" => Some(Self::TierUpgrade),
            "purchase" => Some(Self::Purchase),
            "lifecycle_change" => Some(Self::LifecycleChange),
            "overdue" => Some(Self::Overdue),
            "check_in" => Some(Self::CheckIn),
            "content" => Some(Self::Content),
            _ => None,
        }
    }
}

/// Control shares are in basis points; at most half the audience.
pub(crate) const MAX_CONTROL_SHARE_BP: u32 = 5_000;

/// Whether the member belongs to the campaign's control group: a hash of campaign
/// and member below the share, so the draw is random across members, the same
/// every time for one member, and independent between campaigns.
pub(crate) fn in_control_group(campaign_id: &str, member_id: &str, share_bp: u32) -> bool {
    if share_bp == 0 {
        return false;
    }
    let digest = Sha256::digest(format!("{campaign_id}\u{0}{member_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 10_000 < u64::from(share_bp)
}

/// What was decided for one member of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContactOutcome {
    /// Contacted through the campaign's channel.
    Contacted,
    /// In the control group: receives nothing.
    Control,
    /// Over the frequency cap across campaigns for the channel.
    Capped,
    /// The campaign's budget (contacts) is used up.
    OverBudget,
}

impl ContactOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Contacted => "contacted",
            Self::Control => "control",
            Self::Capped => "capped",
            Self::OverBudget => "over_budget",
        }
    }
}

/// Decides for a consented member who was not yet decided for in this campaign.
pub(crate) fn decide_contact(
    in_control: bool,
    recent_contacts_on_channel: u64,
    frequency_cap: u64,
    contacts_so_far: u64,
    budget_contacts: Option<u64>,
) -> ContactOutcome {
    if in_control {
        ContactOutcome::Control
    } else if recent_contacts_on_channel >= frequency_cap {
        ContactOutcome::Capped
    } else if budget_contacts.is_some_and(|b| contacts_so_far >= b) {
        ContactOutcome::OverBudget
    } else {
        ContactOutcome::Contacted
    }
}

/// What a message template may say about the member, without personal data.
#[derive(Debug, Clone, Default)]
pub(crate) struct MessageContext {
    pub(crate) tier: String,
    /// The next tier up; empty at the top.
    pub(crate) next_tier: String,
    /// Qualifying spend still missing for the next tier, in major units with the
    /// currency (`120.50 EUR`); empty at the top.
    pub(crate) distance: String,
    pub(crate) points: i64,
    /// The member's coupon code (coupon campaigns); empty otherwise.
    pub(crate) coupon_code: String,
}

/// The placeholders a template may use.
pub(crate) const PLACEHOLDERS: [&str; 5] = ["{tier}", "{next_tier}", "{distance}", "{points}", "{coupon_code}"];

/// Renders a template, replacing each placeholder.
pub(crate) fn render(template: &str, ctx: &MessageContext) -> String {
    template
        .replace("{tier}", &ctx.tier)
        .replace("{next_tier}", &ctx.next_tier)
        .replace("{distance}", &ctx.distance)
        .replace("{points}", &ctx.points.to_string())
        .replace("{coupon_code}", &ctx.coupon_code)
}

/// Formats minor units as major units with the currency (`12050`, 2 -> `120.50 EUR`).
pub(crate) fn format_money(minor: i64, exponent: u32, currency: &str) -> String {
    if exponent == 0 {
        return format!("{minor} {currency}");
    }
    let scale = 10i64.pow(exponent);
    format!(
        "{}.{:0width$} {currency}",
        minor / scale,
        (minor % scale).abs(),
        width = exponent as usize
    )
}

/// One decided member's purchases in the attribution window after the decision.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attributed {
    /// Paid orders in the window.
    pub(crate) orders: u32,
    /// Paid amounts minus refunds in the window, in minor units.
    pub(crate) revenue_minor: i64,
}

/// A campaign's results: the contacted group against the control group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CampaignReport {
    pub(crate) reached: i64,
    /// Reached members who bought within the attribution window.
    pub(crate) responded: i64,
    /// responded / reached, in basis points (0 when nobody was reached).
    pub(crate) response_rate_bp: i64,
    pub(crate) revenue_minor: i64,
    pub(crate) control: i64,
    pub(crate) control_responded: i64,
    pub(crate) control_response_rate_bp: i64,
    pub(crate) control_revenue_minor: i64,
    /// Revenue of the reached minus what they would have spent at the control
    /// group's revenue per member: `revenue - control_revenue x reached / control`
    /// (the whole revenue without a control group).
    pub(crate) incremental_revenue_minor: i64,
    /// Contacts x cost per contact.
    pub(crate) cost_minor: i64,
    /// (incremental revenue - cost) / cost in basis points; `None` without cost.
    pub(crate) roi_bp: Option<i64>,
}

fn rate_bp(part: i64, whole: i64) -> i64 {
    if whole == 0 {
        0
    } else {
        (i128::from(part) * 10_000 / i128::from(whole)) as i64
    }
}

/// Compares the reached members with the control group (rounded towards zero, in
/// 128-bit intermediates).
pub(crate) fn campaign_report(
    reached: &[Attributed],
    control: &[Attributed],
    cost_per_contact_minor: i64,
) -> CampaignReport {
    let sum = |xs: &[Attributed]| xs.iter().map(|a| i128::from(a.revenue_minor)).sum::<i128>();
    let responded = |xs: &[Attributed]| xs.iter().filter(|a| a.orders > 0).count() as i64;
    let n = reached.len() as i64;
    let c = control.len() as i64;
    let revenue = sum(reached);
    let control_revenue = sum(control);
    let expected = if c == 0 {
        0
    } else {
        control_revenue * i128::from(n) / i128::from(c)
    };
    let incremental = revenue - expected;
    let cost = i128::from(cost_per_contact_minor) * i128::from(n);
    let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    CampaignReport {
        reached: n,
        responded: responded(reached),
        response_rate_bp: rate_bp(responded(reached), n),
        revenue_minor: clamp(revenue),
        control: c,
        control_responded: responded(control),
        control_response_rate_bp: rate_bp(responded(control), c),
        control_revenue_minor: clamp(control_revenue),
        incremental_revenue_minor: clamp(incremental),
        cost_minor: clamp(cost),
        roi_bp: (cost > 0).then(|| clamp((incremental - cost) * 10_000 / cost)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn categories_follow_the_first_segment() {
        assert_eq!(TagCategory::of("interest/outdoor/hiking"), Some(TagCategory::Interest));
        assert_eq!(TagCategory::of("demographic"), Some(TagCategory::Demographic));
        assert_eq!(TagCategory::of("vip"), None);
        assert_eq!(TagCategory::of("interests/x"), None);
    }

    #[test]
    fn a_tag_holds_until_it_expires() {
        assert!(tag_holds(None, at(1)));
        assert!(tag_holds(Some(at(2)), at(1)));
        assert!(!tag_holds(Some(at(2)), at(2)));
        assert!(!tag_holds(Some(at(2)), at(3)));
    }

    #[test]
    fn computed_tags_name_the_preferred_and_the_last_channel() {
        let p = |day, ch: &str| PaidPurchase {
            at: at(day),
            channel: ch.into(),
        };
        let tags = computed_tags(&[
            p(1, "store"),
            p(2, "online"),
            p(3, "store"),
            p(4, "online"),
            p(5, "partner"),
        ]);
        // store and online tie at 2; online was bought through more recently.
        assert_eq!(
            tags,
            vec![
                (PREFERRED_CHANNEL.to_owned(), "online".to_owned()),
                (LAST_CHANNEL.to_owned(), "partner".to_owned())
            ]
        );
        assert!(computed_tags(&[]).is_empty());
        assert!(computed_tags(&[p(1, "")]).is_empty());
    }

    fn facts() -> MemberFacts {
        MemberFacts {
            tags: vec![
                ("interest/outdoor/hiking".into(), String::new()),
                ("consumption/preferred_channel".into(), "online".into()),
            ],
            tier: "silver".into(),
            lifecycle: LifecycleState::NewRepeat,
            region: "DE-BE".into(),
            rfm_segment: Some("at_risk_loyal".into()),
            paid_at: vec![at(1), at(10)],
            as_of: at(20),
        }
    }

    #[test]
    fn conditions_match_what_the_member_is() {
        let f = facts();
        let tag = |p: &str, v: Option<&str>| Rule::Tag {
            path: p.into(),
            value: v.map(str::to_owned),
        };
        assert!(tag("interest", None).matches(&f));
        assert!(tag("interest/outdoor/hiking", None).matches(&f));
        assert!(!tag("interest/out", None).matches(&f));
        assert!(tag("consumption/preferred_channel", Some("online")).matches(&f));
        assert!(!tag("consumption/preferred_channel", Some("store")).matches(&f));
        assert!(Rule::Tier(["silver".to_owned()].into()).matches(&f));
        assert!(!Rule::Tier(["gold".to_owned()].into()).matches(&f));
        assert!(Rule::Lifecycle([LifecycleState::NewRepeat].into()).matches(&f));
        assert!(!Rule::Region(["FR".to_owned()].into()).matches(&f));
        let count = |min, max, within_days| Rule::PurchaseCount { min, max, within_days };
        assert!(count(2, Some(2), None).matches(&f));
        assert!(!count(3, None, None).matches(&f));
        // Only the purchase on the 10th lies within 15 days of the 20th.
        assert!(count(1, Some(1), Some(15)).matches(&f));
        let recency = |min_days, max_days| Rule::DaysSinceLastPurchase { min_days, max_days };
        assert!(recency(10, Some(10)).matches(&f));
        assert!(!recency(11, None).matches(&f));
        assert!(!recency(0, None).matches(&MemberFacts {
            paid_at: vec![],
            ..facts()
        }));
    }

    #[test]
    fn the_rfm_condition_matches_the_scored_segment_only() {
        let f = facts();
        let rfm = |s: &[&str]| Rule::RfmSegment(s.iter().map(|s| (*s).to_owned()).collect());
        assert!(rfm(&["at_risk_loyal"]).matches(&f));
        assert!(rfm(&["champion", "at_risk_loyal"]).matches(&f));
        assert!(!rfm(&["champion", "cannot_lose"]).matches(&f));
        let unscored = MemberFacts {
            rfm_segment: None,
            ..facts()
        };
        assert!(!rfm(&["at_risk_loyal"]).matches(&unscored));
        assert!(Rule::Not(Box::new(rfm(&["at_risk_loyal"]))).matches(&unscored));
    }

    #[test]
    fn predictions_are_tags_of_the_predicted_category() {
        let path = predicted_tag_path("likely_to_churn").unwrap();
        assert_eq!(path, "predicted/likely_to_churn");
        assert_eq!(TagCategory::of(&path), Some(TagCategory::Predicted));
        assert_eq!(predicted_tag_path(""), None);
        assert_eq!(predicted_tag_path("a/b"), None);
        assert_eq!(predicted_tag_path("Churn"), None);
        // A predicted tag matches the tag condition on its path or the category.
        let f = MemberFacts {
            tags: vec![(path, String::new())],
            ..facts()
        };
        let tag = |p: &str| Rule::Tag {
            path: p.into(),
            value: None,
        };
        assert!(tag("predicted/likely_to_churn").matches(&f));
        assert!(tag("predicted").matches(&f));
        assert!(!tag("predicted/likely_to_buy").matches(&f));
    }

    #[test]
    fn campaign_moves_follow_the_lifecycle() {
        use CampaignState::*;
        let all = [Draft, Scheduled, Running, Finished, Cancelled];
        let legal: Vec<(CampaignState, CampaignState)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.may_become(*b))
            .collect();
        assert_eq!(
            legal,
            vec![
                (Draft, Scheduled),
                (Draft, Cancelled),
                (Scheduled, Running),
                (Scheduled, Cancelled),
                (Running, Finished),
                (Running, Cancelled)
            ]
        );
        for s in all {
            assert_eq!(CampaignState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn control_share_is_near_its_setting_and_stable() {
        let share = 2_000;
        let n = 20_000;
        let members: Vec<String> = (0..n).map(|i| format!("m-{i}")).collect();
        let control = members.iter().filter(|m| in_control_group("c-1", m, share)).count();
        let ratio = control as f64 / n as f64;
        assert!((ratio - 0.2).abs() < 0.015, "control share {ratio}");
        for m in &members[..100] {
            assert_eq!(in_control_group("c-1", m, share), in_control_group("c-1", m, share));
        }
        assert_eq!(members.iter().filter(|m| in_control_group("c-1", m, 0)).count(), 0);
        // Another campaign draws another group.
        let other = members
            .iter()
            .filter(|m| in_control_group("c-2", m, share) != in_control_group("c-1", m, share))
            .count();
        assert!(other > n / 10);
    }

    #[test]
    fn contact_decisions() {
        assert_eq!(decide_contact(true, 0, 3, 0, None), ContactOutcome::Control);
        assert_eq!(decide_contact(false, 3, 3, 0, None), ContactOutcome::Capped);
        assert_eq!(decide_contact(false, 2, 3, 5, Some(5)), ContactOutcome::OverBudget);
        assert_eq!(decide_contact(false, 2, 3, 4, Some(5)), ContactOutcome::Contacted);
    }

    #[test]
    fn rendering_fills_placeholders() {
        let ctx = MessageContext {
            tier: "silver".into(),
            next_tier: "gold".into(),
            distance: format_money(12_050, 2, "EUR"),
            points: 50,
            coupon_code: "SPRING-7QK2".into(),
        };
        assert_eq!(
            render("{tier} -> {next_tier}: {distance} to go, {points} points", &ctx),
            "silver -> gold: 120.50 EUR to go, 50 points"
        );
        assert_eq!(render("Your code: {coupon_code}", &ctx), "Your code: SPRING-7QK2");
        assert_eq!(format_money(5, 3, "KWD"), "0.005 KWD");
        assert_eq!(format_money(500, 0, "JPY"), "500 JPY");
    }

    #[test]
    fn a_report_compares_the_reached_with_the_control_group() {
        let bought = |revenue_minor| Attributed {
            orders: 1,
            revenue_minor,
        };
        let none = Attributed::default();
        // 4 reached, 2 bought for 100.00 each; 2 in control, 1 bought for 50.00.
        let r = campaign_report(
            &[bought(10_000), bought(10_000), none, none],
            &[bought(5_000), none],
            1_000,
        );
        assert_eq!((r.reached, r.responded, r.response_rate_bp), (4, 2, 5_000));
        assert_eq!(
            (r.control, r.control_responded, r.control_response_rate_bp),
            (2, 1, 5_000)
        );
        assert_eq!(r.revenue_minor, 20_000);
        // Control spent 25.00 per member: 4 x 25.00 expected without the campaign.
        assert_eq!(r.incremental_revenue_minor, 10_000);
        assert_eq!(r.cost_minor, 4_000);
        // (100.00 - 40.00) / 40.00 = 150 %.
        assert_eq!(r.roi_bp, Some(15_000));
        let empty = campaign_report(&[], &[], 0);
        assert_eq!(empty, CampaignReport::default());
        assert_eq!(campaign_report(&[bought(700)], &[], 0).incremental_revenue_minor, 700);
    }

    fn leaf() -> impl Strategy<Value = Rule> {
        prop_oneof![
            prop::sample::select(vec![
                "interest",
                "interest/outdoor",
                "social",
                "consumption/preferred_channel"
            ])
            .prop_map(|p| Rule::Tag {
                path: p.into(),
                value: None
            }),
            prop::sample::subsequence(vec!["regular", "silver", "gold"], 0..3)
                .prop_map(|t| Rule::Tier(t.into_iter().map(str::to_owned).collect())),
            prop::sample::subsequence(vec!["DE-BE", "FR"], 0..2)
                .prop_map(|r| Rule::Region(r.into_iter().map(str::to_owned).collect())),
            (0u32..4, prop::option::of(0u32..4), prop::option::of(0u32..40))
                .prop_map(|(min, max, within_days)| Rule::PurchaseCount { min, max, within_days }),
            (0u32..30, prop::option::of(0u32..30))
                .prop_map(|(min_days, max_days)| Rule::DaysSinceLastPurchase { min_days, max_days }),
            prop::sample::subsequence(vec!["champion", "at_risk_loyal"], 0..2)
                .prop_map(|s| Rule::RfmSegment(s.into_iter().map(str::to_owned).collect())),
        ]
    }

    fn rule() -> impl Strategy<Value = Rule> {
        leaf().prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..3).prop_map(Rule::All),
                prop::collection::vec(inner.clone(), 1..3).prop_map(Rule::Any),
                inner.prop_map(|r| Rule::Not(Box::new(r))),
            ]
        })
    }

    fn member() -> impl Strategy<Value = MemberFacts> {
        (
            prop::sample::subsequence(
                vec![
                    "interest/outdoor/hiking",
                    "social/influencer",
                    "consumption/preferred_channel",
                ],
                0..3,
            ),
            prop::sample::select(vec!["regular", "silver", "gold"]),
            prop::sample::select(vec!["DE-BE", "FR", ""]),
            prop::collection::vec(1u32..28, 0..4),
            prop::option::of(prop::sample::select(vec![
                "champion",
                "at_risk_loyal",
                "lost_low_value",
            ])),
        )
            .prop_map(|(tags, tier, region, days, rfm)| MemberFacts {
                tags: tags.into_iter().map(|t| (t.to_owned(), String::new())).collect(),
                tier: tier.into(),
                lifecycle: LifecycleState::NewOnce,
                region: region.into(),
                rfm_segment: rfm.map(str::to_owned),
                paid_at: days.into_iter().map(at).collect(),
                as_of: at(28),
            })
    }

    proptest! {
        #[test]
        fn double_negation_is_the_rule(r in rule(), f in member()) {
            prop_assert_eq!(Rule::Not(Box::new(Rule::Not(Box::new(r.clone())))).matches(&f), r.matches(&f));
        }

        #[test]
        fn and_or_laws_hold(a in rule(), b in rule(), c in rule(), f in member()) {
            let not = |r: &Rule| Rule::Not(Box::new(r.clone()));
            // Commutativity.
            prop_assert_eq!(Rule::All(vec![a.clone(), b.clone()]).matches(&f), Rule::All(vec![b.clone(), a.clone()]).matches(&f));
            prop_assert_eq!(Rule::Any(vec![a.clone(), b.clone()]).matches(&f), Rule::Any(vec![b.clone(), a.clone()]).matches(&f));
            // De Morgan.
            prop_assert_eq!(not(&Rule::All(vec![a.clone(), b.clone()])).matches(&f), Rule::Any(vec![not(&a), not(&b)]).matches(&f));
            prop_assert_eq!(not(&Rule::Any(vec![a.clone(), b.clone()])).matches(&f), Rule::All(vec![not(&a), not(&b)]).matches(&f));
            // Distributivity.
            prop_assert_eq!(
                Rule::All(vec![a.clone(), Rule::Any(vec![b.clone(), c.clone()])]).matches(&f),
                Rule::Any(vec![Rule::All(vec![a.clone(), b.clone()]), Rule::All(vec![a.clone(), c.clone()])]).matches(&f)
            );
            // Excluded middle, contradiction, single-element groups.
            prop_assert!(Rule::Any(vec![a.clone(), not(&a)]).matches(&f));
            prop_assert!(!Rule::All(vec![a.clone(), not(&a)]).matches(&f));
            prop_assert_eq!(Rule::All(vec![a.clone()]).matches(&f), a.matches(&f));
            prop_assert_eq!(Rule::Any(vec![a.clone()]).matches(&f), a.matches(&f));
        }

        #[test]
        fn a_rule_survives_storage(r in rule()) {
            let json = serde_json::to_string(&r).unwrap();
            prop_assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), r);
        }
    }
}

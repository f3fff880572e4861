//! `EngagementService`: segments and campaigns. Parses the typed rule tree into the
//! domain's [`Rule`], every bad field reported at once.

use std::collections::BTreeSet;

use chrono::Utc;
use retail_kit::auth::Principal;
use retail_kit::convert::{from_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations, text};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::common::Money;
use retail_proto::membership as pb;
use retail_proto::membership::engagement_service_server::EngagementService;
use tonic::Request;

use super::{ENGAGEMENT_READ, ENGAGEMENT_WRITE, EngagementApi, READ, Rpc, ok, parse};
use crate::app::{NewCampaign, campaign_schedule, consent_channel, lifecycle_state, stored};
use crate::domain::engagement::{
    CampaignState, MAX_CONTROL_SHARE_BP, MAX_RULE_DEPTH, MAX_RULE_NODES, PLACEHOLDERS, RFM_SEGMENTS, Rule, TriggerKind,
};
use crate::domain::fields::{self, ConsentChannel};
use crate::domain::rules::LoyaltyRules;
use crate::domain::schedule::{Frequency, MAX_INTERVAL_DAYS, MAX_OCCURRENCES, Schedule};
use crate::store::{campaign, message, segment};

/// Values a condition lists, at most.
const MAX_VALUES: usize = 50;

fn id_of(field: &str, name: &str, collection: &str) -> ServiceResult<String> {
    name.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .map(|u| u.to_string())
        .ok_or_else(|| ServiceError::invalid(field, format!("must be {collection}/{{id}} with a UUID id")))
}

fn count(v: &mut Violations, field: &str, raw: i32) -> u32 {
    u32::try_from(raw).unwrap_or_else(|_| {
        v.add(field, "must not be negative");
        0
    })
}

fn optional_count(v: &mut Violations, field: &str, raw: Option<i32>) -> Option<u32> {
    raw.map(|n| count(v, field, n))
}

fn strings(v: &mut Violations, field: &str, raw: &[String]) -> BTreeSet<String> {
    if raw.is_empty() {
        v.add(field, "must name at least one");
    }
    let n = v.at_most(field, raw, MAX_VALUES);
    raw[..n]
        .iter()
        .enumerate()
        .filter_map(|(i, s)| v.check(text(&format!("{field}[{i}]"), s, 64, true)))
        .collect()
}

/// Parses a rule tree; `nodes` counts the nodes seen so far.
fn rule(
    v: &mut Violations,
    field: &str,
    r: Option<&pb::SegmentRule>,
    rules: &LoyaltyRules,
    depth: usize,
    nodes: &mut usize,
) -> Option<Rule> {
    use pb::segment_rule::Rule as R;
    *nodes += 1;
    if depth > MAX_RULE_DEPTH {
        v.add(field, format!("rules nest at most {MAX_RULE_DEPTH} deep"));
        return None;
    }
    if *nodes > MAX_RULE_NODES {
        v.add(field, format!("a rule has at most {MAX_RULE_NODES} parts"));
        return None;
    }
    let Some(kind) = r.and_then(|r| r.rule.as_ref()) else {
        v.add(field, "must set one of all, any, not or a condition");
        return None;
    };
    let group = |v: &mut Violations, name: &str, g: &pb::RuleGroup, nodes: &mut usize| -> Option<Vec<Rule>> {
        if g.rules.is_empty() {
            v.add(format!("{field}.{name}.rules"), "must not be empty");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, child) in g.rules.iter().enumerate() {
            match rule(
                v,
                &format!("{field}.{name}.rules[{i}]"),
                Some(child),
                rules,
                depth + 1,
                nodes,
            ) {
                Some(r) => out.push(r),
                None => ok = false,
            }
            if *nodes > MAX_RULE_NODES {
                return None;
            }
        }
        ok.then_some(out)
    };
    match kind {
        R::All(g) => group(v, "all", g, nodes).map(Rule::All),
        R::Any(g) => group(v, "any", g, nodes).map(Rule::Any),
        R::Not(inner) => {
            rule(v, &format!("{field}.not"), Some(inner), rules, depth + 1, nodes).map(|r| Rule::Not(Box::new(r)))
        }
        R::Tag(t) => {
            let path = v.check(fields::tag_path(&format!("{field}.tag.path"), &t.path));
            let value = v.check(text(&format!("{field}.tag.value"), &t.value, 200, false));
            Some(Rule::Tag {
                path: path?,
                value: value.filter(|s| !s.is_empty()),
            })
        }
        R::Tier(t) => {
            let f = format!("{field}.tier.tiers");
            let tiers = strings(v, &f, &t.tiers);
            let mut ok = !tiers.is_empty();
            for tier in &tiers {
                if !rules.ladder.tiers().iter().any(|d| &d.name == tier) {
                    v.add(f.clone(), format!("{tier:?} is not a tier of the ladder"));
                    ok = false;
                }
            }
            ok.then_some(Rule::Tier(tiers))
        }
        R::Lifecycle(l) => {
            let f = format!("{field}.lifecycle.states");
            if l.states.is_empty() {
                v.add(f.clone(), "must name at least one");
                return None;
            }
            let mut states = BTreeSet::new();
            for (i, raw) in l.states.iter().take(MAX_VALUES).enumerate() {
                match pb::LifecycleState::try_from(*raw).ok().and_then(parse::lifecycle_state) {
                    Some(s) => {
                        states.insert(s);
                    }
                    None => v.add(format!("{f}[{i}]"), "is not a lifecycle state"),
                }
            }
            Some(Rule::Lifecycle(states))
        }
        R::Region(r) => {
            let regions = strings(v, &format!("{field}.region.regions"), &r.regions);
            (!regions.is_empty()).then_some(Rule::Region(regions))
        }
        R::PurchaseCount(c) => {
            let min = count(v, &format!("{field}.purchase_count.min"), c.min);
            let max = optional_count(v, &format!("{field}.purchase_count.max"), c.max);
            let within_days = optional_count(v, &format!("{field}.purchase_count.within_days"), c.within_days);
            if max.is_some_and(|max| max < min) {
                v.add(format!("{field}.purchase_count.max"), "must not be below min");
            }
            if within_days == Some(0) {
                v.add(
                    format!("{field}.purchase_count.within_days"),
                    "must be positive when set",
                );
            }
            Some(Rule::PurchaseCount { min, max, within_days })
        }
        R::Recency(c) => {
            let min_days = count(v, &format!("{field}.recency.min_days"), c.min_days);
            let max_days = optional_count(v, &format!("{field}.recency.max_days"), c.max_days);
            if max_days.is_some_and(|max| max < min_days) {
                v.add(format!("{field}.recency.max_days"), "must not be below min_days");
            }
            Some(Rule::DaysSinceLastPurchase { min_days, max_days })
        }
        R::RfmSegment(c) => {
            let f = format!("{field}.rfm_segment.segments");
            let segments = strings(v, &f, &c.segments);
            let mut ok = !segments.is_empty();
            for segment in &segments {
                if !RFM_SEGMENTS.contains(&segment.as_str()) {
                    v.add(
                        f.clone(),
                        format!("{segment:?} is not an RFM segment (one of {})", RFM_SEGMENTS.join(", ")),
                    );
                    ok = false;
                }
            }
            ok.then_some(Rule::RfmSegment(segments))
        }
    }
}

/// The rule as the API shows it.
fn rule_pb(r: &Rule) -> pb::SegmentRule {
    use pb::segment_rule::Rule as R;
    let group = |rules: &[Rule]| pb::RuleGroup {
        rules: rules.iter().map(rule_pb).collect(),
    };
    let kind = match r {
        Rule::All(rules) => R::All(group(rules)),
        Rule::Any(rules) => R::Any(group(rules)),
        Rule::Not(inner) => R::Not(Box::new(rule_pb(inner))),
        Rule::Tag { path, value } => R::Tag(pb::TagCondition {
            path: path.clone(),
            value: value.clone().unwrap_or_default(),
        }),
        Rule::Tier(t) => R::Tier(pb::TierCondition {
            tiers: t.iter().cloned().collect(),
        }),
        Rule::Lifecycle(s) => R::Lifecycle(pb::LifecycleCondition {
            states: s.iter().map(|s| lifecycle_state(*s) as i32).collect(),
        }),
        Rule::Region(r) => R::Region(pb::RegionCondition {
            regions: r.iter().cloned().collect(),
        }),
        Rule::PurchaseCount { min, max, within_days } => R::PurchaseCount(pb::PurchaseCountCondition {
            min: *min as i32,
            max: max.map(|n| n as i32),
            within_days: within_days.map(|n| n as i32),
        }),
        Rule::DaysSinceLastPurchase { min_days, max_days } => R::Recency(pb::RecencyCondition {
            min_days: *min_days as i32,
            max_days: max_days.map(|n| n as i32),
        }),
        Rule::RfmSegment(s) => R::RfmSegment(pb::RfmSegmentCondition {
            segments: s.iter().cloned().collect(),
        }),
    };
    pb::SegmentRule { rule: Some(kind) }
}

fn segment_pb(s: &segment::Model) -> ServiceResult<pb::Segment> {
    let rule: Rule = serde_json::from_str(&s.rule_json)
        .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable stored segment rule")))?;
    Ok(pb::Segment {
        name: format!("segments/{}", s.id),
        display_name: s.display_name.clone(),
        rule: Some(rule_pb(&rule)),
        create_time: Some(timestamp(s.created_at)),
    })
}

fn trigger_pb(t: TriggerKind) -> pb::CampaignTrigger {
    match t {
        TriggerKind::Planned => pb::CampaignTrigger::Planned,
        TriggerKind::TierUpgrade => pb::CampaignTrigger::TierUpgrade,
        TriggerKind::Purchase => pb::CampaignTrigger::Purchase,
        TriggerKind::LifecycleChange => pb::CampaignTrigger::LifecycleChange,
        TriggerKind::Overdue => pb::CampaignTrigger::Overdue,
        TriggerKind::CheckIn => pb::CampaignTrigger::CheckIn,
        TriggerKind::Content => pb::CampaignTrigger::Content,
    }
}

fn state_pb(s: CampaignState) -> pb::CampaignState {
    match s {
        CampaignState::Draft => pb::CampaignState::Draft,
        CampaignState::Scheduled => pb::CampaignState::Scheduled,
        CampaignState::Running => pb::CampaignState::Running,
        CampaignState::Finished => pb::CampaignState::Finished,
        CampaignState::Cancelled => pb::CampaignState::Cancelled,
    }
}

fn action_pb(a: &str) -> pb::CampaignAction {
    match a {
        "message" => pb::CampaignAction::Message,
        "bonus_points" => pb::CampaignAction::BonusPoints,
        "upgrade_nudge" => pb::CampaignAction::UpgradeNudge,
        "coupon" => pb::CampaignAction::Coupon,
        _ => pb::CampaignAction::Unspecified,
    }
}

fn money(rules: &LoyaltyRules, amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: rules.currency.clone(),
        amount_minor,
    })
}

/// Weekdays as the API names them, Monday first (index = days from Monday).
const WEEKDAYS: [pb::DayOfWeek; 7] = [
    pb::DayOfWeek::Monday,
    pb::DayOfWeek::Tuesday,
    pb::DayOfWeek::Wednesday,
    pb::DayOfWeek::Thursday,
    pb::DayOfWeek::Friday,
    pb::DayOfWeek::Saturday,
    pb::DayOfWeek::Sunday,
];

fn schedule_pb(s: &Schedule) -> pb::CampaignSchedule {
    use pb::campaign_schedule::Frequency as F;
    let frequency = match &s.frequency {
        Frequency::EveryDays(n) => F::Daily(pb::DailyFrequency {
            interval_days: *n as i32,
        }),
        Frequency::Weekly(days) => F::Weekly(pb::WeeklyFrequency {
            days: days
                .iter()
                .filter_map(|d| WEEKDAYS.get(usize::from(*d)))
                .map(|d| *d as i32)
                .collect(),
        }),
        Frequency::Monthly(day) => F::Monthly(pb::MonthlyFrequency {
            day_of_month: *day as i32,
        }),
    };
    pb::CampaignSchedule {
        frequency: Some(frequency),
        hour: (s.minute_of_day / 60) as i32,
        minute: (s.minute_of_day % 60) as i32,
        until_time: s.until.map(timestamp),
        occurrence_count: s.count.unwrap_or(0) as i32,
    }
}

/// A planned campaign's schedule, checked against its window.
fn schedule(
    v: &mut Violations,
    s: &pb::CampaignSchedule,
    start: Option<chrono::DateTime<Utc>>,
    end: Option<chrono::DateTime<Utc>>,
) -> Option<Schedule> {
    use pb::campaign_schedule::Frequency as F;
    let frequency = match &s.frequency {
        None => {
            v.add("campaign.schedule", "must set one of daily, weekly or monthly");
            None
        }
        Some(F::Daily(d)) => {
            if (1..=MAX_INTERVAL_DAYS as i32).contains(&d.interval_days) {
                Some(Frequency::EveryDays(d.interval_days as u32))
            } else {
                v.add(
                    "campaign.schedule.daily.interval_days",
                    format!("must be 1 to {MAX_INTERVAL_DAYS}"),
                );
                None
            }
        }
        Some(F::Weekly(w)) => {
            let mut days = BTreeSet::new();
            if w.days.is_empty() {
                v.add("campaign.schedule.weekly.days", "must name at least one weekday");
            }
            for (i, raw) in w.days.iter().take(MAX_VALUES).enumerate() {
                match WEEKDAYS.iter().position(|d| *d as i32 == *raw) {
                    Some(index) => {
                        days.insert(index as u8);
                    }
                    None => v.add(format!("campaign.schedule.weekly.days[{i}]"), "is not a weekday"),
                }
            }
            (!days.is_empty()).then_some(Frequency::Weekly(days))
        }
        Some(F::Monthly(m)) => {
            if (1..=31).contains(&m.day_of_month) {
                Some(Frequency::Monthly(m.day_of_month as u32))
            } else {
                v.add("campaign.schedule.monthly.day_of_month", "must be 1 to 31");
                None
            }
        }
    };
    if !(0..24).contains(&s.hour) {
        v.add("campaign.schedule.hour", "must be 0 to 23");
    }
    if !(0..60).contains(&s.minute) {
        v.add("campaign.schedule.minute", "must be 0 to 59");
    }
    let until = s
        .until_time
        .as_ref()
        .and_then(|ts| time(v, "campaign.schedule.until_time", Some(ts)));
    if let (Some(until), Some(start)) = (until, start)
        && until <= start
    {
        v.add("campaign.schedule.until_time", "must be after start_time");
    }
    if let (Some(until), Some(end)) = (until, end)
        && until > end
    {
        v.add("campaign.schedule.until_time", "must not be after end_time");
    }
    if !(0..=MAX_OCCURRENCES as i32).contains(&s.occurrence_count) {
        v.add(
            "campaign.schedule.occurrence_count",
            format!("must be 1 to {MAX_OCCURRENCES}, or 0 for no limit"),
        );
    }
    if s.until_time.is_some() && s.occurrence_count != 0 {
        v.add(
            "campaign.schedule.occurrence_count",
            "a schedule ends either at until_time or after occurrence_count",
        );
    }
    let schedule = Schedule {
        frequency: frequency?,
        minute_of_day: u32::try_from(s.hour.clamp(0, 23) * 60 + s.minute.clamp(0, 59)).ok()?,
        until,
        count: (s.occurrence_count > 0).then_some(s.occurrence_count as u32),
    };
    if let (Some(start), Some(end)) = (start, end)
        && start < end
        && schedule.next_after(start, end, None).is_none()
    {
        v.add("campaign.schedule", "has no occurrence within the window");
    }
    Some(schedule)
}

fn campaign_pb(rules: &LoyaltyRules, c: &campaign::Model, contacted: i64, control: i64) -> ServiceResult<pb::Campaign> {
    let state = stored("campaign state", &c.state, CampaignState::parse)?;
    let pending = matches!(state, CampaignState::Scheduled | CampaignState::Running) && !c.sent;
    Ok(pb::Campaign {
        name: format!("campaigns/{}", c.id),
        display_name: c.display_name.clone(),
        segment: format!("segments/{}", c.segment_id),
        channel: consent_channel(stored("channel", &c.channel, ConsentChannel::parse)?) as i32,
        trigger: trigger_pb(stored("trigger", &c.trigger_kind, TriggerKind::parse)?) as i32,
        send_time: c.send_at.map(timestamp),
        action: action_pb(&c.action_kind) as i32,
        message_template: c.message_template.clone(),
        bonus_points: c.bonus_points,
        control_share_bp: c.control_share_bp,
        start_time: Some(timestamp(c.window_start)),
        end_time: Some(timestamp(c.window_end)),
        budget_contacts: c.budget_contacts,
        state: state_pb(state) as i32,
        contacted_count: contacted,
        control_count: control,
        create_time: Some(timestamp(c.created_at)),
        cost_per_contact: (c.cost_per_contact_minor > 0)
            .then(|| money(rules, c.cost_per_contact_minor))
            .flatten(),
        coupon: c
            .coupon_id
            .as_ref()
            .map(|id| format!("coupons/{id}"))
            .unwrap_or_default(),
        schedule: campaign_schedule(c)?.as_ref().map(schedule_pb),
        next_run_time: c.next_run_at.filter(|_| pending).map(timestamp),
    })
}

fn message_pb(m: &message::Model) -> ServiceResult<pb::EngagementMessage> {
    Ok(pb::EngagementMessage {
        name: format!("campaigns/{}/messages/{}", m.campaign_id, m.id),
        member: format!("members/{}", m.member_id),
        channel: consent_channel(stored("channel", &m.channel, ConsentChannel::parse)?) as i32,
        body: m.body.clone(),
        send_time: m.sent_at.map(timestamp),
        delivery_state: if m.sent_at.is_some() {
            pb::MessageDeliveryState::Sent
        } else if m.dead_at.is_some() {
            pb::MessageDeliveryState::Dead
        } else {
            pb::MessageDeliveryState::Pending
        } as i32,
        attempt_count: m.attempts,
    })
}

fn time(v: &mut Violations, field: &str, ts: Option<&prost_types::Timestamp>) -> Option<chrono::DateTime<Utc>> {
    match ts {
        None => {
            v.add(field, "is required");
            None
        }
        Some(ts) => {
            use chrono::SubsecRound;
            let t = from_timestamp(ts).map(|t| t.trunc_subsecs(6));
            if t.is_none() {
                v.add(field, "is not a valid time");
            }
            t
        }
    }
}

fn new_campaign(c: Option<&pb::Campaign>, rules: &LoyaltyRules) -> ServiceResult<NewCampaign> {
    let Some(c) = c else {
        return Err(ServiceError::invalid("campaign", "is required"));
    };
    let mut v = Violations::new();
    let display_name = v.text("campaign.display_name", &c.display_name, 200, true);
    let segment_id = v.field(
        "campaign.segment",
        id_of("campaign.segment", &c.segment, "segments").map_err(|_| "must be segments/{id} with a UUID id"),
    );
    let channel = parse::consent_channel(c.channel);
    if channel.is_none() {
        v.add("campaign.channel", "must be a consent channel");
    }
    let trigger = match pb::CampaignTrigger::try_from(c.trigger).unwrap_or_default() {
        pb::CampaignTrigger::Planned => Some(TriggerKind::Planned),
        pb::CampaignTrigger::TierUpgrade => Some(TriggerKind::TierUpgrade),
        pb::CampaignTrigger::Purchase => Some(TriggerKind::Purchase),
        pb::CampaignTrigger::LifecycleChange => Some(TriggerKind::LifecycleChange),
        pb::CampaignTrigger::Overdue => Some(TriggerKind::Overdue),
        pb::CampaignTrigger::CheckIn => Some(TriggerKind::CheckIn),
        pb::CampaignTrigger::Content => Some(TriggerKind::Content),
        pb::CampaignTrigger::Unspecified => {
            v.add("campaign.trigger", "must be a trigger");
            None
        }
    };
    let action = match pb::CampaignAction::try_from(c.action).unwrap_or_default() {
        pb::CampaignAction::Message => Some("message"),
        pb::CampaignAction::BonusPoints => Some("bonus_points"),
        pb::CampaignAction::UpgradeNudge => Some("upgrade_nudge"),
        pb::CampaignAction::Coupon => Some("coupon"),
        pb::CampaignAction::Unspecified => {
            v.add("campaign.action", "must be an action");
            None
        }
    };
    let template = v.text("campaign.message_template", &c.message_template, 1000, true);
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        match after.find('}') {
            Some(close) if PLACEHOLDERS.contains(&&after[..=close]) => rest = &after[close + 1..],
            _ => {
                v.add(
                    "campaign.message_template",
                    "may use only the placeholders {tier}, {next_tier}, {distance}, {points} and {coupon_code}",
                );
                break;
            }
        }
    }
    let coupon_id = if action == Some("coupon") {
        if c.coupon.is_empty() {
            v.add("campaign.coupon", "is required for a coupon campaign");
            None
        } else {
            v.field(
                "campaign.coupon",
                id_of("campaign.coupon", &c.coupon, "coupons").map_err(|_| "must be coupons/{id} with a UUID id"),
            )
        }
    } else {
        if !c.coupon.is_empty() {
            v.add("campaign.coupon", "only a coupon campaign hands out a coupon");
        }
        None
    };
    if action == Some("coupon") && !template.contains("{coupon_code}") {
        v.add(
            "campaign.message_template",
            "a coupon campaign's message must show {coupon_code}",
        );
    }
    if action == Some("bonus_points") {
        if !(1..=1_000_000).contains(&c.bonus_points) {
            v.add("campaign.bonus_points", "must be 1 to 1,000,000 for a bonus");
        }
    } else if c.bonus_points != 0 {
        v.add("campaign.bonus_points", "only a bonus-points campaign grants points");
    }
    if !(0..=MAX_CONTROL_SHARE_BP as i32).contains(&c.control_share_bp) {
        v.add(
            "campaign.control_share_bp",
            format!("must be 0 to {MAX_CONTROL_SHARE_BP}"),
        );
    }
    if c.budget_contacts < 0 {
        v.add("campaign.budget_contacts", "must not be negative");
    }
    let mut cost_per_contact_minor = 0;
    if let Some(cost) = &c.cost_per_contact {
        if cost.currency_code != rules.currency {
            v.add(
                "campaign.cost_per_contact.currency_code",
                format!("must be {}", rules.currency),
            );
        }
        if !(0..=retail_kit::money::MAX_AMOUNT_MINOR).contains(&cost.amount_minor) {
            v.add("campaign.cost_per_contact.amount_minor", "is out of range");
        }
        cost_per_contact_minor = cost.amount_minor;
    }
    let start = time(&mut v, "campaign.start_time", c.start_time.as_ref());
    let end = time(&mut v, "campaign.end_time", c.end_time.as_ref());
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        v.add("campaign.end_time", "must be after start_time");
    }
    let recurring = match &c.schedule {
        Some(s) if trigger == Some(TriggerKind::Planned) => schedule(&mut v, s, start, end),
        Some(_) => {
            v.add("campaign.schedule", "only a planned campaign has a schedule");
            None
        }
        None => None,
    };
    let send_at = if c.schedule.is_some() {
        if c.send_time.is_some() {
            v.add(
                "campaign.send_time",
                "a campaign with a schedule runs at its occurrences, not at a send time",
            );
        }
        None
    } else if trigger == Some(TriggerKind::Planned) {
        let at = time(&mut v, "campaign.send_time", c.send_time.as_ref());
        if let (Some(at), Some(s), Some(e)) = (at, start, end)
            && (at < s || at >= e)
        {
            v.add("campaign.send_time", "must lie within the window");
        }
        at
    } else {
        if c.send_time.is_some() {
            v.add("campaign.send_time", "only a planned campaign has a send time");
        }
        None
    };
    v.finish()?;
    let (Some(segment_id), Some(channel), Some(trigger), Some(action), Some(start), Some(end)) =
        (segment_id, channel, trigger, action, start, end)
    else {
        return Err(ServiceError::invalid("campaign", "is incomplete"));
    };
    Ok(NewCampaign {
        display_name,
        segment_id,
        channel: channel.as_str().to_owned(),
        trigger,
        send_at,
        action: action.to_owned(),
        message_template: template,
        bonus_points: c.bonus_points,
        control_share_bp: c.control_share_bp,
        window_start: start,
        window_end: end,
        budget_contacts: c.budget_contacts,
        cost_per_contact_minor,
        coupon_id,
        schedule: recurring,
    })
}

/// The caller's subject, once it holds every one of `scopes` (reading a segment's
/// members or the rendered messages also needs `membership.members.read`).
fn caller<T>(request: &Request<T>, scopes: &[&str]) -> ServiceResult<String> {
    let principal = Principal::of(request)?;
    for scope in scopes {
        principal.require_scope(scope)?;
    }
    Ok(principal.subject.clone())
}

#[tonic::async_trait]
impl EngagementService for EngagementApi {
    async fn create_segment(&self, request: Request<pb::CreateSegmentRequest>) -> Rpc<pb::Segment> {
        let caller = caller(&request, &[ENGAGEMENT_WRITE])?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.CreateSegment", &caller, &req.request_id, &req)?;
        let Some(s) = req.segment.as_ref() else {
            return Err(ServiceError::invalid("segment", "is required").into());
        };
        let mut v = Violations::new();
        let display_name = v.text("segment.display_name", &s.display_name, 200, true);
        let mut nodes = 0;
        let parsed = rule(&mut v, "segment.rule", s.rule.as_ref(), &self.app.rules, 1, &mut nodes);
        v.finish()?;
        let Some(parsed) = parsed else {
            return Err(ServiceError::invalid("segment.rule", "is not a valid rule").into());
        };
        ok(self
            .app
            .create_segment(display_name, parsed, key.as_ref(), segment_pb)
            .await?)
    }

    async fn get_segment(&self, request: Request<pb::GetSegmentRequest>) -> Rpc<pb::Segment> {
        caller(&request, &[ENGAGEMENT_READ])?;
        let id = id_of("name", &request.get_ref().name, "segments")?;
        ok(segment_pb(&self.app.segment(&id).await?)?)
    }

    async fn count_segment_members(
        &self,
        request: Request<pb::CountSegmentMembersRequest>,
    ) -> Rpc<pb::CountSegmentMembersResponse> {
        caller(&request, &[ENGAGEMENT_READ])?;
        let id = id_of("name", &request.get_ref().name, "segments")?;
        ok(pb::CountSegmentMembersResponse {
            member_count: self.app.count_segment(&id, Utc::now()).await?,
        })
    }

    async fn list_segment_members(
        &self,
        request: Request<pb::ListSegmentMembersRequest>,
    ) -> Rpc<pb::ListSegmentMembersResponse> {
        caller(&request, &[ENGAGEMENT_READ, READ])?;
        let req = request.get_ref();
        let id = id_of("name", &req.name, "segments")?;
        let page = Page::parse(req.page_size, &req.page_token, &id)?;
        let (members, next_page_token) = self.app.segment_members(&id, page, Utc::now()).await?;
        ok(pb::ListSegmentMembersResponse {
            members,
            next_page_token,
        })
    }

    async fn create_campaign(&self, request: Request<pb::CreateCampaignRequest>) -> Rpc<pb::Campaign> {
        let caller = caller(&request, &[ENGAGEMENT_WRITE])?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.CreateCampaign", &caller, &req.request_id, &req)?;
        let new = new_campaign(req.campaign.as_ref(), &self.app.rules)?;
        ok(self.app.create_campaign(new, key.as_ref(), campaign_pb).await?)
    }

    async fn get_campaign(&self, request: Request<pb::GetCampaignRequest>) -> Rpc<pb::Campaign> {
        caller(&request, &[ENGAGEMENT_READ])?;
        let id = id_of("name", &request.get_ref().name, "campaigns")?;
        let (c, contacted, control) = self.app.campaign(&id).await?;
        ok(campaign_pb(&self.app.rules, &c, contacted, control)?)
    }

    async fn schedule_campaign(&self, request: Request<pb::ScheduleCampaignRequest>) -> Rpc<pb::Campaign> {
        caller(&request, &[ENGAGEMENT_WRITE])?;
        let id = id_of("name", &request.get_ref().name, "campaigns")?;
        let (c, contacted, control) = self.app.move_campaign(&id, CampaignState::Scheduled).await?;
        ok(campaign_pb(&self.app.rules, &c, contacted, control)?)
    }

    async fn cancel_campaign(&self, request: Request<pb::CancelCampaignRequest>) -> Rpc<pb::Campaign> {
        caller(&request, &[ENGAGEMENT_WRITE])?;
        let id = id_of("name", &request.get_ref().name, "campaigns")?;
        let (c, contacted, control) = self.app.move_campaign(&id, CampaignState::Cancelled).await?;
        ok(campaign_pb(&self.app.rules, &c, contacted, control)?)
    }

    async fn get_campaign_report(&self, request: Request<pb::GetCampaignReportRequest>) -> Rpc<pb::CampaignReport> {
        caller(&request, &[ENGAGEMENT_READ])?;
        let id = id_of("name", &request.get_ref().name, "campaigns")?;
        let r = self.app.campaign_report(&id, Utc::now()).await?;
        let rules = &self.app.rules;
        ok(pb::CampaignReport {
            campaign: format!("campaigns/{id}"),
            reached: r.reached,
            responded: r.responded,
            response_rate_bp: r.response_rate_bp,
            revenue: money(rules, r.revenue_minor),
            control: r.control,
            control_responded: r.control_responded,
            control_response_rate_bp: r.control_response_rate_bp,
            control_revenue: money(rules, r.control_revenue_minor),
            incremental_revenue: money(rules, r.incremental_revenue_minor),
            cost: money(rules, r.cost_minor),
            roi_bp: r.roi_bp,
        })
    }

    async fn list_messages(&self, request: Request<pb::ListMessagesRequest>) -> Rpc<pb::ListMessagesResponse> {
        caller(&request, &[ENGAGEMENT_READ, READ])?;
        let req = request.get_ref();
        let id = id_of("parent", &req.parent, "campaigns")?;
        let page = Page::parse(req.page_size, &req.page_token, &id)?;
        let (rows, next_page_token) = self.app.messages(&id, page).await?;
        ok(pb::ListMessagesResponse {
            messages: rows.iter().map(message_pb).collect::<ServiceResult<_>>()?,
            next_page_token,
        })
    }

    async fn list_campaigns(&self, request: Request<pb::ListCampaignsRequest>) -> Rpc<pb::ListCampaignsResponse> {
        caller(&request, &[ENGAGEMENT_READ])?;
        let req = request.get_ref();
        let state = match pb::CampaignState::try_from(req.state) {
            Ok(pb::CampaignState::Unspecified) => None,
            Ok(pb::CampaignState::Draft) => Some(CampaignState::Draft),
            Ok(pb::CampaignState::Scheduled) => Some(CampaignState::Scheduled),
            Ok(pb::CampaignState::Running) => Some(CampaignState::Running),
            Ok(pb::CampaignState::Finished) => Some(CampaignState::Finished),
            Ok(pb::CampaignState::Cancelled) => Some(CampaignState::Cancelled),
            Err(_) => return Err(ServiceError::invalid("state", "is not a campaign state").into()),
        };
        let page = Page::parse(
            req.page_size,
            &req.page_token,
            &format!("campaigns/{}", state.map_or("", CampaignState::as_str)),
        )?;
        let (rows, next_page_token) = self.app.campaigns(state, &page).await?;
        ok(pb::ListCampaignsResponse {
            campaigns: rows
                .iter()
                .map(|(c, contacted, control)| campaign_pb(&self.app.rules, c, *contacted, *control))
                .collect::<ServiceResult<_>>()?,
            next_page_token,
        })
    }
}

//! Engagement's use cases: segments evaluated against the current members, and
//! campaigns that contact a segment's consented members once each, within a
//! frequency cap across campaigns, holding back a control group; messages go to an
//! outbox that a pluggable [`MessageSender`] delivers.
//!
//! Segment evaluation scans the members in id order and applies the rule to each
//! (tags, tier, region, lifecycle and purchases as of now); lifecycle and recency
//! depend on "now", so no index answers them.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::membership as pb;
use sea_orm::{ConnectionTrait, DatabaseTransaction};

use super::{App, points, stored};
use crate::domain::engagement::{
    self, Attributed, CampaignReport, CampaignState, ContactOutcome, MemberFacts, MessageContext, PaidPurchase, Rule,
    TriggerKind,
};
use crate::domain::points::PurchaseKind;
use crate::domain::rules::LoyaltyRules;
use crate::domain::schedule::Schedule;
use crate::events;
use crate::store::engagement as db;
use crate::store::{self, MemberFilter, MemberView, campaign, contact, message, segment};
use crate::store::{identity, loyalty};

/// A message as handed to a [`MessageSender`]: the outbox row's id (the same on
/// every try), where it goes and what it says. `Debug` leaves out the recipient
/// and the body.
#[derive(Clone)]
pub struct OutgoingMessage {
    pub id: String,
    pub campaign_id: String,
    pub member_id: String,
    pub channel: String,
    /// The member's address for the channel (phone for `sms`, e-mail for
    /// `email`) while the member consents to it; `None` otherwise or for channels
    /// without an address.
    pub recipient: Option<String>,
    pub body: String,
    /// This try, from 1.
    pub attempt: u32,
}

impl Debug for OutgoingMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("id", &self.id)
            .field("campaign_id", &self.campaign_id)
            .field("member_id", &self.member_id)
            .field("channel", &self.channel)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// How often and how far apart a message is tried before it is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// The wait after the first failed try, doubled after each further one.
    pub backoff_base: std::time::Duration,
    pub backoff_max: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base: std::time::Duration::from_secs(60),
            backoff_max: std::time::Duration::from_secs(3600),
        }
    }
}

/// Delivers a rendered message through its channel. The message is marked sent once
/// this returns `Ok`; an error leaves it for a later try after the backoff of
/// [`MessageSender::retry`], and the last failed try dead-letters it. Errors must
/// not carry the recipient or the body (they are logged).
#[async_trait::async_trait]
pub trait MessageSender: Send + Sync + Debug {
    async fn send(&self, message: &OutgoingMessage) -> anyhow::Result<()>;

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }
}

/// The default sender: delivers nothing outside the service; the sent messages are
/// the log `ListMessages` shows.
#[derive(Debug, Default)]
pub struct LogSender;

#[async_trait::async_trait]
impl MessageSender for LogSender {
    async fn send(&self, _message: &OutgoingMessage) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Issues members' codes of a single-use catalog coupon (catalog's
/// `IssueCouponCodes`): a member who has a code of the coupon gets the same code
/// again, so asking twice is harmless.
#[async_trait::async_trait]
pub trait CouponIssuer: Send + Sync + Debug {
    /// The code of each member id in `member_ids` (at most [`MAX_ISSUE`]), by member id.
    async fn issue(&self, coupon_id: &str, member_ids: &[String]) -> anyhow::Result<HashMap<String, String>>;
}

/// Members per `IssueCouponCodes` call (catalog takes at most 1,000).
pub const MAX_ISSUE: usize = 1_000;

/// The action that hands out coupon codes.
const COUPON: &str = "coupon";

/// The configured engagement limits.
#[derive(Debug, Clone)]
pub(crate) struct EngagementRules {
    /// Messages per member and channel within `frequency_window`, across campaigns.
    pub(crate) frequency_cap: u64,
    pub(crate) frequency_window: Duration,
    /// Purchases this long after a decision count as its response.
    pub(crate) attribution_window: Duration,
}

/// A new campaign, checked.
#[derive(Debug, Clone)]
pub(crate) struct NewCampaign {
    pub(crate) display_name: String,
    pub(crate) segment_id: String,
    pub(crate) channel: String,
    pub(crate) trigger: TriggerKind,
    pub(crate) send_at: Option<DateTime<Utc>>,
    pub(crate) action: String,
    pub(crate) message_template: String,
    pub(crate) bonus_points: i64,
    pub(crate) control_share_bp: i32,
    pub(crate) window_start: DateTime<Utc>,
    pub(crate) window_end: DateTime<Utc>,
    pub(crate) budget_contacts: i64,
    pub(crate) cost_per_contact_minor: i64,
    /// The catalog coupon (its id) of a coupon campaign.
    pub(crate) coupon_id: Option<String>,
    /// A recurring planned campaign's schedule (instead of `send_at`).
    pub(crate) schedule: Option<Schedule>,
}

/// Members scanned per query when evaluating a segment.
const SCAN_BATCH: i32 = 500;

/// What a rule sees of a member at `as_of`.
pub(crate) fn facts(rules: &LoyaltyRules, v: &MemberView, as_of: DateTime<Utc>) -> MemberFacts {
    let paid: Vec<PaidPurchase> = v
        .purchases
        .iter()
        .filter(|p| p.kind == PurchaseKind::Paid.as_str() && p.occurred_at <= as_of)
        .map(|p| PaidPurchase {
            at: p.occurred_at,
            channel: p.channel.clone(),
        })
        .collect();
    let paid_at: Vec<DateTime<Utc>> = paid.iter().map(|p| p.at).collect();
    let mut tags: Vec<(String, String)> = v
        .tags
        .iter()
        .filter(|t| engagement::tag_holds(t.expires_at, as_of))
        .map(|t| (t.path.clone(), t.value.clone()))
        .collect();
    tags.extend(engagement::computed_tags(&paid));
    MemberFacts {
        tags,
        tier: v.member.tier.clone(),
        lifecycle: rules.lifecycle(&paid_at, as_of),
        region: v.member.region.clone(),
        rfm_segment: v.member.rfm_segment.clone(),
        paid_at,
        as_of,
    }
}

fn segment_rule(s: &segment::Model) -> ServiceResult<Rule> {
    serde_json::from_str(&s.rule_json)
        .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable stored segment rule")))
}

/// A recurring campaign's schedule; `None` for any other campaign.
pub(crate) fn campaign_schedule(c: &campaign::Model) -> ServiceResult<Option<Schedule>> {
    c.schedule_json
        .as_deref()
        .map(|json| {
            serde_json::from_str(json)
                .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable stored schedule")))
        })
        .transpose()
}

fn segment_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("segment", format!("segments/{id}"))
}

fn campaign_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("campaign", format!("campaigns/{id}"))
}

/// Whether the member's latest decision for `channel` grants marketing.
fn consented(v: &MemberView, channel: &str) -> bool {
    v.consents.iter().any(|c| c.channel == channel && c.granted)
}

/// Whether the campaign may contact the member and so needs the member's coupon
/// code first: a coupon campaign, a live consented member outside the control
/// group. (The cap or the budget may still hold the member back; its code then
/// stays unused.)
fn wants_code(c: &campaign::Model, v: &MemberView) -> bool {
    c.action_kind == COUPON
        && v.member.erased_at.is_none()
        && consented(v, &c.channel)
        && !engagement::in_control_group(&c.id, &v.member.id, c.control_share_bp.max(0) as u32)
}

impl App {
    pub(crate) async fn create_segment<R>(
        &self,
        display_name: String,
        rule: Rule,
        key: Option<&IdempotencyKey>,
        render: fn(&segment::Model) -> ServiceResult<R>,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + 'static,
    {
        let rule_json = serde_json::to_string(&rule).map_err(ServiceError::internal)?;
        let now = retail_kit::convert::now();
        idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let model = segment::Model {
                id: store::new_id(),
                display_name: display_name.clone(),
                rule_json: rule_json.clone(),
                created_at: now,
            };
            Box::pin(async move {
                db::insert_segment(txn, model.clone()).await?;
                render(&model)
            })
        })
        .await
    }

    pub(crate) async fn segment(&self, id: &str) -> ServiceResult<segment::Model> {
        db::find_segment(&self.db, id)
            .await?
            .ok_or_else(|| segment_not_found(id))
    }

    /// Up to `want` live members after `after` (by id) that `rule` matches at
    /// `as_of`, and the last id scanned (`None` when the members ran out).
    async fn matching(
        &self,
        conn: &impl ConnectionTrait,
        rule: &Rule,
        after: Option<String>,
        want: usize,
        as_of: DateTime<Utc>,
    ) -> ServiceResult<(Vec<MemberView>, Option<String>)> {
        let page = Page::parse(SCAN_BATCH, "", "engagement-scan")?;
        let mut cursor = after;
        let mut out = Vec::new();
        loop {
            let rows =
                store::list_members(conn, &page.continued_after(cursor.clone()), &MemberFilter::default()).await?;
            let exhausted = rows.len() as u64 <= page.size;
            for row in rows.into_iter().take(page.size as usize) {
                cursor = Some(row.id.clone());
                let view = store::view(conn, row).await?;
                if rule.matches(&facts(&self.rules, &view, as_of)) {
                    out.push(view);
                    if out.len() >= want {
                        return Ok((out, cursor));
                    }
                }
            }
            if exhausted {
                return Ok((out, None));
            }
        }
    }

    /// The number of live members the segment matches at `as_of`.
    pub(crate) async fn count_segment(&self, id: &str, as_of: DateTime<Utc>) -> ServiceResult<i64> {
        let rule = segment_rule(&self.segment(id).await?)?;
        // Batch by batch, so only one batch of members is held at a time.
        let mut count = 0;
        let mut cursor = None;
        loop {
            let (members, last) = self
                .matching(&self.db, &rule, cursor, SCAN_BATCH as usize, as_of)
                .await?;
            count += members.len() as i64;
            match last {
                Some(last) => cursor = Some(last),
                None => return Ok(count),
            }
        }
    }

    /// A page of the members the segment matches at `as_of`.
    pub(crate) async fn segment_members(
        &self,
        id: &str,
        page: Page,
        as_of: DateTime<Utc>,
    ) -> ServiceResult<(Vec<pb::Member>, String)> {
        let rule = segment_rule(&self.segment(id).await?)?;
        let (views, last) = self
            .matching(&self.db, &rule, page.after.clone(), page.size as usize + 1, as_of)
            .await?;
        let more = views.len() > page.size as usize && last.is_some();
        let views: Vec<MemberView> = views.into_iter().take(page.size as usize).collect();
        let next = match (more, views.last()) {
            (true, Some(v)) => page.token_after(&v.member.id),
            _ => String::new(),
        };
        let members = views.iter().map(|v| self.profile(v)).collect::<ServiceResult<_>>()?;
        Ok((members, next))
    }

    pub(crate) async fn create_campaign<R>(
        &self,
        new: NewCampaign,
        key: Option<&IdempotencyKey>,
        render: fn(&LoyaltyRules, &campaign::Model, i64, i64) -> ServiceResult<R>,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + 'static,
    {
        if db::find_segment(&self.db, &new.segment_id).await?.is_none() {
            return Err(ServiceError::invalid("campaign.segment", "no such segment"));
        }
        if new.action == COUPON && self.coupon_issuer().is_none() {
            return Err(ServiceError::FailedPrecondition(
                "coupon campaigns need catalog, and no catalog URL (catalog.url) is configured".into(),
            ));
        }
        let schedule_json = new
            .schedule
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(ServiceError::internal)?;
        // A planned campaign runs first at its send time or its schedule's first
        // occurrence.
        let next_run_at = match &new.schedule {
            Some(s) => s.next_after(new.window_start, new.window_end, None),
            None if new.trigger == TriggerKind::Planned => new.send_at,
            None => None,
        };
        let now = retail_kit::convert::now();
        let created = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let n = new.clone();
            let schedule_json = schedule_json.clone();
            let rules = self.rules.clone();
            let model = campaign::Model {
                id: store::new_id(),
                display_name: n.display_name,
                segment_id: n.segment_id,
                channel: n.channel,
                trigger_kind: n.trigger.as_str().to_owned(),
                send_at: n.send_at,
                action_kind: n.action,
                message_template: n.message_template,
                bonus_points: n.bonus_points,
                control_share_bp: n.control_share_bp,
                window_start: n.window_start,
                window_end: n.window_end,
                budget_contacts: n.budget_contacts,
                cost_per_contact_minor: n.cost_per_contact_minor,
                state: CampaignState::Draft.as_str().to_owned(),
                sent: false,
                created_at: now,
                updated_at: now,
                coupon_id: n.coupon_id,
                schedule_json,
                next_run_at,
            };
            Box::pin(async move {
                db::insert_campaign(txn, model.clone()).await?;
                events::campaign_changed(&model, &model.state, now)
                    .publish(txn, &model.id)
                    .await?;
                render(&rules, &model, 0, 0)
            })
        })
        .await;
        self.log.committed();
        created
    }

    /// The campaign with its contacted and control counts.
    pub(crate) async fn campaign(&self, id: &str) -> ServiceResult<(campaign::Model, i64, i64)> {
        let c = db::find_campaign(&self.db, id)
            .await?
            .ok_or_else(|| campaign_not_found(id))?;
        let contacted = db::count_outcome(&self.db, id, ContactOutcome::Contacted.as_str()).await? as i64;
        let control = db::count_outcome(&self.db, id, ContactOutcome::Control.as_str()).await? as i64;
        Ok((c, contacted, control))
    }

    /// Campaigns newest first, optionally only those in `state`, each with its
    /// contacted and control counts; returns the page and the next page's token.
    pub(crate) async fn campaigns(
        &self,
        state: Option<CampaignState>,
        page: &Page,
    ) -> ServiceResult<(Vec<(campaign::Model, i64, i64)>, String)> {
        let rows = db::list_campaigns(&self.db, state.map(CampaignState::as_str), page).await?;
        let (rows, next) = page.finish(rows, |c| c.id.clone());
        let ids: Vec<String> = rows.iter().map(|c| c.id.clone()).collect();
        let counts = db::outcome_counts(&self.db, &ids).await?;
        let listed = rows
            .into_iter()
            .map(|c| {
                let (contacted, control) = counts.get(&c.id).copied().unwrap_or_default();
                (c, contacted, control)
            })
            .collect();
        Ok((listed, next))
    }

    /// Moves a campaign to `to`; FAILED_PRECONDITION if its state does not allow it.
    pub(crate) async fn move_campaign(
        &self,
        id: &str,
        to: CampaignState,
    ) -> ServiceResult<(campaign::Model, i64, i64)> {
        let (current, _, _) = self.campaign(id).await?;
        let from = stored("campaign state", &current.state, CampaignState::parse)?;
        if !from.may_become(to) {
            return Err(ServiceError::FailedPrecondition(format!(
                "a {} campaign cannot become {}",
                from.as_str(),
                to.as_str()
            )));
        }
        if !self.set_state(&current, from.as_str(), to.as_str(), Utc::now()).await? {
            return Err(ServiceError::FailedPrecondition(
                "the campaign changed state meanwhile".into(),
            ));
        }
        self.campaign(id).await
    }

    /// Moves the campaign from state `from` to `to` and publishes `CampaignChanged`
    /// in one transaction; false if it was no longer in `from`.
    async fn set_state(&self, c: &campaign::Model, from: &str, to: &str, now: DateTime<Utc>) -> ServiceResult<bool> {
        let txn = retail_kit::db::begin_write(&self.db).await?;
        if !db::move_campaign(&txn, &c.id, from, to, now).await? {
            return Ok(false);
        }
        events::campaign_changed(c, to, now).publish(&txn, &c.id).await?;
        txn.commit().await?;
        self.log.committed();
        Ok(true)
    }

    /// The periodic campaign work at `as_of`: scheduled campaigns whose window has
    /// begun start, planned campaigns due (their send time or their schedule's
    /// next occurrence has come) contact their audience, campaigns past their
    /// window or their schedule's last occurrence finish, and the outbox is
    /// delivered. Returns the members contacted.
    pub async fn run_campaigns(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let now = retail_kit::convert::now();
        for c in db::campaigns_in(&self.db, CampaignState::Scheduled.as_str()).await? {
            if c.window_start <= as_of {
                self.set_state(&c, "scheduled", "running", now).await?;
            }
        }
        let running = db::campaigns_in(&self.db, CampaignState::Running.as_str()).await?;
        // Lifecycle states are followed while a lifecycle-change campaign runs;
        // otherwise they are forgotten, so the next such campaign starts from the
        // states it first sees rather than from changes long past.
        if running
            .iter()
            .any(|c| c.trigger_kind == TriggerKind::LifecycleChange.as_str())
        {
            self.track_lifecycle(as_of).await?;
        } else {
            identity::forget_lifecycles(&self.db).await?;
        }
        let mut contacted = 0;
        for c in running {
            let due = c.trigger_kind == TriggerKind::Planned.as_str()
                && !c.sent
                && c.next_run_at.or(c.send_at).is_none_or(|t| t <= as_of)
                && as_of < c.window_end;
            if due {
                contacted += self.send_planned(&c, as_of).await?;
            }
            if c.window_end <= as_of {
                self.set_state(&c, "running", "finished", now).await?;
            }
        }
        self.deliver(100).await?;
        Ok(contacted)
    }

    /// The coupon codes of those of `views` the coupon campaign `c` may contact,
    /// by member id, issued by catalog before any contact transaction; `None` if
    /// catalog did not answer (those members wait for the next run).
    async fn codes_for(&self, c: &campaign::Model, views: &[MemberView]) -> Option<HashMap<String, String>> {
        let wanted: Vec<String> = views
            .iter()
            .filter(|v| wants_code(c, v))
            .map(|v| v.member.id.clone())
            .collect();
        let mut codes = HashMap::new();
        if wanted.is_empty() {
            return Some(codes);
        }
        let (Some(issuer), Some(coupon_id)) = (self.coupon_issuer(), c.coupon_id.as_deref()) else {
            tracing::warn!(campaign_id = %c.id, "coupon campaign without catalog; its members wait");
            return None;
        };
        for chunk in wanted.chunks(MAX_ISSUE) {
            match issuer.issue(coupon_id, chunk).await {
                Ok(issued) => codes.extend(issued),
                Err(e) => {
                    tracing::warn!(campaign_id = %c.id, error = %e, "coupon codes not issued; members retried later");
                    return None;
                }
            }
        }
        Some(codes)
    }

    /// Contacts a planned campaign's audience, one member per transaction; the
    /// decision row makes each member count once, also when this runs again. A
    /// coupon campaign gets its members' codes from catalog first; members whose
    /// code catalog did not give stay undecided, and the campaign is sent again on
    /// the next run.
    async fn send_planned(&self, c: &campaign::Model, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let segment = db::find_segment(&self.db, &c.segment_id)
            .await?
            .ok_or_else(|| segment_not_found(&c.segment_id))?;
        let rule = segment_rule(&segment)?;
        let mut contacted = 0;
        let mut cursor = None;
        let mut complete = true;
        loop {
            let (views, last) = self
                .matching(&self.db, &rule, cursor, SCAN_BATCH as usize, as_of)
                .await?;
            let codes = if c.action_kind == COUPON {
                self.codes_for(c, &views).await
            } else {
                Some(HashMap::new())
            };
            complete &= codes.is_some();
            let codes = codes.unwrap_or_default();
            for view in views {
                let member_id = view.member.id.clone();
                let code = codes.get(&member_id).map(String::as_str);
                if c.action_kind == COUPON && code.is_none() && wants_code(c, &view) {
                    complete = false;
                    continue;
                }
                let txn = retail_kit::db::begin_write(&self.db).await?;
                let version = match store::find_member(&txn, &member_id).await? {
                    Some(member) => {
                        let view = store::view(&txn, member).await?;
                        self.contact(&txn, c, &view, as_of, code).await?
                    }
                    None => None,
                };
                txn.commit().await?;
                if let Some(version) = version {
                    contacted += 1;
                    if version > 0 {
                        self.forget_member(&member_id, version, false).await;
                    }
                }
            }
            if last.is_none() {
                break;
            }
            cursor = last;
        }
        if complete {
            self.planned_run_done(c, as_of).await?;
        }
        self.log.committed();
        Ok(contacted)
    }

    /// A planned campaign's run at `as_of` reached its whole audience: a recurring
    /// campaign moves on to its first occurrence after `as_of` (so occurrences
    /// missed while nothing ran are not made up one by one) and finishes after its
    /// last; a one-off is sent (and finishes with its window).
    async fn planned_run_done(&self, c: &campaign::Model, as_of: DateTime<Utc>) -> ServiceResult<()> {
        let schedule = campaign_schedule(c)?;
        let next = schedule
            .as_ref()
            .and_then(|s| s.next_after(c.window_start, c.window_end, Some(as_of)));
        let moved = db::advance_campaign(&self.db, &c.id, c.next_run_at, next).await?;
        if moved && schedule.is_some() && next.is_none() {
            let now = retail_kit::convert::now();
            db::move_campaign(&self.db, &c.id, "running", "finished", now).await?;
        }
        Ok(())
    }

    /// Decides for one member of a running campaign the member is in the audience
    /// of: nothing without consent for the channel or when decided before; else
    /// control, capped, over budget or contacted (a message in the outbox, and bonus
    /// points with the campaign as their reference, or the coupon `code` in the
    /// message and on the decision); the decision is published
    /// (`CampaignMemberDecided`) in the same transaction, once, with the member's
    /// lifecycle state at `as_of`. A coupon campaign without a code for a member
    /// it would contact decides nothing, so the member is contacted later, never
    /// without its code. `Some(version)` when contacted, with the member's new
    /// version if points changed it (0 otherwise).
    async fn contact(
        &self,
        txn: &DatabaseTransaction,
        c: &campaign::Model,
        v: &MemberView,
        as_of: DateTime<Utc>,
        code: Option<&str>,
    ) -> ServiceResult<Option<i64>> {
        if v.member.erased_at.is_some() || !consented(v, &c.channel) {
            return Ok(None);
        }
        let member_id = v.member.id.as_str();
        db::lock_for_contact(txn, member_id, &c.id).await?;
        let in_control = engagement::in_control_group(&c.id, member_id, c.control_share_bp.max(0) as u32);
        let recent = db::recent_messages(txn, member_id, &c.channel, as_of - self.engagement.frequency_window).await?;
        let so_far = db::count_outcome(txn, &c.id, ContactOutcome::Contacted.as_str()).await?;
        let budget = (c.budget_contacts > 0).then_some(c.budget_contacts as u64);
        let outcome = engagement::decide_contact(in_control, recent, self.engagement.frequency_cap, so_far, budget);
        let coupon_code = match (c.action_kind == COUPON, outcome == ContactOutcome::Contacted, code) {
            (true, true, None) => return Ok(None),
            (true, true, Some(code)) => Some(code.to_owned()),
            _ => None,
        };
        let first = db::decide(
            txn,
            contact::Model {
                campaign_id: c.id.clone(),
                member_id: member_id.to_owned(),
                outcome: outcome.as_str().to_owned(),
                decided_at: as_of,
                coupon_code: coupon_code.clone(),
            },
        )
        .await?;
        if !first {
            return Ok(None);
        }
        // Published once, with the decision: a repeated run finds it decided above.
        let lifecycle = facts(&self.rules, v, as_of).lifecycle;
        events::campaign_member_decided(
            c,
            member_id,
            outcome,
            lifecycle.as_str(),
            as_of,
            as_of + self.engagement.attribution_window,
        )
        .publish(txn, member_id)
        .await?;
        if outcome != ContactOutcome::Contacted {
            return Ok(None);
        }
        let mut version = 0;
        let mut granted = 0;
        if c.action_kind == "bonus_points" && c.bonus_points > 0 {
            match points::grant_in(
                txn,
                &self.rules,
                &v.member,
                c.bonus_points,
                &format!("campaign:{}", c.id),
                as_of,
            )
            .await
            {
                Ok(standing) => {
                    version = standing.version;
                    granted = c.bonus_points;
                }
                // A full balance takes no bonus; the message still goes out.
                Err(ServiceError::FailedPrecondition(_)) => {}
                Err(other) => return Err(other),
            }
        }
        let mut context = self.message_context(v, as_of, granted);
        context.coupon_code = coupon_code.unwrap_or_default();
        let body = engagement::render(&c.message_template, &context);
        db::insert_message(
            txn,
            message::Model {
                id: store::new_id(),
                campaign_id: c.id.clone(),
                member_id: member_id.to_owned(),
                channel: c.channel.clone(),
                body,
                created_at: as_of,
                sent_at: None,
                attempts: 0,
                next_attempt_at: None,
                dead_at: None,
            },
        )
        .await?;
        Ok(Some(version))
    }

    fn message_context(&self, v: &MemberView, as_of: DateTime<Utc>, points: i64) -> MessageContext {
        let rules = &self.rules;
        let level = rules.level_of(&v.member.tier);
        let (next_tier, distance) = match rules.ladder.get(level + 1) {
            Some(next) => {
                let records: Vec<_> = v.purchases.iter().map(|p| (p.occurred_at, p.amount_minor)).collect();
                let missing = (next.threshold_minor - rules.spend(&records, as_of)).max(0);
                (
                    next.name.clone(),
                    engagement::format_money(missing, rules.minor_exponent, &rules.currency),
                )
            }
            None => (String::new(), String::new()),
        };
        MessageContext {
            tier: v.member.tier.clone(),
            next_tier,
            distance,
            points,
            coupon_code: String::new(),
        }
    }

    /// Instant triggers: a recorded payment (and a tier upgrade it caused) contacts
    /// the member for every running campaign with that trigger whose window holds
    /// `as_of` and whose segment the member is in. Runs in the payment's
    /// transaction; the member's version afterwards if a bonus changed it.
    pub(crate) async fn react_to_payment(
        &self,
        txn: &DatabaseTransaction,
        member_id: &str,
        upgraded: bool,
        as_of: DateTime<Utc>,
    ) -> ServiceResult<Option<i64>> {
        self.react(txn, member_id, as_of, |t| {
            t == TriggerKind::Purchase || (upgraded && t == TriggerKind::TierUpgrade)
        })
        .await
    }

    /// Contacts the member for every running campaign whose trigger `wanted`
    /// accepts, whose window holds `as_of` and whose segment the member is in, in
    /// the caller's transaction. Each campaign decides for a member once, so the
    /// same event arriving again contacts nobody twice. The member's version
    /// afterwards if a bonus changed it.
    pub(crate) async fn react(
        &self,
        txn: &DatabaseTransaction,
        member_id: &str,
        as_of: DateTime<Utc>,
        wanted: impl Fn(TriggerKind) -> bool,
    ) -> ServiceResult<Option<i64>> {
        let running = db::campaigns_in(txn, CampaignState::Running.as_str()).await?;
        let wanted: Vec<&campaign::Model> = running
            .iter()
            .filter(|c| {
                TriggerKind::parse(&c.trigger_kind).is_some_and(&wanted)
                    && c.window_start <= as_of
                    && as_of < c.window_end
            })
            .collect();
        if wanted.is_empty() {
            return Ok(None);
        }
        let Some(member) = store::find_member(txn, member_id).await? else {
            return Ok(None);
        };
        if member.merged_into.is_some() {
            return Ok(None);
        }
        let mut view = store::view(txn, member).await?;
        let mut version = None;
        for c in wanted {
            let Some(segment) = db::find_segment(txn, &c.segment_id).await? else {
                continue;
            };
            if !segment_rule(&segment)?.matches(&facts(&self.rules, &view, as_of)) {
                continue;
            }
            // Catalog gives a member the same code again, so asking inside the
            // transaction is safe; without an answer the member stays undecided and
            // its next trigger tries again.
            let code = if wants_code(c, &view) {
                match self.codes_for(c, std::slice::from_ref(&view)).await {
                    Some(codes) => codes.get(&view.member.id).cloned(),
                    None => None,
                }
            } else {
                None
            };
            if let Some(v) = self.contact(txn, c, &view, as_of, code.as_deref()).await?
                && v > 0
            {
                version = Some(v);
                if let Some(member) = store::find_member(txn, member_id).await? {
                    view.member = member;
                }
            }
        }
        Ok(version)
    }

    /// Contacts the member for the running overdue campaigns (analytics found it
    /// overdue against its own purchase cycle), in the caller's transaction.
    pub(crate) async fn react_to_overdue(
        &self,
        txn: &DatabaseTransaction,
        member_id: &str,
        as_of: DateTime<Utc>,
    ) -> ServiceResult<Option<i64>> {
        self.react(txn, member_id, as_of, |t| t == TriggerKind::Overdue).await
    }

    /// Finds members whose lifecycle state changed since the last run (time passing
    /// or a purchase), while a lifecycle-change campaign runs: records the new state, publishes `LifecycleChanged` and starts
    /// the lifecycle-change campaigns for them, one member per transaction. A member
    /// seen for the first time has its state recorded without a trigger. Returns
    /// the members found changed.
    async fn track_lifecycle(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let page = Page::parse(SCAN_BATCH, "", "lifecycle-scan")?;
        let mut cursor = None;
        let mut changed = 0;
        loop {
            let rows = store::list_members(
                &self.db,
                &page.continued_after(cursor.clone()),
                &MemberFilter::default(),
            )
            .await?;
            let exhausted = rows.len() as u64 <= page.size;
            for row in rows.into_iter().take(page.size as usize) {
                cursor = Some(row.id.clone());
                let paid: Vec<DateTime<Utc>> = loyalty::purchases_after(&self.db, &row.id, None)
                    .await?
                    .iter()
                    .filter(|p| p.kind == PurchaseKind::Paid.as_str() && p.occurred_at <= as_of)
                    .map(|p| p.occurred_at)
                    .collect();
                let now_state = self.rules.lifecycle(&paid, as_of).as_str();
                let Some(seen) = identity::seen_lifecycle(&self.db, &row.id).await? else {
                    identity::first_lifecycle(&self.db, &row.id, now_state, as_of).await?;
                    continue;
                };
                if seen == now_state {
                    continue;
                }
                let txn = retail_kit::db::begin_write(&self.db).await?;
                if !identity::move_lifecycle(&txn, &row.id, &seen, now_state, as_of).await? {
                    continue;
                }
                events::lifecycle_changed(&row.id, &seen, now_state, as_of)
                    .publish(&txn, &row.id)
                    .await?;
                let version = self
                    .react(&txn, &row.id, as_of, |t| t == TriggerKind::LifecycleChange)
                    .await?;
                txn.commit().await?;
                changed += 1;
                if let Some(version) = version {
                    self.forget_member(&row.id, version, false).await;
                }
            }
            if exhausted {
                break;
            }
        }
        self.log.committed();
        Ok(changed)
    }

    /// Hands up to `limit` messages due for a try to the sender: each is claimed
    /// (its try counted, so replicas never try it at once), then marked sent when
    /// the sender took it, or else given its next try after the backoff, or
    /// dead-lettered after the last. Recipients and bodies are never logged.
    pub async fn deliver(&self, limit: u64) -> ServiceResult<u64> {
        let policy = self.sender.retry();
        let mut sent = 0;
        for m in db::pending_messages(&self.db, Utc::now(), limit).await? {
            // A claim outlives any try; a replica that died mid-try leaves the
            // message to be tried again once it runs out.
            let lease = Utc::now() + Duration::minutes(5);
            if !db::claim_message(&self.db, &m, lease).await? {
                continue;
            }
            let attempt = u32::try_from(m.attempts + 1).unwrap_or(u32::MAX);
            let outgoing = OutgoingMessage {
                recipient: self.recipient(&m.member_id, &m.channel).await?,
                id: m.id,
                campaign_id: m.campaign_id,
                member_id: m.member_id,
                channel: m.channel,
                body: m.body,
                attempt,
            };
            let result = self.sender.send(&outgoing).await;
            let now = retail_kit::convert::now();
            match result {
                Ok(()) => {
                    db::mark_message_sent(&self.db, &outgoing.id, now).await?;
                    sent += 1;
                }
                Err(e) if attempt >= policy.max_attempts => {
                    db::mark_message_failed(&self.db, &outgoing.id, None, now).await?;
                    tracing::warn!(message_id = %outgoing.id, attempt, error = %e, "message dead-lettered after its last try");
                }
                Err(e) => {
                    let wait = retail_kit::webhook::backoff(policy.backoff_base, policy.backoff_max, attempt);
                    let next = now + Duration::from_std(wait).unwrap_or_else(|_| Duration::hours(1));
                    db::mark_message_failed(&self.db, &outgoing.id, Some(next), now).await?;
                    tracing::warn!(message_id = %outgoing.id, attempt, error = %e, "message not delivered; tried again later");
                }
            }
        }
        Ok(sent)
    }

    /// The member's address for `channel` while the member is live and consents to
    /// the channel.
    async fn recipient(&self, member_id: &str, channel: &str) -> ServiceResult<Option<String>> {
        let kind = match channel {
            "sms" => "phone",
            "email" => "email",
            _ => return Ok(None),
        };
        let Some(member) = store::find_member(&self.db, member_id).await? else {
            return Ok(None);
        };
        let view = store::view(&self.db, member).await?;
        if view.member.erased_at.is_some() || !consented(&view, channel) {
            return Ok(None);
        }
        Ok(view
            .identifiers
            .iter()
            .find(|i| i.kind == kind)
            .map(|i| i.value.clone()))
    }

    /// The campaign's results at `as_of`: each reached and each control member's
    /// purchases (paid minus refunded) from the decision until the attribution
    /// window ends (or `as_of`, if earlier).
    pub(crate) async fn campaign_report(&self, id: &str, as_of: DateTime<Utc>) -> ServiceResult<CampaignReport> {
        let (c, _, _) = self.campaign(id).await?;
        let mut groups = Vec::new();
        for outcome in [ContactOutcome::Contacted, ContactOutcome::Control] {
            let mut group = Vec::new();
            for d in db::decided(&self.db, id, outcome.as_str()).await? {
                let until = (d.decided_at + self.engagement.attribution_window).min(as_of);
                let mut a = Attributed::default();
                for p in loyalty::purchases_after(&self.db, &d.member_id, None).await? {
                    if p.occurred_at < d.decided_at || p.occurred_at > until {
                        continue;
                    }
                    if p.kind == PurchaseKind::Paid.as_str() {
                        a.orders += 1;
                    }
                    a.revenue_minor = a.revenue_minor.saturating_add(p.amount_minor);
                }
                group.push(a);
            }
            groups.push(group);
        }
        let control = groups.pop().unwrap_or_default();
        let reached = groups.pop().unwrap_or_default();
        Ok(engagement::campaign_report(
            &reached,
            &control,
            c.cost_per_contact_minor,
        ))
    }

    pub(crate) async fn messages(&self, campaign_id: &str, page: Page) -> ServiceResult<(Vec<message::Model>, String)> {
        if db::find_campaign(&self.db, campaign_id).await?.is_none() {
            return Err(campaign_not_found(campaign_id));
        }
        let rows = db::sent_messages(&self.db, campaign_id, &page).await?;
        Ok(page.finish(rows, |m| m.id.clone()))
    }
}

/// The shared default sender.
pub(crate) fn default_sender() -> Arc<dyn MessageSender> {
    Arc::new(LogSender)
}

//! The gRPC adapter of loyalty: purchases and refunds, the points ledger, tiers, and
//! the periodic jobs (lot expiry, tier re-evaluation).
//!
//! Every change runs in one transaction that also writes its ledger entries, tier
//! changes and events; the cache forgets the member after the commit. The balance
//! can only be lowered by a conditional update, so concurrent redemptions can never
//! take it below zero (a CHECK constraint stands behind it).
//!
//! Amounts are bounded by the suite's [`MAX_AMOUNT_MINOR`](retail_kit::money::MAX_AMOUNT_MINOR)
//! and balances by [`points::MAX_POINTS`]: a payment earns at most what still fits
//! below the cap (the rest is not earned, and the purchase records what was), a
//! grant that would pass it is refused, and the database refuses a balance above
//! it, so no balance can overflow.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prost::Message;
use retail_kit::auth::Principal;
use retail_kit::convert::{from_timestamp, timestamp};
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::events;
use retail_kit::events::entity::outbox;
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::events as ev;
use retail_proto::membership as pb;
use retail_proto::membership::loyalty_service_server::LoyaltyService;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseTransaction};
use tonic::{Request, Response, Status};

use crate::api::State;
use crate::domain::points::{self, Lot};
use crate::domain::rules::LoyaltyRules;
use crate::domain::tiers::percentile_levels;
use crate::store::{self, Standing, loyalty};

pub const POINTS_WRITE: &str = "membership.points.write";

#[derive(Debug, Clone)]
pub struct LoyaltyApi {
    state: Arc<State>,
}

impl LoyaltyApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn member_id(field: &str, name: &str) -> ServiceResult<String> {
    let id = name
        .strip_prefix("members/")
        .ok_or_else(|| ServiceError::invalid(field, "must be members/{id}"))?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ServiceError::invalid(field, "must be members/{id} with a UUID id"))
}

async fn live(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<store::member::Model> {
    match store::find_member(conn, id).await? {
        Some(m) if m.erased_at.is_none() => Ok(m),
        _ => Err(ServiceError::not_found("member", format!("members/{id}"))),
    }
}

fn lots_of(rows: &[store::points_lot::Model]) -> Vec<Lot<String>> {
    rows.iter()
        .map(|l| Lot {
            id: l.id.clone(),
            expires_at: l.expires_at,
            remaining: l.remaining,
        })
        .collect()
}

/// Takes planned points out of lots, writing one entry per lot; a lot that changed
/// under the plan aborts the transaction.
async fn take(
    txn: &DatabaseTransaction,
    member_id: &str,
    plan: &[(String, i64)],
    kind: &str,
    reference: &str,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    for (lot_id, n) in plan {
        if !loyalty::take_from_lot(txn, lot_id, *n).await? {
            return Err(ServiceError::Aborted("points changed concurrently, retry".into()));
        }
        loyalty::insert_entry(txn, member_id, kind, -n, reference, lot_id, now).await?;
    }
    Ok(())
}

async fn balance_of(conn: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> ServiceResult<pb::PointsBalance> {
    let member = live(conn, id).await?;
    let lots = loyalty::open_lots(conn, id).await?;
    Ok(pb::PointsBalance {
        balance: member.points_balance,
        debt: member.points_debt,
        lots: lots
            .iter()
            .filter(|l| l.expires_at > now)
            .map(|l| pb::PointsLot {
                remaining: l.remaining,
                expire_time: Some(timestamp(l.expires_at)),
            })
            .collect(),
    })
}

async fn publish_points(
    txn: &DatabaseTransaction,
    id: &str,
    kind: &str,
    points: i64,
    reference: &str,
    standing: &Standing,
) -> ServiceResult<()> {
    points_changed(id, kind, points, reference, standing)
        .insert(txn)
        .await?;
    Ok(())
}

/// The outbox row of a `PointsChanged` event.
fn points_changed(id: &str, kind: &str, points: i64, reference: &str, standing: &Standing) -> outbox::ActiveModel {
    let event = ev::PointsChanged {
        member_id: id.to_owned(),
        kind: kind.to_owned(),
        points,
        balance: standing.points_balance,
        debt: standing.points_debt,
        reference: reference.to_owned(),
    };
    events::outbox_row("retail.events.v1.PointsChanged", id, event.encode_to_vec())
}

/// The outbox row of a `TierChanged` event.
fn tier_changed_event(id: &str, from: &str, to: &str, reason: &str) -> outbox::ActiveModel {
    let event = ev::TierChanged {
        member_id: id.to_owned(),
        from_tier: from.to_owned(),
        to_tier: to.to_owned(),
        reason: reason.to_owned(),
    };
    events::outbox_row("retail.events.v1.TierChanged", id, event.encode_to_vec())
}

/// Points to credit, and what they come from.
struct Earning<'a> {
    points: i64,
    /// `earn` or `grant`.
    kind: &'a str,
    /// The earning order ('' for grants).
    order_id: &'a str,
    reference: &'a str,
    /// When they were earned: the lot's expiry counts from here.
    at: DateTime<Utc>,
}

/// Earned points as they are credited: the debt is repaid first, the rest makes a
/// new lot with its ledger entry.
struct Credit {
    repaid: i64,
    credit: i64,
    /// The lot and its entry, if anything is left after the debt.
    rows: Option<(store::points_lot::ActiveModel, store::points_entry::ActiveModel)>,
}

fn credit_of(rules: &LoyaltyRules, member_id: &str, debt: i64, e: &Earning<'_>) -> Credit {
    let (repaid, credit) = points::settle_debt(debt, e.points);
    let rows = (credit > 0).then(|| {
        let lot_id = store::new_id();
        let entry = loyalty::entry_row(member_id, e.kind, credit, e.reference, &lot_id, e.at);
        let lot = store::points_lot::Model {
            id: lot_id,
            member_id: member_id.to_owned(),
            order_id: e.order_id.to_owned(),
            earned_at: e.at,
            expires_at: points::lot_expiry(e.at, rules.lot_months),
            points: credit,
            remaining: credit,
        };
        (lot.into(), entry)
    });
    Credit { repaid, credit, rows }
}

/// Credits granted points: debt first, the rest as a new lot. FAILED_PRECONDITION
/// if the balance would pass [`points::MAX_POINTS`].
async fn earn(
    txn: &DatabaseTransaction,
    rules: &LoyaltyRules,
    member: &store::member::Model,
    e: Earning<'_>,
) -> ServiceResult<Standing> {
    let Credit { repaid, credit, rows } = credit_of(rules, &member.id, member.points_debt, &e);
    if member
        .points_balance
        .checked_add(credit)
        .is_none_or(|balance| balance > points::MAX_POINTS)
    {
        return Err(balance_full());
    }
    if let Some((lot, entry)) = rows {
        lot.insert(txn).await?;
        entry.insert(txn).await?;
    }
    // The credit is the member's change: it bumps the version the caller commits.
    let standing = loyalty::credit(txn, &member.id, credit, repaid, e.at).await?;
    publish_points(txn, &member.id, e.kind, credit, e.reference, &standing).await?;
    Ok(standing)
}

fn balance_full() -> ServiceError {
    ServiceError::FailedPrecondition(format!(
        "the points balance would pass its maximum of {}",
        points::MAX_POINTS
    ))
}

/// What recording a purchase or refund did.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Points earned (positive) or reversed (negative).
    pub points: i64,
    /// The member's tier afterwards.
    pub tier: String,
    /// The member's version the transaction commits.
    pub version: i64,
    /// Whether this recording moved the member to another tier.
    pub tier_changed: bool,
}

/// Applies a paid order or a refund: the one code path for the RPC and order events.
pub async fn record(
    txn: &DatabaseTransaction,
    rules: &LoyaltyRules,
    member_id: &str,
    input: &PurchaseInput,
    now: DateTime<Utc>,
) -> ServiceResult<Recorded> {
    if !input.refund {
        return match record_payments(txn, rules, &[(member_id.to_owned(), input.clone())], now)
            .await?
            .pop()
        {
            Some(Paid::Recorded(recorded)) => Ok(recorded),
            Some(Paid::AlreadyRecorded) => Err(ServiceError::AlreadyExists("this purchase is already recorded".into())),
            Some(Paid::NoMember) | None => Err(ServiceError::not_found("member", format!("members/{member_id}"))),
        };
    }
    let member = live(txn, member_id).await?;
    let Some(paid) = loyalty::find_purchase(txn, &input.order_id, "paid", "").await? else {
        return Err(ServiceError::FailedPrecondition(
            "the order has no recorded payment".into(),
        ));
    };
    if paid.member_id != member_id {
        return Err(ServiceError::FailedPrecondition(
            "the order belongs to another member".into(),
        ));
    }
    let refunds = loyalty::refunds_of_order(txn, &input.order_id).await?;
    // Saturating: rows written before amounts were bounded may hold anything.
    let refunded_before = refunds.iter().fold(0i64, |sum, r| sum.saturating_sub(r.amount_minor));
    let Some(refunded_total) = refunded_before
        .checked_add(input.amount_minor)
        .filter(|total| *total <= paid.amount_minor)
    else {
        return Err(ServiceError::invalid(
            "purchase.amount",
            "refunds would exceed the paid amount",
        ));
    };
    let reversed_before = refunds.iter().fold(0i64, |sum, r| sum.saturating_sub(r.points));
    let to_reverse = points::points_to_reverse(paid.points, reversed_before, paid.amount_minor, refunded_total);
    loyalty::insert_purchase(
        txn,
        store::purchase::Model {
            id: store::new_id(),
            member_id: member_id.to_owned(),
            order_id: input.order_id.clone(),
            kind: "refund".into(),
            reference: input.reference.clone(),
            amount_minor: -input.amount_minor,
            currency: rules.currency.clone(),
            channel: input.channel.clone(),
            occurred_at: input.at,
            points: -to_reverse,
        },
    )
    .await?;
    // Points taken back from the balance, if any were to be reversed.
    let mut reversed = None;
    if to_reverse > 0 {
        let lots = loyalty::open_lots(txn, member_id).await?;
        let own_lot = lots.iter().find(|l| l.order_id == input.order_id).map(|l| l.id.clone());
        // Expired lots are gone for good: only usable points are reversed.
        let plan = points::plan_reversal(&lots_of(&lots), own_lot.as_ref(), to_reverse, now);
        let taken: i64 = plan.from_lots.iter().map(|(_, n)| n).sum();
        if taken > 0 && !loyalty::debit(txn, member_id, taken).await? {
            return Err(ServiceError::Aborted("points changed concurrently, retry".into()));
        }
        take(txn, member_id, &plan.from_lots, "reverse", &input.order_id, now).await?;
        if plan.debt > 0 {
            loyalty::add_debt(txn, member_id, plan.debt).await?;
        }
        reversed = Some(taken);
    }
    let standing = store::touch(txn, member_id, now).await?;
    if let Some(taken) = reversed {
        publish_points(txn, member_id, "reverse", -taken, &input.order_id, &standing).await?;
    }
    Ok(Recorded {
        points: -to_reverse,
        tier: member.tier,
        version: standing.version,
        tier_changed: false,
    })
}

/// What recording one payment came to.
#[derive(Debug, Clone)]
pub enum Paid {
    Recorded(Recorded),
    /// The order's payment is recorded already (through the admin RPC, by an
    /// earlier pass over the log, or earlier in the same batch): it counts once.
    AlreadyRecorded,
    /// No such member, or one erased since.
    NoMember,
}

/// A member's payments of one batch, as they will be written.
struct Account {
    /// The member as read, with balance, debt and tier as the batch leaves them.
    member: store::member::Model,
    read_version: i64,
    credit: i64,
    repaid: i64,
    /// Purchases in the spend window (and possibly older ones, which the window
    /// leaves out), the batch's included.
    spend: Vec<(DateTime<Utc>, i64)>,
    purchases: Vec<store::purchase::ActiveModel>,
    lots: Vec<store::points_lot::ActiveModel>,
    entries: Vec<store::points_entry::ActiveModel>,
    tier_changes: Vec<store::tier_change::ActiveModel>,
    events: Vec<outbox::ActiveModel>,
}

/// Records paid orders, each for its member (`(member id, payment)`), with the
/// effect of recording them one by one in order: the purchase, points with the
/// tier multiplier of the moment (debt repaid first, the rest as a lot), and an
/// immediate upgrade when the qualifying spend reaches a higher tier (docs/domain.md,
/// Points and Tiers). Downgrades wait for the re-evaluation.
///
/// All of it takes two reads (the members, locked for the transaction; their
/// purchases in the spend window with any earlier payment of the same orders) and
/// one guarded write for up to [`MEMBERS_PER_WRITE`] members: their credits, each
/// conditioned on the version read, with every row they record. The lock makes other
/// writers of the members wait; the version stays the guard (a member changed anyway
/// fails the batch, ABORTED, nothing written), and a payment of the same order
/// recorded meanwhile for another member fails it too (ALREADY_EXISTS). Applied
/// again, the batch reads what they wrote.
pub async fn record_payments(
    txn: &DatabaseTransaction,
    rules: &LoyaltyRules,
    payments: &[(String, PurchaseInput)],
    now: DateTime<Utc>,
) -> ServiceResult<Vec<Paid>> {
    if payments.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = payments.iter().map(|(m, _)| m.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let orders: Vec<String> = payments.iter().map(|(_, p)| p.order_id.clone()).collect();
    // The earliest window start any payment's upgrade check counts from (`None`:
    // every purchase, for a lifetime window); percentile tiers need no spend here.
    let spend_after = rules
        .percentile
        .is_none()
        .then(|| {
            payments
                .iter()
                .map(|(_, p)| rules.spend_window.start(now.max(p.at)))
                .min()
        })
        .flatten();
    let members = loyalty::live_members(txn, &ids).await?;
    let known = loyalty::purchases_for_payments(txn, &ids, spend_after, &orders).await?;
    let mut recorded: std::collections::HashSet<String> = known
        .iter()
        .filter(|p| p.kind == "paid" && p.reference.is_empty())
        .map(|p| p.order_id.clone())
        .collect();
    let mut accounts: std::collections::HashMap<String, Account> = members
        .into_iter()
        .map(|member| {
            let spend = known
                .iter()
                .filter(|p| p.member_id == member.id)
                .map(|p| (p.occurred_at, p.amount_minor))
                .collect();
            let account = Account {
                read_version: member.version,
                member,
                credit: 0,
                repaid: 0,
                spend,
                purchases: Vec::new(),
                lots: Vec::new(),
                entries: Vec::new(),
                tier_changes: Vec::new(),
                events: Vec::new(),
            };
            (account.member.id.clone(), account)
        })
        .collect();
    // Members in the order of their first payment: their rows are written in that order.
    let mut written: Vec<String> = Vec::new();
    let mut outcomes = Vec::with_capacity(payments.len());
    for (member_id, input) in payments {
        if recorded.contains(&input.order_id) {
            outcomes.push(Paid::AlreadyRecorded);
            continue;
        }
        let Some(account) = accounts.get_mut(member_id) else {
            outcomes.push(Paid::NoMember);
            continue;
        };
        recorded.insert(input.order_id.clone());
        if !written.contains(member_id) {
            written.push(member_id.clone());
        }
        // What the balance still holds below its cap (the debt is repaid first): a
        // payment earns no more, so no balance can pass it.
        let room = points::MAX_POINTS
            .saturating_sub(account.member.points_balance)
            .saturating_add(account.member.points_debt)
            .max(0);
        let earned = points::earned_points(
            input.amount_minor,
            rules.minor_exponent,
            rules.base_rate,
            rules.multiplier(&account.member.tier),
        )
        .min(room);
        account.purchases.push(
            store::purchase::Model {
                id: store::new_id(),
                member_id: member_id.clone(),
                order_id: input.order_id.clone(),
                kind: "paid".into(),
                reference: String::new(),
                amount_minor: input.amount_minor,
                currency: rules.currency.clone(),
                channel: input.channel.clone(),
                occurred_at: input.at,
                points: earned,
            }
            .into(),
        );
        // The lot dates from the payment, so a backfilled order expires when it should.
        let earning = Earning {
            points: earned,
            kind: "earn",
            order_id: &input.order_id,
            reference: &input.order_id,
            at: input.at,
        };
        let Credit { repaid, credit, rows } = credit_of(rules, member_id, account.member.points_debt, &earning);
        if let Some((lot, entry)) = rows {
            account.lots.push(lot);
            account.entries.push(entry);
        }
        account.credit += credit;
        account.repaid += repaid;
        account.member.points_balance += credit;
        account.member.points_debt -= repaid;
        let standing = Standing {
            points_balance: account.member.points_balance,
            points_debt: account.member.points_debt,
            version: account.read_version + 1,
        };
        account
            .events
            .push(points_changed(member_id, "earn", credit, &input.order_id, &standing));
        account.spend.push((input.at, input.amount_minor));
        // Upgrades apply at once; downgrades wait for the re-evaluation.
        let mut tier_changed = false;
        if rules.percentile.is_none() {
            let spend = rules.spend(&account.spend, now.max(input.at));
            if let Some(level) = rules.ladder.upgrade(rules.level_of(&account.member.tier), spend) {
                let to = rules.tier_name(level);
                let from = std::mem::replace(&mut account.member.tier, to.clone());
                account
                    .tier_changes
                    .push(loyalty::tier_change_row(member_id, &from, &to, "purchase", now));
                account
                    .events
                    .push(tier_changed_event(member_id, &from, &to, "purchase"));
                tier_changed = true;
            }
        }
        outcomes.push(Paid::Recorded(Recorded {
            points: earned,
            tier: account.member.tier.clone(),
            version: standing.version,
            tier_changed,
        }));
    }
    let written: Vec<Account> = written.iter().filter_map(|id| accounts.remove(id)).collect();
    for batch in written.chunks(MEMBERS_PER_WRITE) {
        write_accounts(txn, batch, now).await?;
    }
    Ok(outcomes)
}

/// Members whose payments one statement writes: a batch of the orders log (up to
/// 500 events) takes a few statements, each well under PostgreSQL's 65,535 parameters.
const MEMBERS_PER_WRITE: usize = 100;

/// Writes the accounts' payments in one guarded write: every member's credit,
/// conditioned on the version read, with every row they record. ABORTED (the
/// caller's transaction rolls back) if any member changed anyway, ALREADY_EXISTS if
/// a payment of one of the orders was recorded meanwhile.
async fn write_accounts(txn: &DatabaseTransaction, accounts: &[Account], now: DateTime<Utc>) -> ServiceResult<()> {
    let credited: Vec<loyalty::Credited<'_>> = accounts
        .iter()
        .map(|a| loyalty::Credited {
            member_id: &a.member.id,
            version: a.read_version,
            credit: a.credit,
            repaid: a.repaid,
            tier: &a.member.tier,
        })
        .collect();
    let write = GuardedWrite::new(loyalty::credit_at_versions(txn.get_database_backend(), &credited, now))
        .insert(accounts.iter().flat_map(|a| a.purchases.iter().cloned()))?
        .insert(accounts.iter().flat_map(|a| a.lots.iter().cloned()))?
        .insert(accounts.iter().flat_map(|a| a.entries.iter().cloned()))?
        .insert(accounts.iter().flat_map(|a| a.tier_changes.iter().cloned()))?
        .insert(accounts.iter().flat_map(|a| a.events.iter().cloned()))?;
    match write.run_in(txn).await {
        Ok(matched) if matched == accounts.len() as u64 => Ok(()),
        Ok(_) => Err(ServiceError::Aborted(
            "a member changed while its payments were recorded; retry".into(),
        )),
        Err(e) if retail_kit::db::is_unique_violation(&e) => {
            Err(ServiceError::AlreadyExists("this purchase is already recorded".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The member's qualifying spend at `as_of`, from the purchases inside the window.
async fn spend_at(
    conn: &impl sea_orm::ConnectionTrait,
    rules: &LoyaltyRules,
    member_id: &str,
    as_of: DateTime<Utc>,
) -> ServiceResult<i64> {
    let purchases = loyalty::purchases_after(conn, member_id, rules.spend_window.start(as_of)).await?;
    let records: Vec<_> = purchases.iter().map(|p| (p.occurred_at, p.amount_minor)).collect();
    Ok(rules.spend(&records, as_of))
}

/// Moves the member from `from` to `to` with its tier change and event; false (and
/// nothing written) if the member is no longer in `from`.
async fn change_tier(
    txn: &DatabaseTransaction,
    member_id: &str,
    from: &str,
    to: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    if !loyalty::set_tier(txn, member_id, from, to, reason, now).await? {
        return Ok(false);
    }
    tier_changed_event(member_id, from, to, reason).insert(txn).await?;
    Ok(true)
}

/// A purchase or refund as the rules see it.
#[derive(Debug, Clone)]
pub struct PurchaseInput {
    pub order_id: String,
    pub amount_minor: i64,
    pub at: DateTime<Utc>,
    pub channel: String,
    pub refund: bool,
    /// The refund's request id ('' for a payment).
    pub reference: String,
}

impl State {
    /// After a committed change: the cache forgets the member (profile and tier) up
    /// to `committed`, the version the change committed (read when the caller does
    /// not know it), and subscribers wake up.
    pub(crate) async fn finish(&self, member_id: &str, committed: Option<i64>) {
        let version = match committed {
            Some(version) => Some(version),
            None => match store::find_member(&self.db, member_id).await {
                Ok(member) => member.map(|m| m.version),
                Err(e) => {
                    // The cached entries stay until their time to live runs out.
                    tracing::warn!(member_id, error = %e, "the member's version could not be read to invalidate the cache");
                    None
                }
            },
        };
        if let Some(version) = version {
            self.forget_member(member_id, version, true).await;
        }
        self.log.committed();
    }

    /// Writes off every expired lot at `as_of`; returns the points written off.
    pub async fn expire_points(&self, as_of: DateTime<Utc>) -> ServiceResult<i64> {
        let mut total = 0;
        for member_id in loyalty::members_with_expired_lots(&self.db, as_of).await? {
            let (written_off, committed) = idempotency::transaction(&self.db, |txn| {
                let member_id = member_id.clone();
                Box::pin(async move {
                    let lots = loyalty::open_lots(txn, &member_id).await?;
                    let plan = points::plan_expiry(&lots_of(&lots), as_of);
                    let sum: i64 = plan.iter().map(|(_, n)| n).sum();
                    if sum == 0 {
                        return Ok((0, None));
                    }
                    if !loyalty::debit(txn, &member_id, sum).await? {
                        return Err(ServiceError::Aborted("points changed concurrently, retry".into()));
                    }
                    take(txn, &member_id, &plan, "expire", "lot expiry", as_of).await?;
                    let standing = store::touch(txn, &member_id, as_of).await?;
                    publish_points(txn, &member_id, "expire", -sum, "lot expiry", &standing).await?;
                    Ok((sum, Some(standing.version)))
                })
            })
            .await?;
            total += written_off;
            if committed.is_some() {
                self.finish(&member_id, committed).await;
            }
        }
        Ok(total)
    }

    /// The periodic re-evaluation: tiers move to what the spend earns, downwards by
    /// at most the configured number of levels (or by percentile rank).
    pub async fn reevaluate_tiers(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let rules = &self.rules;
        let mut spends = Vec::new();
        let mut after = String::new();
        loop {
            let ids = loyalty::member_ids_after(&self.db, &after, 500).await?;
            let Some(last) = ids.last().cloned() else { break };
            for id in ids {
                let spend = spend_at(&self.db, rules, &id, as_of).await?;
                spends.push((id, spend));
            }
            after = last;
        }
        let targets: Vec<(String, usize)> = match &rules.percentile {
            Some(shares) => percentile_levels(&spends, shares),
            None => spends
                .iter()
                .map(|(id, spend)| (id.clone(), rules.ladder.level_for_spend(*spend)))
                .collect(),
        };
        let mut changed = 0;
        for (id, earned) in targets {
            let Some(member) = store::find_member(&self.db, &id).await? else {
                continue;
            };
            let current = rules.level_of(&member.tier);
            let next = if earned >= current {
                earned
            } else {
                earned.max(current.saturating_sub(rules.max_steps_down))
            };
            if next == current {
                continue;
            }
            let (from, to) = (member.tier.clone(), rules.tier_name(next));
            // From the tier read only: a payment that upgraded the member since
            // keeps its upgrade.
            let committed = idempotency::transaction(&self.db, |txn| {
                let (id, from, to) = (id.clone(), from.clone(), to.clone());
                Box::pin(async move {
                    if !change_tier(txn, &id, &from, &to, "reevaluation", as_of).await? {
                        return Ok(None);
                    }
                    Ok(Some(store::touch(txn, &id, as_of).await?.version))
                })
            })
            .await?;
            if committed.is_some() {
                self.finish(&id, committed).await;
                changed += 1;
            }
        }
        Ok(changed)
    }
}

fn positive_points(field: &str, points: i64) -> ServiceResult<()> {
    if points <= 0 {
        return Err(ServiceError::invalid(field, "must be positive"));
    }
    if points > 1_000_000_000 {
        return Err(ServiceError::invalid(field, "must be at most 1,000,000,000"));
    }
    Ok(())
}

fn reason(field: &str, raw: &str) -> ServiceResult<String> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
        return Err(ServiceError::invalid(field, "must be 1-200 characters"));
    }
    Ok(t.to_owned())
}

#[tonic::async_trait]
impl LoyaltyService for LoyaltyApi {
    async fn list_tiers(&self, request: Request<pb::ListTiersRequest>) -> Rpc<pb::ListTiersResponse> {
        Principal::of(&request)?.require_scope(crate::api::READ)?;
        let rules = &self.state.rules;
        ok(pb::ListTiersResponse {
            tiers: rules
                .ladder
                .tiers()
                .iter()
                .map(|t| pb::Tier {
                    name: t.name.clone(),
                    threshold: Some(retail_proto::common::Money {
                        currency_code: rules.currency.clone(),
                        amount_minor: t.threshold_minor,
                    }),
                    points_multiplier_bp: t.multiplier.0,
                    free_shipping: t.free_shipping,
                    discount_bp: t.discount_bp,
                    privileges: t.privileges.clone(),
                })
                .collect(),
            mode: if rules.percentile.is_some() {
                "percentile"
            } else {
                "absolute"
            }
            .into(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn record_purchase(&self, request: Request<pb::RecordPurchaseRequest>) -> Rpc<pb::RecordPurchaseResponse> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(POINTS_WRITE)?;
        let req = request.into_inner();
        let id = member_id("name", &req.name)?;
        let Some(p) = req.purchase.as_ref() else {
            return Err(ServiceError::invalid("purchase", "is required").into());
        };
        let mut v = Violations::new();
        if p.order_id.is_empty()
            || p.order_id.len() > 64
            || !p
                .order_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            v.add(
                "purchase.order_id",
                "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'",
            );
        }
        let amount = p.amount.as_ref();
        match amount {
            None => v.add("purchase.amount", "is required"),
            Some(m) if m.currency_code != s.rules.currency => {
                v.add("purchase.amount.currency_code", format!("must be {}", s.rules.currency))
            }
            Some(m) => {
                v.check(retail_kit::money::positive_amount(
                    "purchase.amount.amount_minor",
                    m.amount_minor,
                ));
            }
        }
        let at = match &p.occur_time {
            None => Some(Utc::now()),
            Some(ts) => match from_timestamp(ts) {
                Some(t) if t <= Utc::now() + chrono::Duration::minutes(5) => Some(t),
                _ => {
                    v.add("purchase.occur_time", "must be a valid time, not in the future");
                    None
                }
            },
        };
        // Checked with or without `refund`, like every request id, though only a
        // refund keeps it.
        if req.refund && req.request_id.is_empty() {
            v.add("request_id", "a refund needs a request id of 1-128 characters");
        } else {
            v.check(idempotency::check_request_id("request_id", &req.request_id));
        }
        if p.channel.len() > 32 {
            v.add("purchase.channel", "must be at most 32 characters");
        }
        v.finish()?;
        let (Some(amount), Some(at)) = (amount, at) else {
            return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")).into());
        };
        let input = PurchaseInput {
            order_id: p.order_id.clone(),
            amount_minor: amount.amount_minor,
            at,
            channel: p.channel.clone(),
            refund: req.refund,
            reference: if req.refund {
                req.request_id.clone()
            } else {
                String::new()
            },
        };
        let now = Utc::now();
        let rules = s.rules.clone();
        let outcome = idempotency::transaction(&s.db, |txn| {
            let (rules, input, id) = (rules.clone(), input.clone(), id.clone());
            Box::pin(async move { record(txn, &rules, &id, &input, now).await })
        })
        .await;
        let (points_change, tier, committed) = match outcome {
            Ok(done) => (done.points, done.tier, Some(done.version)),
            // The same order (or refund request) again: report what it did the first time.
            Err(ServiceError::AlreadyExists(_)) => {
                let kind = if input.refund { "refund" } else { "paid" };
                let existing = loyalty::find_purchase(&s.db, &input.order_id, kind, &input.reference)
                    .await?
                    .ok_or_else(|| ServiceError::Aborted("retry".into()))?;
                if existing.member_id != id {
                    return Err(ServiceError::AlreadyExists("the order is recorded for another member".into()).into());
                }
                let member = live(&s.db, &id).await?;
                (existing.points, member.tier, Some(member.version))
            }
            Err(err) => return Err(err.into()),
        };
        s.finish(&id, committed).await;
        ok(pb::RecordPurchaseResponse {
            points_change,
            tier,
            balance: Some(balance_of(&s.db, &id, now).await?),
        })
    }

    async fn grant_points(&self, request: Request<pb::GrantPointsRequest>) -> Rpc<pb::PointsBalance> {
        let s = &self.state;
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(POINTS_WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.GrantPoints", &caller, &req.request_id, &req)?;
        let id = member_id("name", &req.name)?;
        positive_points("points", req.points)?;
        let why = reason("reason", &req.reason)?;
        let now = Utc::now();
        let rules = s.rules.clone();
        let balance = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (id, why, rules) = (id.clone(), why.clone(), rules.clone());
            Box::pin(async move {
                let member = live(txn, &id).await?;
                let grant = Earning {
                    points: req.points,
                    kind: "grant",
                    order_id: "",
                    reference: &why,
                    at: now,
                };
                earn(txn, &rules, &member, grant).await?;
                balance_of(txn, &id, now).await
            })
        })
        .await?;
        s.finish(&id, None).await;
        ok(balance)
    }

    async fn redeem_points(&self, request: Request<pb::RedeemPointsRequest>) -> Rpc<pb::PointsBalance> {
        let s = &self.state;
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(POINTS_WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.RedeemPoints", &caller, &req.request_id, &req)?;
        let id = member_id("name", &req.name)?;
        positive_points("points", req.points)?;
        let why = reason("reason", &req.reason)?;
        let now = Utc::now();
        let balance = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (id, why) = (id.clone(), why.clone());
            Box::pin(async move {
                live(txn, &id).await?;
                // First the balance, with one conditional update: of racing redemptions
                // only those the balance covers get past it.
                if !loyalty::debit(txn, &id, req.points).await? {
                    return Err(ServiceError::FailedPrecondition("insufficient points".into()));
                }
                let lots = loyalty::open_lots(txn, &id).await?;
                let plan = points::plan_redemption(&lots_of(&lots), req.points, now)
                    .map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?;
                take(txn, &id, &plan, "redeem", &why, now).await?;
                let standing = store::touch(txn, &id, now).await?;
                publish_points(txn, &id, "redeem", -req.points, &why, &standing).await?;
                balance_of(txn, &id, now).await
            })
        })
        .await?;
        s.finish(&id, None).await;
        ok(balance)
    }

    async fn get_points_balance(&self, request: Request<pb::GetPointsBalanceRequest>) -> Rpc<pb::PointsBalance> {
        Principal::of(&request)?.require_scope(crate::api::READ)?;
        let id = member_id("name", &request.get_ref().name)?;
        ok(balance_of(&self.state.db, &id, Utc::now()).await?)
    }

    async fn list_points_entries(
        &self,
        request: Request<pb::ListPointsEntriesRequest>,
    ) -> Rpc<pb::ListPointsEntriesResponse> {
        Principal::of(&request)?.require_scope(crate::api::READ)?;
        let req = request.get_ref();
        let id = member_id("parent", &req.parent)?;
        live(&self.state.db, &id).await?;
        let page = Page::parse(req.page_size, &req.page_token, &id)?;
        let rows = loyalty::entries(&self.state.db, &id, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |e| e.id.clone());
        ok(pb::ListPointsEntriesResponse {
            points_entries: rows.iter().map(|e| entry_to_pb(&id, e)).collect(),
            next_page_token,
        })
    }

    async fn list_tier_changes(
        &self,
        request: Request<pb::ListTierChangesRequest>,
    ) -> Rpc<pb::ListTierChangesResponse> {
        Principal::of(&request)?.require_scope(crate::api::READ)?;
        let req = request.get_ref();
        let id = member_id("parent", &req.parent)?;
        live(&self.state.db, &id).await?;
        let page = Page::parse(req.page_size, &req.page_token, &id)?;
        let rows = loyalty::tier_changes(&self.state.db, &id, Some(&page)).await?;
        let (rows, next_page_token) = page.finish(rows, |c| c.id.clone());
        ok(pb::ListTierChangesResponse {
            tier_changes: rows.iter().map(tier_change_to_pb).collect(),
            next_page_token,
        })
    }
}

pub fn entry_to_pb(member_id: &str, e: &store::points_entry::Model) -> pb::PointsEntry {
    pb::PointsEntry {
        name: format!("members/{member_id}/pointsEntries/{}", e.id),
        kind: e.kind.clone(),
        points: e.points,
        reference: e.reference.clone(),
        create_time: Some(timestamp(e.created_at)),
    }
}

pub fn tier_change_to_pb(c: &store::tier_change::Model) -> pb::TierChange {
    pb::TierChange {
        from_tier: c.from_tier.clone(),
        to_tier: c.to_tier.clone(),
        reason: c.reason.clone(),
        create_time: Some(timestamp(c.created_at)),
    }
}

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

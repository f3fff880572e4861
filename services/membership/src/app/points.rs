//! Purchases and refunds, the points ledger and the periodic write-off of expired
//! lots.
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

use chrono::{DateTime, Utc};
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::entity::outbox;
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseTransaction};

use super::{App, live, member_not_found, stored};
use crate::domain::ids::MemberId;
use crate::domain::points::{self, EntryKind, Lot, PurchaseKind};
use crate::domain::rules::LoyaltyRules;
use crate::domain::tiers::TierChangeReason;
use crate::events;
use crate::store::{self, Standing, loyalty};

/// Ledger entries with their kinds.
pub(crate) fn with_kinds(
    rows: Vec<store::points_entry::Model>,
) -> ServiceResult<Vec<(EntryKind, store::points_entry::Model)>> {
    rows.into_iter()
        .map(|e| Ok((stored("points entry kind", &e.kind, EntryKind::parse)?, e)))
        .collect()
}

/// A member's points: balance, debt, and the usable lots (remaining, expiry).
#[derive(Debug, Clone)]
pub(crate) struct Balance {
    pub(crate) balance: i64,
    pub(crate) debt: i64,
    pub(crate) lots: Vec<(i64, DateTime<Utc>)>,
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
    kind: EntryKind,
    reference: &str,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    for (lot_id, n) in plan {
        if !loyalty::take_from_lot(txn, lot_id, *n).await? {
            return Err(ServiceError::Aborted("points changed concurrently, retry".into()));
        }
        loyalty::insert_entry(txn, member_id, kind.as_str(), -n, reference, lot_id, now).await?;
    }
    Ok(())
}

async fn balance_of(conn: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> ServiceResult<Balance> {
    let member = live(conn, id).await?;
    let lots = loyalty::open_lots(conn, id).await?;
    Ok(Balance {
        balance: member.points_balance,
        debt: member.points_debt,
        lots: lots
            .into_iter()
            .filter(|l| l.expires_at > now)
            .map(|l| (l.remaining, l.expires_at))
            .collect(),
    })
}

async fn publish_points(
    txn: &DatabaseTransaction,
    id: &str,
    kind: EntryKind,
    points: i64,
    reference: &str,
    standing: &Standing,
) -> ServiceResult<()> {
    events::points_changed(id, kind, points, reference, standing)
        .publish(txn, id)
        .await?;
    Ok(())
}

/// Points to credit, and what they come from.
struct Earning<'a> {
    points: i64,
    /// [`EntryKind::Earn`] or [`EntryKind::Grant`].
    kind: EntryKind,
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
        let entry = loyalty::entry_row(member_id, e.kind.as_str(), credit, e.reference, &lot_id, e.at);
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

/// Grants `points` inside the caller's transaction with `reference` (a campaign's
/// bonus): debt first, the rest as a new lot, like [`App::grant`].
pub(crate) async fn grant_in(
    txn: &DatabaseTransaction,
    rules: &LoyaltyRules,
    member: &store::member::Model,
    points: i64,
    reference: &str,
    at: DateTime<Utc>,
) -> ServiceResult<Standing> {
    let grant = Earning {
        points,
        kind: EntryKind::Grant,
        order_id: "",
        reference,
        at,
    };
    earn(txn, rules, member, grant).await
}

fn balance_full() -> ServiceError {
    ServiceError::FailedPrecondition(format!(
        "the points balance would pass its maximum of {}",
        points::MAX_POINTS
    ))
}

/// What recording a purchase or refund did.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// Points earned (positive) or reversed (negative).
    pub(crate) points: i64,
    /// The member's tier afterwards.
    pub(crate) tier: String,
    /// The member's version the transaction commits.
    pub(crate) version: i64,
    /// Whether this recording moved the member to another tier.
    pub(crate) tier_changed: bool,
}

/// Applies a paid order or a refund: the one code path for the RPC and order events.
pub(crate) async fn record(
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
            Some(Paid::NoMember) | None => Err(member_not_found(member_id)),
        };
    }
    let member = live(txn, member_id).await?;
    let Some(paid) = loyalty::find_purchase(txn, &input.order_id, PurchaseKind::Paid.as_str(), "").await? else {
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
            kind: PurchaseKind::Refund.as_str().into(),
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
        take(
            txn,
            member_id,
            &plan.from_lots,
            EntryKind::Reverse,
            &input.order_id,
            now,
        )
        .await?;
        if plan.debt > 0 {
            loyalty::add_debt(txn, member_id, plan.debt).await?;
        }
        reversed = Some(taken);
    }
    let standing = store::touch(txn, member_id, now).await?;
    if let Some(taken) = reversed {
        publish_points(txn, member_id, EntryKind::Reverse, -taken, &input.order_id, &standing).await?;
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
pub(crate) enum Paid {
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
pub(crate) async fn record_payments(
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
        .filter(|p| p.kind == PurchaseKind::Paid.as_str() && p.reference.is_empty())
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
                kind: PurchaseKind::Paid.as_str().into(),
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
            kind: EntryKind::Earn,
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
        account.events.push(
            events::points_changed(member_id, EntryKind::Earn, credit, &input.order_id, &standing)
                .outbox_row(member_id),
        );
        account.spend.push((input.at, input.amount_minor));
        // Upgrades apply at once; downgrades wait for the re-evaluation.
        let mut tier_changed = false;
        if rules.percentile.is_none() {
            let spend = rules.spend(&account.spend, now.max(input.at));
            if let Some(level) = rules.ladder.upgrade(rules.level_of(&account.member.tier), spend) {
                let to = rules.tier_name(level);
                let from = std::mem::replace(&mut account.member.tier, to.clone());
                account.tier_changes.push(loyalty::tier_change_row(
                    member_id,
                    &from,
                    &to,
                    TierChangeReason::Purchase.as_str(),
                    now,
                ));
                account.events.push(
                    events::tier_changed(member_id, &from, &to, TierChangeReason::Purchase).outbox_row(member_id),
                );
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

/// A purchase or refund as the rules see it.
#[derive(Debug, Clone)]
pub(crate) struct PurchaseInput {
    pub(crate) order_id: String,
    pub(crate) amount_minor: i64,
    pub(crate) at: DateTime<Utc>,
    pub(crate) channel: String,
    pub(crate) refund: bool,
    /// The refund's request id ('' for a payment).
    pub(crate) reference: String,
}

impl App {
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
                    take(txn, &member_id, &plan, EntryKind::Expire, "lot expiry", as_of).await?;
                    let standing = store::touch(txn, &member_id, as_of).await?;
                    publish_points(txn, &member_id, EntryKind::Expire, -sum, "lot expiry", &standing).await?;
                    Ok((sum, Some(standing.version)))
                })
            })
            .await?;
            total += written_off;
            if committed.is_some() {
                self.finish(&MemberId::from_stored(member_id), committed).await;
            }
        }
        Ok(total)
    }

    /// Records a paid order or a refund for the member (the back-office path of what
    /// the orders log records). The same order (or refund request) again reports
    /// what it did the first time.
    pub(crate) async fn record_purchase(
        &self,
        id: &MemberId,
        input: PurchaseInput,
    ) -> ServiceResult<(i64, String, Balance)> {
        let now = Utc::now();
        let rules = self.rules.clone();
        let outcome = idempotency::transaction(&self.db, |txn| {
            let (rules, input, id) = (rules.clone(), input.clone(), id.as_str().to_owned());
            Box::pin(async move { record(txn, &rules, &id, &input, now).await })
        })
        .await;
        let newly = outcome.as_ref().map(|done| done.clone()).map_err(|_| ());
        let (points_change, tier, mut committed) = match outcome {
            Ok(done) => (done.points, done.tier, Some(done.version)),
            // The same order (or refund request) again: report what it did the first time.
            Err(ServiceError::AlreadyExists(_)) => {
                let kind = if input.refund {
                    PurchaseKind::Refund
                } else {
                    PurchaseKind::Paid
                };
                let existing = loyalty::find_purchase(&self.db, &input.order_id, kind.as_str(), &input.reference)
                    .await?
                    .ok_or_else(|| ServiceError::Aborted("retry".into()))?;
                if existing.member_id != id.as_str() {
                    return Err(ServiceError::AlreadyExists(
                        "the order is recorded for another member".into(),
                    ));
                }
                let member = live(&self.db, id.as_str()).await?;
                (existing.points, member.tier, Some(member.version))
            }
            Err(err) => return Err(err),
        };
        // Instant campaigns react to a newly recorded payment after its commit (the
        // orders log's batches do it in their own transaction); each campaign
        // decides for a member once, so a replay contacts nobody again.
        if let Ok(done) = &newly
            && !input.refund
        {
            let txn = retail_kit::db::begin_write(&self.db).await?;
            let reacted = self
                .react_to_payment(&txn, id.as_str(), done.tier_changed, now.max(input.at))
                .await?;
            txn.commit().await?;
            if reacted.is_some() {
                committed = reacted;
            }
        }
        self.finish(id, committed).await;
        Ok((points_change, tier, balance_of(&self.db, id.as_str(), now).await?))
    }

    /// Grants points (debt first, the rest as a new lot); once per `key`.
    pub(crate) async fn grant<R>(
        &self,
        id: &MemberId,
        points: i64,
        reason: String,
        key: Option<&IdempotencyKey>,
        render: fn(&Balance) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + 'static,
    {
        let now = Utc::now();
        let rules = self.rules.clone();
        let balance = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (id, why, rules) = (id.as_str().to_owned(), reason.clone(), rules.clone());
            Box::pin(async move {
                let member = live(txn, &id).await?;
                let grant = Earning {
                    points,
                    kind: EntryKind::Grant,
                    order_id: "",
                    reference: &why,
                    at: now,
                };
                earn(txn, &rules, &member, grant).await?;
                Ok(render(&balance_of(txn, &id, now).await?))
            })
        })
        .await?;
        self.finish(id, None).await;
        Ok(balance)
    }

    /// Redeems points, first expiring lots first; FAILED_PRECONDITION beyond the
    /// balance. Once per `key`.
    pub(crate) async fn redeem<R>(
        &self,
        id: &MemberId,
        points: i64,
        reason: String,
        key: Option<&IdempotencyKey>,
        render: fn(&Balance) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + 'static,
    {
        let now = Utc::now();
        let balance = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (id, why) = (id.as_str().to_owned(), reason.clone());
            Box::pin(async move {
                live(txn, &id).await?;
                // First the balance, with one conditional update: of racing redemptions
                // only those the balance covers get past it.
                if !loyalty::debit(txn, &id, points).await? {
                    return Err(ServiceError::FailedPrecondition("insufficient points".into()));
                }
                let lots = loyalty::open_lots(txn, &id).await?;
                let plan = points::plan_redemption(&lots_of(&lots), points, now)
                    .map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?;
                take(txn, &id, &plan, EntryKind::Redeem, &why, now).await?;
                let standing = store::touch(txn, &id, now).await?;
                publish_points(txn, &id, EntryKind::Redeem, -points, &why, &standing).await?;
                Ok(render(&balance_of(txn, &id, now).await?))
            })
        })
        .await?;
        self.finish(id, None).await;
        Ok(balance)
    }

    pub(crate) async fn balance(&self, id: &MemberId) -> ServiceResult<Balance> {
        balance_of(&self.db, id.as_str(), Utc::now()).await
    }

    /// A page of the member's ledger, newest first, with the next page's token.
    pub(crate) async fn entries(
        &self,
        id: &MemberId,
        page: Page,
    ) -> ServiceResult<(Vec<(EntryKind, store::points_entry::Model)>, String)> {
        live(&self.db, id.as_str()).await?;
        let rows = loyalty::entries(&self.db, id.as_str(), &page).await?;
        let (rows, next) = page.finish(rows, |e| e.id.clone());
        Ok((with_kinds(rows)?, next))
    }
}

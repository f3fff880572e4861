//! What the orders log's batches do to members: consecutive payments recorded
//! together ([`record_payments`]), refunds one by one between them, and the cache
//! fenced at the versions the batch's transaction commits.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use sea_orm::DatabaseTransaction;

use super::App;
use super::points::{Paid, PurchaseInput, Recorded, record, record_payments};
use crate::domain::points::PurchaseKind;
use crate::store::identity;
use crate::store::loyalty as db;

/// A member a batch changed.
#[derive(Debug)]
pub(crate) struct Changed {
    member: String,
    /// The version the batch's transaction commits.
    version: i64,
    tier_changed: bool,
    /// Whether Redis holds the fence at that version (set by [`App::fence`]).
    fenced: bool,
}

impl Changed {
    fn of(member: String, recorded: &Recorded) -> Self {
        Self {
            member,
            version: recorded.version,
            tier_changed: recorded.tier_changed,
            fenced: false,
        }
    }
}

impl App {
    /// Records a run of payments in one go; the members it changed, at the versions
    /// the transaction commits (and whether their tier changed), go to `changed`.
    pub(crate) async fn pay_batch(
        &self,
        txn: &DatabaseTransaction,
        payments: Vec<(String, PurchaseInput)>,
        now: DateTime<Utc>,
        changed: &mut Vec<Changed>,
    ) -> ServiceResult<()> {
        if payments.is_empty() {
            return Ok(());
        }
        let outcomes = match record_payments(txn, &self.rules, &payments, now).await {
            Ok(outcomes) => outcomes,
            // Recorded meanwhile through the admin RPC: the batch rolls back, and
            // applied again it finds that payment.
            Err(ServiceError::AlreadyExists(why)) => return Err(ServiceError::Aborted(why)),
            Err(other) => return Err(other),
        };
        // Payments for members merged since the order was placed go to the survivor.
        let mut redirected = Vec::new();
        for ((member, input), outcome) in payments.into_iter().zip(outcomes) {
            if matches!(outcome, Paid::NoMember)
                && let Some(survivor) = identity::resolve_member(txn, &member).await?
                && survivor != member
            {
                redirected.push((survivor, input));
                continue;
            }
            match outcome {
                Paid::Recorded(mut recorded) => {
                    // Instant campaigns; a bonus they grant moves the version on.
                    if let Some(version) = self
                        .react_to_payment(txn, &member, recorded.tier_changed, now.max(input.at))
                        .await?
                    {
                        recorded.version = version;
                    }
                    changed.push(Changed::of(member, &recorded))
                }
                Paid::AlreadyRecorded => {}
                Paid::NoMember => {
                    tracing::warn!(order_id = %input.order_id, "order paid for a member that does not exist (or was erased); not recorded");
                }
            }
        }
        if !redirected.is_empty() {
            Box::pin(self.pay_batch(txn, redirected, now, changed)).await?;
        }
        Ok(())
    }

    /// Records a refund of the batch unless it was recorded before.
    pub(crate) async fn refund_in_batch(
        &self,
        txn: &DatabaseTransaction,
        member: String,
        input: PurchaseInput,
        now: DateTime<Utc>,
        changed: &mut Vec<Changed>,
    ) -> ServiceResult<()> {
        // A refund of a member merged since goes to the survivor.
        let member = identity::resolve_member(txn, &member).await?.unwrap_or(member);
        // A refund applied before would fail the refund checks (as exceeding the
        // payment): it is looked for first.
        if db::find_purchase(txn, &input.order_id, PurchaseKind::Refund.as_str(), &input.reference)
            .await?
            .is_some()
        {
            return Ok(());
        }
        // The refund checks refuse before anything is written, so the transaction stays usable.
        match record(txn, &self.rules, &member, &input, now).await {
            Ok(recorded) => changed.push(Changed::of(member, &recorded)),
            Err(ServiceError::AlreadyExists(_)) => {}
            Err(
                ServiceError::NotFound { .. } | ServiceError::FailedPrecondition(_) | ServiceError::InvalidArgument(_),
            ) => {
                tracing::warn!(order_id = %input.order_id, "refund not applicable to the member; skipped");
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }

    /// Invalidates each member's cached profile up to its version, and its cached tier
    /// if that changed, noting which fences Redis holds.
    pub(crate) async fn fence(&self, changed: &mut [Changed]) {
        let reached = futures::future::join_all(
            changed
                .iter()
                .map(|c| self.forget_member(&c.member, c.version, c.tier_changed)),
        )
        .await;
        for (c, reached) in changed.iter_mut().zip(reached) {
            c.fenced = reached;
        }
    }

    /// After the commit: invalidates again, in Redis only where the fence before the
    /// commit did not reach it; in this process always, for loads that read the rows
    /// before the commit.
    pub(crate) async fn refence(&self, changed: &[Changed]) {
        futures::future::join_all(changed.iter().map(|c| async move {
            if c.fenced {
                self.forget_member_here(&c.member, c.version, c.tier_changed);
            } else {
                self.forget_member(&c.member, c.version, c.tier_changed).await;
            }
        }))
        .await;
    }
}

//! The points ledgers as the API shows them, the configured actions that earn
//! points, and the periodic write-off of expired lots.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency;
use retail_kit::paging::Page;

use super::{App, Caller};
use crate::domain::ids::Subject;
use crate::domain::points::EntryKind;
use crate::events;
use crate::store::{entry, ledger, ledgers};

impl App {
    /// The subject's ledger if the caller may see it; NOT_FOUND otherwise.
    pub async fn ledger(&self, caller: &Caller, subject: &Subject) -> ServiceResult<ledger::Model> {
        self.subject_partner(&self.db, caller, subject).await?;
        ledgers::get(&self.db, &subject.ledger_id())
            .await?
            .ok_or_else(|| ServiceError::not_found("ledger", subject.ledger_name()))
    }

    pub async fn ledger_entries(
        &self,
        caller: &Caller,
        subject: &Subject,
        page: &Page,
    ) -> ServiceResult<(Vec<entry::Model>, String)> {
        self.ledger(caller, subject).await?;
        let rows = ledgers::entries(&self.db, &subject.ledger_id(), page).await?;
        Ok(page.finish(rows, |e| e.id.clone()))
    }

    /// Credits a configured action once per reference. Brand only; an unknown
    /// action is INVALID_ARGUMENT, a reference counted before FAILED_PRECONDITION
    /// (ALREADY_EXISTS would suggest a resource).
    pub async fn record_action(
        &self,
        caller: &Caller,
        subject: &Subject,
        action: &str,
        reference: &str,
        at: DateTime<Utc>,
    ) -> ServiceResult<entry::Model> {
        self.ledger(caller, subject).await?;
        caller.require_brand("records actions")?;
        let Some(def) = self.rules.actions.iter().find(|a| a.code == action) else {
            return Err(ServiceError::invalid("action", "is not a configured action"));
        };
        let points = def.points;
        let ledger_id = subject.ledger_id();
        let ledger_name = subject.ledger_name();
        let source = format!("action-{action}-{reference}");
        let lot_months = self.rules.lot_months;
        let change = idempotency::transaction(&self.db, |txn| {
            let (ledger_id, ledger_name, source) = (ledger_id.clone(), ledger_name.clone(), source.clone());
            Box::pin(async move {
                let Some(change) =
                    ledgers::credit(txn, &ledger_id, EntryKind::Action, points, &source, at, lot_months).await?
                else {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "{source} was already credited to {ledger_name}"
                    )));
                };
                events::points_changed(&ledger_name, &change)
                    .publish(txn, &ledger_id)
                    .await?;
                Ok(change)
            })
        })
        .await?;
        self.log.committed();
        Ok(change.entry)
    }

    /// Writes off every lot expired at `as_of`; returns the entries written.
    pub async fn expire_points(&self, as_of: DateTime<Utc>) -> ServiceResult<usize> {
        let mut written = 0;
        for ledger_id in ledgers::with_expired_lots(&self.db, as_of).await? {
            let n = idempotency::transaction(&self.db, |txn| {
                let ledger_id = ledger_id.clone();
                Box::pin(async move {
                    let changes = ledgers::expire(txn, &ledger_id, as_of).await?;
                    for change in &changes {
                        events::points_changed(&format!("{ledger_id}/ledger"), change)
                            .publish(txn, &ledger_id)
                            .await?;
                    }
                    Ok(changes.len())
                })
            })
            .await?;
            written += n;
        }
        if written > 0 {
            self.log.committed();
        }
        Ok(written)
    }
}

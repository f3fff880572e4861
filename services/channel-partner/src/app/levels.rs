//! Levels: a sale that lifts trailing 12-month attributed sales over a threshold
//! upgrades the partner at once ([`App::upgrade_after_sale`]); the periodic
//! re-evaluation ([`App::reevaluate_levels`]) upgrades to the level reached or
//! downgrades by one level. Every change is recorded and published.

use chrono::{DateTime, Months, Utc};
use retail_kit::error::ServiceResult;
use retail_kit::idempotency;
use retail_kit::paging::Page;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseTransaction};

use super::{App, Caller};
use crate::domain::ids::PartnerId;
use crate::domain::levels::{LevelChangeReason, LevelDef, Privileges};
use crate::events;
use crate::store::{self, Seller, level_change, partner};

/// The window levels are earned in: the 12 months up to `as_of`.
fn trailing_window(as_of: DateTime<Utc>) -> DateTime<Utc> {
    as_of
        .checked_sub_months(Months::new(12))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Net attributed sales of the 12 months up to and including `as_of`.
pub(crate) async fn trailing_sales(
    conn: &impl ConnectionTrait,
    partner: &str,
    as_of: DateTime<Utc>,
) -> ServiceResult<i64> {
    let until = as_of + chrono::Duration::microseconds(1);
    store::net_sales(conn, Seller::Partner(partner), trailing_window(as_of), until).await
}

impl App {
    /// The privileges of the partner's current level (its discount ceiling, lead
    /// priority and points multiplier), for the price policy and lead
    /// distribution; NOT_FOUND for a partner the caller may not see.
    pub async fn level_privileges(&self, caller: &Caller, id: &PartnerId) -> ServiceResult<(String, Privileges)> {
        let partner = self.partner(caller, id).await?;
        Ok((partner.level.clone(), self.rules.ladder.privileges(&partner.level)))
    }

    pub fn levels(&self) -> &[LevelDef] {
        self.rules.ladder.levels()
    }

    pub async fn level_changes(
        &self,
        caller: &Caller,
        id: &PartnerId,
        page: &Page,
    ) -> ServiceResult<(Vec<level_change::Model>, String)> {
        self.partner(caller, id).await?;
        let rows = store::level_changes(&self.db, id.as_str(), page).await?;
        Ok(page.finish(rows, |r| r.id.clone()))
    }

    /// After a sale at `at`: upgrades the partner if its trailing sales reach a
    /// higher level. Returns the level it is at afterwards.
    pub(crate) async fn upgrade_after_sale(
        &self,
        conn: &DatabaseTransaction,
        partner: &partner::Model,
        at: DateTime<Utc>,
    ) -> ServiceResult<String> {
        let trailing = trailing_sales(conn, &partner.id, at).await?;
        match self.rules.ladder.after_sale(&partner.level, trailing) {
            Some(to) => {
                change_level(conn, partner, &to.code, LevelChangeReason::Sales, trailing, at).await?;
                Ok(to.code.clone())
            }
            None => Ok(partner.level.clone()),
        }
    }

    /// Re-evaluates every partner at `as_of`, each in its own transaction; returns
    /// how many changed level.
    pub async fn reevaluate_levels(&self, as_of: DateTime<Utc>) -> ServiceResult<u32> {
        let mut changed = 0;
        for p in store::all_partners(&self.db).await? {
            let id = p.id.clone();
            let moved = idempotency::transaction(&self.db, |txn| {
                let (id, ladder) = (id.clone(), self.rules.ladder.clone());
                Box::pin(async move {
                    // Read again under the partner's lock: a sale may have upgraded it.
                    store::lock_partner(txn, &id).await?;
                    let Some(p) = store::partner(txn, &id).await? else {
                        return Ok(false);
                    };
                    let trailing = trailing_sales(txn, &id, as_of).await?;
                    match ladder.reevaluated(&p.level, trailing) {
                        Some(to) => {
                            change_level(txn, &p, &to.code, LevelChangeReason::Reevaluation, trailing, as_of).await?;
                            Ok(true)
                        }
                        None => Ok(false),
                    }
                })
            })
            .await?;
            if moved {
                changed += 1;
            }
        }
        if changed > 0 {
            self.log.committed();
        }
        Ok(changed)
    }
}

async fn change_level(
    conn: &DatabaseTransaction,
    partner: &partner::Model,
    to: &str,
    reason: LevelChangeReason,
    trailing: i64,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    store::set_partner_level(conn, &partner.id, to, at).await?;
    level_change::ActiveModel {
        id: Set(store::new_id()),
        partner_id: Set(partner.id.clone()),
        from_level: Set(partner.level.clone()),
        to_level: Set(to.to_owned()),
        reason: Set(reason.as_str().to_owned()),
        trailing_minor: Set(trailing),
        changed_at: Set(at),
    }
    .insert(conn)
    .await?;
    events::level_changed(&partner.id, &partner.level, to, reason, trailing)
        .publish(conn, &partner.id)
        .await?;
    Ok(())
}

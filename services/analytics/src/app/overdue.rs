//! Publishing overdue members: each member found overdue is published once per
//! last purchase (`MemberOverdue`), in the transaction that records it, so a
//! campaign hears of it once; a new purchase makes the member eligible again.

use chrono::DateTime;
use retail_kit::error::ServiceResult;

use super::App;
use crate::store::{exec, rows};

impl App {
    /// Publishes the members overdue at `now` not yet published for their last
    /// purchase; returns how many.
    pub async fn publish_overdue(&self, now: i64) -> ServiceResult<usize> {
        let overdue = self.overdue(now, self.settings.analytics.overdue_factor).await?;
        let mut published = 0;
        let done: std::collections::HashMap<String, i64> = rows(
            &self.db,
            "SELECT member_id, last_purchase FROM overdue_published",
            vec![],
        )
        .await?
        .iter()
        .map(|r| Ok((crate::store::text(r, 0)?, crate::store::int(r, 1)?)))
        .collect::<ServiceResult<_>>()?;
        for chunk in overdue
            .iter()
            .filter(|o| done.get(&o.member) != Some(&o.last))
            .collect::<Vec<_>>()
            .chunks(200)
        {
            let txn = retail_kit::db::begin_write(&self.db).await?;
            for o in chunk {
                let changed = exec(
                    &txn,
                    "INSERT INTO overdue_published (member_id, last_purchase) VALUES (?,?) \
                     ON CONFLICT (member_id) DO UPDATE SET last_purchase = excluded.last_purchase \
                     WHERE overdue_published.last_purchase <> excluded.last_purchase",
                    vec![o.member.clone().into(), o.last.into()],
                )
                .await?;
                if changed == 1 {
                    let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
                    crate::events::member_overdue(&o.member, o.cycle_days, o.days_since_last, at(o.last), at(o.next))
                        .publish(&txn, &o.member)
                        .await?;
                    published += 1;
                }
            }
            txn.commit().await?;
            self.log.committed();
        }
        Ok(published)
    }
}

//! Publishing member scores: every run rescores all members who ever bought (RFM
//! segment in the window, predicted tags, [`App::member_scores`]) and publishes
//! `MemberScored` for each member whose segment or predicted tags differ from
//! what was last published for it, or whose published tags are due for renewal
//! (half their durability passed while they still hold). What was published is
//! recorded (`scores_published`) in the transaction that publishes, under a
//! conditional upsert, so a change is published exactly once, also when runs
//! overlap or repeat after a restart.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use retail_kit::error::ServiceResult;

use super::App;
use super::members::MemberScore;
use crate::domain::DAY;
use crate::store::{self, exec, rows};

/// `renew_at` of a state without predicted tags: never due.
const NEVER: i64 = i64::MAX;

/// What is published of a member: its segment (empty = not scored) and tags.
fn state(score: &MemberScore) -> (String, String) {
    let segment = score.rfm.map(|s| s.segment.as_str().to_owned()).unwrap_or_default();
    let tags: BTreeSet<&str> = score.predicted.iter().copied().collect();
    (segment, tags.into_iter().collect::<Vec<_>>().join(","))
}

impl App {
    /// Publishes the member scores at `now` that changed since last published;
    /// returns how many.
    pub async fn publish_scores(&self, now: i64) -> ServiceResult<usize> {
        let a = &self.settings.analytics;
        let durability = a.predicted_tag_days.max(1) * DAY;
        let mut scores: BTreeMap<String, MemberScore> = self
            .member_scores(now, a.rfm_window_days, a.overdue_factor)
            .await?
            .into_iter()
            .map(|s| (s.member.clone(), s))
            .collect();
        let published: BTreeMap<String, (String, String, i64)> = rows(
            &self.db,
            "SELECT member_id, segment, tags, renew_at FROM scores_published \
             WHERE member_id NOT IN (SELECT merged_id FROM member_merges)",
            vec![],
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                store::text(r, 0)?,
                (store::text(r, 1)?, store::text(r, 2)?, store::int(r, 3)?),
            ))
        })
        .collect::<ServiceResult<_>>()?;
        // A member published before and no longer found (every order cancelled)
        // is published as not scored. A member merged since is not: its purchases
        // are scored as its survivor's, and membership would land an empty score
        // on the survivor.
        for member in published.keys() {
            scores.entry(member.clone()).or_insert_with(|| MemberScore {
                member: member.clone(),
                rfm: None,
                predicted: Vec::new(),
            });
        }
        let due: Vec<&MemberScore> = scores
            .values()
            .filter(|s| {
                let now_state = state(s);
                match published.get(&s.member) {
                    Some((segment, tags, renew_at)) => {
                        (segment, tags) != (&now_state.0, &now_state.1) || *renew_at <= now
                    }
                    None => now_state != (String::new(), String::new()),
                }
            })
            .collect();
        let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
        let mut count = 0;
        for chunk in due.chunks(200) {
            let txn = retail_kit::db::begin_write(&self.db).await?;
            for score in chunk {
                let (segment, tags) = state(score);
                let renew_at = if tags.is_empty() { NEVER } else { now + durability / 2 };
                let changed = exec(
                    &txn,
                    "INSERT INTO scores_published (member_id, segment, tags, renew_at) VALUES (?,?,?,?) \
                     ON CONFLICT (member_id) DO UPDATE SET segment = excluded.segment, tags = excluded.tags, \
                     renew_at = excluded.renew_at \
                     WHERE scores_published.segment <> excluded.segment OR scores_published.tags <> excluded.tags \
                     OR scores_published.renew_at <= ?",
                    vec![
                        score.member.clone().into(),
                        segment.into(),
                        tags.into(),
                        renew_at.into(),
                        now.into(),
                    ],
                )
                .await?;
                if changed == 1 {
                    crate::events::member_scored(
                        &score.member,
                        score.rfm,
                        &score.predicted,
                        at(now),
                        at(now + durability),
                    )
                    .publish(&txn, &score.member)
                    .await?;
                    count += 1;
                }
            }
            txn.commit().await?;
            self.log.committed();
        }
        Ok(count)
    }
}

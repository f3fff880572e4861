//! The projections: what each consumed event adds to the rollups and the facts
//! (members, purchases, SKUs, stock), applied inside the consumer's transaction,
//! and the same code replays the archive into shadow tables for a rebuild.
//!
//! Rollups are additive figures per hour and day (and week and month for the
//! active members) by dimension; a batch's increments are summed in memory and
//! written as one upsert per batch. Distinct counts go through `seen`: a subject
//! counts once per set and bucket, when it is first inserted.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use prost::{Message, Name};
use retail_kit::convert::from_timestamp;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_proto::events::{self as ev, EventEnvelope};
use sea_orm::{ConnectionTrait, Value};

use crate::store::{self, exec, rows};

pub const HOUR: i64 = 3_600;
pub const DAY: i64 = crate::domain::DAY;

pub fn hour(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

pub fn day(t: i64) -> i64 {
    t - t.rem_euclid(DAY)
}

/// Monday 00:00 of `t`'s ISO week (1970-01-01 was a Thursday).
pub fn week(t: i64) -> i64 {
    let d = day(t);
    d - ((d / DAY + 3).rem_euclid(7)) * DAY
}

fn datetime(t: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(t, 0).single().unwrap_or_default()
}

/// The first second of `t`'s calendar month.
pub fn month(t: i64) -> i64 {
    let d = datetime(t);
    Utc.with_ymd_and_hms(d.year(), d.month(), 1, 0, 0, 0)
        .single()
        .map(|m| m.timestamp())
        .unwrap_or(0)
}

/// `yyyymm` of `t`: the partition key of the archive and the touchpoints.
pub fn month_key(t: i64) -> i32 {
    let d = datetime(t);
    d.year() * 100 + d.month() as i32
}

/// Rollup increments, summed before they are written.
#[derive(Debug, Default)]
pub struct Increments(BTreeMap<(&'static str, String, String, &'static str, i64), i64>);

impl Increments {
    /// Adds `value` to `metric` of `dim`=`key` in `t`'s hour and day.
    pub fn add(&mut self, t: i64, dim: &str, key: &str, metric: &'static str, value: i64) {
        if value == 0 {
            return;
        }
        for (grain, bucket) in [("h", hour(t)), ("d", day(t))] {
            self.at(grain, bucket, dim, key, metric, value);
        }
    }

    /// Adds `value` to one bucket of one grain.
    pub fn at(&mut self, grain: &'static str, bucket: i64, dim: &str, key: &str, metric: &'static str, value: i64) {
        *self
            .0
            .entry((grain, dim.to_owned(), key.to_owned(), metric, bucket))
            .or_default() += value;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the increments into `table` in statements of at most 500 rows.
    pub async fn flush(self, db: &impl ConnectionTrait, table: &str) -> ServiceResult<()> {
        let entries: Vec<_> = self.0.into_iter().filter(|(_, v)| *v != 0).collect();
        for chunk in entries.chunks(500) {
            let mut sql = format!("INSERT INTO {table} (grain, dim, dim_key, metric, bucket, value) VALUES ");
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
            for (i, ((grain, dim, key, metric, bucket), value)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?,?,?,?,?,?)");
                values.extend([
                    (*grain).into(),
                    dim.clone().into(),
                    key.clone().into(),
                    (*metric).into(),
                    (*bucket).into(),
                    (*value).into(),
                ]);
            }
            sql.push_str(&format!(
                " ON CONFLICT (grain, dim, dim_key, metric, bucket) DO UPDATE SET value = {table}.value + excluded.value"
            ));
            exec(db, &sql, values).await?;
        }
        Ok(())
    }
}

/// Inserts `subject` into a distinct set's bucket; whether it was new.
pub async fn first_seen(
    db: &impl ConnectionTrait,
    table: &str,
    set: &str,
    bucket: i64,
    subject: &str,
) -> ServiceResult<bool> {
    let sql = format!(
        "INSERT INTO {table} (set_name, bucket, subject) VALUES (?,?,?) ON CONFLICT (set_name, bucket, subject) DO NOTHING"
    );
    Ok(exec(db, &sql, vec![set.into(), bucket.into(), subject.into()]).await? == 1)
}

/// The dimensions a paid order is counted under.
#[derive(Debug, Clone, Default)]
struct Dims {
    member: String,
    channel: String,
    store: String,
    partner: String,
    rep: String,
    region: String,
    tier: String,
}

impl Dims {
    /// `(dimension, value)` pairs, "all" first; empty values are left out.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("all", String::new())];
        for (dim, value) in [
            ("channel", &self.channel),
            ("store", &self.store),
            ("partner", &self.partner),
            ("region", &self.region),
            ("tier", &self.tier),
        ] {
            if !value.is_empty() {
                out.push((dim, value.clone()));
            }
        }
        if !self.rep.is_empty() {
            out.push(("rep", format!("{}/{}", self.partner, self.rep)));
        }
        out
    }
}

fn decode<M: Message + Default>(event: &EventEnvelope) -> ServiceResult<M> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    M::decode(bytes).map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("unreadable event")))
}

/// The envelope's time in seconds (0 when missing).
pub fn occur_at(event: &EventEnvelope) -> i64 {
    event
        .occur_time
        .as_ref()
        .and_then(from_timestamp)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn time_or(ts: &Option<prost_types::Timestamp>, event: &EventEnvelope) -> i64 {
    ts.as_ref()
        .and_then(from_timestamp)
        .map(|t| t.timestamp())
        .unwrap_or_else(|| occur_at(event))
}

/// Applies events to the projection tables with `prefix` inside one transaction.
pub struct Projector<'a, C: ConnectionTrait> {
    db: &'a C,
    p: &'a str,
    pub increments: Increments,
}

impl<C: ConnectionTrait> std::fmt::Debug for Projector<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("prefix", &self.p)
            .finish_non_exhaustive()
    }
}

impl<'a, C: ConnectionTrait> Projector<'a, C> {
    pub fn new(db: &'a C, prefix: &'a str) -> Self {
        Self {
            db,
            p: prefix,
            increments: Increments::default(),
        }
    }

    /// Writes the summed rollups.
    pub async fn finish(self) -> ServiceResult<()> {
        let table = format!("{}rollups", self.p);
        self.increments.flush(self.db, &table).await
    }

    /// Applies one event of any source; events analytics does not project are
    /// only archived.
    pub async fn apply(&mut self, event: &EventEnvelope) -> ServiceResult<()> {
        let ty = event.r#type.as_str();
        if ty == ev::OrderPaid::full_name() {
            self.paid(event, decode(event)?).await
        } else if ty == ev::OrderCancelled::full_name() {
            self.cancelled(event, decode(event)?).await
        } else if ty == ev::OrderRefunded::full_name() {
            self.refunded(event, decode(event)?).await
        } else if ty == ev::OrderRated::full_name() {
            self.rated(event, decode(event)?).await
        } else if ty == ev::OrderPlaced::full_name() {
            let e: ev::OrderPlaced = decode(event)?;
            let channel = e.parties.unwrap_or_default().channel;
            self.increments.add(occur_at(event), "all", "", "placed", 1);
            self.increments.add(occur_at(event), "channel", &channel, "placed", 1);
            Ok(())
        } else if ty == ev::MemberRegistered::full_name() {
            self.registered(event, decode(event)?).await
        } else if ty == ev::MemberUpdated::full_name() {
            let e: ev::MemberUpdated = decode(event)?;
            self.activity(&e.member_id, occur_at(event)).await
        } else if ty == ev::ConsentChanged::full_name() {
            let e: ev::ConsentChanged = decode(event)?;
            let sql = format!(
                "INSERT INTO {}consents (member_id, channel, granted) VALUES (?,?,?) \
                 ON CONFLICT (member_id, channel) DO UPDATE SET granted = excluded.granted",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.member_id.clone().into(),
                    e.channel.into(),
                    i32::from(e.granted).into(),
                ],
            )
            .await?;
            self.activity(&e.member_id, occur_at(event)).await
        } else if ty == ev::CampaignMemberDecided::full_name() {
            self.campaign_decision(event, decode(event)?).await
        } else if ty == ev::CampaignChanged::full_name() {
            let e: ev::CampaignChanged = decode(event)?;
            let t = time_or(&e.change_time, event);
            let sql = format!(
                "INSERT INTO {}campaigns (campaign_id, display_name, state, segment_id, channel, changed_at) \
                 VALUES (?,?,?,?,?,?) ON CONFLICT (campaign_id) DO UPDATE SET display_name = excluded.display_name, \
                 state = excluded.state, segment_id = excluded.segment_id, channel = excluded.channel, \
                 changed_at = excluded.changed_at",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.campaign_id.into(),
                    e.display_name.into(),
                    e.state.into(),
                    e.segment_id.into(),
                    e.channel.into(),
                    t.into(),
                ],
            )
            .await?;
            Ok(())
        } else if ty == ev::MembersMerged::full_name() {
            self.merged(event, decode(event)?).await
        } else if ty == ev::MemberErased::full_name() {
            let e: ev::MemberErased = decode(event)?;
            self.ensure_member(&e.member_id).await?;
            let sql = format!("UPDATE {}members SET erased = 1 WHERE member_id = ?", self.p);
            exec(self.db, &sql, vec![e.member_id.into()]).await?;
            Ok(())
        } else if ty == ev::TierChanged::full_name() {
            let e: ev::TierChanged = decode(event)?;
            self.ensure_member(&e.member_id).await?;
            let sql = format!("UPDATE {}members SET tier = ? WHERE member_id = ?", self.p);
            exec(self.db, &sql, vec![e.to_tier.into(), e.member_id.into()]).await?;
            Ok(())
        } else if ty == ev::PointsChanged::full_name() {
            let e: ev::PointsChanged = decode(event)?;
            if e.kind == "redeem" {
                self.activity(&e.member_id, occur_at(event)).await?;
            }
            Ok(())
        } else if ty == ev::ProductCreated::full_name() {
            let e: ev::ProductCreated = decode(event)?;
            let sql = format!(
                "INSERT INTO {}skus (sku, product_id, category) VALUES (?,?,?) \
                 ON CONFLICT (sku) DO UPDATE SET product_id = excluded.product_id, category = excluded.category",
                self.p
            );
            for sku in e.sku_codes {
                exec(
                    self.db,
                    &sql,
                    vec![sku.into(), e.product_id.clone().into(), e.category.clone().into()],
                )
                .await?;
            }
            Ok(())
        } else if ty == ev::ListingChanged::full_name() {
            let e: ev::ListingChanged = decode(event)?;
            let sql = format!(
                "INSERT INTO {}listings (sku, channel, listed) VALUES (?,?,?) \
                 ON CONFLICT (sku, channel) DO UPDATE SET listed = excluded.listed",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![e.sku_code.into(), e.channel.into(), i32::from(e.listed).into()],
            )
            .await?;
            Ok(())
        } else if ty == ev::StockChanged::full_name() {
            let e: ev::StockChanged = decode(event)?;
            let sql = format!(
                "INSERT INTO {}stock (sku, warehouse, sellable) VALUES (?,?,?) \
                 ON CONFLICT (sku, warehouse) DO UPDATE SET sellable = excluded.sellable",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![e.sku_code.into(), e.warehouse_code.into(), e.sellable.into()],
            )
            .await?;
            Ok(())
        } else {
            self.apply_partner(event).await
        }
    }

    /// Channel-partner's events: targets, partners' levels and states, points,
    /// deal locks, leads, opportunity stages and overdue visits. Counts go into
    /// the rollups under "all" and the partner.
    async fn apply_partner(&mut self, event: &EventEnvelope) -> ServiceResult<()> {
        let ty = event.r#type.as_str();
        if ty == ev::TargetSet::full_name() {
            let e: ev::TargetSet = decode(event)?;
            let start = time_or(&e.period_start_time, event);
            let end = time_or(&e.period_end_time, event);
            let sql = format!(
                "INSERT INTO {}targets (target_id, subject_kind, partner, rep, period_kind, start_at, end_at, amount) \
                 VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (target_id) DO UPDATE SET subject_kind = excluded.subject_kind, \
                 partner = excluded.partner, rep = excluded.rep, period_kind = excluded.period_kind, \
                 start_at = excluded.start_at, end_at = excluded.end_at, amount = excluded.amount",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.target_id.into(),
                    e.subject_kind.into(),
                    e.partner_id.into(),
                    e.sales_rep_id.into(),
                    e.period_kind.into(),
                    start.into(),
                    end.into(),
                    e.amount_minor.into(),
                ],
            )
            .await?;
        } else if ty == ev::TargetAttained::full_name() {
            let e: ev::TargetAttained = decode(event)?;
            let sql = format!(
                "UPDATE {}targets SET attained_at = ? WHERE target_id = ? AND attained_at IS NULL",
                self.p
            );
            exec(self.db, &sql, vec![occur_at(event).into(), e.target_id.into()]).await?;
        } else if ty == ev::PartnerStatusChanged::full_name() {
            let e: ev::PartnerStatusChanged = decode(event)?;
            self.partner_fact(&e.partner_id, "status", &e.to_state).await?;
        } else if ty == ev::PartnerLevelChanged::full_name() {
            let e: ev::PartnerLevelChanged = decode(event)?;
            self.partner_fact(&e.partner_id, "level", &e.to_level).await?;
        } else if ty == ev::PartnerPointsChanged::full_name() {
            let e: ev::PartnerPointsChanged = decode(event)?;
            let metric = match e.kind.as_str() {
                "earn" | "action" => "points_earned",
                "redeem" => "points_redeemed",
                "reverse" | "return" => "points_reversed",
                "expire" => "points_expired",
                _ => return Ok(()),
            };
            self.partner_count(occur_at(event), &e.partner_id, metric, e.points.abs());
        } else if ty == ev::DealLockChanged::full_name() {
            let e: ev::DealLockChanged = decode(event)?;
            let metric = match e.change.as_str() {
                "registered" => "locks_registered",
                "extended" => "locks_extended",
                "released" => "locks_released",
                "expired" => "locks_expired",
                _ => return Ok(()),
            };
            self.partner_count(time_or(&e.change_time, event), &e.partner_id, metric, 1);
        } else if ty == ev::LeadChanged::full_name() {
            let e: ev::LeadChanged = decode(event)?;
            let metric = match e.change.as_str() {
                "offered" => "leads_offered",
                "accepted" => "leads_accepted",
                "declined" => "leads_declined",
                "timed_out" => "leads_timed_out",
                "unassigned" => "leads_unassigned",
                "won" => "leads_won",
                "lost" => "leads_lost",
                _ => return Ok(()),
            };
            self.partner_count(time_or(&e.change_time, event), &e.partner_id, metric, 1);
        } else if ty == ev::OpportunityStageChanged::full_name() {
            let e: ev::OpportunityStageChanged = decode(event)?;
            let sql = format!(
                "INSERT INTO {}opportunity_stages (opportunity, stage, partner, rep, reached_at) VALUES (?,?,?,?,?) \
                 ON CONFLICT (opportunity, stage) DO NOTHING",
                self.p
            );
            exec(
                self.db,
                &sql,
                vec![
                    e.opportunity.into(),
                    e.to_stage.into(),
                    e.partner_id.into(),
                    e.sales_rep_id.into(),
                    time_or(&e.change_time, event).into(),
                ],
            )
            .await?;
        } else if ty == ev::VisitOverdue::full_name() {
            let e: ev::VisitOverdue = decode(event)?;
            self.partner_count(time_or(&e.due_time, event), &e.partner_id, "visits_overdue", 1);
        } else if ty == ev::SpecialDiscountDecided::full_name() {
            let e: ev::SpecialDiscountDecided = decode(event)?;
            let metric = match e.decision.as_str() {
                "granted" => "discounts_granted",
                "approved" => "discounts_approved",
                "rejected" => "discounts_rejected",
                _ => return Ok(()),
            };
            self.partner_count(time_or(&e.decide_time, event), &e.partner_id, metric, 1);
        }
        Ok(())
    }

    /// Counts `value` of `metric` under "all" and, when known, the partner.
    fn partner_count(&mut self, t: i64, partner: &str, metric: &'static str, value: i64) {
        self.increments.add(t, "all", "", metric, value);
        if !partner.is_empty() {
            self.increments.add(t, "partner", partner, metric, value);
        }
    }

    /// Sets a partner's `level` or `status`.
    async fn partner_fact(&self, partner: &str, column: &'static str, value: &str) -> ServiceResult<()> {
        let sql = format!(
            "INSERT INTO {p}partners (partner_id, {column}) VALUES (?,?) \
             ON CONFLICT (partner_id) DO UPDATE SET {column} = excluded.{column}",
            p = self.p
        );
        exec(self.db, &sql, vec![partner.into(), value.into()]).await?;
        Ok(())
    }

    async fn ensure_member(&self, member: &str) -> ServiceResult<()> {
        let sql = format!(
            "INSERT INTO {}members (member_id) VALUES (?) ON CONFLICT (member_id) DO NOTHING",
            self.p
        );
        exec(self.db, &sql, vec![member.into()]).await?;
        Ok(())
    }

    /// The member `member` answers as: the survivor it was merged into (chains
    /// resolved, [`Self::merged`]), else itself.
    async fn survivor(&self, member: &str) -> ServiceResult<String> {
        if member.is_empty() {
            return Ok(String::new());
        }
        let sql = format!("SELECT survivor_id FROM {}member_merges WHERE merged_id = ?", self.p);
        Ok(match rows(self.db, &sql, vec![member.into()]).await?.first() {
            Some(row) => store::text(row, 0)?,
            None => member.to_owned(),
        })
    }

    /// A duplicate merged into a survivor is one person from then on: its
    /// purchases become the survivor's (and so do later ones, [`Self::paid`]),
    /// the survivor's first and last purchase span both, and members merged into
    /// the duplicate before now resolve to the survivor too, so `member_merges`
    /// maps every merged id to its final survivor in one step. Applied once: a
    /// merge delivered again finds its row and changes nothing; replayed in log
    /// order it gives the same tables.
    async fn merged(&self, event: &EventEnvelope, e: ev::MembersMerged) -> ServiceResult<()> {
        let merged = e.merged_id;
        let survivor = self.survivor(&e.survivor_id).await?;
        if merged.is_empty() || survivor.is_empty() || survivor == merged {
            return Ok(());
        }
        let p = self.p;
        let sql = format!(
            "INSERT INTO {p}member_merges (merged_id, survivor_id, merged_at) VALUES (?,?,?) \
             ON CONFLICT (merged_id) DO NOTHING"
        );
        let at = time_or(&e.merge_time, event);
        if exec(
            self.db,
            &sql,
            vec![merged.clone().into(), survivor.clone().into(), at.into()],
        )
        .await?
            == 0
        {
            return Ok(());
        }
        let pair = || vec![survivor.clone().into(), merged.clone().into()];
        exec(
            self.db,
            &format!("UPDATE {p}member_merges SET survivor_id = ? WHERE survivor_id = ?"),
            pair(),
        )
        .await?;
        exec(
            self.db,
            &format!("UPDATE {p}purchases SET member_id = ? WHERE member_id = ?"),
            pair(),
        )
        .await?;
        let sql =
            format!("SELECT first_purchase, acquisition_channel, last_purchase FROM {p}members WHERE member_id = ?");
        let Some(row) = rows(self.db, &sql, vec![merged.clone().into()])
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let (first, channel, last) = (
            store::opt_int(&row, 0)?,
            store::text(&row, 1)?,
            store::opt_int(&row, 2)?,
        );
        self.ensure_member(&survivor).await?;
        if let Some(first) = first {
            let sql = format!(
                "UPDATE {p}members SET first_purchase = ?, acquisition_channel = ? \
                 WHERE member_id = ? AND (first_purchase IS NULL OR first_purchase > ?)"
            );
            exec(
                self.db,
                &sql,
                vec![first.into(), channel.into(), survivor.clone().into(), first.into()],
            )
            .await?;
        }
        if let Some(last) = last {
            let sql = format!(
                "UPDATE {p}members SET last_purchase = ? WHERE member_id = ? AND (last_purchase IS NULL OR last_purchase < ?)"
            );
            exec(self.db, &sql, vec![last.into(), survivor.clone().into(), last.into()]).await?;
        }
        let sql = format!(
            "UPDATE {p}members SET first_purchase = NULL, last_purchase = NULL, acquisition_channel = '' \
             WHERE member_id = ?"
        );
        exec(self.db, &sql, vec![merged.into()]).await?;
        Ok(())
    }

    /// A member did something: activated (first time after registering) and
    /// counted among the day's, week's and month's active members.
    async fn activity(&mut self, member: &str, t: i64) -> ServiceResult<()> {
        if member.is_empty() {
            return Ok(());
        }
        self.ensure_member(member).await?;
        let sql = format!(
            "UPDATE {}members SET activated_at = ? WHERE member_id = ? AND activated_at IS NULL",
            self.p
        );
        exec(self.db, &sql, vec![t.into(), member.into()]).await?;
        let seen = format!("{}seen", self.p);
        for (grain, bucket) in [("d", day(t)), ("w", week(t)), ("m", month(t))] {
            if first_seen(self.db, &seen, &format!("active|{grain}"), bucket, member).await? {
                self.increments.at(grain, bucket, "all", "", "active_members", 1);
            }
        }
        Ok(())
    }

    /// A campaign's decision for a member: one row per campaign and member (a
    /// decision delivered again changes nothing).
    async fn campaign_decision(&mut self, event: &EventEnvelope, e: ev::CampaignMemberDecided) -> ServiceResult<()> {
        if e.campaign_id.is_empty() || e.member_id.is_empty() {
            return Ok(());
        }
        let at = time_or(&e.decide_time, event);
        let window_end = e
            .attribution_end_time
            .as_ref()
            .and_then(from_timestamp)
            .map(|t| t.timestamp())
            .unwrap_or(at);
        let sql = format!(
            "INSERT INTO {}campaign_contacts (campaign_id, member_id, channel, outcome, control, lifecycle, \
             contacted_at, window_end) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (campaign_id, member_id) DO NOTHING",
            self.p
        );
        exec(
            self.db,
            &sql,
            vec![
                e.campaign_id.into(),
                e.member_id.into(),
                e.channel.into(),
                e.outcome.into(),
                i32::from(e.control).into(),
                e.lifecycle_state.into(),
                at.into(),
                window_end.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn registered(&mut self, event: &EventEnvelope, e: ev::MemberRegistered) -> ServiceResult<()> {
        let t = time_or(&e.register_time, event);
        let sql = format!(
            "INSERT INTO {}members (member_id, registered_at, region) VALUES (?,?,?) \
             ON CONFLICT (member_id) DO UPDATE SET registered_at = excluded.registered_at, region = excluded.region",
            self.p
        );
        exec(
            self.db,
            &sql,
            vec![e.member_id.into(), t.into(), e.region.clone().into()],
        )
        .await?;
        self.increments.add(t, "all", "", "registered", 1);
        if !e.region.is_empty() {
            self.increments.add(t, "region", &e.region, "registered", 1);
        }
        Ok(())
    }

    /// The dimensions of an order: its parties, and the member's region and tier
    /// as analytics knows them when the payment is applied.
    async fn dims(&self, parties: ev::OrderParties) -> ServiceResult<Dims> {
        let mut dims = Dims {
            member: parties.member_id,
            channel: parties.channel,
            store: parties.store,
            partner: parties.partner_id,
            rep: parties.sales_rep,
            ..Default::default()
        };
        if !dims.member.is_empty() {
            let sql = format!("SELECT region, tier FROM {}members WHERE member_id = ?", self.p);
            if let Some(row) = rows(self.db, &sql, vec![dims.member.clone().into()]).await?.first() {
                dims.region = store::text(row, 0)?;
                dims.tier = store::text(row, 1)?;
            }
        }
        Ok(dims)
    }

    /// The dimensions a paid order was counted under, if analytics has it.
    async fn purchase_dims(&self, order_id: &str) -> ServiceResult<Option<(Dims, bool)>> {
        let sql = format!(
            "SELECT member_id, channel, store, partner, rep, region, tier, cancelled FROM {}purchases WHERE order_id = ?",
            self.p
        );
        let Some(row) = rows(self.db, &sql, vec![order_id.into()]).await?.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some((
            Dims {
                member: store::text(&row, 0)?,
                channel: store::text(&row, 1)?,
                store: store::text(&row, 2)?,
                partner: store::text(&row, 3)?,
                rep: store::text(&row, 4)?,
                region: store::text(&row, 5)?,
                tier: store::text(&row, 6)?,
            },
            store::int(&row, 7)? != 0,
        )))
    }

    async fn category(&self, sku: &str) -> ServiceResult<String> {
        let sql = format!("SELECT category FROM {}skus WHERE sku = ?", self.p);
        Ok(match rows(self.db, &sql, vec![sku.into()]).await?.first() {
            Some(row) => store::text(row, 0)?,
            None => String::new(),
        })
    }

    async fn paid(&mut self, event: &EventEnvelope, e: ev::OrderPaid) -> ServiceResult<()> {
        let t = time_or(&e.pay_time, event);
        let amount = e.amount.unwrap_or_default().amount_minor;
        let mut parties = e.parties.unwrap_or_default();
        // A merged member's payment is its survivor's.
        parties.member_id = self.survivor(&parties.member_id).await?;
        let dims = self.dims(parties).await?;
        let units: i64 = e.lines.iter().map(|l| l.quantity).sum();
        let sql = format!(
            "INSERT INTO {}purchases (order_id, member_id, channel, store, partner, rep, region, tier, paid_at, amount, units) \
             VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (order_id) DO NOTHING",
            self.p
        );
        let inserted = exec(
            self.db,
            &sql,
            vec![
                e.order_id.clone().into(),
                dims.member.clone().into(),
                dims.channel.clone().into(),
                dims.store.clone().into(),
                dims.partner.clone().into(),
                dims.rep.clone().into(),
                dims.region.clone().into(),
                dims.tier.clone().into(),
                t.into(),
                amount.into(),
                units.into(),
            ],
        )
        .await?;
        if inserted == 0 {
            // One payment per order: a second OrderPaid for it changes nothing.
            return Ok(());
        }
        for (dim, key) in dims.pairs() {
            self.increments.add(t, dim, &key, "revenue", amount);
            self.increments.add(t, dim, &key, "orders", 1);
            self.increments.add(t, dim, &key, "units", units);
        }
        let seen = format!("{}seen", self.p);
        let lines_sql = format!(
            "INSERT INTO {}order_lines (order_id, ordinal, sku, quantity, unit_minor) VALUES (?,?,?,?,?) \
             ON CONFLICT (order_id, ordinal) DO NOTHING",
            self.p
        );
        let last_sale = format!(
            "INSERT INTO {p}last_sales (sku, sold_at) VALUES (?,?) \
             ON CONFLICT (sku) DO UPDATE SET sold_at = CASE WHEN excluded.sold_at > {p}last_sales.sold_at \
             THEN excluded.sold_at ELSE {p}last_sales.sold_at END",
            p = self.p
        );
        for (ordinal, line) in e.lines.iter().enumerate() {
            let unit = line.unit_price.as_ref().map(|m| m.amount_minor).unwrap_or(0);
            exec(
                self.db,
                &lines_sql,
                vec![
                    e.order_id.clone().into(),
                    (ordinal as i32).into(),
                    line.sku_code.clone().into(),
                    line.quantity.into(),
                    unit.into(),
                ],
            )
            .await?;
            exec(self.db, &last_sale, vec![line.sku_code.clone().into(), t.into()]).await?;
            let category = self.category(&line.sku_code).await?;
            for (dim, key) in [("sku", line.sku_code.clone()), ("category", category)] {
                if key.is_empty() {
                    continue;
                }
                self.increments.add(t, dim, &key, "revenue", line.quantity * unit);
                self.increments.add(t, dim, &key, "units", line.quantity);
                self.increments.add(t, dim, &key, "orders", 1);
                if !dims.member.is_empty()
                    && first_seen(self.db, &seen, &format!("customers|{dim}|{key}"), day(t), &dims.member).await?
                {
                    self.increments.at("d", day(t), dim, &key, "customers", 1);
                }
            }
        }
        if !dims.member.is_empty() {
            self.ensure_member(&dims.member).await?;
            // The first purchase sets the acquisition channel.
            let first = format!(
                "UPDATE {}members SET first_purchase = ?, acquisition_channel = ? \
                 WHERE member_id = ? AND (first_purchase IS NULL OR first_purchase > ?)",
                self.p
            );
            let new_customer = exec(
                self.db,
                &first,
                vec![
                    t.into(),
                    dims.channel.clone().into(),
                    dims.member.clone().into(),
                    t.into(),
                ],
            )
            .await?
                == 1;
            if new_customer {
                self.increments.add(t, "all", "", "new_customers", 1);
                self.increments.add(t, "channel", &dims.channel, "new_customers", 1);
            }
            let last = format!(
                "UPDATE {}members SET last_purchase = ? WHERE member_id = ? AND (last_purchase IS NULL OR last_purchase < ?)",
                self.p
            );
            exec(self.db, &last, vec![t.into(), dims.member.clone().into(), t.into()]).await?;
            self.activity(&dims.member, t).await?;
        }
        Ok(())
    }

    /// Counts a refund (of a return or of a cancelled paid order) at its own time,
    /// under the dimensions of the payment, and per SKU.
    async fn refund(
        &mut self,
        t: i64,
        order_id: &str,
        amount: i64,
        lines: Vec<(String, i64, i64)>,
        cancel: bool,
    ) -> ServiceResult<()> {
        let Some((dims, cancelled)) = self.purchase_dims(order_id).await? else {
            // A payment analytics never saw (before the log it has): nothing to reverse.
            return Ok(());
        };
        if cancel && cancelled {
            return Ok(());
        }
        let sql = format!(
            "UPDATE {}purchases SET refunded = refunded + ?, cancelled = CASE WHEN ? = 1 THEN 1 ELSE cancelled END \
             WHERE order_id = ?",
            self.p
        );
        exec(
            self.db,
            &sql,
            vec![amount.into(), i32::from(cancel).into(), order_id.into()],
        )
        .await?;
        let units: i64 = lines.iter().map(|l| l.1).sum();
        for (dim, key) in dims.pairs() {
            self.increments.add(t, dim, &key, "refunded", amount);
            self.increments.add(t, dim, &key, "units_returned", units);
            if cancel {
                self.increments.add(t, dim, &key, "cancelled", 1);
            }
        }
        for (sku, quantity, unit) in lines {
            let category = self.category(&sku).await?;
            for (dim, key) in [("sku", sku.clone()), ("category", category)] {
                if !key.is_empty() {
                    self.increments.add(t, dim, &key, "refunded", quantity * unit);
                    self.increments.add(t, dim, &key, "units_returned", quantity);
                }
            }
        }
        Ok(())
    }

    async fn cancelled(&mut self, event: &EventEnvelope, e: ev::OrderCancelled) -> ServiceResult<()> {
        let amount = e.refunded.unwrap_or_default().amount_minor;
        if amount <= 0 {
            return Ok(());
        }
        let t = time_or(&e.cancel_time, event);
        let sql = format!(
            "SELECT sku, quantity, unit_minor FROM {}order_lines WHERE order_id = ? ORDER BY ordinal",
            self.p
        );
        let mut lines = Vec::new();
        for row in rows(self.db, &sql, vec![e.order_id.clone().into()]).await? {
            lines.push((store::text(&row, 0)?, store::int(&row, 1)?, store::int(&row, 2)?));
        }
        self.refund(t, &e.order_id, amount, lines, true).await
    }

    async fn refunded(&mut self, event: &EventEnvelope, e: ev::OrderRefunded) -> ServiceResult<()> {
        let t = time_or(&e.refund_time, event);
        let amount = e.amount.unwrap_or_default().amount_minor;
        let lines = e
            .lines
            .into_iter()
            .map(|l| {
                let unit = l.unit_price.as_ref().map(|m| m.amount_minor).unwrap_or(0);
                (l.sku_code, l.quantity, unit)
            })
            .collect();
        self.refund(t, &e.order_id, amount, lines, false).await
    }

    async fn rated(&mut self, event: &EventEnvelope, e: ev::OrderRated) -> ServiceResult<()> {
        let t = occur_at(event);
        let dims = match self.purchase_dims(&e.order_id).await? {
            Some((dims, _)) => dims,
            None => self.dims(e.parties.unwrap_or_default()).await?,
        };
        let mut pairs = vec![("all", String::new())];
        for (dim, key) in [
            ("channel", &dims.channel),
            ("store", &dims.store),
            ("partner", &dims.partner),
        ] {
            if !key.is_empty() {
                pairs.push((dim, key.clone()));
            }
        }
        for (dim, key) in pairs {
            if (1..=5).contains(&e.satisfaction) {
                self.increments.add(t, dim, &key, "ratings", 1);
                self.increments
                    .add(t, dim, &key, "rating_sum", i64::from(e.satisfaction));
            }
            if (0..=10).contains(&e.recommend) {
                self.increments.add(t, dim, &key, "nps_respondents", 1);
                match crate::domain::kpi::nps_class(e.recommend) {
                    Some(true) => self.increments.add(t, dim, &key, "nps_promoters", 1),
                    Some(false) => self.increments.add(t, dim, &key, "nps_detractors", 1),
                    None => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_hand() {
        // 2026-12-03 19:41:10 UTC is a Thursday.
        let t = 1_796_326_870;
        assert_eq!(hour(t), 1_796_324_400);
        assert_eq!(day(t), 1_796_256_000);
        // Monday 2026-11-30.
        assert_eq!(week(t), 1_796_256_000 - 3 * DAY);
        // 2026-12-01.
        assert_eq!(month(t), 1_796_256_000 - 2 * DAY);
        assert_eq!(month_key(t), 202_612);
    }
}

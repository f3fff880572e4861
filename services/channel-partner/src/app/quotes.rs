//! Quotes: the brand's range table, quotes priced line by line against it
//! ([`crate::domain::quotes`]), the brand's approval of quotes out of range, and
//! acceptance, which places the quote's order in orders (idempotent by the quote:
//! every acceptance asks with the same request id) and wins the opportunity.
//!
//! Every change of state is a conditional update with its trail entry and its
//! event in one transaction; of concurrent decisions exactly one goes through.

use chrono::{DateTime, Duration, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{App, Caller};
use crate::domain::ids::PartnerId;
use crate::domain::partner::PartnerState;
use crate::domain::quotes::{self as rules, PricedLine, QuoteState, RangeRow, Relationship};
use crate::domain::sales::{CustomerClass, Stage};
use crate::downstream::{QuoteOrder, from_downstream};
use crate::events;
use crate::store::{self, opportunity, price_range, quote, quote_trail, stage_change};

/// A range table row to set (already checked).
#[derive(Debug, Clone)]
pub struct NewRange {
    pub level: String,
    pub class: CustomerClass,
    pub relationship: Relationship,
    pub volume_from_minor: i64,
    pub min_discount_bp: i32,
    pub max_discount_bp: i32,
}

/// A quote to create (already checked).
#[derive(Debug, Clone)]
pub struct NewQuote {
    pub opportunity_id: String,
    pub class: CustomerClass,
    pub relationship: Relationship,
    pub expected_volume_minor: i64,
    /// SKU code, units, unit price.
    pub lines: Vec<(String, i64, i64)>,
    pub valid_until: Option<DateTime<Utc>>,
}

/// A quote with its lines, its trail (oldest first; empty in lists) and its
/// state at the service's clock.
#[derive(Debug, Clone)]
pub struct QuoteView {
    pub quote: quote::Model,
    pub lines: Vec<PricedLine>,
    pub trail: Vec<quote_trail::Model>,
    pub state: QuoteState,
}

pub fn quote_name(partner: &str, id: &str) -> String {
    format!("partners/{partner}/quotes/{id}")
}

fn quote_not_found(partner: &PartnerId, id: &str) -> ServiceError {
    ServiceError::not_found("quote", quote_name(partner.as_str(), id))
}

/// How far ahead a quote's `valid_until` may be.
const MAX_VALID_DAYS: i64 = 366;

fn range_row(r: &price_range::Model) -> Option<RangeRow> {
    Some(RangeRow {
        id: r.id.clone(),
        level: r.level.clone(),
        class: CustomerClass::parse(&r.customer_class)?,
        relationship: Relationship::parse(&r.relationship)?,
        volume_from_minor: r.volume_from_minor,
        min_discount_bp: i32::try_from(r.min_discount_bp).ok()?,
        max_discount_bp: i32::try_from(r.max_discount_bp).ok()?,
    })
}

fn view(q: quote::Model, trail: Vec<quote_trail::Model>, now: DateTime<Utc>) -> ServiceResult<QuoteView> {
    let lines: Vec<PricedLine> = serde_json::from_str(&q.lines).map_err(|_| store::corrupt("quote lines", &q.id))?;
    let state = QuoteState::parse(&q.state)
        .ok_or_else(|| store::corrupt("quote state", &q.state))?
        .at(q.valid_until, now);
    Ok(QuoteView {
        quote: q,
        lines,
        trail,
        state,
    })
}

fn trail_entry(quote_id: &str, action: &str, actor: &str, reason: &str, at: DateTime<Utc>) -> quote_trail::Model {
    quote_trail::Model {
        id: store::new_id(),
        quote_id: quote_id.to_owned(),
        action: action.to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        at,
    }
}

async fn record(
    txn: &DatabaseTransaction,
    q: &quote::Model,
    entry: quote_trail::Model,
    order_id: &str,
) -> ServiceResult<()> {
    events::quote_changed(q, &entry, order_id).publish(txn, &q.id).await?;
    quote_trail::ActiveModel::from(entry).insert(txn).await?;
    Ok(())
}

impl App {
    /// Sets the range of one key of the table (creates or replaces it). Brand only.
    pub async fn set_price_range(&self, caller: &Caller, new: NewRange) -> ServiceResult<price_range::Model> {
        caller.require_brand("sets quote price ranges")?;
        if !self.rules.ladder.levels().iter().any(|l| l.code == new.level) {
            return Err(ServiceError::invalid(
                "price_range.level",
                format!("{} is not a level of the programme", new.level),
            ));
        }
        let now = self.now();
        let row = price_range::Model {
            id: store::new_id(),
            level: new.level,
            customer_class: new.class.as_str().to_owned(),
            relationship: new.relationship.as_str().to_owned(),
            volume_from_minor: new.volume_from_minor,
            min_discount_bp: i64::from(new.min_discount_bp),
            max_discount_bp: i64::from(new.max_discount_bp),
            updated_by: caller.subject.clone(),
            updated_at: now,
        };
        // Of two first sets of a key, the second meets the unique key and updates.
        for _ in 0..2 {
            let result = idempotency::transaction(&self.db, |txn| {
                let row = row.clone();
                Box::pin(async move {
                    let existing = price_range::Entity::find()
                        .filter(price_range::Column::Level.eq(row.level.as_str()))
                        .filter(price_range::Column::CustomerClass.eq(row.customer_class.as_str()))
                        .filter(price_range::Column::Relationship.eq(row.relationship.as_str()))
                        .filter(price_range::Column::VolumeFromMinor.eq(row.volume_from_minor))
                        .one(txn)
                        .await?;
                    match existing {
                        Some(old) => {
                            let updated = price_range::Model { id: old.id, ..row };
                            price_range::ActiveModel::from(updated.clone())
                                .reset_all()
                                .update(txn)
                                .await?;
                            Ok(updated)
                        }
                        None => Ok(price_range::ActiveModel::from(row).insert(txn).await?),
                    }
                })
            })
            .await;
            match result {
                Err(ServiceError::AlreadyExists(_)) => continue,
                other => return other,
            }
        }
        Err(ServiceError::Aborted("the range changed meanwhile; retry".into()))
    }

    /// The range table by key. Brand only.
    pub async fn list_price_ranges(
        &self,
        caller: &Caller,
        page: &Page,
    ) -> ServiceResult<(Vec<price_range::Model>, String)> {
        caller.require_brand("reads the quote price ranges")?;
        let mut q = price_range::Entity::find().order_by_asc(price_range::Column::Id);
        if let Some(after) = &page.after {
            q = q.filter(price_range::Column::Id.gt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        Ok(page.finish(rows, |r| r.id.clone()))
    }

    /// Quotes an open opportunity of `partner` (active): issued when every line
    /// is in range, pending approval otherwise.
    pub async fn create_quote<R>(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        new: NewQuote,
        key: Option<&IdempotencyKey>,
        respond: fn(&QuoteView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let p = self.partner(caller, partner).await?;
        if p.state != PartnerState::Active.as_str() {
            return Err(ServiceError::FailedPrecondition(format!(
                "partner {} is {}, not active",
                partner.resource_name(),
                p.state
            )));
        }
        let o = self
            .opportunity(caller, partner, &new.opportunity_id)
            .await?
            .opportunity;
        if Stage::parse(&o.stage).is_none_or(Stage::is_final) {
            return Err(ServiceError::FailedPrecondition(format!(
                "opportunity {} is {}: only open opportunities are quoted",
                super::opportunities::opportunity_name(&o.partner_id, &o.id),
                o.stage
            )));
        }
        let now = self.now();
        let valid_until = match new.valid_until {
            None => now + Duration::days(i64::from(self.settings.sales.quote_valid_days)),
            Some(t) if t <= now || t > now + Duration::days(MAX_VALID_DAYS) => {
                return Err(ServiceError::invalid(
                    "quote.valid_until",
                    "must be in the future and at most 366 days ahead",
                ));
            }
            Some(t) => t,
        };
        let units: Vec<(String, i64)> = new.lines.iter().map(|(s, q, _)| (s.clone(), *q)).collect();
        let lists = self
            .downstream()
            .list_prices(&self.rules.currency, &p.level, &units)
            .await
            .map_err(|s| from_downstream("catalog", &s))?;
        let rows: Vec<RangeRow> = price_range::Entity::find()
            .filter(price_range::Column::Level.eq(p.level.as_str()))
            .filter(price_range::Column::CustomerClass.eq(new.class.as_str()))
            .filter(price_range::Column::Relationship.eq(new.relationship.as_str()))
            .all(&self.db)
            .await?
            .iter()
            .filter_map(range_row)
            .collect();
        let row = rules::applicable_row(&rows, &p.level, new.class, new.relationship, new.expected_volume_minor);
        let lines = rules::price_lines(&new.lines, &lists, row);
        let state = rules::initial_state(&lines);
        let total_minor = lines
            .iter()
            .try_fold(0i64, |sum, l| {
                l.unit_minor.checked_mul(l.quantity).and_then(|t| sum.checked_add(t))
            })
            .filter(|t| *t <= retail_kit::money::MAX_AMOUNT_MINOR)
            .ok_or_else(|| ServiceError::invalid("quote.lines", "the quote's total is too large"))?;
        let q = quote::Model {
            id: store::new_id(),
            partner_id: partner.as_str().to_owned(),
            opportunity_id: o.id.clone(),
            customer_class: new.class.as_str().to_owned(),
            relationship: new.relationship.as_str().to_owned(),
            expected_volume_minor: new.expected_volume_minor,
            level: p.level.clone(),
            price_range_id: row.map(|r| r.id.clone()).unwrap_or_default(),
            currency: self.rules.currency.clone(),
            total_minor,
            lines: serde_json::to_string(&lines).map_err(ServiceError::internal)?,
            state: state.as_str().to_owned(),
            valid_until,
            order_id: String::new(),
            created_by: caller.subject.clone(),
            created_at: now,
        };
        let action = if state == QuoteState::Issued {
            "issued"
        } else {
            "submitted"
        };
        let entry = trail_entry(&q.id, action, &caller.subject, "", now);
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (q, entry, lines) = (q.clone(), entry.clone(), lines.clone());
            Box::pin(async move {
                quote::ActiveModel::from(q.clone()).insert(txn).await?;
                record(txn, &q, entry.clone(), "").await?;
                Ok(respond(&QuoteView {
                    quote: q,
                    lines,
                    trail: vec![entry],
                    state,
                }))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// A quote the caller may see, with its trail.
    pub async fn quote(&self, caller: &Caller, partner: &PartnerId, id: &str) -> ServiceResult<QuoteView> {
        let q = match quote::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(q) if q.partner_id == partner.as_str() && caller.sees(&q.partner_id) => q,
            _ => return Err(quote_not_found(partner, id)),
        };
        let trail = quote_trail::Entity::find()
            .filter(quote_trail::Column::QuoteId.eq(id))
            .order_by_asc(quote_trail::Column::Id)
            .all(&self.db)
            .await?;
        view(q, trail, self.now())
    }

    /// Quotes newest first (without their trail): of `partner`, or (None) of
    /// every partner the caller sees, optionally in one state at the service's
    /// clock.
    pub async fn list_quotes(
        &self,
        caller: &Caller,
        partner: Option<&PartnerId>,
        state: Option<QuoteState>,
        page: &Page,
    ) -> ServiceResult<(Vec<QuoteView>, String)> {
        let only = match (partner, &caller.partner) {
            (Some(p), _) => {
                self.partner(caller, p).await?;
                Some(p.as_str().to_owned())
            }
            (None, own) => own.clone(),
        };
        let now = self.now();
        let open = [
            QuoteState::PendingApproval.as_str(),
            QuoteState::Issued.as_str(),
            QuoteState::Approved.as_str(),
        ];
        let mut q = quote::Entity::find().order_by_desc(quote::Column::Id);
        if let Some(p) = only {
            q = q.filter(quote::Column::PartnerId.eq(p));
        }
        q = match state {
            None => q,
            Some(QuoteState::Expired) => q
                .filter(quote::Column::State.is_in(open))
                .filter(quote::Column::ValidUntil.lte(now)),
            Some(s @ (QuoteState::PendingApproval | QuoteState::Issued | QuoteState::Approved)) => q
                .filter(quote::Column::State.eq(s.as_str()))
                .filter(quote::Column::ValidUntil.gt(now)),
            Some(s) => q.filter(quote::Column::State.eq(s.as_str())),
        };
        if let Some(after) = &page.after {
            q = q.filter(quote::Column::Id.lt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        let (rows, next) = page.finish(rows, |r| r.id.clone());
        let views = rows
            .into_iter()
            .map(|r| view(r, Vec::new(), now))
            .collect::<ServiceResult<Vec<_>>>()?;
        Ok((views, next))
    }

    /// Approves (`approve`) or rejects a quote pending approval. Brand only.
    pub async fn decide_quote(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> ServiceResult<QuoteView> {
        let current = self.quote(caller, partner, id).await?;
        caller.require_brand("approves or rejects quotes")?;
        let now = self.now();
        let (to, action) = if approve {
            (QuoteState::Approved, "approved")
        } else {
            (QuoteState::Rejected, "rejected")
        };
        let entry = trail_entry(id, action, &caller.subject, reason, now);
        let decided = idempotency::transaction(&self.db, |txn| {
            let (q, entry) = (current.quote.clone(), entry.clone());
            Box::pin(async move {
                let mut update = quote::Entity::update_many()
                    .col_expr(quote::Column::State, Expr::value(to.as_str()))
                    .filter(quote::Column::Id.eq(q.id.as_str()))
                    .filter(quote::Column::State.eq(QuoteState::PendingApproval.as_str()));
                if approve {
                    // An expired quote is not approved; a rejection of one is moot but harmless.
                    update = update.filter(quote::Column::ValidUntil.gt(now));
                }
                if update.exec(txn).await?.rows_affected != 1 {
                    return Ok(false);
                }
                record(txn, &q, entry, "").await?;
                Ok(true)
            })
        })
        .await?;
        if !decided {
            return Err(ServiceError::FailedPrecondition(format!(
                "quote {} is {}, not pending approval",
                quote_name(partner.as_str(), id),
                current.state.as_str()
            )));
        }
        self.log.committed();
        self.quote(caller, partner, id).await
    }

    /// Accepts an issued or approved, unexpired quote: places its order (once per
    /// quote, however often or concurrently it is accepted), keeps the order on
    /// the quote and wins the opportunity. An accepted quote is answered as it is.
    pub async fn accept_quote(&self, caller: &Caller, partner: &PartnerId, id: &str) -> ServiceResult<QuoteView> {
        let current = self.quote(caller, partner, id).await?;
        if current.state == QuoteState::Accepted {
            return Ok(current);
        }
        if !current.state.acceptable() {
            return Err(ServiceError::FailedPrecondition(format!(
                "quote {} is {}: only an issued or approved quote is accepted",
                quote_name(partner.as_str(), id),
                current.state.as_str()
            )));
        }
        let q = &current.quote;
        let o = opportunity::Entity::find_by_id(q.opportunity_id.clone())
            .one(&self.db)
            .await?
            .ok_or_else(|| store::corrupt("quote opportunity", &q.opportunity_id))?;
        if o.stage == Stage::Lost.as_str() {
            return Err(ServiceError::FailedPrecondition(format!(
                "opportunity {} is lost",
                super::opportunities::opportunity_name(&o.partner_id, &o.id)
            )));
        }
        let order = QuoteOrder {
            request_id: format!("quote-{}", q.id),
            quote: quote_name(&q.partner_id, &q.id),
            partner_id: q.partner_id.clone(),
            sales_rep: o.rep_id.clone(),
            customer_name: o.customer_name.clone(),
            customer_region: o.customer_region.clone(),
            customer_tax_id: o.customer_tax_id.clone(),
            lines: current.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect(),
        };
        let order_id = self
            .downstream()
            .place_quote_order(&order)
            .await
            .map_err(|s| from_downstream("orders", &s))?;
        let now = self.now();
        let entry = trail_entry(id, "accepted", &caller.subject, "", now);
        let subject = caller.subject.clone();
        idempotency::transaction(&self.db, |txn| {
            let (q, entry, order_id, subject) = (q.clone(), entry.clone(), order_id.clone(), subject.clone());
            Box::pin(async move {
                let r = quote::Entity::update_many()
                    .col_expr(quote::Column::State, Expr::value(QuoteState::Accepted.as_str()))
                    .col_expr(quote::Column::OrderId, Expr::value(order_id.as_str()))
                    .filter(quote::Column::Id.eq(q.id.as_str()))
                    .filter(quote::Column::State.is_in([QuoteState::Issued.as_str(), QuoteState::Approved.as_str()]))
                    .exec(txn)
                    .await?;
                if r.rows_affected != 1 {
                    // A concurrent acceptance recorded the same order first.
                    return Ok(());
                }
                record(txn, &q, entry, &order_id).await?;
                win_opportunity(txn, &q, &subject, now).await
            })
        })
        .await?;
        self.log.committed();
        let accepted = self.quote(caller, partner, id).await?;
        if accepted.state != QuoteState::Accepted {
            return Err(ServiceError::FailedPrecondition(format!(
                "quote {} is {}",
                quote_name(partner.as_str(), id),
                accepted.state.as_str()
            )));
        }
        Ok(accepted)
    }
}

/// Moves the quote's opportunity to won from whatever open stage it is in.
async fn win_opportunity(
    txn: &DatabaseTransaction,
    q: &quote::Model,
    actor: &str,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    let Some(o) = opportunity::Entity::find_by_id(q.opportunity_id.clone())
        .one(txn)
        .await?
    else {
        return Ok(());
    };
    let Some(from) = Stage::parse(&o.stage).filter(|s| !s.is_final()) else {
        return Ok(());
    };
    let at = now.max(o.stage_since);
    let moved = opportunity::Entity::update_many()
        .col_expr(opportunity::Column::Stage, Expr::value(Stage::Won.as_str()))
        .col_expr(opportunity::Column::StageSince, Expr::value(at))
        .filter(opportunity::Column::Id.eq(o.id.as_str()))
        .filter(opportunity::Column::Stage.eq(from.as_str()))
        .exec(txn)
        .await?;
    if moved.rows_affected != 1 {
        return Err(ServiceError::Aborted("the opportunity moved meanwhile; retry".into()));
    }
    let change = stage_change::Model {
        id: store::new_id(),
        opportunity_id: o.id.clone(),
        partner_id: o.partner_id.clone(),
        rep_id: o.rep_id.clone(),
        from_stage: from.as_str().to_owned(),
        to_stage: Stage::Won.as_str().to_owned(),
        actor: actor.to_owned(),
        reason: format!("quote {} accepted", quote_name(&q.partner_id, &q.id)),
        changed_at: at,
    };
    stage_change::ActiveModel::from(change.clone()).insert(txn).await?;
    events::opportunity_stage_changed(&o, &change)
        .publish(txn, &o.id)
        .await?;
    Ok(())
}

//! Leads: the brand creates them, they are scored by the MAN rule and offered to
//! one partner at a time ([`crate::domain::sales::choose_partner`]) with an
//! acceptance deadline; a declined or timed-out offer goes to the next eligible
//! partner and never back to one that had it; the partner that accepted reports
//! the outcome. Every offer is kept with why it went to that partner.

use chrono::{DateTime, Duration, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::deals::CustomerInput;
use super::{App, Caller};
use crate::domain::ids::RepId;
use crate::domain::partner::PartnerState;
use crate::domain::sales::{self, Candidate, CustomerClass, LeadState, ManInputs, Trend};
use crate::events;
use crate::store::{self, lead, lead_offer, partner};

/// A lead to create (already checked).
#[derive(Debug, Clone)]
pub struct NewLead {
    pub customer: CustomerInput,
    pub class: CustomerClass,
    pub inputs: ManInputs,
    pub need: String,
}

/// Changes to a lead's qualification (the fields named by the mask).
#[derive(Debug, Clone, Default)]
pub struct LeadChanges {
    pub annual_budget_minor: Option<i64>,
    pub special_budget_minor: Option<i64>,
    pub trend: Option<Trend>,
    pub authority: Option<u8>,
    pub need_score: Option<u8>,
    pub need: Option<String>,
}

/// A lead with its offers, oldest first (empty for partner principals).
#[derive(Debug, Clone)]
pub struct LeadView {
    pub lead: lead::Model,
    pub offers: Vec<lead_offer::Model>,
}

fn lead_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("lead", format!("leads/{id}"))
}

/// The MAN inputs a stored lead holds.
fn inputs_of(l: &lead::Model) -> ManInputs {
    ManInputs {
        annual_budget_minor: l.annual_budget_minor,
        special_budget_minor: l.special_budget_minor,
        trend: Trend::parse(&l.trend).unwrap_or(Trend::Stable),
        authority: u8::try_from(l.authority_score).unwrap_or(1),
        need: u8::try_from(l.need_score).unwrap_or(1),
    }
}

/// What the offers need of the settings (owned, so a transaction's work can hold it).
#[derive(Debug, Clone)]
struct Distributor {
    ladder: crate::domain::levels::Ladder,
    sales: crate::settings::SalesSection,
}

impl Distributor {
    /// Offers `l` (stored or about to be) to the next eligible partner, or leaves
    /// it unassigned; records the offer and publishes the change. `l` is updated
    /// in memory; the caller writes it.
    async fn offer_next(&self, txn: &DatabaseTransaction, l: &mut lead::Model, at: DateTime<Utc>) -> ServiceResult<()> {
        let choice = self.choose(txn, l, true).await?;
        self.apply_choice(txn, l, choice, at).await
    }

    /// The partner `l` would go to now, if any. With `lock`, distributions take
    /// turns: each first locks the active partners' rows (a write that changes
    /// nothing), so two never count the same free capacity; without, it is only a
    /// look.
    async fn choose(
        &self,
        txn: &impl ConnectionTrait,
        l: &lead::Model,
        lock: bool,
    ) -> ServiceResult<Option<sales::Choice>> {
        if lock {
            partner::Entity::update_many()
                .col_expr(partner::Column::Level, Expr::col(partner::Column::Level))
                .filter(partner::Column::State.eq(PartnerState::Active.as_str()))
                .exec(txn)
                .await?;
        }
        let excluded: Vec<String> = lead_offer::Entity::find()
            .filter(lead_offer::Column::LeadId.eq(l.id.as_str()))
            .all(txn)
            .await?
            .into_iter()
            .map(|o| o.partner_id)
            .collect();
        let partners = partner::Entity::find()
            .filter(partner::Column::State.eq(PartnerState::Active.as_str()))
            .all(txn)
            .await?;
        let open: Vec<(String, i64)> = lead::Entity::find()
            .select_only()
            .column(lead::Column::PartnerId)
            .column_as(lead::Column::Id.count(), "n")
            .filter(lead::Column::State.is_in([LeadState::Offered.as_str(), LeadState::Accepted.as_str()]))
            .filter(lead::Column::Id.ne(l.id.as_str()))
            .group_by(lead::Column::PartnerId)
            .into_tuple()
            .all(txn)
            .await?;
        let candidates: Vec<Candidate> = partners
            .into_iter()
            .map(|p| {
                let open_leads = open
                    .iter()
                    .find(|(id, _)| *id == p.id)
                    .map_or(0, |(_, n)| u32::try_from(*n).unwrap_or(u32::MAX));
                Candidate {
                    priority: self.ladder.privileges(&p.level).lead_priority,
                    capacity: self.sales.capacity(&p.level),
                    partner_id: p.id,
                    region: p.region,
                    level: p.level,
                    open_leads,
                }
            })
            .collect();
        Ok(sales::choose_partner(&l.customer_region, &candidates, &excluded))
    }

    async fn apply_choice(
        &self,
        txn: &DatabaseTransaction,
        l: &mut lead::Model,
        choice: Option<sales::Choice>,
        at: DateTime<Utc>,
    ) -> ServiceResult<()> {
        match choice {
            Some(choice) => {
                let deadline = at + Duration::hours(i64::from(self.sales.lead_accept_hours));
                lead_offer::ActiveModel::from(lead_offer::Model {
                    id: store::new_id(),
                    lead_id: l.id.clone(),
                    partner_id: choice.partner_id.clone(),
                    reason: choice.reason.clone(),
                    offered_at: at,
                    accept_deadline: deadline,
                    outcome: "offered".into(),
                    outcome_reason: String::new(),
                })
                .insert(txn)
                .await?;
                l.state = LeadState::Offered.as_str().to_owned();
                l.partner_id = choice.partner_id;
                l.accept_deadline = Some(deadline);
                l.assignment_reason = choice.reason;
                events::lead_changed(l, &l.partner_id, "offered", &l.assignment_reason, at)
                    .publish(txn, &l.id)
                    .await?;
            }
            None => {
                l.state = LeadState::Unassigned.as_str().to_owned();
                l.partner_id = String::new();
                l.accept_deadline = None;
                l.assignment_reason = format!(
                    "no active partner in region {} with room for another lead that was not offered it before",
                    l.customer_region
                );
                events::lead_changed(l, "", "unassigned", &l.assignment_reason, at)
                    .publish(txn, &l.id)
                    .await?;
            }
        }
        Ok(())
    }
}

impl App {
    fn distributor(&self) -> Distributor {
        Distributor {
            ladder: self.rules.ladder.clone(),
            sales: self.settings.sales.clone(),
        }
    }

    /// Stores the scores of `inputs` on `l`, computed at `at`.
    fn score_into(&self, l: &mut lead::Model, inputs: &ManInputs, at: DateTime<Utc>) {
        let s = sales::man_score(inputs, self.rules.minor_exponent);
        l.annual_budget_minor = inputs.annual_budget_minor;
        l.special_budget_minor = inputs.special_budget_minor;
        l.trend = inputs.trend.as_str().to_owned();
        l.authority_score = i64::from(s.authority);
        l.need_score = i64::from(s.need);
        l.money_score = i64::from(s.money);
        l.total_tenths = i64::from(s.total_tenths);
        l.scored_at = at;
    }

    /// Creates a lead, scores it and offers it. Brand only.
    pub async fn create_lead<R>(
        &self,
        caller: &Caller,
        new: NewLead,
        key: Option<&IdempotencyKey>,
        respond: fn(&LeadView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        caller.require_brand("creates leads")?;
        let now = self.now();
        let mut model = lead::Model {
            id: store::new_id(),
            customer_name: new.customer.name,
            customer_region: new.customer.region,
            customer_tax_id: new.customer.tax_id,
            customer_class: new.class.as_str().to_owned(),
            annual_budget_minor: 0,
            special_budget_minor: 0,
            trend: String::new(),
            authority_score: 0,
            need_score: 0,
            need: new.need,
            money_score: 0,
            total_tenths: 0,
            scored_at: now,
            state: LeadState::Unassigned.as_str().to_owned(),
            partner_id: String::new(),
            accept_deadline: None,
            assignment_reason: String::new(),
            outcome_reason: String::new(),
            created_by: caller.subject.clone(),
            created_at: now,
            rep_id: String::new(),
        };
        self.score_into(&mut model, &new.inputs, now);
        let d = self.distributor();
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (mut model, d) = (model.clone(), d.clone());
            Box::pin(async move {
                d.offer_next(txn, &mut model, now).await?;
                lead::ActiveModel::from(model.clone()).insert(txn).await?;
                let offers = lead_offer::Entity::find()
                    .filter(lead_offer::Column::LeadId.eq(model.id.as_str()))
                    .all(txn)
                    .await?;
                Ok(respond(&LeadView { lead: model, offers }))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// A lead the caller may see: the brand any, a partner those offered to it
    /// now or accepted by it.
    pub async fn lead(&self, caller: &Caller, id: &str) -> ServiceResult<LeadView> {
        let l = match lead::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(l) if !l.partner_id.is_empty() && caller.sees(&l.partner_id) => l,
            Some(l) if caller.is_brand() => l,
            _ => return Err(lead_not_found(id)),
        };
        let offers = if caller.is_brand() {
            lead_offer::Entity::find()
                .filter(lead_offer::Column::LeadId.eq(id))
                .order_by_asc(lead_offer::Column::Id)
                .all(&self.db)
                .await?
        } else {
            Vec::new()
        };
        Ok(LeadView { lead: l, offers })
    }

    /// Leads ranked by MAN total (highest first), then earlier first.
    pub async fn list_leads(
        &self,
        caller: &Caller,
        state: Option<LeadState>,
        page: &Page,
    ) -> ServiceResult<(Vec<LeadView>, String)> {
        let mut q = lead::Entity::find()
            .order_by_desc(lead::Column::TotalTenths)
            .order_by_asc(lead::Column::Id);
        if let Some(own) = &caller.partner {
            q = q.filter(lead::Column::PartnerId.eq(own.as_str()));
        }
        if let Some(s) = state {
            q = q.filter(lead::Column::State.eq(s.as_str()));
        }
        if let Some(after) = &page.after {
            let (total, id) = after
                .split_once(':')
                .and_then(|(t, id)| t.parse::<i64>().ok().map(|t| (t, id.to_owned())))
                .ok_or_else(|| ServiceError::invalid("page_token", "is not a token of this list"))?;
            q = q.filter(
                Condition::any().add(lead::Column::TotalTenths.lt(total)).add(
                    Condition::all()
                        .add(lead::Column::TotalTenths.eq(total))
                        .add(lead::Column::Id.gt(id)),
                ),
            );
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        let (rows, next) = page.finish(rows, |l| format!("{}:{}", l.total_tenths, l.id));
        let views = rows
            .into_iter()
            .map(|lead| LeadView {
                lead,
                offers: Vec::new(),
            })
            .collect();
        Ok((views, next))
    }

    /// Changes a lead's qualification inputs and recomputes its scores: the brand,
    /// or the partner holding it. FAILED_PRECONDITION once it is won or lost.
    pub async fn update_lead(&self, caller: &Caller, id: &str, changes: LeadChanges) -> ServiceResult<LeadView> {
        let current = self.lead(caller, id).await?.lead;
        if !caller.is_brand() && current.state != LeadState::Accepted.as_str() {
            return Err(ServiceError::FailedPrecondition(
                "a partner updates a lead it has accepted".into(),
            ));
        }
        let mut inputs = inputs_of(&current);
        if let Some(v) = changes.annual_budget_minor {
            inputs.annual_budget_minor = v;
        }
        if let Some(v) = changes.special_budget_minor {
            inputs.special_budget_minor = v;
        }
        if let Some(v) = changes.trend {
            inputs.trend = v;
        }
        if let Some(v) = changes.authority {
            inputs.authority = v;
        }
        if let Some(v) = changes.need_score {
            inputs.need = v;
        }
        let now = self.now();
        let mut updated = current.clone();
        self.score_into(&mut updated, &inputs, now);
        if let Some(need) = changes.need {
            updated.need = need;
        }
        let r = lead::Entity::update_many()
            .col_expr(
                lead::Column::AnnualBudgetMinor,
                Expr::value(updated.annual_budget_minor),
            )
            .col_expr(
                lead::Column::SpecialBudgetMinor,
                Expr::value(updated.special_budget_minor),
            )
            .col_expr(lead::Column::Trend, Expr::value(updated.trend.as_str()))
            .col_expr(lead::Column::AuthorityScore, Expr::value(updated.authority_score))
            .col_expr(lead::Column::NeedScore, Expr::value(updated.need_score))
            .col_expr(lead::Column::Need, Expr::value(updated.need.as_str()))
            .col_expr(lead::Column::MoneyScore, Expr::value(updated.money_score))
            .col_expr(lead::Column::TotalTenths, Expr::value(updated.total_tenths))
            .col_expr(lead::Column::ScoredAt, Expr::value(updated.scored_at))
            .filter(lead::Column::Id.eq(id))
            .filter(lead::Column::State.is_not_in([LeadState::Won.as_str(), LeadState::Lost.as_str()]))
            .exec(&self.db)
            .await?;
        if r.rows_affected != 1 {
            return Err(ServiceError::FailedPrecondition(
                "a won or lost lead is not changed".into(),
            ));
        }
        self.lead(caller, id).await
    }

    /// The caller's partner, which must hold the lead in `state`.
    async fn held_lead(&self, caller: &Caller, id: &str, state: LeadState) -> ServiceResult<lead::Model> {
        let l = self.lead(caller, id).await?.lead;
        if caller.is_brand() && state == LeadState::Offered {
            return Err(ServiceError::PermissionDenied(
                "only the partner a lead is offered to answers the offer".into(),
            ));
        }
        if l.state != state.as_str() {
            return Err(ServiceError::FailedPrecondition(format!(
                "the lead is {}, not {}",
                l.state,
                state.as_str()
            )));
        }
        Ok(l)
    }

    /// Moves the lead held by `l.partner_id` from `from` to `to` by a conditional
    /// update; FAILED_PRECONDITION when a concurrent change came first.
    async fn move_lead(
        txn: &DatabaseTransaction,
        l: &lead::Model,
        from: LeadState,
        to: LeadState,
        outcome_reason: &str,
    ) -> ServiceResult<()> {
        let r = lead::Entity::update_many()
            .col_expr(lead::Column::State, Expr::value(to.as_str()))
            .col_expr(lead::Column::OutcomeReason, Expr::value(outcome_reason))
            .filter(lead::Column::Id.eq(l.id.as_str()))
            .filter(lead::Column::State.eq(from.as_str()))
            .filter(lead::Column::PartnerId.eq(l.partner_id.as_str()))
            .exec(txn)
            .await?;
        if r.rows_affected != 1 {
            return Err(ServiceError::FailedPrecondition(
                "the lead changed meanwhile; read it again".into(),
            ));
        }
        Ok(())
    }

    /// Ends the current offer of `l` with `outcome`.
    async fn close_offer(txn: &DatabaseTransaction, l: &lead::Model, outcome: &str, reason: &str) -> ServiceResult<()> {
        lead_offer::Entity::update_many()
            .col_expr(lead_offer::Column::Outcome, Expr::value(outcome))
            .col_expr(lead_offer::Column::OutcomeReason, Expr::value(reason))
            .filter(lead_offer::Column::LeadId.eq(l.id.as_str()))
            .filter(lead_offer::Column::PartnerId.eq(l.partner_id.as_str()))
            .filter(lead_offer::Column::Outcome.eq("offered"))
            .exec(txn)
            .await?;
        Ok(())
    }

    /// Accepts a lead offered to the caller's partner before its deadline.
    pub async fn accept_lead(&self, caller: &Caller, id: &str) -> ServiceResult<LeadView> {
        let l = self.held_lead(caller, id, LeadState::Offered).await?;
        let now = self.now();
        if l.accept_deadline.is_some_and(|d| d <= now) {
            return Err(ServiceError::FailedPrecondition(
                "the offer's acceptance deadline has passed".into(),
            ));
        }
        idempotency::transaction(&self.db, |txn| {
            let l = l.clone();
            Box::pin(async move {
                Self::move_lead(txn, &l, LeadState::Offered, LeadState::Accepted, "").await?;
                Self::close_offer(txn, &l, "accepted", "").await?;
                events::lead_changed(&l, &l.partner_id, "accepted", "", now)
                    .publish(txn, &l.id)
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        self.lead(caller, id).await
    }

    /// Assigns an accepted lead to a rep of the partner holding it (`None`: to
    /// no rep); the partner's manager (not a rep) or the brand.
    pub async fn assign_lead(&self, caller: &Caller, id: &str, rep: Option<&RepId>) -> ServiceResult<LeadView> {
        let l = self.lead(caller, id).await?.lead;
        if self.acting_rep(caller).await?.is_some() {
            return Err(ServiceError::PermissionDenied(
                "only the partner's manager or the brand assigns leads to reps".into(),
            ));
        }
        if l.state != LeadState::Accepted.as_str() {
            return Err(ServiceError::FailedPrecondition(format!(
                "lead leads/{id} is {}: only an accepted lead is assigned to a rep",
                l.state
            )));
        }
        let rep_id = match rep {
            None => String::new(),
            Some(rep) => match store::rep(&self.db, rep.as_str()).await? {
                Some(r) if r.partner_id == l.partner_id => r.id,
                _ => {
                    return Err(ServiceError::invalid(
                        "sales_rep",
                        "must be a sales rep of the partner holding the lead",
                    ));
                }
            },
        };
        let r = lead::Entity::update_many()
            .col_expr(lead::Column::RepId, Expr::value(rep_id.as_str()))
            .filter(lead::Column::Id.eq(id))
            .filter(lead::Column::State.eq(LeadState::Accepted.as_str()))
            .filter(lead::Column::PartnerId.eq(l.partner_id.as_str()))
            .exec(&self.db)
            .await?;
        if r.rows_affected != 1 {
            return Err(ServiceError::FailedPrecondition(
                "the lead changed meanwhile; read it again".into(),
            ));
        }
        self.lead(caller, id).await
    }

    /// The accepted leads assigned to a rep, by MAN total (highest first).
    pub(crate) async fn rep_leads(&self, rep_id: &str) -> ServiceResult<Vec<lead::Model>> {
        Ok(lead::Entity::find()
            .filter(lead::Column::RepId.eq(rep_id))
            .filter(lead::Column::State.eq(LeadState::Accepted.as_str()))
            .order_by_desc(lead::Column::TotalTenths)
            .order_by_asc(lead::Column::Id)
            .limit(500)
            .all(&self.db)
            .await?)
    }

    /// Declines a lead offered to the caller's partner: it goes to the next
    /// eligible partner. Afterwards the decliner no longer sees it.
    pub async fn decline_lead(&self, caller: &Caller, id: &str, reason: &str) -> ServiceResult<LeadView> {
        let l = self.held_lead(caller, id, LeadState::Offered).await?;
        let now = self.now();
        let reason = reason.to_owned();
        let d = self.distributor();
        let view = idempotency::transaction(&self.db, |txn| {
            let (l, reason, d) = (l.clone(), reason.clone(), d.clone());
            Box::pin(async move {
                Self::move_lead(txn, &l, LeadState::Offered, LeadState::Unassigned, "").await?;
                Self::close_offer(txn, &l, "declined", &reason).await?;
                events::lead_changed(&l, &l.partner_id, "declined", &reason, now)
                    .publish(txn, &l.id)
                    .await?;
                let mut next = l.clone();
                d.offer_next(txn, &mut next, now).await?;
                write_assignment(txn, &next).await?;
                Ok(LeadView {
                    lead: next,
                    offers: Vec::new(),
                })
            })
        })
        .await?;
        self.log.committed();
        Ok(view)
    }

    /// Reports the outcome of an accepted lead (its partner, or the brand).
    pub async fn report_lead_outcome(
        &self,
        caller: &Caller,
        id: &str,
        won: bool,
        reason: &str,
    ) -> ServiceResult<LeadView> {
        let l = self.held_lead(caller, id, LeadState::Accepted).await?;
        let now = self.now();
        let to = if won { LeadState::Won } else { LeadState::Lost };
        let reason = reason.to_owned();
        idempotency::transaction(&self.db, |txn| {
            let (l, reason) = (l.clone(), reason.clone());
            Box::pin(async move {
                Self::move_lead(txn, &l, LeadState::Accepted, to, &reason).await?;
                events::lead_changed(&l, &l.partner_id, to.as_str(), &reason, now)
                    .publish(txn, &l.id)
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        self.lead(caller, id).await
    }

    /// Times out the offers whose deadline passed at `now` (each lead goes to the
    /// next partner) and offers unassigned leads again; how many offers timed out.
    pub async fn time_out_offers(&self, now: DateTime<Utc>) -> ServiceResult<usize> {
        let due = lead::Entity::find()
            .filter(lead::Column::State.eq(LeadState::Offered.as_str()))
            .filter(lead::Column::AcceptDeadline.lte(now))
            .order_by_asc(lead::Column::AcceptDeadline)
            .limit(1000)
            .all(&self.db)
            .await?;
        let d = self.distributor();
        let mut timed_out = 0;
        for l in due {
            let moved = idempotency::transaction(&self.db, |txn| {
                let (l, d) = (l.clone(), d.clone());
                Box::pin(async move {
                    if Self::move_lead(txn, &l, LeadState::Offered, LeadState::Unassigned, "")
                        .await
                        .is_err()
                    {
                        return Ok(false);
                    }
                    Self::close_offer(txn, &l, "timed_out", "no answer before the deadline").await?;
                    events::lead_changed(&l, &l.partner_id, "timed_out", "no answer before the deadline", now)
                        .publish(txn, &l.id)
                        .await?;
                    let mut next = l.clone();
                    d.offer_next(txn, &mut next, now).await?;
                    write_assignment(txn, &next).await?;
                    Ok(true)
                })
            })
            .await?;
            timed_out += usize::from(moved);
        }
        let waiting = lead::Entity::find()
            .filter(lead::Column::State.eq(LeadState::Unassigned.as_str()))
            .order_by_desc(lead::Column::TotalTenths)
            .order_by_asc(lead::Column::Id)
            .limit(1000)
            .all(&self.db)
            .await?;
        for l in waiting {
            // A look first: the write (and its lock) only when a partner has room.
            if d.choose(&self.db, &l, false).await?.is_none() {
                continue;
            }
            let retried = idempotency::transaction(&self.db, |txn| {
                let (l, d) = (l.clone(), d.clone());
                Box::pin(async move {
                    // Nothing changes (and nothing is published) while nobody is eligible.
                    let Some(choice) = d.choose(txn, &l, true).await? else {
                        return Ok(());
                    };
                    let mut next = l.clone();
                    d.apply_choice(txn, &mut next, Some(choice), now).await?;
                    let r = lead::Entity::update_many()
                        .col_expr(lead::Column::State, Expr::value(next.state.as_str()))
                        .col_expr(lead::Column::PartnerId, Expr::value(next.partner_id.as_str()))
                        .col_expr(lead::Column::AcceptDeadline, Expr::value(next.accept_deadline))
                        .col_expr(
                            lead::Column::AssignmentReason,
                            Expr::value(next.assignment_reason.as_str()),
                        )
                        .filter(lead::Column::Id.eq(l.id.as_str()))
                        .filter(lead::Column::State.eq(LeadState::Unassigned.as_str()))
                        .exec(txn)
                        .await?;
                    if r.rows_affected != 1 {
                        return Err(ServiceError::Aborted("the lead changed meanwhile".into()));
                    }
                    Ok(())
                })
            })
            .await;
            if let Err(err) = retried {
                tracing::debug!(error = %err, lead = %l.id, "an unassigned lead was not offered again");
            }
        }
        self.log.committed();
        Ok(timed_out)
    }
}

/// Writes the assignment `offer_next` chose.
async fn write_assignment(txn: &DatabaseTransaction, l: &lead::Model) -> ServiceResult<()> {
    lead::Entity::update_many()
        .col_expr(lead::Column::State, Expr::value(l.state.as_str()))
        .col_expr(lead::Column::PartnerId, Expr::value(l.partner_id.as_str()))
        // A rep assignment belongs to the partner that held the lead.
        .col_expr(lead::Column::RepId, Expr::value(""))
        .col_expr(lead::Column::AcceptDeadline, Expr::value(l.accept_deadline))
        .col_expr(
            lead::Column::AssignmentReason,
            Expr::value(l.assignment_reason.as_str()),
        )
        .filter(lead::Column::Id.eq(l.id.as_str()))
        .exec(txn)
        .await?;
    Ok(())
}

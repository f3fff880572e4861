//! Opportunities and the pipeline: created at `identified`, moved one stage
//! forward at a time or to lost ([`crate::domain::sales::Stage::may_move_to`]) by
//! a conditional update, every change kept with its time and actor; the report
//! reads the changes ([`crate::domain::sales::pipeline_report`]).

use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::deals::CustomerInput;
use super::{App, Caller};
use crate::domain::ids::{PartnerId, RepId};
use crate::domain::sales::{self, Stage, StageEvent, StageLine};
use crate::events;
use crate::store::{self, opportunity, stage_change};

/// An opportunity to create (already checked).
#[derive(Debug, Clone)]
pub struct NewOpportunity {
    pub title: String,
    pub customer: CustomerInput,
    pub rep: Option<RepId>,
    pub amount_minor: i64,
    pub lead_id: String,
}

/// An opportunity with its stage changes, oldest first.
#[derive(Debug, Clone)]
pub struct OpportunityView {
    pub opportunity: opportunity::Model,
    pub changes: Vec<stage_change::Model>,
}

pub fn opportunity_name(partner: &str, id: &str) -> String {
    format!("partners/{partner}/opportunities/{id}")
}

fn not_found(partner: &PartnerId, id: &str) -> ServiceError {
    ServiceError::not_found("opportunity", opportunity_name(partner.as_str(), id))
}

impl App {
    /// Creates an opportunity of `partner` at identified.
    pub async fn create_opportunity<R>(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        new: NewOpportunity,
        key: Option<&IdempotencyKey>,
        respond: fn(&OpportunityView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        self.partner(caller, partner).await?;
        if let Some(rep) = &new.rep {
            match store::rep(&self.db, rep.as_str()).await? {
                Some(r) if r.partner_id == partner.as_str() || r.partner_id.is_empty() => {}
                _ => {
                    return Err(ServiceError::invalid(
                        "opportunity.sales_rep",
                        "must be a sales rep of the partner or of the brand",
                    ));
                }
            }
        }
        let now = self.now();
        let o = opportunity::Model {
            id: store::new_id(),
            partner_id: partner.as_str().to_owned(),
            rep_id: new.rep.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            title: new.title,
            customer_name: new.customer.name,
            customer_region: new.customer.region,
            customer_tax_id: new.customer.tax_id,
            amount_minor: new.amount_minor,
            lead_id: new.lead_id,
            stage: Stage::Identified.as_str().to_owned(),
            stage_since: now,
            created_at: now,
        };
        let change = stage_change::Model {
            id: store::new_id(),
            opportunity_id: o.id.clone(),
            partner_id: o.partner_id.clone(),
            rep_id: o.rep_id.clone(),
            from_stage: String::new(),
            to_stage: Stage::Identified.as_str().to_owned(),
            actor: caller.subject.clone(),
            reason: String::new(),
            changed_at: now,
        };
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (o, change) = (o.clone(), change.clone());
            Box::pin(async move {
                opportunity::ActiveModel::from(o.clone()).insert(txn).await?;
                stage_change::ActiveModel::from(change.clone()).insert(txn).await?;
                events::opportunity_stage_changed(&o, &change)
                    .publish(txn, &o.id)
                    .await?;
                Ok(respond(&OpportunityView {
                    opportunity: o,
                    changes: vec![change],
                }))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// An opportunity the caller may see, with its history.
    pub async fn opportunity(&self, caller: &Caller, partner: &PartnerId, id: &str) -> ServiceResult<OpportunityView> {
        let o = match opportunity::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(o) if o.partner_id == partner.as_str() && caller.sees(&o.partner_id) => o,
            _ => return Err(not_found(partner, id)),
        };
        let changes = stage_change::Entity::find()
            .filter(stage_change::Column::OpportunityId.eq(id))
            .order_by_asc(stage_change::Column::Id)
            .all(&self.db)
            .await?;
        Ok(OpportunityView {
            opportunity: o,
            changes,
        })
    }

    /// A partner's opportunities, newest first (without their history).
    pub async fn list_opportunities(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        page: &Page,
    ) -> ServiceResult<(Vec<OpportunityView>, String)> {
        self.partner(caller, partner).await?;
        let mut q = opportunity::Entity::find()
            .filter(opportunity::Column::PartnerId.eq(partner.as_str()))
            .order_by_desc(opportunity::Column::Id);
        if let Some(after) = &page.after {
            q = q.filter(opportunity::Column::Id.lt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        let (rows, next) = page.finish(rows, |o| o.id.clone());
        Ok((
            rows.into_iter()
                .map(|opportunity| OpportunityView {
                    opportunity,
                    changes: Vec::new(),
                })
                .collect(),
            next,
        ))
    }

    /// Moves an opportunity to `to`: the next stage or lost. Anything else (or a
    /// concurrent move that came first) is FAILED_PRECONDITION and changes nothing.
    pub async fn move_opportunity(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
        to: Stage,
        reason: &str,
    ) -> ServiceResult<OpportunityView> {
        let current = self.opportunity(caller, partner, id).await?.opportunity;
        let from = Stage::parse(&current.stage).ok_or_else(|| store::corrupt("stage", &current.stage))?;
        if !from.may_move_to(to) {
            return Err(ServiceError::FailedPrecondition(format!(
                "an opportunity moves from {} only {}",
                from.as_str(),
                match from.next() {
                    Some(next) if !from.is_final() => format!("to {} or lost", next.as_str()),
                    _ => "nowhere: it is closed".to_owned(),
                }
            )));
        }
        let now = self.now().max(current.stage_since);
        let change = stage_change::Model {
            id: store::new_id(),
            opportunity_id: current.id.clone(),
            partner_id: current.partner_id.clone(),
            rep_id: current.rep_id.clone(),
            from_stage: from.as_str().to_owned(),
            to_stage: to.as_str().to_owned(),
            actor: caller.subject.clone(),
            reason: reason.to_owned(),
            changed_at: now,
        };
        idempotency::transaction(&self.db, |txn| {
            let (current, change) = (current.clone(), change.clone());
            Box::pin(async move {
                let r = opportunity::Entity::update_many()
                    .col_expr(opportunity::Column::Stage, Expr::value(to.as_str()))
                    .col_expr(opportunity::Column::StageSince, Expr::value(now))
                    .filter(opportunity::Column::Id.eq(current.id.as_str()))
                    .filter(opportunity::Column::Stage.eq(from.as_str()))
                    .exec(txn)
                    .await?;
                if r.rows_affected != 1 {
                    return Err(ServiceError::FailedPrecondition(
                        "the opportunity moved meanwhile; read it again".into(),
                    ));
                }
                stage_change::ActiveModel::from(change.clone()).insert(txn).await?;
                events::opportunity_stage_changed(&current, &change)
                    .publish(txn, &current.id)
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        self.opportunity(caller, partner, id).await
    }

    /// Conversion and time in stage of a partner's opportunities (one rep's when
    /// `rep` is given).
    pub async fn pipeline_report(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        rep: Option<&RepId>,
    ) -> ServiceResult<Vec<StageLine>> {
        self.partner(caller, partner).await?;
        let mut q = stage_change::Entity::find().filter(stage_change::Column::PartnerId.eq(partner.as_str()));
        if let Some(rep) = rep {
            q = q.filter(stage_change::Column::RepId.eq(rep.as_str()));
        }
        let events: Vec<StageEvent> = q
            .order_by_asc(stage_change::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|c| {
                Stage::parse(&c.to_stage).map(|to| StageEvent {
                    opportunity_id: c.opportunity_id,
                    to,
                    at: c.changed_at,
                })
            })
            .collect();
        Ok(sales::pipeline_report(&events))
    }
}

//! The price policy's use cases: discount rules (the brand's), the evaluation of
//! a partner's basket under them, and special discount requests - granted at once
//! at or under the level's ceiling, otherwise approved or rejected by a brand
//! manager, with the trail kept, and used at most once (docs/domain.md, Price
//! policy). The rules
//! themselves are in [`crate::domain::policy`].

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{App, Caller};
use crate::domain::ids::PartnerId;
use crate::domain::levels::Privileges;
use crate::domain::partner::PartnerState;
use crate::domain::period::PeriodKind;
use crate::domain::policy::{self, Basis, Context, Evaluation, Function, Line, Rule, SpecialState};
use crate::events;
use crate::store::{self, Seller, discount_rule, special_discount, special_discount_decision};

/// A rule to create (already checked by [`policy::check_rule`]).
#[derive(Debug, Clone)]
pub struct NewRule {
    pub basis: Basis,
    pub levels: Vec<String>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    pub display_name: String,
}

/// Changes to a rule: each `Some` is set (`valid_until: Some(None)` makes it
/// open-ended again).
#[derive(Debug, Clone, Default)]
pub struct RuleChanges {
    pub valid_until: Option<Option<DateTime<Utc>>>,
    pub display_name: Option<String>,
}
#[derive(Debug, Clone)]
pub struct Priced {
    pub evaluation: Evaluation,
    pub level: String,
    pub ceiling_bp: u32,
}

fn rule_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("discount rule", format!("discountRules/{id}"))
}

/// The stored row of a new rule.
fn to_model(id: String, new: &NewRule, now: DateTime<Utc>) -> ServiceResult<discount_rule::Model> {
    let (period_kind, function, rate_bp) = match &new.basis {
        Basis::Total(_) => ("", "", 0),
        Basis::Cumulative { period, .. } => (period.as_str(), "", 0),
        Basis::Functional { function, rate_bp } => ("", function.as_str(), *rate_bp),
    };
    Ok(discount_rule::Model {
        id,
        kind: new.basis.kind().as_str().to_owned(),
        bands: serde_json::to_string(new.basis.bands()).map_err(ServiceError::internal)?,
        period_kind: period_kind.to_owned(),
        function: function.to_owned(),
        rate_bp: i64::from(rate_bp),
        levels: new.levels.join(","),
        valid_from: new.valid_from,
        valid_until: new.valid_until,
        created_at: now,
        display_name: new.display_name.clone(),
    })
}

/// The rule a stored row holds.
pub fn rule_of(m: &discount_rule::Model) -> ServiceResult<Rule> {
    let bands = || serde_json::from_str(&m.bands).map_err(|_| store::corrupt("discount bands", &m.bands));
    let basis = match policy::RuleKind::parse(&m.kind) {
        Some(policy::RuleKind::Total) => Basis::Total(bands()?),
        Some(policy::RuleKind::Cumulative) => Basis::Cumulative {
            period: PeriodKind::parse(&m.period_kind).ok_or_else(|| store::corrupt("period kind", &m.period_kind))?,
            bands: bands()?,
        },
        Some(policy::RuleKind::Functional) => Basis::Functional {
            function: Function::parse(&m.function).ok_or_else(|| store::corrupt("function", &m.function))?,
            rate_bp: u32::try_from(m.rate_bp).map_err(|_| store::corrupt("rate", &m.rate_bp.to_string()))?,
        },
        None => return Err(store::corrupt("discount rule kind", &m.kind)),
    };
    Ok(Rule {
        id: m.id.clone(),
        basis,
        levels: m
            .levels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        valid_from: m.valid_from,
        valid_until: m.valid_until,
    })
}

impl App {
    /// The level and privileges of a partner the caller may see (NOT_FOUND
    /// otherwise) that is active (FAILED_PRECONDITION otherwise): only admitted
    /// partners buy at partner prices.
    async fn active_privileges(&self, caller: &Caller, id: &PartnerId) -> ServiceResult<(String, Privileges)> {
        let partner = self.partner(caller, id).await?;
        if partner.state != PartnerState::Active.as_str() {
            return Err(ServiceError::FailedPrecondition(format!(
                "partner {} is {}, not active",
                id.resource_name(),
                partner.state
            )));
        }
        Ok((partner.level.clone(), self.rules.ladder.privileges(&partner.level)))
    }

    /// Creates a discount rule. Brand only.
    pub async fn create_discount_rule<R>(
        &self,
        caller: &Caller,
        new: NewRule,
        key: Option<&IdempotencyKey>,
        now: DateTime<Utc>,
        respond: fn(&discount_rule::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        caller.require_brand("sets the price policy")?;
        let unknown: Vec<&String> = new
            .levels
            .iter()
            .filter(|l| self.rules.ladder.levels().iter().all(|d| &d.code != *l))
            .collect();
        if let Some(level) = unknown.first() {
            return Err(ServiceError::invalid(
                "discount_rule.levels",
                format!("unknown level {level}"),
            ));
        }
        let model = to_model(store::new_id(), &new, now)?;
        idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let model = model.clone();
            Box::pin(async move {
                discount_rule::ActiveModel::from(model.clone()).insert(txn).await?;
                Ok(respond(&model))
            })
        })
        .await
    }

    pub async fn discount_rule(&self, id: &str) -> ServiceResult<discount_rule::Model> {
        store::policy::rule(&self.db, id)
            .await?
            .ok_or_else(|| rule_not_found(id))
    }

    pub async fn list_discount_rules(&self, page: &Page) -> ServiceResult<(Vec<discount_rule::Model>, String)> {
        let rows = store::policy::list_rules(&self.db, page).await?;
        Ok(page.finish(rows, |r| r.id.clone()))
    }

    /// Changes a rule's end of validity and display name. Brand only. An end not
    /// after the rule's start is INVALID_ARGUMENT on `discount_rule.valid_until`.
    /// Evaluations from the new end on no longer apply the rule.
    pub async fn update_discount_rule(
        &self,
        caller: &Caller,
        id: &str,
        changes: RuleChanges,
    ) -> ServiceResult<discount_rule::Model> {
        caller.require_brand("sets the price policy")?;
        let mut rule = self.discount_rule(id).await?;
        if let Some(until) = changes.valid_until {
            if until.is_some_and(|u| u <= rule.valid_from) {
                return Err(ServiceError::invalid(
                    "discount_rule.valid_until",
                    "must be after valid_from",
                ));
            }
            rule.valid_until = until;
        }
        if let Some(name) = changes.display_name {
            rule.display_name = name;
        }
        if !store::policy::update_rule(&self.db, &rule).await? {
            return Err(rule_not_found(id));
        }
        self.discount_rule(id).await
    }

    /// Deletes a rule: later evaluations no longer apply it. Brand only.
    pub async fn delete_discount_rule(&self, caller: &Caller, id: &str) -> ServiceResult<()> {
        caller.require_brand("sets the price policy")?;
        if store::policy::delete_rule(&self.db, id).await? {
            Ok(())
        } else {
            Err(rule_not_found(id))
        }
    }

    /// Prices `lines` for `partner` at `at`: the rules in force for its level,
    /// its attributed sales in the current period of each cumulative rule, the
    /// functions it performs on the order, its level's ceiling. NOT_FOUND for a
    /// partner the caller may not see, FAILED_PRECONDITION for one not active.
    pub async fn evaluate_policy(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        lines: &[Line],
        functions: Vec<Function>,
        at: DateTime<Utc>,
    ) -> ServiceResult<Priced> {
        let (level, privileges) = self.active_privileges(caller, partner).await?;
        let rules = store::policy::rules_in_force(&self.db, at)
            .await?
            .iter()
            .map(rule_of)
            .collect::<ServiceResult<Vec<_>>>()?;
        let mut volumes = Vec::new();
        for rule in rules.iter().filter(|r| r.in_force(&level, at)) {
            if let Basis::Cumulative { period, .. } = &rule.basis
                && !volumes.iter().any(|(k, _)| k == period)
            {
                let p = policy::period_containing(*period, at)
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("no period contains {at}")))?;
                let volume = store::net_sales(&self.db, Seller::Partner(partner.as_str()), p.start, p.end).await?;
                volumes.push((*period, volume));
            }
        }
        let ctx = Context {
            level: level.clone(),
            ceiling_bp: privileges.discount_ceiling_bp,
            volumes,
            functions,
            at,
        };
        let evaluation =
            policy::evaluate(&rules, &ctx, lines).map_err(|e| ServiceError::invalid("lines", e.to_string()))?;
        Ok(Priced {
            evaluation,
            level,
            ceiling_bp: privileges.discount_ceiling_bp,
        })
    }
}

/// A special discount request to make.
#[derive(Debug, Clone)]
pub struct NewSpecial {
    pub reference: String,
    pub rate_bp: u32,
    pub reason: String,
}

/// A special discount request with its trail, oldest first.
#[derive(Debug, Clone)]
pub struct SpecialView {
    pub request: special_discount::Model,
    pub decisions: Vec<special_discount_decision::Model>,
}

/// Who decides a grant at or under the ceiling.
const POLICY_ACTOR: &str = "price-policy";

pub fn special_name(partner: &str, id: &str) -> String {
    format!("partners/{partner}/specialDiscounts/{id}")
}

fn special_not_found(partner: &PartnerId, id: &str) -> ServiceError {
    ServiceError::not_found("special discount", special_name(partner.as_str(), id))
}

fn decision(
    id: &str,
    what: SpecialState,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> special_discount_decision::Model {
    special_discount_decision::Model {
        id: store::new_id(),
        special_discount_id: id.to_owned(),
        decision: what.as_str().to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        decided_at: at,
    }
}

/// Moves `id` from one of `from` to `to` by a conditional update, with its step of
/// the trail; FAILED_PRECONDITION when another state is found (a concurrent
/// decision or use lost the race).
async fn move_special(
    txn: &DatabaseTransaction,
    current: &special_discount::Model,
    to: SpecialState,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    let from: Vec<&str> = to.reached_from().iter().map(|s| s.as_str()).collect();
    let r = special_discount::Entity::update_many()
        .col_expr(special_discount::Column::State, Expr::value(to.as_str()))
        .filter(special_discount::Column::Id.eq(current.id.as_str()))
        .filter(special_discount::Column::State.is_in(from))
        .exec(txn)
        .await?;
    if r.rows_affected != 1 {
        let now_state = special_discount::Entity::find_by_id(current.id.clone())
            .one(txn)
            .await?
            .map_or_else(|| current.state.clone(), |m| m.state);
        return Err(ServiceError::FailedPrecondition(format!(
            "a {now_state} special discount cannot become {}",
            to.as_str()
        )));
    }
    special_discount_decision::ActiveModel::from(decision(&current.id, to, actor, reason, at))
        .insert(txn)
        .await?;
    Ok(())
}

impl App {
    /// Asks for a special discount for `partner`: granted at once at or under the
    /// level's ceiling, pending approval above it.
    pub async fn request_special_discount<R>(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        new: NewSpecial,
        key: Option<&IdempotencyKey>,
        now: DateTime<Utc>,
        respond: fn(&SpecialView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let (_, privileges) = self.active_privileges(caller, partner).await?;
        let state = SpecialState::on_request(new.rate_bp, privileges.discount_ceiling_bp);
        let model = special_discount::Model {
            id: store::new_id(),
            partner_id: partner.as_str().to_owned(),
            reference: new.reference,
            rate_bp: i64::from(new.rate_bp),
            ceiling_bp: i64::from(privileges.discount_ceiling_bp),
            reason: new.reason,
            state: state.as_str().to_owned(),
            consumed_reference: String::new(),
            created_at: now,
        };
        let mut decisions = vec![decision(
            &model.id,
            SpecialState::Pending,
            &caller.subject,
            &model.reason,
            now,
        )];
        if state == SpecialState::Granted {
            decisions.push(decision(
                &model.id,
                SpecialState::Granted,
                POLICY_ACTOR,
                "at or under the level's discount ceiling",
                now,
            ));
        }
        let view = SpecialView {
            request: model,
            decisions,
        };
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let view = view.clone();
            Box::pin(async move {
                special_discount::ActiveModel::from(view.request.clone())
                    .insert(txn)
                    .await?;
                for d in &view.decisions {
                    special_discount_decision::ActiveModel::from(d.clone())
                        .insert(txn)
                        .await?;
                }
                if let Some(granted) = view.decisions.get(1) {
                    let name = special_name(&view.request.partner_id, &view.request.id);
                    events::special_discount_decided(&name, &view.request, "granted", &granted.reason, now)
                        .publish(txn, &view.request.id)
                        .await?;
                }
                Ok(respond(&view))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// A request the caller may see, with its trail; NOT_FOUND otherwise.
    pub async fn special_discount(&self, caller: &Caller, partner: &PartnerId, id: &str) -> ServiceResult<SpecialView> {
        let request = match special_discount::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
        {
            Some(r) if r.partner_id == partner.as_str() && caller.sees(&r.partner_id) => r,
            _ => return Err(special_not_found(partner, id)),
        };
        let decisions = special_discount_decision::Entity::find()
            .filter(special_discount_decision::Column::SpecialDiscountId.eq(id))
            .order_by_asc(special_discount_decision::Column::Id)
            .all(&self.db)
            .await?;
        Ok(SpecialView { request, decisions })
    }

    /// A partner's requests, newest first, with their trails.
    pub async fn list_special_discounts(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        page: &Page,
    ) -> ServiceResult<(Vec<SpecialView>, String)> {
        self.partner(caller, partner).await?;
        let mut q = special_discount::Entity::find()
            .filter(special_discount::Column::PartnerId.eq(partner.as_str()))
            .order_by_desc(special_discount::Column::Id);
        if let Some(after) = &page.after {
            q = q.filter(special_discount::Column::Id.lt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        let (rows, next) = page.finish(rows, |r| r.id.clone());
        if rows.is_empty() {
            return Ok((Vec::new(), next));
        }
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut decisions = special_discount_decision::Entity::find()
            .filter(special_discount_decision::Column::SpecialDiscountId.is_in(ids))
            .order_by_asc(special_discount_decision::Column::Id)
            .all(&self.db)
            .await?;
        let views = rows
            .into_iter()
            .map(|request| {
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut decisions)
                    .into_iter()
                    .partition(|d| d.special_discount_id == request.id);
                decisions = rest;
                SpecialView {
                    request,
                    decisions: mine,
                }
            })
            .collect();
        Ok((views, next))
    }

    /// Approves or rejects a pending request. Brand only.
    pub async fn decide_special_discount(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
        to: SpecialState,
        reason: &str,
        at: DateTime<Utc>,
    ) -> ServiceResult<SpecialView> {
        let current = self.special_discount(caller, partner, id).await?.request;
        caller.require_brand("decides special discounts")?;
        let (actor, reason) = (caller.subject.clone(), reason.to_owned());
        idempotency::transaction(&self.db, |txn| {
            let (current, actor, reason) = (current.clone(), actor.clone(), reason.clone());
            Box::pin(async move {
                move_special(txn, &current, to, &actor, &reason, at).await?;
                let name = special_name(&current.partner_id, &current.id);
                events::special_discount_decided(&name, &current, to.as_str(), &reason, at)
                    .publish(txn, &current.id)
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        self.special_discount(caller, partner, id).await
    }

    /// Uses a granted or approved request on `reference` (its own), once, for
    /// `consumer`: the same (non-empty) consumer asking again gets the consumed
    /// request back; any other use is FAILED_PRECONDITION.
    pub async fn consume_special_discount(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
        reference: &str,
        consumer: &str,
        at: DateTime<Utc>,
    ) -> ServiceResult<SpecialView> {
        let view = self.special_discount(caller, partner, id).await?;
        let current = view.request.clone();
        if current.reference != reference {
            return Err(ServiceError::invalid(
                "reference",
                "must be the reference the discount was asked for",
            ));
        }
        // Without a consumer every call is a use of its own.
        let named = !consumer.is_empty();
        let consumer = if named { consumer } else { reference }.to_owned();
        let same_use = |r: &special_discount::Model| {
            named && r.state == SpecialState::Consumed.as_str() && r.consumed_reference == consumer
        };
        if same_use(&current) {
            return Ok(view);
        }
        let actor = caller.subject.clone();
        let used = idempotency::transaction(&self.db, |txn| {
            let (current, actor, consumer) = (current.clone(), actor.clone(), consumer.clone());
            Box::pin(async move {
                move_special(txn, &current, SpecialState::Consumed, &actor, &consumer, at).await?;
                special_discount::Entity::update_many()
                    .col_expr(
                        special_discount::Column::ConsumedReference,
                        Expr::value(consumer.as_str()),
                    )
                    .filter(special_discount::Column::Id.eq(current.id.as_str()))
                    .exec(txn)
                    .await?;
                Ok(())
            })
        })
        .await;
        if let Err(err) = used {
            // A twin call of the same consumer that won the race is this call's answer.
            let now = self.special_discount(caller, partner, id).await?;
            if same_use(&now.request) {
                return Ok(now);
            }
            return Err(err);
        }
        self.special_discount(caller, partner, id).await
    }
}

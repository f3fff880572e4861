//! The price policy's use cases: discount rules (the brand's) and the evaluation
//! of a partner's basket under them (docs/domain.md, Price policy). The rules
//! themselves are in [`crate::domain::policy`].

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::ActiveModelTrait;

use super::{App, Caller};
use crate::domain::ids::PartnerId;
use crate::domain::period::PeriodKind;
use crate::domain::policy::{self, Basis, Context, Evaluation, Function, Line, Rule};
use crate::store::{self, Seller, discount_rule};

/// A rule to create (already checked by [`policy::check_rule`]).
#[derive(Debug, Clone)]
pub struct NewRule {
    pub basis: Basis,
    pub levels: Vec<String>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
}

/// A basket priced for a partner.
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
    /// partner the caller may not see.
    pub async fn evaluate_policy(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        lines: &[Line],
        functions: Vec<Function>,
        at: DateTime<Utc>,
    ) -> ServiceResult<Priced> {
        let (level, privileges) = self.level_privileges(caller, partner).await?;
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

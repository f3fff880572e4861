//! Visits of the sales force: a rep checks in at a customer and checks out (the
//! dwell time is between the two, both on the service's clock); key customers
//! carry a visit cycle, and the sweep publishes `VisitOverdue` once per overdue
//! period. A partner user linked to a rep acts as that rep and sees only his own
//! visits; the partner's other principals and the brand see the partner's.

use chrono::Datelike;
use chrono::{DateTime, Duration, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{App, Caller};
use crate::app::TargetView;
use crate::app::deals::CustomerInput;
use crate::domain::ids::{PartnerId, RepId, Subject};
use crate::domain::sales::normalise_text;
use crate::domain::sales::{LeadState, Stage};
use crate::events;
use crate::store::{self, key_customer, lead, opportunity, visit};

/// Where a visit took place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Text(String),
    /// Micro-degrees.
    Coordinates {
        latitude_e6: i64,
        longitude_e6: i64,
    },
}

/// A check-in to record.
#[derive(Debug, Clone)]
pub struct NewVisit {
    pub rep: RepId,
    pub customer: CustomerInput,
    pub place: Place,
}

pub fn visit_name(partner: &str, id: &str) -> String {
    format!("partners/{partner}/visits/{id}")
}

pub fn key_customer_name(partner: &str, id: &str) -> String {
    format!("partners/{partner}/keyCustomers/{id}")
}

/// The key a customer is matched by: its normalised name and region.
pub fn customer_key(name: &str, region: &str) -> String {
    format!("{}|{}", normalise_text(name), normalise_text(region))
}

/// The due time of the latest overdue period at `now`, if any: the cycle's
/// multiples after `base` (the last visit, or when the customer became key).
pub fn overdue_due(base: DateTime<Utc>, cycle_days: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if cycle_days <= 0 {
        return None;
    }
    let cycle = Duration::days(cycle_days);
    let periods = (now - base).num_seconds().div_euclid(cycle.num_seconds());
    (periods >= 1).then(|| base + Duration::days(cycle_days * periods))
}

fn visit_not_found(partner: &PartnerId, id: &str) -> ServiceError {
    ServiceError::not_found("visit", visit_name(partner.as_str(), id))
}

impl App {
    /// The rep a partner user acts as, if the user is linked to a rep of its partner.
    pub(crate) async fn acting_rep(&self, caller: &Caller) -> ServiceResult<Option<String>> {
        let Some(partner) = &caller.partner else {
            return Ok(None);
        };
        Ok(store::rep_by_user(&self.db, &caller.subject)
            .await?
            .filter(|r| &r.partner_id == partner)
            .map(|r| r.id))
    }

    /// Checks `new.rep` in at a customer of `partner` at the service's clock.
    pub async fn check_in<R>(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        new: NewVisit,
        key: Option<&IdempotencyKey>,
        respond: fn(&visit::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        self.partner(caller, partner).await?;
        let rep_not_found = || ServiceError::not_found("sales rep", new.rep.resource_name());
        match store::rep(&self.db, new.rep.as_str()).await? {
            Some(r) if r.partner_id == partner.as_str() || (r.partner_id.is_empty() && caller.is_brand()) => {}
            _ => return Err(rep_not_found()),
        }
        if let Some(own) = self.acting_rep(caller).await?
            && own != new.rep.as_str()
        {
            return Err(rep_not_found());
        }
        let (place, latitude_e6, longitude_e6) = match new.place {
            Place::Text(t) => (t, 0, 0),
            Place::Coordinates {
                latitude_e6,
                longitude_e6,
            } => (String::new(), latitude_e6, longitude_e6),
        };
        let v = visit::Model {
            id: store::new_id(),
            partner_id: partner.as_str().to_owned(),
            rep_id: new.rep.as_str().to_owned(),
            customer_key: customer_key(&new.customer.name, &new.customer.region),
            customer_name: new.customer.name,
            customer_region: new.customer.region,
            place,
            latitude_e6,
            longitude_e6,
            check_in_at: self.now(),
            check_out_at: None,
        };
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let v = v.clone();
            Box::pin(async move {
                visit::ActiveModel::from(v.clone()).insert(txn).await?;
                key_customer::Entity::update_many()
                    .col_expr(key_customer::Column::LastVisitAt, Expr::value(Some(v.check_in_at)))
                    .filter(key_customer::Column::PartnerId.eq(v.partner_id.as_str()))
                    .filter(key_customer::Column::CustomerKey.eq(v.customer_key.as_str()))
                    .exec(txn)
                    .await?;
                Ok(respond(&v))
            })
        })
        .await?;
        Ok(response)
    }

    /// A visit the caller may see.
    async fn visible_visit(&self, caller: &Caller, partner: &PartnerId, id: &str) -> ServiceResult<visit::Model> {
        let own = self.acting_rep(caller).await?;
        match visit::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(v)
                if v.partner_id == partner.as_str()
                    && caller.sees(&v.partner_id)
                    && own.as_deref().is_none_or(|r| r == v.rep_id) =>
            {
                Ok(v)
            }
            _ => Err(visit_not_found(partner, id)),
        }
    }

    /// Checks a visit out at the service's clock; FAILED_PRECONDITION if it is
    /// checked out already (one of two concurrent check-outs wins).
    pub async fn check_out(&self, caller: &Caller, partner: &PartnerId, id: &str) -> ServiceResult<visit::Model> {
        let v = self.visible_visit(caller, partner, id).await?;
        let now = self.now().max(v.check_in_at);
        let done = visit::Entity::update_many()
            .col_expr(visit::Column::CheckOutAt, Expr::value(Some(now)))
            .filter(visit::Column::Id.eq(id))
            .filter(visit::Column::CheckOutAt.is_null())
            .exec(&self.db)
            .await?;
        if done.rows_affected != 1 {
            return Err(ServiceError::FailedPrecondition(format!(
                "visit {} is checked out already",
                visit_name(partner.as_str(), id)
            )));
        }
        Ok(visit::Model {
            check_out_at: Some(now),
            ..v
        })
    }

    /// Visits of `partner` the caller may see, newest first, optionally of one rep.
    pub async fn list_visits(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        rep: Option<&RepId>,
        page: &Page,
    ) -> ServiceResult<(Vec<visit::Model>, String)> {
        self.partner(caller, partner).await?;
        let mut q = visit::Entity::find()
            .filter(visit::Column::PartnerId.eq(partner.as_str()))
            .order_by_desc(visit::Column::Id);
        if let Some(own) = self.acting_rep(caller).await? {
            q = q.filter(visit::Column::RepId.eq(own));
        }
        if let Some(rep) = rep {
            q = q.filter(visit::Column::RepId.eq(rep.as_str()));
        }
        if let Some(after) = &page.after {
            q = q.filter(visit::Column::Id.lt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        Ok(page.finish(rows, |v| v.id.clone()))
    }

    /// Makes a customer of `partner` a key customer with a visit cycle, or changes
    /// its cycle; the partner's manager (not a rep) or the brand.
    pub async fn set_visit_cycle(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        customer: CustomerInput,
        cycle_days: i64,
    ) -> ServiceResult<key_customer::Model> {
        self.partner(caller, partner).await?;
        if self.acting_rep(caller).await?.is_some() {
            return Err(ServiceError::PermissionDenied(
                "only the partner's manager or the brand sets visit cycles".into(),
            ));
        }
        let key = customer_key(&customer.name, &customer.region);
        let last = visit::Entity::find()
            .filter(visit::Column::PartnerId.eq(partner.as_str()))
            .filter(visit::Column::CustomerKey.eq(key.as_str()))
            .order_by_desc(visit::Column::CheckInAt)
            .one(&self.db)
            .await?
            .map(|v| v.check_in_at);
        let existing = key_customer::Entity::find()
            .filter(key_customer::Column::PartnerId.eq(partner.as_str()))
            .filter(key_customer::Column::CustomerKey.eq(key.as_str()))
            .one(&self.db)
            .await?;
        let row = match existing {
            Some(k) => {
                let mut a: key_customer::ActiveModel = k.into();
                a.cycle_days = sea_orm::ActiveValue::Set(cycle_days);
                a.last_visit_at = sea_orm::ActiveValue::Set(last);
                a.update(&self.db).await?
            }
            None => {
                key_customer::ActiveModel::from(key_customer::Model {
                    id: store::new_id(),
                    partner_id: partner.as_str().to_owned(),
                    customer_name: customer.name,
                    customer_region: customer.region,
                    customer_key: key,
                    cycle_days,
                    since: self.now(),
                    last_visit_at: last,
                    notified_due_at: None,
                })
                .insert(&self.db)
                .await?
            }
        };
        Ok(row)
    }

    /// Changes the cycle of a key customer of `partner`; the partner's manager
    /// (not a rep) or the brand.
    pub async fn update_visit_cycle(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
        cycle_days: i64,
    ) -> ServiceResult<key_customer::Model> {
        let k = self.key_customer(caller, partner, id).await?;
        if self.acting_rep(caller).await?.is_some() {
            return Err(ServiceError::PermissionDenied(
                "only the partner's manager or the brand sets visit cycles".into(),
            ));
        }
        key_customer::Entity::update_many()
            .col_expr(key_customer::Column::CycleDays, Expr::value(cycle_days))
            .filter(key_customer::Column::Id.eq(k.id.as_str()))
            .exec(&self.db)
            .await?;
        Ok(key_customer::Model { cycle_days, ..k })
    }

    /// A key customer the caller may see.
    pub async fn key_customer(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        id: &str,
    ) -> ServiceResult<key_customer::Model> {
        match key_customer::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(k) if k.partner_id == partner.as_str() && caller.sees(&k.partner_id) => Ok(k),
            _ => Err(ServiceError::not_found(
                "key customer",
                key_customer_name(partner.as_str(), id),
            )),
        }
    }

    /// A partner's key customers in the order they became key.
    pub async fn list_key_customers(
        &self,
        caller: &Caller,
        partner: &PartnerId,
        page: &Page,
    ) -> ServiceResult<(Vec<key_customer::Model>, String)> {
        self.partner(caller, partner).await?;
        let mut q = key_customer::Entity::find()
            .filter(key_customer::Column::PartnerId.eq(partner.as_str()))
            .order_by_asc(key_customer::Column::Id);
        if let Some(after) = &page.after {
            q = q.filter(key_customer::Column::Id.gt(after.as_str()));
        }
        let rows = q.limit(page.fetch_limit()).all(&self.db).await?;
        Ok(page.finish(rows, |k| k.id.clone()))
    }

    /// Key customers of `partner` whose visit is overdue at `now`.
    pub async fn overdue_key_customers(
        &self,
        partner: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<Vec<key_customer::Model>> {
        let rows = key_customer::Entity::find()
            .filter(key_customer::Column::PartnerId.eq(partner))
            .order_by_asc(key_customer::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter(|k| overdue_due(k.last_visit_at.unwrap_or(k.since), k.cycle_days, now).is_some())
            .collect())
    }

    /// Publishes `VisitOverdue` once per overdue period of every key customer: the
    /// period's due time is claimed by a conditional update in the transaction of
    /// the event, so a sweep run twice (or by two replicas) publishes it once.
    pub async fn publish_overdue_visits(&self, now: DateTime<Utc>) -> ServiceResult<usize> {
        let rows = key_customer::Entity::find().all(&self.db).await?;
        let mut published = 0;
        for k in rows {
            let Some(due) = overdue_due(k.last_visit_at.unwrap_or(k.since), k.cycle_days, now) else {
                continue;
            };
            if k.notified_due_at.is_some_and(|n| n >= due) {
                continue;
            }
            let txn = retail_kit::db::begin_write(&self.db).await?;
            let claimed = key_customer::Entity::update_many()
                .col_expr(key_customer::Column::NotifiedDueAt, Expr::value(Some(due)))
                .filter(key_customer::Column::Id.eq(k.id.as_str()))
                .filter(
                    sea_orm::Condition::any()
                        .add(key_customer::Column::NotifiedDueAt.is_null())
                        .add(key_customer::Column::NotifiedDueAt.lt(due)),
                )
                .exec(&txn)
                .await?;
            if claimed.rows_affected == 1 {
                events::visit_overdue(&k, due).publish(&txn, &k.id).await?;
                published += 1;
            }
            txn.commit().await?;
        }
        if published > 0 {
            self.log.committed();
        }
        Ok(published)
    }
}

/// What a rep's home screen shows.
#[derive(Debug, Clone)]
pub struct RepHome {
    pub rep_id: String,
    pub targets: Vec<TargetView>,
    /// Open stages with their count and summed amount, in pipeline order.
    pub open_opportunities: Vec<(Stage, i64, i64)>,
    pub open_leads: u64,
    pub visits_this_week: u64,
    pub overdue: Vec<key_customer::Model>,
    /// The accepted leads assigned to the rep.
    pub leads: Vec<lead::Model>,
}

/// Monday 00:00 UTC of the week of `now`.
pub fn week_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let day = now.date_naive() - Duration::days(i64::from(now.weekday().num_days_from_monday()));
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

impl App {
    /// A rep's home screen at the service's clock: the rep himself, his partner's
    /// manager or the brand; NOT_FOUND for anyone else.
    pub async fn rep_home(&self, caller: &Caller, rep: &RepId) -> ServiceResult<RepHome> {
        let not_found = || ServiceError::not_found("sales rep", rep.resource_name());
        let r = match store::rep(&self.db, rep.as_str()).await? {
            Some(r) if caller.sees(&r.partner_id) => r,
            _ => return Err(not_found()),
        };
        if let Some(own) = self.acting_rep(caller).await?
            && own != r.id
        {
            return Err(not_found());
        }
        let now = self.now();
        let page = Page::parse(500, "", "")?;
        let (targets, _) = self
            .list_targets(caller, Some(Subject::Rep(rep.clone())), &page, now)
            .await?;
        let targets = targets
            .into_iter()
            .filter(|t| t.period.start <= now && now < t.period.end)
            .collect();
        let opportunities = opportunity::Entity::find()
            .filter(opportunity::Column::RepId.eq(r.id.as_str()))
            .filter(opportunity::Column::Stage.is_not_in([Stage::Won.as_str(), Stage::Lost.as_str()]))
            .all(&self.db)
            .await?;
        let open_opportunities = Stage::ALL
            .iter()
            .filter_map(|stage| {
                let of_stage: Vec<_> = opportunities.iter().filter(|o| o.stage == stage.as_str()).collect();
                let count = i64::try_from(of_stage.len()).unwrap_or(i64::MAX);
                (count > 0).then(|| (*stage, count, of_stage.iter().map(|o| o.amount_minor).sum()))
            })
            .collect();
        let open_leads = if r.partner_id.is_empty() {
            0
        } else {
            lead::Entity::find()
                .filter(lead::Column::PartnerId.eq(r.partner_id.as_str()))
                .filter(lead::Column::State.is_in([LeadState::Offered.as_str(), LeadState::Accepted.as_str()]))
                .count(&self.db)
                .await?
        };
        let visits_this_week = visit::Entity::find()
            .filter(visit::Column::RepId.eq(r.id.as_str()))
            .filter(visit::Column::CheckInAt.gte(week_start(now)))
            .count(&self.db)
            .await?;
        let overdue = if r.partner_id.is_empty() {
            Vec::new()
        } else {
            self.overdue_key_customers(&r.partner_id, now).await?
        };
        let leads = self.rep_leads(&r.id).await?;
        Ok(RepHome {
            leads,
            rep_id: r.id,
            targets,
            open_opportunities,
            open_leads,
            visits_this_week,
            overdue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_once_per_period() {
        let base = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        assert_eq!(overdue_due(base, 7, base + Duration::days(6)), None);
        assert_eq!(
            overdue_due(base, 7, base + Duration::days(7)),
            Some(base + Duration::days(7))
        );
        assert_eq!(
            overdue_due(base, 7, base + Duration::days(15)),
            Some(base + Duration::days(14))
        );
        assert_eq!(overdue_due(base, 0, base + Duration::days(15)), None);
    }

    #[test]
    fn customers_match_as_deal_locks_name_them() {
        assert_eq!(
            customer_key("  ACME  Pumps, Ltd.", "North"),
            customer_key("acme pumps ltd", "north")
        );
    }
}

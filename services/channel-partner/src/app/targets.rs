//! Targets per partner and per rep per calendar period, and what a manager reads
//! off them: progress (attributed paid orders minus refunds in the period, read
//! from the sales the orders log recorded, so it is current as soon as a payment
//! is applied), attainment, the ranking among the targets of the same period and
//! kind of subject, and the projection to the period's end at the run rate.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::{ActiveModelTrait, ConnectionTrait};

use super::{App, Caller};
use crate::domain::ids::Subject;
use crate::domain::period::{Period, PeriodKind, attainment_bp};
use crate::store::{self, Seller, TargetFilter, target};

/// A target to set.
#[derive(Debug, Clone)]
pub struct NewTarget {
    pub subject: Subject,
    pub period: Period,
    pub amount_minor: i64,
}

/// A target with the figures read off it.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub target: target::Model,
    pub subject: String,
    pub period: Period,
    pub progress_minor: i64,
    pub attainment_bp: i64,
    pub rank: u32,
    pub peer_count: u32,
    pub projected_minor: i64,
}

fn seller(t: &target::Model) -> Seller<'_> {
    if t.subject_kind == "rep" {
        Seller::Rep(&t.rep_id)
    } else {
        Seller::Partner(&t.partner_id)
    }
}

fn subject_name(t: &target::Model) -> String {
    if t.subject_kind == "rep" {
        format!("salesReps/{}", t.rep_id)
    } else {
        format!("partners/{}", t.partner_id)
    }
}

fn period_of(t: &target::Model) -> ServiceResult<Period> {
    let kind = PeriodKind::parse(&t.period_kind).ok_or_else(|| store::corrupt("period kind", &t.period_kind))?;
    Ok(Period {
        kind,
        start: t.period_start,
        end: t.period_end,
    })
}

/// Net attributed sales of the target's subject within its period.
pub(crate) async fn progress(conn: &impl ConnectionTrait, t: &target::Model) -> ServiceResult<i64> {
    store::net_sales(conn, seller(t), t.period_start, t.period_end).await
}

impl App {
    /// Sets a target; FAILED_PRECONDITION if one of the subject overlaps its period.
    /// Brand only.
    pub async fn create_target<R>(
        &self,
        caller: &Caller,
        new: NewTarget,
        key: Option<&IdempotencyKey>,
        now: DateTime<Utc>,
        respond: fn(&TargetView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let partner = self.subject_partner(&self.db, caller, &new.subject).await?;
        caller.require_brand("sets targets")?;
        let (partner_id, rep_id) = match &new.subject {
            Subject::Partner(p) => (p.as_str().to_owned(), String::new()),
            Subject::Rep(r) => (partner, r.as_str().to_owned()),
        };
        let model = target::Model {
            id: store::new_id(),
            subject_kind: new.subject.kind().to_owned(),
            partner_id,
            rep_id,
            period_kind: new.period.kind.as_str().to_owned(),
            period_start: new.period.start,
            period_end: new.period.end,
            amount_minor: new.amount_minor,
            attained_at: None,
            created_at: now,
        };
        let subject = new.subject.clone();
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, subject) = (model.clone(), subject.clone());
            Box::pin(async move {
                // One subject's targets are set one after the other, so two
                // overlapping ones cannot both pass the check.
                match &subject {
                    Subject::Partner(p) => store::lock_partner(txn, p.as_str()).await?,
                    Subject::Rep(r) => store::lock_rep(txn, r.as_str()).await?,
                };
                let overlapping = store::overlapping_targets(
                    txn,
                    &model.subject_kind,
                    &model.partner_id,
                    &model.rep_id,
                    model.period_start,
                    model.period_end,
                )
                .await?;
                if let Some(other) = overlapping.first() {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "the period overlaps target targets/{} ({} from {})",
                        other.id,
                        other.period_kind,
                        other.period_start.format("%Y-%m-%d")
                    )));
                }
                target::ActiveModel::from(model.clone()).insert(txn).await?;
                crate::events::target_set(&model).publish(txn, &model.id).await?;
                let view = view(txn, model, now).await?;
                Ok(respond(&view))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// A target the caller may see, with its figures at `now`; NOT_FOUND otherwise.
    pub async fn target(&self, caller: &Caller, id: &str, now: DateTime<Utc>) -> ServiceResult<TargetView> {
        match store::target(&self.db, id).await? {
            Some(t) if caller.sees(&t.partner_id) => view(&self.db, t, now).await,
            _ => Err(ServiceError::not_found("target", format!("targets/{id}"))),
        }
    }

    pub async fn list_targets(
        &self,
        caller: &Caller,
        subject: Option<Subject>,
        page: &Page,
        now: DateTime<Utc>,
    ) -> ServiceResult<(Vec<TargetView>, String)> {
        let mut filter = TargetFilter {
            partner: caller.partner.clone(),
            ..Default::default()
        };
        if let Some(subject) = subject {
            let partner = match self.subject_partner(&self.db, caller, &subject).await {
                Ok(p) => p,
                Err(ServiceError::NotFound { .. }) => return Ok((Vec::new(), String::new())),
                Err(other) => return Err(other),
            };
            filter.subject = Some(match &subject {
                Subject::Partner(p) => ("partner".to_owned(), p.as_str().to_owned(), String::new()),
                Subject::Rep(r) => ("rep".to_owned(), partner, r.as_str().to_owned()),
            });
        }
        let rows = store::list_targets(&self.db, &filter, page).await?;
        let (rows, next) = page.finish(rows, |t| t.id.clone());
        let mut views = Vec::with_capacity(rows.len());
        for t in rows {
            views.push(view(&self.db, t, now).await?);
        }
        Ok((views, next))
    }
}

/// The target's figures at `now`. The ranking orders the targets of the same
/// kind of subject and period by attainment, then progress, then the earlier
/// target.
async fn view(conn: &impl ConnectionTrait, t: target::Model, now: DateTime<Utc>) -> ServiceResult<TargetView> {
    let period = period_of(&t)?;
    let progress_minor = progress(conn, &t).await?;
    let attainment = attainment_bp(progress_minor, t.amount_minor);
    let peers = store::peer_targets(conn, &t).await?;
    // The peers' progress in one grouped query, not one sum per peer.
    let by_rep = t.subject_kind == "rep";
    let sales = store::net_sales_of_all(conn, by_rep, t.period_start, t.period_end).await?;
    let mut ahead = 0u32;
    for peer in peers.iter().filter(|p| p.id != t.id) {
        let key = if by_rep { &peer.rep_id } else { &peer.partner_id };
        let p = sales.get(key).copied().unwrap_or(0);
        let a = attainment_bp(p, peer.amount_minor);
        if (a, p, std::cmp::Reverse(&peer.id)) > (attainment, progress_minor, std::cmp::Reverse(&t.id)) {
            ahead += 1;
        }
    }
    Ok(TargetView {
        subject: subject_name(&t),
        period,
        progress_minor,
        attainment_bp: attainment,
        rank: ahead + 1,
        peer_count: peers.len().max(1) as u32,
        projected_minor: period.projection(progress_minor, now),
        target: t,
    })
}

//! Partner organisations: registration, reads, lists.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseTransaction};

use super::{App, Caller, partner_not_found};
use crate::domain::ids::{PartnerId, Subject};
use crate::domain::partner::{PartnerState, PartnerType};
use crate::domain::points::LedgerKind;
use crate::events;
use crate::store::ledgers;
use crate::store::{self, PartnerFilter, partner, status_change};

/// A partner to register.
#[derive(Debug, Clone)]
pub struct NewPartner {
    pub id: PartnerId,
    pub display_name: String,
    pub partner_type: PartnerType,
    pub region: String,
}

impl App {
    /// Registers a partner (applied, at the lowest level), with its first status row
    /// and event. ALREADY_EXISTS if the id is taken.
    pub async fn create_partner<R>(
        &self,
        caller: &Caller,
        new: NewPartner,
        key: Option<&IdempotencyKey>,
        at: DateTime<Utc>,
        respond: fn(&partner::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        if !caller.is_brand() {
            return Err(ServiceError::PermissionDenied(
                "partners are registered by the brand".into(),
            ));
        }
        let model = partner::Model {
            id: new.id.as_str().to_owned(),
            display_name: new.display_name,
            partner_type: new.partner_type.as_str().to_owned(),
            region: new.region,
            state: PartnerState::Applied.as_str().to_owned(),
            level: self.lowest_level(),
            created_at: at,
            updated_at: at,
        };
        let actor = caller.subject.clone();
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, actor) = (model.clone(), actor.clone());
            Box::pin(async move {
                if store::partner(txn, &model.id).await?.is_some() {
                    return Err(ServiceError::AlreadyExists(format!(
                        "partners/{} already exists",
                        model.id
                    )));
                }
                partner::ActiveModel::from(model.clone()).insert(txn).await?;
                let subject = Subject::Partner(PartnerId::from_stored(model.id.clone()));
                ledgers::ensure(txn, &subject.ledger_id(), LedgerKind::Collective, &model.id, at).await?;
                record_status(txn, &model.id, None, PartnerState::Applied, "registered", &actor, at).await?;
                Ok(respond(&model))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    /// A partner the caller may see; NOT_FOUND otherwise.
    pub async fn partner(&self, caller: &Caller, id: &PartnerId) -> ServiceResult<partner::Model> {
        if !caller.sees(id.as_str()) {
            return Err(partner_not_found(id));
        }
        store::partner(&self.db, id.as_str())
            .await?
            .ok_or_else(|| partner_not_found(id))
    }

    /// A page of the partners the caller may see, by id.
    pub async fn list_partners(
        &self,
        caller: &Caller,
        mut filter: PartnerFilter,
        page: &Page,
    ) -> ServiceResult<(Vec<partner::Model>, String)> {
        filter.only = caller.partner.clone();
        let rows = store::list_partners(&self.db, &filter, page).await?;
        Ok(page.finish(rows, |p| p.id.clone()))
    }

    /// The level every partner starts at.
    pub(crate) fn lowest_level(&self) -> String {
        self.rules.ladder.lowest().code.clone()
    }

    /// Moves a partner to `to` if its status machine allows it, auditing who and
    /// why; FAILED_PRECONDITION otherwise. Brand only.
    pub async fn change_partner_state(
        &self,
        caller: &Caller,
        id: &PartnerId,
        to: PartnerState,
        reason: &str,
        at: DateTime<Utc>,
    ) -> ServiceResult<partner::Model> {
        self.partner(caller, id).await?;
        caller.require_brand("changes a partner's status")?;
        let actor = caller.subject.clone();
        let reason = reason.to_owned();
        let id_str = id.as_str().to_owned();
        let changed = idempotency::transaction(&self.db, |txn| {
            let (actor, reason, id) = (actor.clone(), reason.clone(), id_str.clone());
            Box::pin(async move {
                let Some(row) = store::partner(txn, &id).await? else {
                    return Err(ServiceError::not_found("partner", format!("partners/{id}")));
                };
                let from =
                    PartnerState::parse(&row.state).ok_or_else(|| store::corrupt("partner state", &row.state))?;
                if !from.may_become(to) {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "a partner cannot go from {} to {}",
                        from.as_str(),
                        to.as_str()
                    )));
                }
                if !store::set_partner_state(txn, &id, from.as_str(), to.as_str(), at).await? {
                    return Err(ServiceError::Aborted(
                        "the partner changed concurrently; try again".into(),
                    ));
                }
                record_status(txn, &id, Some(from), to, &reason, &actor, at).await?;
                Ok(())
            })
        })
        .await;
        changed?;
        self.log.committed();
        self.partner(caller, id).await
    }

    /// A page of a partner's status changes, oldest first.
    pub async fn status_changes(
        &self,
        caller: &Caller,
        id: &PartnerId,
        page: &Page,
    ) -> ServiceResult<(Vec<status_change::Model>, String)> {
        self.partner(caller, id).await?;
        let rows = store::status_changes(&self.db, id.as_str(), page).await?;
        Ok(page.finish(rows, |r| r.id.clone()))
    }
}

/// Audits a status change and publishes it, in the change's transaction.
pub(crate) async fn record_status(
    txn: &DatabaseTransaction,
    partner: &str,
    from: Option<PartnerState>,
    to: PartnerState,
    reason: &str,
    actor: &str,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    status_change::ActiveModel {
        id: Set(store::new_id()),
        partner_id: Set(partner.to_owned()),
        from_state: Set(from.map(|s| s.as_str().to_owned()).unwrap_or_default()),
        to_state: Set(to.as_str().to_owned()),
        reason: Set(reason.to_owned()),
        actor: Set(actor.to_owned()),
        changed_at: Set(at),
    }
    .insert(txn)
    .await?;
    events::partner_status_changed(partner, from, to, reason, at)
        .publish(txn, partner)
        .await?;
    Ok(())
}

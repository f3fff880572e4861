//! Sales reps: of a partner (a partner principal registers its own) or of the
//! brand, each linked to one identity user and holding an individual ledger.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::ActiveModelTrait;

use super::{App, Caller, partner_not_found};
use crate::domain::ids::{PartnerId, RepId, Subject};
use crate::domain::points::LedgerKind;
use crate::store::{self, RepFilter, ledgers, sales_rep};

/// A rep to register.
#[derive(Debug, Clone)]
pub struct NewRep {
    /// `None` for the brand's own.
    pub partner: Option<PartnerId>,
    pub user_id: String,
    pub display_name: String,
}

impl App {
    pub async fn create_rep<R>(
        &self,
        caller: &Caller,
        new: NewRep,
        key: Option<&IdempotencyKey>,
        at: DateTime<Utc>,
        respond: fn(&sales_rep::Model) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        match &new.partner {
            Some(p) if !caller.sees(p.as_str()) => return Err(partner_not_found(p)),
            Some(p) => {
                if store::partner(&self.db, p.as_str()).await?.is_none() {
                    return Err(partner_not_found(p));
                }
            }
            None => caller.require_brand("registers its own sales reps")?,
        }
        let model = sales_rep::Model {
            id: RepId::new().as_str().to_owned(),
            partner_id: new.partner.map(|p| p.as_str().to_owned()).unwrap_or_default(),
            user_id: new.user_id,
            display_name: new.display_name,
            created_at: at,
        };
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let model = model.clone();
            Box::pin(async move {
                if store::rep_by_user(txn, &model.user_id).await?.is_some() {
                    return Err(ServiceError::AlreadyExists(format!(
                        "user {} is already a sales rep",
                        model.user_id
                    )));
                }
                sales_rep::ActiveModel::from(model.clone()).insert(txn).await?;
                let subject = Subject::Rep(RepId::from_stored(model.id.clone()));
                ledgers::ensure(txn, &subject.ledger_id(), LedgerKind::Individual, &model.partner_id, at).await?;
                Ok(respond(&model))
            })
        })
        .await?;
        Ok(response)
    }

    /// A rep the caller may see; NOT_FOUND otherwise.
    pub async fn rep(&self, caller: &Caller, id: &RepId) -> ServiceResult<sales_rep::Model> {
        match store::rep(&self.db, id.as_str()).await? {
            Some(rep) if caller.sees(&rep.partner_id) => Ok(rep),
            _ => Err(ServiceError::not_found("sales rep", id.resource_name())),
        }
    }

    pub async fn list_reps(
        &self,
        caller: &Caller,
        mut filter: RepFilter,
        page: &Page,
    ) -> ServiceResult<(Vec<sales_rep::Model>, String)> {
        if let Some(own) = &caller.partner {
            match &filter.partner {
                Some(p) if p != own => return Ok((Vec::new(), String::new())),
                _ => filter.partner = Some(own.clone()),
            }
        }
        let rows = store::list_reps(&self.db, &filter, page).await?;
        Ok(page.finish(rows, |r| r.id.clone()))
    }
}

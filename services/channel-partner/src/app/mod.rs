//! Channel-partner's use cases, one method each, on parsed input: partner
//! organisations and their status ([`partners`]).
//!
//! Every change is one transaction with its audit row and its event in the outbox.

mod partners;

use std::sync::Arc;

use retail_kit::auth::Principal;
use retail_kit::error::ServiceError;
use retail_kit::events::EventLog;
use sea_orm::DatabaseConnection;

use crate::domain::ids::PartnerId;
use crate::settings::Settings;

pub use partners::NewPartner;

/// The service's state and its use cases.
pub struct App {
    pub(crate) db: DatabaseConnection,
    pub(crate) log: Arc<EventLog>,
    pub(crate) settings: Settings,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    pub(crate) fn new(db: DatabaseConnection, log: Arc<EventLog>, settings: Settings) -> Self {
        Self { db, log, settings }
    }
}

/// Who is asking, as this service needs it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal's subject, recorded in audit rows.
    pub subject: String,
    /// Whose request ids these are (a partner's, for partner principals).
    pub owner: String,
    /// The partner a partner principal is confined to.
    pub partner: Option<String>,
}

impl From<&Principal> for Caller {
    fn from(p: &Principal) -> Self {
        Self {
            subject: p.subject.clone(),
            owner: p.request_owner(),
            partner: p.partner_scope().map(str::to_owned),
        }
    }
}

impl Caller {
    /// Whether the caller may see what belongs to `partner` (staff see everything).
    pub fn sees(&self, partner: &str) -> bool {
        self.partner.as_deref().is_none_or(|own| own == partner)
    }

    /// Whether the caller is staff or a service (not confined to a partner).
    pub fn is_brand(&self) -> bool {
        self.partner.is_none()
    }
}

pub(crate) fn partner_not_found(id: &PartnerId) -> ServiceError {
    ServiceError::not_found("partner", id.resource_name())
}

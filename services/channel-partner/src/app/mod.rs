//! Channel-partner's use cases, one method each, on parsed input: partner
//! organisations and their status ([`partners`]), sales reps ([`reps`]), levels
//! ([`levels`]), targets ([`targets`]), what the orders log's sales do
//! ([`sales`]), the points ledgers ([`points`]) and redemptions
//! ([`redemptions`]).
//!
//! Every change is one transaction with its audit rows and its events in the
//! outbox.

pub mod deals;
pub mod leads;
mod levels;
pub mod opportunities;
mod partners;
mod points;
pub mod policy;
pub mod quotes;
mod redemptions;
mod reps;
pub mod sales;
mod targets;
pub mod visits;

use std::sync::Arc;

use retail_kit::auth::Principal;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::EventLog;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::domain::ids::{PartnerId, Subject};
use crate::downstream::{Downstream, Unconfigured};
use crate::settings::{Rules, Settings};
use crate::store;

pub use partners::NewPartner;
pub use redemptions::NewCatalogItem;
pub use reps::NewRep;
pub use sales::Sale;
pub use targets::{NewTarget, TargetView};

/// The service's state and its use cases.
pub struct App {
    pub(crate) db: DatabaseConnection,
    pub(crate) log: Arc<EventLog>,
    pub(crate) settings: Settings,
    pub(crate) rules: Rules,
    /// The offset of the service's clock from the system's, in milliseconds.
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// Catalog and orders, for quotes (set when the service starts).
    downstream: std::sync::RwLock<Arc<dyn Downstream>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    pub(crate) fn new(db: DatabaseConnection, log: Arc<EventLog>, settings: Settings, rules: Rules) -> Self {
        Self {
            db,
            log,
            settings,
            rules,
            clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
            downstream: std::sync::RwLock::new(Arc::new(Unconfigured)),
        }
    }

    /// Catalog and orders as quotes call them.
    pub(crate) fn downstream(&self) -> Arc<dyn Downstream> {
        self.downstream
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Uses `downstream` for quotes' calls to catalog and orders.
    pub fn set_downstream(&self, downstream: Arc<dyn Downstream>) {
        *self
            .downstream
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = downstream;
    }

    /// The service's clock: what deal locks, lead offers and stage changes are
    /// timed by, and what the sweep expires by.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let offset = self.clock_offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        retail_kit::convert::now() + chrono::Duration::milliseconds(offset)
    }

    /// Moves the service's clock forward (tests control time with it).
    pub fn advance_clock(&self, by: chrono::Duration) {
        self.clock_offset_ms
            .fetch_add(by.num_milliseconds(), std::sync::atomic::Ordering::SeqCst);
    }

    /// Expires due deal locks and times out unanswered lead offers at the
    /// service's clock; how many of each.
    pub async fn sweep_sales(&self) -> ServiceResult<(usize, usize)> {
        let now = self.now();
        let locks = self.expire_locks(now).await?;
        let leads = self.time_out_offers(now).await?;
        self.publish_overdue_visits(now).await?;
        Ok((locks, leads))
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
    /// The brand's staff or a service (for tests and jobs).
    pub fn brand(subject: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            owner: subject.to_owned(),
            partner: None,
        }
    }

    /// Whether the caller may see what belongs to `partner` (the brand sees
    /// everything; the brand's own reps belong to no partner).
    pub fn sees(&self, partner: &str) -> bool {
        self.partner.as_deref().is_none_or(|own| own == partner)
    }

    /// Whether the caller is the brand (not confined to a partner).
    pub fn is_brand(&self) -> bool {
        self.partner.is_none()
    }

    /// PERMISSION_DENIED for partner principals.
    pub fn require_brand(&self, what: &str) -> ServiceResult<()> {
        if self.is_brand() {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied(format!("only the brand {what}")))
        }
    }
}

pub(crate) fn partner_not_found(id: &PartnerId) -> ServiceError {
    ServiceError::not_found("partner", id.resource_name())
}

impl App {
    /// The partner a subject belongs to (`""` for the brand's own reps), if the
    /// subject exists and the caller may see it; NOT_FOUND otherwise.
    pub(crate) async fn subject_partner(
        &self,
        conn: &impl ConnectionTrait,
        caller: &Caller,
        subject: &Subject,
    ) -> ServiceResult<String> {
        let not_found = || ServiceError::not_found(subject_entity(subject), subject.resource_name());
        let partner = match subject {
            Subject::Partner(p) => store::partner(conn, p.as_str()).await?.map(|p| p.id),
            Subject::Rep(r) => store::rep(conn, r.as_str()).await?.map(|r| r.partner_id),
        };
        match partner {
            Some(p) if caller.sees(&p) => Ok(p),
            _ => Err(not_found()),
        }
    }
}

fn subject_entity(subject: &Subject) -> &'static str {
    match subject {
        Subject::Partner(_) => "partner",
        Subject::Rep(_) => "sales rep",
    }
}

//! Catalog-inventory's use cases, one method each, on parsed input: products and
//! their SKUs ([`products`]), listings and their reconciliation ([`listings`]), list
//! prices, tier discounts, partner prices and competitor observations ([`prices`]),
//! promotions ([`promotions`]), quotes ([`quotes`]), coupons ([`coupons`]), warehouses and stock
//! ([`stock`]), and reservations ([`reservations`]).
//!
//! Every change commits with its event in one transaction. The read caches
//! ([`sku_cache`], [`price_cache`]) follow the service's own log ([`read_cache`]).

mod coupons;
mod listings;
mod price_cache;
mod prices;
mod products;
mod promotions;
mod quotes;
mod read_cache;
mod reservations;
mod sku_cache;
mod stock;

use std::sync::Arc;
use std::time::Duration;

use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::events::EventLog;
use sea_orm::DatabaseConnection;

use crate::domain::codes::{SkuCode, WarehouseCode};
use crate::domain::stock::{MovementKind, ReservationState};
use crate::settings::Settings;
use crate::store::{self, inventory as db, reservation, stock_movement};

pub(crate) use coupons::{CouponView, NewCoupon, kind_of as coupon_kind, rules_of as coupon_rules};
pub(crate) use price_cache::PriceCache;
pub(crate) use prices::Observation;
pub(crate) use products::{NewProduct, NewSku, ProductChanges};
pub(crate) use promotions::{NewPromotion, PromotionView};
pub(crate) use quotes::{CouponAsk, Quote, QuoteFor};
pub(crate) use reservations::HeldReservations;
pub(crate) use sku_cache::SkuCache;
pub(crate) use stock::StockChange;

/// The service's state and its use cases.
#[derive(Debug)]
pub struct App {
    pub(crate) db: DatabaseConnection,
    /// The service's event log.
    pub log: Arc<EventLog>,
    /// SKU views for `BatchGetSkus` and quotes, evicted by this service's own events.
    pub(crate) skus: Arc<SkuCache>,
    /// List prices and price rules for quotes, dropped on every price change.
    pub prices: Arc<PriceCache>,
    /// Reservations this process made and that may still be active, by order id.
    pub held: HeldReservations,
    pub(crate) settings: Settings,
}

/// A value as stored that this build must know; one it does not is an internal error.
fn known<T>(what: &str, raw: &str, parse: fn(&str) -> Option<T>) -> ServiceResult<T> {
    parse(raw).ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored {what} {raw:?}")))
}

/// A reservation's state as stored.
pub(crate) fn state_of(r: &reservation::Model) -> ServiceResult<ReservationState> {
    known("reservation state", &r.state, ReservationState::parse)
}

/// A stock movement's kind as stored.
pub(crate) fn kind_of(m: &stock_movement::Model) -> ServiceResult<MovementKind> {
    known("stock movement kind", &m.kind, MovementKind::parse)
}

impl App {
    pub(crate) fn new(db: DatabaseConnection, log: Arc<EventLog>, settings: Settings) -> Self {
        let (capacity, ttl) = (
            settings.sku_cache.capacity,
            Duration::from_secs(settings.sku_cache.ttl_secs),
        );
        Self {
            db,
            log,
            skus: SkuCache::new(capacity, ttl),
            prices: PriceCache::new(capacity, ttl),
            held: HeldReservations::default(),
            settings,
        }
    }

    /// Keeps the read caches current by following the log, until it closes.
    pub(crate) fn spawn_cache_follower(&self) -> tokio::task::JoinHandle<()> {
        read_cache::spawn_follower(self.log.clone(), vec![self.skus.clone(), self.prices.clone()])
    }

    async fn sku_must_exist(&self, code: &SkuCode) -> ServiceResult<()> {
        match store::find_sku(&self.db, code.as_str()).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::not_found("sku", code.resource_name())),
        }
    }

    async fn warehouse_must_exist(&self, code: &WarehouseCode) -> ServiceResult<()> {
        match db::find_warehouse(&self.db, code.as_str()).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::not_found("warehouse", code.resource_name())),
        }
    }
}

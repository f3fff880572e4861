//! The calls orders makes to membership and catalog-inventory, behind one trait so
//! that the saga reads as its steps (and tests can inject failures at any of them).
//!
//! Every call has a deadline and goes through the downstream's circuit breaker; the
//! idempotent ones (all but none: reads, and writes keyed by order id or request id)
//! are retried while the downstream is unavailable.

use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{ClientInterceptor, ServiceTokenSource};
use retail_kit::error::{ServiceError, missing_resource};
use retail_kit::resilience::{Breaker, CallPolicy, request};
use retail_proto::catalog::inventory_service_client::InventoryServiceClient;
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::{self as mpb};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A line to price or reserve: SKU code and units.
pub type Units = (String, i64);

/// What catalog holds for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// No stock: never reserved, released, or expired.
    Nothing,
    /// Reserved, not shipped out.
    Reserved,
    /// Shipped out (the reservation is committed).
    Shipped,
}

#[async_trait::async_trait]
pub trait Downstream: Send + Sync + std::fmt::Debug {
    /// The member's current tier; NOT_FOUND for unknown or erased members.
    async fn member_tier(&self, member_id: &str) -> Result<String, Status>;
    /// Consumer unit prices of `lines` for `tier` (empty for guests), in order.
    async fn quote(&self, currency: &str, tier: &str, lines: &[Units]) -> Result<Vec<i64>, Status>;
    /// Reserves every line for the order (idempotent by order id).
    async fn reserve(&self, order_id: &str, lines: &[Units], ttl: Duration) -> Result<(), Status>;
    /// Ships the reserved stock out (idempotent).
    async fn commit(&self, order_id: &str) -> Result<(), Status>;
    /// What catalog holds for the order.
    async fn held(&self, order_id: &str) -> Result<Held, Status>;
    /// Gives the reserved stock back; a reservation that never came to be is fine.
    async fn release(&self, order_id: &str) -> Result<(), Status>;
    /// Takes shipped units back into stock (idempotent by `request_id`).
    async fn return_stock(
        &self,
        order_id: &str,
        lines: &[Units],
        damaged: bool,
        request_id: &str,
    ) -> Result<(), Status>;
}

/// A downstream's answer as orders' caller should see it: what it did not find is
/// named from the status's `google.rpc.ResourceInfo`; a refusal is
/// FAILED_PRECONDITION; an outage is UNAVAILABLE (retry).
pub(crate) fn from_downstream(what: &str, status: Status) -> ServiceError {
    match status.code() {
        Code::NotFound => {
            let (kind, id) = missing_resource(&status).unwrap_or_default();
            let entity = match kind.as_str() {
                "sku" => "sku",
                "member" => "member",
                "reservation" => "reservation",
                "warehouse" => "warehouse",
                _ => "resource",
            };
            ServiceError::NotFound { entity, id }
        }
        Code::FailedPrecondition | Code::AlreadyExists => ServiceError::FailedPrecondition(status.message().to_owned()),
        Code::InvalidArgument => ServiceError::FailedPrecondition(format!("{what} refused: {}", status.message())),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            ServiceError::Unavailable(format!("{what} is unavailable, retry: {}", status.message()))
        }
        _ => ServiceError::internal(anyhow::anyhow!("{what} failed: {} {}", status.code(), status.message())),
    }
}

type Authed = InterceptedService<Channel, ClientInterceptor>;

/// The real downstreams over gRPC.
#[derive(Debug)]
pub struct GrpcDownstream {
    membership: MembershipServiceClient<Authed>,
    pricing: PricingServiceClient<Authed>,
    inventory: InventoryServiceClient<Authed>,
    membership_breaker: Breaker,
    catalog_breaker: Breaker,
}

impl GrpcDownstream {
    pub fn new(
        membership: Channel,
        catalog: Channel,
        tokens: Option<Arc<ServiceTokenSource>>,
        policy: CallPolicy,
    ) -> Self {
        let interceptor = ClientInterceptor::new(tokens);
        Self {
            membership: MembershipServiceClient::with_interceptor(membership, interceptor.clone()),
            pricing: PricingServiceClient::with_interceptor(catalog.clone(), interceptor.clone()),
            inventory: InventoryServiceClient::with_interceptor(catalog, interceptor),
            membership_breaker: Breaker::new("membership", policy.clone()),
            catalog_breaker: Breaker::new("catalog", policy),
        }
    }
}

fn skus(lines: &[Units]) -> Vec<cpb::ReservationLine> {
    lines
        .iter()
        .map(|(sku, quantity)| cpb::ReservationLine {
            sku: format!("skus/{sku}"),
            quantity: *quantity,
        })
        .collect()
}

#[async_trait::async_trait]
impl Downstream for GrpcDownstream {
    async fn member_tier(&self, member_id: &str) -> Result<String, Status> {
        let member = self
            .membership_breaker
            .call_idempotent(|timeout| {
                let mut client = self.membership.clone();
                let req = request(
                    mpb::GetMemberRequest {
                        name: format!("members/{member_id}"),
                        // Pricing needs the tier alone: membership answers from the
                        // member row without reading the rest of the profile.
                        read_mask: Some(prost_types::FieldMask {
                            paths: vec!["name".into(), "tier".into()],
                        }),
                    },
                    timeout,
                );
                async move { client.get_member(req).await }
            })
            .await?
            .into_inner();
        Ok(member.tier)
    }

    async fn quote(&self, currency: &str, tier: &str, lines: &[Units]) -> Result<Vec<i64>, Status> {
        // The consumer price is the same on every consumer channel; partner sales to
        // consumers are priced alike (wholesale lists are for partners' own buying).
        let quote = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.pricing.clone();
                let req = request(
                    cpb::QuotePricesRequest {
                        channel: cpb::SalesChannel::Online as i32,
                        currency_code: currency.to_owned(),
                        member_tier: tier.to_owned(),
                        partner_level: String::new(),
                        price_time: None,
                        lines: lines
                            .iter()
                            .map(|(sku, quantity)| cpb::QuoteLine {
                                sku: format!("skus/{sku}"),
                                quantity: *quantity,
                            })
                            .collect(),
                    },
                    timeout,
                );
                async move { client.quote_prices(req).await }
            })
            .await?
            .into_inner();
        if quote.lines.len() != lines.len() {
            return Err(Status::internal("catalog priced a different number of lines"));
        }
        quote
            .lines
            .iter()
            .map(|l| {
                l.unit_price
                    .as_ref()
                    .map(|m| m.amount_minor)
                    .ok_or_else(|| Status::internal("catalog returned a line without a price"))
            })
            .collect()
    }

    async fn reserve(&self, order_id: &str, lines: &[Units], ttl: Duration) -> Result<(), Status> {
        self.catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.inventory.clone();
                let req = request(
                    cpb::ReserveStockRequest {
                        order_id: order_id.to_owned(),
                        lines: skus(lines),
                        ttl: Some(retail_kit::convert::duration(ttl)),
                    },
                    timeout,
                );
                async move { client.reserve_stock(req).await }
            })
            .await
            .map(|_| ())
    }

    async fn commit(&self, order_id: &str) -> Result<(), Status> {
        self.catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.inventory.clone();
                let req = request(
                    cpb::CommitReservationRequest {
                        name: format!("reservations/{order_id}"),
                    },
                    timeout,
                );
                async move { client.commit_reservation(req).await }
            })
            .await
            .map(|_| ())
    }

    async fn held(&self, order_id: &str) -> Result<Held, Status> {
        let result = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.inventory.clone();
                let req = request(
                    cpb::GetReservationRequest {
                        name: format!("reservations/{order_id}"),
                    },
                    timeout,
                );
                async move { client.get_reservation(req).await }
            })
            .await;
        match result {
            Ok(reservation) => match cpb::ReservationState::try_from(reservation.get_ref().state) {
                Ok(cpb::ReservationState::Active) => Ok(Held::Reserved),
                Ok(cpb::ReservationState::Committed) => Ok(Held::Shipped),
                Ok(cpb::ReservationState::Released | cpb::ReservationState::Expired) => Ok(Held::Nothing),
                _ => Err(Status::internal("catalog answered a reservation without a known state")),
            },
            Err(status) if status.code() == Code::NotFound => Ok(Held::Nothing),
            Err(status) => Err(status),
        }
    }

    async fn release(&self, order_id: &str) -> Result<(), Status> {
        let result = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.inventory.clone();
                let req = request(
                    cpb::ReleaseReservationRequest {
                        name: format!("reservations/{order_id}"),
                    },
                    timeout,
                );
                async move { client.release_reservation(req).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(status),
        }
    }

    async fn return_stock(
        &self,
        order_id: &str,
        lines: &[Units],
        damaged: bool,
        request_id: &str,
    ) -> Result<(), Status> {
        self.catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.inventory.clone();
                let req = request(
                    cpb::ReturnStockRequest {
                        name: format!("reservations/{order_id}"),
                        lines: skus(lines),
                        damaged,
                        request_id: request_id.to_owned(),
                    },
                    timeout,
                );
                async move { client.return_stock(req).await }
            })
            .await
            .map(|_| ())
    }
}

//! The calls quotes make to other services: catalog's wholesale list (a quote's
//! list prices) and orders (the order an accepted quote becomes), behind one
//! trait so the use cases read as their steps and tests can stand in for both.
//!
//! Every call has a deadline and goes through the downstream's circuit breaker;
//! both are idempotent (a read, and a placement keyed by the quote) and retried
//! while the downstream is unavailable.

use std::sync::Arc;

use retail_kit::auth::{ClientInterceptor, ServiceTokenSource};
use retail_kit::error::ServiceError;
use retail_kit::resilience::{Breaker, CallPolicy, lazy_channel, request};
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{self as opb};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::settings::DownstreamSection;

/// The order an accepted quote becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteOrder {
    /// Idempotency key of the placement: the same for every acceptance of a quote.
    pub request_id: String,
    /// `partners/{p}/quotes/{q}`.
    pub quote: String,
    pub partner_id: String,
    /// The opportunity's rep id; may be empty.
    pub sales_rep: String,
    pub customer_name: String,
    pub customer_region: String,
    pub customer_tax_id: String,
    /// SKU code and units, in the quote's order.
    pub lines: Vec<(String, i64)>,
}

#[async_trait::async_trait]
pub trait Downstream: Send + Sync + std::fmt::Debug {
    /// Unit prices of `(sku, units)` on `level`'s wholesale list, in order; a SKU
    /// not on it is FAILED_PRECONDITION or NOT_FOUND.
    async fn list_prices(&self, currency: &str, level: &str, lines: &[(String, i64)]) -> Result<Vec<i64>, Status>;

    /// Places the order of an accepted quote (idempotent by `request_id`); the
    /// order's id.
    async fn place_quote_order(&self, order: &QuoteOrder) -> Result<String, Status>;
}

/// A downstream's refusal as this service's caller should see it.
pub(crate) fn from_downstream(what: &str, status: &Status) -> ServiceError {
    match status.code() {
        Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists | Code::InvalidArgument => {
            ServiceError::FailedPrecondition(format!("{what} refused: {}", status.message()))
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            ServiceError::Unavailable(format!("{what} is unavailable, retry: {}", status.message()))
        }
        _ => ServiceError::internal(anyhow::anyhow!("{what} failed: {} {}", status.code(), status.message())),
    }
}

/// Without the URLs: quotes cannot be priced or accepted.
#[derive(Debug, Clone, Copy)]
pub struct Unconfigured;

#[async_trait::async_trait]
impl Downstream for Unconfigured {
    async fn list_prices(&self, _: &str, _: &str, _: &[(String, i64)]) -> Result<Vec<i64>, Status> {
        Err(Status::failed_precondition(
            "quotes need catalog's price lists (downstream.catalog_url is not set)",
        ))
    }

    async fn place_quote_order(&self, _: &QuoteOrder) -> Result<String, Status> {
        Err(Status::failed_precondition(
            "accepting a quote needs orders (downstream.orders_url is not set)",
        ))
    }
}

type Authed = InterceptedService<Channel, ClientInterceptor>;

/// Catalog and orders over gRPC.
#[derive(Debug)]
pub struct GrpcDownstream {
    pricing: Option<PricingServiceClient<Authed>>,
    orders: Option<OrdersServiceClient<Authed>>,
    catalog_breaker: Breaker,
    orders_breaker: Breaker,
}

impl GrpcDownstream {
    pub fn new(settings: &DownstreamSection, tokens: Option<Arc<ServiceTokenSource>>) -> anyhow::Result<Self> {
        let interceptor = ClientInterceptor::new(tokens);
        let pricing = match &settings.catalog_url {
            Some(url) => Some(PricingServiceClient::with_interceptor(
                lazy_channel("downstream.catalog_url", url)?,
                interceptor.clone(),
            )),
            None => None,
        };
        let orders = match &settings.orders_url {
            Some(url) => Some(OrdersServiceClient::with_interceptor(
                lazy_channel("downstream.orders_url", url)?,
                interceptor,
            )),
            None => None,
        };
        let policy = CallPolicy {
            timeout: std::time::Duration::from_millis(settings.timeout_ms),
            ..CallPolicy::default()
        };
        Ok(Self {
            pricing,
            orders,
            catalog_breaker: Breaker::new("catalog", policy.clone()),
            orders_breaker: Breaker::new("orders", policy),
        })
    }
}

#[async_trait::async_trait]
impl Downstream for GrpcDownstream {
    async fn list_prices(&self, currency: &str, level: &str, lines: &[(String, i64)]) -> Result<Vec<i64>, Status> {
        let Some(pricing) = &self.pricing else {
            return Unconfigured.list_prices(currency, level, lines).await;
        };
        let quote = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = pricing.clone();
                let req = request(
                    cpb::QuotePricesRequest {
                        channel: cpb::SalesChannel::Partner as i32,
                        currency_code: currency.to_owned(),
                        member_tier: String::new(),
                        partner_level: level.to_owned(),
                        price_time: None,
                        lines: lines
                            .iter()
                            .map(|(sku, quantity)| cpb::QuoteLine {
                                sku: format!("skus/{sku}"),
                                quantity: *quantity,
                            })
                            .collect(),
                        coupon_code: String::new(),
                        member: String::new(),
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

    async fn place_quote_order(&self, order: &QuoteOrder) -> Result<String, Status> {
        let Some(orders) = &self.orders else {
            return Unconfigured.place_quote_order(order).await;
        };
        let placed = self
            .orders_breaker
            .call_idempotent(|timeout| {
                let mut client = orders.clone();
                let req = request(
                    opb::PlaceOrderRequest {
                        order: Some(opb::Order {
                            channel: opb::OrderChannel::Partner as i32,
                            partner_id: order.partner_id.clone(),
                            sales_rep: order.sales_rep.clone(),
                            lines: order
                                .lines
                                .iter()
                                .map(|(sku, quantity)| opb::OrderLine {
                                    sku: format!("skus/{sku}"),
                                    quantity: *quantity,
                                    ..Default::default()
                                })
                                .collect(),
                            customer: Some(opb::Customer {
                                display_name: order.customer_name.clone(),
                                region: order.customer_region.clone(),
                                tax_id: order.customer_tax_id.clone(),
                            }),
                            quote: order.quote.clone(),
                            ..Default::default()
                        }),
                        request_id: order.request_id.clone(),
                    },
                    timeout,
                );
                async move { client.place_order(req).await }
            })
            .await?
            .into_inner();
        placed
            .name
            .strip_prefix("orders/")
            .map(str::to_owned)
            .ok_or_else(|| Status::internal("orders answered an order without a name"))
    }
}

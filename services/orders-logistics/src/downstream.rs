//! The calls orders makes to membership, catalog-inventory and (for partner sales,
//! when configured) channel-partner's price policy and deal locks, behind one trait so that the
//! saga reads as its steps (and tests can inject failures at any of them).
//!
//! Every call has a deadline and goes through the downstream's circuit breaker; the
//! idempotent ones (all but none: reads, and writes keyed by order id or request id)
//! are retried while the downstream is unavailable.

use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{ClientInterceptor, ServiceTokenSource};
use retail_kit::error::{ServiceError, missing_resource};
use retail_kit::resilience::{Breaker, CallPolicy, request};
use retail_proto::catalog::coupon_service_client::CouponServiceClient;
use retail_proto::catalog::inventory_service_client::InventoryServiceClient;
use retail_proto::catalog::pricing_service_client::PricingServiceClient;
use retail_proto::catalog::{self as cpb};
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::{self as mpb};
use retail_proto::partner::deal_service_client::DealServiceClient;
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_proto::partner::price_policy_service_client::PricePolicyServiceClient;
use retail_proto::partner::quote_service_client::QuoteServiceClient;
use retail_proto::partner::{self as ppb};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::domain::order::Customer;

/// A line to price or reserve: SKU code and units.
pub type Units = (String, i64);

/// A discount the price policy (or a special discount) gives on a line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineDiscount {
    /// `discountRules/{id}` or `partners/{p}/specialDiscounts/{id}`.
    pub rule: String,
    pub rate_bp: i32,
    pub amount_minor: i64,
}

/// The price policy's answer for a basket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPrices {
    /// The partner's level the policy evaluated for.
    pub level: String,
    /// Per line, in the basket's order: its discounts in the order they applied.
    pub lines: Vec<Vec<LineDiscount>>,
}

/// A special discount request as orders needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialDiscount {
    /// The basket or order reference it was asked for.
    pub reference: String,
    pub rate_bp: i32,
    /// Granted or approved: usable.
    pub usable: bool,
    /// Its state, for messages ("pending", "consumed", ...).
    pub state: String,
}

/// A quote of channel-partner as orders needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotedPrices {
    /// The partner it belongs to.
    pub partner_id: String,
    /// Issued or approved and not expired (an accepted quote has its order).
    pub usable: bool,
    /// Its state, for messages ("pending_approval", "expired", ...).
    pub state: String,
    /// The partner's level it was quoted at.
    pub level: String,
    /// SKU code, units, unit price, in the quote's order.
    pub lines: Vec<(String, i64, i64)>,
}

fn partner_pricing_off() -> Status {
    Status::failed_precondition("partner pricing is not configured (downstream.partner_url)")
}

/// Consumer prices with a coupon applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponPrices {
    /// Unit prices, in order.
    pub prices: Vec<i64>,
    /// The coupon's discount on each line, in order.
    pub discounts: Vec<i64>,
    /// `coupons/{coupon_id}`.
    pub coupon: String,
    /// The coupon's percentage in basis points; 0 for a fixed amount.
    pub rate_bp: i32,
}

fn coupons_off() -> Status {
    Status::failed_precondition("coupons are not available")
}

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

    /// Consumer prices of `lines` for `tier` on `channel` with `code` applied for
    /// `member` (empty for guests); FAILED_PRECONDITION when the code does not apply.
    async fn quote_with_coupon(
        &self,
        _currency: &str,
        _tier: &str,
        _channel: cpb::SalesChannel,
        _member: &str,
        _code: &str,
        _lines: &[Units],
    ) -> Result<CouponPrices, Status> {
        Err(coupons_off())
    }
    /// Redeems `code` for the order (idempotent by order id).
    async fn redeem_coupon(&self, _order_id: &str, _code: &str, _member: &str) -> Result<(), Status> {
        Err(coupons_off())
    }
    /// Gives the order's coupon use back; an order that redeemed none is fine.
    async fn release_coupon(&self, _order_id: &str) -> Result<(), Status> {
        Ok(())
    }

    /// Whether partner orders are priced with channel-partner's price policy.
    fn prices_partner_orders(&self) -> bool {
        false
    }
    /// An active partner's level; NOT_FOUND / FAILED_PRECONDITION otherwise.
    async fn partner_level(&self, _partner_id: &str) -> Result<String, Status> {
        Err(partner_pricing_off())
    }
    /// Wholesale unit prices of `lines` on `level`'s list, in order.
    async fn quote_wholesale(&self, _currency: &str, _level: &str, _lines: &[Units]) -> Result<Vec<i64>, Status> {
        Err(partner_pricing_off())
    }
    /// The price policy's discounts on `(sku, unit price, units)` lines.
    async fn evaluate_policy(&self, _partner_id: &str, _lines: &[(String, i64, i64)]) -> Result<PolicyPrices, Status> {
        Err(partner_pricing_off())
    }
    /// A special discount request (`partners/{p}/specialDiscounts/{id}`).
    async fn special_discount(&self, _name: &str) -> Result<SpecialDiscount, Status> {
        Err(partner_pricing_off())
    }
    /// Uses a special discount for `consumer` (idempotent by consumer).
    async fn consume_special_discount(&self, _name: &str, _reference: &str, _consumer: &str) -> Result<(), Status> {
        Err(partner_pricing_off())
    }

    /// A quote (`partners/{p}/quotes/{id}`) with its prices.
    async fn quote_prices(&self, _name: &str) -> Result<QuotedPrices, Status> {
        Err(partner_pricing_off())
    }

    /// Whether partner sales naming their customer are checked against deal
    /// registration's locks (channel-partner is configured).
    fn checks_customer_locks(&self) -> bool {
        self.prices_partner_orders()
    }
    /// Whether an active lock of a partner other than `partner_id` holds `customer`.
    async fn customer_locked_to_other(&self, _partner_id: &str, _customer: &Customer) -> Result<bool, Status> {
        Err(partner_pricing_off())
    }
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
                "partner" => "partner",
                "special discount" => "special discount",
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
    coupons: CouponServiceClient<Authed>,
    inventory: InventoryServiceClient<Authed>,
    membership_breaker: Breaker,
    catalog_breaker: Breaker,
    partner: Option<PartnerClients>,
}

/// Channel-partner's clients, when partner orders are priced by its policy.
#[derive(Debug)]
struct PartnerClients {
    partners: PartnerServiceClient<Authed>,
    policy: PricePolicyServiceClient<Authed>,
    deals: DealServiceClient<Authed>,
    quotes: QuoteServiceClient<Authed>,
    breaker: Breaker,
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
            coupons: CouponServiceClient::with_interceptor(catalog.clone(), interceptor.clone()),
            inventory: InventoryServiceClient::with_interceptor(catalog, interceptor),
            membership_breaker: Breaker::new("membership", policy.clone()),
            catalog_breaker: Breaker::new("catalog", policy),
            partner: None,
        }
    }

    /// Prices partner orders with channel-partner's price policy at `partner`.
    pub fn with_partner(
        mut self,
        partner: Channel,
        tokens: Option<Arc<ServiceTokenSource>>,
        policy: CallPolicy,
    ) -> Self {
        let interceptor = ClientInterceptor::new(tokens);
        self.partner = Some(PartnerClients {
            partners: PartnerServiceClient::with_interceptor(partner.clone(), interceptor.clone()),
            policy: PricePolicyServiceClient::with_interceptor(partner.clone(), interceptor.clone()),
            deals: DealServiceClient::with_interceptor(partner.clone(), interceptor.clone()),
            quotes: QuoteServiceClient::with_interceptor(partner, interceptor),
            breaker: Breaker::new("channel-partner", policy),
        });
        self
    }

    fn partner(&self) -> Result<&PartnerClients, Status> {
        self.partner.as_ref().ok_or_else(partner_pricing_off)
    }
}

fn quote_request(
    channel: cpb::SalesChannel,
    currency: &str,
    tier: &str,
    level: &str,
    lines: &[Units],
) -> cpb::QuotePricesRequest {
    cpb::QuotePricesRequest {
        channel: channel as i32,
        currency_code: currency.to_owned(),
        member_tier: tier.to_owned(),
        partner_level: level.to_owned(),
        price_time: None,
        lines: lines
            .iter()
            .map(|(sku, quantity)| cpb::QuoteLine {
                sku: format!("skus/{sku}"),
                quantity: *quantity,
            })
            .collect(),
        ..Default::default()
    }
}

fn unit_prices(quote: &cpb::QuotePricesResponse, lines: usize) -> Result<Vec<i64>, Status> {
    if quote.lines.len() != lines {
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
        // The consumer price is the same on every consumer channel (and on partner
        // sales when channel-partner's price policy is not configured).
        let quote = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.pricing.clone();
                let req = request(
                    quote_request(cpb::SalesChannel::Online, currency, tier, "", lines),
                    timeout,
                );
                async move { client.quote_prices(req).await }
            })
            .await?
            .into_inner();
        unit_prices(&quote, lines.len())
    }

    async fn quote_with_coupon(
        &self,
        currency: &str,
        tier: &str,
        channel: cpb::SalesChannel,
        member: &str,
        code: &str,
        lines: &[Units],
    ) -> Result<CouponPrices, Status> {
        let quote = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.pricing.clone();
                let mut ask = quote_request(channel, currency, tier, "", lines);
                ask.coupon_code = code.to_owned();
                ask.member = if member.is_empty() {
                    String::new()
                } else {
                    format!("members/{member}")
                };
                let req = request(ask, timeout);
                async move { client.quote_prices(req).await }
            })
            .await?
            .into_inner();
        let prices = unit_prices(&quote, lines.len())?;
        let discounts = quote
            .lines
            .iter()
            .map(|l| l.coupon_discount.as_ref().map_or(0, |m| m.amount_minor))
            .collect();
        let coupon = quote
            .coupon
            .ok_or_else(|| Status::internal("catalog applied no coupon"))?;
        Ok(CouponPrices {
            prices,
            discounts,
            coupon: coupon.coupon,
            rate_bp: i32::try_from(coupon.percent_off_bp).unwrap_or(0),
        })
    }

    async fn redeem_coupon(&self, order_id: &str, code: &str, member: &str) -> Result<(), Status> {
        self.catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.coupons.clone();
                let req = request(
                    cpb::RedeemCouponRequest {
                        order_id: order_id.to_owned(),
                        code: code.to_owned(),
                        member: if member.is_empty() {
                            String::new()
                        } else {
                            format!("members/{member}")
                        },
                    },
                    timeout,
                );
                async move { client.redeem_coupon(req).await }
            })
            .await
            .map(|_| ())
    }

    async fn release_coupon(&self, order_id: &str) -> Result<(), Status> {
        let result = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.coupons.clone();
                let req = request(
                    cpb::ReleaseCouponRedemptionRequest {
                        order_id: order_id.to_owned(),
                    },
                    timeout,
                );
                async move { client.release_coupon_redemption(req).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(status),
        }
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

    fn prices_partner_orders(&self) -> bool {
        self.partner.is_some()
    }

    async fn partner_level(&self, partner_id: &str) -> Result<String, Status> {
        let p = self.partner()?;
        let partner = p
            .breaker
            .call_idempotent(|timeout| {
                let mut client = p.partners.clone();
                let req = request(
                    ppb::GetPartnerRequest {
                        name: format!("partners/{partner_id}"),
                    },
                    timeout,
                );
                async move { client.get_partner(req).await }
            })
            .await?
            .into_inner();
        if partner.state != ppb::PartnerState::Active as i32 {
            return Err(Status::failed_precondition(format!(
                "partner partners/{partner_id} is not active"
            )));
        }
        Ok(partner.level)
    }

    async fn quote_wholesale(&self, currency: &str, level: &str, lines: &[Units]) -> Result<Vec<i64>, Status> {
        let quote = self
            .catalog_breaker
            .call_idempotent(|timeout| {
                let mut client = self.pricing.clone();
                let req = request(
                    quote_request(cpb::SalesChannel::Partner, currency, "", level, lines),
                    timeout,
                );
                async move { client.quote_prices(req).await }
            })
            .await?
            .into_inner();
        unit_prices(&quote, lines.len())
    }

    async fn evaluate_policy(&self, partner_id: &str, lines: &[(String, i64, i64)]) -> Result<PolicyPrices, Status> {
        let p = self.partner()?;
        let answer = p
            .breaker
            .call_idempotent(|timeout| {
                let mut client = p.policy.clone();
                let req = request(
                    ppb::EvaluatePolicyRequest {
                        partner: format!("partners/{partner_id}"),
                        lines: lines
                            .iter()
                            .map(|(sku, unit, quantity)| ppb::BasketLine {
                                sku: sku.clone(),
                                unit_price_minor: *unit,
                                quantity: *quantity,
                            })
                            .collect(),
                        functions: Vec::new(),
                    },
                    timeout,
                );
                async move { client.evaluate_policy(req).await }
            })
            .await?
            .into_inner();
        if answer.lines.len() != lines.len() {
            return Err(Status::internal("the price policy priced a different number of lines"));
        }
        Ok(PolicyPrices {
            level: answer.level,
            lines: answer
                .lines
                .into_iter()
                .map(|l| {
                    l.discounts
                        .into_iter()
                        .map(|d| LineDiscount {
                            rule: d.rule,
                            rate_bp: d.rate_bp,
                            amount_minor: d.amount_minor,
                        })
                        .collect()
                })
                .collect(),
        })
    }

    async fn special_discount(&self, name: &str) -> Result<SpecialDiscount, Status> {
        let p = self.partner()?;
        let s = p
            .breaker
            .call_idempotent(|timeout| {
                let mut client = p.policy.clone();
                let req = request(ppb::GetSpecialDiscountRequest { name: name.to_owned() }, timeout);
                async move { client.get_special_discount(req).await }
            })
            .await?
            .into_inner();
        let state = ppb::SpecialDiscountState::try_from(s.state).unwrap_or(ppb::SpecialDiscountState::Unspecified);
        Ok(SpecialDiscount {
            reference: s.reference,
            rate_bp: s.rate_bp,
            usable: matches!(
                state,
                ppb::SpecialDiscountState::Granted | ppb::SpecialDiscountState::Approved
            ),
            state: state
                .as_str_name()
                .trim_start_matches("SPECIAL_DISCOUNT_STATE_")
                .to_lowercase(),
        })
    }

    async fn consume_special_discount(&self, name: &str, reference: &str, consumer: &str) -> Result<(), Status> {
        let p = self.partner()?;
        // Idempotent by consumer: a retry after a lost answer gets the same use back.
        p.breaker
            .call_idempotent(|timeout| {
                let mut client = p.policy.clone();
                let req = request(
                    ppb::ConsumeSpecialDiscountRequest {
                        name: name.to_owned(),
                        reference: reference.to_owned(),
                        consumer: consumer.to_owned(),
                    },
                    timeout,
                );
                async move { client.consume_special_discount(req).await }
            })
            .await
            .map(|_| ())
    }

    async fn quote_prices(&self, name: &str) -> Result<QuotedPrices, Status> {
        let p = self.partner()?;
        let q = p
            .breaker
            .call_idempotent(|timeout| {
                let mut client = p.quotes.clone();
                let req = request(ppb::GetQuoteRequest { name: name.to_owned() }, timeout);
                async move { client.get_quote(req).await }
            })
            .await?
            .into_inner();
        let state = ppb::QuoteState::try_from(q.state).unwrap_or(ppb::QuoteState::Unspecified);
        let partner_id = q
            .name
            .strip_prefix("partners/")
            .and_then(|rest| rest.split_once("/quotes/"))
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default();
        Ok(QuotedPrices {
            partner_id,
            usable: matches!(state, ppb::QuoteState::Issued | ppb::QuoteState::Approved),
            state: state.as_str_name().trim_start_matches("QUOTE_STATE_").to_lowercase(),
            level: q.partner_level,
            lines: q
                .lines
                .into_iter()
                .map(|l| {
                    (
                        l.sku.strip_prefix("skus/").unwrap_or(&l.sku).to_owned(),
                        l.quantity,
                        l.unit_price_minor,
                    )
                })
                .collect(),
        })
    }

    async fn customer_locked_to_other(&self, partner_id: &str, customer: &Customer) -> Result<bool, Status> {
        let p = self.partner()?;
        let answer = p
            .breaker
            .call_idempotent(|timeout| {
                let mut client = p.deals.clone();
                let req = request(
                    ppb::CheckCustomerLockRequest {
                        customer: Some(ppb::Customer {
                            display_name: customer.display_name.clone(),
                            region: customer.region.clone(),
                            tax_id: customer.tax_id.clone(),
                        }),
                        partner: format!("partners/{partner_id}"),
                    },
                    timeout,
                );
                async move { client.check_customer_lock(req).await }
            })
            .await?
            .into_inner();
        Ok(answer.locked_to_other_partner)
    }
}

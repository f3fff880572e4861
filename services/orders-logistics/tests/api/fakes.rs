//! Catalog and membership as orders sees them, in process on port 0: stock and
//! reservations kept in memory, every call recorded, and failures injected per call.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use retail_kit::error::ServiceError;
use retail_proto::catalog::coupon_service_server::{CouponService, CouponServiceServer};
use retail_proto::catalog::inventory_service_server::{InventoryService, InventoryServiceServer};
use retail_proto::catalog::pricing_service_server::{PricingService, PricingServiceServer};
use retail_proto::catalog::{self as cpb};
use retail_proto::common::Money;
use retail_proto::membership::membership_service_server::{MembershipService, MembershipServiceServer};
use retail_proto::membership::{self as mpb};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

type Rpc<T> = Result<Response<T>, Status>;

/// What the fakes hold and saw.
#[derive(Debug, Default)]
pub struct World {
    /// Sellable units per SKU code.
    pub sellable: HashMap<String, i64>,
    /// Unit price per SKU code, in minor units.
    pub prices: HashMap<String, i64>,
    /// Tier per member id; a member not here is NOT_FOUND.
    pub tiers: HashMap<String, String>,
    /// Reservations by order id: lines and state.
    pub reservations: HashMap<String, (Vec<(String, i64)>, cpb::ReservationState)>,
    /// Every call, as `method order-or-sku`.
    pub calls: Vec<String>,
    /// Calls that fail: method name -> code, as many times as listed.
    pub failures: Vec<(&'static str, Code)>,
    /// Request ids of returns already applied (catalog's idempotency).
    pub returns: Vec<String>,
    /// Tiers the quotes were asked for.
    pub quoted_tiers: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Fakes(pub Arc<Mutex<World>>);

fn sku_of(name: &str) -> String {
    name.trim_start_matches("skus/").to_owned()
}

fn reservation_pb(order: &str, lines: &[(String, i64)], state: cpb::ReservationState) -> cpb::Reservation {
    cpb::Reservation {
        name: format!("reservations/{order}"),
        order_id: order.to_owned(),
        state: state as i32,
        lines: lines
            .iter()
            .map(|(sku, q)| cpb::ReservationLine {
                sku: format!("skus/{sku}"),
                quantity: *q,
            })
            .collect(),
        ..Default::default()
    }
}

impl Fakes {
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    /// Records the call; an injected failure for `method` answers instead.
    fn enter(&self, method: &'static str, subject: &str) -> Result<(), Status> {
        let mut w = self.world();
        w.calls.push(format!("{method} {subject}"));
        if let Some(i) = w.failures.iter().position(|(m, _)| *m == method) {
            let (_, code) = w.failures.remove(i);
            return Err(Status::new(code, format!("injected failure of {method}")));
        }
        Ok(())
    }

    pub fn calls_of(&self, method: &str) -> Vec<String> {
        self.world()
            .calls
            .iter()
            .filter(|c| c.split(' ').next() == Some(method))
            .cloned()
            .collect()
    }

    /// Serves catalog (inventory and pricing) and membership on two ports.
    pub async fn serve(&self) -> (SocketAddr, SocketAddr) {
        let catalog = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let membership = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (catalog.local_addr().unwrap(), membership.local_addr().unwrap());
        let routes = tonic::service::Routes::new(InventoryServiceServer::new(self.clone()))
            .add_service(PricingServiceServer::new(self.clone()))
            .add_service(CouponServiceServer::new(self.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(TcpListenerStream::new(catalog)),
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MembershipServiceServer::new(self.clone()))
                .serve_with_incoming(TcpListenerStream::new(membership)),
        );
        addrs
    }
}

fn unused<T>() -> Rpc<T> {
    Err(Status::unimplemented("orders does not call this"))
}

#[tonic::async_trait]
impl InventoryService for Fakes {
    async fn reserve_stock(&self, request: Request<cpb::ReserveStockRequest>) -> Rpc<cpb::Reservation> {
        let req = request.into_inner();
        self.enter("reserve", &req.order_id)?;
        let mut w = self.world();
        if let Some((lines, state)) = w.reservations.get(&req.order_id) {
            return Ok(Response::new(reservation_pb(&req.order_id, lines, *state)));
        }
        let lines: Vec<(String, i64)> = req.lines.iter().map(|l| (sku_of(&l.sku), l.quantity)).collect();
        for (sku, q) in &lines {
            if w.sellable.get(sku).copied().unwrap_or(0) < *q {
                return Err(Status::failed_precondition(format!("not enough skus/{sku}")));
            }
        }
        for (sku, q) in &lines {
            *w.sellable.entry(sku.clone()).or_default() -= q;
        }
        w.reservations
            .insert(req.order_id.clone(), (lines.clone(), cpb::ReservationState::Active));
        Ok(Response::new(reservation_pb(
            &req.order_id,
            &lines,
            cpb::ReservationState::Active,
        )))
    }

    async fn get_reservation(&self, request: Request<cpb::GetReservationRequest>) -> Rpc<cpb::Reservation> {
        let order = request.into_inner().name.trim_start_matches("reservations/").to_owned();
        self.enter("get_reservation", &order)?;
        let w = self.world();
        match w.reservations.get(&order) {
            Some((lines, state)) => Ok(Response::new(reservation_pb(&order, lines, *state))),
            None => Err(ServiceError::not_found("reservation", format!("reservations/{order}")).into()),
        }
    }

    async fn commit_reservation(&self, request: Request<cpb::CommitReservationRequest>) -> Rpc<cpb::Reservation> {
        let order = request.into_inner().name.trim_start_matches("reservations/").to_owned();
        self.enter("commit", &order)?;
        let mut w = self.world();
        let Some((lines, state)) = w.reservations.get_mut(&order) else {
            return Err(ServiceError::not_found("reservation", format!("reservations/{order}")).into());
        };
        match state {
            cpb::ReservationState::Active | cpb::ReservationState::Committed => {
                *state = cpb::ReservationState::Committed;
                Ok(Response::new(reservation_pb(&order, lines, *state)))
            }
            _ => Err(Status::failed_precondition("reservation cannot be committed")),
        }
    }

    async fn release_reservation(&self, request: Request<cpb::ReleaseReservationRequest>) -> Rpc<cpb::Reservation> {
        let order = request.into_inner().name.trim_start_matches("reservations/").to_owned();
        self.enter("release", &order)?;
        let mut w = self.world();
        let Some((lines, state)) = w.reservations.get(&order).cloned() else {
            return Err(ServiceError::not_found("reservation", format!("reservations/{order}")).into());
        };
        match state {
            cpb::ReservationState::Active => {
                for (sku, q) in &lines {
                    *w.sellable.entry(sku.clone()).or_default() += q;
                }
                w.reservations
                    .insert(order.clone(), (lines.clone(), cpb::ReservationState::Released));
                Ok(Response::new(reservation_pb(
                    &order,
                    &lines,
                    cpb::ReservationState::Released,
                )))
            }
            cpb::ReservationState::Committed => Err(Status::failed_precondition("reservation is committed")),
            other => Ok(Response::new(reservation_pb(&order, &lines, other))),
        }
    }

    async fn return_stock(&self, request: Request<cpb::ReturnStockRequest>) -> Rpc<cpb::Reservation> {
        let req = request.into_inner();
        let order = req.name.trim_start_matches("reservations/").to_owned();
        self.enter("return_stock", &req.request_id)?;
        let mut w = self.world();
        let Some((lines, state)) = w.reservations.get(&order).cloned() else {
            return Err(ServiceError::not_found("reservation", format!("reservations/{order}")).into());
        };
        if state != cpb::ReservationState::Committed {
            return Err(Status::failed_precondition("only shipped goods come back"));
        }
        if !w.returns.contains(&req.request_id) {
            w.returns.push(req.request_id.clone());
            if !req.damaged {
                for l in &req.lines {
                    *w.sellable.entry(sku_of(&l.sku)).or_default() += l.quantity;
                }
            }
        }
        Ok(Response::new(reservation_pb(&order, &lines, state)))
    }

    async fn create_warehouse(&self, _: Request<cpb::CreateWarehouseRequest>) -> Rpc<cpb::Warehouse> {
        unused()
    }
    async fn list_warehouses(&self, _: Request<cpb::ListWarehousesRequest>) -> Rpc<cpb::ListWarehousesResponse> {
        unused()
    }
    async fn receive_stock(&self, _: Request<cpb::ReceiveStockRequest>) -> Rpc<cpb::StockLevel> {
        unused()
    }
    async fn adjust_stock(&self, _: Request<cpb::AdjustStockRequest>) -> Rpc<cpb::StockLevel> {
        unused()
    }
    async fn move_stock(&self, _: Request<cpb::MoveStockRequest>) -> Rpc<cpb::StockLevel> {
        unused()
    }
    async fn get_stock(&self, _: Request<cpb::GetStockRequest>) -> Rpc<cpb::SkuStock> {
        unused()
    }
    async fn list_stock_movements(
        &self,
        _: Request<cpb::ListStockMovementsRequest>,
    ) -> Rpc<cpb::ListStockMovementsResponse> {
        unused()
    }
}

/// Coupons are tested against the real catalog (services/suite/tests/coupons.rs);
/// here no order redeems one, so a compensation's release finds nothing.
#[tonic::async_trait]
impl CouponService for Fakes {
    async fn create_coupon(&self, _: Request<cpb::CreateCouponRequest>) -> Rpc<cpb::Coupon> {
        unused()
    }
    async fn get_coupon(&self, _: Request<cpb::GetCouponRequest>) -> Rpc<cpb::Coupon> {
        unused()
    }
    async fn list_coupons(&self, _: Request<cpb::ListCouponsRequest>) -> Rpc<cpb::ListCouponsResponse> {
        unused()
    }
    async fn disable_coupon(&self, _: Request<cpb::DisableCouponRequest>) -> Rpc<cpb::Coupon> {
        unused()
    }
    async fn issue_coupon_codes(&self, _: Request<cpb::IssueCouponCodesRequest>) -> Rpc<cpb::IssueCouponCodesResponse> {
        unused()
    }
    async fn redeem_coupon(&self, _: Request<cpb::RedeemCouponRequest>) -> Rpc<cpb::CouponRedemption> {
        unused()
    }
    async fn release_coupon_redemption(
        &self,
        _: Request<cpb::ReleaseCouponRedemptionRequest>,
    ) -> Rpc<cpb::CouponRedemption> {
        Err(Status::not_found("no coupon redemption for this order"))
    }
}

#[tonic::async_trait]
impl PricingService for Fakes {
    async fn quote_prices(&self, request: Request<cpb::QuotePricesRequest>) -> Rpc<cpb::QuotePricesResponse> {
        let req = request.into_inner();
        self.enter("quote", &req.member_tier)?;
        let mut w = self.world();
        w.quoted_tiers.push(req.member_tier.clone());
        let mut lines = Vec::new();
        for l in &req.lines {
            let sku = sku_of(&l.sku);
            let Some(price) = w.prices.get(&sku).copied() else {
                return Err(ServiceError::not_found("sku", l.sku.clone()).into());
            };
            let money = |amount_minor| {
                Some(Money {
                    currency_code: req.currency_code.clone(),
                    amount_minor,
                })
            };
            lines.push(cpb::QuotedLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                list_unit_price: money(price),
                unit_price: money(price),
                line_total: money(price * l.quantity),
                applied_rules: Vec::new(),
                coupon_discount: None,
            });
        }
        Ok(Response::new(cpb::QuotePricesResponse {
            lines,
            ..Default::default()
        }))
    }

    async fn set_list_price(&self, _: Request<cpb::SetListPriceRequest>) -> Rpc<cpb::ListPrice> {
        unused()
    }
    async fn set_tier_discount(&self, _: Request<cpb::SetTierDiscountRequest>) -> Rpc<cpb::TierDiscount> {
        unused()
    }
    async fn list_tier_discounts(
        &self,
        _: Request<cpb::ListTierDiscountsRequest>,
    ) -> Rpc<cpb::ListTierDiscountsResponse> {
        unused()
    }
    async fn create_promotion(&self, _: Request<cpb::CreatePromotionRequest>) -> Rpc<cpb::Promotion> {
        unused()
    }
    async fn list_promotions(&self, _: Request<cpb::ListPromotionsRequest>) -> Rpc<cpb::ListPromotionsResponse> {
        unused()
    }
    async fn end_promotion(&self, _: Request<cpb::EndPromotionRequest>) -> Rpc<cpb::Promotion> {
        unused()
    }
    async fn set_partner_price(&self, _: Request<cpb::SetPartnerPriceRequest>) -> Rpc<cpb::PartnerPrice> {
        unused()
    }
    async fn record_competitor_price(
        &self,
        _: Request<cpb::RecordCompetitorPriceRequest>,
    ) -> Rpc<cpb::CompetitorPrice> {
        unused()
    }
    async fn list_competitor_alerts(
        &self,
        _: Request<cpb::ListCompetitorAlertsRequest>,
    ) -> Rpc<cpb::ListCompetitorAlertsResponse> {
        unused()
    }
}

#[tonic::async_trait]
impl MembershipService for Fakes {
    async fn get_member(&self, request: Request<mpb::GetMemberRequest>) -> Rpc<mpb::Member> {
        let name = request.into_inner().name;
        let id = name.trim_start_matches("members/").to_owned();
        self.enter("get_member", &id)?;
        let w = self.world();
        match w.tiers.get(&id) {
            Some(tier) => Ok(Response::new(mpb::Member {
                name,
                tier: tier.clone(),
                ..Default::default()
            })),
            None => Err(ServiceError::not_found("member", name).into()),
        }
    }

    async fn register_member(&self, _: Request<mpb::RegisterMemberRequest>) -> Rpc<mpb::Member> {
        unused()
    }
    async fn identify_member(&self, _: Request<mpb::IdentifyMemberRequest>) -> Rpc<mpb::Member> {
        unused()
    }
    async fn list_members(&self, _: Request<mpb::ListMembersRequest>) -> Rpc<mpb::ListMembersResponse> {
        unused()
    }
    async fn update_member(&self, _: Request<mpb::UpdateMemberRequest>) -> Rpc<mpb::Member> {
        unused()
    }
    async fn add_identifier(&self, _: Request<mpb::AddIdentifierRequest>) -> Rpc<mpb::Member> {
        unused()
    }
    async fn remove_identifier(&self, _: Request<mpb::RemoveIdentifierRequest>) -> Rpc<mpb::Member> {
        unused()
    }
    async fn set_tags(&self, _: Request<mpb::SetTagsRequest>) -> Rpc<mpb::Member> {
        unused()
    }
    async fn set_consent(&self, _: Request<mpb::SetConsentRequest>) -> Rpc<mpb::Member> {
        unused()
    }
    async fn export_member(&self, _: Request<mpb::ExportMemberRequest>) -> Rpc<mpb::ExportMemberResponse> {
        unused()
    }
    async fn erase_member(&self, _: Request<mpb::EraseMemberRequest>) -> Rpc<mpb::EraseMemberResponse> {
        unused()
    }
    async fn identify_visitor(&self, _: Request<mpb::IdentifyVisitorRequest>) -> Rpc<mpb::IdentifyVisitorResponse> {
        unused()
    }
    async fn merge_members(&self, _: Request<mpb::MergeMembersRequest>) -> Rpc<mpb::MergeMembersResponse> {
        unused()
    }
    async fn get_contact(&self, _: Request<mpb::GetContactRequest>) -> Rpc<mpb::AnonymousContact> {
        unused()
    }
    async fn list_contacts(&self, _: Request<mpb::ListContactsRequest>) -> Rpc<mpb::ListContactsResponse> {
        unused()
    }
}

//! The gRPC adapter of orders: authorise (the scope; partner principals see only
//! their own partner's orders, anything else is NOT_FOUND), parse the request into
//! the app's input ([`parse`]), call the use case, convert the answer ([`convert`]).

mod convert;
mod parse;

use std::sync::Arc;

use retail_kit::auth::Principal;
use retail_kit::convert::now;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::orders as pb;
use retail_proto::orders::orders_service_server::OrdersService;
use tonic::{Request, Response, Status};

use crate::app::{App, Caller};
use convert::{event_to_pb, order_to_pb, rating_to_pb, return_to_pb};

pub(crate) const READ: &str = "orders.read";
pub(crate) const WRITE: &str = "orders.write";

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

/// The caller, if it holds `scope`.
fn caller<T>(request: &Request<T>, scope: &str) -> ServiceResult<Caller> {
    let p = Principal::of(request)?;
    p.require_scope(scope)?;
    Ok(Caller::from(p))
}

#[derive(Debug, Clone)]
pub(crate) struct OrdersApi {
    app: Arc<App>,
}

impl OrdersApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl OrdersService for OrdersApi {
    #[tracing::instrument(skip_all)]
    async fn place_order(&self, request: Request<pb::PlaceOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        // Checks the request id's form (the saga keeps the id itself).
        IdempotencyKey::from_request("orders.PlaceOrder", &who.owner, &req.request_id, &req)?;
        let input = parse::place_order(&req, &who)?;
        ok(order_to_pb(&self.app.place(&who, input).await?))
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, READ)?;
        let id = parse::order_id("name", &request.get_ref().name)?;
        ok(order_to_pb(&self.app.get(&who, &id).await?))
    }

    async fn list_orders(&self, request: Request<pb::ListOrdersRequest>) -> Rpc<pb::ListOrdersResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let filter = parse::list_orders(&req)?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{filter:?}"))?;
        let (views, next_page_token) = self.app.list(&who, filter, &page).await?;
        ok(pb::ListOrdersResponse {
            orders: views.iter().map(order_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn pay_order(&self, request: Request<pb::PayOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("orders.PayOrder", &who.owner, &req.request_id, &req)?;
        let id = parse::order_id("name", &req.name)?;
        let payment = parse::payment(&req)?;
        ok(self.app.pay(&who, &id, payment, key.as_ref(), order_to_pb).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = parse::order_id("name", &req.name)?;
        let reason = parse::reason(&req.reason)?;
        ok(order_to_pb(&self.app.cancel(Some(&who), &id, &reason, now()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn ship_order(&self, request: Request<pb::ShipOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = parse::order_id("name", &req.name)?;
        let (carrier, tracking_number) = parse::shipment(&req)?;
        ok(order_to_pb(
            &self.app.ship(&who, &id, &carrier, &tracking_number).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn add_tracking_event(&self, request: Request<pb::AddTrackingEventRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = parse::order_id("name", &req.name)?;
        let event = parse::tracking_event(&req)?;
        ok(order_to_pb(&self.app.track(&who, &id, event).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn confirm_delivery(&self, request: Request<pb::ConfirmDeliveryRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let id = parse::order_id("name", &request.get_ref().name)?;
        ok(order_to_pb(&self.app.confirm_delivery(&who, &id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_order(&self, request: Request<pb::CompleteOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let id = parse::order_id("name", &request.get_ref().name)?;
        ok(order_to_pb(&self.app.complete(&who, &id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn request_return(&self, request: Request<pb::RequestReturnRequest>) -> Rpc<pb::Return> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("orders.RequestReturn", &who.owner, &req.request_id, &req)?;
        let id = parse::order_id("parent", &req.parent)?;
        let input = parse::return_request(&req)?;
        ok(self
            .app
            .request_return(&who, &id, input, key.as_ref(), return_to_pb)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn receive_return(&self, request: Request<pb::ReceiveReturnRequest>) -> Rpc<pb::Return> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let name = parse::return_name("name", &req.name)?;
        let damaged = parse::damaged_skus(&req)?;
        let (order, ret) = self.app.receive_return(&who, &name, &damaged).await?;
        ok(return_to_pb(&order, &ret))
    }

    #[tracing::instrument(skip_all)]
    async fn refund_return(&self, request: Request<pb::RefundReturnRequest>) -> Rpc<pb::Return> {
        let who = caller(&request, WRITE)?;
        let name = parse::return_name("name", &request.get_ref().name)?;
        let (order, ret) = self.app.refund_return(&who, &name).await?;
        ok(return_to_pb(&order, &ret))
    }

    #[tracing::instrument(skip_all)]
    async fn rate_order(&self, request: Request<pb::RateOrderRequest>) -> Rpc<pb::Rating> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = parse::order_id("parent", &req.parent)?;
        let rating = parse::rating(&req)?;
        ok(rating_to_pb(&self.app.rate(&who, &id, rating).await?))
    }

    async fn list_order_events(
        &self,
        request: Request<pb::ListOrderEventsRequest>,
    ) -> Rpc<pb::ListOrderEventsResponse> {
        let who = caller(&request, READ)?;
        let id = parse::order_id("parent", &request.get_ref().parent)?;
        let events = self.app.timeline(&who, &id).await?;
        ok(pb::ListOrderEventsResponse {
            events: events.into_iter().map(event_to_pb).collect(),
        })
    }
}

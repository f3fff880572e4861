//! The partner's orders: place (idempotent by `Idempotency-Key`), get, list, pay,
//! cancel. Orders scopes every call to the caller's partner: another partner's
//! order is not found.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use retail_proto::orders::orders_service_client::OrdersServiceClient;
use retail_proto::orders::{
    CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderChannel, OrderState, PayOrderRequest,
    PlaceOrderRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Money, check_if_match, etag, i64_as_string, id_of, time, with_etag};
use crate::auth::Caller;
use crate::http::{AppState, Json, Path, Query, check_id};
use crate::problem::Problem;

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    /// `skus/{skuCode}`.
    pub sku: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String, example = "2")]
    pub quantity: i64,
    pub unit_price: Option<Money>,
    pub line_total: Option<Money>,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String, example = "0")]
    pub returned_quantity: i64,
}

/// The payment of an order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub reference: String,
    pub amount: Option<Money>,
    pub pay_time: Option<String>,
}

/// The shipment of an order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
    pub ship_time: Option<String>,
    pub delivery_time: Option<String>,
}

/// An order of the partner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// `orders/{orderId}`.
    pub name: String,
    pub order_id: String,
    pub partner_id: String,
    /// `salesReps/{salesRepId}`, if a rep sold it.
    pub sales_rep: String,
    pub lines: Vec<OrderLine>,
    pub total: Option<Money>,
    /// `ORDER_STATE_PENDING_PAYMENT`, `_PAID`, `_SHIPPED`, `_DELIVERED`, `_COMPLETED`,
    /// `_CANCELLED`, `_RETURN_REQUESTED`, `_RETURN_RECEIVED` or `_REFUNDED`.
    pub state: String,
    pub payment: Option<Payment>,
    pub shipment: Option<Shipment>,
    pub refunded: Option<Money>,
    /// Unpaid orders are cancelled at this time.
    pub payment_due_time: Option<String>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
    pub cancel_reason: String,
}

impl From<retail_proto::orders::Order> for Order {
    fn from(o: retail_proto::orders::Order) -> Self {
        Self {
            state: o.state().as_str_name().to_owned(),
            order_id: id_of(&o.name, "orders").to_owned(),
            name: o.name,
            partner_id: o.partner_id,
            sales_rep: o.sales_rep,
            lines: o
                .lines
                .into_iter()
                .map(|l| OrderLine {
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price: l.unit_price.map(Money::from),
                    line_total: l.line_total.map(Money::from),
                    returned_quantity: l.returned_quantity,
                })
                .collect(),
            total: o.total.map(Money::from),
            payment: o.payment.map(|p| Payment {
                reference: p.reference,
                amount: p.amount.map(Money::from),
                pay_time: time(p.pay_time),
            }),
            shipment: o.shipment.map(|s| Shipment {
                carrier: s.carrier,
                tracking_number: s.tracking_number,
                ship_time: time(s.ship_time),
                delivery_time: time(s.delivery_time),
            }),
            refunded: o.refunded.map(Money::from),
            payment_due_time: time(o.payment_due_time),
            create_time: time(o.create_time),
            update_time: time(o.update_time),
            cancel_reason: o.cancel_reason,
        }
    }
}

fn order_response(order: retail_proto::orders::Order, status: StatusCode) -> Response {
    let tag = etag(order.update_time.as_ref());
    let mut response = with_etag(Order::from(order), tag);
    *response.status_mut() = status;
    response
}

/// A line to order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrderLine {
    /// `skus/{skuCode}`.
    #[schema(
        max_length = 69,
        pattern = "^skus/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        example = "skus/RUN-42"
    )]
    pub sku: String,
    /// Units, 1-10,000.
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
}

/// An order to place for the caller's partner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrder {
    /// 1-200 lines; one SKU once.
    #[schema(min_items = 1, max_items = 200)]
    pub lines: Vec<NewOrderLine>,
    /// The partner's sales rep who sold it, `salesReps/{salesRepId}`.
    #[serde(default)]
    #[schema(pattern = "^salesReps/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub sales_rep: Option<String>,
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| Problem::invalid("Idempotency-Key", "must be 1-128 visible ASCII characters"))?;
            check_id("Idempotency-Key", key)?;
            Ok(Some(key.to_owned()))
        }
    }
}

/// Places an order. With an `Idempotency-Key` a retry returns the first answer and
/// places nothing more.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = NewOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$")),
    responses(
        (status = 201, description = "The placed order, waiting for payment", body = Order),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn place_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewOrder>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let order = retail_proto::orders::Order {
        channel: OrderChannel::Partner as i32,
        partner_id: caller.partner_id.to_string(),
        sales_rep: body.sales_rep.unwrap_or_default(),
        lines: body
            .lines
            .into_iter()
            .map(|l| retail_proto::orders::OrderLine {
                sku: l.sku,
                quantity: l.quantity,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut client = OrdersServiceClient::new(state.orders.clone());
    let request = state.request(
        &caller,
        PlaceOrderRequest {
            order: Some(order),
            request_id,
        },
    );
    let order = client
        .place_order(request)
        .await
        .map_err(|s| Problem::from_status(&s, "order"))?
        .into_inner();
    Ok(order_response(order, StatusCode::CREATED))
}

async fn fetch(state: &AppState, caller: &Caller, order_id: &str) -> Result<retail_proto::orders::Order, Problem> {
    check_id("orderId", order_id)?;
    let mut client = OrdersServiceClient::new(state.orders.clone());
    let request = state.request(
        caller,
        GetOrderRequest {
            name: format!("orders/{order_id}"),
        },
    );
    Ok(client.get_order(request).await?.into_inner())
}

/// Gets an order of the partner.
#[utoipa::path(get, path = "/v1/orders/{orderId}", tag = "orders",
    params(("orderId" = String, Path, description = "The order's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The order", body = Order,
            headers(("ETag" = String, description = "Version of the order"))),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(order_id): Path<String>,
) -> Result<Response, Problem> {
    let order = fetch(&state, &caller, &order_id).await?;
    Ok(order_response(order, StatusCode::OK))
}

/// Filters and page of the order list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// At most this many; default 50, at most 500.
    #[param(minimum = 0, maximum = 500)]
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
    /// Only orders in this state, for example `ORDER_STATE_PAID`.
    #[param(
        pattern = "^ORDER_STATE_(PENDING_PAYMENT|PAID|SHIPPED|DELIVERED|COMPLETED|CANCELLED|RETURN_REQUESTED|RETURN_RECEIVED|REFUNDED)$"
    )]
    pub state: Option<String>,
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Lists the partner's orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(OrderQuery),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_orders(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<OrderQuery>,
) -> Result<axum::Json<OrderPage>, Problem> {
    let (page_size, page_token) = super::Paging {
        page_size: query.page_size,
        page_token: query.page_token,
    }
    .parts()?;
    let order_state = match query.state.as_deref() {
        None | Some("") => OrderState::Unspecified,
        Some(name) => OrderState::from_str_name(name)
            .filter(|s| *s != OrderState::Unspecified)
            .ok_or_else(|| Problem::invalid("state", "not an order state (ORDER_STATE_...)"))?,
    };
    let mut client = OrdersServiceClient::new(state.orders.clone());
    let request = state.request(
        &caller,
        ListOrdersRequest {
            page_size,
            page_token,
            partner_id: caller.partner_id.to_string(),
            state: order_state as i32,
            ..Default::default()
        },
    );
    let page = client
        .list_orders(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(OrderPage {
        orders: page.orders.into_iter().map(Order::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// The payment of an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewPayment {
    /// The payment provider's reference, 1-128 characters.
    #[schema(max_length = 128)]
    pub reference: String,
    /// Must equal the order's total.
    pub amount: Money,
}

/// Pays an order. With an `Idempotency-Key` a retry returns the first answer; with
/// `If-Match` only the version read is paid.
#[utoipa::path(post, path = "/v1/orders/{orderId}/pay", tag = "orders", request_body = NewPayment,
    params(
        ("orderId" = String, Path, description = "The order's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the order as read"),
    ),
    responses(
        (status = 200, description = "The paid order", body = Order),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pay_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<NewPayment>,
) -> Result<Response, Problem> {
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let current = fetch(&state, &caller, &order_id).await?;
    check_if_match(&headers, etag(current.update_time.as_ref()).as_deref())?;
    let mut client = OrdersServiceClient::new(state.orders.clone());
    let request = state.request(
        &caller,
        PayOrderRequest {
            name: current.name,
            payment: Some(retail_proto::orders::Payment {
                reference: body.reference,
                amount: Some(body.amount.into()),
                pay_time: None,
            }),
            request_id,
        },
    );
    let order = client.pay_order(request).await?.into_inner();
    Ok(order_response(order, StatusCode::OK))
}

/// Why an order is cancelled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cancellation {
    /// 1-200 characters.
    #[schema(max_length = 200)]
    pub reason: String,
}

/// Cancels an order that has not shipped; with `If-Match` only the version read.
#[utoipa::path(post, path = "/v1/orders/{orderId}/cancel", tag = "orders", request_body = Cancellation,
    params(
        ("orderId" = String, Path, description = "The order's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the order as read"),
    ),
    responses(
        (status = 200, description = "The cancelled order", body = Order),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Cancellation>,
) -> Result<Response, Problem> {
    let current = fetch(&state, &caller, &order_id).await?;
    check_if_match(&headers, etag(current.update_time.as_ref()).as_deref())?;
    let mut client = OrdersServiceClient::new(state.orders.clone());
    let request = state.request(
        &caller,
        CancelOrderRequest {
            name: current.name,
            reason: body.reason,
        },
    );
    let order = client.cancel_order(request).await?.into_inner();
    Ok(order_response(order, StatusCode::OK).into_response())
}

/// One step of an order's history, tracking included.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    /// `placed`, `paid`, `cancelled`, `shipped`, `tracking`, `delivered`, `completed`,
    /// `return_requested`, `return_received`, `refunded` or `rated`.
    pub kind: String,
    /// For `tracking`: `TRACKING_EVENT_KIND_...`.
    pub tracking_kind: String,
    /// Carrier and tracking number, reason, return id, ...
    pub detail: String,
    pub event_time: Option<String>,
    /// The order's state after it.
    pub state: String,
}

/// An order's history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderTracking {
    /// Oldest first.
    pub events: Vec<OrderEvent>,
}

/// Tracks an order: its history, the carrier's tracking events included.
#[utoipa::path(get, path = "/v1/orders/{orderId}/tracking", tag = "orders",
    params(("orderId" = String, Path, description = "The order's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The order's history", body = OrderTracking),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn track_order(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<OrderTracking>, Problem> {
    check_id("orderId", &order_id)?;
    let mut client = OrdersServiceClient::new(state.orders.clone());
    let request = state.request(
        &caller,
        retail_proto::orders::ListOrderEventsRequest {
            parent: format!("orders/{order_id}"),
        },
    );
    let events = client.list_order_events(request).await?.into_inner().events;
    Ok(axum::Json(OrderTracking {
        events: events
            .into_iter()
            .map(|e| OrderEvent {
                tracking_kind: if e.tracking_kind == 0 {
                    String::new()
                } else {
                    e.tracking_kind().as_str_name().to_owned()
                },
                state: e.state().as_str_name().to_owned(),
                kind: e.kind,
                detail: e.detail,
                event_time: time(e.event_time),
            })
            .collect(),
    }))
}

/// A line to return.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewReturnLine {
    /// `skus/{skuCode}`, a line of the order.
    #[schema(max_length = 69, pattern = "^skus/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub sku: String,
    /// Units, at most those bought and not yet returned.
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
}

/// A return to request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewReturn {
    pub lines: Vec<NewReturnLine>,
    /// Why, at most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub reason: String,
}

/// A return of an order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Return {
    /// `orders/{orderId}/returns/{returnId}`.
    pub name: String,
    pub lines: Vec<ReturnLine>,
    pub reason: String,
    /// `RETURN_STATE_REQUESTED`, `_RECEIVED` or `_REFUNDED`.
    pub state: String,
    pub refund_amount: Option<Money>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

/// A returned line.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReturnLine {
    pub sku: String,
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String)]
    pub quantity: i64,
    pub damaged: bool,
}

/// Requests a return of some or all units of a delivered order. With an
/// `Idempotency-Key` a retry returns the first answer.
#[utoipa::path(post, path = "/v1/orders/{orderId}/returns", tag = "orders", request_body = NewReturn,
    params(
        ("orderId" = String, Path, description = "The order's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters without `/`; a replay returns the first response",
        pattern = "^[!-.0-~]{1,128}$"),
    ),
    responses(
        (status = 201, description = "The return", body = Return),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn request_return(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<NewReturn>,
) -> Result<Response, Problem> {
    check_id("orderId", &order_id)?;
    let request_id = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut client = OrdersServiceClient::new(state.orders.clone());
    let request = state.request(
        &caller,
        retail_proto::orders::RequestReturnRequest {
            parent: format!("orders/{order_id}"),
            r#return: Some(retail_proto::orders::Return {
                lines: body
                    .lines
                    .into_iter()
                    .map(|l| retail_proto::orders::ReturnLine {
                        sku: l.sku,
                        quantity: l.quantity,
                        damaged: false,
                    })
                    .collect(),
                reason: body.reason,
                ..Default::default()
            }),
            request_id,
        },
    );
    let created = client
        .request_return(request)
        .await
        .map_err(|s| Problem::from_status(&s, "return"))?
        .into_inner();
    let body = Return {
        state: created.state().as_str_name().to_owned(),
        name: created.name,
        lines: created
            .lines
            .into_iter()
            .map(|l| ReturnLine {
                sku: l.sku,
                quantity: l.quantity,
                damaged: l.damaged,
            })
            .collect(),
        reason: created.reason,
        refund_amount: created.refund_amount.map(Money::from),
        create_time: time(created.create_time),
        update_time: time(created.update_time),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

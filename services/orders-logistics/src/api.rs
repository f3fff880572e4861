//! The gRPC adapter of orders: parse, authorise (partner principals see only their own
//! partner's orders; anything else is NOT_FOUND), check the lifecycle rule, call the
//! downstreams, then change the order with its timeline entry and event in one
//! transaction whose state change is conditional on the state read.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prost::Message;
use retail_kit::auth::Principal;
use retail_kit::convert::{from_timestamp, now, opt_timestamp, timestamp};
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::events::{self, EventLog};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::events as ev;
use retail_proto::orders as pb;
use retail_proto::orders::orders_service_server::OrdersService;
use sea_orm::{ActiveModelTrait, DatabaseConnection, QueryTrait};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::domain::lifecycle::{self, Action, State as OrderState};
use crate::domain::{returns, tracking};
use crate::downstream::{Downstream, Units};
use crate::saga::{PlaceInput, StepHook, from_downstream, money, ordered_units, parties, set};
use crate::settings::Settings;
use crate::store::{self, OrderView, ReturnView, order};

pub const READ: &str = "orders.read";
pub const WRITE: &str = "orders.write";

/// Lines per order, at most.
const MAX_LINES: usize = 200;
/// Units per line, at most.
const MAX_UNITS: i64 = 10_000;

pub struct State {
    pub db: DatabaseConnection,
    pub log: Arc<EventLog>,
    pub settings: Settings,
    pub downstream: Arc<dyn Downstream>,
    pub hook: Arc<dyn StepHook>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

#[derive(Debug, Clone)]
pub struct OrdersApi {
    state: Arc<State>,
}

impl OrdersApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

fn pb_state(s: &str) -> i32 {
    (match OrderState::parse(s) {
        Some(OrderState::PendingPayment) => pb::OrderState::PendingPayment,
        Some(OrderState::Paid) => pb::OrderState::Paid,
        Some(OrderState::Shipped) => pb::OrderState::Shipped,
        Some(OrderState::Delivered) => pb::OrderState::Delivered,
        Some(OrderState::Completed) => pb::OrderState::Completed,
        Some(OrderState::Cancelled) => pb::OrderState::Cancelled,
        Some(OrderState::ReturnRequested) => pb::OrderState::ReturnRequested,
        Some(OrderState::ReturnReceived) => pb::OrderState::ReturnReceived,
        Some(OrderState::Refunded) => pb::OrderState::Refunded,
        None => pb::OrderState::Unspecified,
    }) as i32
}

fn state_of_pb(s: i32) -> Option<OrderState> {
    match pb::OrderState::try_from(s).ok()? {
        pb::OrderState::PendingPayment => Some(OrderState::PendingPayment),
        pb::OrderState::Paid => Some(OrderState::Paid),
        pb::OrderState::Shipped => Some(OrderState::Shipped),
        pb::OrderState::Delivered => Some(OrderState::Delivered),
        pb::OrderState::Completed => Some(OrderState::Completed),
        pb::OrderState::Cancelled => Some(OrderState::Cancelled),
        pb::OrderState::ReturnRequested => Some(OrderState::ReturnRequested),
        pb::OrderState::ReturnReceived => Some(OrderState::ReturnReceived),
        pb::OrderState::Refunded => Some(OrderState::Refunded),
        pb::OrderState::Unspecified => None,
    }
}

fn pb_channel(c: &str) -> i32 {
    (match c {
        "store" => pb::OrderChannel::Store,
        "online" => pb::OrderChannel::Online,
        "partner" => pb::OrderChannel::Partner,
        _ => pb::OrderChannel::Unspecified,
    }) as i32
}

fn tracking_of_pb(k: i32) -> Option<tracking::Kind> {
    match pb::TrackingEventKind::try_from(k).ok()? {
        pb::TrackingEventKind::PickedUp => Some(tracking::Kind::PickedUp),
        pb::TrackingEventKind::InTransit => Some(tracking::Kind::InTransit),
        pb::TrackingEventKind::OutForDelivery => Some(tracking::Kind::OutForDelivery),
        pb::TrackingEventKind::Delivered => Some(tracking::Kind::Delivered),
        pb::TrackingEventKind::Exception => Some(tracking::Kind::Exception),
        pb::TrackingEventKind::Unspecified => None,
    }
}

fn pb_tracking(k: &str) -> i32 {
    (match tracking::Kind::parse(k) {
        Some(tracking::Kind::PickedUp) => pb::TrackingEventKind::PickedUp,
        Some(tracking::Kind::InTransit) => pb::TrackingEventKind::InTransit,
        Some(tracking::Kind::OutForDelivery) => pb::TrackingEventKind::OutForDelivery,
        Some(tracking::Kind::Delivered) => pb::TrackingEventKind::Delivered,
        Some(tracking::Kind::Exception) => pb::TrackingEventKind::Exception,
        None => pb::TrackingEventKind::Unspecified,
    }) as i32
}

fn order_to_pb(v: &OrderView) -> pb::Order {
    let o = &v.order;
    pb::Order {
        name: format!("orders/{}", o.id),
        member: if o.member_id.is_empty() {
            String::new()
        } else {
            format!("members/{}", o.member_id)
        },
        channel: pb_channel(&o.channel),
        partner_id: o.partner_id.clone(),
        sales_rep: o.sales_rep.clone(),
        store: o.store.clone(),
        lines: v
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                sku: format!("skus/{}", l.sku_code),
                quantity: l.quantity,
                unit_price: money(&o.currency, l.unit_minor),
                line_total: money(&o.currency, l.unit_minor * l.quantity),
                returned_quantity: l.returned_quantity,
            })
            .collect(),
        total: money(&o.currency, o.total_minor),
        state: pb_state(&o.state),
        member_tier: o.member_tier.clone(),
        payment: o.paid_at.map(|at| pb::Payment {
            reference: o.payment_reference.clone(),
            amount: money(&o.currency, o.paid_minor),
            pay_time: Some(timestamp(at)),
        }),
        shipment: o.shipped_at.map(|at| pb::Shipment {
            carrier: o.carrier.clone(),
            tracking_number: o.tracking_number.clone(),
            ship_time: Some(timestamp(at)),
            delivery_time: opt_timestamp(o.delivered_at),
        }),
        refunded: money(&o.currency, o.refunded_minor),
        payment_due_time: Some(timestamp(o.payment_due_at)),
        create_time: Some(timestamp(o.created_at)),
        update_time: Some(timestamp(o.updated_at)),
        cancel_reason: o.cancel_reason.clone(),
    }
}

fn return_to_pb(order: &order::Model, r: &ReturnView) -> pb::Return {
    let state = match r.ret.state.as_str() {
        "requested" => pb::ReturnState::Requested,
        "received" => pb::ReturnState::Received,
        "refunded" => pb::ReturnState::Refunded,
        _ => pb::ReturnState::Unspecified,
    };
    pb::Return {
        name: format!("orders/{}/returns/{}", order.id, r.ret.id),
        lines: r
            .lines
            .iter()
            .map(|l| pb::ReturnLine {
                sku: format!("skus/{}", l.sku_code),
                quantity: l.quantity,
                damaged: l.damaged,
            })
            .collect(),
        reason: r.ret.reason.clone(),
        state: state as i32,
        refund_amount: money(&order.currency, r.ret.refund_minor),
        create_time: Some(timestamp(r.ret.created_at)),
        update_time: Some(timestamp(r.ret.updated_at)),
    }
}

fn order_id(field: &str, name: &str) -> ServiceResult<String> {
    let id = name
        .strip_prefix("orders/")
        .ok_or_else(|| ServiceError::invalid(field, "must be orders/{order_id}"))?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ServiceError::invalid(field, "must be orders/{order_id} with a UUID id"))
}

fn return_name(field: &str, name: &str) -> ServiceResult<(String, String)> {
    let bad = || ServiceError::invalid(field, "must be orders/{order_id}/returns/{return_id}");
    let rest = name.strip_prefix("orders/").ok_or_else(bad)?;
    let (order, ret) = rest.split_once("/returns/").ok_or_else(bad)?;
    let order = uuid::Uuid::parse_str(order).map_err(|_| bad())?.to_string();
    let ret = uuid::Uuid::parse_str(ret).map_err(|_| bad())?.to_string();
    Ok((order, ret))
}

fn member_id(name: &str) -> Result<String, String> {
    let id = name.strip_prefix("members/").ok_or("must be members/{member_id}")?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| "must be members/{member_id} with a UUID id".to_owned())
}

/// A SKU code as catalog spells it: 1-64 of `A-Z 0-9 - _ .`, upper-cased.
fn sku_code(name: &str) -> Result<String, String> {
    let code = name
        .strip_prefix("skus/")
        .ok_or("must be skus/{sku_code}")?
        .trim()
        .to_ascii_uppercase();
    let ok = !code.is_empty()
        && code.len() <= 64
        && code.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(code)
    } else {
        Err("must be skus/{sku_code} with letters, digits, '-', '_', '.'".into())
    }
}

fn short_text(v: &mut Violations, field: &str, raw: &str, max: usize, required: bool) -> String {
    let t = v.text(field, raw, max, required);
    if t.chars().any(|c| c.is_whitespace() && c != ' ') {
        v.add(field, "must be a single line");
    }
    t
}

/// The caller's principal as orders needs it.
pub(crate) struct Caller {
    /// Whose request ids these are (a partner's, for partner principals).
    owner: String,
    /// The partner a partner principal is confined to.
    partner: Option<String>,
}

fn caller<T>(request: &Request<T>, scope: &str) -> ServiceResult<Caller> {
    let p = Principal::of(request)?;
    p.require_scope(scope)?;
    Ok(Caller {
        owner: p.request_owner(),
        partner: p.partner_scope().map(str::to_owned),
    })
}

impl State {
    /// The order if the caller may see it; NOT_FOUND otherwise (existence never leaks).
    async fn visible(&self, caller: &Caller, id: &str) -> ServiceResult<order::Model> {
        let order = store::find_order(&self.db, id).await?;
        visible_to(caller, id, order)
    }

    /// The order with its lines if `caller` may see it, and the response `key`
    /// stored if this request ran before, in one read.
    async fn visible_view(
        &self,
        caller: &Caller,
        id: &str,
        key: Option<&IdempotencyKey>,
    ) -> ServiceResult<(OrderView, Option<pb::Order>)> {
        let (view, stored) = store::find_view_keyed(&self.db, id, key).await?;
        let (order, lines) = match view {
            Some(OrderView { order, lines }) => (Some(order), lines),
            None => (None, Vec::new()),
        };
        // Visibility first: to a caller who may not see the order, a request id it
        // used elsewhere must not tell that the order exists.
        let order = visible_to(caller, id, order)?;
        let replay = match key {
            Some(key) => key.replay(stored)?,
            None => None,
        };
        Ok((OrderView { order, lines }, replay))
    }

    async fn order_pb(&self, id: &str) -> ServiceResult<pb::Order> {
        let order = store::find_order(&self.db, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("order", format!("orders/{id}")))?;
        Ok(order_to_pb(&store::view(&self.db, order).await?))
    }

    /// Changes an order's state (if it is still `from`) with its timeline entry and
    /// event, in one transaction. FAILED_PRECONDITION if the state moved meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn change(
        &self,
        order: &order::Model,
        action: Action,
        changes: store::Changes,
        kind: &str,
        tracking_kind: &str,
        detail: &str,
        at: DateTime<Utc>,
        event: Option<(&'static str, Vec<u8>)>,
        work: Option<store::stock_work::ActiveModel>,
    ) -> ServiceResult<()> {
        let from = OrderState::parse(&order.state)
            .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored order state")))?;
        let to = lifecycle::next(from, action).map_err(ServiceError::FailedPrecondition)?;
        idempotency::transaction(&self.db, |txn| {
            let (id, changes, kind, tracking_kind, detail, event, work) = (
                order.id.clone(),
                changes.clone(),
                kind.to_owned(),
                tracking_kind.to_owned(),
                detail.to_owned(),
                event.clone(),
                work.clone(),
            );
            Box::pin(async move {
                if !store::transition(txn, &id, &[from.as_str()], to.as_str(), changes, at).await? {
                    return Err(ServiceError::FailedPrecondition(
                        "the order changed meanwhile; read it again".into(),
                    ));
                }
                store::timeline_row(&id, &kind, &tracking_kind, &detail, to.as_str(), at)
                    .insert(txn)
                    .await?;
                if let Some((ty, payload)) = event {
                    publish_raw(txn, ty, &id, payload).await?;
                }
                if let Some(work) = work {
                    work.insert(txn).await?;
                }
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        Ok(())
    }

    /// Cancels an order before shipping: an unpaid one gives its reservation back, a
    /// paid one its shipped-out units (and is refunded in full).
    pub(crate) async fn cancel(
        &self,
        id: &str,
        caller: Option<&Caller>,
        reason: &str,
        at: DateTime<Utc>,
    ) -> ServiceResult<pb::Order> {
        let order = match caller {
            Some(c) => self.visible(c, id).await?,
            None => store::find_order(&self.db, id)
                .await?
                .ok_or_else(|| ServiceError::not_found("order", format!("orders/{id}")))?,
        };
        let was_paid = order.state == OrderState::Paid.as_str();
        let refunded = if was_paid { order.paid_minor } else { 0 };
        let event = ev::OrderCancelled {
            order_id: order.id.clone(),
            parties: Some(parties(&order)),
            refunded: money(&order.currency, refunded),
            reason: reason.to_owned(),
            cancel_time: Some(timestamp(at)),
        };
        self.change(
            &order,
            Action::Cancel,
            vec![
                set(order::Column::CancelReason, reason.to_owned()),
                set(order::Column::RefundedMinor, refunded),
            ],
            "cancelled",
            "",
            reason,
            at,
            Some(("retail.events.v1.OrderCancelled", event.encode_to_vec())),
            Some(store::cancel_work(id, at)),
        )
        .await?;
        // The order is cancelled now; its stock follows (see `crate::stock`).
        self.follow_up(&store::cancel_work_id(id)).await;
        self.order_pb(id).await
    }
}

async fn publish_raw(
    txn: &sea_orm::DatabaseTransaction,
    ty: &str,
    aggregate: &str,
    payload: Vec<u8>,
) -> ServiceResult<()> {
    events::publish(txn, ty, aggregate, &RawEvent(payload)).await?;
    Ok(())
}

/// An already encoded event payload.
#[derive(Clone, PartialEq, Default)]
struct RawEvent(Vec<u8>);

impl std::fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawEvent({} bytes)", self.0.len())
    }
}

impl Message for RawEvent {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

fn fingerprint(message: &impl Message) -> Vec<u8> {
    Sha256::digest(message.encode_to_vec()).to_vec()
}

#[tonic::async_trait]
impl OrdersService for OrdersApi {
    #[tracing::instrument(skip_all)]
    async fn place_order(&self, request: Request<pb::PlaceOrderRequest>) -> Rpc<pb::Order> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("orders.PlaceOrder", &who.owner, &req.request_id, &req)?;
        let Some(o) = req.order.as_ref() else {
            return Err(ServiceError::invalid("order", "is required").into());
        };
        let mut v = Violations::new();
        let member = if o.member.is_empty() {
            None
        } else {
            v.field("order.member", member_id(&o.member))
        };
        let channel = match pb::OrderChannel::try_from(o.channel) {
            Ok(pb::OrderChannel::Store) => "store",
            Ok(pb::OrderChannel::Online) => "online",
            Ok(pb::OrderChannel::Partner) => "partner",
            _ => {
                v.add("order.channel", "must be store, online or partner");
                ""
            }
        };
        let mut partner_id = short_text(&mut v, "order.partner_id", &o.partner_id, 64, false);
        let sales_rep = short_text(&mut v, "order.sales_rep", &o.sales_rep, 64, false);
        let store_code = short_text(&mut v, "order.store", &o.store, 32, false);
        if let Some(own) = &who.partner {
            if channel != "partner" && !channel.is_empty() {
                v.add("order.channel", "partner principals place partner orders");
            }
            if !partner_id.is_empty() && partner_id != *own {
                return Err(ServiceError::PermissionDenied(
                    "partner principals place orders for their own partner only".into(),
                )
                .into());
            }
            partner_id = own.clone();
        } else if channel == "partner" && partner_id.is_empty() {
            v.add("order.partner_id", "is required for partner sales");
        }
        if channel != "partner" && !channel.is_empty() && (!partner_id.is_empty() || !sales_rep.is_empty()) {
            v.add("order.partner_id", "only partner sales name a partner and sales rep");
        }
        if o.lines.is_empty() || o.lines.len() > MAX_LINES {
            v.add("order.lines", format!("1-{MAX_LINES} lines"));
        }
        let mut lines: Vec<Units> = Vec::new();
        for (i, l) in o.lines.iter().enumerate().take(MAX_LINES) {
            let code = v.field(&format!("order.lines[{i}].sku"), sku_code(&l.sku));
            if l.quantity <= 0 || l.quantity > MAX_UNITS {
                v.add(format!("order.lines[{i}].quantity"), format!("must be 1-{MAX_UNITS}"));
            }
            if let Some(code) = code {
                if lines.iter().any(|(c, _)| *c == code) {
                    v.add(format!("order.lines[{i}].sku"), "is listed twice");
                } else {
                    lines.push((code, l.quantity));
                }
            }
        }
        v.finish()?;
        let input = PlaceInput {
            request_key: key.as_ref().map(|_| format!("{}:{}", who.owner, req.request_id)),
            fingerprint: fingerprint(&req),
            member_id: member,
            channel: channel.to_owned(),
            partner_id,
            sales_rep,
            store: store_code,
            lines,
        };
        let view = s.place(input).await?;
        ok(order_to_pb(&view))
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, READ)?;
        let id = order_id("name", &request.get_ref().name)?;
        let order = self.state.visible(&who, &id).await?;
        ok(order_to_pb(&store::view(&self.state.db, order).await?))
    }

    async fn list_orders(&self, request: Request<pb::ListOrdersRequest>) -> Rpc<pb::ListOrdersResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let mut filter = store::OrderFilter::default();
        if !req.member.is_empty() {
            filter.member_id = v.field("member", member_id(&req.member));
        }
        if !req.partner_id.is_empty() {
            filter.partner_id = Some(req.partner_id.clone());
        }
        if req.state != 0 {
            match state_of_pb(req.state) {
                Some(st) => filter.state = Some(st.as_str().to_owned()),
                None => v.add("state", "must be an order state"),
            }
        }
        for (field, ts, slot) in [
            ("create_after", &req.create_after, &mut filter.created_from),
            ("create_before", &req.create_before, &mut filter.created_before),
        ] {
            if let Some(ts) = ts {
                *slot = v.field(field, from_timestamp(ts).ok_or("is not a valid time"));
            }
        }
        v.finish()?;
        // A partner principal lists its own partner's orders, whatever it asked for.
        if let Some(own) = &who.partner {
            if filter.partner_id.as_ref().is_some_and(|p| p != own) {
                return ok(pb::ListOrdersResponse::default());
            }
            filter.partner_id = Some(own.clone());
        }
        let page = Page::parse(req.page_size, &req.page_token, &format!("{filter:?}"))?;
        let rows = store::list_orders(&self.state.db, &page, &filter).await?;
        let (rows, next_page_token) = page.finish(rows, |o| o.id.clone());
        let views = store::views(&self.state.db, rows).await?;
        ok(pb::ListOrdersResponse {
            orders: views.iter().map(order_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn pay_order(&self, request: Request<pb::PayOrderRequest>) -> Rpc<pb::Order> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("orders.PayOrder", &who.owner, &req.request_id, &req)?;
        let id = order_id("name", &req.name)?;
        let mut v = Violations::new();
        let payment = req.payment.clone().unwrap_or_default();
        if req.payment.is_none() {
            v.add("payment", "is required");
        }
        let reference = short_text(&mut v, "payment.reference", &payment.reference, 128, true);
        let amount = payment.amount.clone().unwrap_or_default();
        if payment.amount.is_none() {
            v.add("payment.amount", "is required");
        }
        v.finish()?;
        let (OrderView { order, lines }, replay) = s.visible_view(&who, &id, key.as_ref()).await?;
        if let Some(stored) = replay {
            return ok(stored);
        }
        if amount.currency_code != order.currency || amount.amount_minor != order.total_minor {
            return Err(ServiceError::invalid(
                "payment.amount",
                format!("must be the order total, {} {}", order.total_minor, order.currency),
            )
            .into());
        }
        lifecycle::next(
            OrderState::parse(&order.state).unwrap_or(OrderState::Cancelled),
            Action::Pay,
        )
        .map_err(ServiceError::FailedPrecondition)?;
        let at = now();
        if order.payment_due_at <= at {
            return Err(ServiceError::FailedPrecondition("the payment window of the order has closed".into()).into());
        }
        s.downstream
            .commit(&id)
            .await
            .map_err(|st| from_downstream("catalog", st))?;
        let event = ev::OrderPaid {
            order_id: id.clone(),
            parties: Some(parties(&order)),
            lines: ordered_units(&order.currency, &lines),
            amount: money(&order.currency, order.total_minor),
            pay_time: Some(timestamp(at)),
        };
        let from = order.state.clone();
        // The order as the transition below leaves it (it changes only these columns).
        let paid = store::OrderView {
            order: order::Model {
                state: "paid".into(),
                payment_reference: reference.clone(),
                paid_minor: order.total_minor,
                paid_at: Some(at),
                updated_at: at,
                ..order
            },
            lines,
        };
        // One guarded write: paid only if the order is still in the state read above.
        let changes = vec![
            set(order::Column::PaymentReference, reference.clone()),
            set(order::Column::PaidMinor, paid.order.paid_minor),
            set(order::Column::PaidAt, at),
        ];
        let writes =
            GuardedWrite::new(store::transition_update(&id, &[from.as_str()], "paid", changes, at).into_query())
                .insert([store::timeline_row(&id, "paid", "", &reference, "paid", at)])
                .and_then(|w| {
                    w.insert([events::outbox_row(
                        "retail.events.v1.OrderPaid",
                        &id,
                        event.encode_to_vec(),
                    )])
                })
                .map_err(ServiceError::from)?;
        match idempotency::write_guarded(&s.db, key.as_ref(), order_to_pb(&paid), Clone::clone, writes).await? {
            Some(response) => {
                s.log.committed();
                ok(response)
            }
            None => Err(ServiceError::FailedPrecondition("the order changed meanwhile; read it again".into()).into()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Rpc<pb::Order> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = order_id("name", &req.name)?;
        let mut v = Violations::new();
        let reason = short_text(&mut v, "reason", &req.reason, 200, true);
        v.finish()?;
        ok(self.state.cancel(&id, Some(&who), &reason, now()).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn ship_order(&self, request: Request<pb::ShipOrderRequest>) -> Rpc<pb::Order> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = order_id("name", &req.name)?;
        let mut v = Violations::new();
        let carrier = short_text(&mut v, "carrier", &req.carrier, 32, true);
        let tracking_number = short_text(&mut v, "tracking_number", &req.tracking_number, 64, true);
        v.finish()?;
        let order = s.visible(&who, &id).await?;
        let at = now();
        s.change(
            &order,
            Action::Ship,
            vec![
                set(order::Column::Carrier, carrier.clone()),
                set(order::Column::TrackingNumber, tracking_number.clone()),
                set(order::Column::ShippedAt, at),
            ],
            "shipped",
            "",
            &format!("{carrier} {tracking_number}"),
            at,
            progressed(&order, "shipped", at),
            None,
        )
        .await?;
        ok(s.order_pb(&id).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn add_tracking_event(&self, request: Request<pb::AddTrackingEventRequest>) -> Rpc<pb::Order> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = order_id("name", &req.name)?;
        let mut v = Violations::new();
        let kind = tracking_of_pb(req.kind);
        if kind.is_none() {
            v.add("kind", "must be a tracking event kind");
        }
        let at = match &req.event_time {
            Some(ts) => v.field("event_time", from_timestamp(ts).ok_or("is not a valid time")),
            None => Some(now()),
        };
        if at.is_some_and(|t| t > now() + chrono::Duration::minutes(5)) {
            v.add("event_time", "must not be in the future");
        }
        let detail = short_text(&mut v, "detail", &req.detail, 200, false);
        v.finish()?;
        let (Some(kind), Some(at)) = (kind, at) else {
            return Err(ServiceError::invalid("kind", "is required").into());
        };
        let order = s.visible(&who, &id).await?;
        let furthest = (order.tracking_stage > 0).then_some(order.tracking_stage as u8);
        if order.state == OrderState::Shipped.as_str() {
            tracking::may_follow(kind, at, furthest, order.last_tracking_at)
                .map_err(|e| ServiceError::FailedPrecondition(format!("the tracking event {e}")))?;
        }
        let mut changes = vec![set(order::Column::LastTrackingAt, at)];
        if let Some(stage) = kind.stage() {
            changes.push(set(
                order::Column::TrackingStage,
                i32::from(stage).max(order.tracking_stage),
            ));
        }
        if kind == tracking::Kind::Delivered {
            changes.push(set(order::Column::DeliveredAt, at));
            s.change(
                &order,
                Action::Deliver,
                changes,
                "tracking",
                kind.as_str(),
                &detail,
                at,
                progressed(&order, "delivered", at),
                None,
            )
            .await?;
        } else {
            s.change(
                &order,
                Action::Track,
                changes,
                "tracking",
                kind.as_str(),
                &detail,
                at,
                None,
                None,
            )
            .await?;
        }
        ok(s.order_pb(&id).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn confirm_delivery(&self, request: Request<pb::ConfirmDeliveryRequest>) -> Rpc<pb::Order> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let id = order_id("name", &request.get_ref().name)?;
        let order = s.visible(&who, &id).await?;
        let at = now();
        s.change(
            &order,
            Action::Deliver,
            vec![set(order::Column::DeliveredAt, at)],
            "delivered",
            "",
            "confirmed by the customer",
            at,
            progressed(&order, "delivered", at),
            None,
        )
        .await?;
        ok(s.order_pb(&id).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn complete_order(&self, request: Request<pb::CompleteOrderRequest>) -> Rpc<pb::Order> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let id = order_id("name", &request.get_ref().name)?;
        let order = s.visible(&who, &id).await?;
        let at = now();
        s.change(
            &order,
            Action::Complete,
            vec![],
            "completed",
            "",
            "",
            at,
            progressed(&order, "completed", at),
            None,
        )
        .await?;
        ok(s.order_pb(&id).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn request_return(&self, request: Request<pb::RequestReturnRequest>) -> Rpc<pb::Return> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("orders.RequestReturn", &who.owner, &req.request_id, &req)?;
        let id = order_id("parent", &req.parent)?;
        let Some(r) = req.r#return.as_ref() else {
            return Err(ServiceError::invalid("return", "is required").into());
        };
        let mut v = Violations::new();
        let reason = v.text("return.reason", &r.reason, 500, false);
        if r.lines.is_empty() || r.lines.len() > MAX_LINES {
            v.add("return.lines", format!("1-{MAX_LINES} lines"));
        }
        let mut lines: Vec<Units> = Vec::new();
        for (i, l) in r.lines.iter().enumerate().take(MAX_LINES) {
            let code = v.field(&format!("return.lines[{i}].sku"), sku_code(&l.sku));
            if l.quantity <= 0 || l.quantity > MAX_UNITS {
                v.add(format!("return.lines[{i}].quantity"), format!("must be 1-{MAX_UNITS}"));
            }
            if let Some(code) = code {
                if lines.iter().any(|(c, _)| *c == code) {
                    v.add(format!("return.lines[{i}].sku"), "is listed twice");
                } else {
                    lines.push((code, l.quantity));
                }
            }
        }
        v.finish()?;
        let order = s.visible(&who, &id).await?;
        let response = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (order, lines, reason) = (order.clone(), lines.clone(), reason.clone());
            Box::pin(async move {
                let at = now();
                let from = OrderState::parse(&order.state)
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored order state")))?;
                let to = lifecycle::next(from, Action::RequestReturn).map_err(ServiceError::FailedPrecondition)?;
                let bought: Vec<returns::Bought> = store::lines_of(txn, &order.id)
                    .await?
                    .into_iter()
                    .map(|l| returns::Bought {
                        sku: l.sku_code,
                        quantity: l.quantity,
                        unit_minor: l.unit_minor,
                        returned: l.returned_quantity,
                    })
                    .collect();
                let refund = returns::check(&bought, &lines).map_err(|problems| {
                    ServiceError::FailedPrecondition(
                        problems.into_iter().map(|(_, why)| why).collect::<Vec<_>>().join("; "),
                    )
                })?;
                if !store::transition(txn, &order.id, &[from.as_str()], to.as_str(), vec![], at).await? {
                    return Err(ServiceError::FailedPrecondition(
                        "the order changed meanwhile; read it again".into(),
                    ));
                }
                for (sku, q) in &lines {
                    if !store::add_returned(txn, &order.id, sku, *q).await? {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "more of skus/{sku} would come back than was bought"
                        )));
                    }
                }
                let ret = store::order_return::Model {
                    id: store::new_id(),
                    order_id: order.id.clone(),
                    state: "requested".into(),
                    reason,
                    refund_minor: refund,
                    created_at: at,
                    updated_at: at,
                };
                let rows = lines
                    .iter()
                    .map(|(sku, q)| store::return_line::Model {
                        return_id: ret.id.clone(),
                        sku_code: sku.clone(),
                        quantity: *q,
                        damaged: false,
                    })
                    .collect();
                store::insert_return(txn, ret.clone(), rows).await?;
                store::timeline_row(&order.id, "return_requested", "", &ret.id, to.as_str(), at)
                    .insert(txn)
                    .await?;
                let view = store::find_return(txn, &order.id, &ret.id)
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("return vanished")))?;
                Ok(return_to_pb(&order, &view))
            })
        })
        .await?;
        ok(response)
    }

    #[tracing::instrument(skip_all)]
    async fn receive_return(&self, request: Request<pb::ReceiveReturnRequest>) -> Rpc<pb::Return> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let (id, return_id) = return_name("name", &req.name)?;
        let mut v = Violations::new();
        let damaged: Vec<String> = req
            .damaged_skus
            .iter()
            .enumerate()
            .filter_map(|(i, name)| v.field(&format!("damaged_skus[{i}]"), sku_code(name)))
            .collect();
        v.finish()?;
        let order = s.visible(&who, &id).await?;
        let not_found = || ServiceError::not_found("return", req.name.clone());
        let ret = store::find_return(&s.db, &id, &return_id)
            .await?
            .ok_or_else(not_found)?;
        if let Some(stray) = damaged.iter().find(|d| !ret.lines.iter().any(|l| &l.sku_code == *d)) {
            return Err(ServiceError::invalid("damaged_skus", format!("skus/{stray} is not in the return")).into());
        }
        if ret.ret.state != "requested" {
            if ret.ret.state == "received" || ret.ret.state == "refunded" {
                return ok(return_to_pb(&order, &ret));
            }
            return Err(ServiceError::FailedPrecondition(format!("the return is {}", ret.ret.state)).into());
        }
        lifecycle::next(
            OrderState::parse(&order.state).unwrap_or(OrderState::Cancelled),
            Action::ReceiveReturn,
        )
        .map_err(ServiceError::FailedPrecondition)?;
        // The goods are here: the return is received, and its stock work is written
        // with it; catalog gets the units right after (see `crate::stock`).
        let at = now();
        idempotency::transaction(&s.db, |txn| {
            let (id, return_id, damaged, from) = (id.clone(), return_id.clone(), damaged.clone(), order.state.clone());
            Box::pin(async move {
                if !store::return_transition(txn, &return_id, "requested", "received", at).await? {
                    return Err(ServiceError::FailedPrecondition("the return changed meanwhile".into()));
                }
                for sku in &damaged {
                    store::mark_damaged(txn, &return_id, sku).await?;
                }
                if !store::transition(txn, &id, &[from.as_str()], "return_received", vec![], at).await? {
                    return Err(ServiceError::FailedPrecondition("the order changed meanwhile".into()));
                }
                store::timeline_row(&id, "return_received", "", &return_id, "return_received", at)
                    .insert(txn)
                    .await?;
                store::return_work(&id, &return_id, at).insert(txn).await?;
                Ok(())
            })
        })
        .await?;
        s.follow_up(&store::return_work_id(&return_id)).await;
        let ret = store::find_return(&s.db, &id, &return_id)
            .await?
            .ok_or_else(not_found)?;
        ok(return_to_pb(&order, &ret))
    }

    #[tracing::instrument(skip_all)]
    async fn refund_return(&self, request: Request<pb::RefundReturnRequest>) -> Rpc<pb::Return> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let (id, return_id) = return_name("name", &request.get_ref().name)?;
        let order = s.visible(&who, &id).await?;
        let name = request.get_ref().name.clone();
        let ret = store::find_return(&s.db, &id, &return_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("return", name.clone()))?;
        if ret.ret.state == "refunded" {
            return ok(return_to_pb(&order, &ret));
        }
        if ret.ret.state != "received" {
            return Err(ServiceError::FailedPrecondition(format!(
                "the return is {}; goods must be received before the refund",
                ret.ret.state
            ))
            .into());
        }
        let at = now();
        let lines = store::lines_of(&s.db, &id).await?;
        let event = ev::OrderRefunded {
            order_id: id.clone(),
            return_id: return_id.clone(),
            parties: Some(parties(&order)),
            lines: ret
                .lines
                .iter()
                .map(|l| ev::OrderedUnits {
                    sku_code: l.sku_code.clone(),
                    quantity: l.quantity,
                    unit_price: money(
                        &order.currency,
                        lines
                            .iter()
                            .find(|b| b.sku_code == l.sku_code)
                            .map(|b| b.unit_minor)
                            .unwrap_or(0),
                    ),
                })
                .collect(),
            amount: money(&order.currency, ret.ret.refund_minor),
            refund_time: Some(timestamp(at)),
        };
        idempotency::transaction(&s.db, |txn| {
            let (id, return_id, from, amount, event) = (
                id.clone(),
                return_id.clone(),
                order.state.clone(),
                ret.ret.refund_minor,
                event.encode_to_vec(),
            );
            Box::pin(async move {
                if !store::return_transition(txn, &return_id, "received", "refunded", at).await? {
                    return Err(ServiceError::FailedPrecondition("the return changed meanwhile".into()));
                }
                if !store::add_refund(txn, &id, amount).await? {
                    return Err(ServiceError::FailedPrecondition(
                        "refunds would exceed the payment".into(),
                    ));
                }
                if !store::transition(txn, &id, &[from.as_str()], "refunded", vec![], at).await? {
                    return Err(ServiceError::FailedPrecondition("the order changed meanwhile".into()));
                }
                store::timeline_row(&id, "refunded", "", &return_id, "refunded", at)
                    .insert(txn)
                    .await?;
                publish_raw(txn, "retail.events.v1.OrderRefunded", &id, event).await?;
                Ok(())
            })
        })
        .await?;
        s.log.committed();
        let ret = store::find_return(&s.db, &id, &return_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("return", name))?;
        ok(return_to_pb(&order, &ret))
    }

    #[tracing::instrument(skip_all)]
    async fn rate_order(&self, request: Request<pb::RateOrderRequest>) -> Rpc<pb::Rating> {
        let s = &self.state;
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let id = order_id("parent", &req.parent)?;
        let r = req.rating.unwrap_or_default();
        let mut v = Violations::new();
        if !(1..=5).contains(&r.satisfaction) {
            v.add("rating.satisfaction", "must be 1-5");
        }
        if !(0..=10).contains(&r.recommend) {
            v.add("rating.recommend", "must be 0-10");
        }
        let comment = v.text("rating.comment", &r.comment.replace(['\n', '\r'], " "), 2000, false);
        v.finish()?;
        let order = s.visible(&who, &id).await?;
        lifecycle::next(
            OrderState::parse(&order.state).unwrap_or(OrderState::Cancelled),
            Action::Rate,
        )
        .map_err(ServiceError::FailedPrecondition)?;
        let at = now();
        let rating = store::rating::Model {
            order_id: id.clone(),
            satisfaction: r.satisfaction,
            recommend: r.recommend,
            comment,
            created_at: at,
        };
        let event = ev::OrderRated {
            order_id: id.clone(),
            parties: Some(parties(&order)),
            satisfaction: r.satisfaction,
            recommend: r.recommend,
        };
        idempotency::transaction(&s.db, |txn| {
            let (rating, state, event) = (rating.clone(), order.state.clone(), event.encode_to_vec());
            Box::pin(async move {
                store::insert_rating(txn, rating.clone()).await?;
                let detail = format!("satisfaction {}, recommend {}", rating.satisfaction, rating.recommend);
                store::timeline_row(&rating.order_id, "rated", "", &detail, &state, rating.created_at)
                    .insert(txn)
                    .await?;
                publish_raw(txn, "retail.events.v1.OrderRated", &rating.order_id, event).await?;
                Ok(())
            })
        })
        .await?;
        s.log.committed();
        ok(pb::Rating {
            name: format!("orders/{id}/rating"),
            satisfaction: rating.satisfaction,
            recommend: rating.recommend,
            comment: rating.comment,
            create_time: Some(timestamp(at)),
        })
    }

    async fn list_order_events(
        &self,
        request: Request<pb::ListOrderEventsRequest>,
    ) -> Rpc<pb::ListOrderEventsResponse> {
        let who = caller(&request, READ)?;
        let id = order_id("parent", &request.get_ref().parent)?;
        self.state.visible(&who, &id).await?;
        let events = store::events_of(&self.state.db, &id).await?;
        ok(pb::ListOrderEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::OrderEvent {
                    kind: e.kind,
                    tracking_kind: pb_tracking(&e.tracking_kind),
                    detail: e.detail,
                    event_time: Some(timestamp(e.occurred_at)),
                    state: pb_state(&e.state),
                })
                .collect(),
        })
    }
}

/// The stored response of an earlier request with this key, if any.
/// `order` if the caller may see it: a partner sees only its own partner's orders,
/// any other is NOT_FOUND like a missing one.
fn visible_to(caller: &Caller, id: &str, order: Option<order::Model>) -> ServiceResult<order::Model> {
    let not_found = || ServiceError::not_found("order", format!("orders/{id}"));
    let order = order.ok_or_else(not_found)?;
    match &caller.partner {
        Some(partner) if *partner != order.partner_id => Err(not_found()),
        _ => Ok(order),
    }
}

/// The `OrderProgressed` event of `order` reaching `state` at `at`, for
/// [`State::change`] to publish.
fn progressed(order: &order::Model, state: &str, at: DateTime<Utc>) -> Option<(&'static str, Vec<u8>)> {
    let event = ev::OrderProgressed {
        order_id: order.id.clone(),
        parties: Some(parties(order)),
        state: state.into(),
        event_time: Some(timestamp(at)),
    };
    Some(("retail.events.v1.OrderProgressed", event.encode_to_vec()))
}

//! `InventoryService`: warehouses, stock changes and the audit trail, reservations
//! and returns.

use std::sync::Arc;

use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::catalog as pb;
use retail_proto::catalog::inventory_service_server::InventoryService;
use tonic::Request;

use super::convert::{level_to_pb, movement_to_pb, reservation_to_pb, sku_stock_to_pb, warehouse_to_pb};
use super::parse::{lines, quantity, sku_name};
use super::{READ, Rpc, authorised, ok};
use crate::app::{App, StockChange};
use crate::domain::codes::{OrderId, SkuCode, WarehouseCode};
use crate::domain::stock::MovementKind;
use crate::settings::InventorySection;
use crate::store::inventory::Delta;

const WRITE: &str = "inventory.write";
const RESERVE: &str = "inventory.reserve";

/// Units per change, at most.
const MAX_UNITS: i64 = 1_000_000;
/// Units per reserved line, at most.
const MAX_LINE_UNITS: i64 = 10_000;
/// Lines per reservation, at most.
const MAX_LINES: usize = 200;

#[derive(Debug, Clone)]
pub(crate) struct InventoryApi {
    app: Arc<App>,
}

impl InventoryApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn reservation_name(field: &str, name: &str) -> ServiceResult<OrderId> {
    OrderId::from_reservation_name(name).map_err(|e| ServiceError::invalid(field, e))
}

fn bucket_delta(bucket: i32, delta: i64) -> Result<Delta, &'static str> {
    match pb::StockBucket::try_from(bucket) {
        Ok(pb::StockBucket::Sellable) => Ok(Delta {
            sellable: delta,
            ..Delta::default()
        }),
        Ok(pb::StockBucket::Unsellable) => Ok(Delta {
            unsellable: delta,
            ..Delta::default()
        }),
        _ => Err("must be sellable or unsellable"),
    }
}

/// The units of `q` moved out of the bucket `from` into the other one.
fn move_delta(from: i32, q: i64) -> Result<Delta, &'static str> {
    match pb::StockBucket::try_from(from) {
        Ok(pb::StockBucket::Sellable) => Ok(Delta {
            sellable: -q,
            reserved: 0,
            unsellable: q,
        }),
        Ok(pb::StockBucket::Unsellable) => Ok(Delta {
            sellable: q,
            reserved: 0,
            unsellable: -q,
        }),
        _ => Err("must be sellable or unsellable"),
    }
}

/// The SKU and warehouse a stock change names, with the violations collected so far.
fn sku_and_warehouse(v: &mut Violations, sku: &str, warehouse: &str) -> (Option<SkuCode>, Option<WarehouseCode>) {
    (
        v.field("sku", SkuCode::from_resource_name(sku)),
        v.field("warehouse", WarehouseCode::from_resource_name(warehouse)),
    )
}

fn stock_change(
    v: Violations,
    (sku, warehouse): (Option<SkuCode>, Option<WarehouseCode>),
    kind: MovementKind,
    delta: Option<Delta>,
    reason: String,
) -> ServiceResult<StockChange> {
    v.finish()?;
    let (Some(sku), Some(warehouse), Some(delta)) = (sku, warehouse, delta) else {
        return Err(ServiceError::invalid("sku", "is required"));
    };
    Ok(StockChange {
        sku,
        warehouse,
        kind,
        delta,
        reason,
    })
}

/// A reservation's order, lines and time to live.
type Reservation = (OrderId, Vec<(SkuCode, i64)>, chrono::Duration);

fn reservation(req: &pb::ReserveStockRequest, inv: &InventorySection) -> ServiceResult<Reservation> {
    let mut v = Violations::new();
    let order = v.field("order_id", OrderId::parse(&req.order_id));
    let lines = lines(
        &mut v,
        "lines",
        req.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
        MAX_LINES,
        MAX_LINE_UNITS,
    );
    let ttl_secs = match &req.ttl {
        None => Some(inv.reservation_ttl_secs as i64),
        Some(d)
            if d.seconds > 0
                && (0..1_000_000_000).contains(&d.nanos)
                && d.seconds as u64 <= inv.max_reservation_ttl_secs =>
        {
            Some(d.seconds)
        }
        Some(_) => {
            v.add("ttl", format!("must be 1-{} seconds", inv.max_reservation_ttl_secs));
            None
        }
    };
    v.finish()?;
    let (Some(order), Some(ttl_secs)) = (order, ttl_secs) else {
        return Err(ServiceError::invalid("order_id", "is required"));
    };
    Ok((order, lines, chrono::Duration::seconds(ttl_secs)))
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    #[tracing::instrument(skip_all)]
    async fn create_warehouse(&self, request: Request<pb::CreateWarehouseRequest>) -> Rpc<pb::Warehouse> {
        authorised(&request, WRITE)?;
        let Some(w) = request.into_inner().warehouse else {
            return Err(ServiceError::invalid("warehouse", "is required").into());
        };
        let mut v = Violations::new();
        let code = v.field("warehouse.code", WarehouseCode::parse(&w.code));
        let display_name = v.text("warehouse.display_name", &w.display_name, 200, true);
        if !(0..=1000).contains(&w.priority) {
            v.add("warehouse.priority", "must be 0-1000");
        }
        v.finish()?;
        let Some(code) = code else {
            return Err(ServiceError::invalid("warehouse.code", "is required").into());
        };
        let model = self.app.create_warehouse(&code, display_name, w.priority).await?;
        ok(warehouse_to_pb(&model))
    }

    async fn list_warehouses(&self, request: Request<pb::ListWarehousesRequest>) -> Rpc<pb::ListWarehousesResponse> {
        authorised(&request, READ)?;
        let rows = self.app.warehouses().await?;
        ok(pb::ListWarehousesResponse {
            warehouses: rows.iter().map(warehouse_to_pb).collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn receive_stock(&self, request: Request<pb::ReceiveStockRequest>) -> Rpc<pb::StockLevel> {
        let actor = authorised(&request, WRITE)?.subject.clone();
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.ReceiveStock", &actor, &req.request_id, &req)?;
        let mut v = Violations::new();
        let at = sku_and_warehouse(&mut v, &req.sku, &req.warehouse);
        let q = quantity(&mut v, "quantity", req.quantity, MAX_UNITS);
        let reference = v.text("reference", &req.reference, 200, false);
        let delta = Delta {
            sellable: q,
            ..Delta::default()
        };
        let change = stock_change(v, at, MovementKind::Receive, Some(delta), reference)?;
        ok(self.app.change_stock(key.as_ref(), change, &actor, level_to_pb).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn adjust_stock(&self, request: Request<pb::AdjustStockRequest>) -> Rpc<pb::StockLevel> {
        let actor = authorised(&request, WRITE)?.subject.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let at = sku_and_warehouse(&mut v, &req.sku, &req.warehouse);
        // Compared without negating: `i64::MIN` has no positive counterpart.
        if req.delta == 0 || !(-MAX_UNITS..=MAX_UNITS).contains(&req.delta) {
            v.add("delta", format!("must be non-zero and at most {MAX_UNITS} either way"));
        }
        let delta = v.field("bucket", bucket_delta(req.bucket, req.delta));
        let reason = v.text("reason", &req.reason, 200, true);
        let change = stock_change(v, at, MovementKind::Adjust, delta, reason)?;
        ok(self.app.change_stock(None, change, &actor, level_to_pb).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn move_stock(&self, request: Request<pb::MoveStockRequest>) -> Rpc<pb::StockLevel> {
        let actor = authorised(&request, WRITE)?.subject.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let at = sku_and_warehouse(&mut v, &req.sku, &req.warehouse);
        let q = quantity(&mut v, "quantity", req.quantity, MAX_UNITS);
        let delta = v.field("from_bucket", move_delta(req.from_bucket, q));
        let reason = v.text("reason", &req.reason, 200, true);
        let change = stock_change(v, at, MovementKind::Move, delta, reason)?;
        ok(self.app.change_stock(None, change, &actor, level_to_pb).await?)
    }

    async fn get_stock(&self, request: Request<pb::GetStockRequest>) -> Rpc<pb::SkuStock> {
        authorised(&request, READ)?;
        let sku = sku_name("sku", &request.get_ref().sku)?;
        let rows = self.app.stock(&sku).await?;
        ok(sku_stock_to_pb(sku.resource_name(), &rows))
    }

    async fn list_stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Rpc<pb::ListStockMovementsResponse> {
        // The trail names orders (of every partner) and the staff who made each change,
        // and catalog cannot tell which orders are a partner's own.
        if authorised(&request, READ)?.partner_scope().is_some() {
            return Err(ServiceError::PermissionDenied("the stock audit trail is not open to partners".into()).into());
        }
        let req = request.into_inner();
        let sku = sku_name("sku", &req.sku)?;
        let page = Page::parse(req.page_size, &req.page_token, sku.as_str())?;
        let (rows, next_page_token) = self.app.movements(&sku, &page).await?;
        ok(pb::ListStockMovementsResponse {
            movements: rows.into_iter().map(movement_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn reserve_stock(&self, request: Request<pb::ReserveStockRequest>) -> Rpc<pb::Reservation> {
        let actor = authorised(&request, RESERVE)?.subject.clone();
        let (order, lines, ttl) = reservation(request.get_ref(), &self.app.settings.inventory)?;
        ok(reservation_to_pb(&self.app.reserve(&order, &lines, ttl, &actor).await?))
    }

    async fn get_reservation(&self, request: Request<pb::GetReservationRequest>) -> Rpc<pb::Reservation> {
        let partner = authorised(&request, READ)?.partner_scope().is_some();
        let order = reservation_name("name", &request.get_ref().name)?;
        // A reservation does not record whose order it is, so a partner cannot be told
        // its own from another's: to partners every reservation is NOT_FOUND, worded as
        // for one that does not exist.
        if partner {
            return Err(ServiceError::not_found("reservation", order.reservation_name()).into());
        }
        ok(reservation_to_pb(&self.app.reservation(&order).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn commit_reservation(&self, request: Request<pb::CommitReservationRequest>) -> Rpc<pb::Reservation> {
        let actor = authorised(&request, RESERVE)?.subject.clone();
        let order = reservation_name("name", &request.get_ref().name)?;
        ok(reservation_to_pb(&self.app.commit(&order, &actor).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn release_reservation(&self, request: Request<pb::ReleaseReservationRequest>) -> Rpc<pb::Reservation> {
        let actor = authorised(&request, RESERVE)?.subject.clone();
        let order = reservation_name("name", &request.get_ref().name)?;
        ok(reservation_to_pb(&self.app.release(&order, &actor).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn return_stock(&self, request: Request<pb::ReturnStockRequest>) -> Rpc<pb::Reservation> {
        let actor = authorised(&request, RESERVE)?.subject.clone();
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.ReturnStock", &actor, &req.request_id, &req)?;
        let mut v = Violations::new();
        let order = v.field("name", OrderId::from_reservation_name(&req.name));
        let lines = lines(
            &mut v,
            "lines",
            req.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
            MAX_LINES,
            MAX_LINE_UNITS,
        );
        v.finish()?;
        let Some(order) = order else {
            return Err(ServiceError::invalid("name", "is required").into());
        };
        ok(self
            .app
            .return_stock(key.as_ref(), &order, &lines, req.damaged, &actor, reservation_to_pb)
            .await?)
    }
}

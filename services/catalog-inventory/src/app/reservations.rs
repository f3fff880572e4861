//! Reservations: stock held for an order, then committed (shipped out), released, or
//! expired by the sweeper when its TTL runs out; and goods that come back.
//!
//! A reservation is planned from a read of the stock ([`crate::domain::stock`]) and
//! applied in one transaction: the order id is claimed first (a racing replay waits
//! on it and then replays), then each allocation moves `sellable -> reserved` with a
//! conditional update. If another reservation took the stock since the read, the
//! transaction rolls back whole and the plan is made again; a line that cannot be
//! covered fails the reservation with FAILED_PRECONDITION and nothing is held.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use retail_kit::convert::now;
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use sea_orm::{DatabaseTransaction, QueryTrait};

use super::{App, state_of};
use crate::domain::codes::{OrderId, SkuCode, WarehouseCode};
use crate::domain::stock::{self as plan, Available, MovementKind, ReservationState};
use crate::events;
use crate::store::inventory::{self as db, Delta, Movement, ReservationView};
use crate::store::{allocation, reservation};

/// How often a reservation is planned again when others took the stock first.
const PLAN_ATTEMPTS: usize = 20;
/// Reservations the sweeper releases per pass, at most.
const SWEEP_BATCH: u64 = 500;
/// The actor of the movements of expired reservations: no principal asked for them.
const SWEEPER: &str = "reservation-sweeper";

/// Reservations remembered for their commit, at most.
const HELD_CAPACITY: u64 = 20_000;
/// How long a reservation is remembered for its commit.
const HELD_FOR: Duration = Duration::from_secs(15 * 60);

/// The reservations this process made, by order id, so that committing one (most
/// often moments after) needs no read. A reservation's allocations never change and
/// its order id is never reused, and the commit's guarded write checks that it is
/// still active and unexpired; so a remembered view is either right or refused, and
/// a miss (another replica made it, or it was forgotten) reads it.
#[derive(Debug, Clone)]
pub struct HeldReservations(moka::sync::Cache<String, Arc<ReservationView>>);

impl HeldReservations {
    fn remember(&self, view: ReservationView) {
        self.0.insert(view.reservation.order_id.clone(), Arc::new(view));
    }

    /// The remembered reservation of `order`, forgotten as it is taken.
    fn take(&self, order: &str) -> Option<ReservationView> {
        self.0.remove(order).map(Arc::unwrap_or_clone)
    }

    /// Forgets the reservation of `order` (its commit will read it).
    pub fn forget(&self, order: &str) {
        self.0.invalidate(order);
    }
}

impl Default for HeldReservations {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(HELD_CAPACITY)
                .time_to_live(HELD_FOR)
                .build(),
        )
    }
}

/// The marker error that makes a stale plan roll back its transaction.
const STALE_PLAN: &str = "stale reservation plan";

fn not_found(order: &OrderId) -> ServiceError {
    ServiceError::not_found("reservation", order.reservation_name())
}

impl App {
    /// Reserves `lines` for `order`, or returns the reservation made before for it;
    /// `actor` is audited on the movements of a new one.
    pub(crate) async fn reserve(
        &self,
        order: &OrderId,
        lines: &[(SkuCode, i64)],
        ttl: chrono::Duration,
        actor: &str,
    ) -> ServiceResult<ReservationView> {
        let mut canonical: Vec<(String, i64)> = lines.iter().map(|(c, q)| (c.as_str().to_owned(), *q)).collect();
        canonical.sort();
        let fingerprint = serde_json::to_vec(&canonical).unwrap_or_default();
        let asked: Vec<(String, i64)> = lines.iter().map(|(c, q)| (c.as_str().to_owned(), *q)).collect();
        let lines_json = serde_json::to_string(&asked).unwrap_or_else(|_| "[]".into());
        for attempt in 0..PLAN_ATTEMPTS {
            // A repeated request is told apart by the reservation's key when it is
            // inserted (below), or, if its stock is gone meanwhile, before refusing:
            // the first attempt of a new order costs no lookup.
            let allocations = match self.plan(lines).await {
                Ok(allocations) => allocations,
                Err(err) => {
                    if let Some(existing) = db::find_reservation(&self.db, order.as_str()).await? {
                        return replay(existing, &fingerprint);
                    }
                    return Err(err);
                }
            };
            let now = now();
            let model = reservation::Model {
                order_id: order.as_str().to_owned(),
                fingerprint: fingerprint.clone(),
                lines_json: lines_json.clone(),
                state: ReservationState::Active.as_str().to_owned(),
                expires_at: now + ttl,
                created_at: now,
                updated_at: now,
            };
            match apply_plan(&self.db, order, model, allocations, actor).await {
                Ok(view) => {
                    self.log.committed();
                    self.held.remember(view.clone());
                    return Ok(view);
                }
                Err(ServiceError::Aborted(msg)) if msg == STALE_PLAN => continue,
                // A twin claimed the order id first: replay it.
                Err(ServiceError::AlreadyExists(_)) => {
                    if let Some(existing) = db::find_reservation(&self.db, order.as_str()).await? {
                        return replay(existing, &fingerprint);
                    }
                }
                // Contention: plan again from fresh stock.
                Err(ServiceError::Aborted(_)) => {
                    tokio::time::sleep(Duration::from_millis(2 * attempt as u64 + 1)).await;
                    continue;
                }
                Err(other) => return Err(other),
            }
        }
        Err(ServiceError::Aborted(
            "stock kept changing while reserving; retry".into(),
        ))
    }

    /// Plans every line from the current stock. A line that cannot be covered is
    /// NOT_FOUND for an unknown SKU, else FAILED_PRECONDITION.
    async fn plan(&self, lines: &[(SkuCode, i64)]) -> ServiceResult<Vec<plan::Allocation>> {
        let codes: Vec<String> = lines.iter().map(|(c, _)| c.as_str().to_owned()).collect();
        let rows = db::sellable_rows(&self.db, &codes).await?;
        let mut out = Vec::new();
        for (code, quantity) in lines {
            let available: Vec<Available> = rows
                .iter()
                .filter(|r| r.sku_code == code.as_str())
                .filter_map(|r| {
                    Some(Available {
                        warehouse: WarehouseCode::parse(&r.warehouse_code).ok()?,
                        priority: r.priority,
                        sellable: r.sellable,
                    })
                })
                .collect();
            match plan::allocate_line(code, *quantity, &available) {
                Ok(allocs) => out.extend(allocs),
                Err(short) => {
                    self.sku_must_exist(code).await?;
                    return Err(ServiceError::FailedPrecondition(format!(
                        "not enough sellable stock of {}: {} requested, {} available",
                        short.sku.resource_name(),
                        short.requested,
                        short.available
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The reservation of an order.
    pub(crate) async fn reservation(&self, order: &OrderId) -> ServiceResult<ReservationView> {
        db::find_reservation(&self.db, order.as_str())
            .await?
            .ok_or_else(|| not_found(order))
    }

    /// Ships a reservation's units out: its state change, the stock moves, their
    /// audit rows and `ReservationCommitted` in one guarded write (allocations never
    /// change while a reservation is active, so they come from before it: remembered
    /// from the reserve, else read).
    pub(crate) async fn commit(&self, order: &OrderId, actor: &str) -> ServiceResult<ReservationView> {
        let view = match self.held.take(order.as_str()) {
            Some(held) => held,
            None => self.reservation(order).await?,
        };
        let now = now();
        let current = if state_of(&view.reservation)? == ReservationState::Active {
            let shipped = |a: &allocation::Model| Delta {
                reserved: -a.quantity,
                ..Delta::default()
            };
            let out = view
                .allocations
                .iter()
                .map(|a| (a.sku_code.as_str(), a.warehouse_code.as_str(), shipped(a)));
            let writes = with_stock_moves(
                GuardedWrite::new(
                    db::transition_update(
                        order.as_str(),
                        ReservationState::Active,
                        ReservationState::Committed,
                        Some(now),
                        now,
                    )
                    .into_query(),
                ),
                out,
                now,
            );
            let audit = view
                .allocations
                .iter()
                .map(|a| db::movement_row(movement(a, MovementKind::Commit, shipped(a), order, actor), now));
            let writes = writes
                .insert(audit)?
                .insert([events::reservation_committed(order, &view.allocations).outbox_row(order.as_str())])?;
            if idempotency::apply(&self.db, &writes).await? {
                self.log.committed();
                return Ok(ReservationView {
                    reservation: reservation::Model {
                        state: ReservationState::Committed.as_str().into(),
                        updated_at: now,
                        ..view.reservation
                    },
                    allocations: view.allocations,
                });
            }
            // The state or expiry changed since the read above.
            self.reservation(order).await?
        } else {
            view
        };
        // Not committed by this call: already committed (by an earlier or racing
        // call: that is this call's outcome too), or it cannot be.
        match state_of(&current.reservation)? {
            ReservationState::Committed => Ok(current),
            ReservationState::Active => Err(ServiceError::FailedPrecondition(
                "reservation expired and cannot be committed".into(),
            )),
            other => Err(ServiceError::FailedPrecondition(format!(
                "reservation is {} and cannot be committed",
                other.as_str()
            ))),
        }
    }

    /// Gives an active reservation's units back to sellable, audited: on request
    /// (`Released`) or by the sweeper (`Expired`). Returns false when it was no longer
    /// active.
    async fn give_back(
        txn: &DatabaseTransaction,
        view: &ReservationView,
        to: ReservationState,
        now: DateTime<Utc>,
        actor: &str,
    ) -> ServiceResult<bool> {
        let order = OrderId::from_stored(view.reservation.order_id.clone());
        if !db::transition(txn, order.as_str(), ReservationState::Active, to, None, now).await? {
            return Ok(false);
        }
        let kind = if to == ReservationState::Expired {
            MovementKind::Expire
        } else {
            MovementKind::Release
        };
        for a in &view.allocations {
            let back = Delta {
                sellable: a.quantity,
                reserved: -a.quantity,
                unsellable: 0,
            };
            move_reserved(txn, a, back, now).await?;
            db::record_movement(txn, movement(a, kind, back, &order, actor), now).await?;
        }
        events::reservation_ended(&order, &view.allocations, to)
            .publish(txn, order.as_str())
            .await?;
        Ok(true)
    }

    /// Releases a reservation before commit.
    pub(crate) async fn release(&self, order: &OrderId, actor: &str) -> ServiceResult<ReservationView> {
        self.held.forget(order.as_str());
        let view = idempotency::transaction(&self.db, |txn| {
            let (order, actor) = (order.clone(), actor.to_owned());
            Box::pin(async move {
                let view = db::find_reservation(txn, order.as_str())
                    .await?
                    .ok_or_else(|| not_found(&order))?;
                if state_of(&view.reservation)? == ReservationState::Active {
                    // The transition is guarded: a commit or expiry that won the race
                    // after the read above leaves it undone, and the state read again
                    // below says which.
                    Self::give_back(txn, &view, ReservationState::Released, now(), &actor).await?;
                }
                let view = db::find_reservation(txn, order.as_str())
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("reservation vanished")))?;
                match state_of(&view.reservation)? {
                    ReservationState::Released | ReservationState::Expired => Ok(view),
                    ReservationState::Committed => Err(ServiceError::FailedPrecondition(
                        "reservation is committed; take goods back with ReturnStock".into(),
                    )),
                    ReservationState::Active => Err(ServiceError::Aborted(
                        "the reservation changed while it was released; retry".into(),
                    )),
                }
            })
        })
        .await?;
        self.log.committed();
        Ok(view)
    }

    /// Releases every active reservation whose TTL ran out at `as_of`; returns how
    /// many. The sweeper calls it periodically; tests call it with their own time.
    pub async fn expire_reservations(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let mut expired = 0;
        loop {
            let due = db::overdue(&self.db, as_of, SWEEP_BATCH).await?;
            let batch = due.len() as u64;
            for order in due {
                let done = idempotency::transaction(&self.db, |txn| {
                    let order = order.clone();
                    Box::pin(async move {
                        match db::find_reservation(txn, &order).await? {
                            Some(view) if state_of(&view.reservation)? == ReservationState::Active => {
                                Self::give_back(txn, &view, ReservationState::Expired, as_of, SWEEPER).await
                            }
                            _ => Ok(false),
                        }
                    })
                })
                .await?;
                if done {
                    expired += 1;
                }
            }
            if batch < SWEEP_BATCH {
                break;
            }
        }
        if expired > 0 {
            tracing::info!(expired, "released expired reservations");
            self.log.committed();
        }
        Ok(expired)
    }

    /// Runs the sweeper every `inventory.sweep_every_secs` until the task is aborted.
    pub(crate) fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        let every = Duration::from_secs(self.settings.inventory.sweep_every_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(err) = app.expire_reservations(now()).await {
                    tracing::warn!(error = %err, "reservation sweep failed");
                }
            }
        })
    }

    /// Takes shipped units of a committed reservation back into stock: sellable, or
    /// unsellable when `damaged`, into the warehouses they left. Idempotent by `key`:
    /// a replay answers what the first request answered, as `render` made it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn return_stock<R>(
        &self,
        key: Option<&IdempotencyKey>,
        order: &OrderId,
        lines: &[(SkuCode, i64)],
        damaged: bool,
        actor: &str,
        render: fn(&ReservationView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        self.reservation(order).await?;
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (order, lines, actor) = (order.clone(), lines.to_vec(), actor.to_owned());
            Box::pin(async move {
                let now = now();
                let view = db::find_reservation(txn, order.as_str())
                    .await?
                    .ok_or_else(|| not_found(&order))?;
                let state = state_of(&view.reservation)?;
                if state != ReservationState::Committed {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "reservation is {}; only shipped (committed) goods can come back",
                        state.as_str()
                    )));
                }
                for (code, q) in &lines {
                    let shipped: Vec<(WarehouseCode, i64, i64)> = view
                        .allocations
                        .iter()
                        .filter(|a| a.sku_code == code.as_str())
                        .filter_map(|a| {
                            Some((
                                WarehouseCode::parse(&a.warehouse_code).ok()?,
                                a.quantity,
                                a.returned_quantity,
                            ))
                        })
                        .collect();
                    if shipped.is_empty() {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "{} was not part of this order",
                            code.resource_name()
                        )));
                    }
                    let Some(spread) = plan::spread_return(*q, &shipped) else {
                        let open: i64 = shipped.iter().map(|(_, q, r)| q - r).sum();
                        return Err(ServiceError::FailedPrecondition(format!(
                            "{q} units of {} cannot come back: {open} shipped and not yet returned",
                            code.resource_name()
                        )));
                    };
                    for (wh, units) in spread {
                        if !db::add_returned(txn, order.as_str(), code.as_str(), wh.as_str(), units).await? {
                            return Err(ServiceError::FailedPrecondition(
                                "more units would come back than shipped".into(),
                            ));
                        }
                        let delta = if damaged {
                            Delta {
                                unsellable: units,
                                ..Delta::default()
                            }
                        } else {
                            Delta {
                                sellable: units,
                                ..Delta::default()
                            }
                        };
                        db::ensure_stock_row(txn, code.as_str(), wh.as_str(), now).await?;
                        if !db::change_stock(txn, code.as_str(), wh.as_str(), delta, now).await? {
                            return Err(ServiceError::internal(anyhow::anyhow!("returned stock refused")));
                        }
                        db::record_movement(
                            txn,
                            Movement {
                                sku_code: code.as_str(),
                                warehouse_code: wh.as_str(),
                                kind: MovementKind::Return,
                                delta,
                                reason: order.as_str(),
                                actor: &actor,
                            },
                            now,
                        )
                        .await?;
                        let row = db::find_stock(txn, code.as_str(), wh.as_str())
                            .await?
                            .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("stock row vanished")))?;
                        events::stock_changed(MovementKind::Return, &row)
                            .publish(txn, &row.sku_code)
                            .await?;
                    }
                }
                let view = db::find_reservation(txn, order.as_str())
                    .await?
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("reservation vanished")))?;
                Ok(render(&view))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }
}

fn replay(existing: ReservationView, fingerprint: &[u8]) -> ServiceResult<ReservationView> {
    if existing.reservation.fingerprint != fingerprint {
        return Err(ServiceError::AlreadyExists(format!(
            "reservations/{} already holds other lines",
            existing.reservation.order_id
        )));
    }
    Ok(existing)
}

/// Holds the planned units and records the reservation, its allocations, their audit
/// rows and `ReservationCreated` in one guarded write. A plan that stock changed under
/// (a part would turn negative) is STALE_PLAN; a reservation that exists already is
/// ALREADY_EXISTS.
async fn apply_plan(
    conn: &sea_orm::DatabaseConnection,
    order: &OrderId,
    model: reservation::Model,
    allocations: Vec<plan::Allocation>,
    actor: &str,
) -> ServiceResult<ReservationView> {
    let now = model.created_at;
    let rows: Vec<allocation::Model> = allocations
        .iter()
        .enumerate()
        .map(|(i, a)| allocation::Model {
            order_id: order.as_str().to_owned(),
            sku_code: a.sku.as_str().to_owned(),
            warehouse_code: a.warehouse.as_str().to_owned(),
            ordinal: i as i32,
            quantity: a.quantity,
            returned_quantity: 0,
        })
        .collect();
    let event = events::reservation_created(order, &rows, model.expires_at);
    let held = |quantity: i64| Delta {
        sellable: -quantity,
        reserved: quantity,
        unsellable: 0,
    };
    let holds = allocations
        .iter()
        .map(|a| (a.sku.as_str(), a.warehouse.as_str(), held(a.quantity)));
    let writes = with_stock_moves(
        GuardedWrite::inserting(reservation::ActiveModel::from(model.clone()))?,
        holds,
        now,
    )
    .insert(rows.iter().cloned().map(allocation::ActiveModel::from))?
    .insert(
        rows.iter()
            .map(|a| db::movement_row(movement(a, MovementKind::Reserve, held(a.quantity), order, actor), now)),
    )?
    .insert([event.outbox_row(order.as_str())])?;
    // A twin that inserted the reservation first makes this a unique violation
    // (ALREADY_EXISTS), so stock is never held twice for one order.
    match idempotency::apply(conn, &writes).await {
        Ok(true) => Ok(ReservationView {
            reservation: model,
            allocations: rows,
        }),
        Ok(false) => Err(ServiceError::internal(anyhow::anyhow!(
            "inserting reservation {order} matched nothing"
        ))),
        Err(ServiceError::Internal(err))
            if err
                .downcast_ref::<sea_orm::DbErr>()
                .is_some_and(retail_kit::db::is_check_violation) =>
        {
            Err(ServiceError::Aborted(STALE_PLAN.into()))
        }
        Err(err) => Err(err),
    }
}

/// `writes` with stock moves, `(sku, warehouse, delta)`, in one order of stock rows
/// for every reservation and commit, so that concurrent ones lock rows alike.
fn with_stock_moves<'a>(
    mut writes: GuardedWrite,
    moves: impl IntoIterator<Item = (&'a str, &'a str, Delta)>,
    now: DateTime<Utc>,
) -> GuardedWrite {
    let mut moves: Vec<_> = moves.into_iter().collect();
    moves.sort_by_key(|(sku, warehouse, _)| (*sku, *warehouse));
    for (sku, warehouse, delta) in moves {
        writes = writes.update(db::stock_update(sku, warehouse, delta, now).into_query());
    }
    writes
}

/// The audit row of a change of an allocation's units, with the order as its reason.
fn movement<'a>(
    a: &'a allocation::Model,
    kind: MovementKind,
    delta: Delta,
    order: &'a OrderId,
    actor: &'a str,
) -> Movement<'a> {
    Movement {
        sku_code: &a.sku_code,
        warehouse_code: &a.warehouse_code,
        kind,
        delta,
        reason: order.as_str(),
        actor,
    }
}

/// Moves an allocation's reserved units; the reservation's state change in the same
/// transaction guarantees they are still reserved, so a refusal is a broken invariant.
async fn move_reserved(
    txn: &DatabaseTransaction,
    a: &allocation::Model,
    delta: Delta,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    if db::change_stock(txn, &a.sku_code, &a.warehouse_code, delta, now).await? {
        Ok(())
    } else {
        Err(ServiceError::internal(anyhow::anyhow!(
            "reserved stock of {} in {} is lower than its reservations",
            a.sku_code,
            a.warehouse_code
        )))
    }
}

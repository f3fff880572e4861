//! Stock and reservations: the stock formula, no oversell, all-or-nothing multi-line
//! reservations, idempotent replays, TTL expiry, commits, releases and returns.

use std::collections::HashMap;

use chrono::Utc;
use futures::future::join_all;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use retail_proto::catalog::{self as pb};
use tonic::Code;

use crate::helpers::*;

fn name(order: &str) -> String {
    format!("reservations/{order}")
}

#[tokio::test]
async fn of_200_concurrent_reservations_of_one_unit_against_50_exactly_50_succeed() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.warehouse("W2", 1).await;
    app.skus(&["HOT"]).await;
    app.receive("HOT", "W1", 30).await;
    app.receive("HOT", "W2", 20).await;
    let attempts = (0..200).map(|i| {
        let app = &app;
        async move { app.reserve(&format!("order-{i}"), &[("HOT", 1)]).await }
    });
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 50, "exactly the stock is reserved");
    assert!(
        refused.iter().all(|s| s.code() == Code::FailedPrecondition),
        "{:?}",
        refused.iter().find(|s| s.code() != Code::FailedPrecondition)
    );
    let stock = app.stock("HOT").await;
    assert_formula(&stock);
    assert_eq!(app.totals("HOT").await, (50, 0, 50, 0));
    assert_eq!(
        app.events_of_type("retail.events.v1.ReservationCreated").await.len(),
        50
    );
}

#[tokio::test]
async fn a_multi_line_reservation_that_cannot_be_met_leaves_every_line_untouched() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["A", "B", "C"]).await;
    app.receive("A", "W1", 10).await;
    app.receive("B", "W1", 2).await;
    let err = app.reserve("o-1", &[("A", 5), ("B", 3), ("C", 1)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("skus/B"), "{}", err.message());
    assert_eq!(app.totals("A").await, (10, 10, 0, 0));
    assert_eq!(app.totals("B").await, (2, 2, 0, 0));
    let err = app
        .inventory()
        .get_reservation(authed(pb::GetReservationRequest { name: name("o-1") }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "no reservation was stored");
    assert!(
        app.events_of_type("retail.events.v1.ReservationCreated")
            .await
            .is_empty()
    );

    // When every line can be met, all are held at once.
    let r = app.reserve("o-2", &[("A", 5), ("B", 2)]).await.unwrap();
    assert_eq!(r.state, pb::ReservationState::Active as i32);
    assert_eq!(app.totals("A").await, (10, 5, 5, 0));
    assert_eq!(app.totals("B").await, (2, 0, 2, 0));
}

#[tokio::test]
async fn warehouses_are_chosen_by_priority_whole_lines_first() {
    let app = spawn_app().await;
    app.warehouse("NEAR", 0).await;
    app.warehouse("FAR", 5).await;
    app.skus(&["X"]).await;
    app.receive("X", "NEAR", 3).await;
    app.receive("X", "FAR", 10).await;
    let whole = app.reserve("o-1", &[("X", 5)]).await.unwrap();
    let at: Vec<_> = whole
        .allocations
        .iter()
        .map(|a| (a.warehouse.as_str(), a.quantity))
        .collect();
    assert_eq!(
        at,
        [("warehouses/FAR", 5)],
        "the first warehouse that covers the whole line"
    );
    let split = app.reserve("o-2", &[("X", 7)]).await.unwrap();
    let at: Vec<_> = split
        .allocations
        .iter()
        .map(|a| (a.warehouse.as_str(), a.quantity))
        .collect();
    assert_eq!(at, [("warehouses/NEAR", 3), ("warehouses/FAR", 4)]);
}

#[tokio::test]
async fn replays_of_a_reservation_reserve_once_even_when_they_race() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["R"]).await;
    app.receive("R", "W1", 100).await;
    let replays = (0..20).map(|_| {
        let app = &app;
        async move { app.reserve("order-once", &[("R", 7)]).await }
    });
    let results: Vec<_> = join_all(replays).await.into_iter().map(|r| r.unwrap()).collect();
    assert!(
        results
            .windows(2)
            .all(|w| w[0].name == w[1].name && w[0].allocations == w[1].allocations)
    );
    assert_eq!(app.totals("R").await, (100, 93, 7, 0));
    // A replay after the commit still returns the reservation, now committed.
    app.inventory()
        .commit_reservation(authed(pb::CommitReservationRequest {
            name: name("order-once"),
        }))
        .await
        .unwrap();
    let again = app.reserve("order-once", &[("R", 7)]).await.unwrap();
    assert_eq!(again.state, pb::ReservationState::Committed as i32);
    assert_eq!(app.totals("R").await, (93, 93, 0, 0));
    // The same order id with other lines is refused.
    let err = app.reserve("order-once", &[("R", 8)]).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(app.events_of_type("retail.events.v1.ReservationCreated").await.len(), 1);
}

/// A commit moves the stock once whether or not this replica remembers making the
/// reservation (another replica or an earlier process may have made it); a second
/// commit is answered from the stored state.
#[tokio::test]
async fn a_reservation_commits_once_whether_or_not_this_replica_remembers_it() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["T"]).await;
    app.receive("T", "W1", 10).await;
    app.reserve("remembered", &[("T", 2)]).await.unwrap();
    app.reserve("forgotten", &[("T", 3)]).await.unwrap();
    app.state.held.forget("forgotten");
    assert_eq!(app.totals("T").await, (10, 5, 5, 0));
    for order in ["remembered", "forgotten", "remembered", "forgotten"] {
        let r = app
            .inventory()
            .commit_reservation(authed(pb::CommitReservationRequest { name: name(order) }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state, pb::ReservationState::Committed as i32);
        assert_eq!(
            r.allocations.iter().map(|a| a.quantity).sum::<i64>(),
            if order == "remembered" { 2 } else { 3 }
        );
    }
    assert_eq!(app.totals("T").await, (5, 5, 0, 0));
    assert_eq!(
        app.events_of_type("retail.events.v1.ReservationCommitted").await.len(),
        2
    );
}

#[tokio::test]
async fn an_uncommitted_reservation_expires_after_its_ttl_and_a_late_commit_fails() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["T"]).await;
    app.receive("T", "W1", 5).await;
    let r = app.reserve("late", &[("T", 2)]).await.unwrap();
    let created = r.create_time.unwrap().seconds;
    assert_eq!(r.expire_time.unwrap().seconds - created, 15 * 60, "default TTL");
    // Within the TTL the sweeper leaves it alone.
    let now = Utc::now();
    assert_eq!(
        app.state
            .expire_reservations(now + chrono::Duration::minutes(14))
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.totals("T").await, (5, 3, 2, 0));
    // After it, the units go back and the expiry is published.
    assert_eq!(
        app.state
            .expire_reservations(now + chrono::Duration::minutes(16))
            .await
            .unwrap(),
        1
    );
    assert_eq!(app.totals("T").await, (5, 5, 0, 0));
    let expired = app.events_of_type("retail.events.v1.ReservationExpired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].aggregate_id, "late");
    let err = app
        .inventory()
        .commit_reservation(authed(pb::CommitReservationRequest { name: name("late") }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(app.totals("T").await, (5, 5, 0, 0));
    let got = app
        .inventory()
        .get_reservation(authed(pb::GetReservationRequest { name: name("late") }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, pb::ReservationState::Expired as i32);
    // A second sweep finds nothing; releasing an expired reservation changes nothing.
    assert_eq!(
        app.state
            .expire_reservations(now + chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    app.inventory()
        .release_reservation(authed(pb::ReleaseReservationRequest { name: name("late") }))
        .await
        .unwrap();
    assert_eq!(app.totals("T").await, (5, 5, 0, 0));
}

#[tokio::test]
async fn commit_ships_out_and_returns_come_back_sellable_or_damaged() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["G"]).await;
    app.receive("G", "W1", 10).await;
    app.reserve("o-1", &[("G", 4)]).await.unwrap();
    assert_eq!(app.totals("G").await, (10, 6, 4, 0));
    let committed = app
        .inventory()
        .commit_reservation(authed(pb::CommitReservationRequest { name: name("o-1") }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed.state, pb::ReservationState::Committed as i32);
    assert_eq!(app.totals("G").await, (6, 6, 0, 0), "shipped units leave the total");
    // Committing again answers the same and ships nothing more.
    let again = app
        .inventory()
        .commit_reservation(authed(pb::CommitReservationRequest { name: name("o-1") }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, committed);
    assert_eq!(app.totals("G").await, (6, 6, 0, 0));
    let give_back = |q: i64, damaged: bool, id: &str| pb::ReturnStockRequest {
        name: name("o-1"),
        lines: vec![pb::ReservationLine {
            sku: "skus/G".into(),
            quantity: q,
        }],
        damaged,
        request_id: id.into(),
    };
    app.inventory()
        .return_stock(authed(give_back(1, true, "ret-1")))
        .await
        .unwrap();
    assert_eq!(app.totals("G").await, (7, 6, 0, 1));
    // A retried return counts once.
    app.inventory()
        .return_stock(authed(give_back(1, true, "ret-1")))
        .await
        .unwrap();
    assert_eq!(app.totals("G").await, (7, 6, 0, 1));
    let r = app
        .inventory()
        .return_stock(authed(give_back(2, false, "ret-2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.allocations[0].returned_quantity, 3);
    assert_eq!(app.totals("G").await, (9, 8, 0, 1));
    let err = app
        .inventory()
        .return_stock(authed(give_back(2, false, "ret-3")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "only one unit is still out");
    let err = app
        .inventory()
        .release_reservation(authed(pb::ReleaseReservationRequest { name: name("o-1") }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(app.totals("G").await, (9, 8, 0, 1));
    let moves = app
        .inventory()
        .list_stock_movements(authed(pb::ListStockMovementsRequest {
            sku: "skus/G".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = moves.movements.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["return", "return", "commit", "reserve", "receive"]);

    // Release gives reserved units back to sellable.
    app.reserve("o-2", &[("G", 8)]).await.unwrap();
    app.inventory()
        .release_reservation(authed(pb::ReleaseReservationRequest { name: name("o-2") }))
        .await
        .unwrap();
    assert_eq!(app.totals("G").await, (9, 8, 0, 1));
    let err = app
        .inventory()
        .commit_reservation(authed(pb::CommitReservationRequest { name: name("o-2") }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a released reservation cannot ship"
    );
}

#[tokio::test]
async fn bad_inventory_input_gets_precise_errors_and_changes_nothing() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["OK"]).await;
    app.receive("OK", "W1", 3).await;
    let mut inv = app.inventory();
    let adjust = |sku: &str, wh: &str, delta: i64, reason: &str| pb::AdjustStockRequest {
        sku: sku.into(),
        warehouse: wh.into(),
        bucket: pb::StockBucket::Sellable as i32,
        delta,
        reason: reason.into(),
    };
    let reserve = |order: &str, lines: Vec<(&str, i64)>| pb::ReserveStockRequest {
        order_id: order.into(),
        lines: lines
            .into_iter()
            .map(|(s, q)| pb::ReservationLine {
                sku: s.into(),
                quantity: q,
            })
            .collect(),
        ttl: None,
    };
    let cases: Vec<(tonic::Status, Code, Vec<&str>)> = vec![
        (
            inv.receive_stock(authed(pb::ReceiveStockRequest {
                sku: "skus/O K".into(),
                warehouse: "warehouses/W.1".into(),
                quantity: -1,
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["sku", "warehouse", "quantity"],
        ),
        (
            inv.receive_stock(authed(pb::ReceiveStockRequest {
                sku: "skus/UNKNOWN".into(),
                warehouse: "warehouses/W1".into(),
                quantity: 1,
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            inv.receive_stock(authed(pb::ReceiveStockRequest {
                sku: "skus/OK".into(),
                warehouse: "warehouses/NOWHERE".into(),
                quantity: 1,
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            inv.adjust_stock(authed(adjust("skus/OK", "warehouses/W1", -4, "count")))
                .await
                .unwrap_err(),
            Code::FailedPrecondition,
            vec![],
        ),
        (
            inv.adjust_stock(authed(adjust("skus/OK", "warehouses/W1", 0, "")))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            vec!["delta", "reason"],
        ),
        (
            inv.move_stock(authed(pb::MoveStockRequest {
                sku: "skus/OK".into(),
                warehouse: "warehouses/W1".into(),
                from_bucket: pb::StockBucket::Unsellable as i32,
                quantity: 1,
                reason: "repaired".into(),
            }))
            .await
            .unwrap_err(),
            Code::FailedPrecondition,
            vec![],
        ),
        (
            inv.reserve_stock(authed(reserve(
                "o 1",
                vec![("skus/OK", 0), ("skus/ok", 1), ("skus/b@d", 1)],
            )))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["order_id", "lines[0].quantity", "lines[1].sku", "lines[2].sku"],
        ),
        (
            inv.reserve_stock(authed(reserve("o-2", vec![]))).await.unwrap_err(),
            Code::InvalidArgument,
            vec!["lines"],
        ),
        (
            inv.reserve_stock(authed(reserve("o-3", vec![("skus/OK", 1), ("skus/GHOST", 1)])))
                .await
                .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            inv.commit_reservation(authed(pb::CommitReservationRequest {
                name: name("never-made"),
            }))
            .await
            .unwrap_err(),
            Code::NotFound,
            vec![],
        ),
        (
            inv.commit_reservation(authed(pb::CommitReservationRequest {
                name: "orders/1".into(),
            }))
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            vec!["name"],
        ),
    ];
    for (i, (status, code, fields)) in cases.into_iter().enumerate() {
        assert_eq!(status.code(), code, "case {i}: {status:?}");
        assert_eq!(violated_fields(&status), fields, "case {i}: {status:?}");
    }
    assert_eq!(app.totals("OK").await, (3, 3, 0, 0), "nothing changed");
    let moves = inv
        .list_stock_movements(authed(pb::ListStockMovementsRequest {
            sku: "skus/OK".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moves.movements.len(), 1, "only the receipt");
    let err = inv
        .reserve_stock(with_token(
            &staff_token(&["catalog.read", "inventory.write"]),
            reserve("o-4", vec![("skus/OK", 1)]),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// One step of a random sequence of stock operations.
#[derive(Debug, Clone)]
enum Op {
    Receive(usize, i64),
    Adjust(usize, bool, i64),
    Move(usize, bool, i64),
    Reserve(i64),
    Commit(usize),
    Release(usize),
    Return(usize, i64, bool),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 1..20i64).prop_map(|(w, q)| Op::Receive(w, q)),
        2 => (0..2usize, any::<bool>(), -10..10i64)
            .prop_filter("non-zero", |(_, _, d)| *d != 0)
            .prop_map(|(w, s, d)| Op::Adjust(w, s, d)),
        1 => (0..2usize, any::<bool>(), 1..8i64).prop_map(|(w, s, q)| Op::Move(w, s, q)),
        4 => (1..15i64).prop_map(Op::Reserve),
        2 => (0..8usize).prop_map(Op::Commit),
        2 => (0..8usize).prop_map(Op::Release),
        2 => (0..8usize, 1..5i64, any::<bool>()).prop_map(|(o, q, d)| Op::Return(o, q, d)),
        1 => Just(Op::Expire),
    ]
}

/// An allocation of a reservation in the model: (warehouse, quantity, returned).
type Held = (String, i64, i64);

/// What the stock must be: per warehouse [sellable, reserved, unsellable].
#[derive(Debug, Default)]
struct Model {
    stock: HashMap<String, [i64; 3]>,
    orders: Vec<(pb::ReservationState, Vec<Held>)>,
}

const WAREHOUSES: [&str; 2] = ["W1", "W2"];

#[tokio::test]
async fn the_stock_formula_holds_after_every_step_of_random_sequences() {
    let app = spawn_app().await;
    for w in WAREHOUSES {
        app.warehouse(w, 0).await;
    }
    let mut runner = TestRunner::deterministic();
    let sequences = proptest::collection::vec(op(), 30..45);
    for case in 0..6 {
        let code = format!("PROP-{case}");
        app.skus(&[&code]).await;
        let ops = sequences.new_tree(&mut runner).unwrap().current();
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            run_step(&app, &code, case, &mut model, op).await;
            let stock = app.stock(&code).await;
            assert_formula(&stock);
            for w in WAREHOUSES {
                let want = model.stock.get(w).copied().unwrap_or_default();
                let got = stock
                    .levels
                    .iter()
                    .find(|l| l.warehouse == format!("warehouses/{w}"))
                    .map(|l| [l.sellable, l.reserved, l.unsellable])
                    .unwrap_or_default();
                assert_eq!(got, want, "case {case} step {step} {op:?} in {w}; ops {ops:?}");
            }
        }
    }
}

async fn run_step(app: &TestApp, code: &str, case: usize, model: &mut Model, op: &Op) {
    let sku = format!("skus/{code}");
    let mut inv = app.inventory();
    match op {
        Op::Receive(w, q) => {
            app.receive(code, WAREHOUSES[*w], *q).await;
            model.stock.entry(WAREHOUSES[*w].into()).or_default()[0] += q;
        }
        Op::Adjust(w, sellable, d) => {
            let bucket = if *sellable { 0 } else { 2 };
            let result = inv
                .adjust_stock(authed(pb::AdjustStockRequest {
                    sku,
                    warehouse: format!("warehouses/{}", WAREHOUSES[*w]),
                    bucket: if *sellable {
                        pb::StockBucket::Sellable
                    } else {
                        pb::StockBucket::Unsellable
                    } as i32,
                    delta: *d,
                    reason: "count".into(),
                }))
                .await;
            let parts = model.stock.entry(WAREHOUSES[*w].into()).or_default();
            if parts[bucket] + d >= 0 {
                result.unwrap();
                parts[bucket] += d;
            } else {
                assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
            }
        }
        Op::Move(w, from_sellable, q) => {
            let (from, to) = if *from_sellable { (0, 2) } else { (2, 0) };
            let result = inv
                .move_stock(authed(pb::MoveStockRequest {
                    sku,
                    warehouse: format!("warehouses/{}", WAREHOUSES[*w]),
                    from_bucket: if *from_sellable {
                        pb::StockBucket::Sellable
                    } else {
                        pb::StockBucket::Unsellable
                    } as i32,
                    quantity: *q,
                    reason: "inspection".into(),
                }))
                .await;
            let parts = model.stock.entry(WAREHOUSES[*w].into()).or_default();
            if parts[from] >= *q {
                result.unwrap();
                parts[from] -= q;
                parts[to] += q;
            } else {
                assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
            }
        }
        Op::Reserve(q) => {
            let order = format!("prop-{case}-{}", model.orders.len());
            let available: i64 = model.stock.values().map(|p| p[0]).sum();
            let result = app.reserve(&order, &[(code, *q)]).await;
            if available >= *q {
                let r = result.unwrap();
                let mut allocs = Vec::new();
                for a in &r.allocations {
                    let w = a.warehouse.trim_start_matches("warehouses/").to_owned();
                    let parts = model.stock.entry(w.clone()).or_default();
                    parts[0] -= a.quantity;
                    parts[1] += a.quantity;
                    allocs.push((w, a.quantity, 0));
                }
                assert_eq!(allocs.iter().map(|a| a.1).sum::<i64>(), *q);
                model.orders.push((pb::ReservationState::Active, allocs));
            } else {
                assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
            }
        }
        Op::Commit(i) | Op::Release(i) => {
            let Some((state, allocs)) = model.orders.get_mut(*i) else {
                return;
            };
            let rname = name(&format!("prop-{case}-{i}"));
            let commit = matches!(op, Op::Commit(_));
            let result = if commit {
                inv.commit_reservation(authed(pb::CommitReservationRequest { name: rname }))
                    .await
            } else {
                inv.release_reservation(authed(pb::ReleaseReservationRequest { name: rname }))
                    .await
            };
            use pb::ReservationState as S;
            match (commit, *state) {
                (true, S::Active) => {
                    result.unwrap();
                    for (w, q, _) in allocs.iter() {
                        model.stock.entry(w.clone()).or_default()[1] -= q;
                    }
                    *state = S::Committed;
                }
                (false, S::Active) => {
                    result.unwrap();
                    for (w, q, _) in allocs.iter() {
                        let parts = model.stock.entry(w.clone()).or_default();
                        parts[0] += q;
                        parts[1] -= q;
                    }
                    *state = S::Released;
                }
                (true, S::Committed) | (false, S::Released | S::Expired) => {
                    result.unwrap();
                }
                _ => assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition),
            }
        }
        Op::Return(i, q, damaged) => {
            let Some((state, allocs)) = model.orders.get_mut(*i) else {
                return;
            };
            let result = inv
                .return_stock(authed(pb::ReturnStockRequest {
                    name: name(&format!("prop-{case}-{i}")),
                    lines: vec![pb::ReservationLine { sku, quantity: *q }],
                    damaged: *damaged,
                    request_id: String::new(),
                }))
                .await;
            let open: i64 = allocs.iter().map(|(_, q, r)| q - r).sum();
            if *state == pb::ReservationState::Committed && *q <= open {
                result.unwrap();
                let mut left = *q;
                for (w, shipped, returned) in allocs.iter_mut() {
                    let take = (*shipped - *returned).min(left);
                    if take > 0 {
                        *returned += take;
                        left -= take;
                        model.stock.entry(w.clone()).or_default()[if *damaged { 2 } else { 0 }] += take;
                    }
                }
            } else {
                assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
            }
        }
        Op::Expire => {
            let expired = app
                .state
                .expire_reservations(Utc::now() + chrono::Duration::days(1))
                .await
                .unwrap();
            let mut expected = 0;
            for (state, allocs) in model.orders.iter_mut() {
                if *state == pb::ReservationState::Active {
                    expected += 1;
                    *state = pb::ReservationState::Expired;
                    for (w, q, _) in allocs.iter() {
                        let parts = model.stock.entry(w.clone()).or_default();
                        parts[0] += q;
                        parts[1] -= q;
                    }
                }
            }
            // Earlier cases' reservations (other SKUs) may expire in the same sweep.
            assert!(expired >= expected, "{expired} < {expected}");
        }
    }
}

/// `i64::MIN` and `i64::MAX` (and the `i32` ends) in every numeric input of inventory:
/// a delta of `i64::MIN` used to reach the range check's negation and answer
/// INTERNAL. Each is refused with a field violation or answered; nothing changes.
#[tokio::test]
async fn the_extremes_of_every_numeric_inventory_input_are_refused_with_a_field_violation() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.skus(&["N"]).await;
    app.receive("N", "W1", 5).await;
    app.reserve("shipped", &[("N", 1)]).await.unwrap();
    app.inventory()
        .commit_reservation(authed(pb::CommitReservationRequest { name: name("shipped") }))
        .await
        .unwrap();
    let before = app.totals("N").await;
    let mut inv = app.inventory();
    for (i, extreme) in [i64::MIN, i64::MAX, i64::MIN + 1].into_iter().enumerate() {
        for bucket in [pb::StockBucket::Sellable, pb::StockBucket::Unsellable] {
            let r = inv
                .adjust_stock(authed(pb::AdjustStockRequest {
                    sku: "skus/N".into(),
                    warehouse: "warehouses/W1".into(),
                    bucket: bucket as i32,
                    delta: extreme,
                    reason: "count".into(),
                }))
                .await;
            assert_extreme(&format!("adjust {bucket:?} {extreme}"), r.map(drop), Some("delta"));
        }
        let r = inv
            .receive_stock(authed(pb::ReceiveStockRequest {
                sku: "skus/N".into(),
                warehouse: "warehouses/W1".into(),
                quantity: extreme,
                reference: "PO".into(),
                request_id: format!("extreme-{i}"),
            }))
            .await;
        assert_extreme(&format!("receive {extreme}"), r.map(drop), Some("quantity"));
        for from in [pb::StockBucket::Sellable, pb::StockBucket::Unsellable] {
            let r = inv
                .move_stock(authed(pb::MoveStockRequest {
                    sku: "skus/N".into(),
                    warehouse: "warehouses/W1".into(),
                    from_bucket: from as i32,
                    quantity: extreme,
                    reason: "inspection".into(),
                }))
                .await;
            assert_extreme(&format!("move from {from:?} {extreme}"), r.map(drop), Some("quantity"));
        }
        let line = vec![pb::ReservationLine {
            sku: "skus/N".into(),
            quantity: extreme,
        }];
        let r = inv
            .reserve_stock(authed(pb::ReserveStockRequest {
                order_id: format!("extreme-{i}"),
                lines: line.clone(),
                ttl: None,
            }))
            .await;
        assert_extreme(&format!("reserve {extreme}"), r.map(drop), Some("lines[0].quantity"));
        let r = inv
            .reserve_stock(authed(pb::ReserveStockRequest {
                order_id: format!("extreme-ttl-{i}"),
                lines: vec![pb::ReservationLine {
                    sku: "skus/N".into(),
                    quantity: 1,
                }],
                ttl: Some(prost_types::Duration {
                    seconds: extreme,
                    nanos: 0,
                }),
            }))
            .await;
        assert_extreme(&format!("reserve ttl {extreme}s"), r.map(drop), Some("ttl"));
        let r = inv
            .return_stock(authed(pb::ReturnStockRequest {
                name: name("shipped"),
                lines: line,
                damaged: false,
                request_id: format!("extreme-{i}"),
            }))
            .await;
        assert_extreme(&format!("return {extreme}"), r.map(drop), Some("lines[0].quantity"));
    }
    for nanos in [i32::MIN, i32::MAX] {
        let r = inv
            .reserve_stock(authed(pb::ReserveStockRequest {
                order_id: format!("extreme-nanos-{nanos}"),
                lines: vec![pb::ReservationLine {
                    sku: "skus/N".into(),
                    quantity: 1,
                }],
                ttl: Some(prost_types::Duration { seconds: 60, nanos }),
            }))
            .await;
        assert_extreme(&format!("reserve ttl nanos {nanos}"), r.map(drop), Some("ttl"));
    }
    for priority in [i32::MIN, i32::MAX] {
        let r = inv
            .create_warehouse(authed(pb::CreateWarehouseRequest {
                warehouse: Some(pb::Warehouse {
                    code: "X1".into(),
                    display_name: "extreme".into(),
                    priority,
                    ..Default::default()
                }),
            }))
            .await;
        assert_extreme(
            &format!("warehouse priority {priority}"),
            r.map(drop),
            Some("warehouse.priority"),
        );
    }
    for (page_size, field) in [(i32::MIN, Some("page_size")), (i32::MAX, None)] {
        let r = inv
            .list_stock_movements(authed(pb::ListStockMovementsRequest {
                sku: "skus/N".into(),
                page_size,
                page_token: String::new(),
            }))
            .await;
        assert_extreme(&format!("movements page size {page_size}"), r.map(drop), field);
    }
    assert_eq!(app.totals("N").await, before, "nothing changed");
    let warehouses = inv
        .list_warehouses(authed(pb::ListWarehousesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .warehouses;
    assert_eq!(warehouses.len(), 1);
}

/// One audited movement as the test compares it: kind, warehouse, the three deltas
/// and the reason.
type Moved = (String, String, i64, i64, i64, String);

async fn movements_of(app: &TestApp, sku: &str) -> Vec<pb::StockMovement> {
    app.inventory()
        .list_stock_movements(authed(pb::ListStockMovementsRequest {
            sku: format!("skus/{sku}"),
            page_size: 500,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .movements
}

fn moved(m: &pb::StockMovement) -> Moved {
    (
        m.kind.clone(),
        m.warehouse.trim_start_matches("warehouses/").to_owned(),
        m.sellable_delta,
        m.reserved_delta,
        m.unsellable_delta,
        m.reason.clone(),
    )
}

/// The audit trail used to leave out reservations, commits, releases and expiries:
/// now each of them is a movement per SKU and warehouse allocation, with the order id
/// as its reason, and the trail adds up to the stock.
#[tokio::test]
async fn every_reservation_commit_release_and_expiry_is_an_audited_stock_movement() {
    let app = spawn_app().await;
    app.warehouse("W1", 0).await;
    app.warehouse("W2", 1).await;
    app.skus(&["M"]).await;
    app.receive("M", "W1", 3).await;
    app.receive("M", "W2", 4).await;
    let started = Utc::now().timestamp() - 1;
    // Split across both warehouses, then shipped.
    app.reserve("o-ship", &[("M", 5)]).await.unwrap();
    app.inventory()
        .commit_reservation(authed(pb::CommitReservationRequest { name: name("o-ship") }))
        .await
        .unwrap();
    // Released on request.
    app.reserve("o-back", &[("M", 1)]).await.unwrap();
    app.inventory()
        .release_reservation(authed(pb::ReleaseReservationRequest { name: name("o-back") }))
        .await
        .unwrap();
    // Released by the sweeper.
    app.reserve("o-late", &[("M", 1)]).await.unwrap();
    assert_eq!(
        app.state
            .expire_reservations(Utc::now() + chrono::Duration::days(1))
            .await
            .unwrap(),
        1
    );
    // Replays and repeated commits or releases move nothing and audit nothing.
    app.reserve("o-ship", &[("M", 5)]).await.unwrap();
    app.inventory()
        .commit_reservation(authed(pb::CommitReservationRequest { name: name("o-ship") }))
        .await
        .unwrap();
    app.inventory()
        .release_reservation(authed(pb::ReleaseReservationRequest { name: name("o-back") }))
        .await
        .unwrap();
    app.inventory()
        .release_reservation(authed(pb::ReleaseReservationRequest { name: name("o-late") }))
        .await
        .unwrap();

    let moves = movements_of(&app, "M").await;
    let m = |kind: &str, wh: &str, s: i64, r: i64, order: &str| -> Moved {
        (kind.into(), wh.into(), s, r, 0, order.into())
    };
    let want = vec![
        m("expire", "W2", 1, -1, "o-late"),
        m("reserve", "W2", -1, 1, "o-late"),
        m("release", "W2", 1, -1, "o-back"),
        m("reserve", "W2", -1, 1, "o-back"),
        m("commit", "W2", 0, -2, "o-ship"),
        m("commit", "W1", 0, -3, "o-ship"),
        m("reserve", "W2", -2, 2, "o-ship"),
        m("reserve", "W1", -3, 3, "o-ship"),
        m("receive", "W2", 4, 0, "PO-1"),
        m("receive", "W1", 3, 0, "PO-1"),
    ];
    assert_eq!(moves.iter().map(moved).collect::<Vec<_>>(), want);
    for mv in &moves {
        let at = mv.create_time.as_ref().unwrap().seconds;
        assert!(at >= started - 60, "{mv:?}");
        let by_sweeper = mv.kind == "expire";
        assert!(!mv.actor.is_empty(), "{mv:?}");
        assert_eq!(mv.actor == "staff-1", !by_sweeper, "{mv:?}");
    }
    // The trail adds up to the stock in every warehouse.
    let stock = app.stock("M").await;
    for level in &stock.levels {
        let of = |f: fn(&pb::StockMovement) -> i64| -> i64 {
            moves.iter().filter(|mv| mv.warehouse == level.warehouse).map(f).sum()
        };
        assert_eq!(
            (
                of(|m| m.sellable_delta),
                of(|m| m.reserved_delta),
                of(|m| m.unsellable_delta)
            ),
            (level.sellable, level.reserved, level.unsellable),
            "{level:?}"
        );
    }
    assert_eq!(app.totals("M").await, (2, 2, 0, 0));
}

//! Stock across orders and catalog: whatever the interleaving of payments,
//! cancellations, shipments, returns and refunds, and whatever catalog call fails or
//! whenever orders dies, every unit is either in stock or with a paying customer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use retail_proto::orders::{self as opb};
use support::flaky::Strike;
use support::*;
use tonic::Code;

async fn cancel(suite: &Suite, order: &str) -> Result<opb::Order, tonic::Status> {
    suite
        .orders_client()
        .await
        .cancel_order(authed(
            &suite.admin,
            opb::CancelOrderRequest {
                name: order.into(),
                reason: "changed my mind".into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn get(suite: &Suite, order: &str) -> opb::Order {
    suite
        .orders_client()
        .await
        .get_order(authed(&suite.admin, opb::GetOrderRequest { name: order.into() }))
        .await
        .unwrap()
        .into_inner()
}

async fn ship_and_deliver(suite: &Suite, order: &str) -> Result<(), tonic::Status> {
    let mut orders = suite.orders_client().await;
    orders
        .ship_order(authed(
            &suite.admin,
            opb::ShipOrderRequest {
                name: order.into(),
                carrier: "ups".into(),
                tracking_number: "1Z".into(),
            },
        ))
        .await?;
    orders
        .confirm_delivery(authed(&suite.admin, opb::ConfirmDeliveryRequest { name: order.into() }))
        .await?;
    Ok(())
}

async fn request_return(suite: &Suite, order: &str, sku: &str, quantity: i64) -> Result<opb::Return, tonic::Status> {
    suite
        .orders_client()
        .await
        .request_return(authed(
            &suite.admin,
            opb::RequestReturnRequest {
                parent: order.into(),
                r#return: Some(opb::Return {
                    lines: vec![opb::ReturnLine {
                        sku: format!("skus/{sku}"),
                        quantity,
                        ..Default::default()
                    }],
                    reason: "too small".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn receive_return(suite: &Suite, ret: &str, damaged: Option<&str>) -> Result<opb::Return, tonic::Status> {
    suite
        .orders_client()
        .await
        .receive_return(authed(
            &suite.admin,
            opb::ReceiveReturnRequest {
                name: ret.into(),
                damaged_skus: damaged.map(|s| format!("skus/{s}")).into_iter().collect(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn refund(suite: &Suite, ret: &str) -> Result<opb::Return, tonic::Status> {
    suite
        .orders_client()
        .await
        .refund_return(authed(&suite.admin, opb::RefundReturnRequest { name: ret.into() }))
        .await
        .map(|r| r.into_inner())
}

/// Waits until the SKU's (total, sellable, reserved, unsellable) are `want`; returns
/// what they are at the end.
async fn settle(suite: &Suite, sku: &str, want: (i64, i64, i64, i64), within: Duration) -> (i64, i64, i64, i64) {
    let deadline = Instant::now() + within;
    loop {
        let now = suite.stock(sku).await;
        if now == want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Orders' sweeper every second, so that unfinished stock work is picked up quickly.
async fn suite() -> Suite {
    Suite::start_with(|o| {
        o.orders.sweep_every_secs = 1;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paying_and_cancelling_the_same_order_at_once_never_loses_its_units() {
    // Regression: pay committed the reservation, lost the state write to the
    // cancellation, and the units left stock for an order nobody paid.
    let suite = suite().await;
    const PAIRS: i64 = 50;
    suite.stock_skus(&[("PC-1", 1_000, PAIRS)]).await;
    let mut placed = Vec::new();
    for i in 0..PAIRS {
        placed.push(
            suite
                .place(&suite.admin, None, &[("PC-1", 1)], &format!("pc-{i}"))
                .await
                .unwrap(),
        );
    }
    let races = placed.iter().enumerate().map(|(i, order)| {
        let suite = &suite;
        async move {
            let pay_id = format!("pay-{i}");
            let pay = suite.pay(&suite.admin, order, &pay_id);
            let cancel = cancel(suite, &order.name);
            let (paid, cancelled) = tokio::join!(pay, cancel);
            (paid.is_ok(), cancelled.is_ok())
        }
    });
    let outcomes = join_all(races).await;
    let mut paid = 0;
    for (order, (pay_ok, cancel_ok)) in placed.iter().zip(&outcomes) {
        let state = get(&suite, &order.name).await.state;
        // Exactly one of them took effect, and the order says which.
        if state == opb::OrderState::Cancelled as i32 {
            assert!(cancel_ok, "cancelled by a cancel that failed");
        } else {
            assert_eq!(state, opb::OrderState::Paid as i32);
            assert!(pay_ok, "paid by a payment that failed");
            paid += 1;
        }
    }
    let after = settle(
        &suite,
        "PC-1",
        (PAIRS - paid, PAIRS - paid, 0, 0),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        after,
        (PAIRS - paid, PAIRS - paid, 0, 0),
        "only the {paid} paid orders took units out of stock"
    );
}

#[tokio::test]
async fn a_cancel_gives_the_stock_back_when_catalog_fails_around_the_call_or_orders_dies() {
    // Regression: the cancellation was committed and the stock call made after it;
    // when that call failed (or the process died first) the units never came back.
    let mut suite = suite().await;
    suite.stock_skus(&[("CX-1", 1_000, 40)]).await;
    let expected_total = 40;
    let mut n = 0;
    for paid in [false, true] {
        for strike in [Strike::Before, Strike::After] {
            for restart in [false, true] {
                n += 1;
                let order = suite
                    .place(&suite.admin, None, &[("CX-1", 2)], &format!("cx-{n}"))
                    .await
                    .unwrap();
                if paid {
                    suite.pay(&suite.admin, &order, &format!("cx-pay-{n}")).await.unwrap();
                }
                let call = if paid { "return_stock" } else { "release" };
                suite.faults.fail(call, strike);
                // The cancellation itself stands whatever catalog does.
                let cancelled = cancel(&suite, &order.name).await.unwrap();
                assert_eq!(cancelled.state, opb::OrderState::Cancelled as i32);
                if restart {
                    // The process dies with the stock work unfinished; the next one
                    // finishes it at start.
                    suite.orders.take().unwrap().kill().await;
                    suite.faults.heal();
                    suite.start_orders().await;
                } else {
                    // Catalog recovers; the sweeper finishes the work.
                    suite.faults.heal();
                }
                let after = settle(
                    &suite,
                    "CX-1",
                    (expected_total, expected_total, 0, 0),
                    Duration::from_secs(10),
                )
                .await;
                assert_eq!(
                    after,
                    (expected_total, expected_total, 0, 0),
                    "paid {paid}, {strike:?}, restart {restart}: both units are back"
                );
                // A cancelled order stays cancelled and keeps nothing.
                assert_eq!(get(&suite, &order.name).await.state, opb::OrderState::Cancelled as i32);
            }
        }
    }
}

#[tokio::test]
async fn a_received_return_reaches_stock_when_catalog_fails_around_the_call_or_orders_dies() {
    let mut suite = suite().await;
    suite.stock_skus(&[("RX-1", 1_000, 40)]).await;
    let mut total = 40;
    let mut n = 0;
    for strike in [Strike::Before, Strike::After] {
        for restart in [false, true] {
            n += 1;
            let order = suite
                .place(&suite.admin, None, &[("RX-1", 3)], &format!("rx-{n}"))
                .await
                .unwrap();
            suite.pay(&suite.admin, &order, &format!("rx-pay-{n}")).await.unwrap();
            total -= 3;
            ship_and_deliver(&suite, &order.name).await.unwrap();
            let ret = request_return(&suite, &order.name, "RX-1", 2).await.unwrap();
            suite.faults.fail("return_stock", strike);
            // Received is received: the goods are in the warehouse's hands.
            let _ = receive_return(&suite, &ret.name, None).await;
            if restart {
                suite.orders.take().unwrap().kill().await;
                suite.faults.heal();
                suite.start_orders().await;
            } else {
                suite.faults.heal();
            }
            // A retried receive is answered, and counts nothing twice.
            let received = receive_return(&suite, &ret.name, None).await.unwrap();
            assert_eq!(received.state, opb::ReturnState::Received as i32);
            total += 2;
            let after = settle(&suite, "RX-1", (total, total, 0, 0), Duration::from_secs(10)).await;
            assert_eq!(after, (total, total, 0, 0), "{strike:?}, restart {restart}");
            refund(&suite, &ret.name).await.unwrap();
            assert_eq!(
                suite.stock("RX-1").await,
                (total, total, 0, 0),
                "a refund moves no stock"
            );
        }
    }
}

/// What one step of the property test does.
#[derive(Debug, Clone, Copy)]
enum Action {
    Place { quantity: i64 },
    Pay,
    Cancel,
    ShipAndDeliver,
    RequestReturn { quantity: i64 },
    Receive { damaged: bool },
    Refund,
}

/// One step: an action on one of the case's orders (an index taken modulo the
/// orders placed so far), with catalog failing one kind of call during it.
#[derive(Debug, Clone)]
struct Op {
    action: Action,
    order: usize,
    fault: Option<(&'static str, Strike)>,
}

fn op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        3 => (1..4i64).prop_map(|quantity| Action::Place { quantity }),
        3 => Just(Action::Pay),
        2 => Just(Action::Cancel),
        2 => Just(Action::ShipAndDeliver),
        2 => (1..4i64).prop_map(|quantity| Action::RequestReturn { quantity }),
        2 => any::<bool>().prop_map(|damaged| Action::Receive { damaged }),
        1 => Just(Action::Refund),
    ];
    let call = prop_oneof![
        Just("reserve"),
        Just("commit"),
        Just("held"),
        Just("release"),
        Just("return_stock")
    ];
    let strike = prop_oneof![Just(Strike::Before), Just(Strike::After)];
    let fault = prop::option::weighted(0.4, (call, strike));
    (action, 0..8usize, fault).prop_map(|(action, order, fault)| Op { action, order, fault })
}

/// What the test knows of one order of a case.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    quantity: i64,
    /// Returns requested, with whether a receive was tried.
    returns: Vec<(String, bool)>,
}

async fn run_case(suite: &Suite, case: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    const RECEIPTS: i64 = 40;
    let sku = format!("PP-{case}");
    suite.stock_skus(&[(sku.as_str(), 1_000, RECEIPTS)]).await;
    let mut known: Vec<Known> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let rid = format!("case{case}-step{step}");
        if let Some((call, strike)) = op.fault {
            suite.faults.fail(call, strike);
        }
        let action = if known.is_empty() {
            Action::Place { quantity: 1 }
        } else {
            op.action
        };
        let at = if known.is_empty() { 0 } else { op.order % known.len() };
        match action {
            Action::Place { quantity } => {
                if known.len() < 8
                    && let Ok(placed) = suite.place(&suite.admin, None, &[(sku.as_str(), quantity)], &rid).await
                {
                    known.push(Known {
                        name: placed.name,
                        quantity,
                        returns: Vec::new(),
                    });
                }
            }
            Action::Pay => {
                let current = get(suite, &known[at].name).await;
                let _ = suite.pay(&suite.admin, &current, &rid).await;
            }
            Action::Cancel => {
                let _ = cancel(suite, &known[at].name).await;
            }
            Action::ShipAndDeliver => {
                let _ = ship_and_deliver(suite, &known[at].name).await;
            }
            Action::RequestReturn { quantity } => {
                if let Ok(ret) = request_return(suite, &known[at].name, &sku, quantity).await {
                    known[at].returns.push((ret.name, false));
                }
            }
            Action::Receive { damaged } => {
                if let Some((ret, tried)) = known[at].returns.last_mut() {
                    *tried = true;
                    let _ = receive_return(suite, ret, damaged.then_some(sku.as_str())).await;
                }
            }
            Action::Refund => {
                if let Some((ret, _)) = known[at].returns.last() {
                    let _ = refund(suite, ret).await;
                }
            }
        }
        suite.faults.heal();
    }
    // Catalog is healthy again. A receive that was tried is retried until answered,
    // as a client would; orders still unpaid are cancelled, as the payment window's
    // end does (a payment whose answer from catalog was lost has shipped its units
    // out, and only the order's end tells where they go).
    let mut expected_total = RECEIPTS;
    for k in &known {
        let mut returned = 0;
        for (ret, tried) in &k.returns {
            if *tried {
                let r = receive_return(suite, ret, None).await;
                if let Ok(r) = r
                    && r.state != opb::ReturnState::Requested as i32
                {
                    returned += r.lines.iter().map(|l| l.quantity).sum::<i64>();
                }
            }
        }
        let mut state = opb::OrderState::try_from(get(suite, &k.name).await.state).unwrap();
        if state == opb::OrderState::PendingPayment {
            cancel(suite, &k.name).await.unwrap();
            state = opb::OrderState::Cancelled;
        }
        if state != opb::OrderState::Cancelled {
            expected_total -= k.quantity - returned;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stock = suite.stock(&sku).await;
    while (stock.0, stock.2) != (expected_total, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stock = suite.stock(&sku).await;
    }
    prop_assert_eq!(
        (stock.0, stock.2),
        (expected_total, 0),
        "total = receipts - units paid and not returned, nothing reserved for an order that is not pending ({:?})",
        known
    );
    prop_assert_eq!(stock.0, stock.1 + stock.2 + stock.3, "the parts add up");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_conserved_across_random_interleavings_with_catalog_failures() {
    let suite = suite().await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = tokio::task::block_in_place(|| {
        runner.run(&prop::collection::vec(op(), 6..30), |ops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            handle.block_on(run_case(&suite, n, &ops))
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}

#[tokio::test]
async fn cancelling_a_cancelled_order_is_refused_and_changes_nothing() {
    let suite = suite().await;
    suite.stock_skus(&[("CC-1", 1_000, 5)]).await;
    let order = suite.place(&suite.admin, None, &[("CC-1", 2)], "cc-1").await.unwrap();
    cancel(&suite, &order.name).await.unwrap();
    let err = cancel(&suite, &order.name).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(suite.stock("CC-1").await, (5, 5, 0, 0));
}

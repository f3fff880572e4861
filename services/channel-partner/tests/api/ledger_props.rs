//! Property test of the points ledgers against the service itself: earnings,
//! actions, partial refunds, redemptions, approvals and rejections interleaved at
//! random; after every step each ledger's balance and debt are never negative and
//! equal the sums of its entries, and every source counts once.

use chrono::Utc;
use proptest::prelude::*;
use retail_channel_partner::Sale;
use retail_proto::partner::{self as pb};

use crate::helpers::*;

#[derive(Debug, Clone)]
enum Op {
    /// A paid order of this many major units (the rep on it, or not).
    Pay {
        units: i64,
        with_rep: bool,
    },
    /// A refund of this share (percent) of the n-th paid order.
    Refund {
        order: usize,
        percent: i64,
    },
    Action {
        collective: bool,
    },
    Redeem {
        collective: bool,
        quantity: i64,
    },
    Approve {
        redemption: usize,
    },
    Reject {
        redemption: usize,
    },
    /// The same paid order delivered again.
    Replay {
        order: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1i64..500, any::<bool>()).prop_map(|(units, with_rep)| Op::Pay { units, with_rep }),
        2 => (0usize..8, 1i64..=100).prop_map(|(order, percent)| Op::Refund { order, percent }),
        1 => any::<bool>().prop_map(|collective| Op::Action { collective }),
        3 => (any::<bool>(), 1i64..4).prop_map(|(collective, quantity)| Op::Redeem { collective, quantity }),
        1 => (0usize..6).prop_map(|redemption| Op::Approve { redemption }),
        2 => (0usize..6).prop_map(|redemption| Op::Reject { redemption }),
        1 => (0usize..8).prop_map(|order| Op::Replay { order }),
    ]
}

struct Paid {
    id: String,
    amount_minor: i64,
    refunded_minor: i64,
    rep: String,
}

impl Paid {
    /// The payment, or a refund of `amount_minor` under `reference`.
    fn sale(&self, refund: Option<(&str, i64)>) -> Sale {
        Sale {
            order_id: self.id.clone(),
            reference: refund.map(|(r, _)| r.to_owned()).unwrap_or_default(),
            refund: refund.is_some(),
            partner_id: "acme".into(),
            sales_rep: self.rep.clone(),
            currency: "EUR".into(),
            amount_minor: refund.map_or(self.amount_minor, |(_, a)| a),
            at: Utc::now(),
        }
    }
}

async fn check_ledger(app: &TestApp, name: &str) {
    let ledger = app.ledger(name).await;
    let entries = app
        .incentives()
        .list_ledger_entries(authed(pb::ListLedgerEntriesRequest {
            parent: name.into(),
            page_size: 500,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(ledger.balance >= 0 && ledger.debt >= 0, "{ledger:?}");
    assert_eq!(
        ledger.balance,
        entries.iter().map(|e| e.points).sum::<i64>(),
        "{name}: balance = sum(points)"
    );
    assert_eq!(
        ledger.debt,
        entries.iter().map(|e| e.debt_change).sum::<i64>(),
        "{name}: debt = sum(debt_change)"
    );
    let mut sources: Vec<_> = entries.iter().map(|e| e.source.as_str()).collect();
    sources.sort();
    let n = sources.len();
    sources.dedup();
    assert_eq!(sources.len(), n, "{name}: each source once");
}

async fn run(ops: Vec<Op>) {
    let app = spawn_app_with(|s| s.orders.events_url = None).await;
    app.active("acme").await;
    let rep = app.rep("acme", "0190f5b2-8d3e-7c41-9a6b-00000000000a").await;
    let rep_id = rep.name.trim_start_matches("salesReps/").to_owned();
    let ledgers = ["partners/acme/ledger".to_owned(), format!("{}/ledger", rep.name)];
    let mut inc = app.incentives();
    let item = |category: pb::CatalogCategory| pb::CreateCatalogItemRequest {
        catalog_item: Some(pb::CatalogItem {
            category: category as i32,
            display_name: "item".into(),
            points_price: 40,
            unlimited_stock: true,
            ..Default::default()
        }),
    };
    let rebate = inc
        .create_catalog_item(authed(item(pb::CatalogCategory::Rebate)))
        .await
        .unwrap()
        .into_inner();
    let gift = inc
        .create_catalog_item(authed(item(pb::CatalogCategory::Gift)))
        .await
        .unwrap()
        .into_inner();
    let mut paid: Vec<Paid> = Vec::new();
    let mut redemptions: Vec<String> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Pay { units, with_rep } => {
                let p = Paid {
                    id: format!("o-{step}"),
                    amount_minor: units * 100,
                    refunded_minor: 0,
                    rep: if with_rep { rep_id.clone() } else { String::new() },
                };
                app.app.record_sale(&p.sale(None)).await.unwrap();
                paid.push(p);
            }
            Op::Replay { order } | Op::Refund { order, .. } if order >= paid.len() => {}
            Op::Replay { order } => {
                let again = app.app.record_sale(&paid[order].sale(None)).await.unwrap();
                assert_eq!(again, retail_channel_partner::Applied::Duplicate);
            }
            Op::Refund { order, percent } => {
                let p = &mut paid[order];
                let amount = (p.amount_minor * percent / 100).min(p.amount_minor - p.refunded_minor);
                if amount > 0 {
                    p.refunded_minor += amount;
                    let reference = format!("return-{step}");
                    app.app.record_sale(&p.sale(Some((&reference, amount)))).await.unwrap();
                }
            }
            Op::Action { collective } => {
                inc.record_action(authed(pb::RecordActionRequest {
                    parent: ledgers[usize::from(!collective)].clone(),
                    action: "training_completed".into(),
                    reference: format!("course-{step}"),
                }))
                .await
                .unwrap();
            }
            Op::Redeem { collective, quantity } => {
                let ledger = &ledgers[usize::from(!collective)];
                let before = app.ledger(ledger).await.balance;
                let result = inc
                    .request_redemption(authed(pb::RequestRedemptionRequest {
                        parent: ledger.clone(),
                        redemption: Some(pb::Redemption {
                            catalog_item: if collective {
                                rebate.name.clone()
                            } else {
                                gift.name.clone()
                            },
                            quantity,
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    }))
                    .await;
                match result {
                    Ok(r) => {
                        assert!(before >= 40 * quantity);
                        redemptions.push(r.into_inner().name);
                    }
                    Err(err) => {
                        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
                        assert!(before < 40 * quantity, "refused with {before} points: {err:?}");
                        assert_eq!(app.ledger(ledger).await.balance, before, "nothing half-written");
                    }
                }
            }
            Op::Approve { redemption } | Op::Reject { redemption } if redemption >= redemptions.len() => {}
            Op::Approve { redemption } => {
                let _ = inc
                    .approve_redemption(authed(pb::ApproveRedemptionRequest {
                        name: redemptions[redemption].clone(),
                        reason: String::new(),
                    }))
                    .await;
            }
            Op::Reject { redemption } => {
                let _ = inc
                    .reject_redemption(authed(pb::RejectRedemptionRequest {
                        name: redemptions[redemption].clone(),
                        reason: "no".into(),
                    }))
                    .await;
            }
        }
        for ledger in &ledgers {
            check_ledger(&app, ledger).await;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn ledgers_never_go_negative_and_always_equal_the_sum_of_their_entries(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run(ops));
    }
}

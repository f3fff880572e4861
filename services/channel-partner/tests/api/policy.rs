//! The price policy: discount rules, their checks, and the evaluation of a
//! partner's basket (combination under the level's ceiling, cumulative volume
//! from attributed sales, isolation between partners).

use chrono::{Duration, Utc};
use prost::Message;
use retail_kit::convert::timestamp;
use retail_proto::events::event_log_service_client::EventLogServiceClient;
use retail_proto::events::{self as ev};
use retail_proto::partner::{self as pb};
use tonic::Code;

use crate::helpers::*;

fn band(from_minor: i64, to_minor: i64, rate_bp: i32) -> pb::DiscountBand {
    pb::DiscountBand {
        from_minor,
        to_minor,
        rate_bp,
    }
}

fn valid_since_yesterday(mut rule: pb::DiscountRule) -> pb::DiscountRule {
    rule.valid_from = Some(timestamp(Utc::now() - Duration::days(1)));
    rule
}

fn total(bands: Vec<pb::DiscountBand>) -> pb::DiscountRule {
    valid_since_yesterday(pb::DiscountRule {
        kind: pb::DiscountRuleKind::Total.into(),
        bands,
        ..Default::default()
    })
}

fn cumulative(bands: Vec<pb::DiscountBand>) -> pb::DiscountRule {
    valid_since_yesterday(pb::DiscountRule {
        kind: pb::DiscountRuleKind::Cumulative.into(),
        period_kind: pb::PeriodKind::Quarter.into(),
        bands,
        ..Default::default()
    })
}

fn installation(rate_bp: i32) -> pb::DiscountRule {
    valid_since_yesterday(pb::DiscountRule {
        kind: pb::DiscountRuleKind::Functional.into(),
        function: pb::PartnerFunction::Installation.into(),
        rate_bp,
        ..Default::default()
    })
}

impl TestApp {
    async fn rule(&self, rule: pb::DiscountRule) -> Result<pb::DiscountRule, tonic::Status> {
        self.policy()
            .create_discount_rule(authed(pb::CreateDiscountRuleRequest {
                discount_rule: Some(rule),
                request_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn evaluate(
        &self,
        request: impl FnOnce(pb::EvaluatePolicyRequest) -> tonic::Request<pb::EvaluatePolicyRequest>,
        partner: &str,
        functions: &[pb::PartnerFunction],
    ) -> Result<pb::EvaluatePolicyResponse, tonic::Status> {
        self.policy()
            .evaluate_policy(request(pb::EvaluatePolicyRequest {
                partner: format!("partners/{partner}"),
                lines: vec![
                    pb::BasketLine {
                        sku: "PUMP-1".into(),
                        unit_price_minor: 500_00,
                        quantity: 2,
                    },
                    pb::BasketLine {
                        sku: "VALVE-2".into(),
                        unit_price_minor: 10_00,
                        quantity: 1,
                    },
                ],
                functions: functions.iter().map(|f| *f as i32).collect(),
            }))
            .await
            .map(|r| r.into_inner())
    }
}

fn amounts(line: &pb::PricedLine) -> Vec<(String, i64)> {
    line.discounts
        .iter()
        .map(|d| (d.rule.clone(), d.amount_minor))
        .collect()
}

#[tokio::test]
async fn rules_apply_one_after_the_other_line_by_line_and_stop_at_the_level_ceiling() {
    let app = spawn_app().await;
    app.active("acme").await;
    let t = app.rule(total(vec![band(100_00, 0, 200)])).await.unwrap();
    let f = app.rule(installation(300)).await.unwrap();
    assert_eq!(
        app.policy()
            .get_discount_rule(authed(pb::GetDiscountRuleRequest { name: t.name.clone() }))
            .await
            .unwrap()
            .into_inner(),
        t
    );

    // Basket 1010.00: the total band applies to both lines; installation only
    // when the partner installs.
    let plain = app.evaluate(authed, "acme", &[]).await.unwrap();
    assert_eq!(plain.gross_minor, 1_010_00);
    assert_eq!(amounts(&plain.lines[0]), [(t.name.clone(), 20_00)]);
    assert_eq!(amounts(&plain.lines[1]), [(t.name.clone(), 20)]);
    assert_eq!(plain.discount_minor, 20_20);
    assert_eq!(plain.net_minor, 1_010_00 - 20_20);
    assert_eq!(plain.level, "registered");
    assert_eq!(plain.discount_ceiling_bp, 500);

    // 2% of 1000.00, then 3% of the remaining 980.00.
    let installing = app
        .evaluate(authed, "acme", &[pb::PartnerFunction::Installation])
        .await
        .unwrap();
    assert_eq!(
        amounts(&installing.lines[0]),
        [(t.name.clone(), 20_00), (f.name.clone(), 29_40)]
    );
    assert!(!installing.lines[0].capped);

    // A cumulative 1% comes between them; the functional discount is then cut to
    // the registered level's 5% ceiling (50.00 on 1000.00).
    let c = app.rule(cumulative(vec![band(0, 0, 100)])).await.unwrap();
    let capped = app
        .evaluate(authed, "acme", &[pb::PartnerFunction::Installation])
        .await
        .unwrap();
    assert_eq!(
        amounts(&capped.lines[0]),
        [(t.name.clone(), 20_00), (c.name.clone(), 9_80), (f.name.clone(), 20_20)]
    );
    assert!(capped.lines[0].capped);
    assert_eq!(capped.lines[0].discount_minor, 50_00);

    // A deleted rule no longer applies and is gone.
    app.policy()
        .delete_discount_rule(authed(pb::DeleteDiscountRuleRequest { name: f.name.clone() }))
        .await
        .unwrap();
    let after = app
        .evaluate(authed, "acme", &[pb::PartnerFunction::Installation])
        .await
        .unwrap();
    assert!(after.lines[0].discounts.iter().all(|d| d.rule != f.name));
    let gone = app
        .policy()
        .get_discount_rule(authed(pb::GetDiscountRuleRequest { name: f.name.clone() }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let listed = app
        .policy()
        .list_discount_rules(authed(pb::ListDiscountRulesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.discount_rules.len(), 2);
}

#[tokio::test]
async fn rules_out_of_validity_or_for_other_levels_do_not_apply() {
    let app = spawn_app().await;
    app.active("acme").await;
    let mut expired = total(vec![band(0, 0, 100)]);
    expired.valid_from = Some(timestamp(Utc::now() - Duration::days(10)));
    expired.valid_until = Some(timestamp(Utc::now() - Duration::days(1)));
    app.rule(expired).await.unwrap();
    let mut future = total(vec![band(0, 0, 100)]);
    future.valid_from = Some(timestamp(Utc::now() + Duration::days(1)));
    app.rule(future).await.unwrap();
    let mut gold_only = total(vec![band(0, 0, 100)]);
    gold_only.levels = vec!["gold".into()];
    app.rule(gold_only).await.unwrap();
    let e = app.evaluate(authed, "acme", &[]).await.unwrap();
    assert_eq!(e.discount_minor, 0);
    let mut registered = total(vec![band(0, 0, 100)]);
    registered.levels = vec!["registered".into()];
    app.rule(registered).await.unwrap();
    let e = app.evaluate(authed, "acme", &[]).await.unwrap();
    assert_eq!(e.discount_minor, 10_10);
}

#[tokio::test]
async fn a_cumulative_rule_follows_the_partners_attributed_sales_in_the_period() {
    let app = spawn_app().await;
    app.active("acme").await;
    app.rule(cumulative(vec![band(0, 300_00, 100), band(300_00, 0, 400)]))
        .await
        .unwrap();
    let before = app.evaluate(authed, "acme", &[]).await.unwrap();
    assert_eq!(before.lines[0].discounts[0].rate_bp, 100);
    // Exactly the tier's lower bound reaches it.
    app.orders.paid("o-1", "acme", "", 300_00, Utc::now()).await;
    let after = app
        .eventually(
            "the sale counted",
            || app.evaluate(authed, "acme", &[]),
            |e| e.as_ref().is_ok_and(|e| e.discount_minor > before.discount_minor),
        )
        .await
        .unwrap();
    assert_eq!(after.lines[0].discounts[0].rate_bp, 400);
    assert_eq!(after.lines[0].discount_minor, 40_00);
}

#[tokio::test]
async fn bad_rules_get_every_field_violation_and_nothing_is_written() {
    let app = spawn_app().await;
    let mut bad = total(vec![
        band(-1, 100_00, 100),
        band(50_00, 40_00, 200),
        band(45_00, 0, 20_000),
    ]);
    bad.valid_until = Some(timestamp(Utc::now() - Duration::days(2)));
    let err = app.rule(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violated_fields(&err);
    for f in [
        "discount_rule.bands[0].from",
        "discount_rule.bands[1].to",
        "discount_rule.bands[1].from",
        "discount_rule.bands[2].rate_bp",
        "discount_rule.valid_until",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} in {fields:?}");
    }
    let err = app.rule(installation(0)).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["discount_rule.rate_bp"]);
    let mut unknown_level = installation(100);
    unknown_level.levels = vec!["diamond".into()];
    assert_eq!(app.rule(unknown_level).await.unwrap_err().code(), Code::InvalidArgument);
    let listed = app
        .policy()
        .list_discount_rules(authed(pb::ListDiscountRulesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.discount_rules.is_empty());

    // Negative prices and empty quantities in a basket.
    app.active("acme").await;
    let err = app
        .policy()
        .evaluate_policy(authed(pb::EvaluatePolicyRequest {
            partner: "partners/acme".into(),
            lines: vec![pb::BasketLine {
                sku: "A".into(),
                unit_price_minor: -1,
                quantity: 0,
            }],
            functions: vec![],
        }))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["lines[0].unit_price_minor", "lines[0].quantity"]
    );
}

#[tokio::test]
async fn a_partner_evaluates_only_its_own_baskets_and_cannot_set_rules() {
    let app = spawn_app().await;
    app.active("acme").await;
    app.active("bolt").await;
    app.rule(total(vec![band(0, 0, 100)])).await.unwrap();
    let own = app.evaluate(|m| as_partner("acme", m), "acme", &[]).await.unwrap();
    assert_eq!(own.discount_minor, 10_10);
    assert!(app.list_specials("acme", "partners/acme").await.unwrap().is_empty());
    let other = app.evaluate(|m| as_partner("acme", m), "bolt", &[]).await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    let unknown = app.evaluate(authed, "ghost", &[]).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    // Only admitted partners are priced or ask for special discounts.
    app.create("cord").await.unwrap();
    let applied = app.evaluate(authed, "cord", &[]).await.unwrap_err();
    assert_eq!(applied.code(), Code::FailedPrecondition);
    let asked = app.ask_special("cord", "basket-1", 100).await.unwrap_err();
    assert_eq!(asked.code(), Code::FailedPrecondition);
    let denied = app
        .policy()
        .create_discount_rule(as_partner(
            "acme",
            pb::CreateDiscountRuleRequest {
                discount_rule: Some(total(vec![band(0, 0, 100)])),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert!(matches!(denied.code(), Code::PermissionDenied), "{denied:?}");
}

fn special(reference: &str, rate_bp: i32) -> pb::SpecialDiscount {
    pb::SpecialDiscount {
        reference: reference.into(),
        rate_bp,
        reason: "competing offer".into(),
        ..Default::default()
    }
}

impl TestApp {
    async fn ask_special(
        &self,
        partner: &str,
        reference: &str,
        rate_bp: i32,
    ) -> Result<pb::SpecialDiscount, tonic::Status> {
        self.policy()
            .request_special_discount(as_partner(
                partner,
                pb::RequestSpecialDiscountRequest {
                    parent: format!("partners/{partner}"),
                    special_discount: Some(special(reference, rate_bp)),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn consume_as(
        &self,
        partner: &str,
        name: &str,
        reference: &str,
    ) -> Result<pb::SpecialDiscount, tonic::Status> {
        self.policy()
            .consume_special_discount(as_partner(
                partner,
                pb::ConsumeSpecialDiscountRequest {
                    name: name.into(),
                    reference: reference.into(),
                    consumer: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }
}

impl TestApp {
    async fn list_specials(&self, partner: &str, parent: &str) -> Result<Vec<pb::SpecialDiscount>, tonic::Status> {
        self.policy()
            .list_special_discounts(as_partner(
                partner,
                pb::ListSpecialDiscountsRequest {
                    parent: parent.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner().special_discounts)
    }

    /// The first `n` SpecialDiscountDecided events of the service's event log.
    async fn decided_events(&self, n: usize) -> Vec<ev::SpecialDiscountDecided> {
        let mut log = EventLogServiceClient::new(
            tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect_lazy(),
        );
        let mut stream = log
            .subscribe(with_token(
                &staff_token(&["events.read"]),
                ev::SubscribeRequest {
                    after_position: 0,
                    max_batch_size: 100,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let mut found = Vec::new();
        while found.len() < n {
            let batch = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
                .await
                .expect("the events in time")
                .unwrap()
                .unwrap();
            for e in batch.events {
                if e.r#type == "retail.events.v1.SpecialDiscountDecided" {
                    let payload = e.payload.unwrap().value;
                    found.push(ev::SpecialDiscountDecided::decode(payload.as_slice()).unwrap());
                }
            }
        }
        found
    }
}

fn decisions(s: &pb::SpecialDiscount) -> Vec<String> {
    s.decisions.iter().map(|d| d.decision.clone()).collect()
}

#[tokio::test]
async fn a_special_discount_above_the_ceiling_waits_for_approval_and_is_used_once() {
    let app = spawn_app().await;
    app.active("acme").await;
    // Registered: 5% ceiling.
    let asked = app.ask_special("acme", "basket-1", 1_200).await.unwrap();
    assert_eq!(asked.state, pb::SpecialDiscountState::Pending as i32);
    assert_eq!(asked.discount_ceiling_bp, 500);
    assert_eq!(decisions(&asked), ["pending"]);
    assert_eq!(asked.decisions[0].actor, "user-of-acme");

    // Unusable before approval; the partner cannot approve its own.
    let early = app.consume_as("acme", &asked.name, "basket-1").await.unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition);
    let self_approval = app
        .policy()
        .approve_special_discount(as_partner(
            "acme",
            pb::ApproveSpecialDiscountRequest {
                name: asked.name.clone(),
                reason: "mine".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(self_approval.code(), Code::PermissionDenied);

    let approved = app
        .policy()
        .approve_special_discount(authed(pb::ApproveSpecialDiscountRequest {
            name: asked.name.clone(),
            reason: "strategic account".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.state, pb::SpecialDiscountState::Approved as i32);
    assert_eq!(decisions(&approved), ["pending", "approved"]);
    assert_eq!(approved.decisions[1].reason, "strategic account");
    assert!(approved.decisions[1].decide_time.is_some());
    // Decided once: a second decision finds it approved.
    let again = app
        .policy()
        .reject_special_discount(authed(pb::RejectSpecialDiscountRequest {
            name: asked.name.clone(),
            reason: "changed my mind".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Only on its own reference.
    let elsewhere = app.consume_as("acme", &asked.name, "basket-2").await.unwrap_err();
    assert_eq!(violated_fields(&elsewhere), ["reference"]);

    // Eight concurrent uses: exactly one wins.
    let results = futures::future::join_all((0..8).map(|_| app.consume_as("acme", &asked.name, "basket-1"))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r.code(), Code::FailedPrecondition | Code::Aborted), "{r:?}");
    }
    let used = app
        .policy()
        .get_special_discount(authed(pb::GetSpecialDiscountRequest {
            name: asked.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(used.state, pb::SpecialDiscountState::Consumed as i32);
    assert_eq!(decisions(&used), ["pending", "approved", "consumed"]);
    let later = app.consume_as("acme", &asked.name, "basket-1").await.unwrap_err();
    assert_eq!(later.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_special_discount_under_the_ceiling_is_granted_at_once_and_a_rejected_one_is_never_usable() {
    let app = spawn_app().await;
    app.active("acme").await;
    let granted = app.ask_special("acme", "basket-1", 500).await.unwrap();
    assert_eq!(granted.state, pb::SpecialDiscountState::Granted as i32);
    assert_eq!(decisions(&granted), ["pending", "granted"]);
    app.consume_as("acme", &granted.name, "basket-1").await.unwrap();
    let twice = app.consume_as("acme", &granted.name, "basket-1").await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);

    let asked = app.ask_special("acme", "basket-2", 501).await.unwrap();
    assert_eq!(asked.state, pb::SpecialDiscountState::Pending as i32);
    let rejected = app
        .policy()
        .reject_special_discount(authed(pb::RejectSpecialDiscountRequest {
            name: asked.name.clone(),
            reason: "margin too thin".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decisions(&rejected), ["pending", "rejected"]);
    let after = app.consume_as("acme", &asked.name, "basket-2").await.unwrap_err();
    assert_eq!(after.code(), Code::FailedPrecondition);

    // Bad requests: every violation at once, nothing written.
    let err = app
        .policy()
        .request_special_discount(as_partner(
            "acme",
            pb::RequestSpecialDiscountRequest {
                parent: "partners/acme".into(),
                special_discount: Some(pb::SpecialDiscount {
                    reference: String::new(),
                    rate_bp: 10_001,
                    reason: String::new(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        [
            "special_discount.reference",
            "special_discount.rate_bp",
            "special_discount.reason"
        ]
    );
    let listed = app.list_specials("acme", "partners/acme").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].name, asked.name, "newest first");
    assert_eq!(decisions(&listed[0]), ["pending", "rejected"]);

    // The grant and the rejection were published, with the decision and reason.
    let events = app.decided_events(2).await;
    assert_eq!(events[0].special_discount, granted.name);
    assert_eq!(events[0].decision, "granted");
    assert_eq!(events[1].special_discount, asked.name);
    assert_eq!(events[1].decision, "rejected");
    assert_eq!(events[1].reason, "margin too thin");
    assert_eq!(events[1].rate_bp, 501);
    assert_eq!(events[1].partner_id, "acme");
}

#[tokio::test]
async fn a_partner_sees_and_uses_only_its_own_special_discounts() {
    let app = spawn_app().await;
    app.active("acme").await;
    app.active("bolt").await;
    let mine = app.ask_special("acme", "basket-1", 100).await.unwrap();
    app.ask_special("bolt", "basket-9", 100).await.unwrap();
    // bolt asking on acme's behalf, reading or using acme's request: NOT_FOUND.
    let on_behalf = app
        .policy()
        .request_special_discount(as_partner(
            "bolt",
            pb::RequestSpecialDiscountRequest {
                parent: "partners/acme".into(),
                special_discount: Some(special("basket-1", 100)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(on_behalf.code(), Code::NotFound);
    let read = app
        .policy()
        .get_special_discount(as_partner(
            "bolt",
            pb::GetSpecialDiscountRequest {
                name: mine.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::NotFound);
    let used = app.consume_as("bolt", &mine.name, "basket-1").await.unwrap_err();
    assert_eq!(used.code(), Code::NotFound);
    // The same id under bolt's name is not acme's request either.
    let renamed = mine.name.replace("partners/acme", "partners/bolt");
    let used = app.consume_as("bolt", &renamed, "basket-1").await.unwrap_err();
    assert_eq!(used.code(), Code::NotFound);
    let listed = app.list_specials("bolt", "partners/acme").await.unwrap_err();
    assert_eq!(listed.code(), Code::NotFound);
    let own = app.list_specials("bolt", "partners/bolt").await.unwrap();
    assert_eq!(own.len(), 1);
    assert!(own[0].name.starts_with("partners/bolt/"));
    // Still unused by acme.
    app.consume_as("acme", &mine.name, "basket-1").await.unwrap();
}

impl TestApp {
    async fn update_rule(&self, rule: pb::DiscountRule, paths: &[&str]) -> Result<pb::DiscountRule, tonic::Status> {
        self.policy()
            .update_discount_rule(authed(pb::UpdateDiscountRuleRequest {
                discount_rule: Some(rule),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            }))
            .await
            .map(|r| r.into_inner())
    }
}

#[tokio::test]
async fn a_rule_ended_by_an_update_no_longer_applies_and_bad_updates_are_field_violations() {
    let app = spawn_app().await;
    app.active("acme").await;
    let mut rule = total(vec![band(0, 0, 100)]);
    rule.display_name = "spring campaign".into();
    let created = app.rule(rule).await.unwrap();
    assert_eq!(created.display_name, "spring campaign");
    let e = app.evaluate(authed, "acme", &[]).await.unwrap();
    assert_eq!(e.discount_minor, 10_10);

    // Only the masked fields change: the bands sent along are ignored.
    let mut ended = created.clone();
    ended.valid_until = Some(timestamp(Utc::now() - Duration::minutes(1)));
    ended.display_name = "spring campaign (ended)".into();
    ended.bands = vec![band(0, 0, 9_000)];
    let updated = app
        .update_rule(ended.clone(), &["valid_until", "display_name"])
        .await
        .unwrap();
    assert_eq!(updated.display_name, "spring campaign (ended)");
    assert_eq!(updated.bands, created.bands);
    assert_eq!(
        updated.valid_until.as_ref().map(|t| t.seconds),
        ended.valid_until.as_ref().map(|t| t.seconds)
    );
    let read = app
        .policy()
        .get_discount_rule(authed(pb::GetDiscountRuleRequest {
            name: created.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, updated);
    let e = app.evaluate(authed, "acme", &[]).await.unwrap();
    assert_eq!(e.discount_minor, 0, "an ended rule still applied");

    // Open-ended again (valid_until masked and unset).
    let mut reopened = created.clone();
    reopened.valid_until = None;
    let updated = app.update_rule(reopened, &["valid_until"]).await.unwrap();
    assert!(updated.valid_until.is_none());
    assert_eq!(updated.display_name, "spring campaign (ended)");
    assert_eq!(app.evaluate(authed, "acme", &[]).await.unwrap().discount_minor, 10_10);

    // An end not after the start.
    let mut before = created.clone();
    before.valid_until = Some(timestamp(Utc::now() - Duration::days(2)));
    let err = app.update_rule(before, &["valid_until"]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["discount_rule.valid_until"]);
    // No mask, an unknown path, a bad name.
    let err = app.update_rule(created.clone(), &[]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["update_mask"]);
    let err = app.update_rule(created.clone(), &["bands"]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["update_mask"]);
    let mut nameless = created.clone();
    nameless.name = "rules/x".into();
    let err = app.update_rule(nameless, &["display_name"]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["discount_rule.name"]);
    let mut unknown = created.clone();
    unknown.name = "discountRules/0190f5b2-8d3e-7c41-9a6b-2f0e1d3c4b5a".into();
    let err = app.update_rule(unknown, &["display_name"]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Partners cannot change the policy.
    let err = app
        .policy()
        .update_discount_rule(as_partner(
            "acme",
            pb::UpdateDiscountRuleRequest {
                discount_rule: Some(created.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["valid_until".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert!(matches!(err.code(), Code::PermissionDenied | Code::NotFound), "{err:?}");
    // Nothing was written by the refused updates.
    let read = app
        .policy()
        .get_discount_rule(authed(pb::GetDiscountRuleRequest {
            name: created.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(read.valid_until.is_none());
}

#[tokio::test]
async fn a_named_consumer_uses_a_special_discount_once_and_may_ask_again() {
    let app = spawn_app().await;
    app.active("acme").await;
    let granted = app.ask_special("acme", "order-7", 300).await.unwrap();
    assert_eq!(granted.state, pb::SpecialDiscountState::Granted as i32);
    let consume = |consumer: &'static str| {
        let mut client = app.policy();
        let name = granted.name.clone();
        async move {
            client
                .consume_special_discount(authed(pb::ConsumeSpecialDiscountRequest {
                    name,
                    reference: "order-7".into(),
                    consumer: consumer.into(),
                }))
                .await
        }
    };
    // Concurrent calls of one consumer: all answer the consumed request.
    let results = futures::future::join_all((0..6).map(|_| consume("orders/a"))).await;
    for r in &results {
        let r = r.as_ref().unwrap().get_ref();
        assert_eq!(r.state, pb::SpecialDiscountState::Consumed as i32);
    }
    let again = consume("orders/a").await.unwrap().into_inner();
    assert_eq!(
        decisions(&again),
        ["pending", "granted", "consumed"],
        "used more than once"
    );
    assert_eq!(again.decisions[2].reason, "orders/a");
    // Another consumer is refused.
    let other = consume("orders/b").await.unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition);
    let bad = consume("two\nlines").await.unwrap_err();
    assert_eq!(violated_fields(&bad), ["consumer"]);
}

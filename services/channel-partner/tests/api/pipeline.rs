//! Opportunities through the pipeline: forward one stage at a time or to lost,
//! illegal moves change nothing, every change timed and attributed, conversion
//! and time in stage per partner and per rep against values computed here.

use chrono::Duration;
use retail_proto::events as ev;
use retail_proto::partner::{self as pb};
use tonic::Code;

use crate::helpers::*;

use pb::PipelineStage as S;

impl TestApp {
    async fn opportunity(&self, partner: &str, rep: &str, title: &str) -> pb::Opportunity {
        self.opportunities()
            .create_opportunity(as_partner(
                partner,
                pb::CreateOpportunityRequest {
                    parent: format!("partners/{partner}"),
                    opportunity: Some(pb::Opportunity {
                        title: title.into(),
                        customer: Some(pb::Customer {
                            display_name: format!("Customer of {title}"),
                            region: "north".into(),
                            tax_id: String::new(),
                        }),
                        sales_rep: rep.into(),
                        amount_minor: 10_000_00,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn move_to(
        &self,
        partner: &str,
        name: &str,
        stage: S,
        reason: &str,
    ) -> Result<pb::Opportunity, tonic::Status> {
        self.opportunities()
            .move_opportunity(as_partner(
                partner,
                pb::MoveOpportunityRequest {
                    name: name.into(),
                    stage: stage.into(),
                    reason: reason.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn report(&self, partner: &str, rep: &str) -> pb::PipelineReport {
        self.opportunities()
            .get_pipeline_report(authed(pb::GetPipelineReportRequest {
                partner: format!("partners/{partner}"),
                sales_rep: rep.into(),
            }))
            .await
            .unwrap()
            .into_inner()
    }
}

fn line(r: &pb::PipelineReport, stage: S) -> pb::StageReport {
    r.stages.iter().find(|l| l.stage == stage as i32).cloned().unwrap()
}

#[tokio::test]
async fn an_opportunity_moves_forward_one_stage_at_a_time_or_to_lost_and_nothing_else() {
    let app = spawn_app().await;
    app.active("acme").await;
    let o = app.opportunity("acme", "", "pumps").await;
    assert_eq!(o.stage, S::Identified as i32);
    assert_eq!(o.stage_changes.len(), 1);
    // Skipping a stage or going back is refused and changes nothing.
    for illegal in [S::Confirmed, S::Won, S::Identified, S::Negotiating] {
        let status = app.move_to("acme", &o.name, illegal, "").await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{illegal:?}");
    }
    let unchanged = app
        .opportunities()
        .get_opportunity(authed(pb::GetOpportunityRequest { name: o.name.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, o);
    // The funnel in order, each change timed by the service's clock and attributed.
    let stages = [S::Proposed, S::Confirmed, S::Understood, S::Negotiating, S::Won];
    let mut last = o.clone();
    for (i, stage) in stages.iter().enumerate() {
        app.app.advance_clock(Duration::hours(1));
        last = app.move_to("acme", &o.name, *stage, "").await.unwrap();
        assert_eq!(last.stage, *stage as i32);
        let change = last.stage_changes.last().unwrap();
        assert_eq!(change.actor, "user-of-acme");
        assert_eq!(
            change.from_stage,
            stages.get(i.wrapping_sub(1)).copied().unwrap_or(S::Identified) as i32
        );
        // Whole seconds: the clock's own progress may cross one boundary.
        let elapsed = change.change_time.unwrap().seconds - o.create_time.unwrap().seconds;
        assert!((0..=1).contains(&(elapsed - 3600 * (i as i64 + 1))), "{elapsed}");
    }
    // Won is final: not even lost.
    assert_eq!(
        app.move_to("acme", &o.name, S::Lost, "changed mind")
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(last.stage_changes.len(), 6);
    // Lost from an open stage needs a reason, then is final.
    let other = app.opportunity("acme", "", "valves").await;
    let status = app.move_to("acme", &other.name, S::Lost, "").await.unwrap_err();
    assert_eq!(violated_fields(&status), ["reason"]);
    app.move_to("acme", &other.name, S::Lost, "budget cut").await.unwrap();
    assert_eq!(
        app.move_to("acme", &other.name, S::Proposed, "")
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let events = app.events::<ev::OpportunityStageChanged>(8).await;
    assert_eq!(events.iter().filter(|e| e.opportunity == o.name).count(), 6);
    assert_eq!(events.last().unwrap().to_stage, "lost");
}

#[tokio::test]
async fn conversion_and_time_in_stage_per_partner_and_rep() {
    let app = spawn_app().await;
    app.active("acme").await;
    app.active("other").await;
    let ann = app.rep("acme", "0190f5b2-8d3e-7c41-9a6b-0000000000a1").await.name;
    let bob = app.rep("acme", "0190f5b2-8d3e-7c41-9a6b-0000000000b1").await.name;
    // Ann: a -> proposed after 2h -> confirmed after 3h more; b -> lost after 1h.
    // Bob: c -> proposed after 4h; d stays identified.
    let a = app.opportunity("acme", &ann, "a").await.name;
    let b = app.opportunity("acme", &ann, "b").await.name;
    let c = app.opportunity("acme", &bob, "c").await.name;
    let _d = app.opportunity("acme", &bob, "d").await.name;
    app.app.advance_clock(Duration::hours(1));
    app.move_to("acme", &b, S::Lost, "no budget").await.unwrap();
    app.app.advance_clock(Duration::hours(1));
    app.move_to("acme", &a, S::Proposed, "").await.unwrap();
    app.app.advance_clock(Duration::hours(2));
    app.move_to("acme", &c, S::Proposed, "").await.unwrap();
    app.app.advance_clock(Duration::hours(1));
    app.move_to("acme", &a, S::Confirmed, "").await.unwrap();
    // Another partner's pipeline does not count.
    let x = app.opportunity("other", "", "x").await.name;
    app.move_to("other", &x, S::Proposed, "").await.unwrap();

    // The whole partner: 4 identified, 2 proposed, 1 confirmed.
    let r = app.report("acme", "").await;
    let identified = line(&r, S::Identified);
    assert_eq!((identified.reached, identified.current), (4, 1));
    assert_eq!(identified.conversion_to_next_bp, 2 * 10_000 / 4);
    assert_eq!(identified.completed_stays, 3);
    // Stays: a 2h, b 1h, c 4h (the creations are within the same instant).
    let mean = (2 + 1 + 4) * 3600 / 3;
    assert!((identified.mean_seconds_in_stage - mean).abs() <= 1, "{identified:?}");
    let proposed = line(&r, S::Proposed);
    assert_eq!((proposed.reached, proposed.current), (2, 1));
    assert_eq!(proposed.conversion_to_next_bp, 10_000 / 2);
    assert_eq!(proposed.completed_stays, 1);
    assert_eq!(proposed.mean_seconds_in_stage, 3 * 3600);
    assert_eq!(line(&r, S::Confirmed).conversion_to_next_bp, 0);
    assert_eq!(line(&r, S::Lost).current, 1);
    assert_eq!(r.stages.len(), 7);

    // Ann only: a and b.
    let r = app.report("acme", &ann).await;
    let identified = line(&r, S::Identified);
    assert_eq!((identified.reached, identified.current), (2, 0));
    assert_eq!(identified.conversion_to_next_bp, 5_000);
    assert_eq!(line(&r, S::Proposed).conversion_to_next_bp, 10_000);
    // Bob only: c and d.
    let r = app.report("acme", &bob).await;
    assert_eq!(line(&r, S::Identified).reached, 2);
    assert_eq!(line(&r, S::Identified).current, 1);
    assert_eq!(line(&r, S::Proposed).current, 1);
    assert_eq!(line(&r, S::Confirmed).reached, 0);

    // Isolation: "other" sees neither acme's opportunities nor its report.
    let status = app
        .opportunities()
        .get_opportunity(as_partner("other", pb::GetOpportunityRequest { name: a.clone() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        app.move_to("other", &a, S::Understood, "").await.unwrap_err().code(),
        Code::NotFound
    );
    let status = app
        .opportunities()
        .get_pipeline_report(as_partner(
            "other",
            pb::GetPipelineReportRequest {
                partner: "partners/acme".into(),
                sales_rep: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let listed = app
        .opportunities()
        .list_opportunities(as_partner(
            "other",
            pb::ListOpportunitiesRequest {
                parent: "partners/other".into(),
                page_size: 10,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .opportunities;
    assert_eq!(listed.iter().map(|o| o.name.clone()).collect::<Vec<_>>(), [x]);
}

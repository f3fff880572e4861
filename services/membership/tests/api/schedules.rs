//! Recurring planned campaigns over gRPC: each occurrence of the schedule evaluates
//! the audience anew and contacts those who newly qualify, nobody twice; missed
//! occurrences are made up by one run; the campaign finishes after its last
//! occurrence; bad schedules are refused with their fields.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc, Weekday};
use retail_kit::convert::{from_timestamp, timestamp};
use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::segment_rule::Rule as R;
use retail_proto::membership::{self as pb};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

fn engagement(app: &TestApp) -> EngagementServiceClient<Channel> {
    EngagementServiceClient::new(app.channel.clone())
}

async fn member(app: &TestApp, n: u32) -> String {
    let name = app
        .register("M", vec![phone(&format!("+49152000{n:05}"))])
        .await
        .unwrap()
        .name;
    app.client()
        .set_consent(authed(pb::SetConsentRequest {
            name: name.clone(),
            consent: Some(pb::Consent {
                channel: pb::ConsentChannel::Email as i32,
                granted: true,
                source: "app".into(),
                update_time: None,
            }),
        }))
        .await
        .unwrap();
    name
}

/// Gives the member the tag the campaign's segment asks for.
async fn qualify(app: &TestApp, member: &str) {
    app.client()
        .set_tags(authed(pb::SetTagsRequest {
            name: member.into(),
            set: vec![pb::Tag {
                path: "interest/outdoor".into(),
                ..Default::default()
            }],
            remove_paths: vec![],
        }))
        .await
        .unwrap();
}

async fn outdoor_segment(app: &TestApp) -> String {
    engagement(app)
        .create_segment(authed(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "outdoor".into(),
                rule: Some(pb::SegmentRule {
                    rule: Some(R::Tag(pb::TagCondition {
                        path: "interest/outdoor".into(),
                        value: String::new(),
                    })),
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .name
}

fn recurring(segment: &str, start: DateTime<Utc>, end: DateTime<Utc>, schedule: pb::CampaignSchedule) -> pb::Campaign {
    pb::Campaign {
        display_name: "weekly outdoor news".into(),
        segment: segment.into(),
        channel: pb::ConsentChannel::Email as i32,
        trigger: pb::CampaignTrigger::Planned as i32,
        action: pb::CampaignAction::Message as i32,
        message_template: "New trails this week".into(),
        start_time: Some(timestamp(start)),
        end_time: Some(timestamp(end)),
        schedule: Some(schedule),
        ..Default::default()
    }
}

async fn create(app: &TestApp, campaign: pb::Campaign) -> Result<pb::Campaign, tonic::Status> {
    engagement(app)
        .create_campaign(authed(pb::CreateCampaignRequest {
            campaign: Some(campaign),
            request_id: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
}

async fn get(app: &TestApp, name: &str) -> pb::Campaign {
    engagement(app)
        .get_campaign(authed(pb::GetCampaignRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
}

async fn schedule(app: &TestApp, name: &str) -> pb::Campaign {
    engagement(app)
        .schedule_campaign(authed(pb::ScheduleCampaignRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
}

fn next_run(c: &pb::Campaign) -> Option<DateTime<Utc>> {
    c.next_run_time.as_ref().and_then(from_timestamp)
}

fn day_of_week(w: Weekday) -> pb::DayOfWeek {
    match w {
        Weekday::Mon => pb::DayOfWeek::Monday,
        Weekday::Tue => pb::DayOfWeek::Tuesday,
        Weekday::Wed => pb::DayOfWeek::Wednesday,
        Weekday::Thu => pb::DayOfWeek::Thursday,
        Weekday::Fri => pb::DayOfWeek::Friday,
        Weekday::Sat => pb::DayOfWeek::Saturday,
        Weekday::Sun => pb::DayOfWeek::Sunday,
    }
}

#[tokio::test]
async fn a_weekly_campaign_reaches_the_newly_qualifying_at_each_occurrence_and_catches_up_once() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let segment = outdoor_segment(&app).await;
    let (a, b, c, d) = (
        member(&app, 1).await,
        member(&app, 2).await,
        member(&app, 3).await,
        member(&app, 4).await,
    );
    // The window opens at today's midnight (UTC); the campaign runs weekly on
    // tomorrow's weekday at 10:00, so the occurrences are o(0) .. o(4), a week
    // apart, and the window closes before a sixth.
    let now = Utc::now();
    let today = Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .unwrap();
    let o = |week: i64| today + Duration::days(1 + 7 * week) + Duration::hours(10);
    let weekly = pb::CampaignSchedule {
        frequency: Some(pb::campaign_schedule::Frequency::Weekly(pb::WeeklyFrequency {
            days: vec![day_of_week(o(0).weekday()) as i32],
        })),
        hour: 10,
        minute: 0,
        ..Default::default()
    };
    let created = create(
        &app,
        recurring(&segment, today, o(4) + Duration::days(6), weekly.clone()),
    )
    .await
    .unwrap();
    // The schedule is kept as given; a draft has no run due.
    assert_eq!(created.schedule, Some(weekly));
    assert_eq!(created.send_time, None);
    assert_eq!(next_run(&created), None);
    let scheduled = schedule(&app, &created.name).await;
    assert_eq!(next_run(&scheduled), Some(o(0)));

    qualify(&app, &a).await;
    // Before the first occurrence the campaign runs but contacts nobody.
    assert_eq!(state.run_campaigns(now).await.unwrap(), 0);
    let running = get(&app, &created.name).await;
    assert_eq!(running.state, pb::CampaignState::Running as i32);
    assert_eq!(next_run(&running), Some(o(0)));

    // Week 1: a qualifies.
    assert_eq!(state.run_campaigns(o(0) + Duration::hours(1)).await.unwrap(), 1);
    assert_eq!(next_run(&get(&app, &created.name).await), Some(o(1)));
    assert_eq!(state.run_campaigns(o(0) + Duration::hours(2)).await.unwrap(), 0);

    // Week 2: b qualifies too; a is not contacted again.
    qualify(&app, &b).await;
    assert_eq!(state.run_campaigns(o(1) + Duration::minutes(1)).await.unwrap(), 1);
    assert_eq!(next_run(&get(&app, &created.name).await), Some(o(2)));

    // Week 3 is missed (the service was down); in week 4 one run makes up for it
    // and moves on to week 5, not to the missed week 4 slot again.
    qualify(&app, &c).await;
    assert_eq!(state.run_campaigns(o(3) + Duration::hours(3)).await.unwrap(), 1);
    assert_eq!(next_run(&get(&app, &created.name).await), Some(o(4)));
    assert_eq!(state.run_campaigns(o(3) + Duration::hours(4)).await.unwrap(), 0);

    // Week 5, the last: d qualifies; the campaign then finishes.
    qualify(&app, &d).await;
    assert_eq!(state.run_campaigns(o(4) + Duration::minutes(5)).await.unwrap(), 1);
    let finished = get(&app, &created.name).await;
    assert_eq!(finished.state, pb::CampaignState::Finished as i32);
    assert_eq!(next_run(&finished), None);
    assert_eq!(finished.contacted_count, 4);
    assert_eq!(state.run_campaigns(o(4) + Duration::days(1)).await.unwrap(), 0);

    // Each member got exactly one message, and in the order they qualified.
    let sent = engagement(&app)
        .list_messages(authed(pb::ListMessagesRequest {
            parent: created.name.clone(),
            page_size: 50,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .messages;
    let recipients: Vec<&str> = sent.iter().map(|m| m.member.as_str()).collect();
    assert_eq!(recipients, vec![a.as_str(), b.as_str(), c.as_str(), d.as_str()]);
}

#[tokio::test]
async fn a_schedule_ends_after_its_count_and_a_cancelled_one_stops() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let segment = outdoor_segment(&app).await;
    let first = member(&app, 1).await;
    qualify(&app, &first).await;
    // Every 2 days at 06:30 from tomorrow's midnight, twice: days 1 and 3.
    let now = Utc::now();
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .unwrap()
        + Duration::days(1);
    let at = |day: i64| start + Duration::days(day) + Duration::minutes(6 * 60 + 30);
    let every_other_day = pb::CampaignSchedule {
        frequency: Some(pb::campaign_schedule::Frequency::Daily(pb::DailyFrequency {
            interval_days: 2,
        })),
        hour: 6,
        minute: 30,
        occurrence_count: 2,
        ..Default::default()
    };
    let c = create(
        &app,
        recurring(&segment, start, start + Duration::days(30), every_other_day.clone()),
    )
    .await
    .unwrap();
    schedule(&app, &c.name).await;
    assert_eq!(next_run(&get(&app, &c.name).await), Some(at(0)));
    assert_eq!(state.run_campaigns(at(0)).await.unwrap(), 1);
    assert_eq!(next_run(&get(&app, &c.name).await), Some(at(2)));
    let second = member(&app, 2).await;
    qualify(&app, &second).await;
    assert_eq!(state.run_campaigns(at(2)).await.unwrap(), 1);
    // Two occurrences: finished long before the window ends.
    let done = get(&app, &c.name).await;
    assert_eq!(
        (done.state, next_run(&done)),
        (pb::CampaignState::Finished as i32, None)
    );

    // A cancelled recurring campaign shows no next run and contacts nobody.
    let other = create(
        &app,
        recurring(&segment, start, start + Duration::days(30), every_other_day),
    )
    .await
    .unwrap();
    schedule(&app, &other.name).await;
    let cancelled = engagement(&app)
        .cancel_campaign(authed(pb::CancelCampaignRequest {
            name: other.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_run(&cancelled), None);
    assert_eq!(state.run_campaigns(at(2)).await.unwrap(), 0);
    assert_eq!(get(&app, &other.name).await.contacted_count, 0);
}

#[tokio::test]
async fn a_one_off_planned_campaign_shows_its_send_time_as_its_next_run() {
    let app = spawn_app().await;
    let state = app.state.clone().unwrap();
    let segment = outdoor_segment(&app).await;
    let m = member(&app, 1).await;
    qualify(&app, &m).await;
    let now = Utc::now();
    let send = now + Duration::hours(2);
    let c = create(
        &app,
        pb::Campaign {
            schedule: None,
            send_time: Some(timestamp(send)),
            ..recurring(
                &segment,
                now - Duration::hours(1),
                now + Duration::days(1),
                Default::default(),
            )
        },
    )
    .await
    .unwrap();
    schedule(&app, &c.name).await;
    let shown = next_run(&get(&app, &c.name).await).unwrap();
    assert!((shown - send).num_microseconds().unwrap_or(i64::MAX).abs() <= 1);
    assert_eq!(state.run_campaigns(now).await.unwrap(), 0);
    assert_eq!(state.run_campaigns(send).await.unwrap(), 1);
    let sent = get(&app, &c.name).await;
    // Sent: nothing is due any more, though it runs until its window ends.
    assert_eq!((sent.state, next_run(&sent)), (pb::CampaignState::Running as i32, None));
}

#[tokio::test]
async fn a_bad_schedule_is_refused_with_its_fields() {
    let app = spawn_app().await;
    let segment = outdoor_segment(&app).await;
    let now = Utc::now();
    let (start, end) = (now, now + Duration::days(10));
    let daily = |interval_days| {
        Some(pb::campaign_schedule::Frequency::Daily(pb::DailyFrequency {
            interval_days,
        }))
    };
    let refused = |campaign: pb::Campaign| {
        let app = &app;
        async move {
            let err = create(app, campaign).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            let mut fields = violated_fields(&err);
            fields.sort();
            fields
        }
    };

    let fields = refused(recurring(
        &segment,
        start,
        end,
        pb::CampaignSchedule {
            frequency: daily(0),
            hour: 24,
            minute: -1,
            until_time: Some(timestamp(start - Duration::days(1))),
            occurrence_count: 3,
        },
    ))
    .await;
    assert_eq!(
        fields,
        vec![
            "campaign.schedule.daily.interval_days",
            "campaign.schedule.hour",
            "campaign.schedule.minute",
            "campaign.schedule.occurrence_count",
            "campaign.schedule.until_time",
        ]
    );

    let fields = refused(recurring(
        &segment,
        start,
        end,
        pb::CampaignSchedule {
            frequency: Some(pb::campaign_schedule::Frequency::Weekly(pb::WeeklyFrequency {
                days: vec![],
            })),
            until_time: Some(timestamp(end + Duration::days(1))),
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(
        fields,
        vec!["campaign.schedule.until_time", "campaign.schedule.weekly.days"]
    );

    let fields = refused(recurring(
        &segment,
        start,
        end,
        pb::CampaignSchedule {
            frequency: Some(pb::campaign_schedule::Frequency::Monthly(pb::MonthlyFrequency {
                day_of_month: 32,
            })),
            occurrence_count: -2,
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(
        fields,
        vec![
            "campaign.schedule.monthly.day_of_month",
            "campaign.schedule.occurrence_count"
        ]
    );

    // No frequency; a send time beside the schedule.
    let fields = refused(pb::Campaign {
        send_time: Some(timestamp(start)),
        ..recurring(&segment, start, end, pb::CampaignSchedule::default())
    })
    .await;
    assert_eq!(fields, vec!["campaign.schedule", "campaign.send_time"]);

    // Only planned campaigns have schedules.
    let fields = refused(pb::Campaign {
        trigger: pb::CampaignTrigger::Purchase as i32,
        ..recurring(
            &segment,
            start,
            end,
            pb::CampaignSchedule {
                frequency: daily(1),
                ..Default::default()
            },
        )
    })
    .await;
    assert_eq!(fields, vec!["campaign.schedule"]);

    // Monthly on the 1st, but the window (10 days from a 2nd) holds no 1st.
    let second = Utc.with_ymd_and_hms(now.year() + 1, 3, 2, 0, 0, 0).unwrap();
    let fields = refused(recurring(
        &segment,
        second,
        second + Duration::days(10),
        pb::CampaignSchedule {
            frequency: Some(pb::campaign_schedule::Frequency::Monthly(pb::MonthlyFrequency {
                day_of_month: 1,
            })),
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(fields, vec!["campaign.schedule"]);
}

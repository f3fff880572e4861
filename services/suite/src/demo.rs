//! The analytics part of `retail-suite seed`: two years of history imported into
//! analytics (`ImportEvents`; the producers keep a week of log), and the last
//! days' store and online touchpoints (`StreamTouchpoints`), so the KPIs tell a
//! story: December peaks and a summer bump, whales at the top of the pyramid,
//! returns and ratings, one running shoe that many try on and few buy, and
//! partners' quarter targets, leads and opportunities.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prost::{Message, Name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use retail_proto::analytics::analytics_admin_service_client::AnalyticsAdminServiceClient;
use retail_proto::analytics::touchpoint_service_client::TouchpointServiceClient;
use retail_proto::analytics::{self as apb};
use retail_proto::common::Money;
use retail_proto::events::{self as ev, EventEnvelope};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

const DAY: i64 = 86_400;
/// Categories and how many SKUs each has.
const CATEGORIES: &[&str] = &[
    "footwear/running",
    "footwear/hiking",
    "apparel/jackets",
    "apparel/shirts",
    "equipment/packs",
];
const SKUS_PER_CATEGORY: usize = 8;
/// The SKU many try on and few buy.
pub const PROBLEM_SKU: &str = "H-footwear/running-3";
const STORES: &[&str] = &["BER", "HAM", "MUC"];
const REGIONS: &[&str] = &["DE-BE", "DE-HH", "DE-BY", "FR-IDF", "NL-NH"];
const PARTNERS: &[(&str, &[&str])] = &[
    ("P-ALPS", &["anna", "ben"]),
    ("P-NORD", &["carl"]),
    ("P-WEST", &["dora", "emil"]),
];

fn sku(category: usize, n: usize) -> String {
    format!("H-{}-{n}", CATEGORIES[category])
}

fn price(category: usize, n: usize) -> i64 {
    [12_000, 16_000, 22_000, 6_000, 9_000][category] + (n as i64) * 500
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

fn ts(t: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t, nanos: 0 })
}

/// History events, by time; positions are given when imported.
struct History(Vec<(i64, EventEnvelope)>);

impl History {
    fn push<M: Message + Name>(&mut self, at: i64, aggregate: &str, message: &M) {
        self.0.push((
            at,
            EventEnvelope {
                id: format!("import-{}", self.0.len()),
                r#type: M::full_name(),
                source: "import".into(),
                aggregate_id: aggregate.to_owned(),
                occur_time: ts(at),
                position: 0,
                payload: Some(prost_types::Any {
                    type_url: M::type_url(),
                    value: message.encode_to_vec(),
                }),
                partition_key: aggregate.to_owned(),
            },
        ));
    }
}

/// Seasonal weight of a day: a December peak, a summer bump, busier weekends.
fn season(t: i64) -> f64 {
    let day_of_year = (t / DAY).rem_euclid(365) as f64;
    let december = (-((day_of_year - 350.0) / 12.0).powi(2)).exp() * 1.5;
    let summer = (-((day_of_year - 190.0) / 25.0).powi(2)).exp() * 0.5;
    let weekend = if (t / DAY + 3).rem_euclid(7) >= 5 { 0.4 } else { 0.0 };
    1.0 + december + summer + weekend
}

fn history(run: u32, orders: u64, members: u64, now: i64, rng: &mut StdRng) -> History {
    let mut h = History(Vec::new());
    let start = now - 730 * DAY;
    let end = now - 3 * DAY;
    for (c, category) in CATEGORIES.iter().enumerate() {
        let product = format!("H-{run}-{c}");
        h.push(
            start - DAY,
            &product,
            &ev::ProductCreated {
                product_id: product.clone(),
                category: (*category).to_owned(),
                title: (*category).to_owned(),
                sku_codes: (0..SKUS_PER_CATEGORY).map(|n| sku(c, n)).collect(),
                role: String::new(),
            },
        );
        for n in 0..SKUS_PER_CATEGORY {
            // Two SKUs listed and sold out; the last of each category never sells.
            let sellable = if n == 1 { 0 } else { 20 + n as i64 * 5 };
            h.push(
                start - DAY,
                &sku(c, n),
                &ev::ListingChanged {
                    sku_code: sku(c, n),
                    channel: "online".into(),
                    listed: true,
                },
            );
            h.push(
                end,
                &sku(c, n),
                &ev::StockChanged {
                    sku_code: sku(c, n),
                    warehouse_code: "W-CENTRAL".into(),
                    kind: "receipt".into(),
                    total: sellable,
                    sellable,
                    reserved: 0,
                    unsellable: 0,
                },
            );
        }
    }
    for m in 0..members {
        let id = format!("demo-{run}-{m:05}");
        let at = start + rng.random_range(0..700 * DAY);
        h.push(
            at,
            &id,
            &ev::MemberRegistered {
                member_id: id.clone(),
                region: REGIONS[m as usize % REGIONS.len()].into(),
                register_time: ts(at),
            },
        );
        if rng.random_bool(0.4) {
            h.push(
                at + 3_600,
                &id,
                &ev::ConsentChanged {
                    member_id: id.clone(),
                    channel: ["email", "sms", "app_push"][m as usize % 3].into(),
                    granted: true,
                },
            );
        }
        if m % 50 == 0 {
            h.push(
                at + DAY,
                &id,
                &ev::TierChanged {
                    member_id: id.clone(),
                    from_tier: "basic".into(),
                    to_tier: "gold".into(),
                    reason: "purchase".into(),
                },
            );
        }
    }
    let max_weight = 3.5;
    let mut placed = 0u64;
    // Partner and rep sales of the running quarter, for their targets.
    let quarter = quarter_start(now);
    let mut quarter_sales: std::collections::BTreeMap<(String, String), i64> = Default::default();
    while placed < orders {
        let at = start + 30 * DAY + rng.random_range(0..(end - start - 30 * DAY));
        if rng.random::<f64>() * max_weight > season(at) {
            continue;
        }
        placed += 1;
        let order = format!("demo-{run}-o{placed:06}");
        // Skewed towards low member numbers: a few whales, a long tail.
        let member = if rng.random_bool(0.08) {
            String::new()
        } else {
            let u: f64 = rng.random();
            format!("demo-{run}-{:05}", ((u * u * u) * members as f64) as u64)
        };
        let roll: f64 = rng.random();
        let (channel, store, partner, rep) = if roll < 0.5 {
            ("store", STORES[rng.random_range(0..STORES.len())], "", "")
        } else if roll < 0.85 {
            ("online", "", "", "")
        } else {
            let (p, reps) = PARTNERS[rng.random_range(0..PARTNERS.len())];
            ("partner", "", p, reps[rng.random_range(0..reps.len())])
        };
        let parties = Some(ev::OrderParties {
            member_id: member.clone(),
            channel: channel.into(),
            partner_id: partner.into(),
            sales_rep: rep.into(),
            store: store.into(),
        });
        let lines: Vec<ev::OrderedUnits> = (0..rng.random_range(1..=3))
            .map(|_| {
                let (c, n) = (
                    rng.random_range(0..CATEGORIES.len()),
                    rng.random_range(0..SKUS_PER_CATEGORY - 1),
                );
                ev::OrderedUnits {
                    sku_code: sku(c, n),
                    quantity: rng.random_range(1..=2),
                    unit_price: eur(price(c, n)),
                }
            })
            .collect();
        let amount: i64 = lines
            .iter()
            .map(|l| l.quantity * l.unit_price.as_ref().map(|p| p.amount_minor).unwrap_or(0))
            .sum();
        if !partner.is_empty() && at >= quarter {
            *quarter_sales.entry((partner.to_owned(), String::new())).or_default() += amount;
            *quarter_sales.entry((partner.to_owned(), rep.to_owned())).or_default() += amount;
        }
        h.push(
            at,
            &member,
            &ev::OrderPaid {
                order_id: order.clone(),
                parties: parties.clone(),
                lines: lines.clone(),
                amount: eur(amount),
                pay_time: ts(at),
            },
        );
        let fate: f64 = rng.random();
        if fate < 0.02 {
            h.push(
                at + 3_600,
                &member,
                &ev::OrderCancelled {
                    order_id: order.clone(),
                    parties: parties.clone(),
                    refunded: eur(amount),
                    reason: "changed my mind".into(),
                    cancel_time: ts(at + 3_600),
                },
            );
            continue;
        }
        if fate < 0.09 {
            let back = &lines[0];
            h.push(
                (at + 12 * DAY).min(end),
                &member,
                &ev::OrderRefunded {
                    order_id: order.clone(),
                    return_id: format!("{order}-r"),
                    parties: parties.clone(),
                    lines: vec![back.clone()],
                    amount: eur(back.quantity * back.unit_price.as_ref().map(|p| p.amount_minor).unwrap_or(0)),
                    refund_time: ts((at + 12 * DAY).min(end)),
                },
            );
        }
        if rng.random_bool(0.3) {
            let happy = rng.random_range(1..=5);
            h.push(
                (at + 5 * DAY).min(end),
                &member,
                &ev::OrderRated {
                    order_id: order,
                    parties,
                    satisfaction: happy,
                    recommend: (happy * 2 + rng.random_range(-1..=0)).clamp(0, 10),
                },
            );
        }
    }
    partner_history(&mut h, run, now, end, &quarter_sales, rng);
    h.0.sort_by_key(|(at, _)| *at);
    h
}

/// The first second of `now`'s calendar quarter (UTC).
fn quarter_start(now: i64) -> i64 {
    use chrono::{Datelike, TimeZone, Utc};
    let Some(date) = Utc.timestamp_opt(now, 0).single() else {
        return now;
    };
    let month = (date.month() - 1) / 3 * 3 + 1;
    Utc.with_ymd_and_hms(date.year(), month, 1, 0, 0, 0)
        .single()
        .map_or(now, |t| t.timestamp())
}

/// The quarter after the one starting at `start`.
fn quarter_end(start: i64) -> i64 {
    use chrono::{Months, TimeZone, Utc};
    Utc.timestamp_opt(start, 0)
        .single()
        .and_then(|t| t.checked_add_months(Months::new(3)))
        .map_or(start + 91 * DAY, |t| t.timestamp())
}

/// Channel-partner's side of the history: the running quarter's targets of the
/// demo partners and their reps (set so that the run rates land above, at and
/// under them), and three months of leads and opportunities.
fn partner_history(
    h: &mut History,
    run: u32,
    now: i64,
    end: i64,
    quarter_sales: &std::collections::BTreeMap<(String, String), i64>,
    rng: &mut StdRng,
) {
    let start = quarter_start(now);
    let stop = quarter_end(start);
    let elapsed = (end - start).max(DAY) as f64;
    let length = (stop - start) as f64;
    let factors = [0.8, 1.0, 1.25, 0.9, 1.1];
    let mut n = 0;
    for ((partner, reps), level) in PARTNERS.iter().zip(["gold", "silver", "registered"]) {
        h.push(
            start - 30 * DAY,
            partner,
            &ev::PartnerLevelChanged {
                partner_id: (*partner).into(),
                from_level: "registered".into(),
                to_level: level.into(),
                reason: "reevaluation".into(),
                trailing_sales_minor: 0,
            },
        );
        for rep in std::iter::once(&"").chain(reps.iter()) {
            let sold = quarter_sales
                .get(&((*partner).to_owned(), (*rep).to_owned()))
                .copied()
                .unwrap_or(0);
            let run_rate = (sold as f64 * length / elapsed) as i64;
            let amount = ((run_rate as f64 * factors[n % factors.len()]) as i64).max(50_000);
            n += 1;
            let kind = if rep.is_empty() { "partner" } else { "rep" };
            let id = format!("demo-{run}-t-{partner}-{rep}");
            h.push(
                start,
                partner,
                &ev::TargetSet {
                    target_id: id,
                    subject_kind: kind.into(),
                    partner_id: (*partner).into(),
                    sales_rep_id: (*rep).into(),
                    period_kind: "quarter".into(),
                    period_start_time: ts(start),
                    period_end_time: ts(stop),
                    amount_minor: amount,
                },
            );
        }
        let lead = |h: &mut History, id: &str, change: &str, at: i64| {
            h.push(
                at,
                partner,
                &ev::LeadChanged {
                    lead: format!("leads/{id}"),
                    partner_id: (*partner).into(),
                    change: change.into(),
                    change_time: ts(at),
                    ..Default::default()
                },
            );
        };
        for k in 0..25 {
            let id = format!("demo-{run}-{partner}-l{k}");
            let at = end - rng.random_range(DAY..90 * DAY);
            lead(h, &id, "offered", at);
            let roll: f64 = rng.random();
            if roll < 0.6 {
                let accepted = at + rng.random_range(600..DAY);
                lead(h, &id, "accepted", accepted);
                let closed = accepted + rng.random_range(5..30) * DAY;
                if closed < end {
                    let outcome = if rng.random_bool(0.55) { "won" } else { "lost" };
                    lead(h, &id, outcome, closed);
                }
            } else if roll < 0.85 {
                lead(h, &id, "declined", at + rng.random_range(600..DAY));
            } else {
                lead(h, &id, "timed_out", at + 2 * DAY);
            }
        }
        let stages = [
            "identified",
            "proposed",
            "confirmed",
            "understood",
            "negotiating",
            "won",
        ];
        for k in 0..20 {
            let id = format!("partners/{partner}/opportunities/demo-{run}-o{k}");
            let mut at = end - rng.random_range(DAY..90 * DAY);
            let mut from = "";
            for to in stages {
                h.push(
                    at,
                    partner,
                    &ev::OpportunityStageChanged {
                        opportunity: id.clone(),
                        partner_id: (*partner).into(),
                        from_stage: from.into(),
                        to_stage: to.into(),
                        change_time: ts(at),
                        ..Default::default()
                    },
                );
                from = to;
                at += rng.random_range(1..10) * DAY;
                let roll: f64 = rng.random();
                if to == "won" || at >= end || roll > 0.85 {
                    break;
                }
                if roll > 0.65 {
                    h.push(
                        at,
                        partner,
                        &ev::OpportunityStageChanged {
                            opportunity: id.clone(),
                            partner_id: (*partner).into(),
                            from_stage: from.into(),
                            to_stage: "lost".into(),
                            change_time: ts(at),
                            ..Default::default()
                        },
                    );
                    break;
                }
            }
        }
    }
}

/// Store and online touchpoints of the last `hours` hours.
fn touchpoints(run: u32, now: i64, hours: i64, rng: &mut StdRng) -> Vec<apb::Touchpoint> {
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut next = |kind: &str, at: i64| {
        n += 1;
        apb::Touchpoint {
            event_id: format!("demo-{run}-tp{n}"),
            kind: kind.into(),
            occur_time: ts(at),
            ..Default::default()
        }
    };
    let tried: Vec<String> = (0..SKUS_PER_CATEGORY - 1)
        .map(|i| sku(0, i))
        .chain((0..4).map(|i| sku(2, i)))
        .collect();
    for h in 0..hours {
        let at = now - (hours - h) * 3_600 + 60;
        for (s, store) in STORES.iter().enumerate() {
            let busy = 1 + (s as i64 + h) % 3;
            let mut t = |kind: &str, place: &str, count: i64| apb::Touchpoint {
                store: (*store).into(),
                place: place.into(),
                count,
                ..next(kind, at)
            };
            out.push(t("door_passed", "", 400 * busy));
            out.push(t("door_entered", "", 60 * busy));
            out.push(t("aisle_surveyed", "A1", 50 * busy));
            out.push(t("aisle_passed", "A1", 20 * busy));
            out.push(t("floor_entered", "1", 40 * busy));
            out.push(t("floor_went_up", "1", 12 * busy));
            out.push(t("zone_passed", "running", 30 * busy));
            out.push(apb::Touchpoint {
                seconds: 240 * busy,
                ..t("zone_stayed", "running", 9 * busy)
            });
            for staff in ["s1", "s2"] {
                for (kind, count) in [
                    ("staff_steps", 900),
                    ("staff_served", 6),
                    ("staff_shown", 10),
                    ("staff_try_on", 4),
                ] {
                    out.push(apb::Touchpoint {
                        staff_id: format!("{store}-{staff}"),
                        ..t(kind, "", count)
                    });
                }
            }
            for shopper in 0..(6 * busy) {
                let subject = format!("{store}-{h}-{shopper}");
                let code = if rng.random_bool(0.35) {
                    PROBLEM_SKU.to_owned()
                } else {
                    tried[rng.random_range(0..tried.len())].clone()
                };
                out.push(apb::Touchpoint {
                    store: (*store).into(),
                    sku_code: code.clone(),
                    subject: subject.clone(),
                    ..next("try_on", at + 300)
                });
                out.push(apb::Touchpoint {
                    store: (*store).into(),
                    sku_code: code.clone(),
                    subject: subject.clone(),
                    ..next("shelf_touch", at + 200)
                });
                let buys = if code == PROBLEM_SKU {
                    rng.random_bool(0.05)
                } else {
                    rng.random_bool(0.45)
                };
                if buys {
                    out.push(apb::Touchpoint {
                        store: (*store).into(),
                        place: "running".into(),
                        subject,
                        staff_id: format!("{store}-s{}", 1 + shopper % 2),
                        sku_codes: vec![code],
                        amount_minor: 14_000,
                        seconds: rng.random_range(60..240),
                        reception_seconds: rng.random_range(120..900),
                        ..next("pos_receipt", at + 900)
                    });
                }
            }
        }
        out.push(apb::Touchpoint {
            count: 5_000,
            ..next("online_reach", at)
        });
        for v in 0..40 {
            let depth = rng.random_range(1..8);
            out.push(apb::Touchpoint {
                subject: format!("sess-{run}-{h}-{v}"),
                count: depth,
                home_page: v % 3 == 0,
                ..next("online_visit", at)
            });
            let code = sku(v as usize % CATEGORIES.len(), v as usize % SKUS_PER_CATEGORY);
            out.push(apb::Touchpoint {
                sku_code: code.clone(),
                count: 20,
                ..next("online_impression", at)
            });
            out.push(apb::Touchpoint {
                sku_code: code.clone(),
                count: 1 + (v % 5),
                ..next("online_click", at)
            });
            if depth > 4 {
                out.push(apb::Touchpoint {
                    sku_code: code,
                    ..next("online_add_to_cart", at + 120)
                });
            }
            if v % 10 == 0 {
                out.push(next("online_inquiry", at + 60));
            }
        }
    }
    out
}

fn authed<T>(bearer: &MetadataValue<Ascii>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}

/// Imports the history and streams the touchpoints into analytics at `url`.
pub async fn seed_analytics(url: &str, bearer: &str, orders: u64, members: u64) -> anyhow::Result<()> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let header: MetadataValue<Ascii> = bearer.parse()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let run: u32 = rand::random::<u32>() % 100_000;
    let mut rng = StdRng::seed_from_u64(u64::from(run));
    let mut admin = AnalyticsAdminServiceClient::new(channel.clone());
    let history = history(run, orders, members, now, &mut rng);
    // Continue after what an earlier seed imported.
    let mut position = admin
        .import_events(authed(&header, apb::ImportEventsRequest { events: vec![] }))
        .await
        .context("analytics refused the import")?
        .into_inner()
        .position;
    let progress = crate::seed::progress("history events", history.0.len() as u64);
    for chunk in history.0.chunks(1_000) {
        let events = chunk
            .iter()
            .map(|(_, e)| {
                position += 1;
                EventEnvelope { position, ..e.clone() }
            })
            .collect();
        admin
            .import_events(authed(&header, apb::ImportEventsRequest { events }))
            .await
            .context("importing history failed")?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    println!(
        "imported two years of history: {orders} orders, {members} members, {} events",
        history.0.len()
    );
    for (channel_name, cac) in [("store", 4_000), ("online", 2_500), ("partner", 6_000)] {
        admin
            .set_acquisition_cost(authed(
                &header,
                apb::SetAcquisitionCostRequest {
                    channel: channel_name.into(),
                    cac_minor: cac,
                },
            ))
            .await?;
    }
    let points = touchpoints(run, now, 36, &mut rng);
    let progress = crate::seed::progress("touchpoints", points.len() as u64);
    let messages: Vec<apb::StreamTouchpointsRequest> = points
        .chunks(1_000)
        .map(|c| apb::StreamTouchpointsRequest {
            touchpoints: c.to_vec(),
        })
        .collect();
    let sizes: Vec<u64> = messages.iter().map(|m| m.touchpoints.len() as u64).collect();
    let stream = {
        let progress = progress.clone();
        tokio_stream::iter(messages.into_iter().zip(sizes).map(move |(m, n)| {
            progress.inc(n);
            m
        }))
    };
    let out = TouchpointServiceClient::new(channel)
        .stream_touchpoints(authed(&header, stream))
        .await
        .context("streaming touchpoints failed")?
        .into_inner();
    progress.finish_and_clear();
    println!(
        "ingested {} touchpoints of 3 stores and the online shop ({} rejected)",
        out.accepted,
        out.rejections.len()
    );
    Ok(())
}

//! The re-evaluation against the per-member rule of the domain: for every member,
//! the tier the run leaves is what `Ladder::reevaluate` (or the percentile ranks)
//! says of its tier and the purchases in its window, and every move leaves a tier
//! change and an event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Months, TimeZone, Utc};
use retail_kit::cache::{CacheSettings, VersionedCache};
use retail_kit::events::EventLog;
use retail_kit::events::entity::outbox;
use retail_testkit::TestDatabase;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::app::App;
use crate::domain::points::PurchaseKind;
use crate::domain::rules::LoyaltyRules;
use crate::domain::tiers::{PercentileShares, SpendWindow, percentile_levels, step_towards};
use crate::store::{self, loyalty, member, migration::Migrator, tier_change};

async fn app_with(rules: LoyaltyRules) -> (Arc<App>, TestDatabase) {
    let database = TestDatabase::new().await.unwrap();
    let mut settings = crate::Settings::default();
    settings.database.url = database.secret_url();
    let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings.database)
        .await
        .unwrap();
    let cache = VersionedCache::new(CacheSettings::default()).unwrap();
    let log = EventLog::new(
        db.clone(),
        "membership",
        Duration::from_millis(50),
        Duration::from_millis(1),
    );
    let engagement = crate::app::EngagementRules {
        frequency_cap: 3,
        frequency_window: chrono::Duration::days(7),
        attribution_window: chrono::Duration::days(14),
    };
    (Arc::new(App::new(db, cache, log, rules, engagement)), database)
}

fn as_of() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).single().unwrap()
}

/// A member in `tier` with purchases `(at, signed amount)`; erased if `erased`.
#[derive(Debug, Clone)]
struct Seed {
    name: &'static str,
    tier: &'static str,
    purchases: Vec<(DateTime<Utc>, i64)>,
    erased: bool,
}

fn seed(name: &'static str, tier: &'static str, purchases: &[(DateTime<Utc>, i64)]) -> Seed {
    Seed {
        name,
        tier,
        purchases: purchases.to_vec(),
        erased: false,
    }
}

fn days_ago(days: i64) -> DateTime<Utc> {
    as_of() - chrono::Duration::days(days)
}

/// Members across the ladder's tiers and thresholds (regular 0, silver 500.00, gold
/// 3,000.00, platinum 8,000.00; a 12-month window).
fn members() -> Vec<Seed> {
    let window_start = as_of().checked_sub_months(Months::new(12)).unwrap();
    vec![
        seed("platinum without spend", "platinum", &[]),
        seed("regular reaching gold exactly", "regular", &[(days_ago(10), 300_000)]),
        seed("regular just below gold", "regular", &[(days_ago(10), 299_999)]),
        seed("silver at silver exactly", "silver", &[(days_ago(100), 50_000)]),
        seed(
            "gold earning platinum",
            "gold",
            &[(days_ago(5), 500_000), (days_ago(3), 500_000)],
        ),
        seed(
            "gold refunded to silver spend",
            "gold",
            &[(days_ago(30), 400_000), (days_ago(20), -200_000)],
        ),
        seed(
            "platinum refunded to nothing",
            "platinum",
            &[(days_ago(30), 900_000), (days_ago(29), -900_000)],
        ),
        seed(
            "silver whose spend left the window",
            "silver",
            &[(days_ago(400), 900_000)],
        ),
        seed(
            "silver whose spend lies after as_of",
            "silver",
            &[(as_of() + chrono::Duration::days(1), 900_000)],
        ),
        seed("regular at the window's start", "regular", &[(window_start, 900_000)]),
        seed("regular at as_of", "regular", &[(as_of(), 60_000)]),
        seed("unknown tier without spend", "bronze", &[]),
        seed("unknown tier with silver spend", "bronze", &[(days_ago(1), 60_000)]),
        seed("refund only", "silver", &[(days_ago(1), -70_000)]),
        Seed {
            erased: true,
            ..seed("erased platinum", "platinum", &[])
        },
    ]
}

/// Writes the members; their ids by name.
async fn write(app: &App, seeds: &[Seed]) -> BTreeMap<&'static str, String> {
    let mut ids = BTreeMap::new();
    for (n, s) in seeds.iter().enumerate() {
        let id = store::new_id();
        store::insert_member(
            &app.db,
            member::Model {
                id: id.clone(),
                display_name: s.name.into(),
                gender: String::new(),
                birth_date: None,
                region: String::new(),
                attributes_json: "{}".into(),
                tier: s.tier.into(),
                points_balance: 0,
                points_debt: 0,
                registered_at: days_ago(500),
                updated_at: days_ago(500),
                erased_at: s.erased.then(|| days_ago(1)),
                version: 1,
                merged_into: None,
                merged_at: None,
                rfm_segment: None,
            },
        )
        .await
        .unwrap();
        for (i, (at, amount)) in s.purchases.iter().enumerate() {
            let kind = if *amount < 0 {
                PurchaseKind::Refund
            } else {
                PurchaseKind::Paid
            };
            loyalty::insert_purchase(
                &app.db,
                store::purchase::Model {
                    id: store::new_id(),
                    member_id: id.clone(),
                    order_id: format!("o-{n}-{}", if *amount < 0 { 0 } else { i }),
                    kind: kind.as_str().into(),
                    reference: if *amount < 0 { format!("r-{i}") } else { String::new() },
                    amount_minor: *amount,
                    currency: "EUR".into(),
                    channel: String::new(),
                    occurred_at: *at,
                    points: 0,
                },
            )
            .await
            .unwrap();
        }
        ids.insert(s.name, id);
    }
    ids
}

/// What the per-member rule gives each member: its tier moved by `earned` levels.
fn per_member(rules: &LoyaltyRules, seeds: &[Seed], earned: impl Fn(&Seed) -> usize) -> BTreeMap<&'static str, String> {
    seeds
        .iter()
        .map(|s| {
            let current = rules.level_of(s.tier);
            let next = step_towards(current, earned(s), rules.max_steps_down);
            let tier = if s.erased || next == current {
                s.tier.to_owned()
            } else {
                rules.tier_name(next)
            };
            (s.name, tier)
        })
        .collect()
}

fn spend(rules: &LoyaltyRules, s: &Seed) -> i64 {
    rules.spend(&s.purchases, as_of())
}

/// Runs the re-evaluation; every member's tier afterwards, by name, and how many
/// moved.
async fn run(app: &App, ids: &BTreeMap<&'static str, String>, batch: u64) -> (BTreeMap<&'static str, String>, u64) {
    let moved = app.reevaluate_tiers_by(as_of(), batch).await.unwrap();
    let mut tiers = BTreeMap::new();
    for (name, id) in ids {
        let m = store::find_member(&app.db, id).await.unwrap().unwrap();
        tiers.insert(*name, m.tier);
    }
    (tiers, moved)
}

/// The re-evaluation's tier changes and `TierChanged` events, which must tell the
/// same moves.
async fn tier_changes_and_events(app: &App) -> (u64, u64) {
    use prost::{Message, Name};
    use retail_proto::events::TierChanged;
    let mut changes: Vec<(String, String, String)> = tier_change::Entity::find()
        .filter(tier_change::Column::Reason.eq("reevaluation"))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.member_id, c.from_tier, c.to_tier))
        .collect();
    let mut events: Vec<(String, String, String)> = outbox::Entity::find()
        .filter(outbox::Column::EventType.eq(TierChanged::full_name()))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let e = TierChanged::decode(row.payload.as_slice()).unwrap();
            assert_eq!(
                (row.aggregate_id.as_str(), e.reason.as_str()),
                (e.member_id.as_str(), "reevaluation")
            );
            (e.member_id, e.from_tier, e.to_tier)
        })
        .collect();
    changes.sort();
    events.sort();
    assert_eq!(changes, events);
    (changes.len() as u64, events.len() as u64)
}

async fn check_threshold_run(max_steps_down: usize, batch: u64) {
    check_run_with(
        LoyaltyRules {
            max_steps_down,
            ..LoyaltyRules::standard()
        },
        batch,
    )
    .await;
}

async fn check_run_with(rules: LoyaltyRules, batch: u64) {
    let (app, _db) = app_with(rules.clone()).await;
    let seeds = members();
    let ids = write(&app, &seeds).await;
    let want = per_member(&rules, &seeds, |s| rules.ladder.level_for_spend(spend(&rules, s)));
    let (got, moved) = run(&app, &ids, batch).await;
    assert_eq!(got, want);
    let expected_moves = seeds.iter().filter(|s| want[s.name] != s.tier).count() as u64;
    assert_eq!(moved, expected_moves);
    assert_eq!(tier_changes_and_events(&app).await, (expected_moves, expected_moves));
    // Settled: a second run at the same instant moves only those still stepping down.
    let (again, _) = run(&app, &ids, batch).await;
    let stepped: Vec<Seed> = seeds
        .iter()
        .map(|s| Seed {
            tier: Box::leak(want[s.name].clone().into_boxed_str()),
            ..s.clone()
        })
        .collect();
    assert_eq!(
        again,
        per_member(&rules, &stepped, |s| rules.ladder.level_for_spend(spend(&rules, s)))
    );
}

#[tokio::test]
async fn a_reevaluation_gives_every_member_what_the_per_member_rule_gives_one_step_down() {
    check_threshold_run(1, 10_000).await;
    // The rule is not vacuous: the cases say what they say.
    let rules = LoyaltyRules::standard();
    let want = per_member(&rules, &members(), |s| rules.ladder.level_for_spend(spend(&rules, s)));
    for (name, tier) in [
        ("platinum without spend", "gold"),
        ("regular reaching gold exactly", "gold"),
        ("regular just below gold", "silver"),
        ("silver at silver exactly", "silver"),
        ("gold earning platinum", "platinum"),
        ("gold refunded to silver spend", "silver"),
        ("platinum refunded to nothing", "gold"),
        ("silver whose spend left the window", "regular"),
        ("silver whose spend lies after as_of", "regular"),
        ("regular at the window's start", "regular"),
        ("regular at as_of", "silver"),
        ("unknown tier without spend", "bronze"),
        ("unknown tier with silver spend", "silver"),
        ("refund only", "regular"),
        ("erased platinum", "platinum"),
    ] {
        assert_eq!(want[name], tier, "{name}");
    }
}

#[tokio::test]
async fn a_reevaluation_gives_every_member_what_the_per_member_rule_gives_two_steps_down() {
    check_threshold_run(2, 10_000).await;
}

#[tokio::test]
async fn a_reevaluation_over_a_lifetime_window_counts_every_purchase_up_to_as_of() {
    check_run_with(
        LoyaltyRules {
            spend_window: SpendWindow::Lifetime,
            ..LoyaltyRules::standard()
        },
        4,
    )
    .await;
}

#[tokio::test]
async fn a_reevaluation_in_batches_smaller_than_the_membership_gives_what_one_batch_gives() {
    for batch in [1, 4, 14, 15] {
        check_threshold_run(1, batch).await;
    }
}

#[tokio::test]
async fn a_percentile_reevaluation_gives_every_member_what_ranking_them_one_by_one_gives() {
    let rules = LoyaltyRules {
        percentile: Some(PercentileShares::standard()),
        ..LoyaltyRules::standard()
    };
    let (app, _db) = app_with(rules.clone()).await;
    // Twenty members spending 1..=20 (two tied at 7), starting in assorted tiers,
    // and a few without spend.
    let names: Vec<&'static str> = (0..24)
        .map(|i| &*Box::leak(format!("member {i:02}").into_boxed_str()))
        .collect();
    let tiers = ["regular", "silver", "gold", "platinum"];
    let seeds: Vec<Seed> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let amount = match i {
                0..20 if i == 8 => 7 * 10_000,
                0..20 => (i as i64 + 1) * 10_000,
                _ => 0,
            };
            let purchases: Vec<_> = (amount > 0).then(|| (days_ago(3), amount)).into_iter().collect();
            seed(name, tiers[i % 4], &purchases)
        })
        .collect();
    let ids = write(&app, &seeds).await;
    let spends: Vec<(&'static str, i64)> = seeds.iter().map(|s| (s.name, spend(&rules, s))).collect();
    let ranked: BTreeMap<&'static str, usize> = percentile_levels(&spends, &PercentileShares::standard())
        .into_iter()
        .collect();
    let want = per_member(&rules, &seeds, |s| ranked[s.name]);
    let (got, moved) = run(&app, &ids, 5).await;
    assert_eq!(got, want);
    let expected_moves = seeds.iter().filter(|s| want[s.name] != s.tier).count() as u64;
    assert_eq!(moved, expected_moves);
    assert!(expected_moves > 10, "the ranks move most of them");
}

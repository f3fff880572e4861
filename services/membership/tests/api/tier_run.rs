//! The periodic tier re-evaluation over a large PostgreSQL database, timed. Ignored:
//! it needs a database of its own, named by `RETAIL_TIER_RUN_DATABASE_URL` (created
//! empty beforehand, e.g. with `psql -c 'CREATE DATABASE tier_run'`, and dropped
//! after), and `RETAIL_TIER_RUN_MEMBERS` members (1,000,000 unless set).
//!
//! `cargo nextest run -p retail-membership --run-ignored only tier_run`

use std::time::Instant;

use chrono::Utc;
use retail_membership::Settings;
use sea_orm::ConnectionTrait;

/// Members in every tier, three payments each spread over the last 500 days,
/// amounts spread over 0-9,999.99: by thresholds, many move up or down.
const SEED: &str = "
INSERT INTO members (id, display_name, gender, birth_date, region, attributes_json, tier,
                     points_balance, points_debt, registered_at, updated_at, erased_at, version)
SELECT '00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'), '', '', NULL, '', '{}',
       (ARRAY['regular', 'silver', 'gold', 'platinum'])[1 + g % 4],
       0, 0, now() - interval '2 years', now() - interval '2 years', NULL, 1
FROM generate_series(1, $1::bigint) AS g;
";

const SEED_PURCHASES: &str = "
INSERT INTO purchases (id, member_id, order_id, kind, reference, amount_minor, currency,
                       channel, occurred_at, points)
SELECT gen_random_uuid()::text, '00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'),
       'o-' || g || '-' || k, 'paid', '', (g * 7919 + k * 104729) % 1000000, 'EUR', 'online',
       now() - ((g * 31 + k * 17) % 500) * interval '1 day', 0
FROM generate_series(1, $1::bigint) AS g, generate_series(1, 3) AS k;
";

#[tokio::test]
#[ignore = "needs a PostgreSQL database of its own; see the module's comment"]
async fn tier_run_over_a_large_database() {
    let Ok(url) = std::env::var("RETAIL_TIER_RUN_DATABASE_URL") else {
        eprintln!("RETAIL_TIER_RUN_DATABASE_URL is not set; nothing run");
        return;
    };
    let members: i64 = std::env::var("RETAIL_TIER_RUN_MEMBERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut settings = Settings::default();
    settings.database.url = url.into();
    settings.database.max_connections = 4;
    let app = retail_membership::Application::build_with_keys(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap();
    let db = app.db();
    let backend = db.get_database_backend();
    let started = Instant::now();
    let seeded = db
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM members",
        ))
        .await
        .unwrap()
        .map(|row| row.try_get::<i64>("", "n").unwrap())
        .unwrap_or(0);
    // Run again over a database seeded before, the run finds it as the last left it.
    let seeds: &[&str] = if seeded == 0 { &[SEED, SEED_PURCHASES] } else { &[] };
    for sql in seeds {
        db.execute_raw(sea_orm::Statement::from_sql_and_values(backend, *sql, [members.into()]))
            .await
            .unwrap();
    }
    db.execute_unprepared("ANALYZE members; ANALYZE purchases")
        .await
        .unwrap();
    if seeded == 0 {
        eprintln!(
            "seeded {members} members, {} purchases in {:?}",
            members * 3,
            started.elapsed()
        );
    } else {
        eprintln!("{seeded} members as the last run left them");
    }
    let started = Instant::now();
    let moved = app.app().reevaluate_tiers(Utc::now()).await.unwrap();
    eprintln!(
        "tier run over {members} members: {moved} moved in {:?}",
        started.elapsed()
    );
    if seeded == 0 {
        assert!(moved > 0);
    }
}

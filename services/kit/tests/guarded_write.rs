//! `GuardedWrite` against a real PostgreSQL (one statement) when
//! `RETAIL_TEST_DATABASE_URL` is set, and SQLite (one transaction) otherwise: all of
//! its writes take effect or none, and only while the guard matches.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;

use chrono::Utc;
use retail_kit::config::DatabaseSettings;
use retail_kit::db::{GuardedWrite, is_unique_violation};
use retail_kit::events::entity::{consumer_position, outbox};
use retail_kit::events::{self, outbox_row};
use retail_kit::idempotency;
use sea_orm::sea_query::{Expr, UpdateStatement};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryTrait,
};
use sea_orm_migration::{MigrationTrait, MigratorTrait};

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(events::migration::CreateOutbox),
            Box::new(events::migration::CreateConsumerPositions),
            Box::new(idempotency::migration::Migration),
        ]
    }
}

/// A database with one consumer position, `c`, at 0.
async fn database() -> (DatabaseConnection, retail_testkit::TestDatabase) {
    let test_db = retail_testkit::TestDatabase::new().await.unwrap();
    let settings = DatabaseSettings {
        url: test_db.secret_url(),
        max_connections: 16,
        ..DatabaseSettings::default()
    };
    let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings)
        .await
        .unwrap();
    consumer_position::ActiveModel {
        consumer: Set("c".into()),
        source: Set("s".into()),
        log_position: Set(0),
        updated_at: Set(Utc::now()),
    }
    .insert(&db)
    .await
    .unwrap();
    (db, test_db)
}

/// Moves `c` from `from` to `to`.
fn advance(from: i64, to: i64) -> UpdateStatement {
    consumer_position::Entity::update_many()
        .col_expr(consumer_position::Column::LogPosition, Expr::value(to))
        .filter(consumer_position::Column::Consumer.eq("c"))
        .filter(consumer_position::Column::LogPosition.eq(from))
        .into_query()
}

async fn position(db: &DatabaseConnection) -> i64 {
    consumer_position::Entity::find()
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .log_position
}

async fn events_of(db: &DatabaseConnection, aggregate: &str) -> Vec<outbox::Model> {
    outbox::Entity::find()
        .filter(outbox::Column::AggregateId.eq(aggregate))
        .all(db)
        .await
        .unwrap()
}

fn key_row(request_id: &str) -> idempotency::entity::ActiveModel {
    idempotency::entity::ActiveModel {
        scope: Set("test".into()),
        request_id: Set(request_id.into()),
        fingerprint: Set(vec![1, 2, 3]),
        response: Set(vec![4, 5, 6]),
        created_at: Set(Utc::now()),
    }
}

#[tokio::test]
async fn every_write_takes_effect_only_while_the_guard_matches() {
    let (db, _keep) = database().await;
    fn rows(aggregate: &str) -> Vec<outbox::ActiveModel> {
        (0..3u8)
            .map(|i| outbox_row("test.Event", aggregate, vec![i; 3]))
            .collect()
    }

    // The guard matches: the update, three events and a key, with their values.
    let writes = GuardedWrite::new(advance(0, 1))
        .insert(rows("a"))
        .unwrap()
        .insert([key_row("r1")])
        .unwrap();
    assert!(writes.run(&db).await.unwrap());
    assert_eq!(position(&db).await, 1);
    let mut written: Vec<Vec<u8>> = events_of(&db, "a").await.into_iter().map(|e| e.payload).collect();
    written.sort();
    assert_eq!(written, vec![vec![0u8; 3], vec![1u8; 3], vec![2u8; 3]]);
    assert!(events_of(&db, "a").await.iter().all(|e| e.log_position.is_none()));
    let key = idempotency::entity::Entity::find().one(&db).await.unwrap().unwrap();
    assert_eq!((key.request_id.as_str(), key.response), ("r1", vec![4, 5, 6]));

    // Run again, the guard no longer matches: nothing more is written.
    assert!(!writes.run(&db).await.unwrap());
    assert_eq!(events_of(&db, "a").await.len(), 3);
    assert_eq!(idempotency::entity::Entity::find().count(&db).await.unwrap(), 1);
    assert_eq!(position(&db).await, 1);

    // The guard matches but an insert fails: the update is undone with the rest.
    let clash = GuardedWrite::new(advance(1, 2))
        .insert(rows("b"))
        .unwrap()
        .insert([key_row("r1")])
        .unwrap();
    let err = clash.run(&db).await.unwrap_err();
    assert!(is_unique_violation(&err), "{err}");
    assert_eq!(position(&db).await, 1);
    assert!(events_of(&db, "b").await.is_empty());
}

#[tokio::test]
async fn of_racing_writes_behind_one_guard_exactly_one_takes_effect() {
    let (db, _keep) = database().await;
    let db = Arc::new(db);
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let writes = GuardedWrite::new(advance(0, 100 + i))
                    .insert([outbox_row("test.Event", &format!("racer-{i}"), vec![1])])
                    .unwrap();
                (i, writes.run(&db).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (i, won) = racer.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let winner = winners[0];
    assert_eq!(position(&db).await, 100 + winner);
    let all = outbox::Entity::find().all(&*db).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].aggregate_id, format!("racer-{winner}"));
}

//! `GuardedWrite` against a real PostgreSQL (one statement) when
//! `RETAIL_TEST_DATABASE_URL` is set, and SQLite (one transaction) otherwise: all of
//! its writes take effect or none, and only while the guard matches.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;

use chrono::Utc;
use retail_kit::db::{GuardedWrite, is_unique_violation};
use retail_kit::events::entity::{consumer_position, outbox};
use retail_kit::events::outbox_row;
use retail_kit::idempotency;
use sea_orm::sea_query::{Expr, UpdateStatement};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryTrait,
};

mod common;

/// A database with one consumer position, `c` of source `s`, at 0.
async fn database() -> (DatabaseConnection, retail_testkit::TestDatabase) {
    let (db, test_db) = common::kit_database().await;
    add_position(&db, "s").await;
    (db, test_db)
}

/// Adds consumer `c`'s position at 0 for `source`.
async fn add_position(db: &DatabaseConnection, source: &str) {
    consumer_position::ActiveModel {
        consumer: Set("c".into()),
        source: Set(source.into()),
        log_position: Set(0),
        updated_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .unwrap();
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

/// Every consumer position's value.
async fn positions(db: &DatabaseConnection) -> Vec<i64> {
    consumer_position::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.log_position)
        .collect()
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

/// Moves `c` to `to` wherever it is.
fn set_position(to: i64) -> UpdateStatement {
    consumer_position::Entity::update_many()
        .col_expr(consumer_position::Column::LogPosition, Expr::value(to))
        .filter(consumer_position::Column::Consumer.eq("c"))
        .into_query()
}

#[tokio::test]
async fn an_inserted_row_as_the_guard_takes_its_updates_and_inserts_with_it_or_none() {
    let (db, _keep) = database().await;
    let first = GuardedWrite::inserting(key_row("k1"))
        .unwrap()
        .update(set_position(5))
        .insert([outbox_row("test.Event", "x", vec![1])])
        .unwrap();
    assert!(first.run(&db).await.unwrap());
    assert_eq!(position(&db).await, 5);
    assert_eq!(events_of(&db, "x").await.len(), 1);

    // The same key again: the insert fails, and the update and event go with it.
    let again = GuardedWrite::inserting(key_row("k1"))
        .unwrap()
        .update(set_position(9))
        .insert([outbox_row("test.Event", "y", vec![1])])
        .unwrap();
    assert!(is_unique_violation(&again.run(&db).await.unwrap_err()));
    assert_eq!(position(&db).await, 5);
    assert!(events_of(&db, "y").await.is_empty());

    // An update whose own conditions match nothing does not hold the rest back.
    let partial = GuardedWrite::new(advance(5, 6)).update(advance(100, 200));
    assert!(partial.run(&db).await.unwrap());
    assert_eq!(position(&db).await, 6);
}

#[tokio::test]
async fn a_guard_matching_several_rows_writes_its_rows_once() {
    let (db, _keep) = database().await;
    add_position(&db, "t").await;
    let writes = GuardedWrite::new(set_position(3))
        .insert((0..2u8).map(|i| outbox_row("test.Event", "both", vec![i])))
        .unwrap();
    assert!(writes.run(&db).await.unwrap());
    assert_eq!(events_of(&db, "both").await.len(), 2);
    assert_eq!(positions(&db).await, vec![3, 3]);
}

#[tokio::test]
async fn in_the_callers_transaction_the_write_counts_the_rows_its_guard_matched() {
    let (db, _keep) = database().await;
    add_position(&db, "t").await;
    let txn = retail_kit::db::begin_write(&db).await.unwrap();
    // Both positions are at 0: the guard matches two rows, the event is written once.
    let both = GuardedWrite::new(advance(0, 1))
        .insert([outbox_row("test.Event", "counted", vec![1])])
        .unwrap();
    assert_eq!(both.run_in(&txn).await.unwrap(), 2);
    // None is at 7 any more: nothing is written.
    let none = GuardedWrite::new(advance(7, 8))
        .insert([outbox_row("test.Event", "unmatched", vec![2])])
        .unwrap();
    assert_eq!(none.run_in(&txn).await.unwrap(), 0);
    txn.commit().await.unwrap();
    assert_eq!(events_of(&db, "counted").await.len(), 1);
    assert!(events_of(&db, "unmatched").await.is_empty());
    assert_eq!(positions(&db).await, vec![1, 1]);
}

#[tokio::test]
async fn rows_with_a_null_value_are_written_as_rows_of_plain_values_are() {
    let (db, _keep) = database().await;
    // A row that sets a column to NULL cannot go as arrays (PostgreSQL takes the
    // fallback, one SELECT per row); rows of plain values can.
    fn rows(aggregate: &str, null_position: bool) -> Vec<outbox::ActiveModel> {
        (0..2u8)
            .map(|i| {
                let mut row = outbox_row("test.Event", aggregate, vec![i]);
                if null_position {
                    row.log_position = Set(None);
                }
                row
            })
            .collect()
    }
    let write = |from, tag: &str| {
        GuardedWrite::new(advance(from, from + 1))
            .insert(rows(&format!("{tag}-null"), true))
            .unwrap()
            .insert(rows(&format!("{tag}-plain"), false))
            .unwrap()
    };
    assert!(write(0, "first").run(&db).await.unwrap());
    // The guard no longer matches: neither kind is written.
    assert!(!write(0, "again").run(&db).await.unwrap());
    for (aggregate, expected) in [
        ("first-null", 2),
        ("first-plain", 2),
        ("again-null", 0),
        ("again-plain", 0),
    ] {
        let events = events_of(&db, aggregate).await;
        assert_eq!(events.len(), expected, "{aggregate}");
        assert!(events.iter().all(|e| e.log_position.is_none()));
    }
    let mut payloads: Vec<Vec<u8>> = events_of(&db, "first-plain")
        .await
        .into_iter()
        .map(|e| e.payload)
        .collect();
    payloads.sort();
    assert_eq!(payloads, vec![vec![0u8], vec![1u8]]);
}

#[tokio::test]
async fn an_idempotent_guarded_write_replays_for_its_twin_and_refuses_a_reused_id() {
    use retail_kit::ServiceError;
    use retail_kit::idempotency::{IdempotencyKey, write_guarded};
    use retail_proto::common::Money;

    let (db, _keep) = database().await;
    let money = |amount_minor| Money {
        currency_code: "EUR".into(),
        amount_minor,
    };
    let key = IdempotencyKey::from_request("test.Pay", "alice", "req-1", &money(1))
        .unwrap()
        .unwrap();
    let pay = |from, to, aggregate: &str| {
        GuardedWrite::new(advance(from, to))
            .insert([outbox_row("test.Event", aggregate, vec![1])])
            .unwrap()
    };

    let first = write_guarded(&db, Some(&key), money(42), Clone::clone, pay(0, 1, "first"))
        .await
        .unwrap();
    assert_eq!(first, Some(money(42)));

    // The twin's guard no longer matches: it gets the first response, writes nothing.
    let twin = write_guarded(&db, Some(&key), money(43), Clone::clone, pay(0, 1, "twin"))
        .await
        .unwrap();
    assert_eq!(twin, Some(money(42)));
    assert!(events_of(&db, "twin").await.is_empty());

    // The same id with another request: its guard matches, its key collides, and
    // nothing of it takes effect.
    let reused = IdempotencyKey::from_request("test.Pay", "alice", "req-1", &money(2))
        .unwrap()
        .unwrap();
    let err = write_guarded(&db, Some(&reused), money(44), Clone::clone, pay(1, 2, "reused"))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::InvalidArgument(_)), "{err:?}");
    assert_eq!(position(&db).await, 1);
    assert!(events_of(&db, "reused").await.is_empty());

    // Without a key, a guard that matches nothing is None.
    let missed = write_guarded(&db, None, money(45), Clone::clone, pay(0, 1, "missed"))
        .await
        .unwrap();
    assert_eq!(missed, None);
}

/// A real deadlock on PostgreSQL is recognised as worth a retry (its SQLSTATE is
/// not in sqlx's message); SQLite serialises writers and has none.
#[tokio::test]
async fn a_deadlock_is_retryable() {
    use retail_kit::db::is_retryable;
    use sea_orm::TransactionTrait;

    let (db, keep) = database().await;
    if keep.backend != "postgres" {
        return;
    }
    add_position(&db, "t").await;
    let touch = |source: &'static str| {
        consumer_position::Entity::update_many()
            .col_expr(consumer_position::Column::LogPosition, Expr::value(1))
            .filter(consumer_position::Column::Source.eq(source))
    };
    let (a, b) = (db.begin().await.unwrap(), db.begin().await.unwrap());
    touch("s").exec(&a).await.unwrap();
    touch("t").exec(&b).await.unwrap();
    // Each now waits for the other's row: PostgreSQL ends one of them.
    let (first, second) = tokio::join!(touch("t").exec(&a), touch("s").exec(&b));
    let err = match (first, second) {
        (Err(err), Ok(_)) | (Ok(_), Err(err)) => err,
        other => panic!("expected exactly one deadlock victim, got {other:?}"),
    };
    assert!(is_retryable(&err), "{err}");
}

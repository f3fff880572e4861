//! The database the kit's tests share: a fresh one per test (PostgreSQL when
//! `RETAIL_TEST_DATABASE_URL` is set, SQLite otherwise) with the kit's own tables.

use retail_kit::config::DatabaseSettings;
use retail_kit::{events, idempotency};
use sea_orm::DatabaseConnection;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(events::migration::CreateOutbox),
            Box::new(events::migration::CreateConsumerPositions),
            Box::new(idempotency::migration::Migration),
            Box::new(events::migration::PartialOutboxIndexes),
            Box::new(events::migration::OutboxPartitionKey),
            Box::new(events::migration::CreateConsumerPartitions),
        ]
    }
}

/// A migrated database; keep the second value alive as long as the first is used.
pub async fn kit_database() -> (DatabaseConnection, retail_testkit::TestDatabase) {
    let test_db = retail_testkit::TestDatabase::new().await.expect("a test database");
    let settings = DatabaseSettings {
        url: test_db.secret_url(),
        max_connections: 16,
        ..DatabaseSettings::default()
    };
    let db = retail_kit::db::connect_and_migrate::<Migrator>(&settings)
        .await
        .expect("migrations");
    (db, test_db)
}

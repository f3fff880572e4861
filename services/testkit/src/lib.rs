//! Test support shared by the services' integration tests (a dev-dependency only).
//!
//! - [`TestDatabase`]: a fresh, empty database per test: a new PostgreSQL database
//!   when `RETAIL_TEST_DATABASE_URL` is set (CI sets it), else a temporary SQLite file;
//!   either is removed when the test ends (`RETAIL_TEST_KEEP_DATABASES=1` keeps the
//!   PostgreSQL ones, to look into a failed test).
//! - [`capture_logs`]: installs a subscriber that records every log line of the test
//!   process, so a test can assert that no secret was logged.
//! - [`tokens`]: tokens signed by a test key the services under test trust.
//! - [`redis_server`]: a redis-server of a test's own, to freeze and restart.

#![forbid(unsafe_code)]

pub mod redis_server;
pub mod tokens;

use std::io::Write;
use std::sync::{Arc, Mutex};

use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;

/// Base URL of the PostgreSQL server for tests, if any.
pub fn postgres_base_url() -> Option<String> {
    std::env::var("RETAIL_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Redis for tests, if any.
pub fn redis_url() -> Option<String> {
    std::env::var("RETAIL_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
    /// The server's URL and the database's name, to drop it with.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn new() -> anyhow::Result<Self> {
        match postgres_base_url() {
            Some(base) => {
                let name = format!("test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(base.as_str()).await?;
                admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
                admin.close().await?;
                Ok(Self {
                    url: replace_database(&base, &name),
                    backend: "postgres",
                    _dir: None,
                    postgres: Some((base, name)),
                })
            }
            None => {
                let dir = tempfile::tempdir()?;
                let path = dir.path().join("test.db");
                Ok(Self {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    backend: "sqlite",
                    _dir: Some(dir),
                    postgres: None,
                })
            }
        }
    }

    pub fn secret_url(&self) -> SecretString {
        SecretString::from(self.url.clone())
    }
}

impl Drop for TestDatabase {
    /// Drops the PostgreSQL database (closing what still uses it), on a thread of its
    /// own since the test's runtime may be shutting down. A failure only leaves it behind.
    fn drop(&mut self) {
        let Some((base, name)) = self.postgres.take() else {
            return;
        };
        if std::env::var_os("RETAIL_TEST_KEEP_DATABASES").is_some_and(|v| v != "0") {
            return;
        }
        let dropping = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(admin) = Database::connect(base.as_str()).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropping.join();
    }
}

/// `postgres://u@h:5432/db?x` with the database name replaced.
fn replace_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = head[scheme_end..].find('/').map(|i| i + scheme_end);
    let root = match path_start {
        Some(i) => &head[..i],
        None => head,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// Everything logged in this process since [`capture_logs`].
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn contents(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

struct Sink(CapturedLogs);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a process-wide subscriber at the most verbose level for the suite's crates.
/// Call at most once per test process (nextest runs every test in its own process).
pub fn capture_logs() -> CapturedLogs {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "trace,h2=debug,hyper=debug,tower=debug",
        ))
        .with_ansi(false)
        .with_writer(move || Sink(writer.clone()))
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    logs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            replace_database("postgres://u:p@localhost:5432/postgres", "t1"),
            "postgres://u:p@localhost:5432/t1"
        );
        assert_eq!(
            replace_database("postgres://localhost", "t1"),
            "postgres://localhost/t1"
        );
        assert_eq!(
            replace_database("postgres://h/db?sslmode=disable", "t1"),
            "postgres://h/t1?sslmode=disable"
        );
    }
}

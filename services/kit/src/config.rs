//! Layered, typed configuration that fails fast.
//!
//! Layers, later winning: the service's built-in defaults, then an optional TOML file,
//! then environment variables `RETAIL_<SERVICE>__<SECTION>__<KEY>` (for example
//! `RETAIL_IDENTITY__DATABASE__URL`). Unknown keys and bad values are errors naming the
//! key. Secrets are [`secrecy::SecretString`] so they cannot be printed by accident.
//!
//! The sections every service shares live here; each service adds its own.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why configuration could not be loaded; the message names the bad key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Checks the values serde cannot, naming the key of the first bad one.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` for `service` from defaults, `file` and the environment.
pub fn load<T>(service: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    load_from(service, file, std::env::vars())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_from<T, I>(service: &str, file: Option<&Path>, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let prefix = format!("RETAIL_{}", service.to_uppercase().replace('-', "_"));
    let env_map: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{prefix}__")))
        .collect();
    let mut builder = config::Config::builder().add_source(config::Config::try_from(&T::default())?);
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(&prefix)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env_map)),
    );
    let settings: T = builder.build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// Where and how the gRPC server listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    /// 0 picks a free port; the bound address is reported back.
    pub port: u16,
    /// Upper bound on any RPC; a shorter client deadline (`grpc-timeout`) wins.
    pub request_timeout_ms: u64,
    /// RPCs served at once; more are shed with UNAVAILABLE rather than queued.
    pub concurrency_limit: usize,
    /// How long in-flight RPCs may take to finish after SIGTERM.
    pub drain_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            request_timeout_ms: 10_000,
            concurrency_limit: 1024,
            drain_timeout_ms: 20_000,
        }
    }
}

impl ServerSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                format!("{section}.request_timeout_ms"),
                "must be positive",
            ));
        }
        if self.concurrency_limit == 0 {
            return Err(ConfigError::invalid(
                format!("{section}.concurrency_limit"),
                "must be positive",
            ));
        }
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return Err(ConfigError::invalid(
                format!("{section}.host"),
                "must be an IP address or localhost",
            ));
        }
        Ok(())
    }
}

/// The service's own database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://...` or `sqlite://path/to/file.db`. May hold a password.
    #[serde(serialize_with = "serialize_secret")]
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout_ms: u64,
    /// Run pending migrations at start (local use, tests); production runs the
    /// `migrate` command from a deployment hook instead.
    pub migrate_on_start: bool,
    /// How long start-up keeps retrying an unreachable database.
    pub startup_retry_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://data/service.db?mode=rwc"),
            max_connections: 16,
            min_connections: 1,
            connect_timeout_ms: 5_000,
            migrate_on_start: true,
            startup_retry_ms: 30_000,
        }
    }
}

impl DatabaseSettings {
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let url = self.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:")) {
            return Err(ConfigError::invalid(
                format!("{section}.url"),
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        if self.max_connections == 0 || self.min_connections > self.max_connections {
            return Err(ConfigError::invalid(
                format!("{section}.max_connections"),
                "must be positive and at least min_connections",
            ));
        }
        Ok(())
    }
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `pretty` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// A `tracing` filter, for example `info,sqlx=warn`; `RUST_LOG` overrides it.
    pub log_filter: String,
    /// OTLP/gRPC endpoint, for example `http://otel-collector:4317`; unset = no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info,sqlx=warn,sea_orm=warn,h2=warn,tower=warn".into(),
            otlp_endpoint: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A publishing service's event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// How often the appender and subscribers look for other replicas' events.
    pub poll_ms: u64,
    /// How long the appender lets further commits gather after a commit before it
    /// positions them: one pass, and each subscriber's batch, then covers the commits
    /// of that moment. It is added to every event's latency. The default (100) suits
    /// logs whose subscribers apply each batch in a transaction of their own.
    pub append_linger_ms: u64,
    /// Events older than this are removed from the log.
    pub retention_hours: u64,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            poll_ms: 200,
            append_linger_ms: 100,
            retention_hours: 7 * 24,
        }
    }
}

impl EventsSettings {
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms.max(1))
    }

    pub fn append_linger(&self) -> Duration {
        Duration::from_millis(self.append_linger_ms.min(60_000))
    }

    /// Retention, capped at about 11 years so it always fits a `chrono::Duration`.
    pub fn retention(&self) -> chrono::Duration {
        chrono::Duration::hours(self.retention_hours.min(100_000) as i64)
    }
}

/// How a service verifies access tokens and obtains its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// Where identity listens, for public keys and the service's own token.
    pub identity_url: String,
    /// Lower bound between two key refreshes triggered by unknown key ids, so forged
    /// key ids cannot hammer identity.
    pub key_refresh_min_interval_ms: u64,
    /// This service's client id at identity.
    pub client_id: String,
    /// This service's client secret at identity.
    #[serde(serialize_with = "serialize_secret")]
    pub client_secret: SecretString,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "retail-identity".into(),
            identity_url: "http://127.0.0.1:50051".into(),
            key_refresh_min_interval_ms: 1_000,
            client_id: String::new(),
            client_secret: SecretString::from(String::new()),
        }
    }
}

/// Serializes a secret as-is: only used to feed the defaults layer to `config`,
/// never for output.
pub fn serialize_secret<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    s.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        server: ServerSettings,
        database: DatabaseSettings,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            self.server.validate("server")?;
            self.database.validate("database")
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_apply_without_file_or_env() {
        let s: Sample = load_from("sample", None, env(&[])).unwrap();
        assert_eq!(s.server.port, 0);
        assert!(s.database.migrate_on_start);
    }

    #[test]
    fn environment_overrides_defaults_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nport = 7000\nconcurrency_limit = 5\n").unwrap();
        let s: Sample = load_from(
            "sample",
            Some(&file),
            env(&[
                ("RETAIL_SAMPLE__SERVER__PORT", "7100"),
                ("RETAIL_SAMPLE__DATABASE__URL", "postgres://u:p@h/db"),
                ("RETAIL_OTHER__SERVER__PORT", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 7100);
        assert_eq!(s.server.concurrency_limit, 5);
        assert_eq!(s.database.url.expose_secret(), "postgres://u:p@h/db");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = load_from::<Sample, _>("sample", None, env(&[("RETAIL_SAMPLE__SERVER__PORT", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = load_from::<Sample, _>("sample", None, env(&[("RETAIL_SAMPLE__DATABASE__URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_a_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nprot = 7000\n").unwrap();
        let err = load_from::<Sample, _>("sample", Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = DatabaseSettings {
            url: SecretString::from("postgres://u:hunter2@h/db"),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

//! Layered, typed configuration that fails fast.
//!
//! Layers, later winning: the service's built-in defaults, then an optional TOML file,
//! then environment variables `RETAIL_<SERVICE>__<SECTION>__<KEY>` (for example
//! `RETAIL_IDENTITY__DATABASE__URL`). Unknown keys and bad values are errors naming the
//! key. Secrets are [`secrecy::SecretString`] so they cannot be printed by accident.
//!
//! Errors never repeat a value: what failed to parse may be a password, a client
//! secret or a database URL with credentials, and start-up errors end up in logs. They
//! name the key, the expected type and the kind of value found, and a file's parse
//! error keeps its position but not the quoted line.
//!
//! The sections every service shares live here; each service adds its own.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why configuration could not be loaded; the message names the bad key, never its value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable that could not be read or did not fit the settings, already
    /// described without any value (the `config` crate's own error quotes values, so
    /// it is not kept as the source either).
    #[error("invalid configuration: {0}")]
    Load(String),
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

impl From<config::ConfigError> for ConfigError {
    fn from(err: config::ConfigError) -> Self {
        Self::Load(without_values(&err))
    }
}

/// `err` described by key, expectation and kind of value, never the value itself.
fn without_values(err: &config::ConfigError) -> String {
    use config::ConfigError as E;
    match err {
        E::Type {
            unexpected,
            expected,
            key,
            ..
        } => {
            let unexpected = unexpected.to_string();
            let found = kind_of_value(&unexpected);
            match key {
                Some(key) => format!("`{key}` has the wrong type: expected {expected}, found {found}"),
                None => format!("wrong type: expected {expected}, found {found}"),
            }
        }
        E::At { error, key, .. } => match key {
            Some(key) => format!("`{key}`: {}", without_values(error)),
            None => without_values(error),
        },
        E::NotFound(key) => format!("`{key}` is missing"),
        E::Message(message) => serde_message_without_values(message),
        E::FileParse { uri, cause } => {
            let file = uri.as_deref().unwrap_or("a configuration file");
            format!(
                "{file} could not be parsed: {}",
                without_quoted_source(&cause.to_string())
            )
        }
        // I/O errors of reading the file: they name the path, not its content.
        E::Foreign(cause) => cause.to_string(),
        E::PathParse { .. } => "a key could not be parsed".into(),
        _ => "the configuration could not be loaded".into(),
    }
}

/// `string "..."` -> `string`, ``64-bit integer `5` `` -> `64-bit integer`.
fn kind_of_value(unexpected: &str) -> &str {
    unexpected.split(['`', '"']).next().unwrap_or_default().trim()
}

/// Serde's messages without the values they quote. Messages of other shapes may
/// quote anything, so they are replaced.
pub fn serde_message_without_values(message: &str) -> String {
    for shape in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(shape)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            return format!("{shape}{}, expected {expected}", kind_of_value(found));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match rest.rsplit_once(", expected ") {
            Some((_, expected)) => format!("unknown variant, expected {expected}"),
            None => "unknown variant".into(),
        };
    }
    // These quote a key or a length, not a value; [`list_or_json`]'s own are already
    // without values.
    if [
        "unknown field ",
        "missing field ",
        "duplicate field ",
        "invalid length ",
        NOT_A_JSON_LIST,
    ]
    .iter()
    .any(|shape| message.starts_with(shape))
    {
        return message.to_owned();
    }
    "has an invalid value".into()
}

/// A TOML parse error without the quoted source lines (`1 | url = "..."`, `  |  ^`),
/// which would print whatever secret sits on that line.
fn without_quoted_source(message: &str) -> String {
    message
        .lines()
        .filter(|line| {
            let rest = line.trim_start().trim_start_matches(|c: char| c.is_ascii_digit());
            !rest.trim_start().starts_with('|') && !line.trim().is_empty()
        })
        .collect::<Vec<_>>()
        .join("; ")
}

const NOT_A_JSON_LIST: &str = "is not a JSON list of the expected entries";

/// A list setting given either as a list (TOML, the default layer) or as one JSON
/// string, the form an environment variable can carry: indexed variable names such
/// as `..._SERVICE_ACCOUNTS[0]__SCOPES[0]` are not valid in every environment
/// (Kubernetes, shells). Parse errors name the position, never the content.
pub fn list_or_json<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    struct ListOrJson<T>(std::marker::PhantomData<T>);

    impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for ListOrJson<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list, or a JSON list in a string")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }

        fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<Self::Value, E> {
            if raw.trim().is_empty() {
                return Ok(Vec::new());
            }
            serde_json::from_str(raw).map_err(|err| {
                let message = json_message(&err);
                // Syntax messages describe the text ("expected `,`"), data messages
                // may quote a value.
                let reason = match err.classify() {
                    serde_json::error::Category::Data => serde_message_without_values(&message),
                    _ => message,
                };
                E::custom(format!(
                    "{NOT_A_JSON_LIST} (line {}, column {}: {reason})",
                    err.line(),
                    err.column(),
                ))
            })
        }
    }

    deserializer.deserialize_any(ListOrJson(std::marker::PhantomData))
}

/// serde_json's message without its ` at line L column C` suffix.
fn json_message(err: &serde_json::Error) -> String {
    let message = err.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
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
    /// How long the service goes on accepting connections and RPCs after SIGTERM
    /// while its health already reports NOT_SERVING, so that load balancers and
    /// Kubernetes readiness probes see it leave before its listener closes. Then
    /// the drain (`drain_timeout_ms`) begins. 0 = close at once (local use).
    pub drain_grace_ms: u64,
    /// Port of the Prometheus text endpoint (`GET /metrics`) on `host`; unset = none.
    pub metrics_port: Option<u16>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            request_timeout_ms: 10_000,
            concurrency_limit: 1024,
            drain_timeout_ms: 20_000,
            drain_grace_ms: 0,
            metrics_port: None,
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

    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
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

impl TelemetrySettings {
    /// The filter must parse and the endpoint must be an http(s) URL with a host:
    /// both are only used once the service is configured, where an error would
    /// not name the key.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log_filter) {
            return Err(ConfigError::invalid(
                format!("{section}.log_filter"),
                format!("is not a tracing filter such as `info,sqlx=warn`: {err}"),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            validate_url(&format!("{section}.otlp_endpoint"), endpoint, HTTP)?;
        }
        Ok(())
    }
}

/// The schemes of a gRPC or HTTP endpoint.
pub const HTTP: &[&str] = &["http", "https"];
/// The schemes of a Redis URL.
pub const REDIS: &[&str] = &["redis", "rediss"];

/// Checks that `url` is an absolute URL with one of `schemes` and a host, naming
/// `key` (and never the value, which may hold credentials) when it is not.
pub fn validate_url(key: &str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let expected = || {
        let schemes: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        format!("must be a URL of the form {}host:port", schemes.join(" or "))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(ConfigError::invalid(key, expected()));
    };
    if !schemes.contains(&scheme) {
        return Err(ConfigError::invalid(key, expected()));
    }
    // Credentials (`user:password@`) are not part of what `http::Uri` accepts.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let parsed = format!("http://{rest}").parse::<http::Uri>();
    match parsed {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(ConfigError::invalid(key, expected())),
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

impl AuthSettings {
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        validate_url(&format!("{section}.identity_url"), &self.identity_url, HTTP)?;
        if self.issuer.trim().is_empty() {
            return Err(ConfigError::invalid(format!("{section}.issuer"), "must not be empty"));
        }
        Ok(())
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

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct WithSecrets {
        database: DatabaseSettings,
        auth: AuthSettings,
        accounts: Vec<Account>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Account {
        client_id: String,
        #[serde(serialize_with = "serialize_secret")]
        client_secret: SecretString,
    }

    impl Validate for WithSecrets {
        fn validate(&self) -> Result<(), ConfigError> {
            self.database.validate("database")
        }
    }

    /// The error as a start-up failure prints it: Display and Debug, with its chain.
    fn print_error<T: std::fmt::Debug>(result: Result<T, ConfigError>) -> String {
        let err = anyhow::Error::new(result.unwrap_err());
        format!("{err:#}\n{err:?}")
    }

    #[test]
    fn a_refused_configuration_value_is_never_repeated_in_the_error() {
        // Regression: a service-account list given as one JSON value was refused with
        // the whole value, client secret included, in the message.
        let json = r#"[{"client_id":"x","client_secret":"s3cr3t-in-json"}]"#;
        let printed = print_error(load_from::<WithSecrets, _>(
            "sample",
            None,
            env(&[("RETAIL_SAMPLE__ACCOUNTS", json)]),
        ));
        assert!(printed.contains("accounts"), "{printed}");
        assert!(!printed.contains("s3cr3t"), "{printed}");

        // A TOML error quotes the offending line: here an unquoted database URL.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[database]\nurl = postgres://u:s3cr3t-in-file@h/db\n").unwrap();
        let printed = print_error(load_from::<WithSecrets, _>("sample", Some(&file), env(&[])));
        assert!(printed.contains("line 2"), "{printed}");
        assert!(!printed.contains("s3cr3t"), "{printed}");

        for (key, value) in [
            ("RETAIL_SAMPLE__DATABASE__URL", "mysql://u:s3cr3t-url@h/db"),
            ("RETAIL_SAMPLE__DATABASE__URL__X", "s3cr3t-nested"),
            ("RETAIL_SAMPLE__AUTH__CLIENT_SECRET__X", "s3cr3t-nested"),
            ("RETAIL_SAMPLE__DATABASE__MAX_CONNECTIONS", "s3cr3t-number"),
            ("RETAIL_SAMPLE__SERVER__PORT", "s3cr3t-unknown-section"),
        ] {
            let printed = print_error(load_from::<WithSecrets, _>("sample", None, env(&[(key, value)])));
            assert!(!printed.contains("s3cr3t"), "{key}: {printed}");
        }
    }

    #[test]
    fn serde_messages_keep_keys_and_expectations_but_drop_values() {
        assert_eq!(
            serde_message_without_values(r#"invalid type: string "hunter2, expected x", expected a sequence"#),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            serde_message_without_values("unknown variant `hunter2`, expected `pretty` or `json`"),
            "unknown variant, expected `pretty` or `json`"
        );
        assert_eq!(
            serde_message_without_values("unknown field `prot`, expected `port`"),
            "unknown field `prot`, expected `port`"
        );
        assert_eq!(serde_message_without_values("bad url hunter2"), "has an invalid value");
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct JsonAccounts {
        #[serde(deserialize_with = "list_or_json")]
        accounts: Vec<Account>,
    }

    impl Validate for JsonAccounts {
        fn validate(&self) -> Result<(), ConfigError> {
            Ok(())
        }
    }

    #[test]
    fn a_list_setting_is_accepted_as_one_json_value_or_as_a_toml_array() {
        let json = r#"[{"client_id":"a","client_secret":"one"},{"client_id":"b","client_secret":"two"}]"#;
        let s: JsonAccounts = load_from("sample", None, env(&[("RETAIL_SAMPLE__ACCOUNTS", json)])).unwrap();
        let ids: Vec<_> = s.accounts.iter().map(|a| a.client_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(s.accounts[1].client_secret.expose_secret(), "two");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[[accounts]]\nclient_id = \"t\"\nclient_secret = \"three\"\n").unwrap();
        let s: JsonAccounts = load_from("sample", Some(&file), env(&[])).unwrap();
        assert_eq!(s.accounts[0].client_id, "t");

        let s: JsonAccounts = load_from("sample", None, env(&[])).unwrap();
        assert!(s.accounts.is_empty());

        for bad in [
            r#"[{"client_id":"a","client_secret":"s3cr3t","extra":1}]"#,
            r#"[{"client_id":"a","client_secret":12345678}]"#,
            r#"[{"client_id":"a","client_secret":"s3cr3t""#,
            r#"{"client_id":"a","client_secret":"s3cr3t"}"#,
        ] {
            let printed = print_error(load_from::<JsonAccounts, _>(
                "sample",
                None,
                env(&[("RETAIL_SAMPLE__ACCOUNTS", bad)]),
            ));
            assert!(printed.contains("accounts"), "{printed}");
            assert!(
                !printed.contains("s3cr3t") && !printed.contains("12345678"),
                "{printed}"
            );
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Shared {
        telemetry: TelemetrySettings,
        auth: AuthSettings,
    }

    impl Validate for Shared {
        fn validate(&self) -> Result<(), ConfigError> {
            self.telemetry.validate("telemetry")?;
            self.auth.validate("auth")
        }
    }

    #[test]
    fn bad_filters_and_endpoints_are_refused_at_load_naming_their_key() {
        // Regression: a bad filter printed only "invalid filter directive" when
        // telemetry started, a bad endpoint named no key, and a scheme-less identity
        // URL was only found out while verifying tokens.
        for (key, value, named) in [
            (
                "RETAIL_SAMPLE__TELEMETRY__LOG_FILTER",
                "info,[=",
                "telemetry.log_filter",
            ),
            (
                "RETAIL_SAMPLE__TELEMETRY__OTLP_ENDPOINT",
                "collector:4317",
                "telemetry.otlp_endpoint",
            ),
            (
                "RETAIL_SAMPLE__TELEMETRY__OTLP_ENDPOINT",
                "http://",
                "telemetry.otlp_endpoint",
            ),
            (
                "RETAIL_SAMPLE__AUTH__IDENTITY_URL",
                "identity:53051",
                "auth.identity_url",
            ),
            (
                "RETAIL_SAMPLE__AUTH__IDENTITY_URL",
                "grpc://identity:50051",
                "auth.identity_url",
            ),
            (
                "RETAIL_SAMPLE__AUTH__IDENTITY_URL",
                "http://ident ity:1",
                "auth.identity_url",
            ),
        ] {
            let err = load_from::<Shared, _>("sample", None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
        let ok: Shared = load_from(
            "sample",
            None,
            env(&[
                ("RETAIL_SAMPLE__TELEMETRY__LOG_FILTER", "warn,retail_orders=debug"),
                ("RETAIL_SAMPLE__TELEMETRY__OTLP_ENDPOINT", "http://otel-collector:4317"),
                ("RETAIL_SAMPLE__AUTH__IDENTITY_URL", "https://identity.retail.svc:50051"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.auth.identity_url, "https://identity.retail.svc:50051");
    }

    #[test]
    fn urls_are_checked_by_scheme_and_host_without_repeating_credentials() {
        assert!(validate_url("k", "redis://:p4ss@redis:6379/0", REDIS).is_ok());
        assert!(validate_url("k", "http://127.0.0.1:50051", HTTP).is_ok());
        let err = validate_url("cache.redis_url", "http://:s3cr3t@redis:6379", REDIS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.redis_url") && !err.contains("s3cr3t"), "{err}");
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

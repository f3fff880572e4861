//! The gateway's configuration: where it listens, the services behind it, request
//! limits, the per-partner rate limits, and its own database and webhooks.

use std::time::Duration;

use retail_kit::config::{AuthSettings, ConfigError, DatabaseSettings, ServerSettings, TelemetrySettings, Validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    /// Identity: keys that verify tokens, and the API-key exchange.
    pub auth: AuthSettings,
    pub upstream: UpstreamSection,
    pub http: HttpSection,
    pub rate_limit: RateLimitSection,
    /// The gateway's own database (webhook subscriptions and deliveries).
    pub database: DatabaseSettings,
    pub webhooks: crate::webhooks::WebhooksSection,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings {
                port: 8080,
                ..ServerSettings::default()
            },
            telemetry: TelemetrySettings::default(),
            auth: AuthSettings::default(),
            upstream: UpstreamSection::default(),
            http: HttpSection::default(),
            rate_limit: RateLimitSection::default(),
            database: DatabaseSettings {
                url: secrecy::SecretString::from("sqlite://data/gateway.db?mode=rwc"),
                ..DatabaseSettings::default()
            },
            webhooks: crate::webhooks::WebhooksSection::default(),
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate("server")?;
        self.telemetry.validate("telemetry")?;
        self.auth.validate("auth")?;
        self.database.validate("database")?;
        self.webhooks.validate()?;
        for (key, url) in [
            ("upstream.partner_url", &self.upstream.partner_url),
            ("upstream.catalog_url", &self.upstream.catalog_url),
            ("upstream.orders_url", &self.upstream.orders_url),
        ] {
            retail_kit::config::validate_url(key, url, retail_kit::config::HTTP)?;
        }
        if self.upstream.timeout_ms == 0 {
            return Err(ConfigError::invalid("upstream.timeout_ms", "must be positive"));
        }
        if self.upstream.currency.len() != 3 || !self.upstream.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ConfigError::invalid("upstream.currency", "must be an ISO-4217 code"));
        }
        if self.http.body_limit_bytes == 0 {
            return Err(ConfigError::invalid("http.body_limit_bytes", "must be positive"));
        }
        if self.rate_limit.replicas == 0 {
            return Err(ConfigError::invalid("rate_limit.replicas", "must be positive"));
        }
        for (key, class) in [
            ("rate_limit.read", &self.rate_limit.read),
            ("rate_limit.write", &self.rate_limit.write),
        ] {
            if class.rps == 0 || class.burst == 0 {
                return Err(ConfigError::invalid(key, "rps and burst must be positive"));
            }
        }
        if let Some(url) = &self.rate_limit.redis_url {
            retail_kit::config::validate_url("rate_limit.redis_url", url, &["redis", "rediss"])?;
        }
        Ok(())
    }
}

/// The services the gateway translates to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSection {
    pub partner_url: String,
    pub catalog_url: String,
    pub orders_url: String,
    /// Deadline of each call.
    pub timeout_ms: u64,
    /// The currency of the partner prices quoted (ISO-4217, as orders').
    pub currency: String,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            catalog_url: "http://127.0.0.1:50053".into(),
            orders_url: "http://127.0.0.1:50054".into(),
            partner_url: "http://127.0.0.1:50055".into(),
            timeout_ms: 5_000,
            currency: "EUR".into(),
        }
    }
}

impl UpstreamSection {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Limits of the HTTP requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Larger request bodies are refused with 413.
    pub body_limit_bytes: usize,
    /// A token exchanged for an API key is used until this long before it expires.
    pub token_refresh_before_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            token_refresh_before_secs: 30,
        }
    }
}

/// Per-partner rate limits, shared by the gateway's replicas through Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Redis shared by every replica; unset = each replica limits on its own
    /// with its share (`limit / replicas`).
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys; the replicas of one gateway share it.
    pub namespace: String,
    /// How many gateway replicas run: without Redis each one admits this share.
    pub replicas: u32,
    /// Reads (GET).
    pub read: RateClass,
    /// Changes (POST, PATCH, DELETE).
    pub write: RateClass,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            redis_url: None,
            namespace: "retail:gateway:rl".into(),
            replicas: 1,
            read: RateClass { rps: 50, burst: 100 },
            write: RateClass { rps: 10, burst: 20 },
        }
    }
}

/// A sustained rate and the burst above it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateClass {
    pub rps: u32,
    pub burst: u32,
}

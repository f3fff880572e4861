//! Membership's configuration: the shared sections plus cache, events and loyalty
//! defaults.

use retail_kit::config::{AuthSettings, ConfigError, DatabaseSettings, ServerSettings, TelemetrySettings, Validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub cache: CacheSection,
    pub events: EventsSection,
    pub loyalty: LoyaltySection,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate("server")?;
        self.database.validate("database")?;
        if let Some(url) = &self.cache.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::invalid(
                "cache.redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        if self.cache.ttl_secs == 0 {
            return Err(ConfigError::invalid("cache.ttl_secs", "must be positive"));
        }
        if self.cache.timeout_ms == 0 {
            return Err(ConfigError::invalid("cache.timeout_ms", "must be positive"));
        }
        if crate::domain::money::minor_exponent(&self.loyalty.currency).is_none() {
            return Err(ConfigError::invalid("loyalty.currency", "must be an ISO-4217 code"));
        }
        Ok(())
    }
}

/// The hot-profile cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// `redis://host:6379`; unset = in-process cache.
    pub redis_url: Option<String>,
    /// Key prefix, so several deployments can share one Redis.
    pub namespace: String,
    pub ttl_secs: u64,
    /// A Redis round trip slower than this falls back to the database.
    pub timeout_ms: u64,
    pub local_capacity: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            redis_url: None,
            namespace: "membership".into(),
            ttl_secs: 300,
            timeout_ms: 25,
            local_capacity: 200_000,
        }
    }
}

/// The event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSection {
    /// How often the appender and subscribers look for other replicas' events.
    pub poll_ms: u64,
    /// Events older than this are removed from the log.
    pub retention_hours: u64,
}

impl Default for EventsSection {
    fn default() -> Self {
        Self {
            poll_ms: 200,
            retention_hours: 7 * 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoyaltySection {
    /// Currency of spend and points.
    pub currency: String,
    /// Tier of a newly registered member.
    pub base_tier: String,
}

impl Default for LoyaltySection {
    fn default() -> Self {
        Self {
            currency: "EUR".into(),
            base_tier: "regular".into(),
        }
    }
}

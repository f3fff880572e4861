//! Channel-partner's configuration: the shared sections, where orders' event log is,
//! and the programme's rules (levels, points).

use retail_kit::config::{
    AuthSettings, ConfigError, DatabaseSettings, EventsSettings, ServerSettings, TelemetrySettings, Validate,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub events: EventsSettings,
    pub orders: OrdersFeedSection,
}

/// Where attributed sales come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersFeedSection {
    /// The orders service, whose event log this service subscribes to
    /// (`http://orders:50054`); unset = no subscription.
    pub events_url: Option<String>,
    /// Subscriptions that apply the log side by side, each taking the events of its
    /// share of the partners.
    pub partitions: u32,
}

impl Default for OrdersFeedSection {
    fn default() -> Self {
        Self {
            events_url: None,
            partitions: 2,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate("server")?;
        self.database.validate("database")?;
        if let Some(url) = &self.orders.events_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "orders.events_url",
                "must be an http:// or https:// URL",
            ));
        }
        if !(1..=64).contains(&self.orders.partitions) {
            return Err(ConfigError::invalid("orders.partitions", "must be between 1 and 64"));
        }
        Ok(())
    }
}

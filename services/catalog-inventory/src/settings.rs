//! Catalog-inventory's configuration: the shared sections plus reservation and
//! pricing defaults.

use retail_kit::config::{
    AuthSettings, ConfigError, DatabaseSettings, EventsSettings, ServerSettings, TelemetrySettings, Validate,
};
use serde::{Deserialize, Serialize};

use crate::domain::codes;
use crate::domain::pricing::MAX_DISCOUNT_BP;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub events: EventsSettings,
    pub inventory: InventorySection,
    pub pricing: PricingSection,
    pub sku_cache: SkuCacheSection,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            telemetry: TelemetrySettings::default(),
            auth: AuthSettings::default(),
            // The SKU view cache follows this log, so the appender's wait is how stale
            // a view of this replica's own change may be: short.
            events: EventsSettings {
                append_linger_ms: 25,
                ..EventsSettings::default()
            },
            inventory: InventorySection::default(),
            pricing: PricingSection::default(),
            sku_cache: SkuCacheSection::default(),
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate("server")?;
        self.database.validate("database")?;
        self.telemetry.validate("telemetry")?;
        self.auth.validate("auth")?;
        let inv = &self.inventory;
        if inv.reservation_ttl_secs == 0 || inv.reservation_ttl_secs > inv.max_reservation_ttl_secs {
            return Err(ConfigError::invalid(
                "inventory.reservation_ttl_secs",
                "must be positive and at most inventory.max_reservation_ttl_secs",
            ));
        }
        if inv.sweep_every_secs == 0 {
            return Err(ConfigError::invalid("inventory.sweep_every_secs", "must be positive"));
        }
        if self.sku_cache.ttl_secs == 0 {
            return Err(ConfigError::invalid("sku_cache.ttl_secs", "must be positive"));
        }
        codes::currency(&self.pricing.currency).map_err(|e| ConfigError::invalid("pricing.currency", e))?;
        if self.pricing.competitor_alert_bp > MAX_DISCOUNT_BP {
            return Err(ConfigError::invalid(
                "pricing.competitor_alert_bp",
                "must be at most 9000 (90 %)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventorySection {
    /// A reservation not committed within this time is released by the sweeper.
    pub reservation_ttl_secs: u64,
    /// The longest TTL a caller may ask for.
    pub max_reservation_ttl_secs: u64,
    /// How often the sweeper looks for expired reservations.
    pub sweep_every_secs: u64,
}

impl Default for InventorySection {
    fn default() -> Self {
        Self {
            reservation_ttl_secs: 15 * 60,
            max_reservation_ttl_secs: 24 * 3600,
            sweep_every_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingSection {
    /// Currency of quotes that name none.
    pub currency: String,
    /// A competitor cheaper than our consumer price by more than this (basis points
    /// of our price) raises an alert.
    pub competitor_alert_bp: u32,
}

impl Default for PricingSection {
    fn default() -> Self {
        Self {
            currency: "EUR".into(),
            competitor_alert_bp: 500,
        }
    }
}

/// The read caches of SKU views (`BatchGetSkus`, quotes) and of prices (quotes),
/// both kept current by following the service's own event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SkuCacheSection {
    /// Views kept at most, and list prices; 0 turns both caches off.
    pub capacity: u64,
    /// A view or price is dropped after this long even if no event changed it.
    pub ttl_secs: u64,
}

impl Default for SkuCacheSection {
    fn default() -> Self {
        Self {
            capacity: 200_000,
            ttl_secs: 300,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn the_log_behind_the_sku_cache_keeps_a_short_linger_when_other_event_keys_are_set() {
        let env = [("RETAIL_CATALOG__EVENTS__POLL_MS".to_owned(), "50".to_owned())];
        let settings: Settings = retail_kit::config::load_from("catalog", None, env).unwrap();
        assert_eq!(settings.events.poll_ms, 50);
        assert_eq!(settings.events.append_linger_ms, 25);
        assert_eq!(retail_kit::config::EventsSettings::default().append_linger_ms, 100);
    }
}

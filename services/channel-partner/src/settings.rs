//! Channel-partner's configuration: the shared sections, where orders' event log is,
//! and the programme's rules (levels, points).

use retail_kit::config::{
    AuthSettings, ConfigError, DatabaseSettings, EventsSettings, ServerSettings, TelemetrySettings, Validate,
};
use serde::{Deserialize, Serialize};

use crate::domain::levels::{Ladder, LevelDef};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub events: EventsSettings,
    pub orders: OrdersFeedSection,
    pub programme: ProgrammeSection,
    pub sales: SalesSection,
    pub downstream: DownstreamSection,
}

/// Where quotes find catalog (the level's wholesale list) and orders (the order
/// an accepted quote becomes). Without them quotes are FAILED_PRECONDITION.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownstreamSection {
    /// Catalog-inventory's gRPC URL.
    pub catalog_url: Option<String>,
    /// Orders-logistics' gRPC URL.
    pub orders_url: Option<String>,
    /// Deadline of each attempt of a call.
    pub timeout_ms: u64,
}

impl Default for DownstreamSection {
    fn default() -> Self {
        Self {
            catalog_url: None,
            orders_url: None,
            timeout_ms: 5_000,
        }
    }
}

/// The sales side: deal locks, lead distribution, the sweep that expires locks
/// and offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SalesSection {
    /// How long a deal lock holds.
    pub lock_days: u32,
    /// How much longer a lock holds after its one extension.
    pub lock_extension_days: u32,
    /// How long a partner has to accept an offered lead.
    pub lead_accept_hours: u32,
    /// How many open (offered or accepted) leads a partner may hold.
    pub lead_capacity: u32,
    /// Per level code, a capacity other than `lead_capacity`.
    pub level_lead_capacity: std::collections::BTreeMap<String, u32>,
    /// How often due locks expire and unanswered offers time out.
    pub sweep_every_secs: u64,
    /// How long a quote may be accepted when it names no `valid_until`.
    pub quote_valid_days: u32,
}

impl Default for SalesSection {
    fn default() -> Self {
        Self {
            lock_days: 90,
            lock_extension_days: 90,
            lead_accept_hours: 48,
            lead_capacity: 5,
            level_lead_capacity: std::collections::BTreeMap::new(),
            sweep_every_secs: 60,
            quote_valid_days: 30,
        }
    }
}

impl SalesSection {
    /// The lead capacity of a partner at `level`.
    pub fn capacity(&self, level: &str) -> u32 {
        self.level_lead_capacity
            .get(level)
            .copied()
            .unwrap_or(self.lead_capacity)
    }
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
        self.programme.rules()?;
        if !(1..=3650).contains(&self.sales.lock_days) {
            return Err(ConfigError::invalid("sales.lock_days", "must be between 1 and 3650"));
        }
        if !(1..=3650).contains(&self.sales.lock_extension_days) {
            return Err(ConfigError::invalid(
                "sales.lock_extension_days",
                "must be between 1 and 3650",
            ));
        }
        if !(1..=8760).contains(&self.sales.lead_accept_hours) {
            return Err(ConfigError::invalid(
                "sales.lead_accept_hours",
                "must be between 1 and 8760",
            ));
        }
        for (key, url) in [
            ("downstream.catalog_url", &self.downstream.catalog_url),
            ("downstream.orders_url", &self.downstream.orders_url),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::invalid(key, "must be an http:// or https:// URL"));
            }
        }
        if self.downstream.timeout_ms == 0 {
            return Err(ConfigError::invalid("downstream.timeout_ms", "must be positive"));
        }
        if !(1..=366).contains(&self.sales.quote_valid_days) {
            return Err(ConfigError::invalid(
                "sales.quote_valid_days",
                "must be between 1 and 366",
            ));
        }
        if self.sales.sweep_every_secs == 0 {
            return Err(ConfigError::invalid("sales.sweep_every_secs", "must be positive"));
        }
        Ok(())
    }
}

/// The programme's rules: levels, points, actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProgrammeSection {
    /// Currency of sales, targets and thresholds (ISO 4217; orders in another are
    /// not counted).
    pub currency: String,
    /// Digits of the currency's minor unit.
    pub minor_exponent: u32,
    /// The level ladder, lowest first; the first level starts at 0.
    pub levels: Vec<LevelDef>,
    /// Points per major unit of attributed sales, in 1/10000 (10000 = 1 point per
    /// 1.00), before the level's multiplier.
    pub base_rate: u32,
    /// Lots expire at the end of the month this many months after their credit.
    pub lot_months: u32,
    /// The actions that earn points, by code.
    pub actions: Vec<ActionDef>,
    /// How often levels are re-evaluated (downgrades happen only then).
    pub reevaluate_every_hours: u64,
    /// How often expired lots are written off.
    pub expire_every_minutes: u64,
}

/// An action that earns a fixed number of points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    pub code: String,
    pub points: i64,
}

impl Default for ProgrammeSection {
    fn default() -> Self {
        Self {
            currency: "EUR".into(),
            minor_exponent: 2,
            levels: Ladder::standard().levels().to_vec(),
            base_rate: 10_000,
            lot_months: 12,
            actions: vec![
                ActionDef {
                    code: "training_completed".into(),
                    points: 200,
                },
                ActionDef {
                    code: "registered_deal_won".into(),
                    points: 500,
                },
            ],
            reevaluate_every_hours: 24,
            expire_every_minutes: 60,
        }
    }
}

/// The rules the programme section describes.
#[derive(Debug, Clone)]
pub struct Rules {
    pub currency: String,
    pub minor_exponent: u32,
    pub ladder: Ladder,
    pub base_rate: u32,
    pub lot_months: u32,
    pub actions: Vec<ActionDef>,
}

impl ProgrammeSection {
    pub fn rules(&self) -> Result<Rules, ConfigError> {
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ConfigError::invalid("programme.currency", "must be an ISO-4217 code"));
        }
        if self.minor_exponent > 4 {
            return Err(ConfigError::invalid("programme.minor_exponent", "must be 0-4"));
        }
        let ladder =
            Ladder::new(self.levels.clone()).map_err(|e| ConfigError::invalid("programme.levels", e.to_string()))?;
        if self.lot_months == 0 {
            return Err(ConfigError::invalid("programme.lot_months", "must be positive"));
        }
        for (i, a) in self.actions.iter().enumerate() {
            let code_ok = !a.code.is_empty()
                && a.code.len() <= 32
                && a.code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !code_ok || self.actions[..i].iter().any(|o| o.code == a.code) {
                return Err(ConfigError::invalid(
                    "programme.actions",
                    "codes must be 1-32 characters of a-z, 0-9, '_' and unique",
                ));
            }
            if !(1..=1_000_000_000).contains(&a.points) {
                return Err(ConfigError::invalid("programme.actions", "points must be 1-1000000000"));
            }
        }
        Ok(Rules {
            currency: self.currency.clone(),
            minor_exponent: self.minor_exponent,
            ladder,
            base_rate: self.base_rate,
            lot_months: self.lot_months,
            actions: self.actions.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_programmes_name_their_key() {
        let settings = Settings::default();
        assert!(settings.validate().is_ok());
        let mut bad = Settings::default();
        bad.programme.levels.swap(1, 2);
        assert!(bad.validate().unwrap_err().to_string().contains("programme.levels"));
        let mut bad = Settings::default();
        bad.programme.actions[1].code = bad.programme.actions[0].code.clone();
        assert!(bad.validate().unwrap_err().to_string().contains("programme.actions"));
    }
}

//! Orders-logistics' configuration: the shared sections, the downstream services and
//! the order rules.

use std::time::Duration;

use retail_kit::config::{
    AuthSettings, ConfigError, DatabaseSettings, EventsSettings, ServerSettings, TelemetrySettings, Validate,
};
use retail_kit::resilience::CallPolicy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub events: EventsSettings,
    pub downstream: DownstreamSection,
    pub orders: OrdersSection,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate("server")?;
        self.database.validate("database")?;
        self.telemetry.validate("telemetry")?;
        self.auth.validate("auth")?;
        for (key, url) in [
            ("downstream.membership_url", &self.downstream.membership_url),
            ("downstream.catalog_url", &self.downstream.catalog_url),
        ] {
            retail_kit::config::validate_url(key, url, retail_kit::config::HTTP)?;
        }
        if let Some(url) = &self.downstream.partner_url {
            retail_kit::config::validate_url("downstream.partner_url", url, retail_kit::config::HTTP)?;
        }
        if self.downstream.timeout_ms == 0 || self.downstream.attempts == 0 {
            return Err(ConfigError::invalid(
                "downstream.timeout_ms",
                "timeout and attempts must be positive",
            ));
        }
        if self.orders.currency.len() != 3 || !self.orders.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ConfigError::invalid("orders.currency", "must be an ISO-4217 code"));
        }
        if self.orders.payment_window_secs == 0 || self.orders.sweep_every_secs == 0 {
            return Err(ConfigError::invalid(
                "orders.payment_window_secs",
                "windows must be positive",
            ));
        }
        if self.orders.placement_wait_ms >= self.server.request_timeout_ms {
            return Err(ConfigError::invalid(
                "orders.placement_wait_ms",
                format!(
                    "must be less than server.request_timeout_ms ({})",
                    self.server.request_timeout_ms
                ),
            ));
        }
        // A saga is only taken for dead after every remote step could have timed out.
        let longest = self.downstream.timeout_ms * u64::from(self.downstream.attempts) * 3 / 1000;
        if self.orders.saga_stale_after_secs <= longest {
            return Err(ConfigError::invalid(
                "orders.saga_stale_after_secs",
                format!("must exceed the longest saga ({longest} s with these timeouts)"),
            ));
        }
        Ok(())
    }
}

/// The services orders calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownstreamSection {
    pub membership_url: String,
    pub catalog_url: String,
    /// Channel-partner, whose price policy prices partner orders (the partner's
    /// level, its wholesale list, the policy's discounts, special discounts) and
    /// whose deal locks refuse a partner order to a customer locked to another
    /// partner. Unset: partner orders are priced at catalog's consumer list price,
    /// as a consumer sale, without discounts, a special discount on an order is
    /// refused, and an order's end customer is not checked against locks (a
    /// warning says so at start-up).
    pub partner_url: Option<String>,
    /// Deadline of each call.
    pub timeout_ms: u64,
    /// Attempts of idempotent calls.
    pub attempts: u32,
    /// Consecutive outages that open a downstream's circuit.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast.
    pub cool_down_ms: u64,
}

impl Default for DownstreamSection {
    fn default() -> Self {
        Self {
            membership_url: "http://127.0.0.1:50052".into(),
            catalog_url: "http://127.0.0.1:50053".into(),
            partner_url: None,
            timeout_ms: 2_000,
            attempts: 3,
            failure_threshold: 5,
            cool_down_ms: 5_000,
        }
    }
}

impl DownstreamSection {
    pub fn policy(&self) -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_millis(self.timeout_ms),
            attempts: self.attempts,
            backoff: Duration::from_millis(50),
            failure_threshold: self.failure_threshold.max(1),
            cool_down: Duration::from_millis(self.cool_down_ms),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersSection {
    /// Currency of orders.
    pub currency: String,
    /// Unpaid orders are cancelled after this time; also the reservation's TTL.
    pub payment_window_secs: u64,
    /// A saga untouched for this long is taken for dead and compensated.
    pub saga_stale_after_secs: u64,
    /// How often unpaid orders, dead sagas and unfinished stock work are looked for.
    pub sweep_every_secs: u64,
    /// How long a retried placement waits for its first attempt to finish before it
    /// is answered ABORTED ("retry with the same request id"); less than the
    /// server's request timeout, so the caller gets that answer and not CANCELLED.
    pub placement_wait_ms: u64,
}

impl Default for OrdersSection {
    fn default() -> Self {
        Self {
            currency: "EUR".into(),
            payment_window_secs: 15 * 60,
            saga_stale_after_secs: 60,
            sweep_every_secs: 15,
            placement_wait_ms: 2_000,
        }
    }
}

impl OrdersSection {
    pub fn placement_wait(&self) -> Duration {
        Duration::from_millis(self.placement_wait_ms)
    }
}

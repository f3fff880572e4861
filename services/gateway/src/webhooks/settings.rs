//! The `webhooks` section of the gateway's configuration.

use std::time::Duration;

use retail_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

/// Outbound webhooks: which event logs feed them and how deliveries are tried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    /// Orders' event log (`http://orders:50054`); unset = no order events.
    pub orders_events_url: Option<String>,
    /// Channel-partner's event log (`http://channel-partner:50055`); unset = no
    /// lead, lock, target and redemption events.
    pub partner_events_url: Option<String>,
    /// Deadline of one delivery attempt (connect, send, response head).
    pub timeout_ms: u64,
    /// Attempts of a delivery before it is dead-lettered (a replay starts a new
    /// round of as many).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub backoff_base_ms: u64,
    /// The longest wait between two attempts.
    pub backoff_max_ms: u64,
    /// How often the worker looks for due deliveries (new events wake it at once).
    pub poll_ms: u64,
    /// Deliveries sent at once by one replica.
    pub concurrency: usize,
    /// Whether subscription URLs may point at (or resolve to) loopback, private,
    /// link-local and other non-public addresses. Off in production, so that a
    /// partner cannot make the gateway call into the cluster's network.
    pub allow_private_addresses: bool,
    /// Subscriptions one partner may have.
    pub max_subscriptions: u32,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        Self {
            orders_events_url: None,
            partner_events_url: None,
            timeout_ms: 10_000,
            max_attempts: 8,
            backoff_base_ms: 10_000,
            backoff_max_ms: 3_600_000,
            poll_ms: 1_000,
            concurrency: 8,
            allow_private_addresses: false,
            max_subscriptions: 20,
        }
    }
}

impl WebhooksSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("webhooks.orders_events_url", &self.orders_events_url),
            ("webhooks.partner_events_url", &self.partner_events_url),
        ] {
            if let Some(url) = url {
                retail_kit::config::validate_url(key, url, retail_kit::config::HTTP)?;
            }
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::invalid("webhooks.timeout_ms", "must be positive"));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(ConfigError::invalid(
                "webhooks.max_attempts",
                "must be between 1 and 100",
            ));
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::invalid(
                "webhooks.backoff_base_ms",
                "must be positive and at most webhooks.backoff_max_ms",
            ));
        }
        if self.poll_ms == 0 {
            return Err(ConfigError::invalid("webhooks.poll_ms", "must be positive"));
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(ConfigError::invalid(
                "webhooks.concurrency",
                "must be between 1 and 256",
            ));
        }
        if !(1..=1000).contains(&self.max_subscriptions) {
            return Err(ConfigError::invalid(
                "webhooks.max_subscriptions",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_ms)
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}

//! Membership's configuration: the shared sections plus cache, events and loyalty
//! defaults.

use retail_kit::config::{
    AuthSettings, ConfigError, DatabaseSettings, EventsSettings, ServerSettings, TelemetrySettings, Validate,
};
use serde::{Deserialize, Serialize};

use crate::domain::money::Factor;
use crate::domain::rules::LoyaltyRules;
use crate::domain::tiers::{Ladder, PercentileShares, SpendWindow, TierDef};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub cache: CacheSection,
    pub events: EventsSettings,
    pub loyalty: LoyaltySection,
    pub orders: OrdersFeedSection,
    pub analytics: AnalyticsFeedSection,
    pub engagement: EngagementSection,
    pub catalog: CatalogSection,
}

/// Where coupon campaigns get their members' codes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSection {
    /// The catalog service (`http://catalog:50053`), whose `IssueCouponCodes`
    /// gives coupon campaigns their members' codes; unset = no coupon campaigns.
    pub url: Option<String>,
}

/// Where overdue members (the overdue campaign trigger) and member scores (RFM
/// segments, predicted tags) come from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsFeedSection {
    /// The analytics service, whose event log (`MemberOverdue`, `MemberScored`)
    /// membership subscribes to (`http://analytics:50056`); unset = no
    /// subscription (overdue campaigns never fire, no member is scored).
    pub events_url: Option<String>,
}

/// Campaign limits and the campaign job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngagementSection {
    /// Messages a member gets through one channel within `frequency_window_days`,
    /// across campaigns.
    pub frequency_cap: u64,
    pub frequency_window_days: u32,
    /// How often campaigns are started, sent, finished and the outbox delivered.
    pub run_every_secs: u64,
    /// Purchases this many days after a contact (or control decision) count as its
    /// response.
    pub attribution_days: u32,
    /// How messages leave: `log` (kept only as the log `ListMessages` shows) or
    /// `webhook` (POSTed to `webhook.url`).
    pub sender: String,
    pub webhook: MessageWebhookSection,
}

/// The webhook messages are POSTed to, signed, when `engagement.sender = "webhook"`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageWebhookSection {
    /// `https://sms-bridge.example.com/messages`.
    pub url: String,
    /// The HMAC-SHA256 key of the `Webhook-Signature` header.
    pub secret: String,
    /// One try's limit, connecting included.
    pub timeout_ms: u64,
    /// Tries per message before it is dead-lettered.
    pub max_attempts: u32,
    /// The wait after the first failed try, doubled after each further one up to
    /// `backoff_max_ms` (tries happen on the campaign runs after it).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Whether the URL may be (or resolve to) a loopback or private address.
    pub allow_private_addresses: bool,
}

impl Default for MessageWebhookSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: String::new(),
            timeout_ms: 10_000,
            max_attempts: 8,
            backoff_base_ms: 60_000,
            backoff_max_ms: 3_600_000,
            allow_private_addresses: false,
        }
    }
}

impl std::fmt::Debug for MessageWebhookSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWebhookSection")
            .field("url", &"[redacted]")
            .field("secret", &"[redacted]")
            .field("timeout_ms", &self.timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("allow_private_addresses", &self.allow_private_addresses)
            .finish()
    }
}

impl MessageWebhookSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(retail_kit::webhook::BadUrl(why)) =
            retail_kit::webhook::check_url(&self.url, self.allow_private_addresses)
        {
            return Err(ConfigError::invalid("engagement.webhook.url", why));
        }
        if self.secret.is_empty() {
            return Err(ConfigError::invalid("engagement.webhook.secret", "is required"));
        }
        if self.timeout_ms == 0 || self.max_attempts == 0 || self.backoff_base_ms == 0 {
            return Err(ConfigError::invalid(
                "engagement.webhook.timeout_ms",
                "the timeout, max_attempts and backoff_base_ms must be positive",
            ));
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::invalid(
                "engagement.webhook.backoff_max_ms",
                "must be at least backoff_base_ms",
            ));
        }
        Ok(())
    }

    /// The configured sender.
    pub(crate) fn sender(&self) -> anyhow::Result<crate::app::WebhookSender> {
        crate::app::WebhookSender::new(
            self.url.clone(),
            self.secret.clone(),
            std::time::Duration::from_millis(self.timeout_ms),
            self.allow_private_addresses,
            crate::app::RetryPolicy {
                max_attempts: self.max_attempts,
                backoff_base: std::time::Duration::from_millis(self.backoff_base_ms),
                backoff_max: std::time::Duration::from_millis(self.backoff_max_ms),
            },
        )
    }
}

impl Default for EngagementSection {
    fn default() -> Self {
        Self {
            frequency_cap: 3,
            frequency_window_days: 7,
            run_every_secs: 60,
            attribution_days: 14,
            sender: "log".into(),
            webhook: MessageWebhookSection::default(),
        }
    }
}

impl EngagementSection {
    pub(crate) fn rules(&self) -> crate::app::EngagementRules {
        crate::app::EngagementRules {
            frequency_cap: self.frequency_cap,
            frequency_window: chrono::Duration::days(i64::from(self.frequency_window_days)),
            attribution_window: chrono::Duration::days(i64::from(self.attribution_days)),
        }
    }
}

/// Where paid orders and refunds come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersFeedSection {
    /// The orders service, whose event log membership subscribes to
    /// (`http://orders:50054`); unset = no subscription (purchases only by RPC).
    pub events_url: Option<String>,
    /// Subscriptions that apply the log side by side, each taking the events of
    /// its share of the members.
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
        self.telemetry.validate("telemetry")?;
        self.auth.validate("auth")?;
        if let Some(url) = &self.cache.redis_url {
            retail_kit::config::validate_url("cache.redis_url", url, retail_kit::config::REDIS)?;
        }
        if self.cache.ttl_secs == 0 {
            return Err(ConfigError::invalid("cache.ttl_secs", "must be positive"));
        }
        if self.cache.timeout_ms == 0 {
            return Err(ConfigError::invalid("cache.timeout_ms", "must be positive"));
        }
        self.loyalty.rules()?;
        if let Some(url) = &self.orders.events_url {
            retail_kit::config::validate_url("orders.events_url", url, retail_kit::config::HTTP)?;
        }
        if let Some(url) = &self.catalog.url {
            retail_kit::config::validate_url("catalog.url", url, retail_kit::config::HTTP)?;
        }
        if let Some(url) = &self.analytics.events_url {
            retail_kit::config::validate_url("analytics.events_url", url, retail_kit::config::HTTP)?;
        }
        if self.engagement.frequency_cap == 0
            || self.engagement.frequency_window_days == 0
            || self.engagement.attribution_days == 0
        {
            return Err(ConfigError::invalid(
                "engagement.frequency_cap",
                "the cap, its window and the attribution window must be positive",
            ));
        }
        match self.engagement.sender.as_str() {
            "log" => {}
            "webhook" => self.engagement.webhook.validate()?,
            _ => return Err(ConfigError::invalid("engagement.sender", "must be log or webhook")),
        }
        if !(1..=64).contains(&self.orders.partitions) {
            return Err(ConfigError::invalid("orders.partitions", "must be between 1 and 64"));
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
    /// Profiles kept in this process: the whole cache without Redis; with Redis, a near
    /// cache in front of it that every replica keeps current through Redis pub/sub
    /// (0 turns it off).
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoyaltySection {
    /// Currency of spend and points.
    pub currency: String,
    /// Points per major unit, in 1/10000 (10000 = 1 point per 1.00).
    pub base_rate: u32,
    /// Lots expire at the end of the month this many months after earning.
    pub lot_months: u32,
    /// Qualifying-spend window in months; 0 = lifetime.
    pub spend_window_months: u32,
    pub lifecycle_window_months: u32,
    /// Levels a periodic re-evaluation may move a member down at once.
    pub max_steps_down: usize,
    /// `absolute` (thresholds) or `percentile` (top 5% / 15% / 30% by spend).
    pub tier_mode: String,
    /// The ladder, lowest first; the first tier starts at 0.
    pub tiers: Vec<TierDef>,
    /// How often tiers are re-evaluated (downgrades happen only then).
    pub reevaluate_every_hours: u64,
    /// How often expired lots are written off.
    pub expire_every_minutes: u64,
}

impl Default for LoyaltySection {
    fn default() -> Self {
        Self {
            currency: "EUR".into(),
            base_rate: 10_000,
            lot_months: 12,
            spend_window_months: 12,
            lifecycle_window_months: 3,
            max_steps_down: 1,
            tier_mode: "absolute".into(),
            tiers: Ladder::standard().tiers().to_vec(),
            reevaluate_every_hours: 24,
            expire_every_minutes: 60,
        }
    }
}

impl LoyaltySection {
    /// The rules these settings describe; the message names the bad key.
    pub(crate) fn rules(&self) -> Result<LoyaltyRules, ConfigError> {
        let minor_exponent = crate::domain::money::minor_exponent(&self.currency)
            .ok_or_else(|| ConfigError::invalid("loyalty.currency", "must be an ISO-4217 code"))?;
        let ladder =
            Ladder::new(self.tiers.clone()).map_err(|e| ConfigError::invalid("loyalty.tiers", e.to_string()))?;
        let percentile = match self.tier_mode.as_str() {
            "absolute" => None,
            "percentile" => Some(PercentileShares::standard()),
            _ => {
                return Err(ConfigError::invalid(
                    "loyalty.tier_mode",
                    "must be absolute or percentile",
                ));
            }
        };
        if self.lifecycle_window_months == 0 || self.lot_months == 0 {
            return Err(ConfigError::invalid(
                "loyalty.lifecycle_window_months",
                "windows must be positive",
            ));
        }
        Ok(LoyaltyRules {
            currency: self.currency.clone(),
            minor_exponent,
            base_rate: Factor(self.base_rate),
            lot_months: self.lot_months,
            ladder,
            spend_window: if self.spend_window_months == 0 {
                SpendWindow::Lifetime
            } else {
                SpendWindow::Rolling(self.spend_window_months)
            },
            lifecycle_months: self.lifecycle_window_months,
            max_steps_down: self.max_steps_down,
            percentile,
        })
    }
}

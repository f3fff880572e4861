//! Analytics' configuration: the shared sections, the event logs it follows, and
//! the KPI rules.

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
    /// Analytics' own log (overdue members, member scores).
    pub events: EventsSettings,
    pub sources: SourcesSection,
    pub analytics: AnalyticsSection,
    /// The KPI dashboard (HTTP).
    pub http: HttpSection,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate("server")?;
        self.database.validate("database")?;
        for (key, url) in [
            ("sources.orders_url", &self.sources.orders_url),
            ("sources.membership_url", &self.sources.membership_url),
            ("sources.catalog_url", &self.sources.catalog_url),
            ("sources.partner_url", &self.sources.partner_url),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::invalid(key, "must be an http:// or https:// URL"));
            }
        }
        if self.http.refresh_secs == 0 {
            return Err(ConfigError::invalid("http.refresh_secs", "must be positive"));
        }
        let a = &self.analytics;
        if a.overdue_factor < 1.0 || !a.overdue_factor.is_finite() {
            return Err(ConfigError::invalid("analytics.overdue_factor", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&a.gross_margin) {
            return Err(ConfigError::invalid(
                "analytics.gross_margin",
                "must be between 0 and 1",
            ));
        }
        if a.lifetime_years <= 0.0 || !a.lifetime_years.is_finite() {
            return Err(ConfigError::invalid("analytics.lifetime_years", "must be positive"));
        }
        if !(1..=3650).contains(&a.rfm_window_days) {
            return Err(ConfigError::invalid("analytics.rfm_window_days", "must be 1 to 3650"));
        }
        if !(1..=365).contains(&a.predicted_tag_days) {
            return Err(ConfigError::invalid("analytics.predicted_tag_days", "must be 1 to 365"));
        }
        if a.retention_days == 0 || a.lateness_secs == 0 {
            return Err(ConfigError::invalid(
                "analytics.retention_days",
                "retention and lateness must be positive",
            ));
        }
        if a.lateness_secs > a.retention_days * 86_400 {
            return Err(ConfigError::invalid(
                "analytics.lateness_secs",
                "must not exceed the touchpoints' retention",
            ));
        }
        Ok(())
    }
}

/// The event logs analytics follows; a source without a URL is not followed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesSection {
    pub orders_url: Option<String>,
    pub membership_url: Option<String>,
    pub catalog_url: Option<String>,
    /// Channel-partner's log: targets, leads, opportunities, points, deal locks.
    pub partner_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSection {
    /// Touchpoints older than this (against the time they arrive) are rejected.
    pub lateness_secs: u64,
    /// Touchpoints this far ahead of the server's clock are accepted; further ones
    /// are rejected.
    pub future_skew_secs: u64,
    /// Raw touchpoints are kept this long (their rollups for good).
    pub retention_days: u64,
    /// A member is overdue when the days since the last purchase exceed their
    /// cycle times this factor.
    pub overdue_factor: f64,
    /// How often overdue members are looked for and published, and members
    /// rescored (`MemberScored`).
    pub overdue_every_secs: u64,
    /// Gross margin used by CLV.
    pub gross_margin: f64,
    /// Expected customer lifetime used by CLV, in years.
    pub lifetime_years: f64,
    /// The RFM window (F and M) of the published member scores, in days.
    pub rfm_window_days: i64,
    /// How long a published predicted tag stays true (its durability), in days;
    /// a tag that still holds is published again when half of it has passed.
    pub predicted_tag_days: i64,
}

impl Default for AnalyticsSection {
    fn default() -> Self {
        Self {
            lateness_secs: 3 * 86_400,
            future_skew_secs: 300,
            retention_days: 400,
            overdue_factor: 1.5,
            overdue_every_secs: 3_600,
            gross_margin: 0.4,
            lifetime_years: 3.0,
            rfm_window_days: 365,
            predicted_tag_days: 7,
        }
    }
}

/// The KPI dashboard: server-rendered pages for staff on a port of their own, on
/// `server.host`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Port of the dashboard; 0 picks a free one; unset = no dashboard.
    pub port: Option<u16>,
    /// Marks the session cookies `Secure`: set it when the dashboard is reached
    /// over TLS (a terminating proxy or ingress in front of it).
    pub secure_cookies: bool,
    /// How often an open page reloads its figures, in seconds.
    pub refresh_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            port: None,
            secure_cookies: false,
            refresh_secs: 60,
        }
    }
}

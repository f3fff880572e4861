//! Configuration of `retail-suite up`: one section per service, with embedded
//! defaults (SQLite files under the data directory, fixed local ports). A file or
//! `RETAIL_SUITE__<SERVICE>__...` variables switch any service to PostgreSQL.

use std::path::PathBuf;

use retail_kit::config::{ConfigError, TelemetrySettings, Validate};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Fixed local ports of the embedded suite.
pub const IDENTITY_PORT: u16 = 50051;
pub const MEMBERSHIP_PORT: u16 = 50052;
pub const CATALOG_PORT: u16 = 50053;
pub const ORDERS_PORT: u16 = 50054;
pub const PARTNER_PORT: u16 = 50055;
pub const ANALYTICS_PORT: u16 = 50056;
/// The analytics dashboard's HTTP port.
pub const DASHBOARD_PORT: u16 = 8081;
/// The partner gateway's HTTP port.
pub const GATEWAY_PORT: u16 = 8080;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuiteSettings {
    /// Where the SQLite files and the first admin's password live.
    pub data_dir: PathBuf,
    /// Logs of the whole process, and where traces and metrics go unless a
    /// service's own `telemetry.otlp_endpoint` says otherwise. Each service exports
    /// under its own `service.name`; its `log_filter` and `log_format` cannot apply
    /// to the one log of the process, which says so at start.
    pub telemetry: TelemetrySettings,
    pub identity: retail_identity::Settings,
    pub membership: retail_membership::Settings,
    pub catalog: retail_catalog::Settings,
    pub orders: retail_orders::Settings,
    pub partner: retail_channel_partner::Settings,
    pub analytics: retail_analytics::Settings,
    /// The partner gateway (HTTP); its upstream addresses follow the services'.
    pub gateway: retail_gateway::Settings,
}

const DEFAULT_DATA_DIR: &str = "data";

fn sqlite_url(data_dir: &std::path::Path, service: &str) -> String {
    format!("sqlite://{}/{service}.db?mode=rwc", data_dir.display())
}

impl Default for SuiteSettings {
    fn default() -> Self {
        let data_dir = PathBuf::from(DEFAULT_DATA_DIR);
        let mut identity = retail_identity::Settings::default();
        identity.server.port = IDENTITY_PORT;
        identity.database.url = SecretString::from(sqlite_url(&data_dir, "identity"));
        let mut membership = retail_membership::Settings::default();
        membership.server.port = MEMBERSHIP_PORT;
        membership.database.url = SecretString::from(sqlite_url(&data_dir, "membership"));
        let mut catalog = retail_catalog::Settings::default();
        catalog.server.port = CATALOG_PORT;
        catalog.database.url = SecretString::from(sqlite_url(&data_dir, "catalog"));
        let mut orders = retail_orders::Settings::default();
        orders.server.port = ORDERS_PORT;
        orders.database.url = SecretString::from(sqlite_url(&data_dir, "orders"));
        let mut partner = retail_channel_partner::Settings::default();
        partner.server.port = PARTNER_PORT;
        partner.database.url = SecretString::from(sqlite_url(&data_dir, "partner"));
        let mut analytics = retail_analytics::Settings::default();
        analytics.server.port = ANALYTICS_PORT;
        analytics.http.port = Some(DASHBOARD_PORT);
        analytics.database.url = SecretString::from(sqlite_url(&data_dir, "analytics"));
        let mut gateway = retail_gateway::Settings::default();
        gateway.server.port = GATEWAY_PORT;
        gateway.database.url = SecretString::from(sqlite_url(&data_dir, "gateway"));
        // Local use: webhook receivers may listen on this machine.
        gateway.webhooks.allow_private_addresses = true;
        Self {
            data_dir,
            telemetry: TelemetrySettings::default(),
            identity,
            membership,
            catalog,
            orders,
            partner,
            analytics,
            gateway,
        }
    }
}

impl Validate for SuiteSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.telemetry.validate("telemetry")?;
        self.identity
            .validate()
            .map_err(|e| ConfigError::invalid("identity", e.to_string()))?;
        self.membership
            .validate()
            .map_err(|e| ConfigError::invalid("membership", e.to_string()))?;
        self.catalog
            .validate()
            .map_err(|e| ConfigError::invalid("catalog", e.to_string()))?;
        self.orders
            .validate()
            .map_err(|e| ConfigError::invalid("orders", e.to_string()))?;
        self.partner
            .validate()
            .map_err(|e| ConfigError::invalid("partner", e.to_string()))?;
        self.analytics
            .validate()
            .map_err(|e| ConfigError::invalid("analytics", e.to_string()))?;
        self.gateway
            .validate()
            .map_err(|e| ConfigError::invalid("gateway", e.to_string()))
    }
}

impl SuiteSettings {
    /// Every listener of the suite - each service's port, the gateway's and the
    /// dashboard's when it is on - on a port of the system's choice, so that several
    /// suites run side by side (tests).
    pub fn use_free_ports(&mut self) {
        for server in [
            &mut self.identity.server,
            &mut self.membership.server,
            &mut self.catalog.server,
            &mut self.orders.server,
            &mut self.partner.server,
            &mut self.analytics.server,
            &mut self.gateway.server,
        ] {
            server.port = 0;
        }
        if self.analytics.http.port.is_some() {
            self.analytics.http.port = Some(0);
        }
    }

    /// Moves the default SQLite files under `data_dir` when it is not the default.
    pub fn relocate_data(&mut self) {
        for (service, url) in [
            ("identity", &mut self.identity.database.url),
            ("membership", &mut self.membership.database.url),
            ("catalog", &mut self.catalog.database.url),
            ("orders", &mut self.orders.database.url),
            ("partner", &mut self.partner.database.url),
            ("analytics", &mut self.analytics.database.url),
            ("gateway", &mut self.gateway.database.url),
        ] {
            let default = sqlite_url(std::path::Path::new(DEFAULT_DATA_DIR), service);
            if url.expose_secret() == default {
                *url = SecretString::from(sqlite_url(&self.data_dir, service));
            }
        }
    }
}

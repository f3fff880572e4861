//! Identity's configuration: the shared sections plus tokens, password hashing,
//! brute-force protection and the first-start bootstrap.

use std::time::Duration;

use retail_kit::config::{
    ConfigError, DatabaseSettings, ServerSettings, TelemetrySettings, Validate, serialize_secret,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub tokens: TokenSettings,
    pub passwords: PasswordSettings,
    pub lockout: LockoutSettings,
    pub bootstrap: BootstrapSettings,
    pub partners: PartnersSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate("server")?;
        self.database.validate("database")?;
        self.telemetry.validate("telemetry")?;
        if self.tokens.issuer.trim().is_empty() {
            return Err(ConfigError::invalid("tokens.issuer", "must not be empty"));
        }
        if self.tokens.access_ttl_secs < 30 || self.tokens.access_ttl_secs > 24 * 3600 {
            return Err(ConfigError::invalid(
                "tokens.access_ttl_secs",
                "must be between 30 and 86400",
            ));
        }
        if self.tokens.refresh_ttl_secs <= self.tokens.access_ttl_secs {
            return Err(ConfigError::invalid(
                "tokens.refresh_ttl_secs",
                "must exceed tokens.access_ttl_secs",
            ));
        }
        if self.passwords.memory_kib < 8 * self.passwords.parallelism.max(1) {
            return Err(ConfigError::invalid(
                "passwords.memory_kib",
                "must be at least 8 x parallelism",
            ));
        }
        if self.passwords.iterations == 0 || self.passwords.parallelism == 0 {
            return Err(ConfigError::invalid(
                "passwords.iterations",
                "iterations and parallelism must be positive",
            ));
        }
        if self.lockout.lock_after <= self.lockout.slow_after {
            return Err(ConfigError::invalid(
                "lockout.lock_after",
                "must exceed lockout.slow_after",
            ));
        }
        if let Some(url) = &self.partners.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "partners.url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.partners.timeout_ms == 0 {
            return Err(ConfigError::invalid("partners.timeout_ms", "must be positive"));
        }
        for (i, account) in self.bootstrap.service_accounts.iter().enumerate() {
            if account.client_id.is_empty() {
                return Err(ConfigError::invalid(
                    format!("bootstrap.service_accounts[{i}].client_id"),
                    "must not be empty",
                ));
            }
            if account.scopes.len() > retail_kit::limits::MAX_SCOPES {
                return Err(ConfigError::invalid(
                    format!("bootstrap.service_accounts[{i}].scopes"),
                    format!("must have at most {} entries", retail_kit::limits::MAX_SCOPES),
                ));
            }
            // Stored as a fast hash, so it must be a long random value, not a password.
            if secrecy::ExposeSecret::expose_secret(&account.client_secret).len() < 32 {
                return Err(ConfigError::invalid(
                    format!("bootstrap.service_accounts[{i}].client_secret"),
                    "must be at least 32 random characters",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// `iss` of every token; verifiers must be configured with the same value.
    pub issuer: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    /// A signing key older than this is replaced automatically.
    pub key_rotation_secs: u64,
    /// How often a replica reloads the signing key, so replicas follow a rotation.
    pub key_reload_secs: u64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "retail-identity".into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            key_rotation_secs: 30 * 24 * 3600,
            key_reload_secs: 60,
        }
    }
}

impl TokenSettings {
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_ttl_secs)
    }

    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_ttl_secs)
    }
}

/// Argon2id cost; the defaults follow OWASP's minimum recommendation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Brute-force protection per username and per API-key prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutSettings {
    /// Failures after which each further attempt must wait.
    pub slow_after: u32,
    /// First wait; doubles with every further failure.
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Failures after which the subject is locked.
    pub lock_after: u32,
    pub lock_secs: u64,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        Self {
            slow_after: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 30_000,
            lock_after: 10,
            lock_secs: 15 * 60,
        }
    }
}

/// What exists after the first start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapSettings {
    pub admin_username: String,
    /// Created as admin when no user of that name exists. Empty = do not create.
    #[serde(serialize_with = "serialize_secret")]
    pub admin_password: SecretString,
    /// Service accounts kept in line with this list at every start (secret, scopes).
    /// A TOML array of tables, or one JSON list in a string, the form an environment
    /// variable carries: `RETAIL_IDENTITY__BOOTSTRAP__SERVICE_ACCOUNTS='[{"client_id":
    /// "orders","client_secret":"...","scopes":["catalog.read"]}]'`.
    #[serde(deserialize_with = "retail_kit::config::list_or_json")]
    pub service_accounts: Vec<BootstrapServiceAccount>,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            admin_username: "admin".into(),
            admin_password: SecretString::from(String::new()),
            service_accounts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapServiceAccount {
    pub client_id: String,
    #[serde(serialize_with = "serialize_secret")]
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
}

/// The partner programme (channel-partner), which `partner_id` on users and API
/// keys refers to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartnersSettings {
    /// channel-partner (`http://partner:50055`). When set, a partner user or API
    /// key is created only for a partner that exists there and is not terminated,
    /// and tokens are issued to partner principals only while their partner is
    /// active. Unset: `partner_id` is not checked.
    pub url: Option<String>,
    /// Deadline of each question to channel-partner.
    pub timeout_ms: u64,
}

impl Default for PartnersSettings {
    fn default() -> Self {
        Self {
            url: None,
            timeout_ms: 2_000,
        }
    }
}

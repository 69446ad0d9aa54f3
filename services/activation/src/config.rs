//! The activation service's settings, from the environment (defaults documented in README).

use scanloop_config::{ConfigError, Infra, Secret, secret, var};

#[derive(Debug, Clone)]
pub struct Config {
    pub infra: Infra,
    /// SCANLOOP_GRPC_ADDR, default 0.0.0.0:50051.
    pub grpc_addr: String,
    /// SCANLOOP_ACTIVATION_KEYSPACE, default scanloop_activation.
    pub keyspace: String,
    /// SCANLOOP_CODE_SECRET: signs printed codes. Required unless SCANLOOP_ENV=dev.
    pub code_secret: Secret<String>,
    /// SCANLOOP_IDENTITY_SECRET: keys phone-number hashes (shared by all services). Required
    /// unless SCANLOOP_ENV=dev.
    pub identity_secret: Secret<String>,
    /// SCANLOOP_CODE_BASE_URL, default https://w.scanloop.cn.
    pub code_base_url: String,
    /// SCANLOOP_RETURN_WINDOW_DAYS, default 30.
    pub return_window_days: i64,
    /// SCANLOOP_SUSPICIOUS_SCAN_MINUTES, default 360.
    pub suspicious_scan_minutes: i64,
    /// SCANLOOP_PROJECTION_GROUP, default activation-projections.
    pub projection_group: String,
    /// SCANLOOP_ACTIVATION_TOPIC, default scanloop.activation.events.v1.
    pub topic: String,
}

impl Config {
    /// Refuses a missing or development secret unless SCANLOOP_ENV=dev (the message says what
    /// to set).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            infra: Infra::from_env()?,
            grpc_addr: var("SCANLOOP_GRPC_ADDR", "0.0.0.0:50051".to_owned())?,
            keyspace: var(
                "SCANLOOP_ACTIVATION_KEYSPACE",
                "scanloop_activation".to_owned(),
            )?,
            code_secret: secret("SCANLOOP_CODE_SECRET")?,
            identity_secret: secret("SCANLOOP_IDENTITY_SECRET")?,
            code_base_url: var("SCANLOOP_CODE_BASE_URL", "https://w.scanloop.cn".to_owned())?,
            return_window_days: var("SCANLOOP_RETURN_WINDOW_DAYS", 30)?,
            suspicious_scan_minutes: var("SCANLOOP_SUSPICIOUS_SCAN_MINUTES", 360)?,
            projection_group: var(
                "SCANLOOP_PROJECTION_GROUP",
                "activation-projections".to_owned(),
            )?,
            topic: var(
                "SCANLOOP_ACTIVATION_TOPIC",
                scanloop_bus::topics::event_topic("activation"),
            )?,
        })
    }
}

//! The referral service's settings, from the environment (defaults documented in README).

use scanloop_config::{ConfigError, var};
use scanloop_service::{ServiceConfig, ServiceNames};
use scanloop_timers::SharedClock;

use crate::domain::rules::{BrandRules, Rules};

#[derive(Debug, Clone)]
pub struct Config {
    /// What every service has: listen address, keyspace, topic, groups, identity key, access.
    pub service: ServiceConfig,
    /// SCANLOOP_ACTIVATION_TOPIC and SCANLOOP_MEMBERSHIP_TOPIC: what referral reacts to.
    pub activation_topic: String,
    pub membership_topic: String,
    /// SCANLOOP_SHARE_BASE_URL, default https://s.scanloop.cn: share URLs are
    /// `<base>/<brand>/r/<token>`.
    pub share_base_url: String,
    pub rules: Rules,
    /// The time commands decide with: the system clock (tests move theirs).
    pub clock: SharedClock,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = BrandRules::default();
        let defaults = BrandRules {
            attribution_window: chrono::Duration::days(var(
                "SCANLOOP_ATTRIBUTION_WINDOW_DAYS",
                d.attribution_window.num_days(),
            )?),
            binding_mode: var("SCANLOOP_BINDING_MODE", d.binding_mode)?,
            bind_within: chrono::Duration::minutes(var(
                "SCANLOOP_BIND_WITHIN_MINUTES",
                d.bind_within.num_minutes(),
            )?),
            max_per_hour: var("SCANLOOP_REFERRALS_MAX_PER_HOUR", d.max_per_hour)?,
            max_per_day: var("SCANLOOP_REFERRALS_MAX_PER_DAY", d.max_per_day)?,
            store_burst_max: var("SCANLOOP_STORE_BURST_MAX", d.store_burst_max)?,
            store_burst_window: chrono::Duration::minutes(var(
                "SCANLOOP_STORE_BURST_MINUTES",
                d.store_burst_window.num_minutes(),
            )?),
            store_precedence: var("SCANLOOP_STORE_PRECEDENCE", d.store_precedence)?,
        };
        Ok(Self {
            service: ServiceConfig::from_env(ServiceNames {
                service: "referral",
                port: 50053,
                keyspace_var: "SCANLOOP_REFERRAL_KEYSPACE",
                topic_var: "SCANLOOP_REFERRAL_TOPIC",
            })?,
            activation_topic: var(
                "SCANLOOP_ACTIVATION_TOPIC",
                scanloop_bus::topics::event_topic("activation"),
            )?,
            membership_topic: var(
                "SCANLOOP_MEMBERSHIP_TOPIC",
                scanloop_bus::topics::event_topic("membership"),
            )?,
            share_base_url: var(
                "SCANLOOP_SHARE_BASE_URL",
                "https://s.scanloop.cn".to_owned(),
            )?,
            rules: Rules {
                defaults,
                window_days: var(
                    "SCANLOOP_ATTRIBUTION_WINDOW_DAYS_BY_BRAND",
                    Default::default(),
                )?,
                binding_mode: var("SCANLOOP_BINDING_MODE_BY_BRAND", Default::default())?,
                bind_within_minutes: var(
                    "SCANLOOP_BIND_WITHIN_MINUTES_BY_BRAND",
                    Default::default(),
                )?,
                max_per_hour: var(
                    "SCANLOOP_REFERRALS_MAX_PER_HOUR_BY_BRAND",
                    Default::default(),
                )?,
                max_per_day: var(
                    "SCANLOOP_REFERRALS_MAX_PER_DAY_BY_BRAND",
                    Default::default(),
                )?,
                store_precedence: var("SCANLOOP_STORE_PRECEDENCE_BY_BRAND", Default::default())?,
            },
            clock: scanloop_timers::clock::system(),
        })
    }
}

impl scanloop_service::HasServiceConfig for Config {
    fn service(&self) -> &ServiceConfig {
        &self.service
    }
}

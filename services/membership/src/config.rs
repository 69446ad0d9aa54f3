//! The membership service's settings, from the environment (defaults documented in README).

use std::time::Duration;

use scanloop_config::{ConfigError, var};
use scanloop_service::{ServiceConfig, ServiceNames};
use scanloop_timers::SharedClock;

use crate::domain::member::Rules;

#[derive(Debug, Clone)]
pub struct Config {
    /// What every service has: listen address, keyspace, topic, groups, identity key, access.
    pub service: ServiceConfig,
    /// SCANLOOP_ACTIVATION_TOPIC: where warranty activations come from.
    pub activation_topic: String,
    /// SCANLOOP_REFERRAL_TOPIC, default scanloop.referral.events.v1: where link shares come
    /// from.
    pub referral_topic: String,
    /// SCANLOOP_TIMER_GROUP, default membership-timers: reads this service's own events and
    /// schedules each member's re-evaluations (lot expiry, engagements leaving the window).
    pub timer_group: String,
    /// SCANLOOP_TIMER_INTERVAL_MS, default 5000: how often the timer job looks for due
    /// re-evaluations, so the most a lapse or an expiry is late when all is well.
    pub timer_interval: Duration,
    pub rules: Rules,
    /// The time commands and the timer job decide with: the system clock (tests move theirs).
    pub clock: SharedClock,
}

impl Config {
    /// Refuses a missing or development secret unless SCANLOOP_ENV=dev (the message says what
    /// to set).
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Rules::default();
        Ok(Self {
            service: ServiceConfig::from_env(ServiceNames {
                service: "membership",
                port: 50052,
                keyspace_var: "SCANLOOP_MEMBERSHIP_KEYSPACE",
                topic_var: "SCANLOOP_MEMBERSHIP_TOPIC",
            })?,
            activation_topic: var(
                "SCANLOOP_ACTIVATION_TOPIC",
                scanloop_bus::topics::event_topic("activation"),
            )?,
            referral_topic: var(
                "SCANLOOP_REFERRAL_TOPIC",
                scanloop_bus::topics::event_topic("referral"),
            )?,
            timer_group: var("SCANLOOP_TIMER_GROUP", "membership-timers".to_owned())?,
            timer_interval: Duration::from_millis(var("SCANLOOP_TIMER_INTERVAL_MS", 5_000)?),
            rules: Rules {
                koc_window: chrono::Duration::days(var("SCANLOOP_KOC_WINDOW_DAYS", 30)?),
                koc_min_scans: var("SCANLOOP_KOC_MIN_SCANS", defaults.koc_min_scans)?,
                koc_min_shares: var("SCANLOOP_KOC_MIN_SHARES", defaults.koc_min_shares)?,
                koc_min_comments: var("SCANLOOP_KOC_MIN_COMMENTS", defaults.koc_min_comments)?,
                gold_min_score: var("SCANLOOP_GOLD_MIN_SCORE", defaults.gold_min_score)?,
                points_ttl: chrono::Duration::days(var("SCANLOOP_POINTS_TTL_DAYS", 365)?),
                activation_points: var("SCANLOOP_ACTIVATION_POINTS", defaults.activation_points)?,
                ..defaults
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

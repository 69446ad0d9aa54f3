//! The membership service's settings, from the environment. [`VARS`] documents each variable this
//! module reads (`scanloop config` prints them; docs/operating.md lists them; a test keeps
//! them in step with the code).

use std::time::Duration;

use scanloop_config::{ConfigError, VarDoc, var};
use scanloop_service::{ServiceConfig, ServiceNames};
use scanloop_timers::SharedClock;

use crate::domain::member::Rules;

/// Every variable [`Config::from_env`] reads here, with its default. The settings every service
/// shares are in [`scanloop_service::config::VARS`].
pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_MEMBERSHIP_KEYSPACE",
        default: "scanloop_membership",
        meaning: "membership's keyspace",
    },
    VarDoc {
        name: "SCANLOOP_MEMBERSHIP_TOPIC",
        default: "scanloop.membership.events.v1",
        meaning: "membership's event topic",
    },
    VarDoc {
        name: "SCANLOOP_ACTIVATION_TOPIC",
        default: "scanloop.activation.events.v1",
        meaning: "where warranty activations come from",
    },
    VarDoc {
        name: "SCANLOOP_REFERRAL_TOPIC",
        default: "scanloop.referral.events.v1",
        meaning: "where link shares (LinkShared) come from",
    },
    VarDoc {
        name: "SCANLOOP_TIMER_GROUP",
        default: "membership-timers",
        meaning: "consumer group that schedules member reviews (point expiry, KOC window)",
    },
    VarDoc {
        name: "SCANLOOP_TIMER_INTERVAL_MS",
        default: "5000",
        meaning: "how often the review job looks for due timers",
    },
    VarDoc {
        name: "SCANLOOP_KOC_WINDOW_DAYS",
        default: "30",
        meaning: "the KOC rule's rolling window",
    },
    VarDoc {
        name: "SCANLOOP_KOC_MIN_SCANS",
        default: "3",
        meaning: "KOC rule: scans in the window",
    },
    VarDoc {
        name: "SCANLOOP_KOC_MIN_SHARES",
        default: "2",
        meaning: "KOC rule: shares in the window",
    },
    VarDoc {
        name: "SCANLOOP_KOC_MIN_COMMENTS",
        default: "5",
        meaning: "KOC rule: comments in the window",
    },
    VarDoc {
        name: "SCANLOOP_GOLD_MIN_SCORE",
        default: "60",
        meaning: "window score for 金牌推荐官 (gold_recommender)",
    },
    VarDoc {
        name: "SCANLOOP_POINTS_TTL_DAYS",
        default: "365",
        meaning: "points lots expire this long after they were earned",
    },
    VarDoc {
        name: "SCANLOOP_ACTIVATION_POINTS",
        default: "100",
        meaning: "points for a warranty activation",
    },
];

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

#[cfg(test)]
mod vars_tests {
    scanloop_config::vars_documented_test!(super::VARS, include_str!("config.rs"));

    /// The documented defaults are the domain's.
    #[test]
    fn vars_give_the_domain_defaults() {
        let rules = crate::domain::member::Rules::default();
        let gaps = scanloop_config::default_gaps(
            super::VARS,
            &[
                (
                    "SCANLOOP_KOC_WINDOW_DAYS",
                    rules.koc_window.num_days().to_string(),
                ),
                ("SCANLOOP_KOC_MIN_SCANS", rules.koc_min_scans.to_string()),
                ("SCANLOOP_KOC_MIN_SHARES", rules.koc_min_shares.to_string()),
                (
                    "SCANLOOP_KOC_MIN_COMMENTS",
                    rules.koc_min_comments.to_string(),
                ),
                ("SCANLOOP_GOLD_MIN_SCORE", rules.gold_min_score.to_string()),
                (
                    "SCANLOOP_POINTS_TTL_DAYS",
                    rules.points_ttl.num_days().to_string(),
                ),
                (
                    "SCANLOOP_ACTIVATION_POINTS",
                    rules.activation_points.to_string(),
                ),
            ],
        );
        assert!(gaps.is_empty(), "{}", gaps.join("\n"));
    }
}

//! The referral service's settings, from the environment. [`VARS`] documents each variable this
//! module reads (`scanloop config` prints them; docs/operating.md lists them; a test keeps
//! them in step with the code).

use scanloop_config::{ConfigError, VarDoc, var};
use scanloop_service::{ServiceConfig, ServiceNames};
use scanloop_timers::SharedClock;

use crate::domain::rules::{BrandRules, Rules};

/// Every variable [`Config::from_env`] reads here, with its default. The settings every service
/// shares are in [`scanloop_service::config::VARS`].
pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_REFERRAL_KEYSPACE",
        default: "scanloop_referral",
        meaning: "referral's keyspace",
    },
    VarDoc {
        name: "SCANLOOP_REFERRAL_TOPIC",
        default: "scanloop.referral.events.v1",
        meaning: "referral's event topic",
    },
    VarDoc {
        name: "SCANLOOP_ACTIVATION_TOPIC",
        default: "scanloop.activation.events.v1",
        meaning: "where activations, returns and suspicious scans come from",
    },
    VarDoc {
        name: "SCANLOOP_MEMBERSHIP_TOPIC",
        default: "scanloop.membership.events.v1",
        meaning: "where members (identities, devices, registration) come from",
    },
    VarDoc {
        name: "SCANLOOP_SHARE_BASE_URL",
        default: "https://s.scanloop.cn",
        meaning: "share URLs are `<base>/<brand>/r/<token>`",
    },
    VarDoc {
        name: "SCANLOOP_ATTRIBUTION_WINDOW_DAYS",
        default: "30",
        meaning: "an activation counts this long after the buyer's last click (or the link's creation)",
    },
    VarDoc {
        name: "SCANLOOP_BINDING_MODE",
        default: "first_attribution",
        meaning: "when a buyer's parent binds: `first_attribution` or `at_registration`",
    },
    VarDoc {
        name: "SCANLOOP_BIND_WITHIN_MINUTES",
        default: "30",
        meaning: "`at_registration`: how soon after becoming a member a referral binds",
    },
    VarDoc {
        name: "SCANLOOP_REFERRALS_MAX_PER_HOUR",
        default: "20",
        meaning: "more attributions per referrer in an hour are held for review (VELOCITY)",
    },
    VarDoc {
        name: "SCANLOOP_REFERRALS_MAX_PER_DAY",
        default: "100",
        meaning: "more attributions per referrer in a day are held for review (VELOCITY)",
    },
    VarDoc {
        name: "SCANLOOP_STORE_BURST_MAX",
        default: "30",
        meaning: "more buyers from one store within SCANLOOP_STORE_BURST_MINUTES are held (STORE_BURST)",
    },
    VarDoc {
        name: "SCANLOOP_STORE_BURST_MINUTES",
        default: "10",
        meaning: "the store-burst window",
    },
    VarDoc {
        name: "SCANLOOP_STORE_PRECEDENCE",
        default: "member_only",
        meaning: "who earns a store sale through a member's link: `member_only`, `store_only` or `both`",
    },
    VarDoc {
        name: "SCANLOOP_ATTRIBUTION_WINDOW_DAYS_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own attribution windows, `brand=days,brand=days`",
    },
    VarDoc {
        name: "SCANLOOP_BINDING_MODE_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own binding modes, `brand=mode,brand=mode`",
    },
    VarDoc {
        name: "SCANLOOP_BIND_WITHIN_MINUTES_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own bind minutes, `brand=minutes,brand=minutes`",
    },
    VarDoc {
        name: "SCANLOOP_REFERRALS_MAX_PER_HOUR_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own hourly limits, `brand=count,brand=count`",
    },
    VarDoc {
        name: "SCANLOOP_REFERRALS_MAX_PER_DAY_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own daily limits, `brand=count,brand=count`",
    },
    VarDoc {
        name: "SCANLOOP_STORE_PRECEDENCE_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own store precedence, `brand=precedence,brand=precedence`",
    },
];

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

#[cfg(test)]
mod vars_tests {
    scanloop_config::vars_documented_test!(super::VARS, include_str!("config.rs"));

    /// The documented defaults are the domain's.
    #[test]
    fn vars_give_the_domain_defaults() {
        let rules = crate::domain::rules::BrandRules::default();
        let gaps = scanloop_config::default_gaps(
            super::VARS,
            &[
                (
                    "SCANLOOP_ATTRIBUTION_WINDOW_DAYS",
                    rules.attribution_window.num_days().to_string(),
                ),
                (
                    "SCANLOOP_BIND_WITHIN_MINUTES",
                    rules.bind_within.num_minutes().to_string(),
                ),
                (
                    "SCANLOOP_REFERRALS_MAX_PER_HOUR",
                    rules.max_per_hour.to_string(),
                ),
                (
                    "SCANLOOP_REFERRALS_MAX_PER_DAY",
                    rules.max_per_day.to_string(),
                ),
                (
                    "SCANLOOP_STORE_BURST_MAX",
                    rules.store_burst_max.to_string(),
                ),
                (
                    "SCANLOOP_STORE_BURST_MINUTES",
                    rules.store_burst_window.num_minutes().to_string(),
                ),
            ],
        );
        assert!(gaps.is_empty(), "{}", gaps.join("\n"));
        let default = |name| scanloop_config::documented_default(super::VARS, name).unwrap();
        assert_eq!(
            default("SCANLOOP_BINDING_MODE").parse::<crate::domain::rules::BindingMode>(),
            Ok(rules.binding_mode)
        );
        assert_eq!(
            default("SCANLOOP_STORE_PRECEDENCE").parse::<crate::domain::rules::StorePrecedence>(),
            Ok(rules.store_precedence)
        );
    }
}

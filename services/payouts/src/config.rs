//! The payouts service's settings, from the environment. [`VARS`] documents each variable this
//! module reads (`scanloop config` prints them; docs/operating.md lists them; a test keeps
//! them in step with the code).

use std::time::Duration;

use scanloop_config::{ByBrand, ConfigError, VarDoc, var};
use scanloop_service::{ServiceConfig, ServiceNames};
use scanloop_timers::SharedClock;

use crate::domain::plan::{DEFAULT_CEILING_BPS, DEFAULT_PURCHASE_MAX_FEN};

/// Per-brand rules that are the brand's policy, not its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// SCANLOOP_COMMISSION_CEILING_BPS (default 3000, 30%): levels 1 + 2 together stay within
    /// this share of a sale; SCANLOOP_COMMISSION_CEILING_BPS_BY_BRAND overrides it per brand.
    pub ceiling_bps: u32,
    pub ceiling_by_brand: ByBrand<u32>,
    /// SCANLOOP_PURCHASE_MAX_FEN (default 100000000, ¥1,000,000) and
    /// SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND, the same settings activation checks purchases
    /// against: a plan's fixed amounts, cap and minimum payout stay within them.
    pub purchase_max_fen: i64,
    pub purchase_max_fen_by_brand: ByBrand<i64>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            ceiling_bps: DEFAULT_CEILING_BPS,
            ceiling_by_brand: ByBrand::default(),
            purchase_max_fen: DEFAULT_PURCHASE_MAX_FEN,
            purchase_max_fen_by_brand: ByBrand::default(),
        }
    }
}

impl Rules {
    pub fn ceiling_bps(&self, brand_id: &str) -> u32 {
        self.ceiling_by_brand.get_or(brand_id, &self.ceiling_bps)
    }

    pub fn purchase_max_fen(&self, brand_id: &str) -> i64 {
        self.purchase_max_fen_by_brand
            .get_or(brand_id, &self.purchase_max_fen)
    }
}

/// Every variable [`Config::from_env`] reads here, with its default. The settings every service
/// shares are in [`scanloop_service::config::VARS`].
pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_PAYOUTS_KEYSPACE",
        default: "scanloop_payouts",
        meaning: "payouts' keyspace",
    },
    VarDoc {
        name: "SCANLOOP_PAYOUTS_TOPIC",
        default: "scanloop.payouts.events.v1",
        meaning: "payouts' event topic",
    },
    VarDoc {
        name: "SCANLOOP_REFERRAL_TOPIC",
        default: "scanloop.referral.events.v1",
        meaning: "where attributions and rejections come from",
    },
    VarDoc {
        name: "SCANLOOP_ACTIVATION_TOPIC",
        default: "scanloop.activation.events.v1",
        meaning: "where returns and refunds come from",
    },
    VarDoc {
        name: "SCANLOOP_TIMER_GROUP",
        default: "payouts-timers",
        meaning: "consumer group that schedules vesting from accruals",
    },
    VarDoc {
        name: "SCANLOOP_TIMER_INTERVAL_MS",
        default: "1000",
        meaning: "how often the vesting job looks for due items",
    },
    VarDoc {
        name: "SCANLOOP_COMMISSION_CEILING_BPS",
        default: "3000",
        meaning: "levels 1 + 2 together stay within this share of a sale, in basis points (3000 = 30%)",
    },
    VarDoc {
        name: "SCANLOOP_COMMISSION_CEILING_BPS_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own ceilings, `brand=bps,brand=bps`",
    },
    VarDoc {
        name: "SCANLOOP_PURCHASE_MAX_FEN",
        default: "100000000",
        meaning: "the purchase ceiling activation checks (¥1,000,000): a plan whose fixed amounts, cap or minimum payout exceed it is refused (rule `amounts-within-purchase-ceiling`)",
    },
    VarDoc {
        name: "SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own purchase ceilings in fen, `brand=fen,brand=fen`",
    },
];

#[derive(Debug, Clone)]
pub struct Config {
    /// What every service has: listen address, keyspace, topic, groups, identity key, access.
    pub service: ServiceConfig,
    /// SCANLOOP_REFERRAL_TOPIC and SCANLOOP_ACTIVATION_TOPIC: what payouts reacts to.
    pub referral_topic: String,
    pub activation_topic: String,
    /// SCANLOOP_TIMER_GROUP, default payouts-timers: schedules vesting from accruals.
    pub timer_group: String,
    /// SCANLOOP_TIMER_INTERVAL_MS, default 1000: how often the vesting job looks for due items.
    pub timer_interval: Duration,
    pub rules: Rules,
    /// The time commands decide with: the system clock (tests move theirs).
    pub clock: SharedClock,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(ServiceNames {
                service: "payouts",
                port: 50054,
                keyspace_var: "SCANLOOP_PAYOUTS_KEYSPACE",
                topic_var: "SCANLOOP_PAYOUTS_TOPIC",
            })?,
            referral_topic: var(
                "SCANLOOP_REFERRAL_TOPIC",
                scanloop_bus::topics::event_topic("referral"),
            )?,
            activation_topic: var(
                "SCANLOOP_ACTIVATION_TOPIC",
                scanloop_bus::topics::event_topic("activation"),
            )?,
            timer_group: var("SCANLOOP_TIMER_GROUP", "payouts-timers".to_owned())?,
            timer_interval: Duration::from_millis(var("SCANLOOP_TIMER_INTERVAL_MS", 1_000)?),
            rules: Rules {
                ceiling_bps: var("SCANLOOP_COMMISSION_CEILING_BPS", DEFAULT_CEILING_BPS)?,
                ceiling_by_brand: var(
                    "SCANLOOP_COMMISSION_CEILING_BPS_BY_BRAND",
                    Default::default(),
                )?,
                purchase_max_fen: var("SCANLOOP_PURCHASE_MAX_FEN", DEFAULT_PURCHASE_MAX_FEN)?,
                purchase_max_fen_by_brand: var(
                    "SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND",
                    Default::default(),
                )?,
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

    /// The documented defaults are the code's.
    #[test]
    fn vars_give_the_code_defaults() {
        use crate::domain::plan::{DEFAULT_CEILING_BPS, DEFAULT_PURCHASE_MAX_FEN};
        let gaps = scanloop_config::default_gaps(
            super::VARS,
            &[
                (
                    "SCANLOOP_COMMISSION_CEILING_BPS",
                    DEFAULT_CEILING_BPS.to_string(),
                ),
                (
                    "SCANLOOP_PURCHASE_MAX_FEN",
                    DEFAULT_PURCHASE_MAX_FEN.to_string(),
                ),
            ],
        );
        assert!(gaps.is_empty(), "{}", gaps.join("\n"));
    }
}

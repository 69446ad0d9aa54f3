//! The activation service's settings, from the environment. [`VARS`] documents each variable this
//! module reads (`scanloop config` prints them; docs/operating.md lists them; a test keeps
//! them in step with the code).

use scanloop_config::{ConfigError, Secret, VarDoc, secret, var};
use scanloop_service::{ServiceConfig, ServiceNames};

/// Every variable [`Config::from_env`] reads here, with its default. The settings every service
/// shares are in [`scanloop_service::config::VARS`].
pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "SCANLOOP_ACTIVATION_KEYSPACE",
        default: "scanloop_activation",
        meaning: "activation's keyspace",
    },
    VarDoc {
        name: "SCANLOOP_ACTIVATION_TOPIC",
        default: "scanloop.activation.events.v1",
        meaning: "activation's event topic",
    },
    VarDoc {
        name: "SCANLOOP_CODE_SECRET",
        default: "(required; dev: development value, warns)",
        meaning: "signs printed codes (each brand's code keys derive from it and the key id); at least 16 characters; keep it secret and never change it",
    },
    VarDoc {
        name: "SCANLOOP_CODE_BASE_URL",
        default: "https://w.scanloop.cn",
        meaning: "prefix of printed codes: `<base>/<brand>/<key_id>.<token>`",
    },
    VarDoc {
        name: "SCANLOOP_RETURN_WINDOW_DAYS",
        default: "30",
        meaning: "a return (VoidWarranty) voids the warranty only this long after purchase",
    },
    VarDoc {
        name: "SCANLOOP_SUSPICIOUS_SCAN_MINUTES",
        default: "360",
        meaning: "scans of one code from two provinces closer together than this are suspicious",
    },
    VarDoc {
        name: "SCANLOOP_PURCHASE_MAX_AGE_DAYS",
        default: "1826",
        meaning: "how far back (5 years) a purchase may lie when its warranty is activated",
    },
    VarDoc {
        name: "SCANLOOP_PURCHASE_MAX_FEN",
        default: "100000000",
        meaning: "highest purchase amount in fen (¥1,000,000) for brands without their own ceiling",
    },
    VarDoc {
        name: "SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND",
        default: "(empty)",
        meaning: "brands' own ceilings in fen, `brand=fen,brand=fen`",
    },
    VarDoc {
        name: "SCANLOOP_REFERRAL_TOPIC",
        default: "scanloop.referral.events.v1",
        meaning: "the referral topic whose AssistCompleted events extend warranties",
    },
];

#[derive(Debug, Clone)]
pub struct Config {
    /// What every service has: listen address, keyspace, topic, groups, identity key, access.
    pub service: ServiceConfig,
    /// SCANLOOP_CODE_SECRET: signs printed codes. Required unless SCANLOOP_ENV=dev.
    pub code_secret: Secret<String>,
    /// SCANLOOP_CODE_BASE_URL, default https://w.scanloop.cn.
    pub code_base_url: String,
    /// SCANLOOP_RETURN_WINDOW_DAYS, default 30.
    pub return_window_days: i64,
    /// SCANLOOP_SUSPICIOUS_SCAN_MINUTES, default 360.
    pub suspicious_scan_minutes: i64,
    /// SCANLOOP_PURCHASE_MAX_AGE_DAYS, default 1826 (5 years): how far back a purchase may lie
    /// when its warranty is activated.
    pub purchase_max_age_days: i64,
    /// SCANLOOP_PURCHASE_MAX_FEN, default 100000000 (¥1,000,000): the highest purchase amount an
    /// activation may claim, for brands without their own ceiling.
    pub purchase_max_fen: i64,
    /// SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND, default none: brands' own ceilings in fen,
    /// `brand=fen,brand=fen`.
    pub purchase_max_fen_by_brand: BrandCeilings,
    /// SCANLOOP_REFERRAL_TOPIC, default scanloop.referral.events.v1: where assist completions
    /// come from.
    pub referral_topic: String,
}

impl Config {
    /// Refuses a missing or development secret unless SCANLOOP_ENV=dev (the message says what
    /// to set).
    pub fn from_env() -> Result<Self, ConfigError> {
        // Read before the shared settings: a missing code secret is named first.
        let code_secret = secret("SCANLOOP_CODE_SECRET")?;
        Ok(Self {
            service: ServiceConfig::from_env(ServiceNames {
                service: "activation",
                port: 50051,
                keyspace_var: "SCANLOOP_ACTIVATION_KEYSPACE",
                topic_var: "SCANLOOP_ACTIVATION_TOPIC",
            })?,
            code_secret,
            code_base_url: var("SCANLOOP_CODE_BASE_URL", "https://w.scanloop.cn".to_owned())?,
            return_window_days: var("SCANLOOP_RETURN_WINDOW_DAYS", 30)?,
            suspicious_scan_minutes: var("SCANLOOP_SUSPICIOUS_SCAN_MINUTES", 360)?,
            purchase_max_age_days: var("SCANLOOP_PURCHASE_MAX_AGE_DAYS", 1826)?,
            purchase_max_fen: var("SCANLOOP_PURCHASE_MAX_FEN", 100_000_000)?,
            purchase_max_fen_by_brand: var(
                "SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND",
                BrandCeilings::default(),
            )?,
            referral_topic: var(
                "SCANLOOP_REFERRAL_TOPIC",
                scanloop_bus::topics::event_topic("referral"),
            )?,
        })
    }
}

/// Per-brand amounts in fen, written `brand=fen,brand=fen` (e.g. `acme=5000000,globex=20000000`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrandCeilings(pub std::collections::BTreeMap<String, i64>);

impl std::str::FromStr for BrandCeilings {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let mut ceilings = std::collections::BTreeMap::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (brand, fen) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not brand=fen"))?;
            let fen: i64 = fen
                .trim()
                .parse()
                .map_err(|_| format!("{entry:?}: the ceiling is a whole number of fen"))?;
            if fen <= 0 {
                return Err(format!("{entry:?}: the ceiling must be positive"));
            }
            ceilings.insert(brand.trim().to_owned(), fen);
        }
        Ok(Self(ceilings))
    }
}

impl scanloop_service::HasServiceConfig for Config {
    fn service(&self) -> &ServiceConfig {
        &self.service
    }
}

#[cfg(test)]
mod brand_ceilings_tests {
    use super::BrandCeilings;

    #[test]
    fn brand_ceilings_parse_from_pairs_and_bad_ones_say_why() {
        let parsed: BrandCeilings = "acme=5000000, globex = 20000000,".parse().unwrap();
        assert_eq!(
            parsed.0.into_iter().collect::<Vec<_>>(),
            vec![
                ("acme".to_owned(), 5_000_000),
                ("globex".to_owned(), 20_000_000)
            ]
        );
        for bad in ["acme", "acme=1.5", "acme=-1", "acme=0"] {
            assert!(bad.parse::<BrandCeilings>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod vars_tests {
    scanloop_config::vars_documented_test!(super::VARS, include_str!("config.rs"));
}

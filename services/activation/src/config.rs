//! The activation service's settings, from the environment (defaults documented in README).

use scanloop_config::{ConfigError, Infra, Secret, secret, var};

#[derive(Debug, Clone)]
pub struct Config {
    pub infra: Infra,
    /// Token keys, abuse limits and TLS (SCANLOOP_AUTH_JWKS, SCANLOOP_RATE_LIMIT_*,
    /// SCANLOOP_TLS_*): see scanloop_service::access.
    pub server: scanloop_service::ServerSettings,
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
    /// SCANLOOP_PURCHASE_MAX_AGE_DAYS, default 1826 (5 years): how far back a purchase may lie
    /// when its warranty is activated.
    pub purchase_max_age_days: i64,
    /// SCANLOOP_PURCHASE_MAX_FEN, default 100000000 (¥1,000,000): the highest purchase amount an
    /// activation may claim, for brands without their own ceiling.
    pub purchase_max_fen: i64,
    /// SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND, default none: brands' own ceilings in fen,
    /// `brand=fen,brand=fen`.
    pub purchase_max_fen_by_brand: BrandCeilings,
    /// SCANLOOP_PROJECTION_GROUP, default activation-projections.
    pub projection_group: String,
    /// SCANLOOP_ACTIVATION_TOPIC, default scanloop.activation.events.v1.
    pub topic: String,
    /// SCANLOOP_REFERRAL_TOPIC, default scanloop.referral.events.v1: where assist completions
    /// come from.
    pub referral_topic: String,
    /// SCANLOOP_REACTION_GROUP, default activation-reactions: the consumer group of the
    /// reaction to referral events.
    pub reaction_group: String,
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
            purchase_max_age_days: var("SCANLOOP_PURCHASE_MAX_AGE_DAYS", 1826)?,
            purchase_max_fen: var("SCANLOOP_PURCHASE_MAX_FEN", 100_000_000)?,
            purchase_max_fen_by_brand: var(
                "SCANLOOP_PURCHASE_MAX_FEN_BY_BRAND",
                BrandCeilings::default(),
            )?,
            projection_group: var(
                "SCANLOOP_PROJECTION_GROUP",
                "activation-projections".to_owned(),
            )?,
            topic: var(
                "SCANLOOP_ACTIVATION_TOPIC",
                scanloop_bus::topics::event_topic("activation"),
            )?,
            referral_topic: var(
                "SCANLOOP_REFERRAL_TOPIC",
                scanloop_bus::topics::event_topic("referral"),
            )?,
            reaction_group: var("SCANLOOP_REACTION_GROUP", "activation-reactions".to_owned())?,
            server: scanloop_service::ServerSettings::from_env()?,
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

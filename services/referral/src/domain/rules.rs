//! What a brand decides about referrals: the attribution window, when a buyer's parent binds,
//! fraud thresholds and who earns from store sales. Defaults are documented in docs/operating.md
//! (generated from `crate::config::VARS`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use scanloop_config::ByBrand;
use scanloop_proto::referral::v1::Payee;

/// When a buyer's parent is bound. There is no mode that rebinds: a parent, once set, stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingMode {
    /// The buyer's first attributed referral binds (default).
    FirstAttribution,
    /// Only a referral within [`BrandRules::bind_within`] of the buyer becoming a member binds;
    /// later referrals still earn level-1 credit.
    AtRegistration,
}

impl FromStr for BindingMode {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "first_attribution" => Ok(Self::FirstAttribution),
            "at_registration" => Ok(Self::AtRegistration),
            other => Err(format!(
                "{other:?}: binding mode is first_attribution or at_registration"
            )),
        }
    }
}

impl fmt::Display for BindingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FirstAttribution => "first_attribution",
            Self::AtRegistration => "at_registration",
        })
    }
}

/// Who earns when a sale came through a store and a member's link at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorePrecedence {
    MemberOnly,
    StoreOnly,
    Both,
}

impl StorePrecedence {
    pub fn payee(self) -> Payee {
        match self {
            Self::MemberOnly => Payee::Member,
            Self::StoreOnly => Payee::Store,
            Self::Both => Payee::Both,
        }
    }
}

impl FromStr for StorePrecedence {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "member" | "member_only" => Ok(Self::MemberOnly),
            "store" | "store_only" => Ok(Self::StoreOnly),
            "both" => Ok(Self::Both),
            other => Err(format!(
                "{other:?}: store precedence is member_only, store_only or both"
            )),
        }
    }
}

/// One brand's referral rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrandRules {
    /// An activation counts within this long after the buyer's last click on the link (or the
    /// link's creation when no click by the buyer is known).
    pub attribution_window: Duration,
    pub binding_mode: BindingMode,
    /// For [`BindingMode::AtRegistration`]: how soon after becoming a member a referral binds.
    pub bind_within: Duration,
    /// More attributions than this for one referrer in an hour (or a day) are held for review.
    pub max_per_hour: u32,
    pub max_per_day: u32,
    /// More buyers than `store_burst_max` from one store within `store_burst_window` are held.
    pub store_burst_max: u32,
    pub store_burst_window: Duration,
    pub store_precedence: StorePrecedence,
}

impl Default for BrandRules {
    fn default() -> Self {
        Self {
            attribution_window: Duration::days(30),
            binding_mode: BindingMode::FirstAttribution,
            bind_within: Duration::minutes(30),
            max_per_hour: 20,
            max_per_day: 100,
            store_burst_max: 30,
            store_burst_window: Duration::minutes(10),
            store_precedence: StorePrecedence::MemberOnly,
        }
    }
}

impl BrandRules {
    /// Whether a referral at `activated_at` is within [`BrandRules::bind_within`] of the buyer
    /// becoming a member at `registered_at` (taken to be this activation when not known).
    ///
    /// Compared in whole milliseconds: `registered_at` comes back from a CQL timestamp, which
    /// keeps milliseconds, while `activated_at` carries the event's nanoseconds. The activation
    /// that made the buyer a member would otherwise land a fraction of a millisecond "after"
    /// their registration and miss a window of 0 minutes.
    pub fn binds_at_registration(
        &self,
        registered_at: Option<DateTime<Utc>>,
        activated_at: DateTime<Utc>,
    ) -> bool {
        let activated = activated_at.timestamp_millis();
        let registered = registered_at.map_or(activated, |at| at.timestamp_millis());
        activated - registered <= self.bind_within.num_milliseconds()
    }
}

/// Every brand's rules: the defaults and each setting's per-brand overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub defaults: BrandRules,
    pub window_days: ByBrand<i64>,
    pub binding_mode: ByBrand<BindingMode>,
    pub bind_within_minutes: ByBrand<i64>,
    pub max_per_hour: ByBrand<u32>,
    pub max_per_day: ByBrand<u32>,
    pub store_precedence: ByBrand<StorePrecedence>,
}

impl Rules {
    pub fn for_brand(&self, brand_id: &str) -> BrandRules {
        let d = &self.defaults;
        BrandRules {
            attribution_window: self
                .window_days
                .0
                .get(brand_id)
                .map_or(d.attribution_window, |days| Duration::days(*days)),
            binding_mode: self.binding_mode.get_or(brand_id, &d.binding_mode),
            bind_within: self
                .bind_within_minutes
                .0
                .get(brand_id)
                .map_or(d.bind_within, |m| Duration::minutes(*m)),
            max_per_hour: self.max_per_hour.get_or(brand_id, &d.max_per_hour),
            max_per_day: self.max_per_day.get_or(brand_id, &d.max_per_day),
            store_precedence: self.store_precedence.get_or(brand_id, &d.store_precedence),
            ..d.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_their_documented_names() {
        assert_eq!(
            "at_registration".parse::<BindingMode>(),
            Ok(BindingMode::AtRegistration)
        );
        assert!("overriding".parse::<BindingMode>().is_err());
        assert_eq!("both".parse::<StorePrecedence>(), Ok(StorePrecedence::Both));
        assert_eq!(StorePrecedence::StoreOnly.payee(), Payee::Store);
        assert!("dealer".parse::<StorePrecedence>().is_err());
    }

    #[test]
    fn a_referral_binds_within_the_window_after_registration_to_the_millisecond() {
        let rules = BrandRules {
            binding_mode: BindingMode::AtRegistration,
            bind_within: Duration::zero(),
            ..BrandRules::default()
        };
        let activated = DateTime::parse_from_rfc3339("2025-03-01T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        // Registered by this very activation, as stored (milliseconds only).
        let stored = DateTime::parse_from_rfc3339("2025-03-01T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(rules.binds_at_registration(Some(stored), activated));
        assert!(rules.binds_at_registration(None, activated));
        let earlier = stored - Duration::milliseconds(1);
        assert!(!rules.binds_at_registration(Some(earlier), activated));
        let thirty = BrandRules {
            bind_within: Duration::minutes(30),
            ..rules
        };
        assert!(thirty.binds_at_registration(Some(activated - Duration::minutes(30)), activated));
        assert!(!thirty.binds_at_registration(Some(activated - Duration::minutes(31)), activated));
    }

    #[test]
    fn a_brand_gets_its_own_settings_and_the_defaults_for_the_rest() {
        let rules = Rules {
            window_days: "acme=14".parse().unwrap(),
            binding_mode: "acme=at_registration".parse().unwrap(),
            ..Rules::default()
        };
        let acme = rules.for_brand("acme");
        assert_eq!(acme.attribution_window, Duration::days(14));
        assert_eq!(acme.binding_mode, BindingMode::AtRegistration);
        assert_eq!(acme.max_per_hour, 20);
        assert_eq!(rules.for_brand("globex"), BrandRules::default());
    }
}

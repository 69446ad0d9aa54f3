//! Abuse limits on the public-facing RPCs: a budget per brand (what one brand's traffic may take
//! from a shared cluster) and a smaller one per client (one phone or script hammering ScanCode).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Calls per second; the burst allowed is one second's worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// SCANLOOP_RATE_LIMIT_PER_BRAND, default 2000: public calls per second per brand.
    pub per_brand: u32,
    /// SCANLOOP_RATE_LIMIT_PER_CLIENT, default 20: public calls per second per client (the
    /// `x-scanloop-client` metadata a landing back end forwards, e.g. the buyer's address; the
    /// token's subject when absent).
    pub per_client: u32,
}

pub const DEFAULT_PER_BRAND: u32 = 2_000;
pub const DEFAULT_PER_CLIENT: u32 = 20;

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            per_brand: DEFAULT_PER_BRAND,
            per_client: DEFAULT_PER_CLIENT,
        }
    }
}

/// Which budget ran out, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub message: String,
    pub retry_after: Duration,
}

pub struct RateLimits {
    settings: LimitSettings,
    /// Made once: making a clock calibrates it (CPU feature probes), far too dear per call.
    clock: DefaultClock,
    per_brand: DefaultKeyedRateLimiter<String>,
    per_client: DefaultKeyedRateLimiter<(String, String)>,
}

impl RateLimits {
    pub fn new(settings: LimitSettings) -> Self {
        let quota = |per_second: u32| {
            Quota::per_second(NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN))
        };
        Self {
            settings,
            clock: DefaultClock::default(),
            per_brand: DefaultKeyedRateLimiter::keyed(quota(settings.per_brand)),
            per_client: DefaultKeyedRateLimiter::keyed(quota(settings.per_client)),
        }
    }

    /// Takes one call from the brand's and the client's budgets, or says which is spent. The
    /// client's budget is checked first, so one noisy client does not spend its brand's.
    pub fn check(&self, brand_id: &str, client: &str) -> Result<(), Exhausted> {
        let key = (brand_id.to_owned(), client.to_owned());
        if let Err(not_until) = self.per_client.check_key(&key) {
            return Err(Exhausted {
                message: format!(
                    "client {client:?} of brand {brand_id:?} is over its limit of {} calls/s",
                    self.settings.per_client
                ),
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        if let Err(not_until) = self.per_brand.check_key(&key.0) {
            return Err(Exhausted {
                message: format!(
                    "brand {brand_id:?} is over its limit of {} public calls/s",
                    self.settings.per_brand
                ),
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(())
    }

    /// Forgets keys whose budgets are full again, so the tables hold only recent clients.
    pub fn forget_idle(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
        self.per_brand.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_a_retry_hint() {
        let limits = RateLimits::new(LimitSettings {
            per_brand: 100,
            per_client: 3,
        });
        for _ in 0..3 {
            assert_eq!(limits.check("acme", "10.0.0.1"), Ok(()));
        }
        let exhausted = limits.check("acme", "10.0.0.1").unwrap_err();
        assert!(
            exhausted.message.contains("3 calls/s"),
            "{}",
            exhausted.message
        );
        assert!(exhausted.retry_after > Duration::ZERO);
        assert!(exhausted.retry_after <= Duration::from_millis(334));
        // Another client of the same brand still has its own budget.
        assert_eq!(limits.check("acme", "10.0.0.2"), Ok(()));
    }

    #[test]
    fn the_brand_budget_caps_all_its_clients_together() {
        let limits = RateLimits::new(LimitSettings {
            per_brand: 4,
            per_client: 100,
        });
        for client in 0..4 {
            assert_eq!(limits.check("acme", &client.to_string()), Ok(()));
        }
        let exhausted = limits.check("acme", "fifth").unwrap_err();
        assert!(
            exhausted.message.contains("brand \"acme\""),
            "{}",
            exhausted.message
        );
        assert_eq!(limits.check("zenith", "fifth"), Ok(()));
    }
}

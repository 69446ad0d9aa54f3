//! What a commission is worth. Integer fen only; the rounding rule is one rule everywhere:
//!
//! - a rate in basis points earns `floor(base × bps / 10_000)` fen of the base;
//! - a fixed amount earns `floor(fixed × base / purchase)`: all of it on the whole purchase,
//!   proportionally less on what is left of it after partial refunds;
//! - then the plan's cap per sale, if any: `min(that, cap)`.
//!
//! The base is the purchase amount at accrual and what is left of it after refunds later, so a
//! refund reduces each commission at its frozen rate, and a commission never grows. Rounding is
//! always down (toward zero for these non-negative amounts): the brand never pays a fraction of a
//! fen it did not owe, and rounding can never make the levels together exceed the ceiling.

use scanloop_proto::common::v1::Money;
use scanloop_proto::payouts::v1 as pb;

/// 100% in basis points.
pub const FULL_BPS: u32 = 10_000;

/// A commission rate as the domain uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    BasisPoints(u32),
    /// Fen per sale.
    Fixed(i64),
}

impl Rate {
    pub fn from_pb(rate: &pb::Rate) -> Option<Rate> {
        match rate.kind.as_ref()? {
            pb::rate::Kind::BasisPoints(bps) => Some(Rate::BasisPoints(*bps)),
            pb::rate::Kind::Fixed(money) => Some(Rate::Fixed(money.amount_fen)),
        }
    }

    pub fn to_pb(self) -> pb::Rate {
        pb::Rate {
            kind: Some(match self {
                Rate::BasisPoints(bps) => pb::rate::Kind::BasisPoints(bps),
                Rate::Fixed(fen) => pb::rate::Kind::Fixed(fen_to_money(fen)),
            }),
        }
    }
}

pub fn fen_to_money(fen: i64) -> Money {
    Money {
        amount_fen: fen,
        currency: "CNY".into(),
    }
}

pub fn money_fen(money: Option<&Money>) -> i64 {
    money.map_or(0, |m| m.amount_fen)
}

/// The commission on `base` fen of a sale of `purchase` fen (see the module's rounding rule).
/// Non-positive purchases or bases earn nothing.
pub fn commission(rate: Rate, purchase: i64, base: i64, cap: Option<i64>) -> i64 {
    if purchase <= 0 || base <= 0 {
        return 0;
    }
    let base = base.min(purchase);
    let raw = match rate {
        Rate::BasisPoints(bps) => i128::from(base) * i128::from(bps) / i128::from(FULL_BPS),
        Rate::Fixed(fen) => i128::from(fen.max(0)) * i128::from(base) / i128::from(purchase),
    };
    let raw = i64::try_from(raw).unwrap_or(i64::MAX);
    match cap {
        Some(cap) => raw.min(cap.max(0)),
        None => raw,
    }
}

/// The most levels 1 and 2 together may earn on a sale of `purchase` fen under a ceiling in
/// basis points (rounded down, like every commission).
pub fn ceiling_amount(purchase: i64, ceiling_bps: u32) -> i64 {
    commission(Rate::BasisPoints(ceiling_bps), purchase, purchase, None)
}

/// Yuan with two decimals, for people (exports, the demo): 12345 fen → "123.45".
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates_round_down_to_the_fen_and_caps_apply() {
        // 2,999.00 yuan at 5% = 149.95 yuan.
        assert_eq!(
            commission(Rate::BasisPoints(500), 299_900, 299_900, None),
            14_995
        );
        // 0.99 yuan at 3.33% = 3.2967 fen → 3 fen.
        assert_eq!(commission(Rate::BasisPoints(333), 99, 99, None), 3);
        assert_eq!(
            commission(Rate::BasisPoints(500), 299_900, 299_900, Some(10_000)),
            10_000
        );
        assert_eq!(
            commission(Rate::Fixed(5_000), 299_900, 299_900, None),
            5_000
        );
        assert_eq!(
            commission(Rate::Fixed(5_000), 299_900, 299_900, Some(3_000)),
            3_000
        );
        assert_eq!(commission(Rate::BasisPoints(500), 0, 0, None), 0);
    }

    #[test]
    fn a_refund_reduces_at_the_frozen_rate() {
        // 30% of 1,000.00 yuan refunded: 5% of 700.00 = 35.00 yuan.
        assert_eq!(
            commission(Rate::BasisPoints(500), 100_000, 70_000, None),
            3_500
        );
        // A fixed 50.00 yuan on 70% left: 35.00 yuan.
        assert_eq!(commission(Rate::Fixed(5_000), 100_000, 70_000, None), 3_500);
        // 1/3 left of a fixed 1.00 yuan: 33.33 fen → 33 fen.
        assert_eq!(commission(Rate::Fixed(100), 300, 100, None), 33);
        assert_eq!(commission(Rate::BasisPoints(500), 100_000, 0, None), 0);
    }

    #[test]
    fn yuan_has_two_decimals() {
        assert_eq!(yuan(12_345), "123.45");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(-1_200), "-12.00");
        assert_eq!(yuan(0), "0.00");
    }

    proptest! {
        /// The documented rule, restated in exact rational arithmetic: the result is the largest
        /// whole fen not above the true value, never above the cap, never negative.
        #[test]
        fn basis_points_are_the_floor_of_the_exact_share(
            purchase in 1i64..10_000_000_000,
            left in 0u32..=100,
            bps in 0u32..=FULL_BPS,
            cap in proptest::option::of(0i64..1_000_000),
        ) {
            let base = purchase * i64::from(left) / 100;
            let got = commission(Rate::BasisPoints(bps), purchase, base, cap);
            let exact_times_10k = i128::from(base) * i128::from(bps);
            prop_assert!(got >= 0);
            // Never above the exact share.
            prop_assert!(i128::from(got) * 10_000 <= exact_times_10k);
            match cap {
                Some(cap) if i128::from(cap) * 10_000 <= exact_times_10k => prop_assert_eq!(got, cap),
                // Not capped: one more fen would exceed the exact share.
                _ => prop_assert!((i128::from(got) + 1) * 10_000 > exact_times_10k),
            }
        }

        /// Reducing the base never raises a commission: refunds only ever take away.
        #[test]
        fn less_base_never_earns_more(
            purchase in 1i64..1_000_000_000,
            a in 0i64..1_000_000_000,
            b in 0i64..1_000_000_000,
            fixed in 0i64..100_000_000,
            bps in 0u32..=FULL_BPS,
        ) {
            let (low, high) = (a.min(b).min(purchase), a.max(b).min(purchase));
            for rate in [Rate::BasisPoints(bps), Rate::Fixed(fixed)] {
                prop_assert!(commission(rate, purchase, low, None) <= commission(rate, purchase, high, None));
            }
            prop_assert!(commission(Rate::Fixed(fixed), purchase, purchase, None) == fixed);
        }
    }
}

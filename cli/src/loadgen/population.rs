//! Who buys in the load: pure and seeded, so a run's population and its sales are reproducible.
//!
//! Each brand starts with `members` members. The first fifth are roots; the rest joined through
//! a root's link, so they have a parent and their friends' purchases pay level 2 as well. A
//! member's share of the friends who buy follows a power law over the members' ranks (Zipf: the
//! k-th member brings friends in proportion to 1/k^s), so a few members bring most sales, as
//! referral programmes see. The top `koc_share` of the ranks are KOCs. Each sale is referred
//! (through a member's link) or organic, and may be a fraud attempt (the member buying through
//! their own link, which referral rejects as a self-referral) or end in a return.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub brands: usize,
    pub members: usize,
    pub koc_share: f64,
    /// The power law's exponent s.
    pub zipf_exponent: f64,
    /// Of the sales, those through a member's link.
    pub referred_share: f64,
    pub return_rate: f64,
    pub fraud_rate: f64,
}

/// A member of the seeded population, by index within its brand.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub rank: usize,
    /// The root whose link this member joined through, if any.
    pub parent: Option<usize>,
    pub koc: bool,
}

/// One brand's seeded members, ranked (index = rank).
pub fn members(shape: &Shape) -> Vec<Member> {
    let roots = shape.members.div_ceil(5).max(1);
    let kocs = (shape.members as f64 * shape.koc_share).round() as usize;
    (0..shape.members)
        .map(|rank| Member {
            rank,
            // Spread the joiners over the roots so each root gets some.
            parent: (rank >= roots).then(|| rank % roots),
            koc: rank < kocs,
        })
        .collect()
}

/// What one sale of the load does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sale {
    pub brand: usize,
    /// The member whose link the buyer came through; None for an organic sale.
    pub referrer: Option<usize>,
    /// The referrer buys through their own link (a self-referral referral must reject).
    pub fraud: bool,
    /// The buyer returns the product (inside the window).
    pub returned: bool,
}

/// The seeded sequence of sales.
pub struct Sales {
    shape: Shape,
    rng: StdRng,
    /// Cumulative Zipf weights over the member ranks.
    cumulative: Vec<f64>,
}

impl Sales {
    pub fn new(shape: Shape, seed: u64) -> Sales {
        let mut total = 0.0;
        let cumulative = (0..shape.members.max(1))
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(shape.zipf_exponent);
                total
            })
            .collect();
        Sales {
            shape,
            rng: StdRng::seed_from_u64(seed),
            cumulative,
        }
    }

    /// The `i`-th sale (brands take turns).
    pub fn next(&mut self, i: u64) -> Sale {
        let brand = (i % self.shape.brands.max(1) as u64) as usize;
        let referred = self.shape.members > 0 && self.rng.random_bool(self.shape.referred_share);
        let referrer = referred.then(|| self.zipf_rank());
        Sale {
            brand,
            referrer,
            fraud: referred && self.rng.random_bool(self.shape.fraud_rate),
            returned: self.rng.random_bool(self.shape.return_rate),
        }
    }

    fn zipf_rank(&mut self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let draw = self.rng.random_range(0.0..total);
        self.cumulative.partition_point(|&c| c <= draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            brands: 3,
            members: 50,
            koc_share: 0.2,
            zipf_exponent: 1.2,
            referred_share: 0.7,
            return_rate: 0.05,
            fraud_rate: 0.02,
        }
    }

    #[test]
    fn a_fifth_are_roots_the_rest_joined_through_a_root_and_the_top_ranks_are_kocs() {
        let members = members(&shape());
        assert_eq!(members.len(), 50);
        assert_eq!(members.iter().filter(|m| m.parent.is_none()).count(), 10);
        assert!(members.iter().all(|m| m.parent.is_none_or(|p| p < 10)));
        assert_eq!(members[37].parent, Some(7));
        let kocs: Vec<usize> = members.iter().filter(|m| m.koc).map(|m| m.rank).collect();
        assert_eq!(kocs, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn friends_follow_a_power_law_and_the_rates_hold() {
        let mut sales = Sales::new(shape(), 7);
        let n = 200_000;
        let mut by_rank = vec![0u64; 50];
        let (mut referred, mut fraud, mut returned) = (0u64, 0u64, 0u64);
        let mut by_brand = [0u64; 3];
        for i in 0..n {
            let sale = sales.next(i);
            by_brand[sale.brand] += 1;
            if let Some(rank) = sale.referrer {
                by_rank[rank] += 1;
                referred += 1;
            }
            fraud += u64::from(sale.fraud);
            returned += u64::from(sale.returned);
        }
        assert_eq!(by_brand, [66_667, 66_667, 66_666]);
        let share = |count: u64, of: u64| count as f64 / of as f64;
        assert!((share(referred, n) - 0.7).abs() < 0.01);
        assert!((share(fraud, referred) - 0.02).abs() < 0.003);
        assert!((share(returned, n) - 0.05).abs() < 0.003);
        // Zipf with s = 1.2: rank 1 brings 2^1.2 ≈ 2.30 times rank 2's friends and 10^1.2 ≈
        // 15.8 times rank 10's.
        let ratio = |a: usize, b: usize| by_rank[a] as f64 / by_rank[b] as f64;
        assert!((ratio(0, 1) - 2.297).abs() < 0.1, "{}", ratio(0, 1));
        assert!((ratio(0, 9) - 15.85).abs() < 1.5, "{}", ratio(0, 9));
    }

    #[test]
    fn the_same_seed_gives_the_same_sales() {
        let (mut one, mut two) = (Sales::new(shape(), 42), Sales::new(shape(), 42));
        for i in 0..1_000 {
            assert_eq!(one.next(i), two.next(i));
        }
    }
}

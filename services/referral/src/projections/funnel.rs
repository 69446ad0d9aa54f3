//! The funnel (`funnel`): counters per SKU of clicks, visitors, shares, attributed, held and
//! rejected referrals, for each member's scope and for the brand (scope ""). Each event adds
//! once (see `counted_events`).

use scanloop_storage::DbError;
use scylla::value::Counter;

use super::{ReadModels, count};

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "bump_funnel",
        "UPDATE {ks}.funnel SET clicks = clicks + ?, visitors = visitors + ?, \
         shares = shares + ?, attributed = attributed + ?, held = held + ?, \
         rejected = rejected + ? WHERE brand_id = ? AND scope = ? AND sku = ?",
    ),
    (
        "funnel",
        "SELECT sku, clicks, visitors, shares, attributed, held, rejected FROM {ks}.funnel \
         WHERE brand_id = ? AND scope = ?",
    ),
];

/// Changes to one row of funnel counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunnelDelta {
    pub clicks: i64,
    pub visitors: i64,
    pub shares: i64,
    pub attributed: i64,
    pub held: i64,
    pub rejected: i64,
}

impl ReadModels {
    /// Funnel counters per SKU for a scope (a member id, or "" for the brand).
    pub async fn funnel(
        &self,
        brand: &str,
        scope: &str,
    ) -> Result<Vec<(String, FunnelDelta)>, DbError> {
        type Row = (
            String,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
            Option<Counter>,
        );
        let rows: Vec<Row> = self.db.rows("funnel", (brand, scope)).await?;
        Ok(rows
            .into_iter()
            .map(
                |(sku, clicks, visitors, shares, attributed, held, rejected)| {
                    (
                        sku,
                        FunnelDelta {
                            clicks: count(clicks),
                            visitors: count(visitors),
                            shares: count(shares),
                            attributed: count(attributed),
                            held: count(held),
                            rejected: count(rejected),
                        },
                    )
                },
            )
            .collect())
    }

    /// Adds to the funnel of the member's scope and the brand's.
    pub async fn bump_funnel(
        &self,
        brand: &str,
        member: &str,
        sku: &str,
        d: FunnelDelta,
    ) -> Result<(), DbError> {
        let scopes: Vec<&str> = if member.is_empty() {
            vec![""]
        } else {
            vec![member, ""]
        };
        for scope in scopes {
            self.db
                .exec(
                    "bump_funnel",
                    (
                        Counter(d.clicks),
                        Counter(d.visitors),
                        Counter(d.shares),
                        Counter(d.attributed),
                        Counter(d.held),
                        Counter(d.rejected),
                        brand,
                        scope,
                        sku,
                    ),
                )
                .await?;
        }
        Ok(())
    }
}

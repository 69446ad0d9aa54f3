//! Store figures (`store_figures`): per store, the sales attributed there, their amount and how
//! many credited the store; a revoked attribution takes its sale back out. Each event adds once
//! (see `counted_events`).

use chrono::{DateTime, Utc};
use scanloop_proto::referral::v1 as pb;
use scanloop_storage::DbError;
use scylla::value::Counter;

use super::{ReadModels, count};

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "bump_store",
        "UPDATE {ks}.store_figures SET sales = sales + ?, amount_fen = amount_fen + ?, \
         credited = credited + ? WHERE brand_id = ? AND store_id = ?",
    ),
    (
        "store",
        "SELECT sales, amount_fen, credited FROM {ks}.store_figures \
         WHERE brand_id = ? AND store_id = ?",
    ),
];

/// Changes to one store's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StoreSale {
    pub(super) sales: i64,
    pub(super) amount_fen: i64,
    pub(super) credited: i64,
}

/// Whether a sale with this payee credits its store.
pub(super) fn credits_store(payee: pb::Payee) -> bool {
    matches!(payee, pb::Payee::Store | pb::Payee::Both)
}

impl ReadModels {
    pub async fn store(&self, brand: &str, store: &str) -> Result<(i64, i64, i64), DbError> {
        let row: Option<(Option<Counter>, Option<Counter>, Option<Counter>)> =
            self.db.first("store", (brand, store)).await?;
        let (sales, amount, credited) = row.unwrap_or((None, None, None));
        Ok((count(sales), count(amount), count(credited)))
    }

    pub(super) async fn bump_store(
        &self,
        brand: &str,
        store: &str,
        d: StoreSale,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "bump_store",
                (
                    Counter(d.sales),
                    Counter(d.amount_fen),
                    Counter(d.credited),
                    brand,
                    store,
                ),
            )
            .await
    }

    /// Whether the store earned from this listed sale, by the payee its attribution recorded. A
    /// row from before schema 2 has none: then only a sale listed under the store credits it.
    pub(super) async fn credited_store(
        &self,
        brand: &str,
        referral: &pb::Referral,
        activated_at: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let payee = self
            .db
            .first::<(Option<i32>,)>(
                "referral_payee",
                (
                    brand,
                    referral.referrer_member_id.as_str(),
                    activated_at,
                    referral.attribution_id.as_str(),
                ),
            )
            .await?
            .and_then(|(p,)| p);
        Ok(match payee.and_then(|p| pb::Payee::try_from(p).ok()) {
            Some(payee) => credits_store(payee),
            None => referral.referrer_member_id.starts_with("store:"),
        })
    }
}

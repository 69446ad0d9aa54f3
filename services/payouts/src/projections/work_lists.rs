//! Settlement's work lists: what a settlement run can take (`settleable`: vested commissions
//! and owed claw-backs with the time each is due, spread over [`SETTLEABLE_SHARDS`] partitions
//! per brand) and what a batch has settled and netted so far (`batch_items`).

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use scanloop_storage::DbError;

use super::ReadModels;
use crate::domain::ledger::Beneficiary;
use crate::domain::settlement::Candidate;

/// The settlement work list is spread over this many partitions per brand.
pub const SETTLEABLE_SHARDS: u32 = 16;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "put_settleable",
        "INSERT INTO {ks}.settleable (brand_id, shard, beneficiary, item_id, sale_stream_id, \
         commission_id, clawback_id, amount_fen, due_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    (
        "delete_settleable",
        "DELETE FROM {ks}.settleable \
         WHERE brand_id = ? AND shard = ? AND beneficiary = ? AND item_id = ?",
    ),
    (
        "settleable",
        "SELECT beneficiary, sale_stream_id, commission_id, clawback_id, amount_fen, due_at \
         FROM {ks}.settleable WHERE brand_id = ? AND shard = ?",
    ),
    (
        "put_batch_item",
        "INSERT INTO {ks}.batch_items (brand_id, batch_id, beneficiary, item_id, \
         sale_stream_id, commission_id, clawback_id, amount_fen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    (
        "batch_items",
        "SELECT beneficiary, sale_stream_id, commission_id, clawback_id, amount_fen \
         FROM {ks}.batch_items WHERE brand_id = ? AND batch_id = ?",
    ),
];

/// A row of settlement's work lists (`settleable`, `batch_items`): a vested commission, or a
/// claw-back the beneficiary owes.
pub(super) struct WorkItem<'a> {
    beneficiary: &'a str,
    sale: &'a str,
    commission_id: &'a str,
    /// Empty for a commission.
    clawback_id: &'a str,
    amount: i64,
}

impl<'a> WorkItem<'a> {
    pub(super) fn commission(
        beneficiary: &'a str,
        sale: &'a str,
        commission_id: &'a str,
        amount: i64,
    ) -> Self {
        Self {
            beneficiary,
            sale,
            commission_id,
            clawback_id: "",
            amount,
        }
    }

    pub(super) fn clawback(
        beneficiary: &'a str,
        sale: &'a str,
        commission_id: &'a str,
        clawback_id: &'a str,
        amount: i64,
    ) -> Self {
        Self {
            beneficiary,
            sale,
            commission_id,
            clawback_id,
            amount,
        }
    }

    /// The row's key within the beneficiary: the claw-back's id, else the commission's.
    fn item_id(&self) -> &'a str {
        if self.clawback_id.is_empty() {
            self.commission_id
        } else {
            self.clawback_id
        }
    }
}

fn settleable_shard(beneficiary: &str) -> i32 {
    scanloop_storage::shard::shard_of(beneficiary, SETTLEABLE_SHARDS) as i32
}

impl ReadModels {
    pub(super) async fn put_settleable(
        &self,
        brand: &str,
        item: &WorkItem<'_>,
        due_at: DateTime<Utc>,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "put_settleable",
                (
                    brand,
                    settleable_shard(item.beneficiary),
                    item.beneficiary,
                    item.item_id(),
                    item.sale,
                    item.commission_id,
                    item.clawback_id,
                    item.amount,
                    due_at,
                ),
            )
            .await
    }

    pub(super) async fn delete_settleable(
        &self,
        brand: &str,
        beneficiary: &str,
        item_id: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "delete_settleable",
                (brand, settleable_shard(beneficiary), beneficiary, item_id),
            )
            .await
    }

    fn candidate(
        beneficiary: &str,
        sale: String,
        commission_id: String,
        clawback_id: String,
        amount: i64,
    ) -> Option<Candidate> {
        Some(Candidate {
            beneficiary: Beneficiary::parse_key(beneficiary)?,
            sale_stream_id: sale,
            commission_id,
            clawback_id: (!clawback_id.is_empty()).then_some(clawback_id),
            amount,
        })
    }

    /// Vested commissions and owed claw-backs due at or before `cutoff`.
    pub async fn settleable(
        &self,
        brand: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<Candidate>, DbError> {
        let mut candidates = Vec::new();
        for shard in 0..SETTLEABLE_SHARDS as i32 {
            let statement = self.db.statement("settleable")?;
            let mut rows = self
                .db
                .session()
                .execute_iter(statement.clone(), (brand, shard))
                .await?
                .rows_stream::<(String, String, String, String, i64, DateTime<Utc>)>()?;
            while let Some((beneficiary, sale, commission, clawback, amount, due_at)) =
                rows.try_next().await.map_err(DbError::new)?
            {
                if due_at <= cutoff {
                    candidates.extend(Self::candidate(
                        &beneficiary,
                        sale,
                        commission,
                        clawback,
                        amount,
                    ));
                }
            }
        }
        Ok(candidates)
    }

    /// What a batch has settled and netted so far.
    pub async fn batch_items(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Vec<Candidate>, DbError> {
        let rows = self
            .db
            .rows::<(String, String, String, String, i64)>("batch_items", (brand, batch_id))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(beneficiary, sale, commission, clawback, amount)| {
                Self::candidate(&beneficiary, sale, commission, clawback, amount)
            })
            .collect())
    }

    pub(super) async fn put_batch_item(
        &self,
        brand: &str,
        batch_id: &str,
        item: &WorkItem<'_>,
    ) -> Result<(), DbError> {
        self.db
            .exec(
                "put_batch_item",
                (
                    brand,
                    batch_id,
                    item.beneficiary,
                    item.item_id(),
                    item.sale,
                    item.commission_id,
                    item.clawback_id,
                    item.amount,
                ),
            )
            .await
    }
}

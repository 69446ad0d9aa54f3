//! Settlement batches (`settlements`, one `SettlementBatch` message each), their payout lines
//! (`payout_lines`, one per beneficiary) and which lines are paid (`paid_lines`, counted by key
//! so a replayed payment counts once).

use prost::Message as _;
use scanloop_proto::payouts::v1 as pb;
use scanloop_storage::DbError;

use super::{ReadModels, decode};

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "put_settlement",
        "INSERT INTO {ks}.settlements (brand_id, batch_id, summary) VALUES (?, ?, ?)",
    ),
    (
        "settlement",
        "SELECT summary FROM {ks}.settlements WHERE brand_id = ? AND batch_id = ?",
    ),
    (
        "delete_settlement",
        "DELETE FROM {ks}.settlements WHERE brand_id = ? AND batch_id = ?",
    ),
    (
        "settlements",
        "SELECT summary FROM {ks}.settlements WHERE brand_id = ?",
    ),
    (
        "put_paid",
        "INSERT INTO {ks}.paid_lines (brand_id, batch_id, beneficiary) VALUES (?, ?, ?)",
    ),
    (
        "paid_count",
        "SELECT COUNT(*) FROM {ks}.paid_lines WHERE brand_id = ? AND batch_id = ?",
    ),
    (
        "put_line",
        "INSERT INTO {ks}.payout_lines (brand_id, batch_id, beneficiary, line) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "line",
        "SELECT line FROM {ks}.payout_lines \
         WHERE brand_id = ? AND batch_id = ? AND beneficiary = ?",
    ),
    (
        "lines",
        "SELECT line FROM {ks}.payout_lines WHERE brand_id = ? AND batch_id = ?",
    ),
];

impl ReadModels {
    /// How many lines of a batch are marked paid.
    pub async fn paid_count(&self, brand: &str, batch_id: &str) -> Result<u32, DbError> {
        Ok(self
            .db
            .first::<(i64,)>("paid_count", (brand, batch_id))
            .await?
            .map_or(0, |(n,)| n.clamp(0, i64::from(u32::MAX)) as u32))
    }

    /// A batch as projected, with its count of paid lines.
    pub async fn settlement(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Option<pb::SettlementBatch>, DbError> {
        let Some(mut batch) = self.stored_settlement(brand, batch_id).await? else {
            return Ok(None);
        };
        batch.paid_lines = self.paid_count(brand, batch_id).await?;
        Ok(Some(batch))
    }

    async fn stored_settlement(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Option<pb::SettlementBatch>, DbError> {
        match self
            .db
            .first::<(Vec<u8>,)>("settlement", (brand, batch_id))
            .await?
        {
            Some((bytes,)) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn put_settlement(&self, batch: &pb::SettlementBatch) -> Result<(), DbError> {
        self.db
            .exec(
                "put_settlement",
                (&batch.brand_id, &batch.batch_id, batch.encode_to_vec()),
            )
            .await
    }

    pub(super) async fn update_settlement(
        &self,
        brand: &str,
        batch_id: &str,
        change: impl FnOnce(&mut pb::SettlementBatch),
    ) -> Result<(), DbError> {
        let mut batch = self
            .stored_settlement(brand, batch_id)
            .await?
            .unwrap_or_else(|| pb::SettlementBatch {
                brand_id: brand.to_owned(),
                batch_id: batch_id.to_owned(),
                ..Default::default()
            });
        change(&mut batch);
        self.put_settlement(&batch).await
    }

    /// Every batch of a brand, newest first (a brand settles monthly: a few dozen a year).
    pub async fn settlements(&self, brand: &str) -> Result<Vec<pb::SettlementBatch>, DbError> {
        let mut batches: Vec<pb::SettlementBatch> = self
            .db
            .rows::<(Vec<u8>,)>("settlements", (brand,))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        for batch in &mut batches {
            batch.paid_lines = self.paid_count(brand, &batch.batch_id).await?;
        }
        batches.sort_by_key(|b| {
            std::cmp::Reverse(
                b.started_at
                    .as_ref()
                    .map(|t| (t.seconds, t.nanos))
                    .unwrap_or_default(),
            )
        });
        Ok(batches)
    }

    pub async fn lines(
        &self,
        brand: &str,
        batch_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::PayoutLine>, String), scanloop_storage::paging::PageError> {
        let (rows, next) = scanloop_storage::paging::page::<(Vec<u8>,)>(
            self.db.session(),
            self.db.statement("lines")?,
            (brand, batch_id),
            page_size,
            page_token,
        )
        .await?;
        let lines = rows
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        Ok((lines, next))
    }

    /// Every line of a batch (for the CSV export).
    pub async fn all_lines(
        &self,
        brand: &str,
        batch_id: &str,
    ) -> Result<Vec<pb::PayoutLine>, DbError> {
        self.db
            .rows::<(Vec<u8>,)>("lines", (brand, batch_id))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect()
    }

    pub(super) async fn update_line(
        &self,
        brand: &str,
        batch_id: &str,
        beneficiary: &str,
        change: impl FnOnce(&mut pb::PayoutLine),
    ) -> Result<(), DbError> {
        let Some((bytes,)) = self
            .db
            .first::<(Vec<u8>,)>("line", (brand, batch_id, beneficiary))
            .await?
        else {
            return Ok(());
        };
        let mut line: pb::PayoutLine = decode(&bytes)?;
        change(&mut line);
        self.db
            .exec(
                "put_line",
                (brand, batch_id, beneficiary, line.encode_to_vec()),
            )
            .await
    }
}

//! What beneficiaries owe (`receivables`): a claw-back is open until settlement nets it (the row
//! goes) or it is written off (the row stays, marked so).

use prost::Message as _;
use scanloop_proto::payouts::v1 as pb;
use scanloop_storage::DbError;

use super::{ReadModels, decode};

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "put_receivable",
        "INSERT INTO {ks}.receivables (brand_id, clawback_id, receivable) VALUES (?, ?, ?)",
    ),
    (
        "receivable",
        "SELECT receivable FROM {ks}.receivables WHERE brand_id = ? AND clawback_id = ?",
    ),
    (
        "receivables",
        "SELECT receivable FROM {ks}.receivables WHERE brand_id = ?",
    ),
    (
        "delete_receivable",
        "DELETE FROM {ks}.receivables WHERE brand_id = ? AND clawback_id = ?",
    ),
];

impl ReadModels {
    pub(super) async fn put_receivable(
        &self,
        brand: &str,
        r: &pb::Receivable,
    ) -> Result<(), DbError> {
        self.db
            .exec("put_receivable", (brand, &r.clawback_id, r.encode_to_vec()))
            .await
    }

    pub async fn receivable(
        &self,
        brand: &str,
        clawback_id: &str,
    ) -> Result<Option<pb::Receivable>, DbError> {
        match self
            .db
            .first::<(Vec<u8>,)>("receivable", (brand, clawback_id))
            .await?
        {
            Some((bytes,)) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every receivable of the brand (open and written off), oldest first.
    pub async fn receivables(&self, brand: &str) -> Result<Vec<pb::Receivable>, DbError> {
        let mut all: Vec<pb::Receivable> = self
            .db
            .rows::<(Vec<u8>,)>("receivables", (brand,))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        all.sort_by_key(|r| {
            (
                r.clawed_back_at.map(|t| (t.seconds, t.nanos)),
                r.clawback_id.clone(),
            )
        });
        Ok(all)
    }
}

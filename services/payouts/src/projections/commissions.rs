//! Commissions as the API lists them: by sale (`commissions`, every level of one sale in one
//! partition) and by beneficiary, newest first (`commissions_by_beneficiary`). Each row keeps
//! the API's `Commission` message, which the projection reads, changes and writes back.

use prost::Message as _;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;

use super::{ReadModels, decode};
use crate::domain::ledger::Beneficiary;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "commission",
        "SELECT commission FROM {ks}.commissions \
         WHERE brand_id = ? AND sale_stream_id = ? AND commission_id = ?",
    ),
    (
        "sale_commissions",
        "SELECT commission FROM {ks}.commissions WHERE brand_id = ? AND sale_stream_id = ?",
    ),
    (
        "put_commission",
        "INSERT INTO {ks}.commissions (brand_id, sale_stream_id, commission_id, commission) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "put_beneficiary_commission",
        "INSERT INTO {ks}.commissions_by_beneficiary (brand_id, beneficiary, accrued_at, \
         commission_id, sale_stream_id, commission) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    (
        "beneficiary_commissions",
        "SELECT commission FROM {ks}.commissions_by_beneficiary \
         WHERE brand_id = ? AND beneficiary = ?",
    ),
];

impl ReadModels {
    async fn commission(
        &self,
        brand: &str,
        sale: &str,
        commission_id: &str,
    ) -> Result<Option<pb::Commission>, DbError> {
        match self
            .db
            .first::<(Vec<u8>,)>("commission", (brand, sale, commission_id))
            .await?
        {
            Some((bytes,)) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn put_commission(
        &self,
        brand: &str,
        sale: &str,
        commission: &pb::Commission,
    ) -> Result<(), DbError> {
        let bytes = commission.encode_to_vec();
        let beneficiary = Beneficiary::from_pb(commission.beneficiary.as_ref())
            .map(|b| b.key())
            .unwrap_or_default();
        let accrued_at = from_timestamp(commission.accrued_at.as_ref()).unwrap_or_default();
        self.db
            .exec(
                "put_commission",
                (brand, sale, &commission.commission_id, &bytes),
            )
            .await?;
        self.db
            .exec(
                "put_beneficiary_commission",
                (
                    brand,
                    &beneficiary,
                    accrued_at,
                    &commission.commission_id,
                    sale,
                    &bytes,
                ),
            )
            .await
    }

    /// Reads, changes and writes back a commission (absent: an event for a commission this
    /// projection never saw accrue, which cannot happen in one stream's order; skipped).
    pub(super) async fn update_commission(
        &self,
        brand: &str,
        sale: &str,
        commission_id: &str,
        change: impl FnOnce(&mut pb::Commission),
    ) -> Result<Option<pb::Commission>, DbError> {
        let Some(mut commission) = self.commission(brand, sale, commission_id).await? else {
            tracing::warn!(
                sale,
                commission_id,
                "commission event before its accrual; skipped"
            );
            return Ok(None);
        };
        change(&mut commission);
        self.put_commission(brand, sale, &commission).await?;
        Ok(Some(commission))
    }

    pub async fn sale_commissions(
        &self,
        brand: &str,
        sale: &str,
    ) -> Result<Vec<pb::Commission>, DbError> {
        self.db
            .rows::<(Vec<u8>,)>("sale_commissions", (brand, sale))
            .await?
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect()
    }

    /// A page of a beneficiary's commissions, newest first.
    pub async fn beneficiary_commissions(
        &self,
        brand: &str,
        beneficiary: &Beneficiary,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Commission>, String), scanloop_storage::paging::PageError> {
        let (rows, next) = scanloop_storage::paging::page::<(Vec<u8>,)>(
            self.db.session(),
            self.db.statement("beneficiary_commissions")?,
            (brand, beneficiary.key()),
            page_size,
            page_token,
        )
        .await?;
        let commissions = rows
            .iter()
            .map(|(bytes,)| decode(bytes))
            .collect::<Result<_, _>>()?;
        Ok((commissions, next))
    }
}

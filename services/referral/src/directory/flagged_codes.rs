//! Codes activation flagged as suspiciously scanned (`flagged_codes`): a signal for the
//! judgement of the sale that activates one.

use scanloop_storage::DbError;

use super::Directory;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "flag_code",
        "INSERT INTO {ks}.flagged_codes (brand_id, warranty_stream_id, reason) VALUES (?, ?, ?)",
    ),
    (
        "flagged",
        "SELECT reason FROM {ks}.flagged_codes WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
];

impl Directory {
    pub async fn flag_code(&self, brand: &str, stream: &str, reason: &str) -> Result<(), DbError> {
        self.db.exec("flag_code", (brand, stream, reason)).await
    }

    pub async fn flagged(&self, brand: &str, stream: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("flagged", (brand, stream))
            .await?
            .map(|(reason,)| reason.unwrap_or_default()))
    }
}

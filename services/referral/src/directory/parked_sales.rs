//! Activations waiting for membership to name their buyer (`parked_sales`, under the buyer's
//! identity, with each one's failed attempts so far): attributed when membership announces whose
//! the identity is.

use scanloop_storage::DbError;

use super::Directory;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "park",
        "INSERT INTO {ks}.parked_sales (brand_id, identity_key, event_id, envelope) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "parked",
        "SELECT event_id, envelope, attempts FROM {ks}.parked_sales \
         WHERE brand_id = ? AND identity_key = ?",
    ),
    (
        "park_failed",
        "UPDATE {ks}.parked_sales SET attempts = ?, last_error = ? \
         WHERE brand_id = ? AND identity_key = ? AND event_id = ?",
    ),
    (
        "unpark",
        "DELETE FROM {ks}.parked_sales WHERE brand_id = ? AND identity_key = ? AND event_id = ?",
    ),
];

/// An activation waiting for membership to name its buyer.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub event_id: String,
    /// The activation's envelope (empty when the row's envelope expired first).
    pub envelope: Vec<u8>,
    pub attempts: i32,
}

impl Directory {
    pub async fn park(
        &self,
        brand: &str,
        key: &str,
        event_id: &str,
        envelope: &[u8],
    ) -> Result<(), DbError> {
        self.db.exec("park", (brand, key, event_id, envelope)).await
    }

    /// The activations parked under an identity: event id, envelope, failed attempts so far.
    pub async fn parked(&self, brand: &str, key: &str) -> Result<Vec<Parked>, DbError> {
        Ok(self
            .db
            .rows::<(String, Option<Vec<u8>>, Option<i32>)>("parked", (brand, key))
            .await?
            .into_iter()
            .map(|(event_id, envelope, attempts)| Parked {
                event_id,
                envelope: envelope.unwrap_or_default(),
                attempts: attempts.unwrap_or(0),
            })
            .collect())
    }

    /// Notes a parked activation's failed attempt (it stays parked).
    pub async fn park_failed(
        &self,
        brand: &str,
        key: &str,
        event_id: &str,
        attempts: i32,
        error: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec("park_failed", (attempts, error, brand, key, event_id))
            .await
    }

    pub async fn unpark(&self, brand: &str, key: &str, event_id: &str) -> Result<(), DbError> {
        self.db.exec("unpark", (brand, key, event_id)).await
    }
}

//! Who activated each code (`warranty_owners`: the buyer's identity), for StartAssist's
//! ownership check, and the assists bound to it, which its return revokes.

use std::collections::HashSet;

use scanloop_storage::DbError;

use super::Directory;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "set_warranty_owner",
        "INSERT INTO {ks}.warranty_owners (brand_id, warranty_stream_id, identity_key) \
         VALUES (?, ?, ?)",
    ),
    (
        "warranty_owner",
        "SELECT identity_key FROM {ks}.warranty_owners \
         WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
    (
        "add_warranty_assist",
        "UPDATE {ks}.warranty_owners SET assists = assists + ? \
         WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
    (
        "warranty_assists",
        "SELECT assists FROM {ks}.warranty_owners WHERE brand_id = ? AND warranty_stream_id = ?",
    ),
];

impl Directory {
    pub async fn set_warranty_owner(
        &self,
        brand: &str,
        stream: &str,
        key: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec("set_warranty_owner", (brand, stream, key))
            .await
    }

    pub async fn warranty_owner(
        &self,
        brand: &str,
        stream: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("warranty_owner", (brand, stream))
            .await?
            .and_then(|(key,)| key))
    }

    /// Notes that `assist_id` is bound to the warranty, so its return revokes the assist.
    pub async fn add_warranty_assist(
        &self,
        brand: &str,
        stream: &str,
        assist_id: &str,
    ) -> Result<(), DbError> {
        self.db
            .exec("add_warranty_assist", (vec![assist_id], brand, stream))
            .await
    }

    pub async fn warranty_assists(
        &self,
        brand: &str,
        stream: &str,
    ) -> Result<Vec<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<HashSet<String>>,)>("warranty_assists", (brand, stream))
            .await?
            .and_then(|(set,)| set)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default())
    }
}

//! Every link token ever issued, across brands (`link_tokens`): tells a token of another brand
//! from an unknown one.

use scanloop_storage::DbError;

use super::Directory;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "register_token",
        "INSERT INTO {ks}.link_tokens (link_token, brand_id) VALUES (?, ?)",
    ),
    (
        "token_brand",
        "SELECT brand_id FROM {ks}.link_tokens WHERE link_token = ?",
    ),
];

impl Directory {
    pub async fn register_token(&self, token: &str, brand: &str) -> Result<(), DbError> {
        self.db.exec("register_token", (token, brand)).await
    }

    pub async fn token_brand(&self, token: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("token_brand", (token,))
            .await?
            .and_then(|(brand,)| brand))
    }
}

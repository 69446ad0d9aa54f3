//! Share links (`links`, one row per token, revoked in place), each member's links newest first
//! (`links_by_member`) and every share of a link (`link_shares`, counted when a link is read).

use chrono::{DateTime, Utc};
use scanloop_storage::DbError;
use scanloop_storage::paging::PageError;

use super::{ReadModels, page_error};

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "insert_link",
        "INSERT INTO {ks}.links (brand_id, link_token, member_id, sku, campaign_id, url, created_at, \
         revoked) VALUES (?, ?, ?, ?, ?, ?, ?, false) USING TIMESTAMP ?",
    ),
    (
        "insert_link_by_member",
        "INSERT INTO {ks}.links_by_member (brand_id, member_id, created_at, link_token) \
         VALUES (?, ?, ?, ?)",
    ),
    (
        "revoke_link",
        "UPDATE {ks}.links USING TIMESTAMP ? SET revoked = true WHERE brand_id = ? AND link_token = ?",
    ),
    (
        "link",
        "SELECT member_id, sku, campaign_id, url, created_at, revoked FROM {ks}.links \
         WHERE brand_id = ? AND link_token = ?",
    ),
    (
        "links_by_member",
        "SELECT link_token FROM {ks}.links_by_member WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "insert_share",
        "INSERT INTO {ks}.link_shares (brand_id, link_token, version, channel) VALUES (?, ?, ?, ?)",
    ),
    (
        "count_shares",
        "SELECT COUNT(*) FROM {ks}.link_shares WHERE brand_id = ? AND link_token = ?",
    ),
];

/// A link as the read model has it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    pub token: String,
    pub member_id: String,
    pub sku: String,
    pub campaign_id: String,
    pub url: String,
    pub created_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub shares: u64,
}

impl ReadModels {
    pub async fn link(&self, brand: &str, token: &str) -> Result<Option<LinkRow>, DbError> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
            Option<bool>,
        );
        let Some(row) = self.db.first::<Row>("link", (brand, token)).await? else {
            return Ok(None);
        };
        let (shares,): (i64,) = self
            .db
            .first("count_shares", (brand, token))
            .await?
            .unwrap_or((0,));
        let (member_id, sku, campaign_id, url, created_at, revoked) = row;
        Ok(Some(LinkRow {
            token: token.to_owned(),
            member_id: member_id.unwrap_or_default(),
            sku: sku.unwrap_or_default(),
            campaign_id: campaign_id.unwrap_or_default(),
            url: url.unwrap_or_default(),
            created_at,
            revoked: revoked.unwrap_or_default(),
            shares: shares.max(0) as u64,
        }))
    }

    pub async fn links_page(
        &self,
        brand: &str,
        member: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<LinkRow>, String), PageError> {
        let (tokens, next): (Vec<(String,)>, String) = scanloop_storage::paging::page(
            self.db.session(),
            self.db.statement("links_by_member").map_err(page_error)?,
            (brand, member),
            page_size,
            token,
        )
        .await?;
        let links = futures::future::try_join_all(tokens.iter().map(|(t,)| self.link(brand, t)))
            .await
            .map_err(page_error)?;
        Ok((links.into_iter().flatten().collect(), next))
    }
}

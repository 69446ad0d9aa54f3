//! Members as membership announces them (`members`: registration, display name, identities,
//! devices) and which member each identity belongs to (`identity_owners`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use scanloop_storage::DbError;

use super::Directory;

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "register_member",
        "UPDATE {ks}.members SET registered_at = ?, display_name = ?, identities = identities + ? \
         WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "add_identity",
        "UPDATE {ks}.members SET identities = identities + ? WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "add_device",
        "UPDATE {ks}.members SET devices = devices + ? WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "member",
        "SELECT registered_at, display_name, identities, devices FROM {ks}.members \
         WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "set_owner",
        "INSERT INTO {ks}.identity_owners (brand_id, identity_key, member_id) VALUES (?, ?, ?)",
    ),
    (
        "owner",
        "SELECT member_id FROM {ks}.identity_owners WHERE brand_id = ? AND identity_key = ?",
    ),
];

/// A member as membership announced them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberFacts {
    pub registered_at: Option<DateTime<Utc>>,
    pub display_name: String,
    pub identities: Vec<String>,
    pub devices: Vec<String>,
}

impl Directory {
    pub async fn register_member(
        &self,
        brand: &str,
        member: &str,
        registered_at: Option<DateTime<Utc>>,
        display_name: &str,
        identity_key: Option<&str>,
    ) -> Result<(), DbError> {
        let identities: Vec<&str> = identity_key.into_iter().collect();
        self.db
            .exec(
                "register_member",
                (registered_at, display_name, identities, brand, member),
            )
            .await
    }

    pub async fn add_identity(&self, brand: &str, member: &str, key: &str) -> Result<(), DbError> {
        self.db
            .exec("add_identity", (vec![key], brand, member))
            .await
    }

    pub async fn add_device(&self, brand: &str, member: &str, serial: &str) -> Result<(), DbError> {
        self.db
            .exec("add_device", (vec![serial], brand, member))
            .await
    }

    pub async fn member(&self, brand: &str, member: &str) -> Result<Option<MemberFacts>, DbError> {
        type Row = (
            Option<DateTime<Utc>>,
            Option<String>,
            Option<HashSet<String>>,
            Option<HashSet<String>>,
        );
        let row: Option<Row> = self.db.first("member", (brand, member)).await?;
        Ok(row.map(|(registered_at, name, identities, devices)| {
            let sorted = |set: Option<HashSet<String>>| {
                let mut values: Vec<String> = set.unwrap_or_default().into_iter().collect();
                values.sort();
                values
            };
            MemberFacts {
                registered_at,
                display_name: name.unwrap_or_default(),
                identities: sorted(identities),
                devices: sorted(devices),
            }
        }))
    }

    pub async fn set_owner(&self, brand: &str, key: &str, member: &str) -> Result<(), DbError> {
        self.db.exec("set_owner", (brand, key, member)).await
    }

    pub async fn owner(&self, brand: &str, key: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("owner", (brand, key))
            .await?
            .and_then(|(member,)| member))
    }
}

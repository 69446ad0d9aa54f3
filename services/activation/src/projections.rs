//! Read models projected from `scanloop.activation.events.v1`, and the queries over them.
//!
//! The projector is a consumer of the service's own topic: rebuilding a read model means
//! dropping its tables (re-run `scanloop migrate`) and replaying the topic from the beginning
//! under a new consumer group. Each update sets absolute values taken from the event, so applying
//! an event twice changes nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scanloop_bus::EventEnvelope;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::common::v1::StoredIdentity;
use scanloop_proto::common::v1::stored_identity::Kind;
use scanloop_proto::time::from_timestamp;
use scanloop_storage::DbError;
use scanloop_storage::paging::PageError;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use crate::domain::ActivationEvent;
use crate::domain::device::canonical_serial;

/// The warranty row as projected.
#[derive(Debug, Clone, PartialEq)]
pub struct WarrantyRow {
    pub batch_id: Uuid,
    pub serial: u32,
    pub sku: String,
    pub product_model: String,
    pub status: pb::WarrantyStatus,
    pub buyer: Option<StoredIdentity>,
    pub channel: pb::PurchaseChannel,
    pub amount_fen: i64,
    pub purchased_at: Option<DateTime<Utc>>,
    pub activated_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub extended_months: u32,
    pub referral_token: String,
    pub device_serial: String,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: String,
    /// All refunds of the current sale so far (PurchaseRefunded's refunded_total).
    pub refunded_fen: i64,
    pub version: u64,
}

/// `kind:value` — the partition key of the by-buyer table.
pub fn buyer_key(buyer: &StoredIdentity) -> Option<String> {
    match buyer.kind.as_ref()? {
        Kind::PhoneHash(h) => Some(format!("phone_hash:{h}")),
        Kind::WechatUnionid(u) => Some(format!("wechat_unionid:{u}")),
        Kind::DeviceSerial(s) => Some(format!("device_serial:{s}")),
    }
}

fn buyer_from_key(kind: &str, value: &str) -> Option<StoredIdentity> {
    let kind = match kind {
        "phone_hash" => Kind::PhoneHash(value.to_owned()),
        "wechat_unionid" => Kind::WechatUnionid(value.to_owned()),
        "device_serial" => Kind::DeviceSerial(value.to_owned()),
        _ => return None,
    };
    Some(StoredIdentity { kind: Some(kind) })
}

#[derive(Clone)]
pub struct ReadModels {
    inner: Arc<Statements>,
}

struct Statements {
    session: Arc<Session>,
    upsert_activated: PreparedStatement,
    insert_by_buyer: PreparedStatement,
    insert_by_device: PreparedStatement,
    update_extended: PreparedStatement,
    update_voided: PreparedStatement,
    update_refunded: PreparedStatement,
    select_warranty: PreparedStatement,
    select_by_device: PreparedStatement,
    select_by_buyer: PreparedStatement,
}

const WARRANTY_COLUMNS: &str = "batch_id, serial, sku, product_model, status, buyer_kind, \
     buyer_value, channel_kind, channel_id, amount_fen, purchased_at, activated_at, ends_at, \
     extended_months, referral_token, device_serial, voided_at, void_reason, refunded_fen, version";

/// A `warranties` row as read (columns matched by name).
#[derive(scylla::DeserializeRow)]
struct WarrantyRecord {
    batch_id: Uuid,
    serial: i64,
    sku: Option<String>,
    product_model: Option<String>,
    status: Option<i32>,
    buyer_kind: Option<String>,
    buyer_value: Option<String>,
    channel_kind: Option<i32>,
    channel_id: Option<String>,
    amount_fen: Option<i64>,
    purchased_at: Option<DateTime<Utc>>,
    activated_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    extended_months: Option<i32>,
    referral_token: Option<String>,
    device_serial: Option<String>,
    voided_at: Option<DateTime<Utc>>,
    void_reason: Option<String>,
    refunded_fen: Option<i64>,
    version: Option<i64>,
}

/// The values of the activation upsert (bound by marker name).
#[derive(scylla::SerializeRow)]
struct ActivatedValues<'a> {
    sku: &'a str,
    product_model: &'a str,
    status: i32,
    buyer_kind: Option<&'a str>,
    buyer_value: Option<&'a str>,
    channel_kind: i32,
    channel_id: &'a str,
    amount_fen: i64,
    purchased_at: Option<DateTime<Utc>>,
    activated_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    referral_token: &'a str,
    device_serial: &'a str,
    version: i64,
    brand_id: &'a str,
    batch_id: Uuid,
    serial: i64,
}

impl ReadModels {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> anyhow::Result<Self> {
        scanloop_storage::require_schema(
            &session,
            keyspace,
            crate::schema::COMPONENT,
            crate::schema::SCHEMA_VERSION,
        )
        .await?;
        let prepare = |cql: String| {
            let session = session.clone();
            async move { session.prepare(cql).await }
        };
        Ok(Self {
            inner: Arc::new(Statements {
                // An activation after a void (a resale) starts a new warranty: the void, the
                // extensions and the refunds of the returned sale are cleared.
                upsert_activated: prepare(format!(
                    "UPDATE {keyspace}.warranties SET sku = ?, product_model = ?, status = ?, \
                     buyer_kind = ?, buyer_value = ?, channel_kind = ?, channel_id = ?, \
                     amount_fen = ?, purchased_at = ?, activated_at = ?, ends_at = ?, \
                     referral_token = ?, device_serial = ?, version = ?, extended_months = 0, \
                     refunded_fen = 0, voided_at = null, void_reason = null \
                     WHERE brand_id = ? AND batch_id = ? AND serial = ?"
                ))
                .await?,
                insert_by_buyer: prepare(format!(
                    "INSERT INTO {keyspace}.warranties_by_buyer \
                     (brand_id, buyer, activated_at, batch_id, serial) VALUES (?, ?, ?, ?, ?)"
                ))
                .await?,
                insert_by_device: prepare(format!(
                    "INSERT INTO {keyspace}.warranties_by_device \
                     (brand_id, device_serial, batch_id, serial, activated_at) \
                     VALUES (?, ?, ?, ?, ?)"
                ))
                .await?,
                update_extended: prepare(format!(
                    "UPDATE {keyspace}.warranties SET ends_at = ?, extended_months = ?, version = ? \
                     WHERE brand_id = ? AND batch_id = ? AND serial = ?"
                ))
                .await?,
                update_voided: prepare(format!(
                    "UPDATE {keyspace}.warranties SET status = ?, voided_at = ?, void_reason = ?, \
                     version = ? WHERE brand_id = ? AND batch_id = ? AND serial = ?"
                ))
                .await?,
                update_refunded: prepare(format!(
                    "UPDATE {keyspace}.warranties SET refunded_fen = ?, version = ? \
                     WHERE brand_id = ? AND batch_id = ? AND serial = ?"
                ))
                .await?,
                select_warranty: prepare(format!(
                    "SELECT {WARRANTY_COLUMNS} FROM {keyspace}.warranties \
                     WHERE brand_id = ? AND batch_id = ? AND serial = ?"
                ))
                .await?,
                select_by_device: prepare(format!(
                    "SELECT batch_id, serial FROM {keyspace}.warranties_by_device \
                     WHERE brand_id = ? AND device_serial = ?"
                ))
                .await?,
                select_by_buyer: prepare(format!(
                    "SELECT batch_id, serial FROM {keyspace}.warranties_by_buyer \
                     WHERE brand_id = ? AND buyer = ?"
                ))
                .await?,
                session,
            }),
        })
    }

    pub async fn get(
        &self,
        brand_id: &str,
        batch_id: Uuid,
        serial: u32,
    ) -> Result<Option<WarrantyRow>, DbError> {
        let rows = self
            .inner
            .session
            .execute_unpaged(
                &self.inner.select_warranty,
                (brand_id, batch_id, i64::from(serial)),
            )
            .await?
            .into_rows_result()?;
        Ok(rows
            .maybe_first_row::<WarrantyRecord>()?
            .map(WarrantyRow::from))
    }

    /// Every code a device serial was given with at activation (a device moves to another code
    /// only after the first warranty was voided, so at most one of them is active).
    pub async fn find_by_device(
        &self,
        brand_id: &str,
        device_serial: &str,
    ) -> Result<Vec<(Uuid, u32)>, DbError> {
        let rows = self
            .inner
            .session
            .execute_unpaged(
                &self.inner.select_by_device,
                (brand_id, canonical_serial(device_serial)),
            )
            .await?
            .into_rows_result()?;
        rows.rows::<(Uuid, i64)>()?
            .map(|row| {
                row.map(|(batch, serial)| (batch, serial as u32))
                    .map_err(DbError::new)
            })
            .collect()
    }

    /// One page of a buyer's warranties, newest activation first, and the token of the next.
    pub async fn list_by_buyer(
        &self,
        brand_id: &str,
        buyer: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<(Uuid, u32)>, String), PageError> {
        let (rows, next) = scanloop_storage::paging::page::<(Uuid, i64)>(
            &self.inner.session,
            &self.inner.select_by_buyer,
            (brand_id, buyer),
            page_size,
            page_token,
        )
        .await?;
        Ok((
            rows.into_iter()
                .map(|(batch, serial)| (batch, serial as u32))
                .collect(),
            next,
        ))
    }
}

/// `warranty-<brand>-<batch uuid>-<serial>` → (batch, serial), for a stream of `brand_id` only:
/// an event whose stream names another brand than its envelope updates no row.
pub fn warranty_key(brand_id: &str, stream_id: &str) -> Option<(Uuid, u32)> {
    let rest = stream_id
        .strip_prefix("warranty-")?
        .strip_prefix(brand_id)?
        .strip_prefix('-')?;
    let (batch, serial) = rest.rsplit_once('-')?;
    Some((Uuid::parse_str(batch).ok()?, serial.parse().ok()?))
}

impl From<WarrantyRecord> for WarrantyRow {
    fn from(r: WarrantyRecord) -> Self {
        WarrantyRow {
            batch_id: r.batch_id,
            serial: r.serial as u32,
            sku: r.sku.unwrap_or_default(),
            product_model: r.product_model.unwrap_or_default(),
            status: r
                .status
                .and_then(|s| pb::WarrantyStatus::try_from(s).ok())
                .unwrap_or(pb::WarrantyStatus::Unspecified),
            buyer: r
                .buyer_kind
                .zip(r.buyer_value)
                .and_then(|(k, v)| buyer_from_key(&k, &v)),
            channel: pb::PurchaseChannel {
                kind: r.channel_kind.unwrap_or_default(),
                id: r.channel_id.unwrap_or_default(),
            },
            amount_fen: r.amount_fen.unwrap_or_default(),
            purchased_at: r.purchased_at,
            activated_at: r.activated_at,
            ends_at: r.ends_at,
            extended_months: r.extended_months.unwrap_or_default().max(0) as u32,
            referral_token: r.referral_token.unwrap_or_default(),
            device_serial: r.device_serial.unwrap_or_default(),
            voided_at: r.voided_at,
            void_reason: r.void_reason.unwrap_or_default(),
            refunded_fen: r.refunded_fen.unwrap_or_default(),
            version: r.version.unwrap_or_default().max(0) as u64,
        }
    }
}

/// The event types the read models are made of; the rest of the topic (scans, batches, device
/// claims) is passed by unread. Keep equal to the arms of `apply` that write.
pub const PROJECTED: &[&str] = &[
    crate::domain::events::WARRANTY_ACTIVATED,
    crate::domain::events::WARRANTY_EXTENDED,
    crate::domain::events::WARRANTY_VOIDED,
    crate::domain::events::PURCHASE_REFUNDED,
];

impl scanloop_eventstore::Projection for ReadModels {
    type Event = ActivationEvent;

    const TABLES: &'static [&'static str] =
        &["warranties", "warranties_by_buyer", "warranties_by_device"];

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(PROJECTED)
    }

    async fn apply(
        &self,
        envelope: &EventEnvelope,
        event: &ActivationEvent,
    ) -> Result<(), DbError> {
        let session = &self.inner.session;
        let brand = envelope.brand_id.as_str();
        let version = envelope.version as i64;
        let Some((batch_id, serial)) = warranty_key(brand, &envelope.stream_id) else {
            return Ok(()); // batch and device streams have no read model here
        };
        match event {
            ActivationEvent::WarrantyActivated(a) => {
                let buyer = a.buyer.as_ref().and_then(buyer_key);
                let (buyer_kind, buyer_value) = buyer
                    .as_deref()
                    .and_then(|k| k.split_once(':'))
                    .map_or((None, None), |(k, v)| (Some(k), Some(v)));
                let channel = a.channel.clone().unwrap_or_default();
                let activated_at = from_timestamp(a.activated_at.as_ref());
                session
                    .execute_unpaged(
                        &self.inner.upsert_activated,
                        ActivatedValues {
                            sku: &a.sku,
                            product_model: &a.product_model,
                            status: pb::WarrantyStatus::Active as i32,
                            buyer_kind,
                            buyer_value,
                            channel_kind: channel.kind,
                            channel_id: &channel.id,
                            amount_fen: a.purchase_amount.as_ref().map_or(0, |m| m.amount_fen),
                            purchased_at: from_timestamp(a.purchased_at.as_ref()),
                            activated_at,
                            ends_at: from_timestamp(a.warranty_ends_at.as_ref()),
                            referral_token: &a.referral_token,
                            device_serial: &a.device_serial,
                            version,
                            brand_id: brand,
                            batch_id,
                            serial: i64::from(serial),
                        },
                    )
                    .await?;
                if let (Some(buyer), Some(activated_at)) = (buyer, activated_at) {
                    session
                        .execute_unpaged(
                            &self.inner.insert_by_buyer,
                            (brand, buyer, activated_at, batch_id, i64::from(serial)),
                        )
                        .await?;
                }
                if !a.device_serial.is_empty() {
                    // One row per (device, code): a later code never overwrites an earlier one.
                    session
                        .execute_unpaged(
                            &self.inner.insert_by_device,
                            (
                                brand,
                                canonical_serial(&a.device_serial),
                                batch_id,
                                i64::from(serial),
                                activated_at,
                            ),
                        )
                        .await?;
                }
            }
            ActivationEvent::WarrantyExtended(e) => {
                session
                    .execute_unpaged(
                        &self.inner.update_extended,
                        (
                            from_timestamp(e.warranty_ends_at.as_ref()),
                            e.extended_months_total as i32,
                            version,
                            brand,
                            batch_id,
                            i64::from(serial),
                        ),
                    )
                    .await?;
            }
            ActivationEvent::WarrantyVoided(v) => {
                session
                    .execute_unpaged(
                        &self.inner.update_voided,
                        (
                            pb::WarrantyStatus::Voided as i32,
                            from_timestamp(v.voided_at.as_ref()),
                            v.reason.as_str(),
                            version,
                            brand,
                            batch_id,
                            i64::from(serial),
                        ),
                    )
                    .await?;
            }
            ActivationEvent::PurchaseRefunded(r) => {
                session
                    .execute_unpaged(
                        &self.inner.update_refunded,
                        (
                            r.refunded_total.as_ref().map_or(0, |m| m.amount_fen),
                            version,
                            brand,
                            batch_id,
                            i64::from(serial),
                        ),
                    )
                    .await?;
            }
            ActivationEvent::BatchIssued(_)
            | ActivationEvent::CodeScanned(_)
            | ActivationEvent::SuspiciousScan(_)
            | ActivationEvent::DeviceClaimed(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    scanloop_eventstore::projection_checks! {
        events: ActivationEvent,
        projected: PROJECTED,
        read_models: ReadModels,
        // Every file of the projection: its statements may be spread over them.
        sources: [include_str!("projections.rs")],
    }

    #[test]
    fn warranty_stream_ids_parse_back_for_their_own_brand_only() {
        let batch = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let stream = crate::domain::warranty::stream_id("acme-cn", batch, 77);
        assert_eq!(
            stream,
            "warranty-acme-cn-01234567-89ab-cdef-0123-456789abcdef-77"
        );
        assert_eq!(warranty_key("acme-cn", &stream), Some((batch, 77)));
        assert_eq!(warranty_key("acme", &stream), None);
        assert_eq!(warranty_key("acme-c", &stream), None);
        assert_eq!(
            warranty_key("acme-cn", &format!("batch-acme-cn-{batch}")),
            None
        );
        assert_eq!(warranty_key("acme-cn", "device-acme-cn-SN-1"), None);
    }

    #[test]
    fn buyer_keys_name_the_stored_kind() {
        let hash = StoredIdentity {
            kind: Some(Kind::PhoneHash("ab".into())),
        };
        assert_eq!(buyer_key(&hash).as_deref(), Some("phone_hash:ab"));
        assert_eq!(buyer_from_key("phone_hash", "ab"), Some(hash));
    }
}

//! Scanloop's protobuf contracts: the gRPC APIs of the four services and the events they publish.
//!
//! One module per proto package (`scanloop.<service>.v1`), mirroring `proto/`. Event consumers
//! depend on these messages, so they are versioned like an API: fields are only ever added.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod scanloop {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("scanloop.common.v1");
        }
    }
    pub mod activation {
        pub mod v1 {
            tonic::include_proto!("scanloop.activation.v1");
        }
    }
    pub mod membership {
        pub mod v1 {
            tonic::include_proto!("scanloop.membership.v1");
        }
    }
    pub mod referral {
        pub mod v1 {
            tonic::include_proto!("scanloop.referral.v1");
        }
    }
    pub mod payouts {
        pub mod v1 {
            tonic::include_proto!("scanloop.payouts.v1");
        }
    }
}

pub use scanloop::{activation, common, membership, payouts, referral};

/// Encoded `FileDescriptorSet` of every Scanloop proto (imports and comments included), for gRPC
/// server reflection. The same bytes are committed as [`SHIPPED_DESCRIPTOR_SET`] for consumers.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("scanloop_descriptor");

/// Where the descriptor set is shipped for event consumers, relative to the repository root (and
/// in the image at `/usr/share/scanloop/scanloop.binpb`): one file from which any protobuf
/// runtime decodes every envelope and event without `protoc`. A test keeps it equal to
/// [`FILE_DESCRIPTOR_SET`].
pub const SHIPPED_DESCRIPTOR_SET: &str = "proto/scanloop.binpb";

/// A request scoped to one brand: every RPC's request message with a `brand_id` field.
pub trait BrandScoped {
    fn brand_id(&self) -> &str;
}

/// A command: a brand-scoped request with an idempotency key, bound to the one RPC it is the
/// request of (every RPC's request message with a `request_id` field as well).
pub trait Command: BrandScoped {
    /// The RPC's full name, `package.Service/Method`: with the request as sent, what a request
    /// id stands for.
    const KIND: &'static str;
    fn request_id(&self) -> &str;
}

include!(concat!(env!("OUT_DIR"), "/requests.rs"));

/// The fully qualified protobuf name of a message type, used as the envelope's `event_type`.
pub fn full_name<M: prost::Name>() -> String {
    M::full_name()
}

#[cfg(test)]
mod shipped_descriptor_set {
    use std::path::PathBuf;

    const UPDATE: &str = "SCANLOOP_UPDATE_DESCRIPTOR_SET";

    fn path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(super::SHIPPED_DESCRIPTOR_SET)
    }

    /// Consumers read the committed file, so a proto change without it is caught here rather
    /// than by a consumer decoding with stale descriptors.
    #[test]
    fn shipped_descriptor_set_is_what_the_protos_build() {
        let path = path();
        if std::env::var_os(UPDATE).is_some() {
            std::fs::write(&path, super::FILE_DESCRIPTOR_SET).unwrap();
        }
        let shipped = std::fs::read(&path).unwrap_or_default();
        assert!(
            shipped == super::FILE_DESCRIPTOR_SET,
            "{} differs from what proto/ builds; regenerate it with \
             `{UPDATE}=1 cargo test -p scanloop-proto shipped_descriptor_set` and commit it",
            path.display()
        );
    }

    /// The set is self-contained (imports included) and carries the comments consumers read.
    #[test]
    fn shipped_descriptor_set_has_imports_and_comments() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        assert!(
            names.contains(&"google/protobuf/timestamp.proto"),
            "{names:?}"
        );
        assert!(
            names.contains(&"scanloop/common/v1/envelope.proto"),
            "{names:?}"
        );
        let envelope = set
            .file
            .iter()
            .find(|f| f.name() == "scanloop/common/v1/envelope.proto")
            .unwrap();
        let comments = envelope
            .source_code_info
            .as_ref()
            .map(|info| {
                info.location
                    .iter()
                    .filter(|l| l.leading_comments.is_some())
                    .count()
            })
            .unwrap_or(0);
        assert!(comments > 10, "{comments} commented elements");
    }
}

/// Conversions between `google.protobuf.Timestamp` and `chrono`.
pub mod time {
    use chrono::{DateTime, Utc};

    pub fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }
    }

    /// None for a missing or out-of-range timestamp.
    pub fn from_timestamp(at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
        let at = at?;
        DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip() {
            let now = Utc::now();
            assert_eq!(from_timestamp(Some(&to_timestamp(now))), Some(now));
            assert_eq!(from_timestamp(None), None);
            let bad = prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            };
            assert_eq!(from_timestamp(Some(&bad)), None);
        }
    }
}

/// Regions are administrative division codes (GB/T 2260): six digits, e.g. "440300" (Shenzhen);
/// the first two digits name the province.
pub mod region {
    pub fn is_division_code(region: &str) -> bool {
        region.len() == 6 && region.chars().all(|c| c.is_ascii_digit())
    }

    /// The province part of a division code.
    pub fn province(region: &str) -> Option<&str> {
        is_division_code(region).then(|| &region[..2])
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn codes() {
            assert!(super::is_division_code("440300"));
            assert!(!super::is_division_code("44030"));
            assert!(!super::is_division_code("44030a"));
            assert_eq!(super::province("110000"), Some("11"));
        }
    }
}

/// A stored identity shown back to a caller (the safe direction: a stored identity never holds a
/// phone number, so neither does the result). There is deliberately no conversion the other
/// way: a caller's identity becomes a stored one only through `scanloop_pii`'s keyed hashing.
impl From<common::v1::StoredIdentity> for common::v1::BuyerIdentity {
    fn from(stored: common::v1::StoredIdentity) -> Self {
        use common::v1::buyer_identity::Kind;
        use common::v1::stored_identity::Kind as Stored;
        Self {
            kind: stored.kind.map(|kind| match kind {
                Stored::PhoneHash(hash) => Kind::PhoneHash(hash),
                Stored::WechatUnionid(id) => Kind::WechatUnionid(id),
                Stored::DeviceSerial(serial) => Kind::DeviceSerial(serial),
            }),
        }
    }
}

#[cfg(test)]
mod request_traits {
    use super::{BrandScoped, Command};
    use crate::{activation, payouts, referral};

    /// The kind is what a stored request id is bound to: it must not change for an RPC.
    #[test]
    fn a_commands_kind_is_its_rpcs_full_name() {
        assert_eq!(
            <activation::v1::ActivateWarrantyRequest as Command>::KIND,
            "scanloop.activation.v1.ActivationService/ActivateWarranty"
        );
        assert_eq!(
            <payouts::v1::RunSettlementRequest as Command>::KIND,
            "scanloop.payouts.v1.PayoutsService/RunSettlement"
        );
        let request = referral::v1::CreateLinkRequest {
            brand_id: "acme".into(),
            request_id: "r-1".into(),
            ..Default::default()
        };
        assert_eq!((request.brand_id(), request.request_id()), ("acme", "r-1"));
    }
}

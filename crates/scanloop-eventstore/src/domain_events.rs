//! `domain_events!`: declares a service's event enum over its protobuf messages, with the
//! `DomainEvent` impl (type names, schema versions, encoding, decoding with upcasters) written
//! once.
//!
//! Schema versions: an event type is at version 1 unless declared `@ v N, upcast path`. Events are
//! written at their type's current version. Decoding honours the stored version: the current
//! version decodes as is; an older one goes through the upcaster
//! (`fn(from_version: u32, payload: &[u8]) -> Result<pb::Message, String>`), which reads the old
//! shape and returns the current message; a newer one than this build knows is an error (never
//! guessed at), so an old consumer dead-letters it instead of misreading it.

/// ```ignore
/// use scanloop_proto::membership::v1 as pb; // the macro names messages as `pb::<Variant>`
/// scanloop_eventstore::domain_events!(MembershipEvent {
///     MemberRegistered => "scanloop.membership.v1.MemberRegistered",
///     PointsEarned => "scanloop.membership.v1.PointsEarned" @ v 2, upcast upcast::points_earned,
/// });
/// ```
#[macro_export]
macro_rules! domain_events {
    ($enum:ident {
        $($variant:ident => $name:literal $(@ v $version:literal, upcast $upcast:path)?),* $(,)?
    }) => {
        #[derive(Debug, Clone, PartialEq)]
        pub enum $enum {
            $($variant(pb::$variant),)*
        }

        impl $crate::DomainEvent for $enum {
            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }

            fn schema_version(&self) -> u32 {
                match self {
                    $(Self::$variant(_) => $crate::__schema_version!($($version)?),)*
                }
            }

            fn encode(&self) -> Vec<u8> {
                match self {
                    $(Self::$variant(e) => ::prost::Message::encode_to_vec(e),)*
                }
            }

            fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, String> {
                match event_type {
                    $($name => {
                        let current: u32 = $crate::__schema_version!($($version)?);
                        // 0: written before versions were recorded, i.e. version 1.
                        let stored = schema_version.max(1);
                        if stored > current {
                            Err(format!(
                                "{event_type} has schema version {stored}, this build reads up \
                                 to {current}: upgrade this consumer"
                            ))
                        } else if stored == current {
                            <pb::$variant as ::prost::Message>::decode(payload)
                                .map(Self::$variant)
                                .map_err(|e| format!("{event_type}: {e}"))
                        } else {
                            $crate::__upcast!(event_type, stored, payload $(, $upcast)?)
                                .map(Self::$variant)
                        }
                    })*
                    other => Err(format!("unknown event type {other}")),
                }
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __schema_version {
    () => {
        1
    };
    ($version:literal) => {
        $version
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __upcast {
    ($event_type:expr, $stored:expr, $payload:expr) => {
        Err(format!(
            "{}: no upcaster from schema version {}",
            $event_type, $stored
        ))
    };
    ($event_type:expr, $stored:expr, $payload:expr, $upcast:path) => {
        $upcast($stored, $payload).map_err(|e| format!("{} v{}: {e}", $event_type, $stored))
    };
}

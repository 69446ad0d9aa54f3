//! `domain_events!`: declares a service's event enum over its protobuf messages, with the
//! `DomainEvent` impl (type names, encoding, decoding) written once.

/// ```ignore
/// use scanloop_proto::activation::v1 as pb; // the macro names messages as `pb::<Variant>`
/// scanloop_eventstore::domain_events!(ActivationEvent {
///     BatchIssued => "scanloop.activation.v1.BatchIssued",
/// });
/// ```
#[macro_export]
macro_rules! domain_events {
    ($enum:ident { $($variant:ident => $name:literal),* $(,)? }) => {
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

            fn encode(&self) -> Vec<u8> {
                match self {
                    $(Self::$variant(e) => ::prost::Message::encode_to_vec(e),)*
                }
            }

            fn decode(event_type: &str, _schema_version: u32, payload: &[u8]) -> Result<Self, String> {
                match event_type {
                    $($name => <pb::$variant as ::prost::Message>::decode(payload)
                        .map(Self::$variant)
                        .map_err(|e| format!("{event_type}: {e}")),)*
                    other => Err(format!("unknown event type {other}")),
                }
            }
        }
    };
}

//! Kafka for Scanloop.
//!
//! - [`topics`]: topic names (`scanloop.<service>.events.v1`, `<topic>.dlq`) and creating them
//!   with the settings events need (kept forever).
//! - [`headers`]: the envelope mirrored in record headers, W3C trace context included.
//! - [`producer`]: the idempotent producer (acks=all) that publishes a stream's events in order.
//! - [`consumer`]: the runner that hands each event to a handler exactly once per
//!   (stream, version), commits offsets only after success, and dead-letters poison messages.
//! - [`expiring_map`]: a map whose entries expire when not written for a while, for what a
//!   process remembers about the streams it worked on lately.

pub mod consumer;
pub mod dead_letters;
pub mod expiring_map;
pub mod headers;
pub mod history;
pub mod producer;
pub mod topics;

pub use consumer::{ConsumerOptions, ConsumerRunner, ConsumerStats, EventHandler, HandlerError};
pub use dead_letters::DeadLetters;
pub use expiring_map::ExpiringMap;
pub use producer::{EventProducer, PublishError};
pub use scanloop_proto::common::v1::{DeadLetter, EventEnvelope};

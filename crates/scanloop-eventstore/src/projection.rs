//! Read-model projections as consumers: decode each event of a service's topic into its domain
//! event and apply it. An undecodable event, a statement the database refuses or a type mismatch
//! is permanent (dead-lettered); any other database fault is transient (retried).

use std::future::Future;

use scanloop_bus::{EventEnvelope, EventHandler, HandlerError};
use scanloop_storage::DbError;

use crate::DomainEvent;

/// Applies one event to a service's read models. Must be idempotent: replays and redeliveries
/// apply an event again.
pub trait Projection: Send + Sync + 'static {
    type Event: DomainEvent;

    /// The read-model tables `apply` writes, all of them derived from the topic alone: a replay
    /// of the topic into a fresh keyspace must rebuild them row for row (each service tests the
    /// list against its sources with [`undeclared_tables`]).
    const TABLES: &'static [&'static str];
    fn apply(
        &self,
        envelope: &EventEnvelope,
        event: &Self::Event,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// The event types `apply` does something with, when not all (see
    /// [`EventHandler::event_types`]): the others are passed by unread.
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// True when `apply` changes nothing for an event it applied before, however late it comes
    /// (rows keyed by the event, or written at their stream's version, counters counted once):
    /// the runner then keeps no checkpoint for it (see
    /// [`EventHandler::idempotent_by_construction`]).
    fn idempotent_by_construction(&self) -> bool {
        false
    }
}

/// The names in `declared` that are not event types of `E`: a misspelt name in a projection's
/// [`Projection::event_types`] would pass its events by unread, so each service tests its list.
pub fn unknown_event_types<E: DomainEvent>(declared: &[&'static str]) -> Vec<&'static str> {
    declared
        .iter()
        .copied()
        // An empty payload is a valid (default) message of every known type.
        .filter(|name| E::decode(name, 0, &[]).is_err())
        .collect()
}

/// How `P`'s declared [`Projection::TABLES`] differ from the tables its `sources` write (see
/// [`tables_written_in`]); empty when they agree. Each service tests its projection with it,
/// given the text of every file the projection's statements are in.
pub fn undeclared_tables<P: Projection>(sources: &[&str]) -> String {
    let written: std::collections::BTreeSet<&str> = sources
        .iter()
        .flat_map(|source| tables_written_in(source))
        .collect();
    let declared: std::collections::BTreeSet<&str> = P::TABLES.iter().copied().collect();
    let mut problems = Vec::new();
    for table in written.difference(&declared) {
        problems.push(format!("{table} is written but not declared"));
    }
    for table in declared.difference(&written) {
        problems.push(format!("{table} is declared but never written"));
    }
    problems.join("; ")
}

/// The tables a CQL text in `source` writes: `INSERT INTO`, `UPDATE` or `DELETE FROM` followed by
/// `{ks}.` or `{keyspace}.` (how statements name the keyspace they are prepared for).
pub fn tables_written_in(source: &str) -> std::collections::BTreeSet<&str> {
    let mut tables = std::collections::BTreeSet::new();
    for verb in ["INSERT INTO ", "UPDATE ", "DELETE FROM "] {
        for keyspace in ["{ks}.", "{keyspace}."] {
            let lead = format!("{verb}{keyspace}");
            for (at, _) in source.match_indices(&lead) {
                let rest = &source[at + lead.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                tables.insert(&rest[..end]);
            }
        }
    }
    tables
}

/// Runs a [`Projection`] as an [`EventHandler`] for the consumer runner.
pub struct Projector<P>(pub P);

impl<P: Projection> EventHandler for Projector<P> {
    async fn handle(&self, envelope: &EventEnvelope) -> Result<(), HandlerError> {
        let event = P::Event::decode(
            &envelope.event_type,
            envelope.schema_version,
            &envelope.payload,
        )
        .map_err(HandlerError::Poison)?;
        self.0
            .apply(envelope, &event)
            .await
            // A refused statement or a type mismatch fails the same way every time.
            .map_err(|e| {
                if e.is_transient() {
                    HandlerError::Transient(e.into())
                } else {
                    HandlerError::Poison(e.to_string())
                }
            })
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        self.0.event_types()
    }

    fn idempotent_by_construction(&self, _event_type: &str) -> bool {
        self.0.idempotent_by_construction()
    }
}

/// The two checks every projection's test module makes: its `PROJECTED` event types are its
/// service's, and its `TABLES` are exactly the tables its source files write (all of them, when
/// the projection is spread over several).
///
/// ```ignore
/// scanloop_eventstore::projection_checks! {
///     events: ActivationEvent,
///     projected: PROJECTED,
///     read_models: ReadModels,
///     sources: [include_str!("projections.rs")],
/// }
/// ```
#[macro_export]
macro_rules! projection_checks {
    (
        events: $event:ty,
        projected: $projected:expr,
        read_models: $read_models:ty,
        sources: [$($source:expr),+ $(,)?] $(,)?
    ) => {
        #[test]
        fn the_declared_event_types_are_this_services_types() {
            let unknown = $crate::projection::unknown_event_types::<$event>($projected);
            assert!(unknown.is_empty(), "not event types of this service: {unknown:?}");
        }

        #[test]
        fn the_declared_tables_are_the_tables_this_projection_writes() {
            let mismatch = $crate::projection::undeclared_tables::<$read_models>(&[$($source),+]);
            assert!(mismatch.is_empty(), "{mismatch}");
        }
    };
}

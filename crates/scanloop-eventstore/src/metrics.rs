//! The event store's instruments (exported over OTLP when telemetry export is on).

use std::sync::LazyLock;

use opentelemetry::metrics::{Counter, Histogram};

/// Seconds per conditional append, by outcome (`ok`, `conflict`, `error`).
pub(crate) static APPEND_DURATION: LazyLock<Histogram<f64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .f64_histogram("scanloop.eventstore.append.duration")
        .with_unit("s")
        .with_description("conditional append to an event stream")
        .build()
});

/// Seconds from an event's recording to the broker's acknowledgement of its publication.
pub(crate) static PUBLISH_LAG: LazyLock<Histogram<f64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .f64_histogram("scanloop.outbox.publish.lag")
        .with_unit("s")
        .with_description("event recorded → acknowledged by Kafka")
        .build()
});

/// Appends stored but left to the sweeper because publishing failed.
pub(crate) static DEFERRED: LazyLock<Counter<u64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .u64_counter("scanloop.outbox.deferred")
        .with_description("appends whose publication was left to the sweeper")
        .build()
});

/// Streams the sweeper published for writers that did not.
pub(crate) static SWEPT: LazyLock<Counter<u64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .u64_counter("scanloop.outbox.swept")
        .with_description("streams published by the sweeper")
        .build()
});

/// Things a sweep pass could not do and left for the next pass, by `what`: `stream` (its
/// publication failed), `bucket` (its markers could not be read), `cursor`.
pub(crate) static SWEEP_FAILURES: LazyLock<Counter<u64>> = LazyLock::new(|| {
    scanloop_telemetry::meter()
        .u64_counter("scanloop.outbox.sweep_failures")
        .with_description("streams, buckets or cursors a sweep pass could not handle")
        .build()
});

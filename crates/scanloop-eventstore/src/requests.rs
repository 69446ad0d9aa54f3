//! The request ids a stream remembers: one command per idempotency key.
//!
//! Every append that answers a command stores the command's [`RequestKey`] (request id and
//! fingerprint) with its events, atomically, in the same conditional batch. Loading a stream
//! rebuilds its [`RequestLog`] from those rows (and from the snapshot, for streams that keep
//! them), so the repository can tell, before deciding anything:
//! - a new request id: decide and append;
//! - the same id with the same fingerprint: a retry, answered with the first result and no effect;
//! - the same id with another fingerprint: refused, never a silent OK.
//!
//! Retention: a stream remembers a request id for [`RETENTION`] after its append, and at most the
//! [`MAX_REMEMBERED`] most recent ids. Older ids are forgotten (the events keep them, but the log
//! no longer consults them), which keeps snapshots bounded however long a stream lives.
//! Reactions to other services' events do not rely on this alone: their consumer checkpoints drop
//! redeliveries for good.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use prost::Message as _;

use crate::event::{RecordedEvent, RequestKey};

/// How long a request id is remembered per stream.
pub const RETENTION: Duration = Duration::days(7);
/// At most this many request ids are remembered per stream (the most recent ones).
pub const MAX_REMEMBERED: usize = 1_000;

/// A remembered command: its fingerprint and where its events are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub fingerprint: Vec<u8>,
    pub first_version: u64,
    pub last_version: u64,
    pub recorded_at: DateTime<Utc>,
}

/// What a stream knows about a request id before a command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestCheck<'a> {
    New,
    /// The same command was already appended: answer it again, do nothing.
    Repeat(&'a SeenRequest),
    /// The id was used for a different command: refuse.
    Reused,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLog {
    seen: BTreeMap<String, SeenRequest>,
}

impl RequestLog {
    /// Notes the command of a stored event (events arrive in version order).
    pub fn observe(&mut self, event: &RecordedEvent) {
        let Some(request) = &event.request else {
            return;
        };
        self.seen
            .entry(request.request_id.clone())
            .and_modify(|seen| seen.last_version = seen.last_version.max(event.version))
            .or_insert_with(|| SeenRequest {
                fingerprint: request.fingerprint.clone(),
                first_version: event.version,
                last_version: event.version,
                recorded_at: event.recorded_at,
            });
    }

    pub fn check(&self, request: &RequestKey) -> RequestCheck<'_> {
        match self.seen.get(&request.request_id) {
            None => RequestCheck::New,
            Some(seen) if seen.fingerprint == request.fingerprint => RequestCheck::Repeat(seen),
            Some(_) => RequestCheck::Reused,
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets ids older than [`RETENTION`] at `now`, then all but the [`MAX_REMEMBERED`] most
    /// recent.
    pub fn retain_recent(&mut self, now: DateTime<Utc>) {
        let horizon = now - RETENTION;
        self.seen.retain(|_, seen| seen.recorded_at >= horizon);
        if self.seen.len() > MAX_REMEMBERED {
            let mut by_version: Vec<u64> = self.seen.values().map(|s| s.last_version).collect();
            by_version.sort_unstable();
            let cutoff = by_version[by_version.len() - MAX_REMEMBERED];
            self.seen.retain(|_, seen| seen.last_version >= cutoff);
        }
    }

    /// The log's stored form (kept beside a snapshot's state).
    pub fn encode(&self) -> Vec<u8> {
        StoredLog {
            entries: self
                .seen
                .iter()
                .map(|(request_id, seen)| StoredEntry {
                    request_id: request_id.clone(),
                    fingerprint: seen.fingerprint.clone(),
                    first_version: seen.first_version,
                    last_version: seen.last_version,
                    recorded_at_millis: seen.recorded_at.timestamp_millis(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Reads a stored log; `None` when the bytes are not one (the caller then rebuilds).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let stored = StoredLog::decode(bytes).ok()?;
        let mut seen = BTreeMap::new();
        for entry in stored.entries {
            let recorded_at = DateTime::from_timestamp_millis(entry.recorded_at_millis)?;
            seen.insert(
                entry.request_id,
                SeenRequest {
                    fingerprint: entry.fingerprint,
                    first_version: entry.first_version,
                    last_version: entry.last_version,
                    recorded_at,
                },
            );
        }
        Some(Self { seen })
    }
}

/// Internal storage format of a [`RequestLog`] (a snapshot column, never published).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredLog {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<StoredEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredEntry {
    #[prost(string, tag = "1")]
    request_id: String,
    #[prost(bytes = "vec", tag = "2")]
    fingerprint: Vec<u8>,
    #[prost(uint64, tag = "3")]
    first_version: u64,
    #[prost(uint64, tag = "4")]
    last_version: u64,
    #[prost(int64, tag = "5")]
    recorded_at_millis: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AppendMeta, NewEvent};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn key(id: &str, fingerprint: u8) -> RequestKey {
        RequestKey {
            request_id: id.into(),
            fingerprint: vec![fingerprint; 32],
        }
    }

    fn event(version: u64, request: Option<RequestKey>, recorded_at: &str) -> RecordedEvent {
        let meta = AppendMeta {
            request,
            ..AppendMeta::default()
        };
        let new = NewEvent {
            event_type: "t".into(),
            schema_version: 1,
            payload: vec![],
            occurred_at: at(recorded_at),
        };
        RecordedEvent::new("s", version, &meta, new, at(recorded_at))
    }

    #[test]
    fn same_id_same_command_is_a_repeat_spanning_its_events_and_another_command_is_refused() {
        let mut log = RequestLog::default();
        log.observe(&event(1, Some(key("a", 1)), "2026-11-01T00:00:00Z"));
        log.observe(&event(2, Some(key("a", 1)), "2026-11-01T00:00:00Z"));
        log.observe(&event(3, None, "2026-11-01T00:00:01Z"));
        match log.check(&key("a", 1)) {
            RequestCheck::Repeat(seen) => {
                assert_eq!((seen.first_version, seen.last_version), (1, 2));
            }
            other => panic!("expected a repeat, got {other:?}"),
        }
        assert_eq!(log.check(&key("a", 2)), RequestCheck::Reused);
        assert_eq!(log.check(&key("b", 1)), RequestCheck::New);
    }

    #[test]
    fn ids_are_forgotten_after_the_retention() {
        let mut log = RequestLog::default();
        log.observe(&event(1, Some(key("old", 1)), "2026-11-01T00:00:00Z"));
        log.observe(&event(2, Some(key("new", 1)), "2026-11-07T00:00:00Z"));
        log.retain_recent(at("2026-11-08T00:00:01Z"));
        assert_eq!(log.check(&key("old", 2)), RequestCheck::New);
        assert!(matches!(log.check(&key("new", 1)), RequestCheck::Repeat(_)));
    }

    #[test]
    fn at_most_the_most_recent_ids_are_kept() {
        let mut log = RequestLog::default();
        for version in 1..=(MAX_REMEMBERED as u64 + 5) {
            let id = format!("r{version}");
            log.observe(&event(version, Some(key(&id, 1)), "2026-11-01T00:00:00Z"));
        }
        log.retain_recent(at("2026-11-01T00:00:00Z"));
        assert_eq!(log.len(), MAX_REMEMBERED);
        assert_eq!(log.check(&key("r5", 2)), RequestCheck::New);
        assert_eq!(log.check(&key("r6", 2)), RequestCheck::Reused);
    }

    #[test]
    fn the_stored_form_round_trips() {
        let mut log = RequestLog::default();
        log.observe(&event(4, Some(key("a", 7)), "2026-11-01T00:00:00.123Z"));
        assert_eq!(RequestLog::decode(&log.encode()), Some(log));
        assert_eq!(RequestLog::decode(&[0xff, 0xff]), None);
    }
}

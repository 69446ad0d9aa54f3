//! Support for the gRPC fuzz passes (`services/*/tests/fuzz.rs`): a seeded generator of hostile
//! field values, the tables a service writes (counted before and after each request), a wait for
//! the read-model projector to catch up, and a tally of outcomes.
//!
//! The generator is a plain seeded RNG rather than proptest: every case is sent to a live,
//! stateful service, so shrinking would replay requests against changed state; a fixed seed and
//! the case number reproduce a failure instead.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tonic::Code;

/// The environment variable that changes the seed (decimal or 0x-hex).
pub const SEED_VAR: &str = "SCANLOOP_FUZZ_SEED";
/// The environment variable that changes the number of generated requests.
pub const CASES_VAR: &str = "SCANLOOP_FUZZ_CASES";

/// The statuses a service may answer a hostile request with. Anything else — INTERNAL, UNKNOWN
/// (what a handler panic or a broken stream becomes), UNAVAILABLE with the devstack up,
/// CANCELLED — is a finding.
pub const EXPECTED: &[Code] = &[
    Code::Ok,
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::ResourceExhausted,
];

/// Reads `SCANLOOP_FUZZ_SEED` (or `default`).
pub fn seed(default: u64) -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(raw) => {
            let raw = raw.trim();
            let parsed = match raw.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => raw.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{SEED_VAR}={raw} is not a number"))
        }
        Err(_) => default,
    }
}

/// Reads `SCANLOOP_FUZZ_CASES` (or `default`).
pub fn cases(default: usize) -> usize {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|raw| raw.trim().parse().ok())
        .unwrap_or(default)
}

/// A seeded source of ordinary and hostile values.
pub struct Fuzz {
    rng: StdRng,
}

impl Fuzz {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        self.rng.random_range(low..=high)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A request id no case used before (from the seeded RNG, so a run reproduces).
    pub fn request_id(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    /// A v4-shaped UUID that names nothing.
    pub fn unknown_uuid(&mut self) -> String {
        self.request_id()
    }

    /// Lowercase letters and digits, `len` long.
    pub fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len())] as char)
            .collect()
    }

    /// Random characters from the whole Unicode range (controls included), `len` of them.
    pub fn any_chars(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| {
                loop {
                    if let Some(c) = char::from_u32(self.rng.random_range(0..=0x10_FFFF)) {
                        break c;
                    }
                }
            })
            .collect()
    }

    /// A string meant to break a text field: empty, blank, at and past common length limits,
    /// 100 KB, control characters, NUL, unicode (CJK, emoji, RTL, combining marks), look-alikes
    /// of valid values, injection-shaped text, random code points.
    pub fn nasty_string(&mut self) -> String {
        match self.below(18) {
            0 => String::new(),
            1 => " \t ".into(),
            2 => "x".repeat(*self.pick(&[63, 64, 65, 127, 128, 129, 256, 257, 512, 513])),
            3 => "界".repeat(*self.pick(&[21, 22, 64, 65, 129])),
            4 => "y".repeat(100 * 1024),
            5 => "\u{0}".into(),
            6 => format!("a\u{0}b\r\n\u{7}\u{1b}[31m{}", self.token(4)),
            7 => "🦀🧧👨‍👩‍👧‍👦".into(),
            8 => "\u{202e}evil\u{202c}".into(),
            9 => "e\u{301}\u{301}\u{301}\u{301}".into(),
            10 => "'; DROP TABLE events; --".into(),
            11 => "../../etc/passwd".into(),
            12 => "%00%ff%zz".into(),
            13 => format!("{}\u{FEFF}", self.token(8)),
            14 => "-1".into(),
            15 => "9".repeat(40),
            16 => {
                let len = self.below(40);
                self.any_chars(len)
            }
            _ => {
                let len = 1 + self.below(300);
                self.token(len)
            }
        }
    }

    /// A boundary or random `u32`.
    pub fn u32_edge(&mut self) -> u32 {
        match self.below(8) {
            0 => 0,
            1 => 1,
            2 => u32::MAX,
            3 => u32::MAX - 1,
            4 => i32::MAX as u32,
            5 => i32::MAX as u32 + 1,
            _ => self.rng.random(),
        }
    }

    /// A boundary or random `i64`.
    pub fn i64_edge(&mut self) -> i64 {
        match self.below(9) {
            0 => 0,
            1 => -1,
            2 => i64::MAX,
            3 => i64::MIN,
            4 => i64::MAX - 1,
            5 => i64::MIN + 1,
            6 => i64::from(i32::MAX) + 1,
            _ => self.rng.random(),
        }
    }

    /// An enum value, often not one of the `known` ones (`0..known`).
    pub fn enum_value(&mut self, known: i32) -> i32 {
        match self.below(7) {
            0 => -1,
            1 => known,
            2 => 999,
            3 => i32::MAX,
            4 => i32::MIN,
            _ => self.rng.random_range(0..known.max(1)),
        }
    }

    /// A timestamp that is missing, out of range or malformed.
    pub fn bad_timestamp(&mut self) -> Option<prost_types::Timestamp> {
        let now = unix_now();
        let (seconds, nanos) = match self.below(10) {
            0 => return None,
            1 => (i64::MAX, 0),
            2 => (i64::MIN, 0),
            3 => (now, 2_000_000_000),
            4 => (now, -1),
            5 => (now, i32::MAX),
            6 => (0, 0),
            7 => (-62_135_596_801, 0),         // before 0001-01-01
            8 => (253_402_300_800, 0),         // after 9999-12-31
            _ => (now + 10 * 365 * 86_400, 0), // the future
        };
        Some(prost_types::Timestamp { seconds, nanos })
    }

    /// A timestamp `seconds_ago` before now.
    pub fn ago(&mut self, seconds_ago: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: unix_now() - seconds_ago,
            nanos: self.rng.random_range(0..1_000_000_000),
        })
    }

    /// A string past tonic's default 4 MiB decoding limit.
    pub fn oversized(&mut self) -> String {
        "z".repeat(5 * 1024 * 1024)
    }

    /// A brand id that is malformed, or well-formed but not one the fixtures use.
    pub fn bad_brand(&mut self) -> String {
        match self.below(8) {
            0 => String::new(),
            1 => "ACME".into(),
            2 => "acme ".into(),
            3 => "a/b".into(),
            4 => "b".repeat(65),
            5 => "b".repeat(64),
            6 => "initech".into(),
            _ => self.nasty_string(),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `{value:?}` with every string literal longer than 200 characters shortened to its start and
/// its length, so a failing 100 KB request prints readably.
pub fn describe(value: &impl Debug) -> String {
    let full = format!("{value:?}");
    let mut out = String::with_capacity(full.len().min(4096));
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    literal.push(c);
                    if let Some(escaped) = chars.next() {
                        literal.push(escaped);
                    }
                }
                '"' => break,
                _ => literal.push(c),
            }
        }
        let count = literal.chars().count();
        if count > 200 {
            let start: String = literal.chars().take(40).collect();
            out.push_str(&format!("\"{start}\"…({count} chars)"));
        } else {
            out.push('"');
            out.push_str(&literal);
            out.push('"');
        }
    }
    out
}

/// The tables of one keyspace that a request may write, counted row by row.
pub struct WriteSurface {
    session: Arc<Session>,
    /// `SELECT count(*)` of each table, prepared once.
    count_rows: Vec<(&'static str, PreparedStatement)>,
    select_checkpoints: PreparedStatement,
    select_event_types: PreparedStatement,
    /// The projector's consumer group (its checkpoints say how far the read models are).
    projection_group: String,
    /// The event types it projects.
    projected: &'static [&'static str],
    /// Where the projector's progress is read, when not from its checkpoints.
    versioned_rows: Option<VersionedRows>,
}

/// How far a projector that keeps no checkpoints is (one whose events are idempotent by
/// construction): read-model rows that carry the version of the event that wrote them. Each
/// statement selects `(brand_id, key, version)`; `stream_of(brand, key)` names the stream, and
/// the highest version over all rows of a stream is how far the projector applied it.
pub struct VersionedRows {
    pub statements: Vec<String>,
    pub stream_of: fn(&str, &str) -> String,
}

/// Row counts of a [`WriteSurface`]'s tables, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub Vec<(&'static str, i64)>);

impl Counts {
    /// The tables whose counts differ, as `table: before → after`.
    pub fn changes(&self, after: &Counts) -> Vec<String> {
        self.0
            .iter()
            .zip(&after.0)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| format!("{}: {} → {}", a.0, a.1, b.1))
            .collect()
    }

    pub fn get(&self, table: &str) -> i64 {
        self.0
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    }
}

impl WriteSurface {
    /// The event store's tables (events, request id index, snapshots) plus `read_models`, which
    /// the projector `projection_group` writes from the events of the types `projected` (its
    /// declared types: it passes by the others and keeps no checkpoint for them).
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        read_models: &[&'static str],
        projection_group: &str,
        projected: &'static [&'static str],
    ) -> anyhow::Result<Self> {
        let mut count_rows = Vec::new();
        for table in ["events", "request_ids", "snapshots"]
            .iter()
            .chain(read_models)
        {
            let statement = session
                .prepare(format!("SELECT count(*) FROM {keyspace}.{table}"))
                .await?;
            count_rows.push((*table, statement));
        }
        let select_checkpoints = session
            .prepare(format!(
                "SELECT consumer, stream_id, version FROM {keyspace}.stream_checkpoints"
            ))
            .await?;
        let select_event_types = session
            .prepare(format!(
                "SELECT stream_id, version, event_type FROM {keyspace}.events"
            ))
            .await?;
        Ok(Self {
            session,
            count_rows,
            select_checkpoints,
            select_event_types,
            projection_group: projection_group.to_owned(),
            projected,
            versioned_rows: None,
        })
    }

    /// Reads the projector's progress from `rows` instead of its checkpoints.
    pub fn with_versioned_rows(self, rows: VersionedRows) -> Self {
        Self {
            versioned_rows: Some(rows),
            ..self
        }
    }

    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let counted = futures::future::try_join_all(self.count_rows.iter().map(
            |(table, statement)| async move {
                let rows = self
                    .session
                    .execute_unpaged(statement, ())
                    .await?
                    .into_rows_result()?;
                let (n,) = rows.single_row::<(i64,)>()?;
                Ok::<_, anyhow::Error>((*table, n))
            },
        ))
        .await?;
        Ok(Counts(counted))
    }

    /// Waits until the projector has applied every stored event it projects: each stream's
    /// checkpoint (at the last version the projector applied), or its versioned rows, have
    /// reached the stream's last event of a projected type. Returns the counts then, or an error after `timeout`.
    pub async fn settle(&self, timeout: Duration) -> anyhow::Result<Counts> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Progress first: a checkpoint moves only after its event's read-model writes (a
            // versioned row is the last of them), so counts read after it include them (and events stored since only add to the wait).
            let applied = self.applied_versions().await?;
            let behind = self.streams_behind(&applied).await?;
            let counts = self.counts().await?;
            if behind.is_empty() {
                return Ok(counts);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "projector {} has not applied the last projected events of {} streams \
                     within {timeout:?}, e.g. {:?}",
                    self.projection_group,
                    behind.len(),
                    behind.first()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The tables a request changed, from `counts` (settled, from before it), which it then
    /// updates to the settled state after the request:
    /// - a successful query is taken at its word, uncounted (a success may write; were a query
    ///   to write, the next rejection's check would see it);
    /// - a successful command may write, so the projector is waited for;
    /// - a rejection is counted at once, and the projector waited for only if it wrote.
    pub async fn changes_after(
        &self,
        counts: &mut Counts,
        answer: Answer,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let after = match answer {
            Answer::QueryOk => return Ok(Vec::new()),
            Answer::CommandOk => self.settle(timeout).await?,
            Answer::Rejected => self.counts().await?,
        };
        let changes = counts.changes(&after);
        *counts = match answer {
            Answer::Rejected if !changes.is_empty() => self.settle(timeout).await?,
            _ => after,
        };
        Ok(changes)
    }

    /// How far the projector applied each stream: its checkpoints, or its versioned rows.
    async fn applied_versions(&self) -> anyhow::Result<HashMap<String, i64>> {
        let Some(rows) = &self.versioned_rows else {
            return self.checkpoints().await;
        };
        let mut applied: HashMap<String, i64> = HashMap::new();
        for statement in &rows.statements {
            let mut pages = self
                .session
                .query_iter(statement.as_str(), ())
                .await?
                .rows_stream::<(String, String, Option<i64>)>()?;
            while let Some((brand, key, version)) = pages.try_next().await? {
                let last = applied.entry((rows.stream_of)(&brand, &key)).or_default();
                *last = (*last).max(version.unwrap_or(0));
            }
        }
        Ok(applied)
    }

    /// The projector's checkpoint of each stream.
    async fn checkpoints(&self) -> anyhow::Result<HashMap<String, i64>> {
        let rows = self
            .session
            .execute_unpaged(&self.select_checkpoints, ())
            .await?
            .into_rows_result()?;
        let mut applied = HashMap::new();
        for row in rows.rows::<(String, String, Option<i64>)>()? {
            let (consumer, stream_id, version) = row?;
            if consumer == self.projection_group {
                applied.insert(stream_id, version.unwrap_or(0));
            }
        }
        Ok(applied)
    }

    /// The streams (with their last projected version) whose last event of a projected type is
    /// beyond the projector's checkpoint.
    async fn streams_behind(
        &self,
        applied: &HashMap<String, i64>,
    ) -> anyhow::Result<Vec<(String, i64)>> {
        let mut last_projected: HashMap<String, i64> = HashMap::new();
        let mut pages = self
            .session
            .execute_iter(self.select_event_types.clone(), ())
            .await?
            .rows_stream::<(String, i64, String)>()?;
        while let Some((stream_id, version, event_type)) = pages.try_next().await? {
            if self.projected.contains(&event_type.as_str()) {
                let last = last_projected.entry(stream_id).or_default();
                *last = (*last).max(version);
            }
        }
        let mut behind: Vec<(String, i64)> = last_projected
            .into_iter()
            .filter(|(stream, last)| applied.get(stream).copied().unwrap_or(0) < *last)
            .collect();
        behind.sort();
        Ok(behind)
    }
}

/// How a request was answered, for [`WriteSurface::changes_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    QueryOk,
    CommandOk,
    Rejected,
}

impl Answer {
    pub fn of(code: Code, command: bool) -> Self {
        match (code, command) {
            (Code::Ok, true) => Answer::CommandOk,
            (Code::Ok, false) => Answer::QueryOk,
            _ => Answer::Rejected,
        }
    }
}

/// Outcomes by RPC and status, and the findings (each with what reproduces it).
pub struct Tally {
    seed: u64,
    pub by_status: BTreeMap<(&'static str, String), usize>,
    pub findings: Vec<String>,
    pub requests: usize,
    /// Wall time by phase (requests, counting, waiting for the projector), to keep CI time
    /// in view.
    pub time_in: BTreeMap<&'static str, Duration>,
}

impl Tally {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            by_status: BTreeMap::new(),
            findings: Vec::new(),
            requests: 0,
            time_in: BTreeMap::new(),
        }
    }

    /// Adds the time since `since` to `phase`.
    pub fn timed(&mut self, phase: &'static str, since: std::time::Instant) {
        *self.time_in.entry(phase).or_default() += since.elapsed();
    }

    pub fn count(&mut self, rpc: &'static str, code: Code) {
        self.requests += 1;
        *self
            .by_status
            .entry((rpc, format!("{code:?}")))
            .or_default() += 1;
    }

    /// Records a finding about case `case`, printing it at once (a run may go on to find more).
    pub fn finding(&mut self, case: usize, what: String) {
        let line = format!("case {case} ({SEED_VAR}={}): {what}", self.seed);
        eprintln!("FUZZ FINDING {line}");
        self.findings.push(line);
    }

    /// Prints the table of outcomes and fails with every finding, if any.
    pub fn finish(&self, service: &str) {
        println!(
            "{service} fuzz: {} requests, seed {} ({SEED_VAR} to change)",
            self.requests, self.seed
        );
        for ((rpc, code), n) in &self.by_status {
            println!("  {rpc:<18} {code:<20} {n}");
        }
        let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
        for ((_, code), n) in &self.by_status {
            *totals.entry(code.as_str()).or_default() += n;
        }
        println!("  totals: {totals:?}");
        println!("  time in: {:.1?}", self.time_in);
        assert!(
            self.findings.is_empty(),
            "{} findings (seed {}):\n{}",
            self.findings.len(),
            self.seed,
            self.findings.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_reproduces_its_values() {
        let draw = |seed| {
            let mut f = Fuzz::new(seed);
            (0..50)
                .map(|_| {
                    format!(
                        "{}|{}|{}",
                        f.nasty_string().len(),
                        f.i64_edge(),
                        f.request_id()
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn describe_shortens_long_strings_only() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct R {
            a: String,
            b: String,
            c: u32,
        }
        let r = R {
            a: "x".repeat(1000),
            b: "say \"hi\"".into(),
            c: 7,
        };
        assert_eq!(
            describe(&r),
            format!(
                "R {{ a: \"{}\"…(1000 chars), b: \"say \\\"hi\\\"\", c: 7 }}",
                "x".repeat(40)
            )
        );
    }

    #[test]
    fn counts_name_what_changed() {
        let before = Counts(vec![("events", 3), ("snapshots", 0)]);
        let after = Counts(vec![("events", 4), ("snapshots", 0)]);
        assert_eq!(before.changes(&after), vec!["events: 3 → 4".to_owned()]);
        assert!(before.changes(&before).is_empty());
        assert_eq!(after.get("events"), 4);
    }
}

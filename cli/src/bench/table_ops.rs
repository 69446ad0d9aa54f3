//! What a phase asked of Cassandra, by table: the node's own counts of local reads, range scans
//! and writes per table (its `system_views` metric tables), sampled before and after a phase.
//!
//! CPU per operation says how much the database worked; these counts say on what. A
//! conditional append, for instance, shows up as a read and a write of the stream's table plus
//! the Paxos state's reads and writes in `system.paxos`; a projection as writes to its read
//! model and to `stream_checkpoints`. The counts are the node's, so everything running
//! against it during the phase (the services, their consumers and timers) is included.

use std::collections::BTreeMap;
use std::sync::Arc;

use scylla::client::session::Session;

/// The metric tables read, and the letter each kind of request is printed with.
const KINDS: [(&str, &str); 3] = [
    ("r", "local_read_latency"),
    ("s", "local_scan_latency"),
    ("w", "local_write_latency"),
];

/// Rows of at most this share of a phase's operations are left out of the printout.
const NEGLIGIBLE_PER_OP: f64 = 0.05;

/// Cumulative request counts per (kind, keyspace.table).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TableOps(BTreeMap<(&'static str, String), u64>);

impl TableOps {
    /// The node's counts now, or `None` when it does not expose them (not Cassandra 4+).
    pub(crate) async fn sample(session: &Arc<Session>) -> Option<TableOps> {
        let mut counts = BTreeMap::new();
        for (kind, table) in KINDS {
            let rows = session
                .query_unpaged(
                    format!("SELECT keyspace_name, table_name, count FROM system_views.{table}"),
                    (),
                )
                .await
                .ok()?
                .into_rows_result()
                .ok()?;
            for row in rows.rows::<(String, String, i64)>().ok()? {
                let (keyspace, table, count) = row.ok()?;
                if count > 0 {
                    counts.insert((kind, format!("{keyspace}.{table}")), count as u64);
                }
            }
        }
        Some(TableOps(counts))
    }

    /// What happened between `earlier` and this.
    pub(crate) fn since(&self, earlier: &TableOps) -> TableOps {
        TableOps(
            self.0
                .iter()
                .filter_map(|(key, &after)| {
                    let before = earlier.0.get(key).copied().unwrap_or(0);
                    (after > before).then(|| (key.clone(), after - before))
                })
                .collect(),
        )
    }

    /// Both spans' counts together.
    pub(crate) fn plus(&self, other: &TableOps) -> TableOps {
        let mut sum = self.0.clone();
        for (key, count) in &other.0 {
            *sum.entry(key.clone()).or_insert(0) += count;
        }
        TableOps(sum)
    }

    /// "w bench_x.events 1.00, r system.paxos 1.00, …": the requests per operation, most
    /// frequent first, leaving out those under [`NEGLIGIBLE_PER_OP`]; then each kind's total.
    pub(crate) fn per_op(&self, ops: u64) -> String {
        if ops == 0 {
            return "-".into();
        }
        let per = |count: u64| count as f64 / ops as f64;
        let mut rows: Vec<_> = self
            .0
            .iter()
            .filter(|(_, count)| per(**count) >= NEGLIGIBLE_PER_OP)
            .collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let mut parts: Vec<String> = rows
            .iter()
            .map(|((kind, table), count)| format!("{kind} {table} {:.2}", per(**count)))
            .collect();
        let totals: Vec<String> = KINDS
            .iter()
            .map(|(kind, _)| {
                let total: u64 = self
                    .0
                    .iter()
                    .filter(|((k, _), _)| k == kind)
                    .map(|(_, count)| count)
                    .sum();
                format!("{kind} {:.2}", per(total))
            })
            .collect();
        parts.push(format!("total {}", totals.join(" ")));
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(rows: &[(&'static str, &str, u64)]) -> TableOps {
        TableOps(
            rows.iter()
                .map(|(kind, table, count)| ((*kind, (*table).to_owned()), *count))
                .collect(),
        )
    }

    #[test]
    fn a_phase_counts_what_grew_and_prints_it_per_operation_most_frequent_first() {
        let before = ops(&[("w", "ks.events", 100), ("r", "system.paxos", 50)]);
        let after = ops(&[
            ("w", "ks.events", 300),
            ("r", "system.paxos", 250),
            ("w", "system.paxos", 450),
            ("r", "ks.other", 3),
        ]);
        let phase = after.since(&before);
        assert_eq!(
            phase,
            ops(&[
                ("w", "ks.events", 200),
                ("r", "system.paxos", 200),
                ("w", "system.paxos", 450),
                ("r", "ks.other", 3),
            ])
        );
        assert_eq!(
            phase.per_op(200),
            "w system.paxos 2.25, r system.paxos 1.00, w ks.events 1.00, \
             total r 1.01 s 0.00 w 3.25"
        );
        assert_eq!(phase.per_op(0), "-");
    }
}

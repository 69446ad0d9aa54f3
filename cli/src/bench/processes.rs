//! The processes a bench watches: their CPU time and resident memory from /proc, pausing and
//! resuming the services, waiting for them to settle between phases, and Cassandra's request
//! counts by table around a phase.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::session::Session;

use super::table_ops::TableOps;

#[derive(Clone, Default)]
pub(crate) struct CpuUse {
    bench: f64,
    servers: Vec<Option<f64>>,
}

impl CpuUse {
    pub(crate) fn since(&self, before: &CpuUse) -> CpuUse {
        CpuUse {
            bench: self.bench - before.bench,
            servers: self
                .servers
                .iter()
                .zip(&before.servers)
                .map(|(after, before)| Some((*after)? - (*before)?))
                .collect(),
        }
    }

    /// This use times `factor` (a span's use stated for a longer or shorter span).
    pub(crate) fn scaled(&self, factor: f64) -> CpuUse {
        CpuUse {
            bench: self.bench * factor,
            servers: self.servers.iter().map(|s| s.map(|s| s * factor)).collect(),
        }
    }

    /// Both uses together (two spans of time).
    pub(crate) fn plus(&self, other: &CpuUse) -> CpuUse {
        CpuUse {
            bench: self.bench + other.bench,
            servers: self
                .servers
                .iter()
                .zip(&other.servers)
                .map(|(a, b)| Some((*a)? + (*b)?))
                .collect(),
        }
    }

    /// Cores busy on average over `secs` seconds, per process: "0.01 + 0.61 + … = 0.70".
    pub(crate) fn cores(&self, secs: f64) -> String {
        let of = |s: f64| format!("{:.2}", s / secs);
        let mut parts = vec![of(self.bench)];
        parts.extend(self.servers.iter().map(|s| s.map_or("?".into(), of)));
        format!("{} = {}", parts.join(" + "), of(self.total()))
    }

    /// CPU seconds of each server process, in column order (None: not measured).
    pub(crate) fn servers(&self) -> &[Option<f64>] {
        &self.servers
    }

    /// CPU seconds of every process measured.
    pub(crate) fn total(&self) -> f64 {
        self.bench + self.servers.iter().flatten().sum::<f64>()
    }

    pub(crate) fn per_op(&self, ops: u64) -> String {
        if ops == 0 {
            return "-".into();
        }
        let us = |s: f64| format!("{:.0}", s * 1e6 / ops as f64);
        let mut parts = vec![us(self.bench)];
        parts.extend(self.servers.iter().map(|s| s.map_or("?".into(), us)));
        let total = self.bench + self.servers.iter().flatten().sum::<f64>();
        format!("{} = {}", parts.join(" + "), us(total))
    }
}

/// Cores the servers may keep busy between phases and still count as quiet.
const QUIET_CORES: f64 = 0.2;
/// The longest a phase waits for quiet servers before it starts anyway.
const SETTLE_AT_MOST: Duration = Duration::from_secs(60);

/// The server processes whose CPU time is reported, in column order.
pub(crate) struct ServerPids {
    pids: Vec<(&'static str, Option<u32>)>,
    /// A session to Cassandra, to read its request counts by table around each phase.
    counts_from: Option<Arc<Session>>,
}

impl ServerPids {
    /// Cassandra and Kafka from the devstack's pid files, then each of `services` that has a
    /// pid.
    pub(crate) fn find(
        devstack_dir: Option<&std::path::Path>,
        services: &[(&'static str, Option<u32>)],
    ) -> Self {
        let dir = devstack_dir
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".devstack"));
        let pid = |name: &str| {
            std::fs::read_to_string(dir.join("run").join(format!("{name}.pid")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        let mut pids = vec![("cassandra", pid("cassandra")), ("kafka", pid("kafka"))];
        pids.extend(services.iter().filter(|(_, pid)| pid.is_some()));
        Self {
            pids,
            counts_from: None,
        }
    }

    /// Also reads Cassandra's request counts by table (through `session`) around each phase.
    pub(crate) fn counting_table_ops(self, session: Arc<Session>) -> Self {
        Self {
            counts_from: Some(session),
            ..self
        }
    }

    /// Cassandra's request counts by table now, when they are read at all.
    pub(crate) async fn table_ops(&self) -> Option<TableOps> {
        TableOps::sample(self.counts_from.as_ref()?).await
    }

    /// Cassandra's requests by table since `before` (a [`ServerPids::table_ops`] sample).
    pub(crate) async fn table_ops_since(&self, before: Option<TableOps>) -> Option<TableOps> {
        Some(self.table_ops().await?.since(&before?))
    }

    /// The same processes, for a task of its own.
    pub(crate) fn clone_probe(&self) -> ServerPids {
        ServerPids {
            pids: self.pids.clone(),
            counts_from: self.counts_from.clone(),
        }
    }

    /// Each process's resident set size in KiB (VmRSS), in column order.
    pub(crate) fn rss_kib(&self) -> Vec<Option<u64>> {
        self.pids
            .iter()
            .map(|(_, pid)| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", (*pid)?)).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .collect()
    }

    /// The processes' names, in column order.
    pub(crate) fn name_list(&self) -> Vec<&'static str> {
        self.pids.iter().map(|(name, _)| *name).collect()
    }

    pub(crate) fn names(&self) -> String {
        self.pids
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Waits until the servers are quiet (together under [`QUIET_CORES`] over a second, for at
    /// most [`SETTLE_AT_MOST`]), so that what an earlier phase left them to do (Cassandra
    /// compacting its writes, above all) is not billed to the next phase.
    pub(crate) async fn settle(&self, before: &str) {
        let started = Instant::now();
        loop {
            let earlier = self.sample();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let busy = self.sample().since(&earlier);
            let cores = busy.total() - busy.bench;
            if cores < QUIET_CORES || started.elapsed() >= SETTLE_AT_MOST {
                if started.elapsed() > Duration::from_secs(2) {
                    eprintln!(
                        "  waited {:.0} s before {before} for the servers to settle ({cores:.2} cores busy)",
                        started.elapsed().as_secs_f64()
                    );
                }
                return;
            }
        }
    }

    /// Sends `signal` ("STOP", "CONT") to the services (not to Cassandra or Kafka).
    pub(crate) fn signal_services(&self, signal: &str) -> anyhow::Result<()> {
        let services: Vec<Option<u32>> = self
            .pids
            .iter()
            .filter(|(name, _)| !matches!(*name, "cassandra" | "kafka"))
            .map(|(_, pid)| *pid)
            .collect();
        send_signal(&services, signal)
    }

    /// Whether any service's pid is known (to pause it, or read its CPU).
    pub(crate) fn has_services(&self) -> bool {
        self.pids.len() > 2
    }

    pub(crate) fn sample(&self) -> CpuUse {
        CpuUse {
            bench: cpu_seconds("self").unwrap_or(0.0),
            servers: self
                .pids
                .iter()
                .map(|(_, pid)| pid.and_then(|p| cpu_seconds(&p.to_string())))
                .collect(),
        }
    }
}

/// Sends `signal` ("STOP", "CONT") to each process of `pids`.
pub(crate) fn send_signal(pids: &[Option<u32>], signal: &str) -> anyhow::Result<()> {
    for pid in pids.iter().flatten() {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "cannot send SIG{signal} to process {pid}");
    }
    Ok(())
}

/// utime + stime of a process from /proc/<pid>/stat, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

//! The plain insert of a bench run, written for `scanloop loadgen --baseline` to print its
//! ratios against the same run's baseline.

use std::path::Path;

use super::harness::PhaseResult;

/// The plain insert of the same run, as `scanloop bench --baseline-out` wrote it.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
pub struct Baseline {
    pub insert_per_sec: f64,
    pub insert_cpu_us_per_op: f64,
    pub insert_p99_ms: f64,
}

impl Baseline {
    pub fn read(path: &Path) -> anyhow::Result<Baseline> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("reading the baseline {}: {error}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The plain insert's rate, CPU per operation and p99, written to `path`.
    pub fn write(path: &Path, insert: &PhaseResult) -> anyhow::Result<()> {
        let ops = insert.ops.max(1) as f64;
        let baseline = Baseline {
            insert_per_sec: insert.ops as f64 / insert.elapsed.as_secs_f64(),
            insert_cpu_us_per_op: insert.cpu.total() * 1e6 / ops,
            insert_p99_ms: insert.latency_us.value_at_quantile(0.99) as f64 / 1e3,
        };
        std::fs::write(path, serde_json::to_string_pretty(&baseline)?)?;
        Ok(())
    }
}

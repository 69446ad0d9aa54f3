//! What `scanloop bench` prints: the header, the phases side by side with their ratios to the
//! plain insert, Cassandra's requests by table, the single-writer experiment and the targets.

use chrono::Utc;

use super::args::Args;
use super::harness::PhaseResult;
use super::processes::ServerPids;
use super::storage::{
    APPEND, APPEND_AGAIN, APPEND_PUBLISH, ConsumerResult, PLAIN_INSERT, PLAIN_INSERT_AGAIN,
    SINGLE_WRITER, SINGLE_WRITER_PUBLISH,
};

pub(super) fn print_header(args: &Args, keyspace: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mode = if args.rate > 0.0 {
        format!(
            "open loop at {} ops/s (max {} in flight)",
            args.rate, args.concurrency
        )
    } else {
        format!("closed loop, concurrency {}", args.concurrency)
    };
    println!(
        "scanloop bench: {} | {cpu}, {cores} cores | {mode} | {} s per phase after {} s warm-up | \
         payload {} B | keyspace {keyspace}",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        args.duration_secs,
        args.warmup_secs,
        args.payload_bytes
    );
}

pub(super) fn print_results(
    results: &[PhaseResult],
    consumer: &ConsumerResult,
    servers: &ServerPids,
) {
    println!();
    println!(
        "{:<30} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6}   cpu µs/op: bench + {}",
        "phase",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        servers.names(),
    );
    for r in results {
        let ms = |q: f64| r.latency_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<30} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6}   {}",
            r.name,
            r.ops,
            r.ops as f64 / r.elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            r.latency_us.max() as f64 / 1000.0,
            r.errors,
            r.cpu.per_op(r.ops),
        );
    }
    println!(
        "{:<30} {:>8} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>6}   {}",
        "consumer (dedup, no-op)",
        consumer.events,
        consumer.events as f64 / consumer.elapsed.as_secs_f64(),
        "-",
        "-",
        "-",
        "-",
        "-",
        consumer.cpu.per_op(consumer.events),
    );
    let rate = |r: &PhaseResult| r.ops as f64 / r.elapsed.as_secs_f64();
    let p99 = |r: &PhaseResult| r.latency_us.value_at_quantile(0.99) as f64;
    let by_name = |name: &str| results.iter().find(|r| r.name == name);
    if let (Some(plain), Some(activate)) =
        (by_name(PLAIN_INSERT), by_name(super::activation::ACTIVATE))
    {
        println!(
            "ActivateWarranty end to end vs plain insert: {}x the rate, {}x the p99",
            ratio(rate(activate), rate(plain)),
            ratio(p99(activate), p99(plain)),
        );
    }
    if let (Some(plain), Some(attribute)) =
        (by_name(PLAIN_INSERT), by_name(super::referral::ATTRIBUTE))
    {
        println!(
            "referral attribution (activation recorded → ReferralAttributed recorded) vs plain \
             insert: {}x the rate, {}x the p99",
            ratio(rate(attribute), rate(plain)),
            ratio(p99(attribute), p99(plain)),
        );
    }
    for note in results.iter().filter_map(|r| r.note.as_deref()) {
        println!("{note}");
    }
    print_table_ops(results, consumer);
    if let (Some(plain), Some(append), Some(outbox)) = (
        by_name(PLAIN_INSERT),
        bare_append(results),
        by_name(APPEND_PUBLISH),
    ) {
        let append = &append;
        println!();
        println!(
            "append vs plain insert: {}x the rate, {}x the p99; append+publish vs plain \
             insert: {}x the rate, {}x the p99",
            ratio(rate(append), rate(plain)),
            ratio(p99(append), p99(plain)),
            ratio(rate(outbox), rate(plain)),
            ratio(p99(outbox), p99(plain)),
        );
        print_targets(results, append, outbox);
        print_single_writer(results, append, outbox);
    }
}

/// What each phase asked of Cassandra per operation, by table.
pub(super) fn print_table_ops(results: &[PhaseResult], consumer: &ConsumerResult) {
    let mut counted: Vec<_> = results
        .iter()
        .filter_map(|r| Some((r.name, r.ops, r.table_ops.as_ref()?)))
        .collect();
    if let Some(ops) = &consumer.table_ops {
        counted.push(("consumer (dedup, no-op)", consumer.events, ops));
    }
    if counted.is_empty() {
        return;
    }
    println!();
    println!(
        "Cassandra's requests per operation by table (its own counts: r local read, s range \
         scan, w write; everything the node served during the phase):"
    );
    for (name, ops, table_ops) in counted {
        println!("  {name}: {}", table_ops.per_op(ops));
    }
}

/// The single-writer experiment against the plain insert (the limit) and the conditional
/// append and outbox of the same run.
pub(super) fn print_single_writer(
    results: &[PhaseResult],
    append: &PhaseResult,
    outbox: &PhaseResult,
) {
    let rate = |r: &PhaseResult| r.ops as f64 / r.elapsed.as_secs_f64();
    let cpu = |r: &PhaseResult| r.cpu.total() / r.ops.max(1) as f64;
    let p99 = |r: &PhaseResult| r.latency_us.value_at_quantile(0.99) as f64;
    let by_name = |name: &str| results.iter().find(|r| r.name == name);
    let (Some(plain), Some(single), Some(published)) = (
        by_name(PLAIN_INSERT_AGAIN),
        by_name(SINGLE_WRITER),
        by_name(SINGLE_WRITER_PUBLISH),
    ) else {
        return;
    };
    println!();
    println!(
        "experiment (not the event store's path): appends without a Paxos round, leased single writers"
    );
    for (r, against) in [(single, append), (published, outbox)] {
        println!(
            "  {:<30} vs plain insert, again: {}x the rate, {}x the CPU, {}x the p99; vs {}: {}x the \
             rate, {}x the CPU",
            r.name,
            ratio(rate(r), rate(plain)),
            ratio(cpu(r), cpu(plain)),
            ratio(p99(r), p99(plain)),
            against.name,
            ratio(rate(r), rate(against)),
            ratio(cpu(r), cpu(against)),
        );
    }
}

/// Both bare-append phases taken together (ops, time, CPU and latencies summed), or the one
/// that ran.
pub(super) fn bare_append(results: &[PhaseResult]) -> Option<PhaseResult> {
    let mut phases = results
        .iter()
        .filter(|r| r.name == APPEND || r.name == APPEND_AGAIN);
    let first = phases.next()?;
    let mut both = PhaseResult {
        name: "event-store append, both phases",
        ops: first.ops,
        errors: first.errors,
        elapsed: first.elapsed,
        latency_us: first.latency_us.clone(),
        cpu: first.cpu.clone(),
        note: None,
        read_model_lag_us: None,
        table_ops: first.table_ops.clone(),
    };
    for other in phases {
        both.ops += other.ops;
        both.errors += other.errors;
        both.elapsed += other.elapsed;
        // Same bounds on both: adding cannot fail.
        let _ = both.latency_us.add(&other.latency_us);
        both.cpu = both.cpu.plus(&other.cpu);
        both.table_ops = both
            .table_ops
            .zip(other.table_ops.as_ref())
            .map(|(a, b)| a.plus(b));
    }
    Some(both)
}

/// The performance targets (issue 10) as ratios of this run's figures, each with its bound.
pub(super) fn print_targets(results: &[PhaseResult], append: &PhaseResult, outbox: &PhaseResult) {
    let rate = |r: &PhaseResult| r.ops as f64 / r.elapsed.as_secs_f64();
    let p99 = |r: &PhaseResult| r.latency_us.value_at_quantile(0.99) as f64;
    let cpu = |r: &PhaseResult| r.cpu.total() / r.ops.max(1) as f64;
    let by_name = |name: &str| results.iter().find(|r| r.name == name);
    let line = |what: &str, value: f64, bound: &str, met: bool| {
        let verdict = if met { "met" } else { "NOT met" };
        println!(
            "  {what:<62} {:>7} (target {bound}) {verdict}",
            ratio(value, 1.0)
        );
    };
    println!();
    println!(
        "targets (ratios within this run; \"append\" is both bare-append phases together: {:.0}/s, \
         {:.0} µs CPU per op, p99 {:.1} ms):",
        rate(append),
        cpu(append) * 1e6,
        p99(append) / 1e3
    );
    let x = rate(outbox) / rate(append);
    line("append+publish rate / append rate", x, "≥ 0.8", x >= 0.8);
    let x = cpu(outbox) / cpu(append);
    line("append+publish CPU per op / append's", x, "≤ 1.5", x <= 1.5);
    if let Some(activate) = by_name(super::activation::ACTIVATE) {
        let x = rate(activate) / rate(append);
        line("ActivateWarranty rate / append rate", x, "≥ 0.6", x >= 0.6);
        let x = p99(activate) / p99(append);
        line("ActivateWarranty p99 / append p99", x, "≤ 2", x <= 2.0);
        let x = cpu(activate) / cpu(append);
        line(
            "ActivateWarranty CPU per activation / append's",
            x,
            "≤ 1.5",
            x <= 1.5,
        );
    }
    if let Some(open) = by_name(super::activation::ACTIVATE_OPEN) {
        let x = p99(open) / p99(append);
        line(
            "ActivateWarranty open loop at half max: p99 / append's closed p99",
            x,
            "≤ 2",
            x <= 2.0,
        );
        println!(
            "    (open-loop p99 {:.1} ms, append closed-loop p99 {:.1} ms)",
            p99(open) / 1e3,
            p99(append) / 1e3
        );
        if let Some(lag) = &open.read_model_lag_us {
            let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1e3;
            let met = if ms(0.99) <= 60.0 { "met" } else { "NOT met" };
            println!(
                "  read-model lag (WarrantyActivated → visible in GetWarranty), {} samples: \
                 p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 60 ms) {met}",
                lag.len(),
                ms(0.5),
                ms(0.99)
            );
        }
    }
}

/// `a / b` with two decimals, or four when it is below 0.1 (a reaction chain's rate is a small
/// fraction of a plain insert's, and "0.00x" would say nothing).
pub(super) fn ratio(a: f64, b: f64) -> String {
    let x = a / b;
    if x.abs() < 0.1 {
        format!("{x:.4}")
    } else {
        format!("{x:.2}")
    }
}

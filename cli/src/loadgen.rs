//! `scanloop loadgen`: a realistic population driven open-loop against the running cluster (all
//! four services), with live progress and a final report.
//!
//! Set-up, per brand: a commission plan (5% / 2%), a batch of codes, and the seeded members (see
//! `population`): roots activate, the rest activate through a root's link, every member gets a
//! link, and the KOCs engage (scans, comments, two shares) until they qualify. Then the load:
//! sales at `--rate` per second for `--duration-secs`, each scheduled at its own instant whether
//! or not earlier ones were answered (open loop: a slow cluster shows as latency, not as a lower
//! offered rate). A sale is ScanCode, then ResolveLink (when referred), then ActivateWarranty
//! and, for a returned one, VoidWarranty a moment later.
//!
//! Figures: each RPC's acknowledgement latency (from its own send), sales per second, the loop's
//! own latency — an activation recorded (the `sale_activated_at` activation took) to its level-1
//! commission accrued (the CommissionAccrued envelope's `recorded_at`), read from payouts' topic
//! — and CPU per activation of each process. With `--baseline` (the file `scanloop bench` writes
//! with `--baseline-out`), ratios to the plain insert of the same run.

mod calls;
mod outcomes;
mod population;
mod report;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calls::{from, timed, within_limits};
use chrono::Utc;
use futures::future::try_join_all;
use outcomes::Outcomes;
use population::{Sale, Sales, Shape};
use report::{Report, Stats};
use scanloop_config::Infra;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::payouts::v1 as pay;
use scanloop_proto::referral::v1 as refl;
use scanloop_proto::time::to_timestamp;
use scanloop_service::access::Role::{Landing, Operator};
use tokio::task::JoinSet;
use watch::{drain, watch_accruals, watch_referrals};

use crate::bench::baseline::Baseline;
use crate::bench::clients::ClientRequests;
pub(crate) use crate::bench::harness::lock;
use crate::bench::processes::{CpuUse, ServerPids, send_signal};
use crate::cluster::{Addrs, Cluster, fen, identity, issue_batch, request_id, two_level_plan};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    addrs: Addrs,
    /// Brands in the population (each with its own members, plan and codes).
    #[arg(long, default_value_t = 3)]
    brands: usize,
    /// Seeded members per brand; a fifth are roots, the rest joined through a root's link.
    #[arg(long, default_value_t = 40)]
    members: usize,
    /// Share of the members who are KOCs (the top of the power law).
    #[arg(long, default_value_t = 0.2)]
    koc_share: f64,
    /// Exponent s of the power law: the k-th member brings friends in proportion to 1/k^s.
    #[arg(long, default_value_t = 1.2)]
    zipf_exponent: f64,
    /// Share of the sales made through a member's link (the rest are organic).
    #[arg(long, default_value_t = 0.7)]
    referred_share: f64,
    /// Share of the sales returned inside the window (VoidWarranty after --return-after-ms).
    #[arg(long, default_value_t = 0.05)]
    return_rate: f64,
    #[arg(long, default_value_t = 2_000)]
    return_after_ms: u64,
    /// Share of the referred sales that are fraud attempts (the member buying through their own
    /// link; referral rejects them as self-referrals).
    #[arg(long, default_value_t = 0.02)]
    fraud_rate: f64,
    /// Sales per second, open loop.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Seed of the population's draws (the same seed, the same sales).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Names the run's brands `lg<run>-<k>`; default a new random one, so each run starts
    /// from empty brands.
    #[arg(long)]
    run_id: Option<String>,
    /// Sales in flight at most; a sale due while this many are unanswered is counted as
    /// skipped (the cluster is saturated), not queued.
    #[arg(long, default_value_t = 4_000)]
    max_in_flight: usize,
    /// After the load, how long to wait for the last commissions to accrue.
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
    /// How often each process's resident memory is sampled during the load.
    #[arg(long, default_value_t = 60)]
    rss_every_secs: u64,
    /// The topic payouts publishes to (the loop latency is read from it).
    #[arg(
        long,
        env = "SCANLOOP_PAYOUTS_TOPIC",
        default_value_t = scanloop_bus::topics::event_topic("payouts")
    )]
    payouts_topic: String,
    /// The topic referral publishes to (holds and rejections of referred sales are read from it).
    #[arg(
        long,
        env = "SCANLOOP_REFERRAL_TOPIC",
        default_value_t = scanloop_bus::topics::event_topic("referral")
    )]
    referral_topic: String,
    /// The services' pids, for CPU per activation.
    #[arg(long)]
    activation_pid: Option<u32>,
    #[arg(long)]
    membership_pid: Option<u32>,
    #[arg(long)]
    referral_pid: Option<u32>,
    #[arg(long)]
    payouts_pid: Option<u32>,
    /// Processes to SIGKILL halfway through the load (replicas of the services: the run then
    /// shows whether every sale's loop still completes exactly once; `scripts/bench --replicas 2
    /// --kill-one` restarts them).
    #[arg(long, value_delimiter = ',')]
    kill_mid_run: Vec<u32>,
    /// Devstack state directory, to find Cassandra's and Kafka's pids.
    #[arg(long, env = "SCANLOOP_DEVSTACK_DIR")]
    devstack_dir: Option<PathBuf>,
    /// The baseline `scanloop bench --baseline-out` wrote in the same run: prints ratios.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// A seeded member, ready to bring friends.
struct Referrer {
    phone: String,
    token: String,
}

/// One brand's population during the load.
struct Brand {
    id: String,
    codes: Vec<String>,
    next_code: AtomicUsize,
    referrers: Vec<Referrer>,
}

impl Brand {
    fn code(&self) -> anyhow::Result<String> {
        let n = self.next_code.fetch_add(1, Ordering::Relaxed);
        self.codes.get(n).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "brand {} ran out of its {} codes",
                self.id,
                self.codes.len()
            )
        })
    }
}

/// Fresh buyer phone numbers and device serials, unique to the run.
struct Buyers {
    run: String,
    base: u64,
    next: AtomicU64,
}

impl Buyers {
    fn next(&self) -> (String, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (
            format!("15{:09}", (self.base + n) % 1_000_000_000),
            format!("LG-{}-{n:08}", self.run),
        )
    }
}

pub async fn run(infra: &Infra, args: Args) -> anyhow::Result<()> {
    let shape = Shape {
        brands: args.brands.max(1),
        members: args.members,
        koc_share: args.koc_share,
        zipf_exponent: args.zipf_exponent,
        referred_share: args.referred_share,
        return_rate: args.return_rate,
        fraud_rate: args.fraud_rate,
    };
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    for (name, share) in [
        ("--koc-share", shape.koc_share),
        ("--referred-share", shape.referred_share),
        ("--return-rate", shape.return_rate),
        ("--fraud-rate", shape.fraud_rate),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&share), "{name} is a share: 0 ..= 1");
    }
    let baseline = args.baseline.as_deref().map(Baseline::read).transpose()?;
    let run = args
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..6].to_owned());
    let brand_ids: Vec<String> = (0..shape.brands).map(|k| format!("lg{run}-{k}")).collect();
    let cluster = Arc::new(Cluster::connect(&args.addrs, &brand_ids).await?);
    let buyers = Arc::new(Buyers {
        base: (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as u64,
        run: run.clone(),
        next: AtomicU64::new(0),
    });
    let sales_total = (args.rate * args.duration_secs as f64).ceil() as u64;
    let codes_per_brand = shape.members as u32
        + u32::try_from(sales_total / shape.brands as u64 + 1)?.saturating_mul(11) / 10
        + 100;

    eprintln!(
        "loadgen {run}: {} brands × {} members ({}% KOCs); {} codes each",
        shape.brands,
        shape.members,
        (shape.koc_share * 100.0).round(),
        codes_per_brand
    );
    let servers = ServerPids::find(
        args.devstack_dir.as_deref(),
        &[
            ("activation", args.activation_pid),
            ("membership", args.membership_pid),
            ("referral", args.referral_pid),
            ("payouts", args.payouts_pid),
        ],
    );
    // Cassandra's own counts of what the services asked of it, when it can be reached.
    let cql = scanloop_storage::connect(&infra.cql_nodes, Duration::from_secs(10))
        .await
        .ok();
    let servers = match &cql {
        Some(session) => servers.counting_table_ops(session.clone()),
        None => servers,
    };
    let statements = |session: Option<Arc<scylla::client::session::Session>>| async move {
        ClientRequests::sample(session.as_ref()?).await
    };
    // What the cluster burns with nothing to do (consumers polling, timers, Cassandra's own
    // work), before this run gives it any: the population's seeding keeps the services busy
    // for seconds after it is "ready", so the floor is taken first.
    let idle_alone = idle_without_the_services(&servers).await?;
    let idle_statements_before = statements(cql.clone()).await;
    let idle_tables_before = servers.table_ops().await;
    let idle_before = servers.sample();
    tokio::time::sleep(IDLE_SAMPLE).await;
    let idle = servers.sample().since(&idle_before);
    let idle_statements = since(statements(cql.clone()).await, idle_statements_before);
    let idle_tables = servers.table_ops_since(idle_tables_before).await;

    let set_up = Instant::now();
    let brands = try_join_all(brand_ids.iter().map(|id| {
        set_up_brand(
            cluster.clone(),
            buyers.clone(),
            id.clone(),
            shape,
            codes_per_brand,
        )
    }))
    .await?;
    let brands = Arc::new(brands);
    eprintln!(
        "  population ready in {:.1} s",
        set_up.elapsed().as_secs_f64()
    );

    // Only sales of the load count for the loop's latency: the seeded members' own referred
    // activations may still be accruing.
    let watched = Arc::new(Mutex::new(report::Loop::default()));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let watchers = [
        watch_accruals(
            &infra.kafka_brokers,
            &args.payouts_topic,
            brand_ids.clone(),
            Utc::now(),
            watched.clone(),
            outcomes.clone(),
        )?,
        watch_referrals(
            &infra.kafka_brokers,
            &args.referral_topic,
            brand_ids.clone(),
            outcomes.clone(),
        )?,
    ];
    let statements_before = statements(cql.clone()).await;
    let tables_before = servers.table_ops().await;
    let cpu_before = servers.sample();
    let memory_samples = Arc::new(Mutex::new(Vec::new()));
    let memory = tokio::spawn(sample_memory(
        servers.clone_probe(),
        Duration::from_secs(args.rss_every_secs.max(1)),
        memory_samples.clone(),
    ));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let load = drive(
        &args,
        shape,
        cluster,
        brands,
        buyers,
        Records {
            stats: stats.clone(),
            outcomes: outcomes.clone(),
        },
        sales_total,
    )
    .await;
    let load_elapsed = load.elapsed;
    let memory_samples = std::mem::take(&mut *lock(&memory_samples));
    memory.abort();

    // The loop's tail: the last sales' commissions still accruing (or their holds and
    // rejections on their way).
    let drained = drain(&outcomes, Duration::from_secs(args.drain_secs)).await;
    let after = servers.sample();
    let cpu = after.since(&cpu_before);
    let statements_after = statements(cql.clone()).await;
    let tables = servers.table_ops_since(tables_before).await;
    for watcher in watchers {
        watcher.abort();
    }

    let report = Report {
        shape,
        rate: args.rate,
        duration: Duration::from_secs(args.duration_secs),
        load_elapsed,
        stats: std::mem::take(&mut *lock(&stats)),
        watched: std::mem::take(&mut *lock(&watched)),
        outcomes: lock(&outcomes).summary(),
        drained,
        skipped: load.skipped,
        cpu,
        idle,
        idle_alone,
        idle_secs: IDLE_SAMPLE.as_secs_f64(),
        statements: since(statements_after, statements_before),
        idle_statements,
        idle_tables,
        tables,
        servers: &servers,
        baseline,
    };
    report.print();
    print_memory(&servers, &memory_samples);
    Ok(())
}

/// What was counted between two samples, when both were taken.
fn since(after: Option<ClientRequests>, before: Option<ClientRequests>) -> Option<ClientRequests> {
    Some(after?.since(&before?))
}

/// Each service's resident memory (KiB) at a moment of the load.
type MemorySample = (Duration, Vec<Option<u64>>);

/// Samples the servers' RSS at the start of the load and every `every` until aborted.
async fn sample_memory(
    servers: ServerPids,
    every: Duration,
    samples: Arc<Mutex<Vec<MemorySample>>>,
) {
    let started = std::time::Instant::now();
    loop {
        let rss = servers.rss_kib();
        lock(&samples).push((started.elapsed(), rss));
        tokio::time::sleep(every).await;
    }
}

/// RSS per process over the load: every sample, and the growth from the second sample (the
/// first minute warms caches and pools) to the last.
fn print_memory(servers: &ServerPids, samples: &[MemorySample]) {
    if samples.len() < 2 {
        return;
    }
    println!();
    println!("resident memory (MiB) during the load, per process:");
    let names = servers.names();
    println!("  {:>7}   {}", "at s", names.replace(" + ", "  "));
    for (at, rss) in samples {
        let cells: Vec<String> = rss
            .iter()
            .map(|kib| kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)))
            .collect();
        println!("  {:>7.0}   {}", at.as_secs_f64(), cells.join("  "));
    }
    if let (Some((from_at, from)), Some((to_at, to))) = (samples.get(1), samples.last()) {
        let growth: Vec<String> = from
            .iter()
            .zip(to)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => format!("{:+.1}%", (*b as f64 / *a as f64 - 1.0) * 100.0),
                _ => "?".into(),
            })
            .collect();
        println!(
            "  growth from {:.0} s to {:.0} s: {}",
            from_at.as_secs_f64(),
            to_at.as_secs_f64(),
            growth.join("  ")
        );
    }
}

/// How long the idle floor of CPU is sampled before the load.
const IDLE_SAMPLE: Duration = Duration::from_secs(10);

/// How long the services are paused for [`idle_without_the_services`]: with the last heartbeat
/// up to 3 s before the pause, well inside the consumers' 10 s session timeout, so the pause
/// sets off no rebalance.
const PAUSED_SAMPLE: Duration = Duration::from_secs(6);

/// What Cassandra and Kafka burn on their own over [`PAUSED_SAMPLE`], with the services paused
/// (SIGSTOP), scaled to [`IDLE_SAMPLE`]: the floor the services' idle cost is measured above.
/// None when no service's pid was given. The services resume afterwards and get a moment to
/// catch up on the pause.
async fn idle_without_the_services(servers: &ServerPids) -> anyhow::Result<Option<CpuUse>> {
    if !servers.has_services() {
        return Ok(None);
    }
    servers.signal_services("STOP")?;
    let before = servers.sample();
    tokio::time::sleep(PAUSED_SAMPLE).await;
    let alone = servers
        .sample()
        .since(&before)
        .scaled(IDLE_SAMPLE.as_secs_f64() / PAUSED_SAMPLE.as_secs_f64());
    servers.signal_services("CONT")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Some(alone))
}

/// A brand's plan, codes and seeded members (links for all, KOC engagement for the KOCs).
async fn set_up_brand(
    cluster: Arc<Cluster>,
    buyers: Arc<Buyers>,
    brand: String,
    shape: Shape,
    codes: u32,
) -> anyhow::Result<Brand> {
    cluster
        .payouts(Operator)
        .upsert_plan(two_level_plan(
            &brand,
            (500, 200),
            30,
            pay::ComplianceAcknowledgement {
                acknowledged_by: "legal@loadgen".into(),
                acknowledged_at: None,
                statement: "two levels on verified sales (load generator)".into(),
            },
        ))
        .await?;
    let (_, all) = issue_batch(
        &cluster.activation(Operator),
        act::IssueBatchRequest {
            brand_id: brand.clone(),
            request_id: request_id(),
            sku: "LG-1".into(),
            product_model: "load generator phone".into(),
            warranty_months: 12,
            quantity: codes,
            key_id: "k1".into(),
        },
    )
    .await?;
    let brand = Brand {
        id: brand,
        codes: all,
        next_code: AtomicUsize::new(0),
        referrers: Vec::new(),
    };

    // Roots first (their links are what the joiners activate through), then the joiners.
    let members = population::members(&shape);
    let (roots, joiners): (Vec<_>, Vec<_>) = members.iter().partition(|m| m.parent.is_none());
    let mut seeded: BTreeMap<usize, Referrer> = BTreeMap::new();
    for wave in [roots, joiners] {
        let ready = try_join_all(wave.iter().map(|member| {
            let parent_token = member.parent.map(|p| seeded[&p].token.clone());
            seed_member(&cluster, &buyers, &brand, member.koc, parent_token)
        }))
        .await?;
        for (member, referrer) in wave.iter().zip(ready) {
            seeded.insert(member.rank, referrer);
        }
    }
    Ok(Brand {
        referrers: seeded.into_values().collect(),
        ..brand
    })
}

/// One seeded member: activates (through `parent_token` when given), becomes a member, gets a
/// link; a KOC engages until qualified.
async fn seed_member(
    cluster: &Cluster,
    buyers: &Buyers,
    brand: &Brand,
    koc: bool,
    parent_token: Option<String>,
) -> anyhow::Result<Referrer> {
    let (phone, serial) = buyers.next();
    let request = activation(
        &brand.id,
        brand.code()?,
        &phone,
        serial.clone(),
        parent_token.unwrap_or_default(),
    );
    // Each seeded member is a buyer of their own, as the landing back end would forward them.
    let landing = cluster.activation(Landing);
    within_limits(|| {
        let mut landing = landing.clone();
        let request = from(&serial, request.clone());
        async move { landing.activate_warranty(request).await }
    })
    .await
    .map(|(answer, _)| answer)?;
    let member = cluster.member_by_phone(&brand.id, &phone).await?;
    let link = cluster
        .create_link(&brand.id, &member.member_id, "LG-1", "")
        .await?;
    if koc {
        cluster
            .engage_as_koc(&brand.id, &member.member_id, &link.token)
            .await?;
    }
    Ok(Referrer {
        phone,
        token: link.token,
    })
}

struct Load {
    elapsed: Duration,
    skipped: u64,
}

/// SIGKILLs `pids` (a crash, not a shutdown: no drain, no last commit) and says so above the
/// progress bar.
fn kill_mid_run(pids: &[u32]) {
    let targets: Vec<Option<u32>> = pids.iter().copied().map(Some).collect();
    match send_signal(&targets, "KILL") {
        Ok(()) => eprintln!("  killed {pids:?} halfway through the load"),
        Err(error) => eprintln!("  could not kill {pids:?}: {error}"),
    }
}

/// The open loop: sale `i` starts at `i / rate` seconds, answered or not, under a live progress
/// bar; returns when every sale (and its return) has been answered.
async fn drive(
    args: &Args,
    shape: Shape,
    cluster: Arc<Cluster>,
    brands: Arc<Vec<Brand>>,
    buyers: Arc<Buyers>,
    records: Records,
    total: u64,
) -> Load {
    let progress = report::progress(total, records.stats.clone());
    let mut sales = Sales::new(shape, args.seed);
    let return_after = Duration::from_millis(args.return_after_ms);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut skipped = 0;
    let started = tokio::time::Instant::now();
    let mut kill_at = (!args.kill_mid_run.is_empty()).then_some(total / 2);
    for i in 0..total {
        if kill_at == Some(i) {
            kill_at = None;
            kill_mid_run(&args.kill_mid_run);
        }
        let due = started + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due).await;
        while tasks.try_join_next().is_some() {}
        let sale = sales.next(i);
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        lock(&records.stats).sent += 1;
        let (cluster, brands, buyers, records) = (
            cluster.clone(),
            brands.clone(),
            buyers.clone(),
            records.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            one_sale(
                &cluster,
                &brands,
                &buyers,
                &records,
                sale,
                due,
                return_after,
            )
            .await;
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    progress.finish();
    Load { elapsed, skipped }
}

/// What the load records: its calls' figures, and what is to become of each sale.
#[derive(Clone)]
struct Records {
    stats: Arc<Mutex<Stats>>,
    outcomes: Arc<Mutex<Outcomes>>,
}

/// One sale's calls, each timed and counted under its RPC's name.
async fn one_sale(
    cluster: &Cluster,
    brands: &[Brand],
    buyers: &Buyers,
    records: &Records,
    sale: Sale,
    due: tokio::time::Instant,
    return_after: Duration,
) {
    let stats = &*records.stats;
    let brand = &brands[sale.brand];
    let Ok(code) = brand.code() else {
        lock(stats).error("ActivateWarranty", "out of codes".into());
        return;
    };
    let referrer = sale.referrer.and_then(|rank| brand.referrers.get(rank));
    let (mut phone, serial) = buyers.next();
    if sale.fraud
        && let Some(referrer) = referrer
    {
        phone = referrer.phone.clone();
    }
    let landing = cluster.activation(Landing);
    let scan = act::ScanCodeRequest {
        brand_id: brand.id.clone(),
        request_id: request_id(),
        code: code.clone(),
        region: "440300".into(),
        scanned_at: Some(to_timestamp(Utc::now())),
    };
    // The landing back end forwards each visitor's own client key, as the abuse limits expect.
    let visitor = serial.clone();
    timed(stats, "ScanCode", || {
        let (mut landing, scan) = (landing.clone(), from(&visitor, scan.clone()));
        async move { landing.scan_code(scan).await }
    })
    .await;
    if let Some(referrer) = referrer {
        let resolve = refl::ResolveLinkRequest {
            brand_id: brand.id.clone(),
            token: referrer.token.clone(),
            visitor: Some(identity(&phone)),
            visitor_key: String::new(),
            channel: refl::ShareChannel::WechatChat as i32,
        };
        let referral = cluster.referral(Landing);
        timed(stats, "ResolveLink", || {
            let (mut referral, resolve) = (referral.clone(), from(&visitor, resolve.clone()));
            async move { referral.resolve_link(resolve).await }
        })
        .await;
    }
    let token = referrer.map(|r| r.token.clone()).unwrap_or_default();
    let activate = activation(&brand.id, code.clone(), &phone, serial, token);
    let activated = timed(stats, "ActivateWarranty", || {
        let (mut landing, activate) = (landing.clone(), from(&visitor, activate.clone()));
        async move { landing.activate_warranty(activate).await }
    })
    .await;
    let Some(warranty) = activated else {
        return;
    };
    {
        let mut stats = lock(stats);
        stats.record("sale (due → activated)", due.elapsed());
        stats.activations += 1;
        if referrer.is_some() && !sale.fraud {
            stats.referred_activations += 1;
        }
    }
    if let (Some(_), Some(stream)) = (referrer, warranty_stream_id(&warranty.into_inner())) {
        let mut outcomes = lock(&records.outcomes);
        if sale.fraud {
            outcomes.expect_fraud(stream);
        } else {
            outcomes.expect_referred(stream, code.clone());
        }
    }
    if sale.returned {
        tokio::time::sleep(return_after).await;
        let void = act::VoidWarrantyRequest {
            brand_id: brand.id.clone(),
            request_id: request_id(),
            code,
            reason: "returned (load generator)".into(),
        };
        let operator = cluster.activation(Operator);
        timed(stats, "VoidWarranty", || {
            let (mut operator, void) = (operator.clone(), void.clone());
            async move { operator.void_warranty(void).await }
        })
        .await;
    }
}

/// The stream the services name an activated warranty's sale by.
fn warranty_stream_id(warranty: &act::Warranty) -> Option<String> {
    let batch_id = uuid::Uuid::parse_str(&warranty.batch_id).ok()?;
    let serial = u32::try_from(warranty.serial).ok()?;
    Some(scanloop_activation::domain::warranty::stream_id(
        &warranty.brand_id,
        batch_id,
        serial,
    ))
}

fn activation(
    brand: &str,
    code: String,
    phone: &str,
    device_serial: String,
    token: String,
) -> act::ActivateWarrantyRequest {
    act::ActivateWarrantyRequest {
        brand_id: brand.into(),
        request_id: request_id(),
        code,
        buyer: Some(identity(phone)),
        channel: Some(act::PurchaseChannel {
            kind: act::PurchaseChannelKind::Online as i32,
            id: "tmall".into(),
        }),
        purchase_amount: fen(299_900),
        purchased_at: Some(to_timestamp(Utc::now() - chrono::Duration::hours(2))),
        referral_token: token,
        device_serial,
    }
}

//! `scanloop bench-payouts`: the payouts service under load, against a running instance that
//! reads its referral events from a topic of this bench's own (see `scripts/bench-payouts`).
//!
//! 1. Plain CQL insert for a few seconds: the baseline the ratios are against.
//! 2. Accrual: synthetic `ReferralAttributed` events (one level, 5%) are produced as fast as
//!    the service takes them; the bench reads the payouts topic and reports accruals per
//!    second, the latency from the attribution's `recorded_at` to the `CommissionAccrued`'s
//!    (p50/p99), and CPU per accrual over the bench, the payouts process, Cassandra and Kafka.
//! 3. Settlement: `--commissions` commissions for `--members` members, bought long enough ago
//!    that they vest as soon as they accrue; once the ledger shows them all payable,
//!    `RunSettlement` settles them: seconds, and the payouts process's peak resident memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prost::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use scanloop_bus::EventProducer;
use scanloop_config::Infra;
use scanloop_proto::common::v1::{EventEnvelope, Money};
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use scanloop_proto::referral::v1 as referral;
use scanloop_proto::time::to_timestamp;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// The payouts service.
    #[arg(long, default_value = "127.0.0.1:50064")]
    payouts_addr: String,
    /// Its pid, for CPU and memory accounting.
    #[arg(long)]
    payouts_pid: Option<u32>,
    /// The topic the payouts service reads referral events from (the bench writes it).
    #[arg(long)]
    referral_topic: String,
    /// The topic the payouts service publishes to (the bench reads it).
    #[arg(long)]
    payouts_topic: String,
    /// The activation topic the payouts service also reads (the bench leaves it empty).
    #[arg(long)]
    activation_topic: Option<String>,
    /// Only create the topics (before the payouts service starts), then exit.
    #[arg(long)]
    prepare: bool,
    /// Devstack state directory, to find Cassandra's and Kafka's pids.
    #[arg(long, env = "SCANLOOP_DEVSTACK_DIR")]
    devstack_dir: Option<PathBuf>,
    /// Attributions in the accrual phase.
    #[arg(long, default_value_t = 20_000)]
    accruals: usize,
    /// Attributions per second in the accrual phase, open loop (0: all at once, which measures
    /// the highest rate; latency then includes waiting behind the backlog).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Commissions settled in the settlement phase, and the members they belong to.
    #[arg(long, default_value_t = 100_000)]
    commissions: usize,
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Seconds of the plain-insert baseline.
    #[arg(long, default_value_t = 5)]
    baseline_secs: u64,
    /// How long to wait for the service to catch up in each phase.
    #[arg(long, default_value_t = 1_800)]
    wait_secs: u64,
}

/// What the bench sees on the payouts topic.
#[derive(Default)]
struct Watched {
    /// Attribution id → the CommissionAccrued's recorded_at (ms).
    accrued: HashMap<String, i64>,
    vested: usize,
}

type Seen = Arc<Mutex<Watched>>;

fn millis(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000)
}

/// Reads `CommissionAccrued` from the payouts topic's end on.
async fn watch(
    brokers: &str,
    topic: &str,
    seen: Seen,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("bench-payouts-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let topic = topic.to_owned();
    let assignment = tokio::task::block_in_place(|| -> anyhow::Result<TopicPartitionList> {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut assignment = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, end) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
            assignment.add_partition_offset(&topic, p.id(), Offset::Offset(end))?;
        }
        Ok(assignment)
    })?;
    consumer.assign(&assignment)?;
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                m = consumer.recv() => m,
            };
            let Ok(message) = message else { continue };
            let Ok(envelope) = EventEnvelope::decode(message.payload().unwrap_or_default()) else {
                continue;
            };
            let Ok(mut seen) = seen.lock() else { return };
            match envelope.event_type.as_str() {
                "scanloop.payouts.v1.CommissionAccrued" => {
                    if let Ok(e) = pb::CommissionAccrued::decode(envelope.payload.as_slice()) {
                        seen.accrued
                            .insert(e.attribution_id, millis(envelope.recorded_at.as_ref()));
                    }
                }
                "scanloop.payouts.v1.CommissionVested" => seen.vested += 1,
                _ => {}
            }
        }
    });
    Ok(())
}

/// A synthetic attribution of a purchase bought `bought_days_ago`, earning `member`.
fn attribution(
    brand: &str,
    i: usize,
    member: &str,
    bought_days_ago: i64,
) -> (String, EventEnvelope) {
    let now = chrono::Utc::now();
    let attribution_id = uuid::Uuid::new_v4().to_string();
    let event = referral::ReferralAttributed {
        attribution_id: attribution_id.clone(),
        token: String::new(),
        warranty_stream_id: format!("warranty-{brand}-bench-{i}"),
        activation_event_id: uuid::Uuid::new_v4().to_string(),
        buyer_member_id: uuid::Uuid::new_v4().to_string(),
        buyer: None,
        level1_member_id: member.to_owned(),
        level2_member_id: String::new(),
        sku: "BENCH".into(),
        purchase_amount: Some(Money {
            amount_fen: 599_900,
            currency: "CNY".into(),
        }),
        purchased_at: Some(to_timestamp(now - chrono::Duration::days(bought_days_ago))),
        activated_at: Some(to_timestamp(now)),
        store_id: String::new(),
        payee: referral::Payee::Member as i32,
        campaign_id: String::new(),
        reviewed: false,
    };
    let envelope = EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "scanloop.referral.v1.ReferralAttributed".into(),
        schema_version: 1,
        brand_id: brand.to_owned(),
        stream_id: format!("attribution-warranty-{brand}-bench-{i}"),
        version: 1,
        occurred_at: Some(to_timestamp(now)),
        recorded_at: Some(to_timestamp(now)),
        correlation_id: attribution_id.clone(),
        causation_id: attribution_id.clone(),
        traceparent: String::new(),
        payload: event.encode_to_vec(),
        actor: "scanloop-cli/bench-payouts".into(),
    };
    (attribution_id, envelope)
}

/// Produces `count` attributions spread over `members`; returns their ids and send times.
/// Where synthetic attributions go.
struct Target<'a> {
    producer: &'a EventProducer,
    topic: &'a str,
    brand: &'a str,
}

async fn produce(
    target: &Target<'_>,
    offset: usize,
    count: usize,
    members: &[String],
    bought_days_ago: i64,
    rate: f64,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut sent = HashMap::with_capacity(count);
    // Open loop: one event every 1/rate seconds, on schedule whatever the service does.
    let chunk_size = if rate > 0.0 { 1 } else { 500 };
    let started = Instant::now();
    for (n, chunk) in (0..count)
        .collect::<Vec<_>>()
        .chunks(chunk_size)
        .enumerate()
    {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let envelopes: Vec<EventEnvelope> = chunk
            .iter()
            .map(|&i| {
                let (id, envelope) = attribution(
                    target.brand,
                    offset + i,
                    &members[i % members.len()],
                    bought_days_ago,
                );
                sent.insert(id, millis(envelope.recorded_at.as_ref()));
                envelope
            })
            .collect();
        target
            .producer
            .publish_in_order(target.topic, &envelopes)
            .await?;
    }
    Ok(sent)
}

async fn wait_until(
    deadline: Instant,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

struct Baseline {
    rate: f64,
    cpu_micros_per_op: f64,
}

/// Plain single-row inserts, 32 at a time, into a table of a keyspace of the bench's own (the
/// same statement shape as `scanloop bench`'s baseline).
async fn plain_insert(
    infra: &Infra,
    duration: Duration,
    cpu: &super::processes::ServerPids,
) -> anyhow::Result<Baseline> {
    let session = scanloop_storage::connect(&infra.cql_nodes, Duration::from_secs(60)).await?;
    let keyspace = format!(
        "bench_payouts_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE {keyspace} WITH replication = \
                 {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                infra.replication_factor
            ),
            (),
        )
        .await?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {keyspace}.plain_events (stream_id text, version bigint, \
                 payload blob, recorded_at timestamp, PRIMARY KEY ((stream_id), version))"
            ),
            (),
        )
        .await?;
    session.await_schema_agreement().await?;
    let insert = Arc::new(
        session
            .prepare(format!(
                "INSERT INTO {keyspace}.plain_events (stream_id, version, payload, recorded_at) \
                 VALUES (?, ?, ?, ?)"
            ))
            .await?,
    );
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let before = cpu.sample();
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..32)
        .map(|w| {
            let (session, insert, done) = (session.clone(), insert.clone(), done.clone());
            tokio::spawn(async move {
                let payload = vec![b'x'; 200];
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let stream = format!("plain-{w}-{i}");
                    if session
                        .execute_unpaged(
                            &insert,
                            (stream, 1i64, payload.as_slice(), chrono::Utc::now()),
                        )
                        .await
                        .is_ok()
                    {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let spent = cpu.sample().since(&before).total();
    let ops = done.load(std::sync::atomic::Ordering::Relaxed).max(1) as f64;
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await?;
    Ok(Baseline {
        rate: ops / duration.as_secs_f64(),
        cpu_micros_per_op: spent * 1e6 / ops,
    })
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run(infra: &Infra, args: Args) -> anyhow::Result<()> {
    if args.prepare {
        // The dead-letter topics come with them.
        let mut topics = vec![args.referral_topic.clone(), args.payouts_topic.clone()];
        topics.extend(args.activation_topic.clone());
        scanloop_bus::topics::ensure_topics(
            &infra.kafka_brokers,
            &topics,
            i32::from(infra.topic_partitions),
            i32::from(infra.replication_factor),
        )
        .await?;
        return Ok(());
    }
    let brand = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let bearer = crate::credentials::bearer("bench-payouts")?;
    let mut client =
        crate::credentials::connect(&args.payouts_addr, &bearer, PayoutsServiceClient::new).await?;
    client
        .upsert_plan(pb::UpsertPlanRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            brand_id: brand.clone(),
            levels: vec![pb::LevelRate {
                level: 1,
                rate: Some(pb::Rate {
                    kind: Some(pb::rate::Kind::BasisPoints(500)),
                }),
            }],
            return_window_days: 30,
            ..Default::default()
        })
        .await?;
    let cpu = super::processes::ServerPids::find(
        args.devstack_dir.as_deref(),
        &[("payouts", args.payouts_pid)],
    );
    println!(
        "payouts bench: brand {brand}, payouts pid {:?}",
        args.payouts_pid
    );

    // 1. The baseline.
    let baseline = plain_insert(infra, Duration::from_secs(args.baseline_secs), &cpu).await?;
    println!(
        "  plain CQL insert (baseline)     {:>9.0} ops/s  {:>8.0} µs CPU/op",
        baseline.rate, baseline.cpu_micros_per_op
    );

    // 2. Accrual.
    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    watch(
        &infra.kafka_brokers,
        &args.payouts_topic,
        seen.clone(),
        stop.clone(),
    )
    .await?;
    let producer = EventProducer::new(&infra.kafka_brokers, Duration::from_secs(30))?;
    let members: Vec<String> = (0..args.members)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let before = cpu.sample();
    let started = Instant::now();
    let target = Target {
        producer: &producer,
        topic: &args.referral_topic,
        brand: &brand,
    };
    let sent = produce(&target, 0, args.accruals, &members, 1, args.rate).await?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    wait_until(deadline, "the accruals", || {
        seen.lock()
            .map(|s| sent.keys().all(|k| s.accrued.contains_key(k)))
            .unwrap_or(false)
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu.sample();
    let mut latency = Histogram::<u64>::new(3)?;
    if let Ok(seen) = seen.lock() {
        for (id, sent_ms) in &sent {
            if let Some(accrued_ms) = seen.accrued.get(id) {
                latency.record(u64::try_from((accrued_ms - sent_ms).max(0)).unwrap_or(0))?;
            }
        }
    }
    let rate = args.accruals as f64 / elapsed;
    let cpu_per = after.since(&before).total() * 1e6 / args.accruals as f64;
    println!(
        "  accrual (ReferralAttributed → CommissionAccrued) {:>7.0} accruals/s ({:.3}x the insert)  p50 {} ms  p99 {} ms  {:>8.0} µs CPU/accrual ({:.1}x the insert's)",
        rate,
        rate / baseline.rate,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        cpu_per,
        cpu_per / baseline.cpu_micros_per_op
    );

    if args.commissions == 0 {
        stop.cancel();
        return Ok(());
    }
    // 3. Settlement: commissions that vest as soon as they accrue.
    let settle_brand_members = &members;
    let started = Instant::now();
    let vested_sent = produce(
        &target,
        args.accruals,
        args.commissions,
        settle_brand_members,
        60,
        0.0,
    )
    .await?;
    let expected_payable = (args.commissions as i64) * 29_995;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    // The accrual phase's commissions vest in 29 days; only these vest now.
    wait_until(deadline, "the vesting", || {
        seen.lock()
            .map(|s| s.vested >= args.commissions)
            .unwrap_or(false)
    })
    .await?;
    // Then until the read model settlement gathers from shows them all (a ledger check sums
    // every account of the brand: seconds each, so not often).
    loop {
        let check = client
            .check_ledger(pb::CheckLedgerRequest {
                brand_id: brand.clone(),
            })
            .await?
            .into_inner();
        let payable = check
            .accounts
            .iter()
            .find(|a| a.account == "member/*/payable")
            .map_or(0, |a| -a.balance_fen);
        if payable >= expected_payable {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up waiting for vesting ({payable} of {expected_payable} fen payable)"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    println!(
        "  {} commissions accrued and vested for {} members in {:.0} s",
        vested_sent.len(),
        args.members,
        started.elapsed().as_secs_f64()
    );
    let rss_before = args.payouts_pid.and_then(peak_rss_kib);
    let started = Instant::now();
    // A run that meets an overloaded database answers UNAVAILABLE (or ABORTED) part-way; the same
    // request again resumes the same batch, which is how a caller is meant to use it.
    let request = pb::RunSettlementRequest {
        brand_id: brand.clone(),
        request_id: uuid::Uuid::new_v4().to_string(),
        cutoff: Some(to_timestamp(chrono::Utc::now())),
    };
    let mut attempts = 0;
    let batch = loop {
        attempts += 1;
        match client.run_settlement(request.clone()).await {
            Ok(batch) => break batch.into_inner(),
            Err(status)
                if attempts < 30
                    && matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Aborted
                    ) =>
            {
                eprintln!(
                    "  settlement attempt {attempts}: {}; retrying the same request",
                    status.message()
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let rss_after = args.payouts_pid.and_then(peak_rss_kib);
    println!(
        "  settlement: {} commissions, {} lines, {} yuan in {:.1} s ({:.0} commissions/s, {attempts} attempt(s)); payouts peak RSS {} MiB (before the run {} MiB)",
        batch.commissions,
        batch.lines_count,
        scanloop_payouts::domain::money::yuan(batch.total.map_or(0, |m| m.amount_fen)),
        seconds,
        f64::from(batch.commissions) / seconds,
        rss_after.map_or("?".into(), |k| (k / 1024).to_string()),
        rss_before.map_or("?".into(), |k| (k / 1024).to_string()),
    );
    stop.cancel();
    Ok(())
}

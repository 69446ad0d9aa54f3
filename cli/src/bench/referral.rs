//! The referral phase of `scanloop bench`: the reaction chain from an activation through a
//! referral link to the attribution, against running activation, membership and referral
//! services. ActivateWarranty (with a referral token, a fresh code and a fresh buyer) is driven at
//! the bench's concurrency or rate; membership registers the buyer and announces them; referral
//! then appends ReferralAttributed. The phase reads the referral topic itself and counts an
//! activation done when its ReferralAttributed (or a ReferralHeld / ReferralRejected, which are
//! reported as not attributed) has been seen.
//!
//! Figures: attributions per second over the time from the first measured activation to the
//! last attribution's recording; latency from the activation's time (the payload's
//! `activated_at`, taken by activation when it handled the command) to the ReferralAttributed
//! envelope's `recorded_at` (both from the same machine's clock, millisecond precision); CPU per
//! attribution over the whole chain, the wait for the last attribution included.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use prost::Message as _;
use rdkafka::Message as _;
use scanloop_bus::EventEnvelope;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::common::v1::{BuyerIdentity, Money};
use scanloop_proto::membership::v1 as mem;
use scanloop_proto::membership::v1::membership_service_client::MembershipServiceClient;
use scanloop_proto::referral::v1 as pb;
use scanloop_proto::referral::v1::referral_service_client::ReferralServiceClient;
use scanloop_proto::time::{from_timestamp, to_timestamp};
use scanloop_service::access::AuthChannel;
use tokio_util::sync::CancellationToken;

use super::args::Args;
use super::harness::{PhaseResult, drive, latency_histogram};
use super::processes::{ServerPids, send_signal};

pub const ATTRIBUTE: &str = "referral attribution (chain)";
const BRAND: &str = "bench";
const ATTRIBUTED: &str = "scanloop.referral.v1.ReferralAttributed";
const HELD: &str = "scanloop.referral.v1.ReferralHeld";
const REJECTED: &str = "scanloop.referral.v1.ReferralRejected";

/// Where the three services of the chain answer, and the topic referral publishes to.
pub struct Chain<'a> {
    pub activation_addr: &'a str,
    pub membership_addr: &'a str,
    pub referral_addr: &'a str,
    pub referral_topic: &'a str,
    pub kafka_brokers: &'a str,
}

/// What referral decided for one activation, as seen on its topic.
enum Outcome {
    Attributed {
        activated_at: Option<DateTime<Utc>>,
        recorded_at: Option<DateTime<Utc>>,
    },
    Held,
    Rejected(String),
}

/// Outcomes by warranty stream id.
type Outcomes = Arc<Mutex<HashMap<String, Outcome>>>;

/// The measured activations' outcomes, counted.
struct Tally {
    attributed: u64,
    held: u64,
    /// By reason.
    rejected: HashMap<String, u64>,
    /// Activation's time → ReferralAttributed recorded, per attribution.
    latency_us: hdrhistogram::Histogram<u64>,
    last_recorded: Option<DateTime<Utc>>,
}

fn tally(outcomes: &Outcomes, activations: &[String]) -> Tally {
    let mut tally = Tally {
        attributed: 0,
        held: 0,
        rejected: HashMap::new(),
        latency_us: latency_histogram(),
        last_recorded: None,
    };
    let outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    for outcome in activations.iter().filter_map(|id| outcomes.get(id)) {
        match outcome {
            Outcome::Attributed {
                activated_at,
                recorded_at,
            } => {
                tally.attributed += 1;
                if let (Some(from), Some(to)) = (activated_at, recorded_at) {
                    let micros = (*to - *from).num_microseconds().unwrap_or(i64::MAX);
                    // Clocks of one machine; a negative span would be rounding.
                    let micros = u64::try_from(micros).unwrap_or(0).max(1);
                    tally.latency_us.saturating_record(micros);
                }
                tally.last_recorded = tally.last_recorded.max(*recorded_at);
            }
            Outcome::Held => tally.held += 1,
            Outcome::Rejected(reason) => *tally.rejected.entry(reason.clone()).or_default() += 1,
        }
    }
    tally
}

/// Sends SIGCONT to the paused services: they then catch up on the earlier phases' events
/// during this phase's warm-up, which waits for its own attributions.
fn resume(pids: &[Option<u32>]) -> anyhow::Result<()> {
    send_signal(pids, "CONT")
}

pub async fn phase(
    chain: &Chain<'_>,
    args: &Args,
    servers: &ServerPids,
) -> anyhow::Result<PhaseResult> {
    if args.resume_chain {
        resume(&[args.membership_pid, args.referral_pid])?;
    }
    let connections = (args.concurrency / 8).max(1);
    let mut clients = Vec::with_capacity(connections);
    let bearer = crate::credentials::bearer("bench")?;
    use crate::credentials::connect;
    for _ in 0..connections {
        clients.push(connect(chain.activation_addr, &bearer, ActivationServiceClient::new).await?);
    }
    let clients = Arc::new(clients);
    let membership = connect(chain.membership_addr, &bearer, MembershipServiceClient::new).await?;
    let referral = connect(chain.referral_addr, &bearer, ReferralServiceClient::new).await?;

    let referrers = args.referrers.max(1) as usize;
    eprintln!(
        "  issuing {} codes for the referral phase",
        args.referral_codes
    );
    let codes = issue(&clients[0], args.referral_codes).await?;
    anyhow::ensure!(
        codes.len() > referrers,
        "--referral-codes {} leaves no code after the {referrers} referrers",
        args.referral_codes
    );
    // Buyers of this run get phone numbers no earlier run used (with high probability): members
    // from earlier runs would already have a parent in the tree and take another path.
    let phones = Phones::for_run();
    let run = uuid::Uuid::new_v4().simple().to_string();

    let tokens = Arc::new(
        referrer_links(
            &clients,
            &membership,
            &referral,
            &codes[..referrers],
            phones,
            &run,
            Duration::from_secs(args.referral_wait_secs),
        )
        .await?,
    );

    let outcomes: Outcomes = Arc::default();
    let shutdown = CancellationToken::new();
    let watcher = watch(chain, outcomes.clone(), shutdown.clone()).await?;

    // Each activation's warranty stream id, for the stage (warm-up or measured) it belongs to.
    let activated: Arc<Mutex<Vec<String>>> = Arc::default();
    let purchased_at = to_timestamp(Utc::now() - chrono::Duration::days(1));
    let op = Arc::new({
        let (clients, codes, tokens, activated) = (
            clients.clone(),
            Arc::new(codes),
            tokens.clone(),
            activated.clone(),
        );
        move |i: u64| {
            let mut client = clients[i as usize % clients.len()].clone();
            // The first codes went to the referrers.
            let n = i as usize + referrers;
            let request = codes
                .get(n)
                .cloned()
                .map(|code| act::ActivateWarrantyRequest {
                    brand_id: BRAND.into(),
                    request_id: format!("bench-{run}-{i}"),
                    code,
                    buyer: Some(phone(phones.number(n as u64))),
                    channel: Some(act::PurchaseChannel {
                        kind: act::PurchaseChannelKind::Online as i32,
                        id: "tmall".into(),
                    }),
                    purchase_amount: Some(Money {
                        amount_fen: 199_900,
                        currency: "CNY".into(),
                    }),
                    purchased_at: Some(purchased_at),
                    referral_token: tokens[i as usize % tokens.len()].clone(),
                    device_serial: String::new(),
                });
            let activated = activated.clone();
            async move {
                let request = request
                    .ok_or_else(|| anyhow::anyhow!("out of codes: raise --referral-codes"))?;
                let warranty = client.activate_warranty(request).await?.into_inner();
                let stream_id = scanloop_activation::domain::warranty::stream_id(
                    BRAND,
                    warranty.batch_id.parse()?,
                    u32::try_from(warranty.serial)?,
                );
                activated
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(stream_id);
                Ok(())
            }
        }
    });
    let next = Arc::new(AtomicU64::new(0));
    let wait = Duration::from_secs(args.referral_wait_secs);

    // Warm-up: also drains what membership and referral still had to do from earlier phases
    // (the activation phases' WarrantyActivated), so the measured figures are this chain's.
    let _ = drive(
        args,
        Duration::from_secs(args.warmup_secs),
        op.clone(),
        next.clone(),
    )
    .await;
    let warm_up = take(&activated);
    let pending = wait_for(&outcomes, &warm_up, wait).await;
    if pending > 0 {
        eprintln!(
            "  warm-up: {pending} of {} activations still without an outcome after {} s",
            warm_up.len(),
            wait.as_secs()
        );
    }

    let table_ops_before = servers.table_ops().await;
    let cpu_before = servers.sample();
    let started_at = Utc::now();
    let started = Instant::now();
    let (_, _, failed) = drive(args, Duration::from_secs(args.duration_secs), op, next).await;
    let load_secs = started.elapsed().as_secs_f64();
    let measured = take(&activated);
    let missing = wait_for(&outcomes, &measured, wait).await;
    let cpu = servers.sample().since(&cpu_before);
    let table_ops = servers.table_ops_since(table_ops_before).await;
    let waited = started.elapsed();
    shutdown.cancel();
    let _ = watcher.await;

    let counted = tally(&outcomes, &measured);
    // First measured activation → last attribution recorded; the bench's own clock when the
    // recording time is missing.
    let elapsed = counted
        .last_recorded
        .and_then(|last| (last - started_at).to_std().ok())
        .unwrap_or(waited);
    eprintln!(
        "  {ATTRIBUTE}: {} activations in {load_secs:.1} s, {} attributed within {:.1} s of \
         the start",
        measured.len(),
        counted.attributed,
        waited.as_secs_f64()
    );
    let note = outcome_note(measured.len(), failed, referrers, &counted, missing, wait);
    Ok(PhaseResult {
        name: ATTRIBUTE,
        ops: counted.attributed,
        // Failed activations and every activation that did not end attributed.
        errors: failed + (measured.len() as u64).saturating_sub(counted.attributed),
        elapsed,
        latency_us: counted.latency_us,
        cpu,
        note: Some(note),
        read_model_lag_us: None,
        table_ops,
    })
}

/// The line under the table that says what became of the measured activations.
fn outcome_note(
    activations: usize,
    failed: u64,
    referrers: usize,
    counted: &Tally,
    missing: usize,
    wait: Duration,
) -> String {
    let Tally {
        attributed,
        held,
        rejected,
        ..
    } = counted;
    let mut note = format!(
        "{ATTRIBUTE}: {activations} activations with a token ({failed} failed) over \
         {referrers} referrers' links, {attributed} attributed"
    );
    let rejected_count: u64 = rejected.values().sum();
    if *held > 0 || rejected_count > 0 || missing > 0 {
        let reasons: Vec<String> = rejected.iter().map(|(r, n)| format!("{n} {r}")).collect();
        note.push_str(&format!(
            "; NOT attributed: {held} held for review, {rejected_count} rejected ({}), \
             {missing} with no outcome after waiting {} s",
            reasons.join(", "),
            wait.as_secs()
        ));
    }
    note.push_str(&velocity_note());
    note
}

/// How the output names the velocity limits referral runs with (scripts/bench raises them and
/// exports the same variables to this process).
fn velocity_note() -> String {
    match (
        std::env::var("SCANLOOP_REFERRALS_MAX_PER_HOUR"),
        std::env::var("SCANLOOP_REFERRALS_MAX_PER_DAY"),
    ) {
        (Ok(hour), Ok(day)) => format!(
            "; referral ran with its velocity limits raised (SCANLOOP_REFERRALS_MAX_PER_HOUR={hour}, \
             SCANLOOP_REFERRALS_MAX_PER_DAY={day}) so that review holds do not cap the run; the \
             checks still run"
        ),
        _ => "; referral's velocity limits are its own (by default 20 an hour and 100 a day per \
              referrer; beyond them attributions are held for review)"
            .into(),
    }
}

async fn issue(
    client: &ActivationServiceClient<AuthChannel>,
    quantity: u32,
) -> anyhow::Result<Vec<String>> {
    super::activation::issue_codes(client, BRAND, "BENCH-REF", quantity).await
}

/// Phone numbers for the run's referrers and buyers: `17` and nine digits from a random base.
#[derive(Clone, Copy)]
struct Phones {
    base: u64,
}

impl Phones {
    fn for_run() -> Self {
        Self {
            base: (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as u64,
        }
    }

    fn number(self, n: u64) -> String {
        format!("17{:09}", (self.base + n) % 1_000_000_000)
    }
}

fn phone(number: String) -> BuyerIdentity {
    BuyerIdentity {
        kind: Some(Kind::PhoneNumber(number)),
    }
}

/// Sets up one referrer per code in `codes` and answers their links' tokens.
async fn referrer_links(
    clients: &[ActivationServiceClient<AuthChannel>],
    membership: &MembershipServiceClient<AuthChannel>,
    referral: &ReferralServiceClient<AuthChannel>,
    codes: &[String],
    phones: Phones,
    run: &str,
    wait: Duration,
) -> anyhow::Result<Vec<String>> {
    eprintln!(
        "  {} referrers: activating, waiting for membership, creating links",
        codes.len()
    );
    let setup = codes.iter().enumerate().map(|(k, code)| {
        referrer_link(
            clients[k % clients.len()].clone(),
            membership.clone(),
            referral.clone(),
            code.clone(),
            phones.number(k as u64),
            format!("bench-{run}-referrer-{k}"),
            wait,
        )
    });
    try_join_all(setup).await
}

/// One referrer: activates a code without a token (the buyer becomes a member), waits until
/// membership has the member and referral has heard of them, and answers their link's token.
async fn referrer_link(
    activation: ActivationServiceClient<AuthChannel>,
    membership: MembershipServiceClient<AuthChannel>,
    referral: ReferralServiceClient<AuthChannel>,
    code: String,
    phone_number: String,
    request_id: String,
    wait: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + wait;
    let request = act::ActivateWarrantyRequest {
        brand_id: BRAND.into(),
        request_id,
        code,
        buyer: Some(phone(phone_number.clone())),
        channel: Some(act::PurchaseChannel {
            kind: act::PurchaseChannelKind::Online as i32,
            id: "tmall".into(),
        }),
        purchase_amount: Some(Money {
            amount_fen: 199_900,
            currency: "CNY".into(),
        }),
        purchased_at: Some(to_timestamp(Utc::now() - chrono::Duration::days(1))),
        referral_token: String::new(),
        device_serial: String::new(),
    };
    // The same request id on every attempt: a retry is answered as the first activation.
    until_found(deadline, "activation of a referrer's code", || {
        let (mut activation, request) = (activation.clone(), request.clone());
        async move { activation.activate_warranty(request).await }
    })
    .await?;
    let member = until_found(deadline, "membership to register a referrer", || {
        let mut membership = membership.clone();
        let request = mem::GetMemberRequest {
            brand_id: BRAND.into(),
            by: Some(mem::get_member_request::By::Identity(phone(
                phone_number.clone(),
            ))),
        };
        async move { membership.get_member(request).await }
    })
    .await?;
    // Referral learns members from membership's events: NOT_FOUND until it has.
    let link = until_found(deadline, "referral to hear of a referrer", || {
        let mut referral = referral.clone();
        let request = pb::CreateLinkRequest {
            brand_id: BRAND.into(),
            // A fresh id per attempt: an id answers its first result again.
            request_id: uuid::Uuid::new_v4().to_string(),
            member_id: member.member_id.clone(),
            sku: "BENCH-REF".into(),
            campaign_id: String::new(),
        };
        async move { referral.create_link(request).await }
    })
    .await?;
    Ok(link.token)
}

/// Repeats `call` while it answers NOT_FOUND (not there yet) or UNAVAILABLE / ABORTED (the
/// database is busy: membership and referral catch up on the earlier phases meanwhile), until
/// `deadline`.
async fn until_found<T, F, Fut>(deadline: Instant, what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    // Backing off: the referrers poll at once, while membership may still be busy with the
    // earlier phases' activations.
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::Unavailable | tonic::Code::Aborted
                ) =>
            {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "gave up waiting for {what}: {}",
                    status.message()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 3 / 2).min(Duration::from_secs(1));
            }
            Err(status) => return Err(status.into()),
        }
    }
}

/// Reads referral's topic from its current end (before any activation of this phase) and notes
/// each activation's outcome.
async fn watch(
    chain: &Chain<'_>,
    outcomes: Outcomes,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let topic = chain.referral_topic.to_owned();
    let consumer = crate::topic_tail::from_end(chain.kafka_brokers, &topic)?;
    Ok(tokio::spawn(async move {
        let mut errors = 0u32;
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                message = consumer.recv() => message,
            };
            match message {
                Ok(message) => note_outcome(message.payload().unwrap_or_default(), &outcomes),
                Err(error) => {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("  reading {topic}: {error}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// Records what one record of referral's topic says about an activation; other events pass.
fn note_outcome(value: &[u8], outcomes: &Outcomes) {
    let Ok(envelope) = EventEnvelope::decode(value) else {
        return;
    };
    let payload = envelope.payload.as_slice();
    let (stream_id, outcome) = match envelope.event_type.as_str() {
        ATTRIBUTED => {
            let Ok(e) = pb::ReferralAttributed::decode(payload) else {
                return;
            };
            let outcome = Outcome::Attributed {
                activated_at: from_timestamp(e.activated_at.as_ref()),
                recorded_at: from_timestamp(envelope.recorded_at.as_ref()),
            };
            (e.warranty_stream_id, outcome)
        }
        HELD => {
            let Some(e) = pb::ReferralHeld::decode(payload)
                .ok()
                .and_then(|e| e.attribution)
            else {
                return;
            };
            (e.warranty_stream_id, Outcome::Held)
        }
        REJECTED => {
            let Ok(e) = pb::ReferralRejected::decode(payload) else {
                return;
            };
            let reason = pb::RejectionReason::try_from(e.reason).map_or_else(
                |_| format!("reason {}", e.reason),
                |r| r.as_str_name().to_owned(),
            );
            (e.warranty_stream_id, Outcome::Rejected(reason))
        }
        _ => return,
    };
    let mut outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
    match outcome {
        // An attribution is final (a held one may still be approved into one).
        attributed @ Outcome::Attributed { .. } => {
            outcomes.insert(stream_id, attributed);
        }
        other => {
            outcomes.entry(stream_id).or_insert(other);
        }
    }
}

fn take(activated: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *activated.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Waits until every one of `ids` has an outcome or `wait` has passed; answers how many have
/// none.
async fn wait_for(outcomes: &Outcomes, ids: &[String], wait: Duration) -> usize {
    let deadline = Instant::now() + wait;
    loop {
        let pending = {
            let outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
            ids.iter().filter(|id| !outcomes.contains_key(*id)).count()
        };
        if pending == 0 || Instant::now() >= deadline {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
    }

    fn record(event_type: &str, payload: Vec<u8>, recorded_at: &str) -> Vec<u8> {
        EventEnvelope {
            event_type: event_type.into(),
            schema_version: 1,
            recorded_at: Some(to_timestamp(at(recorded_at))),
            payload,
            ..EventEnvelope::default()
        }
        .encode_to_vec()
    }

    fn attributed(stream: &str, activated_at: &str) -> pb::ReferralAttributed {
        pb::ReferralAttributed {
            warranty_stream_id: stream.into(),
            activated_at: Some(to_timestamp(at(activated_at))),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_on_the_topic_are_counted_for_the_activations_asked_about() {
        let outcomes: Outcomes = Arc::default();
        for value in [
            record(
                ATTRIBUTED,
                attributed("w-1", "2026-01-01T10:00:00.000Z").encode_to_vec(),
                "2026-01-01T10:00:00.250Z",
            ),
            record(
                ATTRIBUTED,
                attributed("w-2", "2026-01-01T10:00:01.000Z").encode_to_vec(),
                "2026-01-01T10:00:01.040Z",
            ),
            record(
                HELD,
                pb::ReferralHeld {
                    attribution: Some(attributed("w-3", "2026-01-01T10:00:00Z")),
                    ..Default::default()
                }
                .encode_to_vec(),
                "2026-01-01T10:00:02Z",
            ),
            record(
                REJECTED,
                pb::ReferralRejected {
                    warranty_stream_id: "w-4".into(),
                    reason: pb::RejectionReason::SelfReferral as i32,
                    ..Default::default()
                }
                .encode_to_vec(),
                "2026-01-01T10:00:02Z",
            ),
            // Another run's attribution and an event that says nothing about an outcome.
            record(
                ATTRIBUTED,
                attributed("other", "2026-01-01T09:00:00Z").encode_to_vec(),
                "2026-01-01T11:00:00Z",
            ),
            record(
                "scanloop.referral.v1.LinkCreated",
                Vec::new(),
                "2026-01-01T10:00:00Z",
            ),
        ] {
            note_outcome(&value, &outcomes);
        }

        let ids: Vec<String> = ["w-1", "w-2", "w-3", "w-4", "w-5"].map(String::from).into();
        let counted = tally(&outcomes, &ids);
        assert_eq!((counted.attributed, counted.held), (2, 1));
        assert_eq!(
            counted.rejected,
            HashMap::from([("REJECTION_REASON_SELF_REFERRAL".to_owned(), 1)])
        );
        assert_eq!(counted.latency_us.len(), 2);
        // The histogram keeps three significant figures.
        let latency = &counted.latency_us;
        assert!(latency.equivalent(latency.min(), 40_000));
        assert!(latency.equivalent(latency.max(), 250_000));
        assert_eq!(counted.last_recorded, Some(at("2026-01-01T10:00:01.040Z")));
    }

    #[test]
    fn an_attribution_after_a_hold_counts_as_attributed() {
        let outcomes: Outcomes = Arc::default();
        let held = pb::ReferralHeld {
            attribution: Some(attributed("w-1", "2026-01-01T10:00:00Z")),
            ..Default::default()
        };
        note_outcome(
            &record(HELD, held.encode_to_vec(), "2026-01-01T10:00:01Z"),
            &outcomes,
        );
        note_outcome(
            &record(
                ATTRIBUTED,
                attributed("w-1", "2026-01-01T10:00:00Z").encode_to_vec(),
                "2026-01-01T10:05:00Z",
            ),
            &outcomes,
        );
        let counted = tally(&outcomes, &["w-1".to_owned()]);
        assert_eq!((counted.attributed, counted.held), (1, 0));
    }

    #[test]
    fn phone_numbers_are_eleven_digits_and_distinct_per_index() {
        let phones = Phones { base: 999_999_999 };
        assert_eq!(phones.number(0), "17999999999");
        assert_eq!(phones.number(1), "17000000000");
    }
}

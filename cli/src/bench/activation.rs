//! The gRPC phases of `scanloop bench`, against a running activation service: a trivial RPC
//! (VerifyCode: computation only) and ActivateWarranty end to end (code check, batch lookup,
//! conditional append, publish, reply), each activation on a fresh code.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::common::v1::{BuyerIdentity, Money};
use scanloop_proto::time::to_timestamp;
use scanloop_service::access::AuthChannel;

use super::args::Args;
use super::harness::{PhaseResult, lock, phase, phase_at};
use super::processes::ServerPids;

pub const VERIFY: &str = "VerifyCode (gRPC, no I/O)";
pub const ACTIVATE: &str = "ActivateWarranty (gRPC e2e)";
pub const ACTIVATE_OPEN: &str = "ActivateWarranty open loop";
const BRAND: &str = "bench";

pub async fn phases(
    addr: &str,
    args: &Args,
    servers: &ServerPids,
) -> anyhow::Result<Vec<PhaseResult>> {
    // One HTTP/2 connection per few in-flight calls, as a fleet of callers would have.
    let connections = (args.concurrency / 8).max(1);
    let mut clients = Vec::with_capacity(connections);
    let bearer = crate::credentials::bearer("bench")?;
    for _ in 0..connections {
        clients
            .push(crate::credentials::connect(addr, &bearer, ActivationServiceClient::new).await?);
    }
    let clients = Arc::new(clients);

    eprintln!(
        "  issuing {} codes for the activation phase",
        args.activation_codes
    );
    let codes = issue_codes(&clients[0], BRAND, "BENCH-1", args.activation_codes).await?;
    let codes = Arc::new(codes);

    let verify = phase(VERIFY, args, servers, {
        let (clients, codes) = (clients.clone(), codes.clone());
        move |i| {
            let mut client = clients[i as usize % clients.len()].clone();
            let code = codes[i as usize % codes.len()].clone();
            async move {
                let reply = client
                    .verify_code(pb::VerifyCodeRequest {
                        brand_id: BRAND.into(),
                        code,
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(reply.authentic, "a printed code did not verify");
                Ok(())
            }
        }
    })
    .await;

    let activations = Activations {
        codes,
        // Each activation takes the next unused code, across the phases.
        next_code: Arc::new(AtomicUsize::new(0)),
        // Request ids are unique per run: a brand remembers ids for 7 days across its streams.
        run: uuid::Uuid::new_v4().simple().to_string(),
        purchased_at: to_timestamp(chrono::Utc::now() - chrono::Duration::days(1)),
    };
    let activate = phase(ACTIVATE, args, servers, {
        let (clients, activations) = (clients.clone(), activations.clone());
        move |i| {
            let client = clients[i as usize % clients.len()].clone();
            let request = activations.next_request();
            async move {
                activate_one(client, request?).await?;
                Ok(())
            }
        }
    })
    .await;

    // Open loop at half the closed loop's rate: latency from each activation's scheduled
    // start, and for every LAG_SAMPLE_EVERYth activation how long until GetWarranty shows it.
    let half = activate.ops as f64 / activate.elapsed.as_secs_f64() / 2.0;
    let lags = Arc::new(Mutex::new(super::harness::latency_histogram()));
    let watchers = Arc::new(Mutex::new(Vec::new()));
    let mut open = phase_at(ACTIVATE_OPEN, args, half.max(1.0), servers, {
        let (clients, activations) = (clients.clone(), activations.clone());
        let (lags, watchers) = (lags.clone(), watchers.clone());
        move |i| {
            let client = clients[i as usize % clients.len()].clone();
            let request = activations.next_request();
            let (lags, watchers) = (lags.clone(), watchers.clone());
            async move {
                let request = request?;
                let code = request.code.clone();
                let warranty = activate_one(client.clone(), request).await?;
                if i % LAG_SAMPLE_EVERY == 0 {
                    let watcher = tokio::spawn(watch_read_model(client, code, warranty, lags));
                    lock(&watchers).push(watcher);
                }
                Ok(())
            }
        }
    })
    .await;
    let watchers: Vec<_> = std::mem::take(&mut *lock(&watchers));
    futures::future::join_all(watchers).await;
    open.note = Some(format!(
        "{ACTIVATE_OPEN}: open loop at {half:.0}/s (half the closed loop's rate)"
    ));
    open.read_model_lag_us = Some(lock(&lags).clone());
    Ok(vec![verify, activate, open])
}

/// Every this many activations of the open-loop phase, one is watched until the read model
/// shows it (polling it costs reads, which the phase then also carries).
const LAG_SAMPLE_EVERY: u64 = 25;

/// What the activation phases share: the codes and where they have got to.
#[derive(Clone)]
struct Activations {
    codes: Arc<Vec<String>>,
    next_code: Arc<AtomicUsize>,
    run: String,
    purchased_at: prost_types::Timestamp,
}

impl Activations {
    fn next_request(&self) -> anyhow::Result<pb::ActivateWarrantyRequest> {
        let i = self.next_code.fetch_add(1, Ordering::Relaxed);
        let code = self
            .codes
            .get(i)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("out of codes: raise --activation-codes"))?;
        Ok(pb::ActivateWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: format!("bench-{}-{i}", self.run),
            code,
            buyer: Some(BuyerIdentity {
                kind: Some(Kind::PhoneNumber(format!("139{:08}", i % 100_000_000))),
            }),
            channel: Some(pb::PurchaseChannel {
                kind: pb::PurchaseChannelKind::Online as i32,
                id: "tmall".into(),
            }),
            purchase_amount: Some(Money {
                amount_fen: 199_900,
                currency: "CNY".into(),
            }),
            purchased_at: Some(self.purchased_at),
            referral_token: String::new(),
            device_serial: String::new(),
        })
    }
}

async fn activate_one(
    mut client: ActivationServiceClient<AuthChannel>,
    request: pb::ActivateWarrantyRequest,
) -> anyhow::Result<pb::Warranty> {
    Ok(client.activate_warranty(request).await?.into_inner())
}

/// Polls GetWarranty for `code` until it shows the activation `warranty` (its version), and
/// records the time from the activation (its `activated_at`, taken just before the append)
/// to the first reply that shows it.
async fn watch_read_model(
    mut client: ActivationServiceClient<AuthChannel>,
    code: String,
    warranty: pb::Warranty,
    lags: Arc<Mutex<Histogram<u64>>>,
) {
    let Some(activated_at) = scanloop_proto::time::from_timestamp(warranty.activated_at.as_ref())
    else {
        return;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let shown = client
            .get_warranty(pb::GetWarrantyRequest {
                brand_id: BRAND.into(),
                by: Some(pb::get_warranty_request::By::Code(code.clone())),
            })
            .await
            .is_ok_and(|reply| reply.get_ref().version >= warranty.version);
        if shown {
            let lag = (chrono::Utc::now() - activated_at)
                .num_microseconds()
                .unwrap_or(0);
            lock(&lags).saturating_record(lag.max(1) as u64);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    eprintln!("  the read model did not show {code} within 30 s");
}

/// Issues a batch of `quantity` codes of `sku` and answers them.
pub(crate) async fn issue_codes(
    client: &ActivationServiceClient<AuthChannel>,
    brand_id: &str,
    sku: &str,
    quantity: u32,
) -> anyhow::Result<Vec<String>> {
    let request = pb::IssueBatchRequest {
        brand_id: brand_id.into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        sku: sku.into(),
        product_model: "bench".into(),
        warranty_months: 24,
        quantity,
        key_id: "k1".into(),
    };
    Ok(crate::cluster::issue_batch(client, request).await?.1)
}

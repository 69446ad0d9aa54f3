//! The gRPC phases of `scanloop bench`, against a running activation service: a trivial RPC
//! (VerifyCode: computation only) and ActivateWarranty end to end (code check, batch lookup,
//! conditional append, publish, reply), each activation on a fresh code.

use std::sync::Arc;

use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_proto::common::v1::buyer_identity::Kind;
use scanloop_proto::common::v1::{BuyerIdentity, Money};
use scanloop_proto::time::to_timestamp;
use scanloop_service::access::AuthChannel;

use crate::bench::{Args, PhaseResult, ServerPids, phase};

pub const VERIFY: &str = "VerifyCode (gRPC, no I/O)";
pub const ACTIVATE: &str = "ActivateWarranty (gRPC e2e)";
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

    let purchased_at = to_timestamp(chrono::Utc::now() - chrono::Duration::days(1));
    // Request ids are unique per run: a brand remembers ids for 7 days across its streams.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let activate = phase(ACTIVATE, args, servers, {
        let (clients, codes, run) = (clients.clone(), codes.clone(), run.clone());
        move |i| {
            let mut client = clients[i as usize % clients.len()].clone();
            let code = codes.get(i as usize).cloned();
            let request = code.map(|code| pb::ActivateWarrantyRequest {
                brand_id: BRAND.into(),
                request_id: format!("bench-{run}-{i}"),
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
                purchased_at: Some(purchased_at),
                referral_token: String::new(),
                device_serial: String::new(),
            });
            async move {
                let request = request
                    .ok_or_else(|| anyhow::anyhow!("out of codes: raise --activation-codes"))?;
                client.activate_warranty(request).await?;
                Ok(())
            }
        }
    })
    .await;
    Ok(vec![verify, activate])
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

//! What the access gate costs per call, in-process (no network, no handler): verifying the
//! token alone, and the whole admission (token, role, reading the body for its brand, the abuse
//! limits) of an ActivateWarranty-sized request.
//!
//! `cargo run --release -p scanloop-service --example gate_cost [calls]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use scanloop_service::access::gate::Policy;
use scanloop_service::access::limits::LimitSettings;
use scanloop_service::access::settings::KeyRing;
use scanloop_service::access::{
    AccessTable, Grant, Role, ServerSettings, Signer, Verifier, public, rpc,
};
use tonic::body::Body;

const ACTIVATION: AccessTable = &[
    rpc("IssueBatch", &[Role::Operator]),
    public("VerifyCode", &[Role::Landing]),
    public("ScanCode", &[Role::Landing]),
    public("ActivateWarranty", &[Role::Landing]),
    rpc("ExtendWarranty", &[Role::Operator]),
    rpc("VoidWarranty", &[Role::Operator]),
    rpc("RefundPurchase", &[Role::Operator]),
    rpc("GetWarranty", &[Role::Landing]),
    rpc("ListWarranties", &[Role::Operator]),
];

fn main() -> anyhow::Result<()> {
    let calls: u32 = std::env::args().nth(1).map_or(Ok(20_000), |n| n.parse())?;
    let signer = Signer::generate("bench");
    let verifier = Verifier::new(&[signer.public_jwk()])?;
    let token = signer.issue(&Grant {
        subject: "landing-bench".into(),
        brands: vec!["acme".into()],
        roles: vec![Role::Landing],
        ttl: Duration::from_secs(3_600),
    })?;

    let started = Instant::now();
    for _ in 0..calls {
        verifier.verify(&token)?;
    }
    let verify = started.elapsed() / calls;

    let settings = ServerSettings {
        limits: LimitSettings {
            per_brand: u32::MAX,
            per_client: u32::MAX,
        },
        ..ServerSettings::trusting(verifier)
    };
    let policy = Arc::new(Policy::new(
        "scanloop.activation.v1.ActivationService",
        ACTIVATION,
        KeyRing::load(&settings)?,
        settings.limits,
        false,
    )?);
    // brand_id (field 1) then ~200 bytes of other fields, as an activation request carries.
    let mut message = Vec::new();
    prost::encoding::string::encode(1, &"acme".to_owned(), &mut message);
    prost::encoding::bytes::encode(9, &vec![7u8; 200], &mut message);
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let frame = bytes::Bytes::from(frame);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let started = Instant::now();
    runtime.block_on(async {
        for i in 0..calls {
            let request = http::Request::builder()
                .method("POST")
                .uri("http://bench/scanloop.activation.v1.ActivationService/ActivateWarranty")
                .header("authorization", format!("Bearer {token}"))
                .header("x-scanloop-client", format!("buyer-{}", i % 1_000))
                .body(Body::new(http_body_util::Full::new(frame.clone())))?;
            policy
                .admit(request)
                .await
                .map_err(|status| anyhow::anyhow!("refused: {status:?}"))?;
        }
        anyhow::Ok(())
    })?;
    let admit = started.elapsed() / calls;
    println!("calls: {calls}");
    println!(
        "token verification (Ed25519 + claims): {:>7.1} µs per call",
        micros(verify)
    );
    println!(
        "whole admission (token, role, brand, limits): {:>7.1} µs per call",
        micros(admit)
    );
    println!(
        "  of which verification: {:.0}%",
        100.0 * micros(verify) / micros(admit)
    );
    Ok(())
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test
//! `scanloop batch issue` against an activation service on the devstack: the file the print shop
//! gets, a run resumed from a torn file ending byte for byte where a whole run ends, and a file
//! of another batch refused.

mod run;

use scanloop_config::Secret;
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;
use scanloop_service::access::Role;
use tokio_util::sync::CancellationToken;

const BRAND: &str = "acme";

async fn activation() -> (String, CancellationToken) {
    let session = scanloop_testkit::session().await.unwrap();
    let keyspace = scanloop_testkit::unique_name("test_cli_batch");
    scanloop_storage::migrate(
        &session,
        &keyspace,
        1,
        "",
        &scanloop_activation::migrations(),
    )
    .await
    .unwrap();
    let topic = scanloop_testkit::fresh_topic("cli.batch", 1).await.unwrap();
    let referral_topic = scanloop_testkit::fresh_topic("cli.batch.ref", 1)
        .await
        .unwrap();
    let (listener, addr) = scanloop_testkit::serving::listener().await.unwrap();
    let config = scanloop_activation::config::Config {
        service: scanloop_service::ServiceConfig {
            infra: scanloop_testkit::serving::infra(),
            server: scanloop_testkit::serving::server_settings(),
            grpc_addr: addr.clone(),
            keyspace: keyspace.clone(),
            topic,
            projection_group: format!("{keyspace}-projections"),
            reaction_group: format!("{keyspace}-reactions"),
            identity_secret: Secret::new("test-identity-secret".into()),
        },
        code_secret: Secret::new("test-code-secret".into()),
        code_base_url: "https://w.example.cn".into(),
        return_window_days: 30,
        suspicious_scan_minutes: 360,
        purchase_max_age_days: 1826,
        purchase_max_fen: 100_000_000,
        purchase_max_fen_by_brand: Default::default(),
        referral_topic,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(scanloop_activation::server::run(
        config,
        listener,
        shutdown.clone(),
    ));
    (addr, shutdown)
}

/// Runs `scanloop batch issue` as an operator; returns (success, stdout + stderr). (Awaited, not
/// blocking: the service under test runs on this test's runtime.)
async fn issue(addr: &str, request_id: &str, out: &std::path::Path) -> (bool, String) {
    let token = scanloop_testkit::serving::token("operator-ops", &[BRAND], &[Role::Operator]);
    let mut command = run::args(["batch", "issue", "--addr", addr, "--brand", BRAND]);
    command.extend(run::args([
        "--request-id",
        request_id,
        "--sku",
        "KT-35",
        "--quantity",
        "5000",
    ]));
    command.extend(run::args([
        "--model",
        "KFR-35GW split air conditioner",
        "--out",
    ]));
    command.push(out.into());
    run::scanloop(command, &token).await
}

#[tokio::test]
async fn a_batch_file_is_written_resumed_from_a_torn_file_and_kept_to_its_batch() {
    let (addr, shutdown) = activation().await;
    scanloop_testkit::serving::connect(&addr, ActivationServiceClient::new)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(scanloop_testkit::unique_name("batch"));
    std::fs::create_dir_all(&dir).unwrap();
    let whole = dir.join("whole.csv");
    let request_id = uuid::Uuid::new_v4().to_string();

    let (ok, output) = issue(&addr, &request_id, &whole).await;
    assert!(ok, "{output}");
    let text = std::fs::read_to_string(&whole).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5_001);
    assert_eq!(lines[0], "serial,code");
    assert!(
        lines[1].starts_with("1,https://w.example.cn/acme/k1."),
        "{}",
        lines[1]
    );
    assert!(lines[5_000].starts_with("5000,https://w.example.cn/acme/k1."));
    // The codes are the batch's: the service vouches for the last one.
    let last = lines[5_000].split_once(',').unwrap().1;
    let mut client = scanloop_testkit::serving::connect(&addr, ActivationServiceClient::new)
        .await
        .unwrap();
    let verified = client
        .verify_code(pb::VerifyCodeRequest {
            brand_id: BRAND.into(),
            code: last.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.authentic);
    assert_eq!(verified.serial, 5_000);

    // A run that stopped in the middle of a line: the same command finishes the same file.
    let torn = dir.join("torn.csv");
    let cut = text.find("\n2500,").unwrap() + 10;
    std::fs::write(&torn, &text[..cut]).unwrap();
    let (ok, output) = issue(&addr, &request_id, &torn).await;
    assert!(ok, "{output}");
    assert!(output.contains("2499 already there"), "{output}");
    assert_eq!(std::fs::read_to_string(&torn).unwrap(), text);

    // Another batch's request id cannot continue this file.
    std::fs::write(&torn, &text[..cut]).unwrap();
    let (ok, output) = issue(&addr, &uuid::Uuid::new_v4().to_string(), &torn).await;
    assert!(!ok, "{output}");
    assert!(output.contains("was written for another batch"), "{output}");
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Secrets fail fast: outside development mode the binary refuses to start without real secrets
//! and says what to set; in development mode (SCANLOOP_ENV=dev) it runs with the built-in one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;
mod ops;

use std::process::Command;

use common::fresh_env;
use ops::{ACTIVATION, LoggedService};
use tonic_health::pb::health_check_response::ServingStatus;

/// Runs the binary to its exit with `env` on top of a clean slate (no inherited SCANLOOP_*).
fn run_to_exit(env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scanloop-activation"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SCANLOOP_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("SCANLOOP_GRPC_ADDR", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_secrets_outside_development_mode_the_service_refuses_to_start_and_says_what_to_set() {
    let (ok, stderr) = run_to_exit(&[]);
    assert!(!ok, "started without secrets: {stderr}");
    assert!(
        stderr.contains(
            "SCANLOOP_CODE_SECRET is not set: set SCANLOOP_CODE_SECRET to a random value"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("SCANLOOP_ENV=dev"), "{stderr}");

    let (ok, stderr) = run_to_exit(&[
        ("SCANLOOP_CODE_SECRET", "a-real-code-secret-of-some-length"),
        ("SCANLOOP_IDENTITY_SECRET", "scanloop-development-secret"),
    ]);
    assert!(!ok, "started with the development secret: {stderr}");
    assert!(
        stderr.contains("SCANLOOP_IDENTITY_SECRET is a published development value"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("a-real-code-secret"),
        "secrets stay out of the output: {stderr}"
    );
}

#[tokio::test]
async fn in_development_mode_the_service_runs_without_secrets() {
    let env = fresh_env("dev_secret").await;
    // LoggedService sets SCANLOOP_ENV=dev; empty means unset.
    let service = LoggedService::start(
        &env,
        &[
            ("SCANLOOP_CODE_SECRET", ""),
            ("SCANLOOP_IDENTITY_SECRET", ""),
        ],
    )
    .await;
    assert_eq!(
        service.health(ACTIVATION).await.unwrap(),
        ServingStatus::Serving
    );
    assert!(
        service
            .log()
            .iter()
            .any(|l| l.contains("using the development secret")),
        "the fallback is announced: {:#?}",
        service.log()
    );
}

#[test]
fn outside_development_mode_the_service_needs_the_keys_that_sign_its_callers() {
    let secrets = [
        ("SCANLOOP_CODE_SECRET", "a-real-code-secret-of-some-length"),
        (
            "SCANLOOP_IDENTITY_SECRET",
            "a-real-identity-secret-of-length",
        ),
    ];
    let (ok, stderr) = run_to_exit(&secrets);
    assert!(!ok, "started without token keys: {stderr}");
    assert!(stderr.contains("SCANLOOP_AUTH_JWKS"), "{stderr}");
    assert!(stderr.contains("scanloop token keygen"), "{stderr}");

    // The repository's development key set is empty: a production service refuses it too.
    let development = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/dev/jwks.json");
    let mut env = secrets.to_vec();
    env.push(("SCANLOOP_AUTH_JWKS", development));
    let (ok, stderr) = run_to_exit(&env);
    assert!(!ok, "started with an empty key set: {stderr}");
    assert!(stderr.contains("the token key set is empty"), "{stderr}");
}

//! Secrets fail fast: outside development mode the membership binary refuses to start without
//! SCANLOOP_IDENTITY_SECRET and says what to set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::process::Command;

#[test]
fn without_the_identity_secret_outside_development_mode_the_service_refuses_to_start() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scanloop-membership"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SCANLOOP_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("SCANLOOP_GRPC_ADDR", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started without a secret: {stderr}"
    );
    assert!(
        stderr.contains(
            "SCANLOOP_IDENTITY_SECRET is not set: set SCANLOOP_IDENTITY_SECRET to a random value"
        ),
        "{stderr}"
    );
}

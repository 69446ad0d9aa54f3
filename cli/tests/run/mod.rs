//! Running the `scanloop` binary from a test, and pointing it at a test's services.

#![allow(dead_code)] // not every test file uses each

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Runs `scanloop` with `args`, calling with `token`; answers (success, stdout + stderr).
/// Awaited, not blocking: the services under test run on the calling test's runtime.
pub async fn scanloop(args: Vec<OsString>, token: &str) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_scanloop"))
        .args(args)
        .env("SCANLOOP_TOKEN", token)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The arguments naming the four services' addresses, from a cluster's address map (by
/// protobuf service name).
pub fn four_services(addrs: &BTreeMap<&'static str, String>) -> Vec<OsString> {
    [
        (
            "--activation-addr",
            "scanloop.activation.v1.ActivationService",
        ),
        (
            "--membership-addr",
            "scanloop.membership.v1.MembershipService",
        ),
        ("--referral-addr", "scanloop.referral.v1.ReferralService"),
        ("--payouts-addr", "scanloop.payouts.v1.PayoutsService"),
    ]
    .into_iter()
    .flat_map(|(flag, service)| [flag.into(), addrs[service].clone().into()])
    .collect()
}

/// `&str`s as arguments.
pub fn args<const N: usize>(words: [&str; N]) -> Vec<OsString> {
    words.into_iter().map(OsString::from).collect()
}

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test
//! `scanloop loadgen` against all four services in-process on the devstack: a small population
//! set up, a few seconds of open-loop load, and a report in which every referred activation's
//! level-1 commission accrued (the loop closed for each) and no RPC failed.

#[path = "../../services/payouts/tests/common/mod.rs"]
mod common;

use scanloop_service::access::Role;

#[tokio::test]
async fn the_load_generator_drives_the_whole_loop_and_reports_it() {
    let world = common::Loop::start("loadgen").await;
    let addr = |service: &str| world.addrs[service].clone();
    let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let brands = [format!("lg{run}-0"), format!("lg{run}-1")];
    // The roles the load acts in, for the run's brands only.
    let token = scanloop_testkit::serving::token(
        "loadgen-test",
        &[brands[0].as_str(), brands[1].as_str()],
        &[
            Role::Landing,
            Role::MemberApp,
            Role::Operator,
            Role::Finance,
            Role::Auditor,
        ],
    );
    // Awaited, not blocking: the services under test run on this test's runtime.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_scanloop"))
        .args([
            "loadgen",
            "--run-id",
            run,
            "--brands",
            "2",
            "--members",
            "6",
        ])
        .args(["--rate", "5", "--duration-secs", "4", "--drain-secs", "60"])
        // Every referred sale should then accrue: no fraud attempts, no returns.
        .args(["--fraud-rate", "0", "--return-rate", "0"])
        .args(["--payouts-topic", &world.payouts_topic])
        .args([
            "--activation-addr",
            &addr("scanloop.activation.v1.ActivationService"),
            "--membership-addr",
            &addr("scanloop.membership.v1.MembershipService"),
            "--referral-addr",
            &addr("scanloop.referral.v1.ReferralService"),
            "--payouts-addr",
            &addr("scanloop.payouts.v1.PayoutsService"),
        ])
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
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("sales: 20 sent, 0 skipped (over the in-flight cap), 20 activated, 0 errors"),
        "{text}"
    );
    for rpc in ["ScanCode", "ResolveLink", "ActivateWarranty"] {
        let row = text
            .lines()
            .find(|line| line.starts_with(rpc))
            .unwrap_or_else(|| panic!("no {rpc} row in:\n{text}"));
        assert!(row.ends_with(" 0"), "{rpc} had errors: {row}");
    }
    // "loop (…): N of M referred activations": every referred activation accrued.
    let line = text
        .lines()
        .find(|line| line.starts_with("loop (activation recorded"))
        .unwrap_or_else(|| panic!("no loop line in:\n{text}"));
    let figures: Vec<u64> = line
        .split_once("): ")
        .unwrap()
        .1
        .split(' ')
        .take(3)
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(figures.len(), 2, "{line}");
    assert!(figures[1] > 0, "{line}");
    assert_eq!(figures[0], figures[1], "{line}");
    world.stop().await;
}

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test
//! `scanloop loadgen` against all four services in-process on the devstack: a small population
//! set up, a few seconds of open-loop load, and a report in which every referred activation's
//! level-1 commission accrued (the loop closed for each) and no RPC failed.

#[path = "../../services/payouts/tests/common/mod.rs"]
mod common;
mod run;

use scanloop_service::access::Role;

#[tokio::test]
async fn the_load_generator_drives_the_whole_loop_and_reports_it() {
    let world = common::Loop::start("loadgen").await;
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let brands = [format!("lg{run_id}-0"), format!("lg{run_id}-1")];
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
    let mut command = run::args([
        "loadgen",
        "--run-id",
        run_id,
        "--brands",
        "2",
        "--members",
        "6",
    ]);
    command.extend(run::args([
        "--rate",
        "5",
        "--duration-secs",
        "4",
        "--drain-secs",
        "60",
    ]));
    // Every referred sale should then accrue: no fraud attempts, no returns.
    command.extend(run::args(["--fraud-rate", "0", "--return-rate", "0"]));
    command.extend(run::args(["--payouts-topic", &world.payouts_topic]));
    command.extend(run::args(["--referral-topic", &world.referral_topic]));
    command.extend(run::four_services(&world.addrs));
    let (ok, text) = run::scanloop(command, &token).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("sales: 20 sent, 0 skipped (over the in-flight cap), 20 activated, 0 errors"),
        "{text}"
    );
    for rpc in ["ScanCode", "ResolveLink", "ActivateWarranty"] {
        let row = text
            .lines()
            .find(|line| line.starts_with(rpc))
            .unwrap_or_else(|| panic!("no {rpc} row in:\n{text}"));
        // … count p50 p99 p99.9 errors retried
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(columns[columns.len() - 2], "0", "{rpc} had errors: {row}");
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
    // And each referred sale's outcome, read from the topics, is that accrual.
    let outcomes = text
        .lines()
        .find(|line| line.starts_with("referred sales: "))
        .unwrap_or_else(|| panic!("no referred sales line in:\n{text}"));
    assert_eq!(
        outcomes,
        format!("referred sales: {} level-1 commission accrued", figures[1]),
        "{text}"
    );
    world.stop().await;
}

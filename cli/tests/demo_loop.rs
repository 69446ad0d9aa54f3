#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test
//! `scanloop demo loop` (what `./scripts/demo` runs) against all four services in-process on
//! the devstack: the narrated loop runs to its end, every one of its own checks holding, and
//! prints the figures the loop must produce.

#[path = "../../services/payouts/tests/common/mod.rs"]
mod common;
mod run;

use scanloop_service::access::Role;

#[tokio::test]
async fn the_demo_runs_the_whole_loop_and_its_figures_are_the_loops() {
    let world = common::Loop::start("demoloop").await;
    let out = std::env::temp_dir().join(scanloop_testkit::unique_name("demo"));
    // The demo acts with one token when given one: every role it needs, for its brand only.
    let token = scanloop_testkit::serving::token(
        "demo-test",
        &[common::BRAND],
        &[
            Role::Landing,
            Role::MemberApp,
            Role::Operator,
            Role::Finance,
            Role::Auditor,
        ],
    );
    let mut command = run::args(["demo", "loop", "--brand", common::BRAND]);
    command.extend(run::args(["--window-lead-secs", "45", "--out"]));
    command.push(out.clone().into());
    command.extend(run::four_services(&world.addrs));
    command.extend(run::args(["--payouts-topic", &world.payouts_topic]));
    let (ok, text) = run::scanloop(command, &token).await;
    assert!(ok, "{text}");
    for expected in [
        "A: 3 scans, 2 shares, 5 comments in 30 days → KOC, tier 初级分享官 junior sharer",
        "assist 3/3 completed",
        "→ level 1 D, level 2 A",
        "A's level 1 on it: ¥199.95 → ¥0.00 reversed",
        "total ¥819.83",
        "→ balanced",
        "batch(es) agree with the read models; the ledger sums to 0",
        "activations      5 (1 returned)",
        "members          5",
        "KOCs             1",
        "attributed sales 4",
        "commission paid  ¥819.83",
        "reversals        1",
        "The loop closed",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let card = std::fs::read(out.join(format!("{}-A-share-card.png", common::BRAND))).unwrap();
    assert_eq!(&card[..4], b"\x89PNG");
    world.stop().await;
}

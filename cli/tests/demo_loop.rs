#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test
//! `scanloop demo loop` (what `./scripts/demo` runs) against all four services in-process on
//! the devstack: the narrated loop runs to its end, every one of its own checks holding, and
//! prints the figures the loop must produce. Then every service's read models, rebuilt from its
//! topic alone in fresh keyspaces, equal the ones the services projected, row by row.

#[path = "../../services/payouts/tests/common/mod.rs"]
mod common;
mod replay;
mod run;

use scanloop_service::access::Role;

#[tokio::test]
async fn the_demo_runs_the_whole_loop_its_figures_are_the_loops_and_its_read_models_replay() {
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
    // The demo's loop is the richest data set the tests make (returns, reversals, a paid batch),
    // so the replay check runs on it rather than on a loop of its own.
    let compared =
        every_topic_replayed_into_fresh_keyspaces_gives_the_same_read_models(&world).await;
    eprintln!("{compared} read-model rows rebuilt from the topics, equal to the services'");
    assert!(compared > 50, "only {compared} rows compared");
    world.stop().await;
}

/// Replays each service's topic through its projection into a fresh keyspace and compares every
/// table the projection declares; answers how many rows were compared.
async fn every_topic_replayed_into_fresh_keyspaces_gives_the_same_read_models(
    world: &common::Loop,
) -> usize {
    use replay::{Replay, Service};
    let [activation, membership, referral] = &world.cluster.keyspaces;
    let (act_topic, mem_topic, ref_topic, pay_topic) = (
        world.activation_topic.as_str(),
        world.membership_topic.as_str(),
        world.referral_topic.as_str(),
        world.payouts_topic.as_str(),
    );
    let services = [
        Service {
            keyspace: activation,
            topic: act_topic,
            reacts_to: vec![ref_topic],
        },
        Service {
            keyspace: membership,
            topic: mem_topic,
            reacts_to: vec![act_topic, ref_topic],
        },
        Service {
            keyspace: referral,
            topic: ref_topic,
            reacts_to: vec![act_topic, mem_topic],
        },
        Service {
            keyspace: &world.payouts_keyspace,
            topic: pay_topic,
            reacts_to: vec![ref_topic, act_topic],
        },
    ];
    replay::settle(&services).await;

    let session = scanloop_testkit::session().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let replays = [
        Replay::start(
            &session,
            &scanloop_activation::migrations(),
            |session, keyspace| async move {
                scanloop_activation::projections::ReadModels::new(session, &keyspace).await
            },
            &services[0],
            &shutdown,
        )
        .await,
        Replay::start(
            &session,
            &scanloop_membership::migrations(),
            |session, keyspace| async move {
                scanloop_membership::projections::ReadModels::new(session, &keyspace).await
            },
            &services[1],
            &shutdown,
        )
        .await,
        Replay::start(
            &session,
            &scanloop_referral::migrations(),
            |session, keyspace| async move {
                scanloop_referral::projections::ReadModels::new(session, &keyspace).await
            },
            &services[2],
            &shutdown,
        )
        .await
        // A link's clicks and unique visitors are counted by ResolveLink itself: a click is
        // not an event (it would cost a stream append per visit), so no replay rebuilds them.
        .except("funnel", &["clicks", "visitors"]),
        Replay::start(
            &session,
            &scanloop_payouts::migrations(),
            |session, keyspace| async move {
                scanloop_payouts::projections::ReadModels::new(session, &keyspace).await
            },
            &services[3],
            &shutdown,
        )
        .await,
    ];

    let mut compared = 0;
    for replay in &replays {
        compared += replay.compare(&session).await;
    }
    shutdown.cancel();
    let fresh: Vec<&str> = replays.iter().map(Replay::fresh).collect();
    scanloop_testkit::drop_keyspaces(&session, &fresh).await;
    compared
}

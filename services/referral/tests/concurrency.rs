#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Twenty friends activate at the same moment through one member's link: each purchase is
//! attributed once, each friend gets the referrer as their one parent, and the referrer's tree
//! counts twenty children.

mod common;

use std::collections::BTreeSet;

use common::*;
use scanloop_proto::referral::v1 as pb;

const FRIENDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_friends_activating_at_once_through_one_link_are_attributed_once_each() {
    let mut cluster = Cluster::start("concurrency").await;
    let codes = cluster.issue(BRAND, FRIENDS as u32 + 1).await;

    // The referrer buys first, then shares a link (no campaign).
    cluster
        .activate(activation(BRAND, &codes[0], "13700000000", "SN-REF", ""))
        .await;
    let referrer = cluster.member_of(BRAND, "13700000000").await;
    let link = cluster.link_for(BRAND, &referrer.member_id, "").await;

    // All twenty activations at once, each on its own task. The brand's default velocity limit
    // is 20 attributions per referrer per hour (more are held for review), so exactly 20 are
    // all attributed; a 21st would be held.
    let friend = |i: usize| {
        (
            format!("137000000{:02}", i + 1),
            format!("SN-F{:02}", i + 1),
        )
    };
    let mut activations = tokio::task::JoinSet::new();
    for (i, code) in codes[1..].iter().enumerate() {
        let (buyer, serial) = friend(i);
        let request = activation(BRAND, code, &buyer, &serial, &link.token);
        let mut client = cluster.activation.clone();
        activations.spawn(async move { client.activate_warranty(request).await });
    }
    let mut activated = 0;
    while let Some(done) = activations.join_next().await {
        done.unwrap().unwrap();
        activated += 1;
    }
    assert_eq!(activated, FRIENDS);

    let referrals = cluster
        .referrals_of(BRAND, &referrer.member_id, |r| r.len() >= FRIENDS)
        .await;
    assert_eq!(referrals.len(), FRIENDS);
    for referral in &referrals {
        assert_eq!(
            referral.status,
            pb::ReferralStatus::Attributed as i32,
            "{referral:?}"
        );
        assert_eq!(referral.referrer_member_id, referrer.member_id);
        assert_eq!(referral.token, link.token);
        // The referrer has no parent: there is no level 2.
        assert_eq!(referral.level2_member_id, "");
    }

    // Twenty different buyers, each with the referrer as their parent.
    let mut buyers = BTreeSet::new();
    for i in 0..FRIENDS {
        let (phone, _) = friend(i);
        let buyer = cluster.member_of(BRAND, &phone).await;
        // The parent binds right after the attribution is recorded.
        let tree = cluster
            .tree(BRAND, &buyer.member_id, |t| !t.parent_member_id.is_empty())
            .await;
        assert_eq!(tree.parent_member_id, referrer.member_id, "buyer {phone}");
        buyers.insert(buyer.member_id);
    }
    assert_eq!(buyers.len(), FRIENDS);
    let listed: BTreeSet<String> = referrals
        .iter()
        .map(|r| r.buyer_member_id.clone())
        .collect();
    assert_eq!(listed, buyers);

    let tree = cluster
        .tree(BRAND, &referrer.member_id, |t| {
            t.level1_count >= FRIENDS as u64
        })
        .await;
    assert_eq!(tree.level1_count, FRIENDS as u64);
    assert_eq!(
        tree.level1_member_ids
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        buyers
    );
    assert_eq!((tree.level2_count, tree.parent_member_id.as_str()), (0, ""));

    // On the referral topic: one link, and per friend one device claim, one attribution and
    // one parent, nothing held or rejected. The last of a sale's events is its ParentSet.
    let envelopes = eventually(
        || envelopes_on(&cluster.referral_topic),
        |e| count_by_type(e).get("ParentSet") >= Some(&FRIENDS),
    )
    .await;
    // Each binding first claims the root of the tree it joins (the referrer): once, or again
    // when twenty claims on one stream at once made it retry.
    let mut by_type = count_by_type(&envelopes);
    let claims = by_type.remove("RootClaimed").unwrap_or(0);
    assert!(claims >= FRIENDS, "{claims} root claims");
    assert_eq!(
        by_type,
        counts(&[
            ("LinkCreated", 1),
            ("DeviceAttributed", FRIENDS),
            ("ReferralAttributed", FRIENDS),
            ("ParentSet", FRIENDS),
        ])
    );
    cluster.stop().await;
}

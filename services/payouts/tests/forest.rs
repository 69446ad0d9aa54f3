#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Opposite referrals released at the same instant, through the gRPC APIs: members X and Y each
//! buy through the other's link at once. The tree stays a forest: one of them becomes the
//! other's parent, the other sale is revoked with CYCLE, neither lists itself in its own level 2,
//! and only one of the two sales earns commission.

mod common;

use common::*;
use scanloop_proto::payouts::v1 as pb;
use scanloop_proto::referral::v1 as rf;

const PAIRS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_referrals_at_the_same_instant_never_make_two_members_each_others_parent() {
    let mut world = Loop::start("forest").await;
    world
        .payouts
        .upsert_plan(two_level_plan(BRAND, 100))
        .await
        .unwrap();
    // Every member first buys on their own, then gets a link.
    let phone = |pair: usize, side: usize| format!("1360000{pair:02}{side:02}");
    let codes = world.issue(BRAND, (PAIRS * 4) as u32).await;
    let mut members = Vec::new();
    for pair in 0..PAIRS {
        let mut two = Vec::new();
        for side in 0..2 {
            let code = &codes[pair * 4 + side];
            let serial = format!("SN-{pair}-{side}");
            world
                .activate(activation(BRAND, code, &phone(pair, side), &serial, ""))
                .await;
            let member = world.member_of(BRAND, &phone(pair, side)).await.member_id;
            let link = world.link_for(BRAND, &member, "").await;
            two.push((member, link.token));
        }
        members.push(two);
    }

    // Each pair's two purchases through the other's link, all released at once.
    let mut activations = tokio::task::JoinSet::new();
    for (pair, two) in members.iter().enumerate() {
        for side in 0..2 {
            let other_token = &two[1 - side].1;
            let request = activation(
                BRAND,
                &codes[pair * 4 + 2 + side],
                &phone(pair, side),
                &format!("SN-{pair}-{side}-again"),
                other_token,
            );
            let mut client = world.activation.clone();
            activations.spawn(async move { client.activate_warranty(request).await });
        }
    }
    while let Some(done) = activations.join_next().await {
        done.unwrap().unwrap();
    }

    for (pair, two) in members.iter().enumerate() {
        let (x, y) = (&two[0].0, &two[1].0);
        // Both referrals end decided: one counts, the other is rejected with CYCLE (at the
        // judgement, or revoked when its binding found the cycle).
        let outcome = |r: &rf::Referral| (r.status, r.rejection_reason);
        let final_outcomes = |r: &[rf::Referral]| {
            r.iter().all(|r| {
                outcome(r) == (rf::ReferralStatus::Attributed as i32, 0)
                    || outcome(r)
                        == (
                            rf::ReferralStatus::Rejected as i32,
                            rf::RejectionReason::Cycle as i32,
                        )
            })
        };
        let both = eventually(
            || async {
                let of_x = world.referrals_of(BRAND, x, |r| !r.is_empty()).await;
                let of_y = world.referrals_of(BRAND, y, |r| !r.is_empty()).await;
                [of_x, of_y].concat()
            },
            |r: &Vec<rf::Referral>| {
                final_outcomes(r)
                    && r.iter()
                        .filter(|r| r.status == rf::ReferralStatus::Attributed as i32)
                        .count()
                        == 1
            },
        )
        .await;
        let statuses: Vec<(i32, i32)> = both.iter().map(outcome).collect();
        assert_eq!(statuses.len(), 2, "pair {pair}: {statuses:?}");
        assert!(
            final_outcomes(&both),
            "pair {pair}: one counts, the other is a cycle: {statuses:?}"
        );

        let tree_x = world.tree(BRAND, x, |_| true).await;
        let tree_y = world.tree(BRAND, y, |_| true).await;
        let parents = [
            tree_x.parent_member_id.as_str(),
            tree_y.parent_member_id.as_str(),
        ];
        assert!(
            parents == [y.as_str(), ""] || parents == ["", x.as_str()],
            "pair {pair}: exactly one is the other's parent: {parents:?}"
        );
        for tree in [&tree_x, &tree_y] {
            assert!(
                !tree.level2_member_ids.contains(&tree.member_id),
                "pair {pair}: {} lists itself in its level 2",
                tree.member_id
            );
        }

        // One sale pays its level 1. The other, if it was attributed before its binding found
        // the cycle, accrued and was reversed to nothing.
        let attributed = envelopes_on(&world.referral_topic)
            .await
            .iter()
            .filter(|e| e.event_type == "scanloop.referral.v1.ReferralAttributed")
            .map(|e| <rf::ReferralAttributed as prost::Message>::decode(e.payload.as_slice()))
            .map(Result::unwrap)
            .filter(|a| [x, y].contains(&&a.buyer_member_id))
            .count();
        assert!((1..=2).contains(&attributed), "pair {pair}: {attributed}");
        let commissions = |who: &str| {
            let client = world.payouts.clone();
            let who = who.to_owned();
            async move {
                let mut client = client;
                client
                    .list_commissions(pb::ListCommissionsRequest {
                        brand_id: BRAND.into(),
                        of: Some(pb::list_commissions_request::Of::Beneficiary(
                            member(&who).unwrap(),
                        )),
                        page: None,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .commissions
            }
        };
        let both = eventually(
            || async { [commissions(x).await, commissions(y).await].concat() },
            |c: &Vec<pb::Commission>| {
                c.len() == attributed
                    && c.iter().filter(|c| amount(&c.amount) > 0).count() == 1
                    && c.iter().all(|c| {
                        amount(&c.amount) > 0 || c.status == pb::CommissionStatus::Reversed as i32
                    })
            },
        )
        .await;
        assert_eq!(both.len(), attributed, "pair {pair}");
    }
    world.reconciled().await;
    world.stop().await;
}

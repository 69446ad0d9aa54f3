#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fraud and review through gRPC and Kafka with activation, membership and referral running:
//! each hard case is rejected with its reason (self-referral, same device, cycle, another
//! brand's token, an unknown token, a revoked token, an expired window) and never becomes a
//! commission-bearing event on the referral topic; velocity holds for review and the review
//! decides; an attribution that counts is revoked when fraud is found later; a buyer's parent is
//! never rebound; the brand's binding mode and store precedence.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use scanloop_config::ByBrand;
use scanloop_proto::activation::v1 as act;
use scanloop_proto::common::v1::{EventEnvelope, PageRequest};
use scanloop_proto::referral::v1 as pb;
use scanloop_referral::domain::rules::{BindingMode, Rules, StorePrecedence};
use tonic::Code;

const ATTRIBUTED: &str = "scanloop.referral.v1.ReferralAttributed";
const HELD: &str = "scanloop.referral.v1.ReferralHeld";
const REJECTED: &str = "scanloop.referral.v1.ReferralRejected";
const REVIEWED: &str = "scanloop.referral.v1.ReferralReviewed";

fn warranty_stream(brand: &str, warranty: &act::Warranty) -> String {
    format!("warranty-{brand}-{}-{}", warranty.batch_id, warranty.serial)
}

/// The referral of `buyer` listed under `referrer`, once it has `status`.
async fn referral_of(
    cluster: &Cluster,
    brand: &str,
    referrer: &str,
    buyer: &str,
    status: pb::ReferralStatus,
) -> pb::Referral {
    let listed = cluster
        .referrals_of(brand, referrer, |r| {
            r.iter()
                .any(|x| x.buyer_member_id == buyer && x.status == status as i32)
        })
        .await;
    let mine: Vec<pb::Referral> = listed
        .into_iter()
        .filter(|x| x.buyer_member_id == buyer)
        .collect();
    assert_eq!(mine.len(), 1, "one referral of {buyer}: {mine:?}");
    mine.into_iter().next().unwrap()
}

fn assert_rejected(referral: &pb::Referral, reason: pb::RejectionReason, detail: &str) {
    assert_eq!(
        (
            referral.status,
            referral.rejection_reason,
            referral.detail.as_str()
        ),
        (pb::ReferralStatus::Rejected as i32, reason as i32, detail),
        "{referral:?}"
    );
    assert!(referral.hold_reasons.is_empty(), "{referral:?}");
}

/// The brand-wide funnel, once `check` holds for it.
async fn brand_figures(
    cluster: &Cluster,
    brand: &str,
    check: impl Fn(&pb::FunnelFigures) -> bool,
) -> pb::FunnelFigures {
    member_figures(cluster, brand, "", check).await
}

async fn member_figures(
    cluster: &Cluster,
    brand: &str,
    member: &str,
    check: impl Fn(&pb::FunnelFigures) -> bool,
) -> pb::FunnelFigures {
    let referral = cluster.referral.clone();
    eventually(
        || {
            let mut referral = referral.clone();
            async move {
                referral
                    .get_stats(pb::GetStatsRequest {
                        brand_id: brand.into(),
                        member_id: member.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .total
                    .unwrap()
            }
        },
        check,
    )
    .await
}

async fn store_stats(
    cluster: &Cluster,
    brand: &str,
    store: &str,
    check: impl Fn(&pb::StoreStats) -> bool,
) -> pb::StoreStats {
    let referral = cluster.referral.clone();
    eventually(
        || {
            let mut referral = referral.clone();
            async move {
                referral
                    .get_store_stats(pb::GetStoreStatsRequest {
                        brand_id: brand.into(),
                        store_id: store.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
            }
        },
        check,
    )
    .await
}

async fn held(cluster: &Cluster, brand: &str, check: impl Fn(&[pb::Referral]) -> bool) {
    let referral = cluster.referral.clone();
    eventually(
        || {
            let mut referral = referral.clone();
            async move {
                referral
                    .list_held(pb::ListHeldRequest {
                        brand_id: brand.into(),
                        page: Some(PageRequest {
                            page_size: 100,
                            page_token: String::new(),
                        }),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .referrals
            }
        },
        |r| check(r),
    )
    .await;
}

/// Waits until referral's reactions have handled everything on the activation and membership
/// topics so far: whatever an attribution sets off (the parent, assist progress) has happened.
async fn reactions_caught_up(cluster: &Cluster) {
    let group = cluster.reaction_group("reactions");
    for topic in [&cluster.activation_topic, &cluster.membership_topic] {
        eventually(
            || scanloop_testkit::consumed_to_end(&group, topic),
            |done| *done,
        )
        .await;
    }
}

/// The referral topic from its beginning until `done` holds for what was read (60 s at most).
async fn referral_events(
    topic: &str,
    done: impl Fn(&[EventEnvelope]) -> bool,
) -> Vec<EventEnvelope> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", scanloop_testkit::brokers())
        .set("group.id", scanloop_testkit::unique_name("fraud-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    while !done(&events) {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
                panic!("the referral topic never had what was expected; read {types:?}")
            })
            .unwrap();
        events.push(EventEnvelope::decode(message.payload().unwrap_or_default()).unwrap());
    }
    events
}

fn payloads<M: prost::Message + Default>(events: &[EventEnvelope], event_type: &str) -> Vec<M> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .map(|e| M::decode(e.payload.as_slice()).unwrap())
        .collect()
}

/// The rejections read so far, by warranty stream.
fn rejections(events: &[EventEnvelope]) -> BTreeMap<String, pb::ReferralRejected> {
    payloads::<pb::ReferralRejected>(events, REJECTED)
        .into_iter()
        .map(|r| (r.warranty_stream_id.clone(), r))
        .collect()
}

/// Asserts that none of these sales was ever attributed or held on the referral topic.
fn assert_never_paid(events: &[EventEnvelope], warranty_streams: &BTreeSet<String>) {
    for a in payloads::<pb::ReferralAttributed>(events, ATTRIBUTED) {
        assert!(
            !warranty_streams.contains(&a.warranty_stream_id),
            "a rejected sale was attributed: {a:?}"
        );
    }
    for h in payloads::<pb::ReferralHeld>(events, HELD) {
        let a = h.attribution.unwrap();
        assert!(
            !warranty_streams.contains(&a.warranty_stream_id),
            "a rejected sale was held for review: {a:?}"
        );
    }
}

#[tokio::test]
async fn hard_cases_are_rejected_with_their_reason_and_never_attributed() {
    const LATE: &str = "acme-late";
    const OTHER: &str = "globex";
    const UNKNOWN: &str = "initech";
    let rules = Rules {
        // Any activation after the link was made is outside a zero-day window.
        window_days: ByBrand::default().with(LATE, 0),
        ..Rules::default()
    };
    let mut cluster = Cluster::start_with("fraud", rules).await;
    let codes = cluster.issue(BRAND, 9).await;
    let late_codes = cluster.issue(LATE, 2).await;
    let other_codes = cluster.issue(OTHER, 1).await;
    let unknown_codes = cluster.issue(UNKNOWN, 1).await;
    // Sales that must be rejected, by warranty stream, with the reason each must carry.
    let mut expected: BTreeMap<String, pb::RejectionReason> = BTreeMap::new();

    // A is a member with a link.
    cluster
        .activate(activation(BRAND, &codes[0], "13900000001", "SN-A1", ""))
        .await;
    let a = cluster.member_of(BRAND, "13900000001").await.member_id;
    let a_link = cluster.link_for(BRAND, &a, "").await;

    // 1. Self-referral: A buys a second phone through A's own link.
    let sold = cluster
        .activate(activation(
            BRAND,
            &codes[1],
            "13900000001",
            "SN-A2",
            &a_link.token,
        ))
        .await;
    expected.insert(
        warranty_stream(BRAND, &sold),
        pb::RejectionReason::SelfReferral,
    );
    let self_referral = referral_of(&cluster, BRAND, &a, &a, pb::ReferralStatus::Rejected).await;
    assert_rejected(
        &self_referral,
        pb::RejectionReason::SelfReferral,
        "the buyer is the referrer",
    );

    // 2. Same device: X buys through A's link and returns the phone; Y buys the same unit
    // (resale after a return) through A's link.
    cluster
        .activate(activation(
            BRAND,
            &codes[2],
            "13900000002",
            "SN-DUP",
            &a_link.token,
        ))
        .await;
    let x = cluster.member_of(BRAND, "13900000002").await.member_id;
    let x_referral = referral_of(&cluster, BRAND, &a, &x, pb::ReferralStatus::Attributed).await;
    cluster
        .activation
        .void_warranty(act::VoidWarrantyRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            code: codes[2].clone(),
            reason: "returned within 7 days".into(),
        })
        .await
        .unwrap();
    let sold = cluster
        .activate(activation(
            BRAND,
            &codes[3],
            "13900000003",
            "sn-dup",
            &a_link.token,
        ))
        .await;
    expected.insert(
        warranty_stream(BRAND, &sold),
        pb::RejectionReason::SameDevice,
    );
    let y = cluster.member_of(BRAND, "13900000003").await.member_id;
    let same_device = referral_of(&cluster, BRAND, &a, &y, pb::ReferralStatus::Rejected).await;
    assert_rejected(
        &same_device,
        pb::RejectionReason::SameDevice,
        &format!(
            "device already attributed by attribution {}",
            x_referral.attribution_id
        ),
    );

    // 3. Cycle: A refers B (B's parent is A); then A buys through B's link.
    cluster
        .activate(activation(
            BRAND,
            &codes[4],
            "13900000004",
            "SN-B1",
            &a_link.token,
        ))
        .await;
    let b = cluster.member_of(BRAND, "13900000004").await.member_id;
    referral_of(&cluster, BRAND, &a, &b, pb::ReferralStatus::Attributed).await;
    cluster.tree(BRAND, &b, |t| t.parent_member_id == a).await;
    let b_link = cluster.link_for(BRAND, &b, "").await;
    let sold = cluster
        .activate(activation(
            BRAND,
            &codes[5],
            "13900000001",
            "SN-A3",
            &b_link.token,
        ))
        .await;
    expected.insert(warranty_stream(BRAND, &sold), pb::RejectionReason::Cycle);
    let cycle = referral_of(&cluster, BRAND, &b, &a, pb::ReferralStatus::Rejected).await;
    assert_rejected(
        &cycle,
        pb::RejectionReason::Cycle,
        "the referrer descends from the buyer in the tree",
    );
    assert_eq!(
        cluster.tree(BRAND, &a, |_| true).await.parent_member_id,
        "",
        "a rejected cycle binds nothing"
    );

    // 8. B already has a parent (A); C refers B again: C earns level-1 credit, B's parent stays
    // A (documented: a parent is never rebound).
    cluster
        .activate(activation(BRAND, &codes[6], "13900000005", "SN-C1", ""))
        .await;
    let c = cluster.member_of(BRAND, "13900000005").await.member_id;
    let c_link = cluster.link_for(BRAND, &c, "").await;
    cluster
        .activate(activation(
            BRAND,
            &codes[7],
            "13900000004",
            "SN-B2",
            &c_link.token,
        ))
        .await;
    let again = referral_of(&cluster, BRAND, &c, &b, pb::ReferralStatus::Attributed).await;
    assert_eq!(
        (
            again.referrer_member_id.as_str(),
            again.level2_member_id.as_str()
        ),
        (c.as_str(), "")
    );
    reactions_caught_up(&cluster).await;
    let b_tree = cluster.tree(BRAND, &b, |_| true).await;
    assert_eq!(b_tree.parent_member_id, a, "the parent is never rebound");

    // 6. Revoked token: A revokes a second link, then R buys through it.
    let revoked_link = cluster.link_for(BRAND, &a, "").await;
    let revoked = cluster
        .referral
        .revoke_link(pb::RevokeLinkRequest {
            brand_id: BRAND.into(),
            request_id: request_id(),
            token: revoked_link.token.clone(),
            reason: "posted on a coupon site".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    let sold = cluster
        .activate(activation(
            BRAND,
            &codes[8],
            "13900000006",
            "SN-R1",
            &revoked_link.token,
        ))
        .await;
    expected.insert(
        warranty_stream(BRAND, &sold),
        pb::RejectionReason::RevokedToken,
    );
    let r = cluster.member_of(BRAND, "13900000006").await.member_id;
    let revoked = referral_of(&cluster, BRAND, &a, &r, pb::ReferralStatus::Rejected).await;
    assert_rejected(
        &revoked,
        pb::RejectionReason::RevokedToken,
        "the link was revoked",
    );
    assert_eq!(revoked.token, revoked_link.token);

    // 7. Expired window: the brand's window is 0 days, so W's activation after the link was
    // made is too late.
    cluster
        .activate(activation(LATE, &late_codes[0], "13900000007", "SN-L1", ""))
        .await;
    let l = cluster.member_of(LATE, "13900000007").await.member_id;
    let l_link = cluster.link_for(LATE, &l, "").await;
    let sold = cluster
        .activate(activation(
            LATE,
            &late_codes[1],
            "13900000008",
            "SN-W1",
            &l_link.token,
        ))
        .await;
    expected.insert(
        warranty_stream(LATE, &sold),
        pb::RejectionReason::WindowExpired,
    );
    let w = cluster.member_of(LATE, "13900000008").await.member_id;
    let expired = referral_of(&cluster, LATE, &l, &w, pb::ReferralStatus::Rejected).await;
    assert_rejected(
        &expired,
        pb::RejectionReason::WindowExpired,
        "activated more than 0 days after the link's creation",
    );

    // 5. A's acme token used for a globex sale, and a well-formed token nobody issued. Neither
    // has a referrer in the sale's brand to list it under: they count brand-wide only.
    let sold = cluster
        .activate(activation(
            OTHER,
            &other_codes[0],
            "13900000009",
            "SN-G1",
            &a_link.token,
        ))
        .await;
    let other_stream = warranty_stream(OTHER, &sold);
    expected.insert(other_stream.clone(), pb::RejectionReason::OtherBrandToken);
    let sold = cluster
        .activate(activation(
            UNKNOWN,
            &unknown_codes[0],
            "13900000010",
            "SN-U1",
            "AAAAAAAAAAAAAAAA",
        ))
        .await;
    let unknown_stream = warranty_stream(UNKNOWN, &sold);
    expected.insert(unknown_stream.clone(), pb::RejectionReason::UnknownToken);
    for brand in [OTHER, UNKNOWN] {
        let figures = brand_figures(&cluster, brand, |f| f.rejected == 1).await;
        assert_eq!((figures.attributed, figures.held), (0, 0), "{brand}");
    }

    // A's funnel: X and B attributed; the self-referral, same device and revoked token
    // rejected (the globex sale is globex's, not A's).
    let a_figures = member_figures(&cluster, BRAND, &a, |f| f.rejected == 3).await;
    assert_eq!((a_figures.attributed, a_figures.held), (2, 0));

    // 11. On the referral topic every one of these is a ReferralRejected with its reason, and
    // none is ever a commission-bearing ReferralAttributed (or a ReferralHeld awaiting one).
    let events = referral_events(&cluster.referral_topic, |events| {
        let seen = rejections(events);
        expected.keys().all(|stream| seen.contains_key(stream))
    })
    .await;
    let seen = rejections(&events);
    for (stream, reason) in &expected {
        assert_eq!(seen[stream].reason, *reason as i32, "{:?}", seen[stream]);
    }
    // Listed nowhere, so their detail is checked here.
    assert_eq!(seen[&other_stream].detail, "the token is another brand's");
    assert_eq!(seen[&unknown_stream].detail, "no link has this token");
    assert_never_paid(&events, &expected.keys().cloned().collect());
    cluster.stop().await;
}

fn review(attribution_id: &str, decision: pb::ReviewDecision) -> pb::ReviewReferralRequest {
    pb::ReviewReferralRequest {
        brand_id: VELOCITY.into(),
        request_id: request_id(),
        attribution_id: attribution_id.into(),
        decision: decision as i32,
        reviewer: "risk-desk-li".into(),
        note: "checked the buyer's order".into(),
    }
}

const VELOCITY: &str = "acme-fast";

#[tokio::test]
async fn velocity_holds_for_review_and_the_reviewer_decides() {
    let rules = Rules {
        max_per_hour: ByBrand::default().with(VELOCITY, 2),
        ..Rules::default()
    };
    let mut cluster = Cluster::start_with("velocity", rules).await;
    let codes = cluster.issue(VELOCITY, 5).await;
    cluster
        .activate(activation(VELOCITY, &codes[0], "13900000101", "SN-V0", ""))
        .await;
    let v = cluster.member_of(VELOCITY, "13900000101").await.member_id;
    let link = cluster.link_for(VELOCITY, &v, "").await;

    // Four friends buy within the hour, one after another: two are attributed, the third and
    // fourth exceed the limit of two an hour and are held.
    let mut buyers = Vec::new();
    let mut streams = Vec::new();
    for (i, code) in codes[1..5].iter().enumerate() {
        let phone = format!("1390000011{i}");
        let sold = cluster
            .activate(activation(
                VELOCITY,
                code,
                &phone,
                &format!("SN-V{}", i + 1),
                &link.token,
            ))
            .await;
        streams.push(warranty_stream(VELOCITY, &sold));
        let buyer = cluster.member_of(VELOCITY, &phone).await.member_id;
        let status = if i < 2 {
            pb::ReferralStatus::Attributed
        } else {
            pb::ReferralStatus::Held
        };
        referral_of(&cluster, VELOCITY, &v, &buyer, status).await;
        buyers.push(buyer);
    }
    let (third, fourth) = (&buyers[2], &buyers[3]);
    let third_held = referral_of(&cluster, VELOCITY, &v, third, pb::ReferralStatus::Held).await;
    assert_eq!(
        third_held.hold_reasons,
        vec![pb::HoldReason::Velocity as i32]
    );
    assert_eq!(
        third_held.detail,
        "referrer has 3 attributions in the last hour (limit 2), 3 in the last day (limit 100)"
    );
    let fourth_held = referral_of(&cluster, VELOCITY, &v, fourth, pb::ReferralStatus::Held).await;
    assert_eq!(
        fourth_held.hold_reasons,
        vec![pb::HoldReason::Velocity as i32]
    );
    assert_eq!(
        fourth_held.detail,
        "referrer has 4 attributions in the last hour (limit 2), 4 in the last day (limit 100)"
    );
    // The review queue, oldest first.
    held(&cluster, VELOCITY, |r| {
        r.iter().map(|x| &x.attribution_id).collect::<Vec<_>>()
            == vec![&third_held.attribution_id, &fourth_held.attribution_id]
    })
    .await;
    // Held sales have no parent yet.
    assert_eq!(
        cluster
            .tree(VELOCITY, third, |_| true)
            .await
            .parent_member_id,
        ""
    );

    // Approved: attributed, and the buyer's parent is the referrer.
    let mut referral = cluster.referral.clone();
    let approved = referral
        .review_referral(review(
            &third_held.attribution_id,
            pb::ReviewDecision::Approve,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approved.status, pb::ReferralStatus::Attributed as i32);
    assert_eq!(approved.attribution_id, third_held.attribution_id);
    let listed = referral_of(
        &cluster,
        VELOCITY,
        &v,
        third,
        pb::ReferralStatus::Attributed,
    )
    .await;
    assert!(listed.hold_reasons.is_empty(), "{listed:?}");
    assert_eq!(
        cluster
            .tree(VELOCITY, third, |_| true)
            .await
            .parent_member_id,
        v
    );

    // Rejected: REVIEW_REJECTED, with who decided and why; no parent.
    let rejected = referral
        .review_referral(review(
            &fourth_held.attribution_id,
            pb::ReviewDecision::Reject,
        ))
        .await
        .unwrap()
        .into_inner();
    let detail = "rejected by risk-desk-li: checked the buyer's order";
    assert_rejected(&rejected, pb::RejectionReason::ReviewRejected, detail);
    let listed = referral_of(&cluster, VELOCITY, &v, fourth, pb::ReferralStatus::Rejected).await;
    assert_rejected(&listed, pb::RejectionReason::ReviewRejected, detail);
    assert_eq!(
        cluster
            .tree(VELOCITY, fourth, |_| true)
            .await
            .parent_member_id,
        ""
    );
    held(&cluster, VELOCITY, <[pb::Referral]>::is_empty).await;

    // Approving what counts, or anything about what was rejected, is refused (rejecting the
    // approved one would revoke it: see the revocation test).
    for (id, decision) in [
        (&third_held.attribution_id, pb::ReviewDecision::Approve),
        (&fourth_held.attribution_id, pb::ReviewDecision::Approve),
        (&fourth_held.attribution_id, pb::ReviewDecision::Reject),
    ] {
        let again = referral.review_referral(review(id, decision)).await;
        assert_eq!(
            again.map(|_| ()).unwrap_err().code(),
            Code::FailedPrecondition
        );
    }

    // The referrer's funnel: three attributed, one rejected, none held any more.
    let figures = member_figures(&cluster, VELOCITY, &v, |f| {
        f.attributed == 3 && f.rejected == 1
    })
    .await;
    assert_eq!(figures.held, 0);
    let tree = cluster
        .tree(VELOCITY, &v, |t| {
            t.level1_count == 3 && t.level1_member_ids.len() == 3
        })
        .await;
    assert!(!tree.level1_member_ids.contains(fourth));

    // On the topic: the approved sale is attributed once (reviewed); the rejected one never.
    let events = referral_events(&cluster.referral_topic, |events| {
        rejections(events).contains_key(&streams[3])
            && payloads::<pb::ReferralAttributed>(events, ATTRIBUTED)
                .iter()
                .any(|a| a.warranty_stream_id == streams[2])
    })
    .await;
    assert_eq!(
        rejections(&events)[&streams[3]].reason,
        pb::RejectionReason::ReviewRejected as i32
    );
    let third_attributed: Vec<pb::ReferralAttributed> =
        payloads::<pb::ReferralAttributed>(&events, ATTRIBUTED)
            .into_iter()
            .filter(|a| a.warranty_stream_id == streams[2])
            .collect();
    assert_eq!(third_attributed.len(), 1);
    assert!(third_attributed[0].reviewed);
    assert!(
        payloads::<pb::ReferralAttributed>(&events, ATTRIBUTED)
            .iter()
            .all(|a| a.warranty_stream_id != streams[3]),
        "the rejected sale was attributed"
    );
    cluster.stop().await;
}

const LATE: &str = "acme-late";

fn late_review(attribution_id: &str, decision: pb::ReviewDecision) -> pb::ReviewReferralRequest {
    pb::ReviewReferralRequest {
        brand_id: LATE.into(),
        note: "buyer and referrer share a bank card".into(),
        ..review(attribution_id, decision)
    }
}

async fn assist_progress(cluster: &Cluster, member: &str, check: impl Fn(u32) -> bool) -> u32 {
    let referral = cluster.referral.clone();
    eventually(
        || {
            let mut referral = referral.clone();
            async move {
                referral
                    .get_assist(pb::GetAssistRequest {
                        brand_id: LATE.into(),
                        member_id: member.into(),
                        campaign_id: "two-friends".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .progress
            }
        },
        |p| check(*p),
    )
    .await
}

#[tokio::test]
async fn an_attribution_that_counts_is_revoked_when_fraud_is_found_later() {
    let rules = Rules {
        store_precedence: ByBrand::default().with(LATE, StorePrecedence::Both),
        ..Rules::default()
    };
    let mut cluster = Cluster::start_with("revoke", rules).await;
    let codes = cluster.issue(LATE, 2).await;
    let r_warranty = cluster
        .activate(activation(LATE, &codes[0], "13900000401", "SN-L0", ""))
        .await;
    let r = cluster.member_of(LATE, "13900000401").await.member_id;
    let mut referral = cluster.referral.clone();
    referral
        .define_campaign(pb::DefineCampaignRequest {
            brand_id: LATE.into(),
            request_id: request_id(),
            campaign_id: "two-friends".into(),
            name: "two friends, +1 year".into(),
            goal_friends: 2,
            window_days: 30,
            extension_months: 12,
        })
        .await
        .unwrap();
    // Referral learns of R's warranty from the activation topic: the start succeeding says so.
    let start = pb::StartAssistRequest {
        brand_id: LATE.into(),
        request_id: request_id(),
        member_id: r.clone(),
        campaign_id: "two-friends".into(),
        warranty: Some(pb::WarrantyRef {
            batch_id: r_warranty.batch_id.clone(),
            serial: r_warranty.serial,
        }),
    };
    eventually(
        || {
            let mut referral = referral.clone();
            let start = start.clone();
            async move { referral.start_assist(start).await }
        },
        Result::is_ok,
    )
    .await
    .unwrap();
    let link = cluster.link_for(LATE, &r, "two-friends").await;

    // B buys in store sz-009 through R's link: nothing is flagged, so it counts at once (the
    // brand credits both R and the store).
    let sold = cluster
        .activate(in_store(
            activation(LATE, &codes[1], "13900000402", "SN-L1", &link.token),
            "sz-009",
        ))
        .await;
    let stream = warranty_stream(LATE, &sold);
    let b = cluster.member_of(LATE, "13900000402").await.member_id;
    let counted = referral_of(&cluster, LATE, &r, &b, pb::ReferralStatus::Attributed).await;
    cluster.tree(LATE, &b, |t| t.parent_member_id == r).await;
    member_figures(&cluster, LATE, &r, |f| f.attributed == 1).await;
    let stats = store_stats(&cluster, LATE, "sz-009", |s| s.attributed_sales == 1).await;
    assert_eq!(
        (
            stats.store_credited_sales,
            stats.attributed_amount.unwrap().amount_fen
        ),
        (1, 599_900)
    );
    assert_eq!(assist_progress(&cluster, &r, |p| p == 1).await, 1);

    // Approving what already counts means nothing.
    assert_refused(
        referral
            .review_referral(late_review(
                &counted.attribution_id,
                pb::ReviewDecision::Approve,
            ))
            .await,
        Code::FailedPrecondition,
        "already counts",
    );

    // Fraud found later: the reviewer rejects it. A retry of the same request answers the same.
    let revoke = late_review(&counted.attribution_id, pb::ReviewDecision::Reject);
    let detail = "revoked after attribution by risk-desk-li: buyer and referrer share a bank card";
    for _ in 0..2 {
        let revoked = referral
            .review_referral(revoke.clone())
            .await
            .unwrap()
            .into_inner();
        assert_rejected(
            &revoked,
            pb::RejectionReason::RevokedAfterAttribution,
            detail,
        );
        assert_eq!(revoked.attribution_id, counted.attribution_id);
    }
    // Final: no second rejection, no approval.
    for decision in [pb::ReviewDecision::Reject, pb::ReviewDecision::Approve] {
        assert_refused(
            referral
                .review_referral(late_review(&counted.attribution_id, decision))
                .await,
            Code::FailedPrecondition,
            "a rejection is final",
        );
    }

    // On the topic, for this sale: attributed, reviewed (REJECT), rejected; each once.
    let events = referral_events(&cluster.referral_topic, |events| {
        rejections(events).contains_key(&stream)
    })
    .await;
    let attributed: Vec<pb::ReferralAttributed> =
        payloads::<pb::ReferralAttributed>(&events, ATTRIBUTED)
            .into_iter()
            .filter(|a| a.warranty_stream_id == stream)
            .collect();
    assert_eq!(attributed.len(), 1, "{attributed:?}");
    let attributed = &attributed[0];
    let id = &counted.attribution_id;
    let sequence: Vec<&str> = events
        .iter()
        .filter(|e| e.stream_id == format!("attribution-{stream}"))
        .map(|e| e.event_type.rsplit('.').next().unwrap())
        .collect();
    assert_eq!(
        sequence,
        vec!["ReferralAttributed", "ReferralReviewed", "ReferralRejected"]
    );
    let reviewed: Vec<pb::ReferralReviewed> = payloads::<pb::ReferralReviewed>(&events, REVIEWED)
        .into_iter()
        .filter(|x| &x.attribution_id == id)
        .collect();
    assert_eq!(reviewed.len(), 1, "{reviewed:?}");
    assert_eq!(
        (
            reviewed[0].decision(),
            reviewed[0].reviewer.as_str(),
            reviewed[0].note.as_str()
        ),
        (
            pb::ReviewDecision::Reject,
            "risk-desk-li",
            "buyer and referrer share a bank card"
        )
    );
    assert!(reviewed[0].reviewed_at.is_some());
    assert_eq!(
        rejections(&events)[&stream],
        pb::ReferralRejected {
            attribution_id: id.clone(),
            token: link.token.clone(),
            warranty_stream_id: stream.clone(),
            activation_event_id: attributed.activation_event_id.clone(),
            reason: pb::RejectionReason::RevokedAfterAttribution as i32,
            detail: detail.into(),
            level1_member_id: r.clone(),
            buyer_member_id: b.clone(),
            sku: "PH-9".into(),
            revoked: true,
            activated_at: attributed.activated_at,
        }
    );
    assert!(!attributed.activation_event_id.is_empty());

    // Listed as rejected, still showing the sale; out of the funnel and the store's figures.
    let listed = referral_of(&cluster, LATE, &r, &b, pb::ReferralStatus::Rejected).await;
    assert_rejected(
        &listed,
        pb::RejectionReason::RevokedAfterAttribution,
        detail,
    );
    assert_eq!(
        (
            listed.store_id.as_str(),
            listed.purchase_amount.unwrap().amount_fen
        ),
        ("sz-009", 599_900)
    );
    for member in [r.as_str(), ""] {
        let figures = member_figures(&cluster, LATE, member, |f| {
            f.attributed == 0 && f.rejected == 1
        })
        .await;
        assert_eq!(figures.held, 0);
    }
    let stats = store_stats(&cluster, LATE, "sz-009", |s| s.attributed_sales == 0).await;
    assert_eq!(
        (
            stats.store_credited_sales,
            stats.attributed_amount.map_or(0, |m| m.amount_fen)
        ),
        (0, 0)
    );
    // The friend no longer counts toward R's assist; B's parent stays R (never rebound).
    assert_eq!(assist_progress(&cluster, &r, |_| true).await, 0);
    assert_eq!(cluster.tree(LATE, &b, |_| true).await.parent_member_id, r);
    cluster.stop().await;
}

#[tokio::test]
async fn binding_mode_and_store_precedence_follow_the_brands_rules() {
    const AT_REGISTRATION: &str = "acme-reg";
    const BOTH: &str = "acme-store";
    let rules = Rules {
        binding_mode: ByBrand::default().with(AT_REGISTRATION, BindingMode::AtRegistration),
        // Only a referral with the buyer's very first activation binds.
        bind_within_minutes: ByBrand::default().with(AT_REGISTRATION, 0),
        store_precedence: ByBrand::default().with(BOTH, StorePrecedence::Both),
        ..Rules::default()
    };
    let mut cluster = Cluster::start_with("binding", rules).await;

    // 9. Binding at registration. P refers; O has been a member since an earlier purchase; N
    // joins with the purchase through P's link.
    let codes = cluster.issue(AT_REGISTRATION, 4).await;
    cluster
        .activate(activation(
            AT_REGISTRATION,
            &codes[0],
            "13900000201",
            "SN-P1",
            "",
        ))
        .await;
    let p = cluster
        .member_of(AT_REGISTRATION, "13900000201")
        .await
        .member_id;
    let p_link = cluster.link_for(AT_REGISTRATION, &p, "").await;
    cluster
        .activate(activation(
            AT_REGISTRATION,
            &codes[1],
            "13900000202",
            "SN-O1",
            "",
        ))
        .await;
    let o = cluster
        .member_of(AT_REGISTRATION, "13900000202")
        .await
        .member_id;
    // Referral knows O's registration once it lets O make a link.
    cluster.link_for(AT_REGISTRATION, &o, "").await;
    cluster
        .activate(activation(
            AT_REGISTRATION,
            &codes[2],
            "13900000202",
            "SN-O2",
            &p_link.token,
        ))
        .await;
    let old = referral_of(
        &cluster,
        AT_REGISTRATION,
        &p,
        &o,
        pb::ReferralStatus::Attributed,
    )
    .await;
    assert_eq!(old.referrer_member_id, p);
    cluster
        .activate(activation(
            AT_REGISTRATION,
            &codes[3],
            "13900000203",
            "SN-N1",
            &p_link.token,
        ))
        .await;
    let n = cluster
        .member_of(AT_REGISTRATION, "13900000203")
        .await
        .member_id;
    referral_of(
        &cluster,
        AT_REGISTRATION,
        &p,
        &n,
        pb::ReferralStatus::Attributed,
    )
    .await;
    cluster
        .tree(AT_REGISTRATION, &n, |t| t.parent_member_id == p)
        .await;
    reactions_caught_up(&cluster).await;
    assert_eq!(
        cluster
            .tree(AT_REGISTRATION, &o, |_| true)
            .await
            .parent_member_id,
        "",
        "a member from before is attributed but not bound"
    );
    let p_tree = cluster
        .tree(AT_REGISTRATION, &p, |t| {
            t.level1_count == 1 && t.level1_member_ids.len() == 1
        })
        .await;
    assert_eq!(p_tree.level1_member_ids, vec![n.clone()]);

    // 10. Store precedence "both": a store sale through S's link earns S and the store; a store
    // sale without a link earns the store alone.
    let codes = cluster.issue(BOTH, 3).await;
    cluster
        .activate(activation(BOTH, &codes[0], "13900000301", "SN-S1", ""))
        .await;
    let s = cluster.member_of(BOTH, "13900000301").await.member_id;
    let s_link = cluster.link_for(BOTH, &s, "").await;
    let with_link = cluster
        .activate(in_store(
            activation(BOTH, &codes[1], "13900000302", "SN-T1", &s_link.token),
            "sz-001",
        ))
        .await;
    let t = cluster.member_of(BOTH, "13900000302").await.member_id;
    let through_store = referral_of(&cluster, BOTH, &s, &t, pb::ReferralStatus::Attributed).await;
    assert_eq!(through_store.store_id, "sz-001");
    let stats = store_stats(&cluster, BOTH, "sz-001", |s| s.attributed_sales == 1).await;
    assert_eq!(stats.store_credited_sales, 1);
    assert_eq!(stats.attributed_amount.unwrap().amount_fen, 599_900);
    let without_link = cluster
        .activate(in_store(
            activation(BOTH, &codes[2], "13900000303", "SN-U1", ""),
            "sz-001",
        ))
        .await;
    let stats = store_stats(&cluster, BOTH, "sz-001", |s| s.attributed_sales == 2).await;
    assert_eq!(stats.store_credited_sales, 2);
    assert_eq!(stats.attributed_amount.unwrap().amount_fen, 1_199_800);

    // On the topic: who earns each store sale.
    let (with_link, without_link) = (
        warranty_stream(BOTH, &with_link),
        warranty_stream(BOTH, &without_link),
    );
    let events = referral_events(&cluster.referral_topic, |events| {
        let attributed = payloads::<pb::ReferralAttributed>(events, ATTRIBUTED);
        [&with_link, &without_link]
            .iter()
            .all(|s| attributed.iter().any(|a| &&a.warranty_stream_id == s))
    })
    .await;
    let attributed: BTreeMap<String, pb::ReferralAttributed> =
        payloads::<pb::ReferralAttributed>(&events, ATTRIBUTED)
            .into_iter()
            .map(|a| (a.warranty_stream_id.clone(), a))
            .collect();
    let paid = |stream: &str| {
        let a = &attributed[stream];
        (a.payee, a.level1_member_id.clone(), a.store_id.clone())
    };
    assert_eq!(
        paid(&with_link),
        (pb::Payee::Both as i32, s.clone(), "sz-001".to_owned())
    );
    assert_eq!(
        paid(&without_link),
        (pb::Payee::Store as i32, String::new(), "sz-001".to_owned())
    );
    cluster.stop().await;
}

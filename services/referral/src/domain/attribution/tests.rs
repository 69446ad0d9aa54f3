use chrono::Duration;
use scanloop_proto::common::v1::stored_identity::Kind;

use super::*;
use crate::domain::rules::StorePrecedence;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn sale() -> Sale {
    Sale {
        attribution_id: attribution_id("ev-1"),
        activation_event_id: "ev-1".into(),
        warranty_stream_id: "warranty-acme-b-1".into(),
        token: "AAAAAAAAAAAAAAAA".into(),
        buyer_member_id: "buyer".into(),
        buyer: StoredIdentity {
            kind: Some(Kind::WechatUnionid("oBuyer".into())),
        },
        buyer_identity_key: "wechat_unionid:oBuyer".into(),
        device_serial: "SN-B".into(),
        sku: "phone-x".into(),
        purchase_amount: Some(Money {
            amount_fen: 399_900,
            currency: String::new(),
        }),
        purchased_at: now() - Duration::days(1),
        activated_at: now(),
        store_id: String::new(),
    }
}

fn link() -> Link {
    Link {
        token: "AAAAAAAAAAAAAAAA".into(),
        member_id: "ref".into(),
        sku: "phone-x".into(),
        campaign_id: "three".into(),
        url: String::new(),
        created_at: Some(now() - Duration::days(2)),
        revoked: false,
        shares: 0,
    }
}

fn referrer() -> Referrer {
    Referrer {
        member_id: "ref".into(),
        identities: vec!["wechat_unionid:oRef".into()],
        devices: vec!["SN-R".into()],
        ancestors: vec!["grand".into(), "great".into()],
    }
}

fn quiet() -> Signals {
    Signals {
        referrer_last_hour: 1,
        referrer_last_day: 1,
        ..Signals::default()
    }
}

fn decide(sale: &Sale, token: Token, referrer: &Referrer, signals: &Signals) -> Outcome {
    judge(
        sale,
        Some(&token),
        Some(referrer),
        signals,
        &BrandRules::default(),
    )
}

fn rejection(outcome: &Outcome) -> pb::RejectionReason {
    match outcome {
        Outcome::Rejected(r) => r.reason(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_clean_referral_pays_the_link_owner_and_their_parent_and_never_a_third_level() {
    let Outcome::Attributed(a) = decide(&sale(), Token::Found(link()), &referrer(), &quiet())
    else {
        panic!("expected an attribution");
    };
    assert_eq!(a.level1_member_id, "ref");
    assert_eq!(a.level2_member_id, "grand");
    assert_eq!(a.buyer_member_id, "buyer");
    assert_eq!(a.purchase_amount.clone().unwrap().amount_fen, 399_900);
    assert_eq!(a.payee(), pb::Payee::Member);
    assert_eq!(a.campaign_id, "three");
    // Pinned: the id names the sale in payouts (commission ids derive from it).
    assert_eq!(a.attribution_id, "c1e178ea-3e23-5758-8968-98809a66d97b");
}

#[test]
fn hard_cases_are_rejected_with_their_reason() {
    use pb::RejectionReason as Why;
    let r = referrer();
    assert_eq!(
        rejection(&decide(&sale(), Token::Unknown, &r, &quiet())),
        Why::UnknownToken
    );
    assert_eq!(
        rejection(&decide(&sale(), Token::OtherBrand, &r, &quiet())),
        Why::OtherBrandToken
    );
    let revoked = Link {
        revoked: true,
        ..link()
    };
    assert_eq!(
        rejection(&decide(&sale(), Token::Found(revoked), &r, &quiet())),
        Why::RevokedToken
    );
    let own = Sale {
        buyer_member_id: "ref".into(),
        ..sale()
    };
    assert_eq!(
        rejection(&decide(&own, Token::Found(link()), &r, &quiet())),
        Why::SelfReferral
    );
    let shared_identity = Sale {
        buyer_identity_key: "wechat_unionid:oRef".into(),
        ..sale()
    };
    assert_eq!(
        rejection(&decide(
            &shared_identity,
            Token::Found(link()),
            &r,
            &quiet()
        )),
        Why::SelfReferral
    );
    let shared_device = Sale {
        device_serial: "SN-R".into(),
        ..sale()
    };
    assert_eq!(
        rejection(&decide(&shared_device, Token::Found(link()), &r, &quiet())),
        Why::SelfReferral
    );
    let ancestor = Sale {
        buyer_member_id: "great".into(),
        ..sale()
    };
    assert_eq!(
        rejection(&decide(&ancestor, Token::Found(link()), &r, &quiet())),
        Why::Cycle
    );
}

#[test]
fn the_window_runs_from_the_last_click_or_else_from_the_links_creation() {
    let old_link = Link {
        created_at: Some(now() - Duration::days(31)),
        ..link()
    };
    let late = decide(
        &sale(),
        Token::Found(old_link.clone()),
        &referrer(),
        &quiet(),
    );
    assert_eq!(rejection(&late), pb::RejectionReason::WindowExpired);
    // A click ten days ago renews it.
    let clicked = Signals {
        last_click: Some(now() - Duration::days(10)),
        ..quiet()
    };
    assert!(matches!(
        decide(&sale(), Token::Found(old_link), &referrer(), &clicked),
        Outcome::Attributed(_)
    ));
    // Exactly 30 days after the click still counts; a minute more does not.
    let edge = Signals {
        last_click: Some(now() - Duration::days(30)),
        ..quiet()
    };
    assert!(matches!(
        decide(&sale(), Token::Found(link()), &referrer(), &edge),
        Outcome::Attributed(_)
    ));
    let past = Signals {
        last_click: Some(now() - Duration::days(30) - Duration::minutes(1)),
        ..quiet()
    };
    assert_eq!(
        rejection(&decide(&sale(), Token::Found(link()), &referrer(), &past)),
        pb::RejectionReason::WindowExpired
    );
}

#[test]
fn soft_signals_hold_the_attribution_with_every_reason() {
    let busy = Signals {
        referrer_last_hour: 21,
        referrer_last_day: 21,
        suspicious_scan: Some("far-apart regions".into()),
        ..quiet()
    };
    let Outcome::Held(held) = decide(&sale(), Token::Found(link()), &referrer(), &busy) else {
        panic!("expected a hold");
    };
    assert_eq!(
        held.reasons,
        vec![
            pb::HoldReason::Velocity as i32,
            pb::HoldReason::SuspiciousScan as i32
        ]
    );
    assert_eq!(held.attribution.unwrap().level1_member_id, "ref");
    // Twenty in the hour is the limit, not past it.
    let at_limit = Signals {
        referrer_last_hour: 20,
        referrer_last_day: 20,
        ..quiet()
    };
    assert!(matches!(
        decide(&sale(), Token::Found(link()), &referrer(), &at_limit),
        Outcome::Attributed(_)
    ));
}

#[test]
fn store_sales_credit_by_the_brands_precedence() {
    let store_sale = Sale {
        store_id: "sz-001".into(),
        ..sale()
    };
    let both = BrandRules {
        store_precedence: StorePrecedence::Both,
        ..BrandRules::default()
    };
    let Outcome::Attributed(a) = judge(
        &store_sale,
        Some(&Token::Found(link())),
        Some(&referrer()),
        &quiet(),
        &both,
    ) else {
        panic!("expected an attribution");
    };
    assert_eq!(
        (a.payee(), a.store_id.as_str()),
        (pb::Payee::Both, "sz-001")
    );
    // No link: the store alone, with no member levels.
    let no_link = Sale {
        token: String::new(),
        ..store_sale.clone()
    };
    let Outcome::Attributed(a) = judge(&no_link, None, None, &quiet(), &BrandRules::default())
    else {
        panic!("expected a store attribution");
    };
    assert_eq!(a.payee(), pb::Payee::Store);
    assert!(a.level1_member_id.is_empty() && a.level2_member_id.is_empty());
    let burst = Signals {
        store_recent: 31,
        ..quiet()
    };
    assert!(matches!(
        judge(&no_link, None, None, &burst, &BrandRules::default()),
        Outcome::Held(_)
    ));
    // Neither link nor store: nothing to attribute.
    let plain = Sale {
        token: String::new(),
        ..sale()
    };
    assert_eq!(
        judge(&plain, None, None, &quiet(), &BrandRules::default()),
        Outcome::Nothing
    );
}

#[test]
fn a_sale_is_recorded_once_and_a_held_one_is_reviewed_once() {
    let busy = Signals {
        referrer_last_hour: 99,
        ..quiet()
    };
    let held = decide(&sale(), Token::Found(link()), &referrer(), &busy);
    let mut state = Attributions::default();
    let events = record(&state, &held).unwrap();
    events.iter().for_each(|e| state.apply(e));
    assert!(record(&state, &held).unwrap().is_empty());
    let id = sale().attribution_id;
    let review_cmd = |decision| Review {
        attribution_id: id.clone(),
        decision,
        reviewer: "li.na".into(),
        note: "known customer".into(),
        now: now(),
    };
    let approved = review(&state, &review_cmd(pb::ReviewDecision::Approve)).unwrap();
    let ReferralEvent::ReferralAttributed(a) = &approved[1] else {
        panic!("expected an attribution after approval, got {approved:?}");
    };
    assert!(a.reviewed);
    assert_eq!(a.level1_member_id, "ref");
    let rejected = review(&state, &review_cmd(pb::ReviewDecision::Reject)).unwrap();
    let ReferralEvent::ReferralRejected(r) = &rejected[1] else {
        panic!("expected a rejection, got {rejected:?}");
    };
    assert_eq!(r.reason(), pb::RejectionReason::ReviewRejected);
    assert_eq!(r.detail, "rejected by li.na: known customer");
    approved.iter().for_each(|e| state.apply(e));
    // Approved, it counts: approving again means nothing (rejecting it is a revocation, below).
    assert!(matches!(
        review(&state, &review_cmd(pb::ReviewDecision::Approve)),
        Err(Rejection::FailedPrecondition(_))
    ));
    let unknown = Review {
        attribution_id: "nope".into(),
        ..review_cmd(pb::ReviewDecision::Approve)
    };
    assert!(matches!(
        review(&state, &unknown),
        Err(Rejection::NotFound(_))
    ));
}

/// A sale that counted, recorded (never held).
fn attributed_state() -> Attributions {
    let outcome = decide(&sale(), Token::Found(link()), &referrer(), &quiet());
    assert!(matches!(outcome, Outcome::Attributed(_)));
    let mut state = Attributions::default();
    record(&state, &outcome)
        .unwrap()
        .iter()
        .for_each(|e| state.apply(e));
    state
}

fn revocation(decision: pb::ReviewDecision) -> Review {
    Review {
        attribution_id: sale().attribution_id,
        decision,
        reviewer: "risk-desk-li".into(),
        note: "buyer and referrer share a bank card".into(),
        now: now(),
    }
}

#[test]
fn an_attribution_that_counts_is_revoked_by_a_rejection_and_the_rejection_is_final() {
    let mut state = attributed_state();
    let events = review(&state, &revocation(pb::ReviewDecision::Reject)).unwrap();
    assert_eq!(
        events,
        vec![
            ReferralEvent::ReferralReviewed(pb::ReferralReviewed {
                attribution_id: "c1e178ea-3e23-5758-8968-98809a66d97b".into(),
                decision: pb::ReviewDecision::Reject as i32,
                reviewer: "risk-desk-li".into(),
                note: "buyer and referrer share a bank card".into(),
                reviewed_at: Some(to_timestamp(now())),
            }),
            ReferralEvent::ReferralRejected(pb::ReferralRejected {
                attribution_id: "c1e178ea-3e23-5758-8968-98809a66d97b".into(),
                token: "AAAAAAAAAAAAAAAA".into(),
                warranty_stream_id: "warranty-acme-b-1".into(),
                activation_event_id: "ev-1".into(),
                reason: pb::RejectionReason::RevokedAfterAttribution as i32,
                detail: "revoked after attribution by risk-desk-li: buyer and referrer share a \
                         bank card"
                    .into(),
                level1_member_id: "ref".into(),
                buyer_member_id: "buyer".into(),
                sku: "phone-x".into(),
                revoked: true,
                activated_at: Some(to_timestamp(now())),
            }),
        ]
    );
    events.iter().for_each(|e| state.apply(e));
    // The state keeps what was attributed next to the rejection.
    let Some(Recorded::Revoked {
        attributed,
        rejected,
    }) = state.sales.get(&sale().attribution_id)
    else {
        panic!("expected a revoked attribution, got {:?}", state.sales);
    };
    assert_eq!(
        (attributed.campaign_id.as_str(), rejected.reason()),
        ("three", pb::RejectionReason::RevokedAfterAttribution)
    );
    // Final: neither a second rejection nor an approval.
    for decision in [pb::ReviewDecision::Reject, pb::ReviewDecision::Approve] {
        assert_eq!(
            review(&state, &revocation(decision)),
            Err(Rejection::FailedPrecondition(
                "attribution c1e178ea-3e23-5758-8968-98809a66d97b was rejected, and a rejection \
                 is final"
                    .into()
            ))
        );
    }
    // A redelivered activation records nothing over it.
    let again = decide(&sale(), Token::Found(link()), &referrer(), &quiet());
    assert!(record(&state, &again).unwrap().is_empty());
}

#[test]
fn approving_an_attribution_that_counts_is_refused_and_a_revocation_without_a_note_names_the_reviewer()
 {
    let state = attributed_state();
    assert_eq!(
        review(&state, &revocation(pb::ReviewDecision::Approve)),
        Err(Rejection::FailedPrecondition(
            "attribution c1e178ea-3e23-5758-8968-98809a66d97b already counts: APPROVE is for held \
             attributions (REJECT revokes it)"
                .into()
        ))
    );
    assert!(matches!(
        review(&state, &revocation(pb::ReviewDecision::Unspecified)),
        Err(Rejection::Invalid(_))
    ));
    let silent = Review {
        note: String::new(),
        ..revocation(pb::ReviewDecision::Reject)
    };
    let events = review(&state, &silent).unwrap();
    let ReferralEvent::ReferralRejected(r) = &events[1] else {
        panic!("expected a rejection, got {events:?}");
    };
    assert_eq!(r.detail, "revoked after attribution by risk-desk-li");
}

#[test]
fn a_held_attribution_approved_after_review_can_be_revoked_and_one_rejected_at_review_cannot() {
    let busy = Signals {
        referrer_last_hour: 99,
        ..quiet()
    };
    let held = decide(&sale(), Token::Found(link()), &referrer(), &busy);
    let mut state = Attributions::default();
    record(&state, &held)
        .unwrap()
        .iter()
        .for_each(|e| state.apply(e));
    let mut rejected_at_review = state.clone();
    review(&state, &revocation(pb::ReviewDecision::Approve))
        .unwrap()
        .iter()
        .for_each(|e| state.apply(e));
    let revoked = review(&state, &revocation(pb::ReviewDecision::Reject)).unwrap();
    let ReferralEvent::ReferralRejected(r) = &revoked[1] else {
        panic!("expected a rejection, got {revoked:?}");
    };
    assert_eq!(
        (r.reason(), r.level1_member_id.as_str()),
        (pb::RejectionReason::RevokedAfterAttribution, "ref")
    );
    review(&rejected_at_review, &revocation(pb::ReviewDecision::Reject))
        .unwrap()
        .iter()
        .for_each(|e| rejected_at_review.apply(e));
    assert!(matches!(
        rejected_at_review.sales.get(&sale().attribution_id),
        Some(Recorded::Rejected(_))
    ));
    assert!(matches!(
        review(&rejected_at_review, &revocation(pb::ReviewDecision::Reject)),
        Err(Rejection::FailedPrecondition(_))
    ));
}

use super::*;
use scanloop_proto::common::v1::stored_identity::Kind;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn batch() -> pb::BatchIssued {
    pb::BatchIssued {
        batch_id: "b1".into(),
        sku: "AC-100".into(),
        product_model: "AC 100".into(),
        warranty_months: 24,
        quantity: 10,
        key_id: "k1".into(),
    }
}

fn activation(_request_id: &str, now: &str) -> Activate {
    Activate {
        brand_id: "acme".into(),
        batch: batch(),
        batch_issued_at: at("2026-01-15T00:00:00Z"),
        serial: 3,
        buyer: StoredIdentity {
            kind: Some(Kind::PhoneHash("ab".repeat(32))),
        },
        channel: pb::PurchaseChannel {
            kind: pb::PurchaseChannelKind::Store as i32,
            id: "store-1".into(),
        },
        purchase_amount_fen: 399_900,
        purchased_at: at("2026-01-31T10:00:00Z"),
        referral_token: String::new(),
        device_serial: "SN1".into(),
        now: at(now),
    }
}

/// given(events) → state
fn given(events: &[ActivationEvent]) -> Warranty {
    let mut state = Warranty::default();
    for event in events {
        state.apply(event);
    }
    state
}

fn activated() -> Warranty {
    let rules = Rules::default();
    given(
        &activate(
            &Warranty::default(),
            &activation("r1", "2026-02-01T00:00:00Z"),
            &rules,
        )
        .unwrap(),
    )
}

#[test]
fn activation_sets_the_end_from_purchase_date_plus_months() {
    let state = activated();
    assert_eq!(state.ends_at, Some(at("2028-01-31T10:00:00Z")));
    assert_eq!(state.activated_at(), Some(at("2026-02-01T00:00:00Z")));
}

#[test]
fn a_warranty_comes_back_from_its_snapshot_as_it_was() {
    let mut state = activated();
    state.voided = Some(pb::WarrantyVoided {
        reason: "returned".into(),
        ..Default::default()
    });
    state.refunded_fen = 1_000;
    state.last_scan = Some(("440300".into(), at("2026-02-03T00:00:00Z")));
    state.assists.insert("assist-1".into());
    let restored = Warranty::from_snapshot(&state.to_snapshot()).expect("a snapshot");
    assert_eq!(restored, state);
    assert_eq!(Warranty::from_snapshot(b"not a snapshot"), None);
}

#[test]
fn a_second_activation_is_refused_naming_when() {
    let state = activated();
    let rules = Rules::default();
    match activate(&state, &activation("r2", "2026-02-02T00:00:00Z"), &rules) {
        Err(Rejection::AlreadyExists(message)) => {
            assert!(message.contains("2026-02-01T00:00:00+00:00"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn activation_refuses_future_purchases_and_negative_amounts() {
    let rules = Rules::default();
    let mut future = activation("r", "2026-01-01T00:00:00Z");
    future.purchased_at = at("2026-01-02T00:00:00Z");
    assert!(matches!(
        activate(&Warranty::default(), &future, &rules),
        Err(Rejection::Invalid(_))
    ));
    let mut negative = activation("r", "2026-02-01T00:00:00Z");
    negative.purchase_amount_fen = -1;
    assert!(matches!(
        activate(&Warranty::default(), &negative, &rules),
        Err(Rejection::Invalid(_))
    ));
}

fn refusal(state: &Warranty, cmd: &Activate, rules: &Rules) -> Rejection {
    match activate(state, cmd, rules) {
        Err(rejection) => rejection,
        Ok(events) => panic!("accepted: {events:?}"),
    }
}

#[test]
fn a_purchase_before_the_batch_was_issued_is_refused_naming_the_rule() {
    let rules = Rules::default();
    // The batch was issued 2026-01-15; 1970 is impossible.
    let mut ancient = activation("r", "2026-02-01T00:00:00Z");
    ancient.purchased_at = at("1970-01-02T00:00:00Z");
    match refusal(&Warranty::default(), &ancient, &rules) {
        Rejection::Invalid(m) => assert!(
            m.contains("before this code's batch was issued (2026-01-15T00:00:00+00:00)"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // Within the 24-hour allowance (a date-only time in a local zone) is accepted, beyond
    // it is refused.
    let mut allowed = activation("r", "2026-02-01T00:00:00Z");
    allowed.purchased_at = at("2026-01-14T00:00:00Z");
    assert!(activate(&Warranty::default(), &allowed, &rules).is_ok());
    allowed.purchased_at = at("2026-01-13T23:59:59Z");
    assert!(matches!(
        refusal(&Warranty::default(), &allowed, &rules),
        Rejection::Invalid(_)
    ));
}

#[test]
fn a_purchase_further_back_than_the_limit_is_refused() {
    let rules = Rules {
        purchase: PurchaseLimits {
            max_age: Duration::days(365),
            ..PurchaseLimits::default()
        },
        ..Rules::default()
    };
    // Batch issued 2026-01-15, purchased 2026-01-31, activated 2027-02-01: 366 days later.
    let late = activation("r", "2027-02-01T00:00:00Z");
    match refusal(&Warranty::default(), &late, &rules) {
        Rejection::Invalid(m) => assert!(m.contains("more than 365 days ago"), "{m}"),
        other => panic!("{other:?}"),
    }
    let in_time = activation("r", "2027-01-30T00:00:00Z");
    assert!(activate(&Warranty::default(), &in_time, &rules).is_ok());
}

#[test]
fn a_warranty_that_already_ended_is_not_activated() {
    let rules = Rules::default();
    // Purchased 2026-01-31 with 24 months: ended 2028-01-31.
    let ended = activation("r", "2028-02-01T00:00:00Z");
    match refusal(&Warranty::default(), &ended, &rules) {
        Rejection::FailedPrecondition(m) => {
            assert!(
                m.contains("already ended at 2028-01-31T10:00:00+00:00"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn amounts_above_the_brands_ceiling_are_refused() {
    let mut rules = Rules::default();
    let mut huge = activation("r", "2026-02-01T00:00:00Z");
    huge.purchase_amount_fen = i64::MAX;
    match refusal(&Warranty::default(), &huge, &rules) {
        Rejection::Invalid(m) => {
            assert!(m.contains("ceiling of 100000000 fen (¥1000000)"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let mut at_ceiling = activation("r", "2026-02-01T00:00:00Z");
    at_ceiling.purchase_amount_fen = 100_000_000;
    assert!(activate(&Warranty::default(), &at_ceiling, &rules).is_ok());
    // A brand's own ceiling replaces the default for that brand only.
    rules
        .purchase
        .max_amount_fen_by_brand
        .insert("acme".into(), 500_000);
    match refusal(&Warranty::default(), &at_ceiling, &rules) {
        Rejection::Invalid(m) => assert!(m.contains("ceiling of 500000 fen"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rules.purchase.max_amount_fen("globex"), 100_000_000);
}

fn voided_at(when: &str) -> Warranty {
    let rules = Rules::default();
    let mut state = activated();
    let void_events = void(
        &state,
        &Void {
            reason: "returned".into(),
            now: at(when),
        },
        &rules,
    )
    .unwrap();
    state.apply(&void_events[0]);
    state
}

#[test]
fn a_returned_unit_resold_after_the_void_gets_a_new_warranty() {
    let rules = Rules::default();
    let mut state = voided_at("2026-02-10T00:00:00Z");
    let mut resale = activation("r2", "2026-03-01T00:00:00Z");
    resale.purchased_at = at("2026-02-20T09:00:00Z");
    resale.purchase_amount_fen = 299_900;
    let events = activate(&state, &resale, &rules).unwrap();
    state.apply(&events[0]);
    assert!(state.voided.is_none(), "the new warranty is not voided");
    assert_eq!(state.extended_months, 0);
    assert_eq!(state.ends_at, Some(at("2028-02-20T09:00:00Z")));
    assert_eq!(state.activated_at(), Some(at("2026-03-01T00:00:00Z")));
    // And it is active: a further activation is refused as such.
    assert!(matches!(
        refusal(&state, &activation("r3", "2026-03-02T00:00:00Z"), &rules),
        Rejection::AlreadyExists(m) if m.contains("already activated at 2026-03-01")
    ));
}

#[test]
fn activating_a_voided_code_for_the_returned_sale_says_it_was_voided() {
    let rules = Rules::default();
    let state = voided_at("2026-02-10T00:00:00Z");
    // The original purchase (2026-01-31) is the sale that was returned.
    match refusal(&state, &activation("r2", "2026-03-01T00:00:00Z"), &rules) {
        Rejection::FailedPrecondition(m) => {
            assert!(m.contains("voided (returned) at 2026-02-10"), "{m}");
            assert!(!m.contains("already activated"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn extensions_add_up() {
    let mut state = activated();
    let cmd = Extend {
        months: 12,
        reason: pb::ExtensionReason::AssistCampaign,
        assist_id: String::new(),
    };
    let events = extend(&state, &cmd).unwrap();
    state.apply(&events[0]);
    assert_eq!(state.ends_at, Some(at("2029-01-31T10:00:00Z")));
    assert_eq!(state.extended_months, 12);
    let events = extend(&state, &cmd).unwrap();
    state.apply(&events[0]);
    assert_eq!(state.extended_months, 24);
}

#[test]
fn an_assist_extends_its_warranty_once_ever_even_after_a_resale() {
    let rules = Rules::default();
    let assist = |id: &str| Extend {
        months: 12,
        reason: pb::ExtensionReason::AssistCampaign,
        assist_id: id.into(),
    };
    let mut state = activated();
    let events = extend(&state, &assist("a-1")).unwrap();
    state.apply(&events[0]);
    assert_eq!(state.ends_at, Some(at("2029-01-31T10:00:00Z")));
    assert_eq!(extend(&state, &assist("a-1")).unwrap(), Vec::new());
    // Another assist is another reward.
    let events = extend(&state, &assist("a-2")).unwrap();
    state.apply(&events[0]);
    assert_eq!(state.extended_months, 24);

    // Returned and resold: the new buyer's warranty starts without extensions, and the
    // earlier buyer's assist does not reach it.
    let void_events = void(
        &state,
        &Void {
            reason: "returned".into(),
            now: at("2026-02-10T00:00:00Z"),
        },
        &rules,
    )
    .unwrap();
    state.apply(&void_events[0]);
    let mut resale = activation("r2", "2026-03-01T00:00:00Z");
    resale.purchased_at = at("2026-02-20T09:00:00Z");
    let events = activate(&state, &resale, &rules).unwrap();
    state.apply(&events[0]);
    assert_eq!(state.extended_months, 0);
    assert_eq!(extend(&state, &assist("a-1")).unwrap(), Vec::new());
    assert_eq!(state.ends_at, Some(at("2028-02-20T09:00:00Z")));
}

#[test]
fn extension_needs_an_active_warranty_and_valid_input() {
    let cmd = Extend {
        months: 12,
        reason: pb::ExtensionReason::Goodwill,
        assist_id: String::new(),
    };
    assert!(matches!(
        extend(&Warranty::default(), &cmd),
        Err(Rejection::FailedPrecondition(_))
    ));
    let zero = Extend { months: 0, ..cmd };
    assert!(matches!(
        extend(&activated(), &zero),
        Err(Rejection::Invalid(_))
    ));
    let unspecified = Extend {
        months: 1,
        reason: pb::ExtensionReason::Unspecified,
        assist_id: String::new(),
    };
    assert!(matches!(
        extend(&activated(), &unspecified),
        Err(Rejection::Invalid(_))
    ));
}

#[test]
fn a_return_inside_the_window_voids_and_after_it_is_refused() {
    let rules = Rules::default();
    let inside = Void {
        reason: "changed mind".into(),
        now: at("2026-03-01T10:00:00Z"),
    };
    let events = void(&activated(), &inside, &rules).unwrap();
    let state = given(&[
        activate(
            &Warranty::default(),
            &activation("r1", "2026-02-01T00:00:00Z"),
            &rules,
        )
        .unwrap()
        .remove(0),
        events[0].clone(),
    ]);
    assert!(state.voided.is_some());
    assert!(matches!(
        void(&state, &inside, &rules),
        Err(Rejection::FailedPrecondition(_))
    ));

    let late = Void {
        reason: "broken".into(),
        now: at("2026-03-02T10:00:01Z"),
    };
    match void(&activated(), &late, &rules) {
        Err(Rejection::FailedPrecondition(message)) => {
            assert!(message.contains("return window"))
        }
        other => panic!("{other:?}"),
    }
}

fn refund_of(amount_fen: i64, now: &str) -> Refund {
    Refund {
        amount: Money {
            amount_fen,
            currency: "CNY".into(),
        },
        reason: "price adjustment".into(),
        now: at(now),
    }
}

/// Decides `cmd` against `state` and applies what it decided.
fn refunded(state: &mut Warranty, cmd: &Refund) -> pb::PurchaseRefunded {
    let events = refund(state, cmd).unwrap();
    for event in &events {
        state.apply(event);
    }
    match events.as_slice() {
        [ActivationEvent::PurchaseRefunded(refunded)] => refunded.clone(),
        other => panic!("{other:?}"),
    }
}

fn cny(amount_fen: i64) -> Option<Money> {
    Some(Money {
        amount_fen,
        currency: "CNY".into(),
    })
}

#[test]
fn a_refund_names_its_sale_and_the_total_refunded_so_far() {
    let mut state = activated();
    // 30% of the ¥3,999 purchase.
    let first = refunded(&mut state, &refund_of(119_970, "2026-02-05T00:00:00Z"));
    assert_eq!(
        first,
        pb::PurchaseRefunded {
            amount: cny(119_970),
            refunded_total: cny(119_970),
            purchase_amount: cny(399_900),
            reason: "price adjustment".into(),
            refunded_at: Some(to_timestamp(at("2026-02-05T00:00:00Z"))),
            activated_at: Some(to_timestamp(at("2026-02-01T00:00:00Z"))),
        }
    );
    assert_eq!(state.refunded_fen, 119_970);
    // A currency left empty is CNY; the event spells it out.
    let mut no_currency = refund_of(10_000, "2026-02-06T00:00:00Z");
    no_currency.amount.currency = String::new();
    let second = refunded(&mut state, &no_currency);
    assert_eq!(second.amount, cny(10_000));
    assert_eq!(second.refunded_total, cny(129_970));
    assert_eq!(state.refunded_fen, 129_970);
}

#[test]
fn refunds_never_add_up_to_more_than_the_purchase() {
    let mut state = activated();
    refunded(&mut state, &refund_of(119_970, "2026-02-05T00:00:00Z"));
    // 279,930 fen are left: one fen more is refused naming what is left.
    match refund(&state, &refund_of(279_931, "2026-02-06T00:00:00Z")) {
        Err(Rejection::FailedPrecondition(m)) => assert_eq!(
            m,
            "a refund of 279931 fen is more than the 279930 fen left to refund of this sale \
             (purchase 399900 fen, refunded 119970 fen so far)"
        ),
        other => panic!("{other:?}"),
    }
    // Exactly what is left is accepted; then nothing is left.
    let last = refunded(&mut state, &refund_of(279_930, "2026-02-06T00:00:00Z"));
    assert_eq!(last.refunded_total, cny(399_900));
    match refund(&state, &refund_of(1, "2026-02-07T00:00:00Z")) {
        Err(Rejection::FailedPrecondition(m)) => {
            assert!(m.contains("more than the 0 fen left"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refund_must_be_positive_cny_with_a_short_reason() {
    let state = activated();
    for amount_fen in [0, -1, i64::MIN] {
        match refund(&state, &refund_of(amount_fen, "2026-02-05T00:00:00Z")) {
            Err(Rejection::Invalid(m)) => assert!(
                m.starts_with(&format!(
                    "amount must be more than 0 fen (got {amount_fen})"
                )),
                "{m}"
            ),
            other => panic!("{amount_fen}: {other:?}"),
        }
    }
    let mut dollars = refund_of(100, "2026-02-05T00:00:00Z");
    dollars.amount.currency = "USD".into();
    match refund(&state, &dollars) {
        Err(Rejection::Invalid(m)) => assert_eq!(
            m,
            "amount must be in CNY (fen), the currency of the purchase; got \"USD\""
        ),
        other => panic!("{other:?}"),
    }
    let mut long = refund_of(100, "2026-02-05T00:00:00Z");
    long.reason = "x".repeat(MAX_REFUND_REASON + 1);
    assert!(matches!(refund(&state, &long), Err(Rejection::Invalid(_))));
    long.reason = "x".repeat(MAX_REFUND_REASON);
    assert!(refund(&state, &long).is_ok());
}

#[test]
fn only_an_active_sale_is_refunded() {
    match refund(
        &Warranty::default(),
        &refund_of(100, "2026-02-05T00:00:00Z"),
    ) {
        Err(Rejection::FailedPrecondition(m)) => {
            assert!(
                m.starts_with("this code's warranty is not activated"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let voided = voided_at("2026-02-10T00:00:00Z");
    match refund(&voided, &refund_of(100, "2026-02-11T00:00:00Z")) {
        Err(Rejection::FailedPrecondition(m)) => {
            assert!(m.starts_with("this warranty was voided"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_void_names_the_sale_it_returns_and_a_resale_starts_its_refunds_from_nothing() {
    let rules = Rules::default();
    let mut state = activated();
    refunded(&mut state, &refund_of(100_000, "2026-02-05T00:00:00Z"));
    let void_events = void(
        &state,
        &Void {
            reason: "returned".into(),
            now: at("2026-02-10T00:00:00Z"),
        },
        &rules,
    )
    .unwrap();
    assert_eq!(
        void_events,
        vec![ActivationEvent::WarrantyVoided(pb::WarrantyVoided {
            reason: "returned".into(),
            voided_at: Some(to_timestamp(at("2026-02-10T00:00:00Z"))),
            activated_at: Some(to_timestamp(at("2026-02-01T00:00:00Z"))),
        })]
    );
    state.apply(&void_events[0]);
    // The voided sale keeps what was refunded of it (GetWarranty shows it).
    assert_eq!(state.refunded_fen, 100_000);

    let mut resale = activation("r2", "2026-03-01T00:00:00Z");
    resale.purchased_at = at("2026-02-20T09:00:00Z");
    resale.purchase_amount_fen = 299_900;
    let events = activate(&state, &resale, &rules).unwrap();
    state.apply(&events[0]);
    assert_eq!(state.refunded_fen, 0);
    // The whole resale can be refunded, and the refund names the resale.
    let refund_of_resale = refunded(&mut state, &refund_of(299_900, "2026-03-02T00:00:00Z"));
    assert_eq!(refund_of_resale.refunded_total, cny(299_900));
    assert_eq!(refund_of_resale.purchase_amount, cny(299_900));
    assert_eq!(
        refund_of_resale.activated_at,
        Some(to_timestamp(at("2026-03-01T00:00:00Z")))
    );
}

#[test]
fn scans_from_far_apart_provinces_in_a_short_time_are_suspicious() {
    let rules = Rules::default();
    let scan_at = |_request: &str, region: &str, when: &str| Scan {
        batch_id: "b1".into(),
        serial: 3,
        region: region.into(),
        scanned_at: at(when),
        now: at("2026-05-01T00:00:00Z"),
    };
    let first = scan(
        &Warranty::default(),
        &scan_at("s1", "440300", "2026-04-01T10:00:00Z"),
        &rules,
    )
    .unwrap();
    assert_eq!(first.len(), 1);
    let state = given(&first);
    // Same province (44 Guangdong: Shenzhen → Guangzhou): fine.
    assert_eq!(
        scan(
            &state,
            &scan_at("s2", "440100", "2026-04-01T10:30:00Z"),
            &rules
        )
        .unwrap()
        .len(),
        1
    );
    // Beijing half an hour later: suspicious.
    let events = scan(
        &state,
        &scan_at("s3", "110000", "2026-04-01T10:30:00Z"),
        &rules,
    )
    .unwrap();
    assert!(
        matches!(events.as_slice(), [ActivationEvent::CodeScanned(_), ActivationEvent::SuspiciousScan(s)] if s.previous_region == "440300")
    );
    // Beijing a day later: fine.
    assert_eq!(
        scan(
            &state,
            &scan_at("s4", "110000", "2026-04-02T10:30:00Z"),
            &rules
        )
        .unwrap()
        .len(),
        1
    );
    // A bad region is refused.
    assert!(matches!(
        scan(&state, &scan_at("s5", "44", "2026-04-01T10:00:00Z"), &rules),
        Err(Rejection::Invalid(_))
    ));
}

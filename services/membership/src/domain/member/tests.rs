use super::*;
use scanloop_proto::common::v1::stored_identity::Kind;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn identity() -> StoredIdentity {
    StoredIdentity {
        kind: Some(Kind::PhoneHash("ab".repeat(32))),
    }
}

fn given(events: &[MembershipEvent]) -> Member {
    let mut state = Member::default();
    for event in events {
        state.apply(event);
    }
    state
}

/// when(command) → then(events), applied to the state.
fn step(
    state: &mut Member,
    decide: impl FnOnce(&Member) -> Result<Vec<MembershipEvent>, Rejection>,
) -> Vec<MembershipEvent> {
    let events = decide(state).unwrap();
    for event in &events {
        state.apply(event);
    }
    events
}

fn registered() -> Member {
    given(
        &register(
            &Member::default(),
            &Register {
                member_id: "m1".into(),
                identity: identity(),
                display_name: "Li".into(),
                region: "440300".into(),
                now: at("2026-01-01T00:00:00Z"),
            },
        )
        .unwrap(),
    )
}

fn points(points: i64, request_id: &str, now: &str) -> Points {
    Points {
        points,
        reason: "test".into(),
        request_id: request_id.into(),
        now: at(now),
    }
}

#[test]
fn registering_twice_is_refused() {
    let state = registered();
    assert_eq!(
        state.identities,
        vec![format!("phone_hash:{}", "ab".repeat(32))]
    );
    let again = Register {
        member_id: "m1".into(),
        identity: identity(),
        display_name: String::new(),
        region: String::new(),
        now: at("2026-01-02T00:00:00Z"),
    };
    assert!(matches!(
        register(&state, &again),
        Err(Rejection::AlreadyExists(_))
    ));
}

#[test]
fn the_balance_is_the_sum_of_entries_and_never_goes_below_zero() {
    let rules = Rules::default();
    let mut state = registered();
    step(&mut state, |s| {
        award(s, &points(100, "a1", "2026-01-01T00:00:00Z"), &rules)
    });
    step(&mut state, |s| {
        award(s, &points(50, "a2", "2026-02-01T00:00:00Z"), &rules)
    });
    assert_eq!(state.balance_at(at("2026-03-01T00:00:00Z")), 150);
    step(&mut state, |s| {
        redeem(s, &points(120, "r1", "2026-03-01T00:00:00Z"))
    });
    assert_eq!(state.balance_at(at("2026-03-01T00:00:00Z")), 30);
    // The oldest lot was spent first.
    assert_eq!(state.lots.len(), 1);
    assert_eq!(state.lots[0].lot_id, lot_id("m1", "a2"));
    assert_eq!(state.lots[0].lot_id, "630d15c7-2ebb-57f7-a491-3ec27861900f");
    match redeem(&state, &points(31, "r2", "2026-03-01T00:00:00Z")) {
        Err(Rejection::FailedPrecondition(m)) => assert!(m.contains("balance is 30")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn points_expire_a_year_after_they_were_earned() {
    let rules = Rules::default();
    let mut state = registered();
    step(&mut state, |s| {
        award(s, &points(100, "old", "2026-01-01T00:00:00Z"), &rules)
    });
    step(&mut state, |s| {
        award(s, &points(10, "new", "2026-06-01T00:00:00Z"), &rules)
    });
    let later = "2027-01-02T00:00:00Z";
    assert_eq!(
        state.balance_at(at(later)),
        10,
        "expired points cannot be spent"
    );
    let events = step(&mut state, |s| award(s, &points(5, "more", later), &rules));
    match &events[0] {
        MembershipEvent::PointsExpired(e) => {
            assert_eq!(e.points, 100);
            assert_eq!(e.lot_ids, vec![lot_id("m1", "old")]);
        }
        other => panic!("expected the expiry entry first, got {other:?}"),
    }
    assert_eq!(state.balance_at(at(later)), 15);
    assert!(redeem(&state, &points(16, "r", later)).is_err());
}

#[test]
fn bad_points_are_refused() {
    let rules = Rules::default();
    let state = registered();
    for bad in [0, -5, MAX_POINTS_PER_ENTRY + 1] {
        assert!(matches!(
            award(&state, &points(bad, "x", "2026-01-01T00:00:00Z"), &rules),
            Err(Rejection::Invalid(_))
        ));
    }
    assert!(matches!(
        award(
            &Member::default(),
            &points(5, "x", "2026-01-01T00:00:00Z"),
            &rules
        ),
        Err(Rejection::NotFound(_))
    ));
}

fn engagement(kind: pb::EngagementKind, _request_id: &str, when: &str) -> Engage {
    Engage {
        kind,
        occurred_at: at(when),
        now: at(when),
    }
}

#[test]
fn a_member_qualifies_as_koc_by_the_seed_rule_and_lapses_when_the_window_moves_on() {
    use pb::EngagementKind::{Comment, Scan, Share};
    let rules = Rules::default();
    let mut state = registered();
    let mut all = Vec::new();
    let plan = [(Scan, 3), (Share, 2), (Comment, 5)];
    let mut n = 0;
    for (kind, count) in plan {
        for _ in 0..count {
            n += 1;
            let when = format!("2026-04-{:02}T10:00:00Z", n);
            all.extend(step(&mut state, |s| {
                engage(s, &engagement(kind, &format!("e{n}"), &when), &rules)
            }));
        }
    }
    assert!(
        state.koc_qualified,
        "3 scans, 2 shares, 5 comments in 30 days qualify"
    );
    assert_eq!(state.tier, Tier::JuniorSharer);
    assert_eq!(
        all.iter()
            .filter(|e| matches!(e, MembershipEvent::KocQualified(_)))
            .count(),
        1
    );
    // A month and a half later a single comment finds the window empty: lapsed.
    let events = step(&mut state, |s| {
        engage(
            s,
            &engagement(Comment, "late", "2026-05-25T10:00:00Z"),
            &rules,
        )
    });
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MembershipEvent::KocLapsed(_)))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MembershipEvent::TierChanged(t) if t.to_tier == "member"))
    );
    assert!(!state.koc_qualified);
}

#[test]
fn gold_recommenders_score_high_in_the_window() {
    use pb::EngagementKind::{Comment, Scan, Share};
    let rules = Rules::default();
    let mut state = registered();
    let mut n = 0;
    for (kind, count) in [(Scan, 3), (Comment, 5), (Share, 9)] {
        for _ in 0..count {
            n += 1;
            let when = format!("2026-04-{:02}T10:00:00Z", n);
            step(&mut state, |s| {
                engage(s, &engagement(kind, &format!("e{n}"), &when), &rules)
            });
        }
    }
    // 3 + 10 + 45 = 58: still junior. One more share: 63.
    assert_eq!(state.tier, Tier::JuniorSharer);
    step(&mut state, |s| {
        engage(s, &engagement(Share, "e99", "2026-04-20T10:00:00Z"), &rules)
    });
    assert_eq!(state.tier, Tier::GoldRecommender);
}

#[test]
fn engagement_input_is_checked() {
    let rules = Rules::default();
    let state = registered();
    let now = at("2026-04-01T00:00:00Z");
    let future = Engage {
        occurred_at: now + Duration::hours(1),
        ..engagement(pb::EngagementKind::Share, "f", "2026-04-01T00:00:00Z")
    };
    assert!(matches!(
        engage(&state, &future, &rules),
        Err(Rejection::Invalid(_))
    ));
    let ancient = Engage {
        occurred_at: now - Duration::days(31),
        ..engagement(pb::EngagementKind::Share, "a", "2026-04-01T00:00:00Z")
    };
    assert!(matches!(
        engage(&state, &ancient, &rules),
        Err(Rejection::Invalid(_))
    ));
    let unspecified = engagement(pb::EngagementKind::Unspecified, "u", "2026-04-01T00:00:00Z");
    assert!(matches!(
        engage(&state, &unspecified, &rules),
        Err(Rejection::Invalid(_))
    ));
}

#[test]
fn an_activation_registers_binds_awards_and_counts_a_scan() {
    let rules = Rules::default();
    let cmd = Activated {
        member_id: "m9".into(),
        identity: identity(),
        device_serial: "SN-1".into(),
        warranty_code: "warranty-b-1".into(),
        event_id: "ev-1".into(),
        activated_at: at("2026-04-01T00:00:00Z"),
        now: at("2026-04-01T00:00:01Z"),
    };
    let mut state = Member::default();
    let events = step(&mut state, |s| on_activation(s, &cmd, &rules));
    let types: Vec<&str> = events
        .iter()
        .map(|e| scanloop_eventstore::DomainEvent::event_type(e))
        .collect();
    assert_eq!(
        types,
        [
            "scanloop.membership.v1.MemberRegistered",
            "scanloop.membership.v1.DeviceBound",
            "scanloop.membership.v1.PointsEarned",
            "scanloop.membership.v1.EngagementRecorded",
        ]
    );
    assert_eq!(state.balance_at(cmd.now), 100);
    assert_eq!(state.lots[0].lot_id, lot_id("m9", "activation-points:ev-1"));
    // A second purchase by the same member: a second device and more points, no new member.
    let second = Activated {
        device_serial: "SN-2".into(),
        event_id: "ev-2".into(),
        ..cmd
    };
    let events = step(&mut state, |s| on_activation(s, &second, &rules));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, MembershipEvent::MemberRegistered(_)))
    );
    assert_eq!(state.devices, vec!["SN-1".to_owned(), "SN-2".to_owned()]);
    assert_eq!(state.balance_at(second.now), 200);
}

#[test]
fn snapshots_round_trip() {
    let rules = Rules::default();
    let mut state = registered();
    step(&mut state, |s| {
        award(s, &points(7, "a", "2026-01-01T00:00:00Z"), &rules)
    });
    let restored = Member::from_snapshot(&state.to_snapshot()).unwrap();
    assert_eq!(restored, state);
}

/// Records `plan` (kind, count) one a day from `first_day` of April 2026, 10:00.
fn engaged(plan: &[(pb::EngagementKind, u32)], rules: &Rules) -> Member {
    let mut state = registered();
    let mut day = 0;
    for &(kind, count) in plan {
        for _ in 0..count {
            day += 1;
            let when = format!("2026-04-{day:02}T10:00:00Z");
            step(&mut state, |s| {
                engage(s, &engagement(kind, &format!("e{day}"), &when), rules)
            });
        }
    }
    state
}

#[test]
fn tick_writes_off_lots_when_they_expire_and_nothing_before() {
    let rules = Rules::default();
    let mut state = registered();
    step(&mut state, |s| {
        award(s, &points(100, "a1", "2026-01-01T00:00:00Z"), &rules)
    });
    step(&mut state, |s| {
        award(s, &points(10, "a2", "2026-06-01T00:00:00Z"), &rules)
    });
    step(&mut state, |s| {
        redeem(s, &points(30, "r1", "2026-07-01T00:00:00Z"))
    });
    assert_eq!(tick(&state, at("2026-12-31T23:59:59Z"), &rules), vec![]);
    let events = tick(&state, at("2027-01-01T00:00:00Z"), &rules);
    assert_eq!(
        events,
        vec![MembershipEvent::PointsExpired(pb::PointsExpired {
            member_id: "m1".into(),
            points: 70,
            lot_ids: vec!["2651539c-2f59-5e4f-8722-b4951133c491".into()],
        })]
    );
    for event in &events {
        state.apply(event);
    }
    assert_eq!(
        tick(&state, at("2027-01-01T00:00:00Z"), &rules),
        vec![],
        "a second run of the job changes nothing"
    );
    assert_eq!(state.balance_at(at("2027-01-01T00:00:00Z")), 10);
}

#[test]
fn tick_lapses_a_koc_when_the_oldest_counted_engagement_leaves_the_window() {
    use pb::EngagementKind::{Comment, Scan, Share};
    let rules = Rules::default();
    // Scans on 1-3 April, shares on 4-5, comments on 6-10: qualified, junior sharer.
    let state = engaged(&[(Scan, 3), (Share, 2), (Comment, 5)], &rules);
    assert!(state.koc_qualified);
    assert_eq!(tick(&state, at("2026-05-01T09:59:59Z"), &rules), vec![]);
    // The 1 April scan stops counting 30 days later, at 10:00: two scans are too few.
    assert_eq!(
        tick(&state, at("2026-05-01T10:00:00Z"), &rules),
        vec![
            MembershipEvent::KocLapsed(pb::KocLapsed {
                member_id: "m1".into(),
                scans: 2,
                shares: 2,
                comments: 5,
            }),
            MembershipEvent::TierChanged(pb::TierChanged {
                member_id: "m1".into(),
                from_tier: "junior_sharer".into(),
                to_tier: "member".into(),
            }),
        ]
    );
    assert_eq!(
        leaves_window(at("2026-04-01T10:00:00Z"), &rules),
        at("2026-05-01T10:00:00Z")
    );
}

#[test]
fn tick_steps_a_gold_recommender_down_when_the_window_score_falls_below_the_bar() {
    use pb::EngagementKind::{Comment, Scan, Share};
    let rules = Rules::default();
    // A share on 1 April, then 3 scans, 5 comments and 9 more shares: 3 + 10 + 50 = 63.
    let state = engaged(&[(Share, 1), (Scan, 3), (Comment, 5), (Share, 9)], &rules);
    assert_eq!(state.tier, Tier::GoldRecommender);
    // Without the first share: 58, still qualified (9 shares), no longer gold.
    assert_eq!(
        tick(&state, at("2026-05-01T10:00:00Z"), &rules),
        vec![MembershipEvent::TierChanged(pb::TierChanged {
            member_id: "m1".into(),
            from_tier: "gold_recommender".into(),
            to_tier: "junior_sharer".into(),
        })]
    );
}

#[test]
fn tick_does_nothing_for_an_unknown_member() {
    assert_eq!(
        tick(
            &Member::default(),
            at("2030-01-01T00:00:00Z"),
            &Rules::default()
        ),
        vec![]
    );
}

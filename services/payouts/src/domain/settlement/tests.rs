use super::*;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn item(member: &str, commission: &str, clawback: Option<&str>, amount: i64) -> Candidate {
    Candidate {
        beneficiary: Beneficiary::member(member),
        sale_stream_id: format!("sale-{commission}"),
        commission_id: commission.into(),
        clawback_id: clawback.map(Into::into),
        amount,
    }
}

#[test]
fn one_batch_is_open_at_a_time_and_a_finished_one_is_not_reopened() {
    let mut state = Settlements::default();
    let started = start(&state, "b1", at(0), at(1)).unwrap();
    assert_eq!(started.len(), 1);
    started.iter().for_each(|e| state.apply(e));
    assert!(start(&state, "b1", at(0), at(2)).unwrap().is_empty());
    assert!(matches!(
        start(&state, "b2", at(0), at(2)),
        Err(Rejection::FailedPrecondition(_))
    ));
    let summary = pb::SettlementCompleted {
        batch_id: "b1".into(),
        ..Default::default()
    };
    complete(&state, &summary)
        .unwrap()
        .iter()
        .for_each(|e| state.apply(e));
    assert!(state.open.is_none());
    assert!(complete(&state, &summary).unwrap().is_empty());
    assert!(start(&state, "b1", at(0), at(3)).unwrap().is_empty());
    assert_eq!(start(&state, "b2", at(0), at(3)).unwrap().len(), 1);
}

#[test]
fn the_brands_index_of_batches_comes_back_from_its_snapshot_as_it_was() {
    let started = |batch: &str, secs| {
        PayoutsEvent::SettlementStarted(pb::SettlementStarted {
            batch_id: batch.into(),
            cutoff: Some(to_timestamp(at(secs))),
            started_at: Some(to_timestamp(at(secs + 1))),
        })
    };
    let mut state = Settlements::default();
    for event in [
        started("b1", 0),
        PayoutsEvent::SettlementCompleted(pb::SettlementCompleted {
            batch_id: "b1".into(),
            lines_count: 3,
            ..Default::default()
        }),
        started("b2", 10),
        PayoutsEvent::SettlementAbandoned(pb::SettlementAbandoned {
            batch_id: "b2".into(),
            reason: "nothing to pay".into(),
            ..Default::default()
        }),
        started("b3", 20),
    ] {
        state.apply(&event);
    }
    let restored = Settlements::from_snapshot(&state.to_snapshot()).expect("a snapshot");
    assert_eq!(restored, state);
    assert_eq!(
        restored.completed("b1").map(|done| done.lines_count),
        Some(3)
    );
    assert!(restored.is_closed("b2") && !restored.is_closed("b3"));
    assert_eq!(
        restored.open.map(|open| open.batch_id).as_deref(),
        Some("b3")
    );
}

#[test]
fn the_minimum_and_claw_backs_decide_who_is_paid() {
    let plan = plan(
        vec![
            item("a", "c1", None, 5_000),
            item("a", "c2", Some("k1"), 1_000),
            item("b", "c3", None, 99),
            item("c", "c4", None, 300),
            item("c", "c5", Some("k2"), 800),
        ],
        100,
    );
    assert_eq!(
        plan.pay.keys().cloned().collect::<Vec<_>>(),
        vec![Beneficiary::member("a")]
    );
    assert_eq!(plan.pay[&Beneficiary::member("a")].len(), 2);
    let carried: Vec<(String, i64)> = plan
        .carried
        .iter()
        .map(|c| {
            (
                c.beneficiary.as_ref().unwrap().id.clone(),
                c.net.as_ref().unwrap().amount_fen,
            )
        })
        .collect();
    assert_eq!(carried, vec![("b".into(), 99), ("c".into(), -500)]);
    assert!(
        plan.carried[0]
            .reason
            .contains("minimum payout of 1.00 yuan")
    );
    assert!(plan.carried[1].reason.contains("never paid out"));
}

#[test]
fn netting_never_makes_a_line_negative() {
    let owed = [
        item("a", "c1", Some("k1"), 700),
        item("a", "c2", Some("k2"), 500),
        item("a", "c3", Some("k3"), 200),
    ];
    let chosen = choose_netting(1_000, &owed);
    let ids: Vec<_> = chosen
        .iter()
        .map(|c| c.clawback_id.clone().unwrap())
        .collect();
    assert_eq!(ids, vec!["k1", "k3"]);
    let l = line(
        "b1",
        &Beneficiary::member("a"),
        "a****".into(),
        &[600, 400],
        900,
    );
    assert_eq!(l.amount.unwrap().amount_fen, 100);
    assert_eq!(l.commissions, 2);
}

#[test]
fn a_line_is_paid_once() {
    let a = Beneficiary::member("a");
    let mut batch = Batch::default();
    let l = line("b1", &a, String::new(), &[1_000], 0);
    record(&batch, "b1", std::slice::from_ref(&l), &[])
        .iter()
        .for_each(|e| batch.apply(e));
    assert!(record(&batch, "b1", &[l], &[]).is_empty());
    let paid = mark_paid(&batch, "b1", &a, "TX-1", at(5)).unwrap();
    assert_eq!(paid[0].postings()[0].amount_fen, 1_000);
    paid.iter().for_each(|e| batch.apply(e));
    assert!(
        mark_paid(&batch, "b1", &a, "TX-1", at(6))
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        mark_paid(&batch, "b1", &a, "TX-2", at(6)),
        Err(Rejection::FailedPrecondition(_))
    ));
    assert!(matches!(
        mark_paid(&batch, "b1", &Beneficiary::member("z"), "TX-3", at(6)),
        Err(Rejection::NotFound(_))
    ));
}

fn mask(b: &Beneficiary) -> String {
    format!("{}****", &b.id[..1])
}

fn planned(batch: &mut Batch, candidates: &[Candidate], minimum: i64, per_chunk: usize) {
    let input = PlanInput {
        batch_id: "b1",
        candidates,
        minimum,
        mask: &mask,
        per_chunk,
    };
    while !batch.sealed {
        let events = plan_next(batch, &input);
        assert_eq!(events.len(), 1);
        events.iter().for_each(|e| batch.apply(e));
    }
    assert!(
        plan_next(batch, &input).is_empty(),
        "a sealed plan takes no more"
    );
}

#[test]
fn the_plan_is_recorded_in_chunks_and_names_each_line_once() {
    let candidates = vec![
        item("a", "c1", None, 600),
        item("a", "c2", None, 400),
        item("a", "c1", None, 600), // a read model listing a row twice
        item("a", "c9", Some("k1"), 700),
        item("a", "c8", Some("k2"), 500),
        item("b", "c3", None, 5_000),
        item("c", "c4", None, 99),
    ];
    let mut batch = Batch::default();
    planned(&mut batch, &candidates, 100, 1);
    assert_eq!(
        batch.planned.keys().cloned().collect::<Vec<_>>(),
        vec![Beneficiary::member("a"), Beneficiary::member("b")]
    );
    let a = &batch.planned[&Beneficiary::member("a")];
    assert_eq!(a.masked_identity, "a****");
    let ids: Vec<_> = a
        .commissions
        .iter()
        .map(|c| c.commission_id.as_str())
        .collect();
    assert_eq!(ids, vec!["c1", "c2"]);
    // 1,000 earned absorbs k2 (500, sale-c8 sorts first) but not k1 (700) after it.
    let owed: Vec<_> = a
        .clawbacks
        .iter()
        .map(|c| c.clawback_id.clone().unwrap())
        .collect();
    assert_eq!(owed, vec!["k2"]);
    assert_eq!(batch.carried.len(), 1);
    assert_eq!(
        batch.carried["member/c"].net.as_ref().unwrap().amount_fen,
        99
    );
    // A later read (a resumed run) plans nobody twice.
    let more = vec![item("a", "c7", None, 1_000), item("d", "c5", None, 300)];
    let mut resumed = batch.clone();
    resumed.sealed = false;
    planned(&mut resumed, &more, 100, 10);
    assert_eq!(resumed.planned[&Beneficiary::member("a")], *a);
    assert!(resumed.planned.contains_key(&Beneficiary::member("d")));
}

#[test]
fn lines_follow_what_settled_and_never_net_more_than_that() {
    let mut batch = Batch::default();
    planned(
        &mut batch,
        &[
            item("a", "c1", None, 600),
            item("a", "c2", None, 400),
            item("a", "c3", Some("k1"), 500),
        ],
        100,
        200,
    );
    assert_eq!(
        commissions_to_settle(&batch),
        BTreeMap::from([
            ("sale-c1".to_owned(), vec!["c1".to_owned()]),
            ("sale-c2".to_owned(), vec!["c2".to_owned()]),
        ])
    );
    // c2 was reversed after the plan: only 600 settled, which still absorbs k1.
    let a = Beneficiary::member("a");
    let gross = BTreeMap::from([(a.clone(), 600)]);
    assert_eq!(
        clawbacks_to_net(&batch, &gross),
        BTreeMap::from([(
            "sale-c3".to_owned(),
            vec![("c3".to_owned(), "k1".to_owned())]
        )])
    );
    // Had only 400 settled, k1 stays owed.
    assert!(clawbacks_to_net(&batch, &BTreeMap::from([(a.clone(), 400)])).is_empty());
    let settled = BTreeMap::from([(a.clone(), vec![600])]);
    let netted = BTreeMap::from([(a.clone(), 500)]);
    let lines = lines(&batch, "b1", &settled, &netted);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].gross.as_ref().unwrap().amount_fen, 600);
    assert_eq!(lines[0].amount.as_ref().unwrap().amount_fen, 100);
    assert_eq!(lines[0].commissions, 1);
    assert!(super::lines(&batch, "b1", &BTreeMap::new(), &BTreeMap::new()).is_empty());
}

#[test]
fn an_open_batch_can_close_without_lines_once() {
    let mut state = Settlements::default();
    start(&state, "b1", at(0), at(1))
        .unwrap()
        .iter()
        .for_each(|e| state.apply(e));
    let abandoned = abandon(&state, "b1", "nothing left", at(2)).unwrap();
    assert_eq!(abandoned.len(), 1);
    abandoned.iter().for_each(|e| state.apply(e));
    assert!(state.open.is_none());
    assert!(state.completed("b1").is_none());
    assert!(abandon(&state, "b1", "again", at(3)).unwrap().is_empty());
    assert!(matches!(
        abandon(&state, "b2", "never opened", at(3)),
        Err(Rejection::FailedPrecondition(_))
    ));
    // Its id is spent: the same request does not open it again.
    assert!(start(&state, "b1", at(0), at(4)).unwrap().is_empty());
}

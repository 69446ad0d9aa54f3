//! The tree as the service grows it: lanes of attributions (counted at once or held), reviews
//! (approving a held one, rejecting or revoking any) and the bindings and CYCLE revocations they
//! set off, all interleaved with the tree projection running each ParentSet concurrently,
//! statement by statement. A lane follows the application's path: a sale that counts, at once
//! or on approval, binds the buyer under the referrer through [`bind`]; a binding that finds a
//! cycle revokes the attribution (`attribution::revoke_for_cycle`); a revocation leaves the tree
//! alone. The judgement's own ancestry check is left out on purpose: every cycle must be caught
//! at binding.
//!
//! At every step the parents form a forest and every tree row written is true of them; once all
//! is projected, the level-1 and level-2 rows are exactly the parents' children and
//! grandchildren.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use scanloop_proto::referral::v1 as pb;
use scanloop_storage::DbError;

use super::*;
use crate::domain::attribution::{self, Attributions, Recorded};
use crate::projections::tree::{TreeRows, project_parent_set};

#[derive(Debug, Clone)]
enum Step {
    /// A sale of `buyer` through `referrer`'s link, counted at once or held for review.
    Attribute { buyer: u8, referrer: u8, held: bool },
    /// A reviewer's decision on one of the attributions made so far (any lane's).
    Review { pick: usize, approve: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6, 0u8..6, any::<bool>())
            .prop_map(|(buyer, referrer, held)| Step::Attribute { buyer, referrer, held }),
        2 => (any::<usize>(), any::<bool>())
            .prop_map(|(pick, approve)| Step::Review { pick, approve }),
    ]
}

/// The service around the node streams: attribution streams (each decision read, decided and
/// appended at once, as one conditional append that wins) and the tree read model.
struct Service<'a> {
    memory: &'a Memory,
    attributions: Mutex<BTreeMap<String, Attributions>>,
    tree: Mutex<Tree>,
}

#[derive(Default)]
struct Tree {
    parents: BTreeMap<String, String>,
    children: BTreeSet<(String, i32, String)>,
}

impl<'a> Service<'a> {
    fn new(memory: &'a Memory) -> Self {
        Self {
            memory,
            attributions: Mutex::new(BTreeMap::new()),
            tree: Mutex::new(Tree::default()),
        }
    }

    /// Decides on one attribution stream and appends what it decided; the state after.
    fn execute(
        &self,
        id: &str,
        decide: impl Fn(&Attributions) -> Result<Vec<ReferralEvent>, crate::domain::Rejection>,
    ) -> Option<Recorded> {
        let mut streams = self.attributions.lock().unwrap();
        let state = streams.entry(id.to_owned()).or_default();
        if let Ok(events) = decide(state) {
            events.iter().for_each(|e| state.apply(e));
        }
        state.sales.get(id).cloned()
    }

    async fn attribute(&self, id: String, buyer: String, referrer: String, held: bool) {
        let attributed = pb::ReferralAttributed {
            attribution_id: id.clone(),
            level1_member_id: referrer,
            buyer_member_id: buyer,
            warranty_stream_id: format!("warranty-{id}"),
            ..Default::default()
        };
        let outcome = if held {
            attribution::Outcome::Held(pb::ReferralHeld {
                attribution_id: id.clone(),
                attribution: Some(attributed),
                ..Default::default()
            })
        } else {
            attribution::Outcome::Attributed(attributed)
        };
        let recorded = self.execute(&id, |s| attribution::record(s, &outcome));
        if let Some(Recorded::Attributed(a)) = recorded {
            self.after_attributed(&a).await;
        }
    }

    async fn review(&self, id: &str, approve: bool) {
        let cmd = attribution::Review {
            attribution_id: id.to_owned(),
            decision: if approve {
                pb::ReviewDecision::Approve
            } else {
                pb::ReviewDecision::Reject
            },
            reviewer: "reviewer".into(),
            note: String::new(),
            now: Utc::now(),
        };
        self.memory.pause().await;
        // A refused review (a final rejection, an approval of one that counts) decides nothing;
        // an approved one counts now and binds like any counted sale.
        if let Some(Recorded::Attributed(a)) = self.execute(id, |s| attribution::review(s, &cmd)) {
            self.after_attributed(&a).await;
        }
    }

    async fn after_attributed(&self, a: &pb::ReferralAttributed) {
        let (buyer, referrer) = (&a.buyer_member_id, &a.level1_member_id);
        match bind(self.memory, buyer, referrer, &a.attribution_id)
            .await
            .unwrap()
        {
            Binding::Bound => assert_eq!(self.memory.parents().get(buyer), Some(referrer)),
            Binding::AlreadyBound { parent } => {
                assert_eq!(self.memory.parents().get(buyer), Some(&parent))
            }
            Binding::Cycle { path } => {
                assert_eq!(path.first(), Some(referrer));
                assert_eq!(path.last(), Some(buyer));
                let detail = path.join(" → ");
                self.execute(&a.attribution_id, |s| {
                    attribution::revoke_for_cycle(s, &a.attribution_id, detail.clone())
                });
            }
        }
    }

    /// Projects every ParentSet appended, each concurrently with the others and with the lanes,
    /// until the lanes are done and nothing waits.
    async fn project(&self, lanes_done: &AtomicBool) {
        let mut running = FuturesUnordered::new();
        loop {
            while let Some((member, parent)) = self.memory.bound.lock().unwrap().pop_front() {
                running.push(async move { project_parent_set(self, &member, &parent).await });
            }
            if running.is_empty() {
                if lanes_done.load(Ordering::SeqCst) && self.memory.bound.lock().unwrap().is_empty()
                {
                    return;
                }
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                Some(projected) = running.next() => projected.unwrap(),
                () = tokio::task::yield_now() => {}
            }
        }
    }

    /// The member's level-1 and level-2 rows as the parents define them.
    fn expected_rows(parents: &BTreeMap<String, String>) -> BTreeSet<(String, i32, String)> {
        let mut rows = BTreeSet::new();
        for (member, parent) in parents {
            rows.insert((parent.clone(), 1, member.clone()));
            if let Some(grandparent) = parents.get(parent) {
                rows.insert((grandparent.clone(), 2, member.clone()));
            }
        }
        rows
    }
}

impl TreeRows for Service<'_> {
    async fn set_parent(&self, member: &str, parent: &str) -> Result<(), DbError> {
        self.memory.pause().await;
        assert_eq!(
            self.memory.parents().get(member).map(String::as_str),
            Some(parent)
        );
        let mut tree = self.tree.lock().unwrap();
        tree.parents.insert(member.to_owned(), parent.to_owned());
        Ok(())
    }

    async fn add_child(&self, member: &str, level: i32, child: &str) -> Result<(), DbError> {
        self.memory.pause().await;
        let row = (member.to_owned(), level, child.to_owned());
        // Parents are never rebound: a row true now stays true, so every row must be.
        let truth = Self::expected_rows(&self.memory.parents());
        assert!(
            truth.contains(&row),
            "row {row:?} is not in the tree {truth:?}"
        );
        self.tree.lock().unwrap().children.insert(row);
        Ok(())
    }

    async fn parent(&self, member: &str) -> Result<Option<String>, DbError> {
        self.memory.pause().await;
        Ok(self.tree.lock().unwrap().parents.get(member).cloned())
    }

    async fn children(&self, member: &str) -> Result<Vec<String>, DbError> {
        self.memory.pause().await;
        let tree = self.tree.lock().unwrap();
        Ok(tree
            .children
            .iter()
            .filter(|(m, level, _)| m == member && *level == 1)
            .map(|(_, _, child)| child.clone())
            .collect())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn attributions_holds_reviews_and_revocations_keep_a_forest_and_its_rows(
        lanes in proptest::collection::vec(proptest::collection::vec(step(), 1..7), 2..5),
        seed in any::<u64>(),
    ) {
        let memory = Memory::new(seed);
        let service = Service::new(&memory);
        let made: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let lanes_done = AtomicBool::new(false);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let lanes = lanes.iter().enumerate().map(|(lane, steps)| {
                let (service, made) = (&service, &made);
                async move {
                    for (n, step) in steps.iter().enumerate() {
                        match *step {
                            Step::Attribute { buyer, referrer, .. } if buyer == referrer => {}
                            Step::Attribute { buyer, referrer, held } => {
                                let id = format!("a{lane}-{n}");
                                made.lock().unwrap().push(id.clone());
                                service.attribute(id, member(buyer), member(referrer), held).await;
                            }
                            Step::Review { pick, approve } => {
                                let picked = {
                                    let made = made.lock().unwrap();
                                    (!made.is_empty()).then(|| made[pick % made.len()].clone())
                                };
                                if let Some(id) = picked {
                                    service.review(&id, approve).await;
                                }
                            }
                        }
                    }
                }
            });
            let lanes = async {
                futures::future::join_all(lanes).await;
                lanes_done.store(true, Ordering::SeqCst);
            };
            tokio::join!(lanes, service.project(&lanes_done));
        });

        let parents = memory.parents();
        let tree = service.tree.lock().unwrap();
        prop_assert_eq!(&tree.parents, &parents);
        prop_assert_eq!(&tree.children, &Service::expected_rows(&parents));
        for (id, recorded) in service.attributions.lock().unwrap().iter() {
            match recorded.sales.get(id) {
                // A sale that counts has bound its buyer (under its referrer, or an earlier one).
                Some(Recorded::Attributed(a)) => {
                    prop_assert!(parents.contains_key(&a.buyer_member_id), "{id}: buyer unbound");
                }
                // A CYCLE revocation is true of the final tree: ancestry only grows.
                Some(Recorded::Revoked { attributed, rejected })
                    if rejected.reason() == pb::RejectionReason::Cycle =>
                {
                    let up = ancestors(&parents, &attributed.level1_member_id);
                    prop_assert!(up.contains(&attributed.buyer_member_id), "{id}: no cycle");
                }
                _ => {}
            }
        }
    }
}

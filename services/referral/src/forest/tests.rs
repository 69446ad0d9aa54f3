//! Many bindings on concurrent lanes, interleaved step by step against in-memory node streams
//! with the event store's semantics (load, decide, append only if the stream did not move): the
//! parents always form a forest, and every outcome is true of the final tree.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use proptest::prelude::*;
use scanloop_eventstore::Aggregate as _;

use super::*;
use crate::domain::ReferralEvent;

mod lanes;

/// Node streams as (state, version), and a seeded schedule of yields between every read and
/// its append, so lanes interleave differently per case but reproducibly. Each ParentSet
/// appended waits in `bound` for a projection.
struct Memory {
    streams: Mutex<BTreeMap<String, (Node, u64)>>,
    schedule: Mutex<u64>,
    bound: Mutex<VecDeque<(String, String)>>,
}

impl Memory {
    fn new(seed: u64) -> Self {
        Self {
            streams: Mutex::new(BTreeMap::new()),
            schedule: Mutex::new(seed | 1),
            bound: Mutex::new(VecDeque::new()),
        }
    }

    /// 0 to 3 yields, from a xorshift of the seed.
    async fn pause(&self) {
        let n = {
            let mut x = self.schedule.lock().unwrap();
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x % 4
        };
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }

    fn read(&self, member: &str) -> (Node, u64) {
        self.streams
            .lock()
            .unwrap()
            .get(member)
            .cloned()
            .unwrap_or_default()
    }

    fn parents(&self) -> BTreeMap<String, String> {
        self.streams
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(m, (n, _))| n.parent.clone().map(|p| (m.clone(), p)))
            .collect()
    }
}

/// The member's ancestors, nearest first; panics on a cycle.
fn ancestors(parents: &BTreeMap<String, String>, member: &str) -> Vec<String> {
    let mut up = Vec::new();
    let mut current = member;
    while let Some(parent) = parents.get(current) {
        assert!(
            parent != member && !up.contains(parent),
            "cycle through {member}: {parents:?}"
        );
        up.push(parent.clone());
        current = parent;
    }
    up
}

impl Nodes for Memory {
    async fn node(&self, member: &str) -> Result<Node, ServiceError> {
        self.pause().await;
        Ok(self.read(member).0)
    }

    async fn append<F>(&self, member: &str, decide: F) -> Result<Node, ExecuteError<Rejection>>
    where
        F: Fn(&Node) -> Result<Vec<ReferralEvent>, Rejection> + Send + Sync,
    {
        loop {
            let (mut state, version) = self.read(member);
            self.pause().await;
            let events = decide(&state).map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(state);
            }
            let mut streams = self.streams.lock().unwrap();
            let current = streams.get(member).map_or(0, |(_, v)| *v);
            if current != version {
                continue; // the conditional append lost: decide again on the fresh node
            }
            for event in &events {
                state.apply(event);
                if let ReferralEvent::ParentSet(p) = event {
                    let bound = (p.member_id.clone(), p.parent_member_id.clone());
                    self.bound.lock().unwrap().push_back(bound);
                }
            }
            streams.insert(member.to_owned(), (state.clone(), version + 1));
            drop(streams);
            // At every step the parents form a forest.
            let parents = self.parents();
            for m in parents.keys() {
                ancestors(&parents, m);
            }
            return Ok(state);
        }
    }
}

fn member(i: u8) -> String {
    format!("m{i}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn racing_bindings_keep_a_forest_and_each_outcome_holds(
        lanes in proptest::collection::vec(
            proptest::collection::vec((0u8..6, 0u8..6), 1..5),
            2..5,
        ),
        seed in any::<u64>(),
    ) {
        let memory = Memory::new(seed);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let outcomes: Vec<(String, String, Binding)> = runtime.block_on(async {
            let lanes = lanes.iter().map(|lane| {
                let memory = &memory;
                async move {
                    let mut outcomes = Vec::new();
                    for &(c, p) in lane.iter().filter(|(c, p)| c != p) {
                        let (c, p) = (member(c), member(p));
                        let outcome = bind(memory, &c, &p, "x").await.unwrap();
                        outcomes.push((c, p, outcome));
                    }
                    outcomes
                }
            });
            futures::future::join_all(lanes).await.into_iter().flatten().collect()
        });
        let parents = memory.parents();
        for (c, p, outcome) in outcomes {
            match outcome {
                Binding::Bound => prop_assert_eq!(parents.get(&c), Some(&p)),
                Binding::AlreadyBound { parent } => prop_assert_eq!(parents.get(&c), Some(&parent)),
                // Ancestry only grows: what was a cycle then is one in the final tree.
                Binding::Cycle { .. } => prop_assert!(ancestors(&parents, &p).contains(&c)),
            }
        }
    }
}

#[tokio::test]
async fn opposite_bindings_at_once_bind_one_and_refuse_the_other() {
    for seed in 1..200u64 {
        let memory = Memory::new(seed);
        let (one, two) = tokio::join!(bind(&memory, "x", "y", "a1"), bind(&memory, "y", "x", "a2"));
        let mut outcomes = [one.unwrap(), two.unwrap()];
        outcomes.sort_by_key(|o| matches!(o, Binding::Cycle { .. }));
        assert_eq!(outcomes[0], Binding::Bound, "seed {seed}");
        assert!(matches!(outcomes[1], Binding::Cycle { .. }), "seed {seed}");
        assert_eq!(memory.parents().len(), 1);
    }
}

#[tokio::test]
async fn a_three_member_ring_closes_on_nobody() {
    for seed in 1..200u64 {
        let memory = Memory::new(seed);
        let (a, b, c) = tokio::join!(
            bind(&memory, "a", "b", "x1"),
            bind(&memory, "b", "c", "x2"),
            bind(&memory, "c", "a", "x3")
        );
        let cycles = [a.unwrap(), b.unwrap(), c.unwrap()]
            .iter()
            .filter(|o| matches!(o, Binding::Cycle { .. }))
            .count();
        assert_eq!(cycles, 1, "seed {seed}");
        assert_eq!(memory.parents().len(), 2);
    }
}

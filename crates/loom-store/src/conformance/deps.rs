//! Conformance case: random dependency graphs, deep and wide. The store refuses exactly the
//! edges that would close a cycle, as a reference reachability check over the accepted edges
//! decides (a seeded generator, so a failure replays).

use std::collections::{BTreeMap, BTreeSet};

use loom_domain::{BeadId, NewBead};

use super::project;
use crate::{Error, Store};

/// The shapes tried: `deep` adds edges mostly between neighbours, building long chains and
/// diamond ladders; `wide` between any two beads, building many short, crossing paths.
const SHAPES: [(&str, u64, usize); 2] = [("deep", 3, 40), ("wide", 0, 24)];

pub async fn dependency_cycles_match_reference(store: &dyn Store) {
    for (shape, reach, beads) in SHAPES {
        for seed in 1..=2u64 {
            random_graph(store, &format!("g{shape}{seed}"), seed, reach, beads).await;
        }
    }
}

/// Adds 4 × `beads` random edges to a fresh project (between beads at most `reach` apart, or
/// anywhere when `reach` is 0) and checks each answer against the reference.
async fn random_graph(store: &dyn Store, name: &str, seed: u64, reach: u64, beads: usize) {
    let p = project(store, name).await;
    let new = (0..beads).map(|i| NewBead::new(p.clone(), format!("n{i}"))).collect();
    let ids: Vec<BeadId> = store.create_beads(new).await.unwrap().into_iter().map(|b| b.id).collect();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut accepted: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let n = beads as u64;
    for step in 0..4 * beads {
        let a = rng.below(n) as usize;
        let b =
            (if reach == 0 { rng.below(n) } else { (a as u64 + n + rng.below(2 * reach + 1) - reach) % n }) as usize;
        let closes = a == b || reaches(&accepted, b, a);
        let got = store.add_dependency(&ids[a], &ids[b]).await;
        match (&got, closes) {
            (Ok(bead), false) => {
                accepted.entry(a).or_default().insert(b);
                let want: Vec<&BeadId> =
                    accepted[&a].iter().map(|&i| &ids[i]).collect::<BTreeSet<_>>().into_iter().collect();
                assert_eq!(bead.blocked_by.iter().collect::<Vec<_>>(), want, "{name} step {step}: edges of {a}");
            }
            (Err(Error::Domain(loom_domain::Error::Cycle { .. })), true) => {}
            _ => panic!("{name} step {step}: {a} -> {b} closes a cycle: {closes}; the store answered {got:?}"),
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let stored: BTreeSet<BeadId> = store.get_bead(id).await.unwrap().blocked_by.into_iter().collect();
        let want: BTreeSet<BeadId> = accepted.get(&i).into_iter().flatten().map(|&j| ids[j].clone()).collect();
        assert_eq!(stored, want, "{name}: the stored edges of bead {i} are the accepted ones");
    }
}

/// Whether `to` is reachable from `from` along accepted edges (depth-first, the reference).
fn reaches(edges: &BTreeMap<usize, BTreeSet<usize>>, from: usize, to: usize) -> bool {
    let (mut stack, mut seen) = (vec![from], BTreeSet::from([from]));
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        for &next in edges.get(&node).into_iter().flatten() {
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    false
}

/// xorshift64: small, seeded, good enough to pick edges.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

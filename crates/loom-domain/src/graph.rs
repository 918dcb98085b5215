//! The dependency graph: `blocked_by` edges with cycle rejection, and the ready set.
//!
//! Stores evaluate these rules in SQL for speed; this module is the reference definition the
//! conformance and property tests hold them to.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::{BeadType, Priority, Status};

/// `bead -> the beads it waits on`. Never contains a cycle.
#[derive(Clone, Debug, Default)]
pub struct Graph<K: Ord + Clone> {
    blocked_by: BTreeMap<K, BTreeSet<K>>,
}

impl<K: Ord + Clone> Graph<K> {
    /// An empty graph.
    pub fn new() -> Self {
        Self { blocked_by: BTreeMap::new() }
    }

    /// Adds `bead` waits on `blocker`. Refuses an edge that closes a cycle and returns the existing
    /// path `blocker → … → bead` that the edge would close.
    pub fn add_edge(&mut self, bead: K, blocker: K) -> Result<(), Vec<K>> {
        if let Some(path) = self.path(&blocker, &bead) {
            return Err(path);
        }
        self.blocked_by.entry(bead).or_default().insert(blocker);
        Ok(())
    }

    /// Removes an edge; returns whether it existed.
    pub fn remove_edge(&mut self, bead: &K, blocker: &K) -> bool {
        self.blocked_by.get_mut(bead).is_some_and(|s| s.remove(blocker))
    }

    /// The beads `bead` waits on directly.
    pub fn blockers(&self, bead: &K) -> impl Iterator<Item = &K> {
        self.blocked_by.get(bead).into_iter().flatten()
    }

    /// A shortest path `from → … → to` following `blocked_by` edges (`[from]` when equal).
    pub fn path(&self, from: &K, to: &K) -> Option<Vec<K>> {
        let mut parent: BTreeMap<&K, &K> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(node) = queue.pop_front() {
            if node == to {
                let mut path = vec![node.clone()];
                let mut cur = node;
                while let Some(p) = parent.get(cur) {
                    path.push((*p).clone());
                    cur = p;
                }
                path.reverse();
                return Some(path);
            }
            for next in self.blockers(node) {
                if seen.insert(next) {
                    parent.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// Every edge `(bead, blocker)`.
    pub fn edges(&self) -> impl Iterator<Item = (&K, &K)> {
        self.blocked_by.iter().flat_map(|(b, set)| set.iter().map(move |x| (b, x)))
    }
}

/// What the ready rule needs to know about a bead.
#[derive(Clone, Debug)]
pub struct Node<K> {
    pub id: K,
    pub status: Status,
    pub bead_type: BeadType,
    pub priority: Priority,
    /// Creation order: smaller is older.
    pub seq: u64,
}

/// The ready set: open, not a decision, every blocker closed (an unknown blocker is not closed);
/// ordered by priority (P0 first), then age (oldest first).
pub fn ready<K: Ord + Clone>(nodes: &[Node<K>], graph: &Graph<K>) -> Vec<K> {
    let status: BTreeMap<&K, Status> = nodes.iter().map(|n| (&n.id, n.status)).collect();
    let mut out: Vec<&Node<K>> = nodes
        .iter()
        .filter(|n| n.status == Status::Open && n.bead_type != BeadType::Decision)
        .filter(|n| graph.blockers(&n.id).all(|b| status.get(b) == Some(&Status::Closed)))
        .collect();
    out.sort_by_key(|n| (n.priority, n.seq));
    out.into_iter().map(|n| n.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn has_cycle(n: u8, edges: &[(u8, u8)]) -> bool {
        // Kahn's algorithm: a cycle leaves nodes that never reach in-degree zero.
        let mut indeg = vec![0usize; n as usize];
        for &(_, b) in edges {
            indeg[b as usize] += 1;
        }
        let mut queue: Vec<u8> = (0..n).filter(|&i| indeg[i as usize] == 0).collect();
        let mut seen = 0;
        while let Some(v) = queue.pop() {
            seen += 1;
            for &(a, b) in edges {
                if a == v {
                    indeg[b as usize] -= 1;
                    if indeg[b as usize] == 0 {
                        queue.push(b);
                    }
                }
            }
        }
        seen != n as usize
    }

    #[test]
    fn self_edge_and_two_cycle_are_rejected() {
        let mut g = Graph::new();
        assert_eq!(g.add_edge(1, 1), Err(vec![1]));
        g.add_edge(1, 2).unwrap();
        assert_eq!(g.add_edge(2, 1), Err(vec![1, 2]));
        g.add_edge(2, 3).unwrap();
        assert_eq!(g.add_edge(3, 1), Err(vec![1, 2, 3]));
    }

    proptest! {
        #[test]
        fn no_accepted_edge_set_contains_a_cycle(edges in proptest::collection::vec((0u8..12, 0u8..12), 0..60)) {
            let mut g = Graph::new();
            let mut accepted: Vec<(u8, u8)> = Vec::new();
            for (a, b) in edges {
                let mut candidate = accepted.clone();
                candidate.push((a, b));
                let would_cycle = has_cycle(12, &candidate);
                match g.add_edge(a, b) {
                    Ok(()) => {
                        prop_assert!(!would_cycle, "accepted {a}->{b} which closes a cycle");
                        if !accepted.contains(&(a, b)) { accepted.push((a, b)); }
                    }
                    Err(path) => {
                        prop_assert!(would_cycle, "rejected {a}->{b} which closes no cycle");
                        prop_assert_eq!(path.first(), Some(&b));
                        prop_assert_eq!(path.last(), Some(&a));
                    }
                }
                prop_assert!(!has_cycle(12, &accepted));
            }
        }

        #[test]
        fn ready_set_matches_brute_force(
            spec in proptest::collection::vec((0u8..4, 0u8..4, any::<bool>()), 1..25),
            edges in proptest::collection::vec((0usize..25, 0usize..30), 0..40),
        ) {
            let nodes: Vec<Node<usize>> = spec.iter().enumerate().map(|(i, &(s, p, decision))| Node {
                id: i,
                status: Status::ALL[s as usize],
                bead_type: if decision { BeadType::Decision } else { BeadType::Task },
                priority: Priority::try_from(p as i64).unwrap(),
                seq: (spec.len() - i) as u64, // newest first in the input, to exercise the sort
            }).collect();
            let mut g = Graph::new();
            for (a, b) in edges {
                if a < nodes.len() { let _ = g.add_edge(a, b); } // b may be unknown: never closed
            }
            let got = ready(&nodes, &g);
            // Brute force: check every bead against the definition, then compare orders pairwise.
            for n in &nodes {
                let is_ready = n.status == Status::Open && n.bead_type != BeadType::Decision
                    && g.edges().filter(|(a, _)| **a == n.id).all(|(_, b)| nodes.get(*b).is_some_and(|x| x.status == Status::Closed));
                prop_assert_eq!(got.contains(&n.id), is_ready, "bead {}", n.id);
            }
            for w in got.windows(2) {
                let (a, b) = (&nodes[w[0]], &nodes[w[1]]);
                prop_assert!((a.priority, a.seq) < (b.priority, b.seq));
            }
        }
    }
}

//! Finding the cycle a new dependency edge would close, shared by both backends.
//!
//! Each backend first asks its database whether `bead` is reachable from `blocker` (a recursive
//! query over *visited nodes*, `UNION` not `UNION ALL`, so it is linear in the reachable subgraph
//! however many paths a diamond-shaped graph has), and only when it is loads the reachable edges
//! and lets [`cycle_path`] name the shortest path for the error message.

use std::collections::{BTreeMap, VecDeque};

use loom_domain::BeadId;

/// The cycle `bead -> blocker -> … -> bead` as the error names it, from the reachable
/// `(bead, blocker)` edges; `None` when `bead` is not reachable from `blocker`.
pub(crate) fn cycle_path(edges: &[(String, String)], bead: &BeadId, blocker: &BeadId) -> Option<String> {
    shortest_path(edges, blocker.as_str(), bead.as_str()).map(|p| format!("{bead} -> {}", p.join(" -> ")))
}

/// The self-loop `bead -> bead`, when an edge names the bead itself.
pub(crate) fn self_loop(bead: &BeadId, blocker: &BeadId) -> Option<String> {
    (bead == blocker).then(|| format!("{bead} -> {bead}"))
}

/// A shortest path `from → … → to` over `(bead, blocker)` edges.
fn shortest_path<'a>(edges: &'a [(String, String)], from: &'a str, to: &str) -> Option<Vec<&'a str>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a.as_str()).or_default().push(b.as_str());
    }
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![node];
            while let Some(p) = parent.get(path[path.len() - 1]) {
                path.push(*p);
            }
            path.reverse();
            return Some(path);
        }
        for &n in next.get(node).into_iter().flatten() {
            if n != from && !parent.contains_key(n) {
                parent.insert(n, node);
                queue.push_back(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::shortest_path;

    fn edges(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn finds_the_shortest_path_through_diamonds() {
        let e = edges(&[("c", "b"), ("b", "a"), ("c", "x"), ("x", "y"), ("y", "a"), ("c", "d")]);
        assert_eq!(shortest_path(&e, "c", "a"), Some(vec!["c", "b", "a"]));
        assert_eq!(shortest_path(&e, "c", "zz"), None);
        assert_eq!(shortest_path(&e, "a", "c"), None, "edges are directed");
    }
}

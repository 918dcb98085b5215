//! The order an import creates issues in: blockers and parents before what waits on them, and
//! otherwise file order; and the dependency cycles of the file, which are not imported.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// The issues (by index) in the order to import them, and the cycles left out of it.
#[derive(Debug, PartialEq)]
pub(crate) struct Order {
    /// Every issue not on a cycle; each after all the issues it waits on that are in it.
    pub sequence: Vec<usize>,
    /// Each cycle's issues, in file order.
    pub cycles: Vec<Vec<usize>>,
}

/// Orders `n` issues with edges `(blocker, dependant)`. The topological order taken is the
/// smallest by index, so a file that names its blockers first is imported in file order.
pub(crate) fn order(n: usize, edges: &[(usize, usize)]) -> Order {
    let mut graph = DiGraph::<(), ()>::with_capacity(n, edges.len());
    for _ in 0..n {
        graph.add_node(());
    }
    for &(a, b) in edges {
        graph.add_edge(NodeIndex::new(a), NodeIndex::new(b), ());
    }
    let mut on_cycle = vec![false; n];
    let mut cycles = Vec::new();
    for scc in tarjan_scc(&graph) {
        let looped = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if looped {
            let mut members: Vec<usize> = scc.iter().map(|i| i.index()).collect();
            members.sort_unstable();
            members.iter().for_each(|&m| on_cycle[m] = true);
            cycles.push(members);
        }
    }
    cycles.sort();
    let mut waiting = vec![0usize; n];
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges.iter().filter(|(a, b)| !on_cycle[*a] && !on_cycle[*b]) {
        waiting[b] += 1;
        next[a].push(b);
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| !on_cycle[i] && waiting[i] == 0).map(Reverse).collect();
    let mut sequence = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        sequence.push(i);
        for &j in &next[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    Order { sequence, cycles }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blockers_first_otherwise_file_order() {
        // 0 waits on 2; 1 is free; 2 is free.
        assert_eq!(order(3, &[(2, 0)]).sequence, [1, 2, 0]);
        assert_eq!(order(3, &[]).sequence, [0, 1, 2]);
    }

    #[test]
    fn cycles_are_left_out_and_their_dependants_kept() {
        // 0 <-> 1 is a cycle, 2 loops on itself, 3 waits on 1.
        let o = order(4, &[(0, 1), (1, 0), (2, 2), (1, 3)]);
        assert_eq!(o.cycles, [vec![0, 1], vec![2]]);
        assert_eq!(o.sequence, [3]);
    }
}

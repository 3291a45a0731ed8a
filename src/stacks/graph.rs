//! Ordering stacks so each comes after its upstreams, and finding the cycles that make that
//! impossible. Nodes are indices into a snapshot's stacks, which are sorted by path, so ties
//! are broken by path and the order is stable from run to run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Orders `nodes` (upstreams first) using only edges between them. On a cycle, returns every
/// node that lies on one, sorted.
pub(crate) fn order(
    nodes: &[usize],
    upstreams: &dyn Fn(usize) -> Vec<usize>,
) -> Result<Vec<usize>, Vec<usize>> {
    let position: HashMap<usize, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut pending = vec![0usize; nodes.len()];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, &node) in nodes.iter().enumerate() {
        for up in upstreams(node) {
            if let Some(&j) = position.get(&up) {
                pending[i] += 1;
                downstream[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&i| pending[i] == 0)
        .map(|i| Reverse(nodes[i]))
        .collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(Reverse(node)) = ready.pop() {
        out.push(node);
        for &d in &downstream[position[&node]] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push(Reverse(nodes[d]));
            }
        }
    }
    if out.len() == nodes.len() {
        return Ok(out);
    }
    let mut cyclic: Vec<usize> = cycles(&downstream)
        .into_iter()
        .flatten()
        .map(|i| nodes[i])
        .collect();
    cyclic.sort_unstable();
    Err(cyclic)
}

/// Strongly connected components that are cycles (more than one node, or a self-loop), by
/// Tarjan's algorithm written iteratively so deep chains cannot overflow the stack.
fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = edges.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut found = Vec::new();
    for start in 0..n {
        if index[start] != UNSEEN {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(start, 0usize)];
        while let Some(&(v, edge)) = work.last() {
            if edge == 0 && index[v] == UNSEEN {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = edges[v].get(edge) {
                if let Some(top) = work.last_mut() {
                    top.1 += 1;
                }
                if index[w] == UNSEEN {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 || edges[v].contains(&v) {
                    found.push(component);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
        let nodes: Vec<usize> = (0..n).collect();
        // (up, down) pairs
        let ups = |node: usize| edges.iter().filter(|e| e.1 == node).map(|e| e.0).collect();
        order(&nodes, &ups)
    }

    #[test]
    fn orders_upstreams_first_with_ties_by_index() {
        assert_eq!(run(4, &[(3, 0), (2, 3)]), Ok(vec![1, 2, 3, 0]));
    }

    #[test]
    fn names_every_node_on_a_cycle_and_only_those() {
        // 0 <-> 1 -> 2 -> 3 <-> 4, and 5 depends on itself.
        let edges = [(0, 1), (1, 0), (1, 2), (2, 3), (3, 4), (4, 3), (5, 5)];
        assert_eq!(run(6, &edges), Err(vec![0, 1, 3, 4, 5]));
    }
}

//! The content-addressed DAG. Nodes are identified by the digest of their op
//! and their inputs' digests, so adding the same work twice (two stages that
//! both `RUN apt-get update` on the same base) yields one node, which the
//! scheduler then runs once.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::{Key, Op};

/// A node of a [`Graph`]; stable for the graph's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    /// A small number for progress output (`#3`).
    pub fn index(self) -> usize {
        self.0 as usize
    }

    fn ix(self) -> NodeIndex {
        NodeIndex::new(self.0 as usize)
    }
}

pub(crate) struct Node<O> {
    pub(crate) op: O,
    pub(crate) digest: Key,
}

/// The build graph: ops as nodes, edges from an input to its consumer,
/// weighted by the input's position.
pub struct Graph<O: Op> {
    dag: DiGraph<Node<O>, u32>,
    by_digest: HashMap<Key, NodeId>,
}

impl<O: Op> Default for Graph<O> {
    fn default() -> Self {
        Graph {
            dag: DiGraph::new(),
            by_digest: HashMap::new(),
        }
    }
}

impl<O: Op> Graph<O> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `op` consuming `inputs` (in order) and returns its node; an
    /// identical op on identical inputs returns the existing node. Inputs
    /// must already be in the graph, so the graph is acyclic by construction.
    pub fn add(&mut self, op: O, inputs: &[NodeId]) -> NodeId {
        let encoded = op.encode();
        let input_digests: Vec<[u8; 32]> =
            inputs.iter().map(|i| self.dag[i.ix()].digest.0).collect();
        let parts =
            std::iter::once(encoded.as_slice()).chain(input_digests.iter().map(|d| d.as_slice()));
        let digest = Key::of_parts("kiln.node.v1", parts);
        if let Some(&id) = self.by_digest.get(&digest) {
            return id;
        }
        let ix = self.dag.add_node(Node { op, digest });
        for (pos, input) in inputs.iter().enumerate() {
            self.dag.add_edge(input.ix(), ix, pos as u32);
        }
        let id = NodeId(ix.index() as u32);
        self.by_digest.insert(digest, id);
        id
    }

    pub fn op(&self, id: NodeId) -> &O {
        &self.dag[id.ix()].op
    }

    /// The node's identity: its op and, recursively, its inputs.
    pub fn digest(&self, id: NodeId) -> Key {
        self.dag[id.ix()].digest
    }

    /// The node's inputs, in the order they were given to [`Graph::add`].
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(u32, NodeId)> = self
            .dag
            .edges_directed(id.ix(), Direction::Incoming)
            .map(|e| {
                use petgraph::visit::EdgeRef;
                (*e.weight(), NodeId(e.source().index() as u32))
            })
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    pub fn len(&self) -> usize {
        self.dag.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.dag.node_count() == 0
    }

    /// Every node the targets depend on (targets included), inputs before
    /// their consumers.
    pub fn closure(&self, targets: &[NodeId]) -> Vec<NodeId> {
        let mut seen = vec![false; self.dag.node_count()];
        let mut order = Vec::new();
        // Iterative post-order DFS: deep graphs (hundreds of RUN steps) must
        // not exhaust the stack.
        for &t in targets {
            if seen[t.index()] {
                continue;
            }
            let mut stack = vec![(t, false)];
            while let Some((n, expanded)) = stack.pop() {
                if expanded {
                    order.push(n);
                    continue;
                }
                if seen[n.index()] {
                    continue;
                }
                seen[n.index()] = true;
                stack.push((n, true));
                for i in self.inputs(n).into_iter().rev() {
                    if !seen[i.index()] {
                        stack.push((i, false));
                    }
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T(&'static str);
    impl Op for T {
        fn encode(&self) -> Vec<u8> {
            self.0.as_bytes().to_vec()
        }
        fn name(&self) -> String {
            self.0.to_string()
        }
    }

    #[test]
    fn identical_work_is_one_node() {
        let mut g = Graph::new();
        let base = g.add(T("base"), &[]);
        let a = g.add(T("run x"), &[base]);
        let b = g.add(T("run x"), &[base]);
        assert_eq!(a, b);
        let other = g.add(T("other"), &[]);
        let c = g.add(T("run x"), &[other]);
        assert_ne!(a, c, "same op on different inputs is different work");
        assert_eq!(g.len(), 4);
    }

    #[test]
    fn input_order_is_kept_and_matters() {
        let mut g = Graph::new();
        let x = g.add(T("x"), &[]);
        let y = g.add(T("y"), &[]);
        let xy = g.add(T("merge"), &[x, y]);
        let yx = g.add(T("merge"), &[y, x]);
        assert_ne!(xy, yx);
        assert_eq!(g.inputs(xy), vec![x, y]);
        assert_eq!(g.inputs(yx), vec![y, x]);
    }

    #[test]
    fn closure_lists_inputs_first_and_only_what_targets_need() {
        let mut g = Graph::new();
        let a = g.add(T("a"), &[]);
        let b = g.add(T("b"), &[a]);
        let unused = g.add(T("unused"), &[a]);
        let c = g.add(T("c"), &[a, b]);
        let order = g.closure(&[c]);
        assert_eq!(order, vec![a, b, c]);
        assert!(!order.contains(&unused));
    }
}

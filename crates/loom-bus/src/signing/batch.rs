//! Batch signatures: one Ed25519 signature for the tasks the control plane publishes together.
//!
//! Signing and verifying cost tens of microseconds each — on a busy system, as much CPU as the
//! rest of a task's way through the bus — while the tasks of one claim are published together.
//! So a batch is signed once: its tasks are the leaves of a Merkle tree (SHA-256, RFC 6962's
//! domain separation: a leaf hashes `0x00 ‖ task`, a node `0x01 ‖ left ‖ right`; an odd node at
//! the end of a level is carried up unchanged), the signature covers
//! `loom-task-batch-v1 NUL n NUL root`, and each task carries its index, `n` and the sibling
//! hashes that lead from it to the root (`Loom-Task-Proof`). An agent folds the task into the
//! root and checks the signature once per root: the next task of the same batch finds its root
//! among the recently verified ones. A task changed in any byte folds into another root, which no
//! signature covers.

use ring::digest::{Context, SHA256};

pub(super) type Hash = [u8; 32];

const CONTEXT: &[u8] = b"loom-task-batch-v1";

/// Most tasks under one signature: a tree twelve levels deep, 384 bytes of proof per task.
pub(super) const MAX_LEAVES: usize = 4096;

/// The leaf of a task, given as the parts of its signed bytes (hashed in order, not copied).
pub(super) fn leaf(task: &[&[u8]]) -> Hash {
    hash(0, task)
}

fn node(left: &Hash, right: &Hash) -> Hash {
    hash(1, &[left, right])
}

fn hash(domain: u8, parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[domain]);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The root of `leaves` (at least one) and each leaf's proof: its siblings, bottom up.
pub(super) fn tree(leaves: Vec<Hash>) -> (Hash, Vec<Vec<Hash>>) {
    let mut proofs = vec![Vec::new(); leaves.len()];
    let mut at: Vec<usize> = (0..leaves.len()).collect();
    let mut level = leaves;
    while level.len() > 1 {
        for (proof, i) in proofs.iter_mut().zip(at.iter_mut()) {
            if let Some(sibling) = level.get(*i ^ 1) {
                proof.push(*sibling);
            }
            *i /= 2;
        }
        level = level.chunks(2).map(|pair| if let [l, r] = pair { node(l, r) } else { pair[0] }).collect();
    }
    (level[0], proofs)
}

/// The root that the leaf at `index` of a tree of `len` leaves folds into with `proof`; `None`
/// when the proof is not exactly the siblings such a leaf has.
pub(super) fn root(mut hash: Hash, mut index: usize, mut len: usize, proof: &[Hash]) -> Option<Hash> {
    if index >= len || len > MAX_LEAVES {
        return None;
    }
    let mut siblings = proof.iter();
    while len > 1 {
        if (index ^ 1) < len {
            let s = siblings.next()?;
            hash = if index.is_multiple_of(2) { node(&hash, s) } else { node(s, &hash) };
        }
        index /= 2;
        len = len.div_ceil(2);
    }
    siblings.next().is_none().then_some(hash)
}

/// The bytes a batch's signature covers.
pub(super) fn signed_root(len: usize, root: &Hash) -> Vec<u8> {
    let len = len.to_string();
    let mut m = Vec::with_capacity(CONTEXT.len() + len.len() + 34);
    m.extend_from_slice(CONTEXT);
    m.push(0);
    m.extend_from_slice(len.as_bytes());
    m.push(0);
    m.extend_from_slice(root);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_of_every_size_folds_into_the_root_and_no_other_leaf_does() {
        for n in 1..=37usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf(&[format!("task {i}").as_bytes()])).collect();
            let (top, proofs) = tree(leaves.clone());
            for (i, proof) in proofs.iter().enumerate() {
                assert!(proof.len() <= n.next_power_of_two().trailing_zeros() as usize, "n={n} i={i}");
                assert_eq!(root(leaves[i], i, n, proof), Some(top), "n={n} i={i}");
                // Another leaf, another index, a shorter or longer proof, another size: not the root.
                assert_ne!(root(leaf(&[b"forged"]), i, n, proof), Some(top));
                if n > 1 {
                    assert_ne!(root(leaves[i], (i + 1) % n, n, proof), Some(top), "n={n} i={i}");
                    assert_ne!(root(leaves[i], i, n, &proof[1..]), Some(top));
                }
                let mut longer = proof.clone();
                longer.push(top);
                assert_eq!(root(leaves[i], i, n, &longer), None);
                assert_eq!(root(leaves[i], n, n, proof), None, "an index past the end");
            }
        }
    }

    #[test]
    fn a_leaf_is_never_a_node() {
        // The domain separation: the bytes of two child hashes, hashed as a leaf, are not their node.
        let (l, r) = (leaf(&[b"a"]), leaf(&[b"b"]));
        let (top, _) = tree(vec![l, r]);
        assert_ne!(leaf(&[&l, &r]), top);
    }
}

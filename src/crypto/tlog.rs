//! A transparency log's Merkle tree (RFC 9162 §2.1): leaf and node hashing, the tree
//! head, inclusion and consistency proofs and their verification. Pure functions;
//! the control plane stores the leaves and hands out proofs.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The Merkle tree hash of leaf hashes (MTH); the empty tree hashes to SHA-256("").
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest(b"").into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` (PATH(m, D[n])).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 || index >= n {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut p = inclusion_proof(&leaves[..k], index);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_proof(&leaves[k..], index - k);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root_hash: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root_hash
}

fn subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if complete {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut p = subproof(m, &leaves[..k], complete);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(root(&leaves[..k]));
        p
    }
}

/// The proof that the tree of the first `old_size` leaves is a prefix of this one.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Vec<Hash> {
    if old_size == 0 || old_size >= leaves.len() {
        return Vec::new();
    }
    subproof(old_size, leaves, true)
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("certificate {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn known_roots() {
        // The empty tree, and a one-leaf tree of the empty entry (RFC 6962 test vectors).
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(root(&[leaf_hash(b"")])),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        // Two leaves: node of the two leaf hashes.
        let l = leaves(2);
        assert_eq!(root(&l), node_hash(&l[0], &l[1]));
    }

    #[test]
    fn inclusion_for_every_index_of_trees_1_to_64() {
        for n in 1..=64 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = inclusion_proof(&l, i);
                assert!(
                    verify_inclusion(&l[i], i as u64, n as u64, &p, &r),
                    "n={n} i={i}"
                );
                // Any other leaf, index, size or a changed proof is refused.
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(&other, i as u64, n as u64, &p, &r));
                if n > 1 {
                    assert!(
                        !verify_inclusion(&l[i], ((i + 1) % n) as u64, n as u64, &p, &r)
                            || l[i] == l[(i + 1) % n],
                        "n={n} i={i} moved"
                    );
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_inclusion(&l[i], i as u64, n as u64, &bad, &r));
                }
                assert!(
                    !verify_inclusion(&l[i], n as u64, n as u64, &p, &r),
                    "index past the end"
                );
            }
        }
    }

    #[test]
    fn consistency_for_every_pair_up_to_64() {
        for n in 1..=64 {
            let l = leaves(n);
            let new_root = root(&l);
            for m in 1..=n {
                let old_root = root(&l[..m]);
                let p = consistency_proof(&l, m);
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &p),
                    "m={m} n={n}"
                );
                if m < n {
                    let forged_old = root(&leaves(m + 100)[..m]);
                    assert!(
                        !verify_consistency(m as u64, n as u64, &forged_old, &new_root, &p)
                            || forged_old == old_root
                    );
                    let mut bad = p.clone();
                    if let Some(h) = bad.last_mut() {
                        h[31] ^= 1;
                    }
                    assert!(
                        !verify_consistency(m as u64, n as u64, &old_root, &new_root, &bad),
                        "m={m} n={n} tampered"
                    );
                }
            }
        }
    }
}

//! RFC 6962 Merkle trees: leaf and node hashing, the tree hash, inclusion and consistency
//! proofs (generated as RFC 6962 §2.1.1-2.1.2 defines them, verified with the algorithms
//! of RFC 9162 §2.1.3.2 and §2.1.4.2), and [`Frontier`], the compact state of an
//! append-only tree (one hash per set bit of its size).

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D[n]) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `m` in the tree of `leaves` (RFC 6962 PATH(m, D[n])).
pub fn inclusion_proof(leaves: &[Hash], m: usize) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 || m >= n {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = inclusion_proof(&leaves[..k], m);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_proof(&leaves[k..], m - k);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Does `proof` show that `leaf` is leaf `index` of the tree of `size` leaves with `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// The consistency proof between the first `m` leaves and all of `leaves`
/// (RFC 6962 PROOF(m, D[n])).
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Vec<Hash> {
    let n = leaves.len();
    if m == 0 || m >= n {
        return Vec::new();
    }
    subproof(leaves, m, true)
}

fn subproof(leaves: &[Hash], m: usize, whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut p = subproof(&leaves[..k], m, whole);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = subproof(&leaves[k..], m - k, false);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Does `proof` show that the tree of `old_size` leaves with `old_root` is a prefix of the
/// tree of `new_size` leaves with `new_root`?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *old_root && sr == *new_root
}

/// The compact state of an append-only tree: the roots of its perfect subtrees, largest
/// (leftmost) first, one per set bit of the size. Enough to append and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// A frontier from its parts (as [`Frontier::nodes`] returned them); `None` when the
    /// number of nodes does not match the size.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (size.count_ones() as usize == nodes.len()).then_some(Frontier { size, nodes })
    }

    /// Leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtrees' roots, leftmost first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Append a leaf hash; returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.size;
        let mut h = leaf;
        let mut size = self.size;
        // Merge equal-size subtrees: one per trailing set bit of the old size.
        while size & 1 == 1 {
            let left = self.nodes.pop().unwrap_or_default();
            h = node_hash(&left, &h);
            size >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
        index
    }

    /// MTH of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        let mut r = *last;
        for h in it {
            r = node_hash(h, &r);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn rfc6962_reference_vectors() {
        // From certificate-transparency-go's merkle tests: the eight leaves below and the
        // roots of their prefixes.
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let hs: Vec<Hash> = inputs.iter().map(|d| leaf_hash(d)).collect();
        let mut f = Frontier::default();
        for (i, h) in hs.iter().enumerate() {
            f.push(*h);
            assert_eq!(hex::encode(root(&hs[..=i])), roots[i], "prefix {}", i + 1);
            assert_eq!(hex::encode(f.root()), roots[i]);
        }
        // RFC 6962's published audit path of the first leaf in the tree of eight.
        let p: Vec<String> = inclusion_proof(&hs, 0).iter().map(hex::encode).collect();
        assert_eq!(
            p,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
            ]
        );
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn inclusion_and_consistency_proofs_verify_for_every_size_and_reject_changes() {
        let all = leaves(40);
        for n in 1..=all.len() {
            let t = &all[..n];
            let r = root(t);
            for m in 0..n {
                let p = inclusion_proof(t, m);
                assert!(
                    verify_inclusion(&t[m], m as u64, n as u64, &p, &r),
                    "{m}/{n}"
                );
                assert!(!verify_inclusion(&t[(m + 1) % n], m as u64, n as u64, &p, &r) || n == 1);
                if m + 1 < n {
                    assert!(!verify_inclusion(&t[m], m as u64 + 1, n as u64, &p, &r));
                }
            }
            for m in 1..=n {
                let p = consistency_proof(t, m);
                let old = root(&t[..m]);
                assert!(
                    verify_consistency(m as u64, n as u64, &old, &r, &p),
                    "{m}->{n}"
                );
                if m < n {
                    let wrong = root(&all[1..=m]);
                    assert!(!verify_consistency(m as u64, n as u64, &wrong, &r, &p));
                    if let Some(first) = p.first() {
                        let mut bent = p.clone();
                        bent[0] = node_hash(first, first);
                        assert!(!verify_consistency(m as u64, n as u64, &old, &r, &bent));
                    }
                }
            }
        }
    }

    #[test]
    fn frontier_round_trips_and_rejects_a_wrong_node_count() {
        let mut f = Frontier::default();
        for h in leaves(13) {
            f.push(h);
        }
        let g = Frontier::from_parts(13, f.nodes().to_vec()).unwrap();
        assert_eq!(g.root(), f.root());
        assert!(Frontier::from_parts(12, f.nodes().to_vec()).is_none());
    }
}

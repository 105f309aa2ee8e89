//! Ranked byte-pair merges over the symbols of one pre-token.
//!
//! Starting from one symbol per byte, the adjacent pair with the lowest merge
//! rank is replaced by its merged token, leftmost first among equal ranks,
//! until no adjacent pair has a merge. Short pieces (nearly all of them) use a
//! linear scan over a small array; long ones a heap over a linked list, so that
//! a pathological megabyte-long piece stays O(n log n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Pieces longer than this many symbols take the heap path.
const SMALL_PIECE: usize = 128;

/// Rank of "no merge": larger than any real rank.
const NO_RANK: u32 = u32::MAX;

/// One merge: its rank (position in the merge list) and the id it produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Merge {
    pub(crate) rank: u32,
    pub(crate) id: u32,
}

const NO_MERGE: Merge = Merge {
    rank: NO_RANK,
    id: 0,
};

/// The merge table: (left id, right id) → merge.
#[derive(Clone, Debug, Default)]
pub(crate) struct Merges {
    map: HashMap<u64, Merge, BuildHasherDefault<PairHasher>>,
}

/// Reusable buffers for [`Merges::apply`], so that encoding a text allocates
/// them once rather than per piece.
#[derive(Default)]
pub(crate) struct Scratch {
    pairs: Vec<Merge>,
}

fn key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

impl Merges {
    /// Number of distinct merges.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds a merge unless the pair already has one (the earlier, lower rank
    /// wins); returns whether it was added.
    pub(crate) fn insert(&mut self, left: u32, right: u32, merge: Merge) -> bool {
        match self.map.entry(key(left, right)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(merge);
                true
            }
        }
    }

    #[inline]
    fn get(&self, left: u32, right: u32) -> Merge {
        self.map.get(&key(left, right)).copied().unwrap_or(NO_MERGE)
    }

    /// Merges `symbols` (ids, initially one per byte) in place.
    pub(crate) fn apply(&self, symbols: &mut Vec<u32>, scratch: &mut Scratch) {
        if symbols.len() < 2 {
            return;
        }
        if symbols.len() <= SMALL_PIECE {
            self.apply_small(symbols, &mut scratch.pairs);
        } else {
            self.apply_large(symbols);
        }
    }

    /// Linear scan: `pairs[i]` is the merge of `symbols[i]` and `symbols[i + 1]`.
    fn apply_small(&self, symbols: &mut Vec<u32>, pairs: &mut Vec<Merge>) {
        pairs.clear();
        pairs.extend(symbols.windows(2).map(|w| self.get(w[0], w[1])));
        loop {
            let mut best = NO_MERGE;
            let mut at = 0;
            for (i, pair) in pairs.iter().enumerate() {
                if pair.rank < best.rank {
                    best = *pair;
                    at = i;
                }
            }
            if best.rank == NO_RANK {
                break;
            }
            symbols[at] = best.id;
            symbols.remove(at + 1);
            pairs.remove(at);
            if at < pairs.len() {
                pairs[at] = self.get(symbols[at], symbols[at + 1]);
            }
            if at > 0 {
                pairs[at - 1] = self.get(symbols[at - 1], symbols[at]);
            }
        }
    }

    /// Heap of candidate merges keyed by (rank, position) over a doubly linked
    /// list of symbols. An entry made stale by an earlier merge is recognised
    /// when popped: the pair now at its position has another rank (ranks are
    /// unique per pair, so an equal rank means the same pair) or is gone.
    fn apply_large(&self, symbols: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = symbols.len();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
        let mut alive = vec![true; n];
        // (rank, left position): small entries keep the heap cheap.
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::with_capacity(n);
        let candidate = |symbols: &[u32], left: usize, right: usize| {
            let rank = self.get(symbols[left], symbols[right]).rank;
            (rank != NO_RANK).then_some(Reverse((rank, left)))
        };
        heap.extend((0..n - 1).filter_map(|i| candidate(symbols, i, i + 1)));

        while let Some(Reverse((rank, left))) = heap.pop() {
            let right = next[left];
            if !alive[left] || right == NONE {
                continue;
            }
            let merge = self.get(symbols[left], symbols[right]);
            if merge.rank != rank {
                continue;
            }
            symbols[left] = merge.id;
            alive[right] = false;
            next[left] = next[right];
            if next[right] != NONE {
                prev[next[right]] = left;
            }
            if prev[left] != NONE {
                heap.extend(candidate(symbols, prev[left], left));
            }
            if next[left] != NONE {
                heap.extend(candidate(symbols, left, next[left]));
            }
        }

        let mut kept = 0;
        for i in 0..n {
            if alive[i] {
                symbols[kept] = symbols[i];
                kept += 1;
            }
        }
        symbols.truncate(kept);
    }
}

/// A fast hasher for the packed (left, right) pair keys: one multiply and a
/// fold. The keys are token ids from the model file, not attacker-chosen
/// strings, so collision resistance is not needed.
#[derive(Default, Clone, Copy)]
pub(crate) struct PairHasher(u64);

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(MIX);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny xorshift generator, for reproducible random tests.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u32) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % u64::from(n)) as u32
        }
    }

    /// Random merges over a small alphabet: ids 0..4 are "bytes", every merge
    /// makes a fresh id.
    fn random_merges(rng: &mut Rng, count: u32) -> Merges {
        let mut merges = Merges::default();
        let mut n_ids = 4;
        for rank in 0..count {
            let (l, r) = (rng.below(n_ids), rng.below(n_ids));
            if merges.insert(l, r, Merge { rank, id: n_ids }) {
                n_ids += 1;
            }
        }
        merges
    }

    #[test]
    fn small_and_large_paths_agree() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..200 {
            let merges = random_merges(&mut rng, 5 + round % 40);
            let len = 2 + rng.below(300) as usize;
            let input: Vec<u32> = (0..len).map(|_| rng.below(4)).collect();
            let mut small = input.clone();
            merges.apply_small(&mut small, &mut Vec::new());
            let mut large = input;
            merges.apply_large(&mut large);
            assert_eq!(small, large, "round {round}");
        }
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let mut merges = Merges::default();
        // ids: a=0 b=1 c=2; bc=3 (rank 0), ab=4 (rank 1), aa=5 (rank 2)
        merges.insert(1, 2, Merge { rank: 0, id: 3 });
        merges.insert(0, 1, Merge { rank: 1, id: 4 });
        merges.insert(0, 0, Merge { rank: 2, id: 5 });
        let mut s = vec![0, 1, 2];
        merges.apply(&mut s, &mut Scratch::default());
        assert_eq!(s, [0, 3]);
        let mut s = vec![0, 0, 0];
        merges.apply(&mut s, &mut Scratch::default());
        assert_eq!(s, [5, 0]);
        let mut s = vec![0, 0, 0];
        merges.apply_large(&mut s);
        assert_eq!(s, [5, 0]);
    }
}

//! A Bloom filter with a pinned hash (FNV-1a 64, double hashing), so that
//! filters written by one build are read the same by every other.

use serde::{Deserialize, Serialize};

/// Bits per item: about 1% false positives with 7 probes.
const BITS_PER_ITEM: usize = 10;
/// Probes per item. Persisted through `Bloom::probes`.
const PROBES: u8 = 7;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bloom {
    probes: u8,
    bits: Vec<u8>,
}

/// The two halves of an item's hash, computed once and probed many times.
#[derive(Clone, Copy, Debug)]
pub struct BloomHash(pub u64, pub u64);

impl BloomHash {
    pub fn of(item: &[u8]) -> Self {
        // FNV-1a 64: persisted, never change.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in item {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A second, independent-enough hash from a murmur-style finaliser.
        let mut g = h ^ (h >> 33);
        g = g.wrapping_mul(0xff51_afd7_ed55_8ccd);
        g ^= g >> 33;
        g = g.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        g ^= g >> 33;
        BloomHash(h, g | 1)
    }
}

impl Bloom {
    pub fn with_capacity(items: usize) -> Self {
        let bytes = (items.max(1) * BITS_PER_ITEM).div_ceil(8).max(8);
        Bloom { probes: PROBES, bits: vec![0; bytes] }
    }

    pub fn from_items<'a>(items: impl ExactSizeIterator<Item = &'a [u8]>) -> Self {
        let mut b = Bloom::with_capacity(items.len());
        for i in items {
            b.insert(BloomHash::of(i));
        }
        b
    }

    fn positions(&self, h: BloomHash) -> impl Iterator<Item = usize> + '_ {
        let m = (self.bits.len() as u64) * 8;
        (0..u64::from(self.probes)).map(move |i| (h.0.wrapping_add(i.wrapping_mul(h.1)) % m) as usize)
    }

    pub fn insert(&mut self, h: BloomHash) {
        let positions: Vec<usize> = self.positions(h).collect();
        for p in positions {
            self.bits[p / 8] |= 1 << (p % 8);
        }
    }

    /// False means certainly absent. An empty (hostile) filter says "maybe".
    pub fn may_contain(&self, h: BloomHash) -> bool {
        if self.bits.is_empty() {
            return true;
        }
        self.positions(h).all(|p| self.bits[p / 8] & (1 << (p % 8)) != 0)
    }

    pub fn byte_len(&self) -> usize {
        self.bits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let items: Vec<String> = (0..10_000).map(|i| format!("stream-{i}")).collect();
        let b = Bloom::from_items(items.iter().map(|s| s.as_bytes()));
        assert!(items.iter().all(|s| b.may_contain(BloomHash::of(s.as_bytes()))));
        let fp = (0..10_000).filter(|i| b.may_contain(BloomHash::of(format!("other-{i}").as_bytes()))).count();
        assert!(fp < 300, "false positives: {fp}");
    }
}

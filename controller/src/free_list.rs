//! A set of address numbers kept as disjoint inclusive spans.
//!
//! Finding, taking and returning one address costs O(log spans), whatever the pool's size:
//! MetalLB scans a pool linearly for the lowest free address; a /16 or an IPv6 /64 makes that
//! scan the dominant cost of allocation.

use std::collections::BTreeMap;

/// Disjoint spans `start..=end`, keyed by start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeList {
    spans: BTreeMap<u128, u128>,
}

impl FreeList {
    /// An empty set.
    pub fn new() -> FreeList {
        FreeList::default()
    }

    /// Adds `start..=end`, merging with neighbouring or overlapping spans.
    pub fn insert_range(&mut self, mut start: u128, mut end: u128) {
        debug_assert!(start <= end);
        // A span starting at or before `start` that reaches it (or touches it) absorbs it.
        if let Some((&s, &e)) = self.spans.range(..=start).next_back()
            && e.saturating_add(1) >= start
        {
            if e >= end {
                return;
            }
            start = s;
            self.spans.remove(&s);
        }
        // Spans starting inside (or right after) the new one are absorbed.
        loop {
            let next = self
                .spans
                .range(start..)
                .next()
                .map(|(&s, &e)| (s, e))
                .filter(|&(s, _)| s <= end.saturating_add(1));
            let Some((s, e)) = next else { break };
            self.spans.remove(&s);
            end = end.max(e);
            if end == u128::MAX {
                break;
            }
        }
        self.spans.insert(start, end);
    }

    /// Adds one number.
    pub fn insert(&mut self, n: u128) {
        self.insert_range(n, n);
    }

    /// Removes `start..=end` (whatever of it is present).
    pub fn remove_range(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        let touched: Vec<(u128, u128)> = self
            .spans
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touched {
            self.spans.remove(&s);
            if s < start {
                self.spans.insert(s, start - 1);
            }
            if e > end {
                self.spans.insert(end + 1, e);
            }
        }
    }

    /// Removes one number; returns whether it was present.
    pub fn remove(&mut self, n: u128) -> bool {
        if !self.contains(n) {
            return false;
        }
        self.remove_range(n, n);
        true
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: u128) -> bool {
        self.spans
            .range(..=n)
            .next_back()
            .is_some_and(|(_, &e)| e >= n)
    }

    /// The lowest number not rejected by `skip`. `skip` must reject at most a few numbers in a
    /// row (it is used for `avoidBuggyIPs`, which rejects at most `.255` and `.0`).
    pub fn lowest(&self, skip: impl Fn(u128) -> bool) -> Option<u128> {
        self.spans.iter().find_map(|(&s, &e)| {
            let mut n = s;
            loop {
                if !skip(n) {
                    return Some(n);
                }
                if n == e {
                    return None;
                }
                n += 1;
            }
        })
    }

    /// How many numbers are in the set (saturating).
    pub fn len(&self) -> u128 {
        self.spans.iter().fold(0u128, |acc, (&s, &e)| {
            acc.saturating_add((e - s).saturating_add(1))
        })
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The spans, lowest first.
    pub fn spans(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.spans.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_and_splits() {
        let mut f = FreeList::new();
        f.insert_range(10, 20);
        f.insert_range(21, 25);
        f.insert_range(5, 9);
        assert_eq!(f.spans().collect::<Vec<_>>(), vec![(5, 25)]);
        assert!(f.remove(12));
        assert!(!f.remove(12));
        assert_eq!(f.spans().collect::<Vec<_>>(), vec![(5, 11), (13, 25)]);
        assert_eq!(f.len(), 20);
        assert_eq!(f.lowest(|n| n < 7), Some(7));
        f.insert(12);
        assert_eq!(f.spans().collect::<Vec<_>>(), vec![(5, 25)]);
        f.insert_range(0, u128::MAX);
        assert_eq!(f.len(), u128::MAX);
        f.remove_range(0, u128::MAX);
        assert!(f.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Remove(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Insert(a.min(b), a.max(b))),
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Remove(a.min(b), a.max(b))),
        ]
    }

    proptest! {
        /// The span set behaves exactly like a set of numbers, and its spans stay disjoint and
        /// non-adjacent.
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec(op(), 0..60)) {
            let mut f = FreeList::new();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(a, b) => { f.insert_range(a.into(), b.into()); model.extend(a..=b); }
                    Op::Remove(a, b) => { f.remove_range(a.into(), b.into()); for n in a..=b { model.remove(&n); } }
                }
                prop_assert_eq!(f.len(), model.len() as u128);
                for n in 0..=255u8 { prop_assert_eq!(f.contains(n.into()), model.contains(&n)); }
                prop_assert_eq!(f.lowest(|_| false), model.first().map(|&n| u128::from(n)));
                let spans: Vec<_> = f.spans().collect();
                for w in spans.windows(2) { prop_assert!(w[0].1 + 1 < w[1].0); }
            }
        }
    }
}

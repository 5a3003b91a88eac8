//! Connections that have not joined yet, sans-IO: who is evicted when too many wait.
//!
//! A flood of connections that never join must not lock out the ones that will, even
//! from the same address (many real users share one NAT). So the relay never refuses
//! the newcomer: past `max_total` waiting connections the oldest one is evicted, and
//! past `max_per_source` from one address that address's oldest is. A legitimate
//! client completes its handshake and join in milliseconds, so to push it out a flood
//! must open `max_total` connections within those milliseconds; the per-source cap
//! keeps one address from doing even that to everyone else.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The waiting connections, oldest first, each with a handle `T` (the shell's way to
/// close it).
#[derive(Debug)]
pub struct Waiting<T> {
    order: BTreeMap<u64, (IpAddr, T)>,
    per_source: HashMap<IpAddr, usize>,
    next: u64,
    max_total: usize,
    max_per_source: usize,
}

impl<T> Waiting<T> {
    /// No connection waiting yet.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            order: BTreeMap::new(),
            per_source: HashMap::new(),
            next: 0,
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
        }
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether more than half the cap is in use: time to validate addresses and
    /// shorten deadlines.
    pub fn under_pressure(&self) -> bool {
        self.order.len() * 2 > self.max_total
    }

    /// Registers a new connection from `source`; returns its id and the handles of
    /// the connections evicted to make room (to be closed by the caller).
    pub fn insert(&mut self, source: IpAddr, handle: T) -> (u64, Vec<T>) {
        let mut evicted = Vec::new();
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            let oldest = self
                .order
                .iter()
                .find(|(_, (s, _))| *s == source)
                .map(|(&id, _)| id);
            if let Some(id) = oldest {
                evicted.extend(self.remove(id));
            }
        }
        while self.order.len() >= self.max_total {
            let Some(&id) = self.order.keys().next() else {
                break;
            };
            evicted.extend(self.remove(id));
        }
        let id = self.next;
        self.next += 1;
        self.order.insert(id, (source, handle));
        *self.per_source.entry(source).or_default() += 1;
        (id, evicted)
    }

    /// Forgets connection `id` (it joined, failed, or was evicted); returns its handle.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let (source, handle) = self.order.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        Some(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn past_the_cap_the_oldest_is_evicted_never_the_newcomer() {
        let mut w = Waiting::new(3, 10);
        for i in 0..3 {
            assert!(w.insert(ip(1), i).1.is_empty());
        }
        let (id, evicted) = w.insert(ip(2), 3);
        assert_eq!(evicted, [0]);
        assert_eq!(w.len(), 3);
        assert_eq!(w.remove(id), Some(3));
        assert_eq!(w.remove(id), None);
    }

    #[test]
    fn one_source_at_its_cap_evicts_its_own_oldest() {
        let mut w = Waiting::new(100, 2);
        w.insert(ip(9), "other");
        w.insert(ip(1), "a");
        w.insert(ip(1), "b");
        let (_, evicted) = w.insert(ip(1), "c");
        assert_eq!(evicted, ["a"], "the other address is untouched");
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn pressure_starts_past_half_the_cap() {
        let mut w = Waiting::new(4, 4);
        let a = w.insert(ip(1), ()).0;
        w.insert(ip(1), ());
        assert!(!w.under_pressure());
        w.insert(ip(1), ());
        assert!(w.under_pressure());
        w.remove(a);
        assert!(!w.under_pressure());
        assert!(!w.is_empty());
    }
}

//! A deterministic in-memory meeting: routes each participant's outbound key messages
//! to the others exactly as the relay does (`All` = everyone else admitted, `One(p)`),
//! with a clock the test advances. The state machines and all crypto are the real ones.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orelay_e2ee::{
    Config, Input, KemSuite, LocalKeys, MeetingSecurity, Outbound, Recipient, SecurityEvent,
    Warning,
};

pub struct Node {
    pub sec: MeetingSecurity,
    pub bundle: Vec<u8>,
    pub host: bool,
    pub events: Vec<SecurityEvent>,
}

pub struct Net {
    pub t: Instant,
    pub nodes: BTreeMap<u64, Node>,
    pub next: u64,
    /// Every key message routed: (from, to, blob).
    pub log: Vec<(u64, u64, Vec<u8>)>,
}

impl Net {
    pub fn new() -> Net {
        Net {
            t: Instant::now(),
            nodes: BTreeMap::new(),
            next: 1,
            log: Vec::new(),
        }
    }

    pub fn keys(suite: KemSuite) -> (LocalKeys, Vec<u8>) {
        let keys = LocalKeys::generate(suite).unwrap();
        let bundle = keys.bundle().unwrap();
        (keys, bundle)
    }

    /// Admits a participant: it sees everyone present, everyone sees it.
    pub fn join(&mut self, host: bool) -> u64 {
        let (keys, bundle) = Self::keys(KemSuite::XWing);
        self.join_with(keys, bundle, host)
    }

    pub fn join_with(&mut self, keys: LocalKeys, bundle: Vec<u8>, host: bool) -> u64 {
        let pid = self.next;
        self.next += 1;
        let mut sec = MeetingSecurity::new(keys, pid, host, Config::default(), self.t);
        for (p, n) in &self.nodes {
            sec.handle(
                Input::Joined {
                    participant: *p,
                    host: n.host,
                    keys: &n.bundle,
                },
                self.t,
            );
        }
        for n in self.nodes.values_mut() {
            n.sec.handle(
                Input::Joined {
                    participant: pid,
                    host,
                    keys: &bundle,
                },
                self.t,
            );
        }
        self.nodes.insert(
            pid,
            Node {
                sec,
                bundle,
                host,
                events: Vec::new(),
            },
        );
        self.pump();
        pid
    }

    /// The participant leaves (or is removed): everyone else is told.
    pub fn leave(&mut self, pid: u64) -> Node {
        let node = self.nodes.remove(&pid).unwrap();
        for n in self.nodes.values_mut() {
            n.sec.handle(Input::Left { participant: pid }, self.t);
        }
        self.pump();
        node
    }

    /// Routes key messages until none are left.
    pub fn pump(&mut self) {
        loop {
            let mut batch: Vec<(u64, Outbound)> = Vec::new();
            for (p, n) in self.nodes.iter_mut() {
                while let Some(o) = n.sec.poll_transmit() {
                    batch.push((*p, o));
                }
                while let Some(e) = n.sec.poll_event() {
                    n.events.push(e);
                }
            }
            if batch.is_empty() {
                return;
            }
            for (from, o) in batch {
                let targets: Vec<u64> = match o.to {
                    Recipient::All => self.nodes.keys().copied().filter(|p| *p != from).collect(),
                    Recipient::One(p) => vec![p],
                };
                for to in targets {
                    self.log.push((from, to, o.blob.clone()));
                    if let Some(n) = self.nodes.get_mut(&to) {
                        n.sec.handle(
                            Input::KeyMessage {
                                from,
                                blob: &o.blob,
                            },
                            self.t,
                        );
                    }
                }
            }
        }
    }

    /// Advances the clock by `d` in steps of at most 1 s, running timers.
    pub fn advance(&mut self, d: Duration) {
        let end = self.t + d;
        while self.t < end {
            self.t = (self.t + Duration::from_secs(1)).min(end);
            for n in self.nodes.values_mut() {
                n.sec.handle_timeout(self.t);
            }
            self.pump();
        }
    }

    pub fn settle(&mut self) {
        self.advance(Duration::from_millis(600));
    }

    pub fn sec(&mut self, p: u64) -> &mut MeetingSecurity {
        &mut self.nodes.get_mut(&p).unwrap().sec
    }

    /// Asserts every participant decrypts a fresh frame from every other.
    pub fn assert_all_decrypt(&mut self) {
        let pids: Vec<u64> = self.nodes.keys().copied().collect();
        let t = self.t;
        for &s in &pids {
            let payload = format!("frame from {s}").into_bytes();
            let sealed = self.sec(s).encrypt(b"hdr", &payload).unwrap();
            for &r in &pids {
                if r != s {
                    let got = self.sec(r).decrypt(s, b"hdr", &sealed, t);
                    assert_eq!(got.as_deref(), Ok(&payload[..]), "{r} reading {s}");
                }
            }
        }
    }

    pub fn epochs(&self) -> Vec<Option<u64>> {
        self.nodes.values().map(|n| n.sec.epoch()).collect()
    }

    pub fn warnings(&self, p: u64) -> Vec<Warning> {
        self.nodes[&p]
            .events
            .iter()
            .filter_map(|e| match e {
                SecurityEvent::Warning(w) => Some(w.clone()),
                _ => None,
            })
            .collect()
    }
}

//! The meeting security state machine, several participants at once: keying, rekey on
//! leave, grace, leader handover, host takeover, roster attacks, info sealing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Net;
use orelay_e2ee::frame::FrameError;
use orelay_e2ee::{Input, KemSuite, SecurityEvent, Warning};

fn meeting(n: usize) -> Net {
    let mut net = Net::new();
    net.join(false);
    net.settle();
    for _ in 1..n {
        net.join(false);
    }
    net.settle();
    net
}

#[test]
fn five_participants_share_one_epoch_code_and_decrypt_each_other() {
    let mut net = meeting(5);
    assert!(net.sec(1).is_leader());
    assert_eq!(net.epochs(), vec![Some(1); 5]);
    let codes: Vec<_> = net.nodes.values().map(|n| n.sec.security_code()).collect();
    assert!(codes[0].is_some());
    assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");
    assert!(net.nodes.values().all(|n| n.sec.can_send()));
    net.assert_all_decrypt();
    for p in 1..=5 {
        assert_eq!(net.warnings(p), vec![], "participant {p}");
    }
}

#[test]
fn removed_member_cannot_decrypt_after_rekey_others_continue() {
    let mut net = meeting(4);
    let mut gone = net.leave(3);
    assert_eq!(net.epochs(), vec![Some(2); 3]);
    assert_eq!(gone.sec.epoch(), Some(1));
    net.assert_all_decrypt();
    // The removed participant still receives the ciphertext (say the relay leaks it):
    // it cannot open frames of the new epoch.
    let t = net.t;
    let sealed = net.sec(1).encrypt(b"hdr", b"after removal").unwrap();
    assert_eq!(
        gone.sec.decrypt(1, b"hdr", &sealed, t),
        Err(FrameError::NoKey)
    );
    // Nor any key message sent since: nothing after the leave was addressed to it.
    // The security code changed with the epoch.
    assert_ne!(gone.sec.security_code(), net.sec(1).security_code());
}

#[test]
fn previous_epoch_opens_within_grace_only() {
    let mut net = meeting(3);
    let t = net.t;
    let old = net.sec(2).encrypt(b"h", b"in flight").unwrap();
    net.leave(3);
    assert_eq!(net.sec(1).epoch(), Some(2));
    assert_eq!(net.sec(1).decrypt(2, b"h", &old, t).unwrap(), b"in flight");
    net.advance(Duration::from_secs(11));
    let t = net.t;
    assert_eq!(net.sec(1).decrypt(2, b"h", &old, t), Err(FrameError::NoKey));
}

#[test]
fn leader_leaves_next_oldest_takes_over_and_rekeys() {
    let mut net = meeting(4);
    net.leave(1);
    assert!(net.sec(2).is_leader());
    assert_eq!(net.epochs(), vec![Some(2); 3]);
    net.assert_all_decrypt();
    // The new leader keys newcomers too.
    let p = net.join(false);
    assert_eq!(net.sec(p).epoch(), Some(2));
    net.assert_all_decrypt();
    net.advance(Duration::from_secs(1));
    let codes: Vec<_> = net.nodes.values().map(|n| n.sec.security_code()).collect();
    assert!(codes.iter().all(|c| c.is_some() && *c == codes[0]));
}

#[test]
fn a_host_joining_later_is_keyed_then_leads() {
    let mut net = meeting(3);
    let h = net.join(true);
    net.settle();
    assert!(net.sec(h).is_leader());
    assert!(!net.sec(1).is_leader());
    assert_eq!(net.epochs(), vec![Some(2); 4]);
    net.assert_all_decrypt();
}

#[test]
fn rekeys_every_five_minutes_and_heartbeats_the_roster() {
    let mut net = meeting(3);
    let before = net.log.len();
    net.advance(Duration::from_secs(35));
    // Three heartbeats of one part to two others at least.
    assert!(net.log.len() - before >= 6);
    assert_eq!(net.epochs(), vec![Some(1); 3]);
    net.advance(Duration::from_secs(300));
    assert_eq!(net.epochs(), vec![Some(2); 3]);
    net.assert_all_decrypt();
    assert_eq!(net.warnings(2), vec![]);
}

#[test]
fn suppressed_rosters_are_reported_stale() {
    let mut net = meeting(2);
    // A relay that drops the leader's heartbeats: advance participant 2 alone.
    let t = net.t + Duration::from_secs(26);
    net.sec(2).handle_timeout(t);
    let w: Vec<_> = std::iter::from_fn(|| net.sec(2).poll_event()).collect();
    assert!(
        w.contains(&SecurityEvent::Warning(Warning::RosterStale)),
        "{w:?}"
    );
}

#[test]
fn relay_injected_listener_is_detected_by_every_honest_participant() {
    let mut net = meeting(4);
    // The relay shows an extra participant (its own keys) to the leader only.
    let (_, fake_bundle) = Net::keys(KemSuite::XWing);
    let t = net.t;
    net.sec(1).handle(
        Input::Joined {
            participant: 99,
            host: false,
            keys: &fake_bundle,
        },
        t,
    );
    net.pump();
    net.settle();
    for p in 2..=4 {
        assert!(
            net.warnings(p).contains(&Warning::RosterMismatch(99)),
            "participant {p}: {:?}",
            net.warnings(p)
        );
        assert!(!net.sec(p).can_send());
        assert_eq!(net.sec(p).encrypt(b"h", b"x"), Err(FrameError::Blocked));
    }
    // The leader, which the relay fooled, still sends; the others' codes differ from
    // nothing they can compare except out of band, which is what the code is for.
    assert!(net.sec(1).can_send());
}

#[test]
fn relay_swapped_bundle_is_detected_by_its_owner() {
    let mut net = meeting(2);
    // Participant 3 joins, but the relay hands the leader its own bundle for 3.
    let (keys, bundle) = Net::keys(KemSuite::XWing);
    let (_, relay_bundle) = Net::keys(KemSuite::XWing);
    let pid = net.next;
    net.next += 1;
    let mut sec = orelay_e2ee::MeetingSecurity::new(keys, pid, false, Default::default(), net.t);
    for (p, n) in &net.nodes {
        let keys = &n.bundle;
        sec.handle(
            Input::Joined {
                participant: *p,
                host: false,
                keys,
            },
            net.t,
        );
    }
    let t = net.t;
    net.sec(1).handle(
        Input::Joined {
            participant: pid,
            host: false,
            keys: &relay_bundle,
        },
        t,
    );
    net.sec(2).handle(
        Input::Joined {
            participant: pid,
            host: false,
            keys: &bundle,
        },
        t,
    );
    net.nodes.insert(
        pid,
        common::Node {
            sec,
            bundle,
            host: false,
            events: Vec::new(),
        },
    );
    net.pump();
    net.settle();
    // 3 never got a key it can open, and its own roster entry carries another key.
    assert_eq!(net.sec(pid).epoch(), None);
    assert!(net.warnings(pid).contains(&Warning::RosterMismatch(pid)));
    // Participant 2 saw 3's real bundle: the roster's key for 3 differs, so it stops too.
    assert!(net.warnings(2).contains(&Warning::RosterMismatch(pid)));
}

#[test]
fn tampered_or_foreign_key_messages_are_rejected() {
    let mut net = meeting(3);
    let t = net.t;
    // A delivery to 2, altered by one bit, replayed to 2.
    let (_, _, blob) = net
        .log
        .iter()
        .find(|(f, to, b)| *f == 1 && *to == 2 && b[1] == 1)
        .cloned()
        .unwrap();
    let mut bad = blob.clone();
    let last = bad.len() - 70;
    bad[last] ^= 1;
    net.sec(2).handle(
        Input::KeyMessage {
            from: 1,
            blob: &bad,
        },
        t,
    );
    // The genuine one replayed: ignored (old epoch), no warning.
    net.sec(2).handle(
        Input::KeyMessage {
            from: 1,
            blob: &blob,
        },
        t,
    );
    // Garbage.
    net.sec(2).handle(
        Input::KeyMessage {
            from: 1,
            blob: &[1, 2, 3],
        },
        t,
    );
    net.pump();
    let w = net.warnings(2);
    assert_eq!(
        w.iter()
            .filter(|w| matches!(w, Warning::BadKeyMessage { from: 1, .. }))
            .count(),
        2,
        "{w:?}"
    );
    assert_eq!(net.sec(2).epoch(), Some(1));
    net.assert_all_decrypt();
}

#[test]
fn info_is_sealed_and_reaches_everyone_including_newcomers() {
    let mut net = meeting(2);
    net.sec(1).set_info(b"Ada".to_vec());
    net.sec(2).set_info(b"Grace".to_vec());
    net.pump();
    let p = net.join(false);
    net.settle();
    let infos = |net: &Net, who: u64| -> Vec<(u64, Vec<u8>)> {
        net.nodes[&who]
            .events
            .iter()
            .filter_map(|e| match e {
                SecurityEvent::Info { participant, info } => Some((*participant, info.clone())),
                _ => None,
            })
            .collect()
    };
    let got = infos(&net, p);
    assert!(got.contains(&(1, b"Ada".to_vec())), "{got:?}");
    assert!(got.contains(&(2, b"Grace".to_vec())), "{got:?}");
    assert!(infos(&net, 2).contains(&(1, b"Ada".to_vec())));
    // The relay sees only sealed bytes.
    assert!(net
        .log
        .iter()
        .all(|(_, _, b)| !b.windows(3).any(|w| w == b"Ada")));
    let blob = net.sec(1).seal_info(b"Ada").unwrap();
    assert_eq!(net.sec(2).open_info(1, &blob).unwrap(), b"Ada");
    assert!(net.sec(2).open_info(3, &blob).is_err());
}

#[test]
fn a_thousand_participant_roster_is_split_signed_and_accepted() {
    // Two real state machines (leader 1, participant 2) in a meeting of 1,000: the other
    // 998 are bundles only (classic KEM keeps this debug-build test fast).
    let mut t = std::time::Instant::now();
    let (k1, b1) = Net::keys(KemSuite::X25519);
    let (k2, b2) = Net::keys(KemSuite::X25519);
    let cfg = orelay_e2ee::Config::default();
    let mut leader = orelay_e2ee::MeetingSecurity::new(k1, 1, false, cfg, t);
    t += Duration::from_secs(1);
    leader.handle_timeout(t);
    assert!(leader.is_leader());
    while leader.poll_transmit().is_some() {}
    let mut p2 = orelay_e2ee::MeetingSecurity::new(k2, 2, false, cfg, t);
    p2.handle(
        Input::Joined {
            participant: 1,
            host: false,
            keys: &b1,
        },
        t,
    );
    leader.handle(
        Input::Joined {
            participant: 2,
            host: false,
            keys: &b2,
        },
        t,
    );
    for pid in 3..=1000u64 {
        let (_, b) = Net::keys(KemSuite::X25519);
        for s in [&mut leader, &mut p2] {
            s.handle(
                Input::Joined {
                    participant: pid,
                    host: false,
                    keys: &b,
                },
                t,
            );
        }
    }
    t += Duration::from_secs(1);
    leader.handle_timeout(t);
    let mut parts = 0;
    while let Some(o) = leader.poll_transmit() {
        assert!(o.blob.len() <= orelay_e2ee::MAX_KEY_MESSAGE_LEN);
        let to_p2 = matches!(
            o.to,
            orelay_e2ee::Recipient::All | orelay_e2ee::Recipient::One(2)
        );
        if o.to == orelay_e2ee::Recipient::All && o.blob[1] == 2 {
            parts += 1;
        }
        if to_p2 {
            p2.handle(
                Input::KeyMessage {
                    from: 1,
                    blob: &o.blob,
                },
                t,
            );
        }
    }
    assert_eq!(parts, 4);
    let code = leader.security_code();
    assert!(code.is_some());
    assert_eq!(p2.security_code(), code);
    assert!(p2.can_send());
    let warnings: Vec<_> = std::iter::from_fn(|| p2.poll_event())
        .filter(|e| matches!(e, SecurityEvent::Warning(_)))
        .collect();
    assert_eq!(warnings, vec![]);
}

//! Replays, on the stable toolchain, what the fuzz targets ran: the seeds derived from
//! the protocol test vectors, the committed corpus (`fuzz/seeds/TARGET/`) and every
//! input that once broke a check (`fuzz/regressions/TARGET/`), each through the same
//! check function its fuzz target calls. So CI exercises them without nightly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use orelay_checks::TARGETS;

fn check(target: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .expect("a known target")
        .1
}

/// Every file of `fuzz/<kind>/<target>/`, replayed; returns how many ran.
fn replay_dir(kind: &str, target: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| check(target)(&data));
        assert!(run.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}

#[test]
fn every_vector_seed_passes_its_check() {
    let seeds = orelay_checks::seeds::seeds();
    for seed in &seeds {
        check(seed.target)(&seed.data);
    }
    // Each decoder target gets seeds; the core target starts from nothing.
    for (target, _) in TARGETS.iter().filter(|(t, _)| *t != "relay_core") {
        assert!(
            seeds.iter().any(|s| s.target == *target),
            "no seed for {target}"
        );
    }
    println!("{} vector seeds", seeds.len());
}

#[test]
fn the_committed_corpus_and_every_fixed_finding_pass_their_checks() {
    let mut total = 0;
    for (target, _) in TARGETS {
        let seeds = replay_dir("seeds", target);
        let regressions = replay_dir("regressions", target);
        println!("{target}: {seeds} corpus inputs, {regressions} regressions");
        total += seeds + regressions;
    }
    assert!(total > 0, "no committed corpus found under fuzz/");
}

#[test]
fn the_chunk_splits_cover_whole_and_byte_at_a_time() {
    let data: Vec<u8> = (0..100).collect();
    assert_eq!(orelay_checks::decode::chunks(0, &data), [&data[..]]);
    let bytes = orelay_checks::decode::chunks(8, &data);
    assert!(bytes.iter().all(|c| c.len() == 1) && bytes.len() == 100);
    assert_eq!(orelay_checks::decode::chunks(0x46, &data).concat(), data);
}

/// A bounded, deterministic taste of fuzzing on stable: pseudo-random inputs through
/// every check (fixed seed, so a failure reproduces; the real search is scripts/fuzz.sh).
#[test]
fn pseudo_random_inputs_pass_every_check() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (target, check) in TARGETS {
        for n in 0..300 {
            let len = (next() % 2048) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let run = std::panic::catch_unwind(|| check(&data));
            assert!(run.is_ok(), "{target}: input {n} ({len} bytes) fails");
        }
    }
}

/// The core target's checks are only worth something if the runs reach the paths they
/// guard: random event sequences join, forward groups, deliver chunks, drop, route
/// audio, close misbehaving clients and compare drained clients' rosters.
#[test]
fn random_event_sequences_reach_every_path_the_core_checks_guard() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut total = orelay_checks::core::Coverage::default();
    for _ in 0..1000 {
        let data: Vec<u8> = (0..2048)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let c = orelay_checks::core::run(&data);
        total.joined += c.joined;
        total.groups += c.groups;
        total.chunks += c.chunks;
        total.drops += c.drops;
        total.datagrams += c.datagrams;
        total.closed += c.closed;
        total.views += c.views;
    }
    println!("{total:?}");
    let c = total;
    let all = [
        c.joined,
        c.groups,
        c.chunks,
        c.drops,
        c.datagrams,
        c.closed,
        c.views,
    ];
    assert!(all.iter().all(|&n| n > 0), "{total:?}");
}

//! Idle memory: join many participants that publish nothing and measure the target's
//! resident memory before and after (`fanout-load idle`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};

use crate::procfs::{cpu_between, Proc};
use crate::IdleArgs;

/// Connections per client endpoint.
const PER_ENDPOINT: usize = 250;

/// Joins `args.participants` idle participants, `args.per_meeting` to a meeting, keeps
/// them joined while it samples the target, and returns the JSON line.
pub async fn run(args: IdleArgs) -> anyhow::Result<serde_json::Value> {
    let fingerprint =
        orelay_client::parse_fingerprint(&args.fingerprint).context("bad --fingerprint")?;
    let target = Proc {
        pid: Some(args.pid),
        clk_tck: args.clk_tck,
    };
    let bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let clients = (0..args.participants.div_ceil(PER_ENDPOINT).max(1))
        .map(|_| orelay_client::Client::new(bind, fingerprint).map(super::cell::with_host_secret))
        .collect::<Result<Vec<_>, _>>()?;
    sleep(Duration::from_millis(500)).await;
    let before = target.sample()?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..args.participants {
        let client = clients[i / PER_ENDPOINT].clone();
        let gate = gate.clone();
        let addr = args.addr;
        // Meeting IDs need at least 11 characters from [A-Za-z0-9_-].
        let meeting = format!("idle-meeting-{:06}", i / args.per_meeting.max(1));
        joins.spawn(async move {
            let _permit = gate.acquire_owned().await;
            client.join(addr, &meeting, "idle", b"sub").await
        });
    }
    let mut sessions = Vec::with_capacity(args.participants);
    let mut failures = 0u64;
    let mut first_error = None;
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let join_secs = started.elapsed().as_secs_f64();
    let joined_at = target.sample()?;
    sleep(Duration::from_secs_f64(args.settle)).await;
    let after = target.sample()?;
    // Events (roster updates) are left queued in each session: a handful each.
    let joined = sessions.len() as u64;
    let delta = after.rss_kib.saturating_sub(before.rss_kib);
    let (join_cpu_us, _) = cpu_between(&before, &joined_at);
    let (_, idle_cpu_pct) = cpu_between(&joined_at, &after);
    if let Some(e) = &first_error {
        eprintln!("fanout-load idle: {failures} joins failed; first: {e}");
    }
    Ok(json!({
        "mode": "idle",
        "target": args.target.name(),
        "participants": args.participants,
        "per_meeting": args.per_meeting,
        "joined": joined,
        "join_failures": failures,
        "join_s": join_secs,
        "join_cpu_us_per_participant": if joined == 0 { 0.0 } else { join_cpu_us as f64 / joined as f64 },
        "idle_cpu_pct": idle_cpu_pct,
        "rss_before_kib": before.rss_kib,
        "rss_after_kib": after.rss_kib,
        "kib_per_participant": if joined == 0 { 0.0 } else { delta as f64 / joined as f64 },
    }))
}

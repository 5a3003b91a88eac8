//! `fanout-load report`: the JSON lines of a run as a markdown table (relay and raw
//! side by side, with the ratio) and as one JSON document.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{json, Value};

use crate::ReportArgs;

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn b(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A cell's relay and raw measurements, either possibly missing.
type Sides<'a> = (Option<&'a Value>, Option<&'a Value>);

/// "1.23 / 4.56" with the given precision; "-" for a missing side.
fn pair(a: Option<&Value>, b: Option<&Value>, key: &str, scale: f64, prec: usize) -> String {
    let one = |v: Option<&Value>| match v {
        Some(v) => format!("{:.*}", prec, f(v, key) * scale),
        None => "-".to_owned(),
    };
    format!("{} / {}", one(a), one(b))
}

/// Prints the tables and writes the JSON document.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let order = |p: &str| match p {
        "video" => 0,
        "small" => 1,
        "audio" => 2,
        _ => 3,
    };
    // (profile order, N) -> (relay, raw)
    let mut cells: BTreeMap<(u8, u64, String), Sides<'_>> = BTreeMap::new();
    for v in lines.iter().filter(|v| s(v, "mode") == "cell") {
        let key = (
            order(s(v, "profile")),
            v.get("subscribers").and_then(Value::as_u64).unwrap_or(0),
            s(v, "profile").to_owned(),
        );
        let slot = cells.entry(key).or_default();
        match s(v, "target") {
            "relay" => slot.0 = Some(v),
            _ => slot.1 = Some(v),
        }
    }
    let mut rows = Vec::new();
    if !cells.is_empty() {
        println!(
            "| profile | N | relay CPU-µs/1k obj | raw CPU-µs/1k obj | ratio | delivered/s relay / raw \
             | loss % relay / raw | p50 ms relay / raw | p99 ms relay / raw | RSS MiB relay / raw \
             | relay CPU % | load CPU % relay / raw | run-queue wait % relay / raw \
             | UDP rcvbuf drops relay / raw |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for ((_, n, profile), (relay, raw)) in &cells {
        let cpu = |v: Option<&Value>| v.map(|v| f(v, "cpu_us_per_1k"));
        let ratio = match (cpu(*relay), cpu(*raw)) {
            (Some(a), Some(b)) if b > 0.0 => a / b,
            _ => f64::NAN,
        };
        let show = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.0}"));
        let sat = |v: Option<&Value>| {
            let pct = v.map_or("-".to_owned(), |v| format!("{:.0}", f(v, "load_cpu_pct")));
            if v.is_some_and(|v| b(v, "load_saturated")) {
                format!("**{pct}** (saturated)")
            } else {
                pct
            }
        };
        println!(
            "| {profile} | {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            show(cpu(*relay)),
            show(cpu(*raw)),
            if ratio.is_nan() {
                "-".to_owned()
            } else {
                format!("{ratio:.2}")
            },
            pair(*relay, *raw, "delivered_per_s", 1.0, 0),
            pair(*relay, *raw, "loss", 100.0, 2),
            pair(*relay, *raw, "latency_p50_us", 1e-3, 2),
            pair(*relay, *raw, "latency_p99_us", 1e-3, 2),
            pair(*relay, *raw, "rss_end_kib", 1.0 / 1024.0, 1),
            relay.map_or("-".to_owned(), |v| format!("{:.0}", f(v, "target_cpu_pct"))),
            sat(*relay),
            sat(*raw),
            pair(*relay, *raw, "target_runqueue_wait_pct", 1.0, 0),
            pair(*relay, *raw, "udp_rcvbuf_drops", 1.0, 0),
        );
        rows.push(json!({
            "profile": profile,
            "subscribers": n,
            "cpu_ratio_relay_over_raw": if ratio.is_nan() { Value::Null } else { json!(ratio) },
            "relay": relay,
            "raw": raw,
        }));
    }
    let idle: Vec<&Value> = lines.iter().filter(|v| s(v, "mode") == "idle").collect();
    if !idle.is_empty() {
        println!();
        println!("| target | participants joined | RSS before MiB | RSS after MiB | KiB per participant | join CPU-µs per participant |");
        println!("|---|---|---|---|---|---|");
        for v in &idle {
            println!(
                "| {} | {} of {} | {:.1} | {:.1} | {:.1} | {:.0} |",
                s(v, "target"),
                f(v, "joined"),
                f(v, "participants"),
                f(v, "rss_before_kib") / 1024.0,
                f(v, "rss_after_kib") / 1024.0,
                f(v, "kib_per_participant"),
                f(v, "join_cpu_us_per_participant"),
            );
        }
    }
    if let Some(path) = &args.json {
        let doc = json!({ "cells": rows, "idle": idle });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

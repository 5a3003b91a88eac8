//! The `relay` binary as an operator meets it: it prints where it listens and the
//! certificate fingerprint, stops cleanly on SIGTERM, and refuses bad configuration
//! with a message naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const RELAY: &str = env!("CARGO_BIN_EXE_relay");

#[test]
fn prints_address_and_fingerprint_and_stops_on_sigterm() {
    let mut child = Command::new(RELAY)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    assert!(
        listening.starts_with("relay listening on 127.0.0.1:"),
        "{listening}"
    );
    let fp = lines.next().unwrap().unwrap();
    let hex = fp.rsplit(' ').next().unwrap();
    assert_eq!(hex.len(), 64, "{fp}");
    assert!(orelay_client::parse_fingerprint(hex).is_some());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "relay exited with {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "relay did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_configuration_names_the_field() {
    let out = Command::new(RELAY)
        .args(["--queue-bytes", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue_bytes"), "{err}");

    let dir = std::env::temp_dir().join(format!("orelay-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.toml");
    std::fs::write(&path, "max_conections = 5\n").unwrap();
    let out = Command::new(RELAY)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

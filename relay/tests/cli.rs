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
        .args(["--listen", "127.0.0.1:0", "--metrics-addr", "off"])
        .args(["--admission-mode", "open"])
        .env("ORELAY_HOST_SECRET", "a-development-host-secret")
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

#[test]
fn without_token_keys_the_relay_refuses_to_start_and_names_the_field() {
    let out = Command::new(RELAY)
        .args(["--listen", "127.0.0.1:0", "--metrics-addr", "off"])
        .env_remove("ORELAY_TOKEN_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admission.token_keys"), "{err}");
    assert!(err.contains("relay keygen"), "{err}");
}

#[test]
fn keygen_and_token_create_make_tokens_the_relay_accepts() {
    let dir = std::env::temp_dir().join(format!("orelay-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("issuer.key");
    let out = Command::new(RELAY)
        .args(["keygen", "--kid", "k1", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let flag = stdout
        .lines()
        .find_map(|l| l.strip_prefix("relay flag:  --token-key "))
        .unwrap()
        .to_owned();
    assert!(flag.starts_with("k1="), "{stdout}");
    // A second keygen never overwrites a private key.
    let again = Command::new(RELAY)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let token = Command::new(RELAY)
        .args([
            "token",
            "create",
            "--meeting",
            "98765432101",
            "--identity",
            "ada",
        ])
        .args(["--role", "host", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let (kid, public) = flag.split_once('=').unwrap();
    let verifier = orelay_relay::core::TokenVerifier::new([(kid, public)], "").unwrap();
    let grant = verifier
        .verify(
            &token,
            "98765432101",
            "",
            orelay_relay::core::token::unix_now(),
        )
        .unwrap();
    assert_eq!(grant.role, orelay_proto::Role::Host);

    let bad = Command::new(RELAY)
        .args([
            "token",
            "create",
            "--meeting",
            "98765432101",
            "--identity",
            "ada",
        ])
        .args(["--role", "emperor", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--role"));
    std::fs::remove_dir_all(&dir).unwrap();
}

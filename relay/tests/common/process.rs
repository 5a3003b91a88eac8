//! The `relay` binary as a separate process (optionally inside a network namespace),
//! for tests that measure its RSS, scrape its `/metrics` and read its log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use orelay_client::{parse_fingerprint, Client};

/// A running relay process, stopped with SIGTERM when dropped.
pub struct RelayProcess {
    child: Child,
    /// Where it serves QUIC.
    pub addr: SocketAddr,
    /// Its certificate fingerprint.
    pub fingerprint: String,
    /// Its metrics listener.
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl RelayProcess {
    /// Starts `relay` with `args` (inside `netns` through `ip netns exec` if given).
    /// Its log goes to a file in the temporary directory.
    pub fn spawn(args: &[&str], netns: Option<&str>) -> RelayProcess {
        let bin = env!("CARGO_BIN_EXE_relay");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new(super::netlab::ip());
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        let log = std::env::temp_dir().join(format!(
            "orelay-relay-{}-{}.log",
            std::process::id(),
            super::netlab::unique()
        ));
        // The tests' admission: their signing key, and no per-address attempt limit
        // (every test client shares one address).
        let key = super::signing_key();
        let token_key = format!("{}={}", key.kid(), key.public_key());
        let mut child = cmd
            .args(["--token-key", &token_key])
            .args(["--attempts-per-source-per-minute", "1000000"])
            .args(["--attempts-per-meeting-per-minute", "1000000"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || lines.next().unwrap().unwrap();
        let word = |line: &str, i: usize| line.split_whitespace().nth(i).unwrap().to_owned();
        let addr = word(&next(), 3).parse().unwrap();
        let fingerprint = next().rsplit(' ').next().unwrap().to_owned();
        let metrics = word(&next(), 2);
        let metrics = metrics
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .parse()
            .unwrap();
        RelayProcess {
            child,
            addr,
            fingerprint,
            metrics,
            log,
        }
    }

    /// A client endpoint bound to `bind` that pins this relay's certificate and joins
    /// with the tests' credentials.
    pub fn client(&self, bind: SocketAddr) -> Client {
        self.client_with(bind, orelay_client::default_transport())
    }

    /// Like [`RelayProcess::client`] with custom transport settings.
    pub fn client_with(&self, bind: SocketAddr, transport: quinn::TransportConfig) -> Client {
        let pin = parse_fingerprint(&self.fingerprint).unwrap();
        Client::with_transport(bind, pin, transport)
            .unwrap()
            .with_credentials(std::sync::Arc::new(super::credential))
    }

    /// The process's resident set size in KiB.
    pub fn rss_kib(&self) -> i64 {
        super::rss_of(&self.child.id().to_string())
    }

    /// Every exported sample summed over its labels, by metric name.
    pub async fn scrape(&self) -> BTreeMap<String, f64> {
        let addr = self.metrics;
        tokio::task::spawn_blocking(move || {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            tcp.read_to_string(&mut text).unwrap();
            let mut out = BTreeMap::new();
            for line in text.lines().filter(|l| l.starts_with("orelay_")) {
                let (name, value) = line.rsplit_once(' ').unwrap();
                let name = name.split('{').next().unwrap().to_owned();
                *out.entry(name).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
            out
        })
        .await
        .unwrap()
    }

    /// The log lines at error level so far.
    pub fn error_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

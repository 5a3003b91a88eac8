//! Relay configuration: defaults, a TOML file (`--config`), then command-line flags
//! and `ORELAY_*` environment variables, each overriding the one before.
//!
//! Every field is validated at start-up; an error names the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

use crate::core::{FanoutLimits, MeetingLimits, QueueLimits, RateLimit};

mod admission;

pub use admission::{AdmissionConfig, AdmissionMode, TokenKey};

/// The relay's settings. The TOML file uses the same field names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address to serve QUIC on.
    pub listen: SocketAddr,
    /// PEM certificate chain; with `key`. Without both, a self-signed certificate is generated.
    pub cert: Option<PathBuf>,
    /// PEM private key; with `cert`.
    pub key: Option<PathBuf>,
    /// Most connections at once; further attempts are refused (QUIC `CONNECTION_REFUSED`).
    pub max_connections: usize,
    /// Most connections that have not yet joined a meeting; further attempts are refused.
    pub max_unjoined: usize,
    /// Milliseconds a new connection has to complete its join.
    pub join_timeout_ms: u64,
    /// Most participants in one meeting.
    pub max_participants: usize,
    /// Most meetings on this relay.
    pub max_meetings: usize,
    /// Per-subscriber video queue budget in bytes; beyond it whole groups are dropped.
    pub queue_bytes: usize,
    /// Milliseconds a superseded group may wait for a subscriber before it is dropped.
    pub max_group_delay_ms: u64,
    /// Control messages queued towards one client before it is closed with `CONTROL_BACKLOG`.
    pub control_backlog: usize,
    /// Requested UDP socket send and receive buffer sizes in bytes (the kernel may cap them).
    pub udp_buffer_bytes: usize,
    /// Milliseconds to wait for connections to close on shutdown.
    pub shutdown_grace_ms: u64,
    /// Milliseconds without traffic before a connection is considered dead.
    pub idle_timeout_ms: u64,
    /// Most bytes one publisher's groups may hold for subscribers that lag; past it the
    /// furthest-behind subscribers of the group being pushed lose that group.
    pub publisher_bytes: usize,
    /// Milliseconds a group stream may go without bytes before it is reset.
    pub group_idle_timeout_ms: u64,
    /// Control messages per second one participant may send (sustained).
    pub control_rate: u32,
    /// Control messages one participant may send back to back.
    pub control_burst: u32,
    /// Most not-yet-joined connections from one source address; past it that source's
    /// oldest is closed (never the newcomer: many users share one NAT).
    pub max_unjoined_per_source: usize,
    /// Milliseconds to complete handshake and join while over half of `max_unjoined`
    /// connections are waiting (instead of `join_timeout_ms`).
    pub pressure_join_timeout_ms: u64,
    /// Most joins admitted per second; joins beyond it are answered `Overloaded`.
    pub max_join_rate: u32,
    /// TCP address of the HTTP listener for `/metrics`, `/healthz` and `/readyz`;
    /// `None` (`"off"` in TOML and flags) serves none.
    #[serde(deserialize_with = "deserialize_metrics_addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// How joins are authenticated and limited (`[admission]`).
    pub admission: AdmissionConfig,
}

/// The default metrics listener: loopback only, Prometheus's exporter port range.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// A `--metrics-addr` value: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsAddr(None));
        }
        s.parse()
            .map(|a| MetricsAddr(Some(a)))
            .map_err(|_| format!("metrics_addr must be IP:port or \"off\", not {s:?}"))
    }
}

fn deserialize_metrics_addr<'de, D>(d: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    text.parse::<MetricsAddr>()
        .map(|m| m.0)
        .map_err(serde::de::Error::custom)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4443)),
            cert: None,
            key: None,
            max_connections: 10_000,
            max_unjoined: 1_000,
            join_timeout_ms: 10_000,
            max_participants: 1_000,
            max_meetings: 100_000,
            queue_bytes: 1024 * 1024,
            max_group_delay_ms: 500,
            control_backlog: 1024,
            udp_buffer_bytes: 8 * 1024 * 1024,
            shutdown_grace_ms: 3_000,
            idle_timeout_ms: 30_000,
            publisher_bytes: 4 * 1024 * 1024,
            group_idle_timeout_ms: 10_000,
            control_rate: 50,
            control_burst: 100,
            max_unjoined_per_source: 256,
            pressure_join_timeout_ms: 2_000,
            max_join_rate: 5_000,
            metrics_addr: Some(DEFAULT_METRICS_ADDR),
            admission: AdmissionConfig::default(),
        }
    }
}

/// `relay`: a QUIC relay that forwards end-to-end-encrypted meeting media without holding keys.
///
/// With no arguments it serves on 127.0.0.1:4443 with a fresh self-signed certificate
/// and prints the certificate's SHA-256 fingerprint for clients to pin.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// TOML file with any of the settings below (flags and environment override it).
    #[arg(long, env = "ORELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// UDP address to serve on [default: 127.0.0.1:4443; port 0 picks a free one].
    #[arg(long, env = "ORELAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain (needs --key) [default: generate a self-signed one].
    #[arg(long, env = "ORELAY_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key (needs --cert).
    #[arg(long, env = "ORELAY_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Most simultaneous connections; more are refused [default: 10000].
    #[arg(long, env = "ORELAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections not yet joined to a meeting; more are refused [default: 1000].
    #[arg(long, env = "ORELAY_MAX_UNJOINED")]
    pub max_unjoined: Option<usize>,
    /// Milliseconds a connection has to join [default: 10000].
    #[arg(long, env = "ORELAY_JOIN_TIMEOUT_MS")]
    pub join_timeout_ms: Option<u64>,
    /// Most participants per meeting [default: 1000].
    #[arg(long, env = "ORELAY_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    /// Most meetings on this relay [default: 100000].
    #[arg(long, env = "ORELAY_MAX_MEETINGS")]
    pub max_meetings: Option<usize>,
    /// Per-subscriber video queue in bytes; past it old groups are dropped [default: 1048576].
    #[arg(long, env = "ORELAY_QUEUE_BYTES")]
    pub queue_bytes: Option<usize>,
    /// Milliseconds a superseded group may wait before it is dropped [default: 500].
    #[arg(long, env = "ORELAY_MAX_GROUP_DELAY_MS")]
    pub max_group_delay_ms: Option<u64>,
    /// Control messages queued per client before it is closed [default: 1024].
    #[arg(long, env = "ORELAY_CONTROL_BACKLOG")]
    pub control_backlog: Option<usize>,
    /// UDP socket buffer size in bytes, send and receive [default: 8388608].
    #[arg(long, env = "ORELAY_UDP_BUFFER_BYTES")]
    pub udp_buffer_bytes: Option<usize>,
    /// Milliseconds to wait for connections to close on SIGINT/SIGTERM [default: 3000].
    #[arg(long, env = "ORELAY_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Milliseconds of silence before a connection is dropped [default: 30000].
    #[arg(long, env = "ORELAY_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Bytes one publisher's groups may hold for lagging subscribers [default: 4194304].
    #[arg(long, env = "ORELAY_PUBLISHER_BYTES")]
    pub publisher_bytes: Option<usize>,
    /// Milliseconds a group stream may stay silent before it is reset [default: 10000].
    #[arg(long, env = "ORELAY_GROUP_IDLE_TIMEOUT_MS")]
    pub group_idle_timeout_ms: Option<u64>,
    /// Control messages per second per participant, sustained [default: 50].
    #[arg(long, env = "ORELAY_CONTROL_RATE")]
    pub control_rate: Option<u32>,
    /// Control messages per participant back to back [default: 100].
    #[arg(long, env = "ORELAY_CONTROL_BURST")]
    pub control_burst: Option<u32>,
    /// Not-yet-joined connections per source address before its oldest is closed [default: 256].
    #[arg(long, env = "ORELAY_MAX_UNJOINED_PER_SOURCE")]
    pub max_unjoined_per_source: Option<usize>,
    /// Milliseconds for handshake and join while unjoined connections pass half their cap [default: 2000].
    #[arg(long, env = "ORELAY_PRESSURE_JOIN_TIMEOUT_MS")]
    pub pressure_join_timeout_ms: Option<u64>,
    /// Joins admitted per second; more are answered Overloaded with a retry time [default: 5000].
    #[arg(long, env = "ORELAY_MAX_JOIN_RATE")]
    pub max_join_rate: Option<u32>,
    /// TCP address for /metrics, /healthz and /readyz, or "off" [default: 127.0.0.1:9464].
    #[arg(long, env = "ORELAY_METRICS_ADDR", value_name = "ADDR|off")]
    pub metrics_addr: Option<MetricsAddr>,
    /// How joins are authenticated: token (signed join tokens) or open (development only) [default: token].
    #[arg(long, env = "ORELAY_ADMISSION_MODE")]
    pub admission_mode: Option<AdmissionMode>,
    /// A public key accepted for join tokens, as KID=PUBLIC_KEY (base64url, from `relay keygen`);
    /// repeat for rotation. Adds to the file's keys.
    #[arg(long = "token-key", env = "ORELAY_TOKEN_KEYS", value_delimiter = ',')]
    pub token_keys: Vec<TokenKey>,
    /// This relay's region; tokens whose regions exclude it are refused [default: none].
    #[arg(long, env = "ORELAY_REGION")]
    pub region: Option<String>,
    /// Open mode only: the secret that creates a meeting and makes its bearer host
    /// (at least 16 characters). Prefer the environment variable.
    #[arg(long, env = "ORELAY_HOST_SECRET", hide_env_values = true)]
    pub host_secret: Option<String>,
    /// Open mode only: joiners without the host secret wait for a host to admit them.
    #[arg(long)]
    pub waiting_room: bool,
    /// Join attempts per minute from one source address (IPv6: per /64) [default: 600].
    /// Raise it for a load generator whose clients share one address.
    #[arg(long, env = "ORELAY_ATTEMPTS_PER_SOURCE_PER_MINUTE")]
    pub attempts_per_source_per_minute: Option<u32>,
    /// Join attempts per minute on one meeting ID [default: 3000].
    #[arg(long, env = "ORELAY_ATTEMPTS_PER_MEETING_PER_MINUTE")]
    pub attempts_per_meeting_per_minute: Option<u32>,
}

impl Config {
    /// Parses a TOML document; errors name the offending field.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file; ranges are checked later, once flags are applied.
    fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Defaults, then the file named by `--config`, then the flags.
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Config> {
        let mut c = match &cli.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => { $(if let Some(v) = &cli.$field { c.$field = v.clone().into(); })* };
        }
        overlay!(
            listen,
            cert,
            key,
            max_connections,
            max_unjoined,
            join_timeout_ms,
            max_participants,
            max_meetings,
            queue_bytes,
            max_group_delay_ms,
            control_backlog,
            udp_buffer_bytes,
            shutdown_grace_ms,
            idle_timeout_ms,
            publisher_bytes,
            group_idle_timeout_ms,
            control_rate,
            control_burst,
            max_unjoined_per_source,
            pressure_join_timeout_ms,
            max_join_rate
        );
        if let Some(MetricsAddr(addr)) = cli.metrics_addr {
            c.metrics_addr = addr;
        }
        let a = &mut c.admission;
        if let Some(mode) = cli.admission_mode {
            a.mode = mode;
        }
        a.token_keys.extend(cli.token_keys.iter().cloned());
        if let Some(region) = &cli.region {
            a.region.clone_from(region);
        }
        if let Some(secret) = &cli.host_secret {
            a.host_secret.clone_from(secret);
        }
        a.waiting_room |= cli.waiting_room;
        if let Some(n) = cli.attempts_per_source_per_minute {
            a.attempts_per_source_per_minute = n;
        }
        if let Some(n) = cli.attempts_per_meeting_per_minute {
            a.attempts_per_meeting_per_minute = n;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        let at_least = |field: &str, value: u64, min: u64| -> anyhow::Result<()> {
            if value < min {
                bail!("{field} = {value} is too small (minimum {min})");
            }
            Ok(())
        };
        at_least("max_connections", self.max_connections as u64, 1)?;
        at_least("max_unjoined", self.max_unjoined as u64, 1)?;
        at_least("join_timeout_ms", self.join_timeout_ms, 100)?;
        at_least("max_participants", self.max_participants as u64, 2)?;
        at_least("max_meetings", self.max_meetings as u64, 1)?;
        at_least("queue_bytes", self.queue_bytes as u64, 64 * 1024)?;
        at_least("max_group_delay_ms", self.max_group_delay_ms, 10)?;
        at_least("control_backlog", self.control_backlog as u64, 16)?;
        at_least("idle_timeout_ms", self.idle_timeout_ms, 1_000)?;
        // A publisher must be able to hold one full read chunk for a subscriber.
        at_least("publisher_bytes", self.publisher_bytes as u64, 128 * 1024)?;
        at_least("group_idle_timeout_ms", self.group_idle_timeout_ms, 100)?;
        at_least("control_rate", u64::from(self.control_rate), 1)?;
        at_least("control_burst", u64::from(self.control_burst), 1)?;
        at_least(
            "max_unjoined_per_source",
            self.max_unjoined_per_source as u64,
            1,
        )?;
        at_least(
            "pressure_join_timeout_ms",
            self.pressure_join_timeout_ms,
            100,
        )?;
        at_least("max_join_rate", u64::from(self.max_join_rate), 1)?;
        if self.max_unjoined > self.max_connections {
            bail!(
                "max_unjoined = {} exceeds max_connections = {}",
                self.max_unjoined,
                self.max_connections
            );
        }
        if self
            .metrics_addr
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            // TCP and UDP could share it, but it is almost surely a typo.
            bail!("metrics_addr = {} is the same as listen", self.listen);
        }
        if self.cert.is_some() != self.key.is_some() {
            bail!("cert and key must be given together");
        }
        self.admission.validate()
    }

    /// The per-subscriber queue limits these settings imply.
    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_bytes: self.queue_bytes,
            max_group_delay: Duration::from_millis(self.max_group_delay_ms),
            ..QueueLimits::default()
        }
    }

    /// The per-publisher fan-out limits.
    pub fn fanout_limits(&self) -> FanoutLimits {
        FanoutLimits {
            max_publisher_bytes: self.publisher_bytes,
            group_idle_timeout: Duration::from_millis(self.group_idle_timeout_ms),
        }
    }

    /// The per-participant control-message rate limit.
    pub fn control_limit(&self) -> RateLimit {
        RateLimit {
            per_second: self.control_rate,
            burst: self.control_burst,
        }
    }

    /// The per-meeting limits these settings imply.
    pub fn meeting_limits(&self) -> MeetingLimits {
        MeetingLimits {
            max_participants: self.max_participants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid `[admission]` table (open mode) to append to test documents.
    const OPEN: &str = "\n[admission]\nmode = \"open\"\nhost_secret = \"0123456789abcdef\"\n";

    fn from_toml(text: &str) -> anyhow::Result<Config> {
        Config::from_toml(&format!("{text}{OPEN}"))
    }

    #[test]
    fn unknown_field_is_named() {
        let err = from_toml("queue_byte = 5").unwrap_err().to_string();
        assert!(err.contains("queue_byte"), "{err}");
    }

    #[test]
    fn out_of_range_field_is_named() {
        let err = from_toml("queue_bytes = 5").unwrap_err().to_string();
        assert!(err.contains("queue_bytes"), "{err}");
        let err = from_toml("listen = \"nowhere\"").unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn metrics_listener_can_be_moved_or_switched_off() {
        assert_eq!(Config::default().metrics_addr, Some(DEFAULT_METRICS_ADDR));
        let c = from_toml("metrics_addr = \"off\"").unwrap();
        assert_eq!(c.metrics_addr, None);
        let c = from_toml("metrics_addr = \"0.0.0.0:9100\"").unwrap();
        assert_eq!(c.metrics_addr, Some(SocketAddr::from(([0, 0, 0, 0], 9100))));
        let err = from_toml("metrics_addr = \"nine\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics_addr"), "{err}");
        let c = Config::from_cli(&Cli::parse_from([
            "relay",
            "--metrics-addr",
            "off",
            "--admission-mode",
            "open",
            "--host-secret",
            "0123456789abcdef",
        ]))
        .unwrap();
        assert_eq!(c.metrics_addr, None);
        let err = from_toml("listen = \"127.0.0.1:9464\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics_addr"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("orelay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            format!("queue_bytes = 200000\nmax_connections = 50\nmax_unjoined = 20\n{OPEN}"),
        )
        .unwrap();
        let cli = Cli::parse_from([
            "relay",
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "70",
        ]);
        let c = Config::from_cli(&cli).unwrap();
        assert_eq!(c.queue_bytes, 200_000);
        assert_eq!(c.max_connections, 70);
        assert_eq!(c.max_unjoined, 20);
        // The combination is checked after the flags are applied.
        let cli = Cli::parse_from([
            "relay",
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "10",
        ]);
        let err = Config::from_cli(&cli).unwrap_err().to_string();
        assert!(err.contains("max_unjoined"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn admission_needs_keys_or_an_explicit_open_mode_with_a_host_secret() {
        let err = Config::from_toml("").unwrap_err().to_string();
        assert!(err.contains("admission.token_keys"), "{err}");
        let err = Config::from_toml("[admission]\nmode = \"open\"\nhost_secret = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("admission.host_secret"), "{err}");
        let err = Config::from_toml(
            "[admission]\n[[admission.token_keys]]\nkid = \"k\"\npublic_key = \"nope\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("admission.token_keys"), "{err}");
        let err = Config::from_toml("[admission]\nmode = \"closed\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode"), "{err}");
        let key = crate::core::token::SigningKey::generate(Some("k1")).unwrap();
        let c = Config::from_cli(&Cli::parse_from([
            "relay",
            "--token-key",
            &format!("k1={}", key.public_key()),
            "--region",
            "eu-west",
        ]))
        .unwrap();
        assert_eq!(c.admission.mode, AdmissionMode::Token);
        assert_eq!(c.admission.token_keys.len(), 1);
        assert_eq!(c.admission.region, "eu-west");
    }
}

//! The `[admission]` section: how joins are authenticated (signed tokens, or open mode
//! for local development), this relay's region, and the limits on join attempts.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::core::guard::GuardLimits;
use crate::core::token::TokenVerifier;

/// How joins are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    /// Signed join tokens (JWT, EdDSA) from the operator's meeting service: production.
    #[default]
    Token,
    /// Passcode only, for local development: a meeting is created only by a join that
    /// carries `host_secret`; logs a warning at start-up.
    Open,
}

/// One public key the relay accepts tokens from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKey {
    /// The key ID tokens name in their `kid` header.
    pub kid: String,
    /// The Ed25519 public key, base64url without padding (as `relay keygen` prints it).
    pub public_key: String,
}

impl std::str::FromStr for TokenKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kid, public_key) = s
            .split_once('=')
            .ok_or_else(|| format!("token key must be KID=PUBLIC_KEY, not {s:?}"))?;
        Ok(TokenKey {
            kid: kid.trim().to_owned(),
            public_key: public_key.trim().to_owned(),
        })
    }
}

/// Admission settings (`[admission]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// `token` (default) or `open`.
    pub mode: AdmissionMode,
    /// Public keys accepted for join tokens, by `kid` (several at once, for rotation).
    pub token_keys: Vec<TokenKey>,
    /// This relay's region; tokens whose `regions` exclude it are refused.
    pub region: String,
    /// Open mode only: the secret a join must carry to create a meeting (and be its host).
    pub host_secret: String,
    /// Open mode only: whether joiners without the host secret wait for a host.
    pub waiting_room: bool,
    /// Join attempts per minute from one source (IPv4 address or IPv6 /64).
    pub attempts_per_source_per_minute: u32,
    /// Join attempts per minute on one meeting ID.
    pub attempts_per_meeting_per_minute: u32,
    /// Failed attempts a source may make before its back-off starts.
    pub free_failures: u32,
    /// First back-off after the free failures, in milliseconds; doubles per failure.
    pub backoff_base_ms: u64,
    /// Longest back-off, in milliseconds.
    pub backoff_max_ms: u64,
    /// Failed attempts on one meeting within `at_risk_window_secs` that flag it at risk.
    pub at_risk_failures: u32,
    /// Window for counting failed attempts per meeting, in seconds.
    pub at_risk_window_secs: u64,
    /// Most sources, and most meeting IDs, whose attempts are tracked at once.
    pub max_tracked: usize,
    /// Bytes per second of key messages one participant may send (times recipients).
    pub key_message_bytes_per_second: u32,
    /// Burst of key-message bytes (a leader rekeying a large meeting needs room).
    pub key_message_burst_bytes: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        let guard = GuardLimits::default();
        Self {
            mode: AdmissionMode::Token,
            token_keys: Vec::new(),
            region: String::new(),
            host_secret: String::new(),
            waiting_room: false,
            attempts_per_source_per_minute: guard.per_source_per_minute,
            attempts_per_meeting_per_minute: guard.per_meeting_per_minute,
            free_failures: guard.free_failures,
            backoff_base_ms: guard.backoff_base.as_millis() as u64,
            backoff_max_ms: guard.backoff_max.as_millis() as u64,
            at_risk_failures: guard.at_risk_failures,
            at_risk_window_secs: guard.at_risk_window.as_secs(),
            max_tracked: guard.max_tracked,
            key_message_bytes_per_second: 512 * 1024,
            key_message_burst_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The shortest open-mode host secret accepted.
pub const MIN_HOST_SECRET: usize = 16;

impl AdmissionConfig {
    /// Checks the section; errors name the field (`admission.<field>`).
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.mode {
            AdmissionMode::Token => {
                if self.token_keys.is_empty() {
                    bail!(
                        "admission.token_keys is empty: run `relay keygen` and add its public key \
                         (or pass --token-key KID=PUBLIC_KEY); for local development only, set \
                         admission.mode = \"open\" with admission.host_secret"
                    );
                }
                self.verifier()?;
            }
            AdmissionMode::Open => {
                if self.host_secret.len() < MIN_HOST_SECRET {
                    bail!(
                        "admission.host_secret must be at least {MIN_HOST_SECRET} characters in open mode"
                    );
                }
            }
        }
        for (field, value) in [
            (
                "attempts_per_source_per_minute",
                u64::from(self.attempts_per_source_per_minute),
            ),
            (
                "attempts_per_meeting_per_minute",
                u64::from(self.attempts_per_meeting_per_minute),
            ),
            ("backoff_base_ms", self.backoff_base_ms),
            ("at_risk_failures", u64::from(self.at_risk_failures)),
            ("at_risk_window_secs", self.at_risk_window_secs),
            ("max_tracked", self.max_tracked as u64),
            (
                "key_message_bytes_per_second",
                u64::from(self.key_message_bytes_per_second),
            ),
        ] {
            if value == 0 {
                bail!("admission.{field} must be at least 1");
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            bail!("admission.backoff_max_ms is below admission.backoff_base_ms");
        }
        if (self.key_message_burst_bytes as usize) < 2 * orelay_proto::limits::MAX_KEY_MESSAGE_LEN {
            bail!(
                "admission.key_message_burst_bytes must be at least {} (two largest key messages)",
                2 * orelay_proto::limits::MAX_KEY_MESSAGE_LEN
            );
        }
        Ok(())
    }

    /// The token verifier for these keys and this region.
    pub fn verifier(&self) -> anyhow::Result<TokenVerifier> {
        TokenVerifier::new(
            self.token_keys
                .iter()
                .map(|k| (k.kid.as_str(), k.public_key.as_str())),
            &self.region,
        )
        .map_err(|e| anyhow::anyhow!("admission.token_keys: {e}"))
    }

    /// The join-attempt limits.
    pub fn guard_limits(&self) -> GuardLimits {
        GuardLimits {
            per_source_per_minute: self.attempts_per_source_per_minute,
            per_meeting_per_minute: self.attempts_per_meeting_per_minute,
            free_failures: self.free_failures,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            at_risk_failures: self.at_risk_failures,
            at_risk_window: Duration::from_secs(self.at_risk_window_secs),
            max_tracked: self.max_tracked,
        }
    }
}

//! `relay keygen` and `relay token create`: make a token-signing key pair and mint
//! join tokens, for tests, demos and small deployments (a production meeting service
//! mints tokens with its own JWT library and keeps the private key to itself).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use orelay_proto::{Credential, Role};

use crate::config::{AdmissionMode, Config, TokenKey};
use crate::core::token::{parse_role, unix_now, Claims, SigningKey};

/// Tools the `relay` binary offers besides serving.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Write a new Ed25519 token-signing key pair and print the relay config line.
    Keygen(KeygenArgs),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenTool),
}

/// `relay keygen` arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (created with mode 0600; the public key goes to FILE.pub).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Key ID put in tokens' `kid` header [default: a digest of the public key].
    #[arg(long)]
    pub kid: Option<String>,
}

/// `relay token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenTool {
    /// Mint a join token and print it on stdout.
    Create(TokenArgs),
}

/// `relay token create` arguments.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Private key file written by `relay keygen`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Meeting ID the token admits to (at least 11 characters of [0-9A-Za-z_-]).
    #[arg(long)]
    pub meeting: String,
    /// Participant identity at your meeting service (opaque to the relay, never logged).
    #[arg(long)]
    pub identity: String,
    /// host, cohost, participant or viewer.
    #[arg(long, default_value = "participant")]
    pub role: String,
    /// Seconds the token stays valid.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// Regions whose relays may serve it (comma-separated) [default: any].
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Track kinds it may publish (comma-separated: audio,video,screen).
    #[arg(long, value_delimiter = ',', default_value = "audio,video,screen")]
    pub publish: Vec<String>,
    /// The join must also carry the meeting passcode.
    #[arg(long)]
    pub passcode_required: bool,
    /// A non-host joiner waits until a host admits it.
    #[arg(long)]
    pub waiting_room: bool,
}

/// Runs a tool, printing its result on stdout.
pub fn run(tool: &Tool) -> anyhow::Result<()> {
    match tool {
        Tool::Keygen(args) => keygen(args),
        Tool::Token(TokenTool::Create(args)) => {
            println!("{}", create_token(args)?);
            Ok(())
        }
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = SigningKey::generate(args.kid.as_deref()).context("generating a key pair")?;
    write_private(&args.out, &key.to_file_text())?;
    let public = args.out.with_extension("pub");
    std::fs::write(&public, format!("{}={}\n", key.kid(), key.public_key()))
        .with_context(|| format!("writing {}", public.display()))?;
    println!(
        "private key: {} (keep it with your meeting service)",
        args.out.display()
    );
    println!("public key:  {}", public.display());
    println!(
        "relay flag:  --token-key {}={}",
        key.kid(),
        key.public_key()
    );
    println!("relay.toml:");
    println!("  [[admission.token_keys]]");
    println!("  kid = \"{}\"", key.kid());
    println!("  public_key = \"{}\"", key.public_key());
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Mints the token `args` describe.
pub fn create_token(args: &TokenArgs) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = SigningKey::from_file_text(&text)
        .with_context(|| format!("--key {}", args.key.display()))?;
    crate::core::MeetingId::parse(&args.meeting)
        .map_err(|_| anyhow::anyhow!("--meeting must be 11-64 characters of [0-9A-Za-z_-]"))?;
    let Some(role) = parse_role(&args.role) else {
        bail!(
            "--role must be host, cohost, participant or viewer, not {:?}",
            args.role
        );
    };
    if let Some(bad) = args
        .publish
        .iter()
        .find(|k| !matches!(k.as_str(), "audio" | "video" | "screen"))
    {
        bail!("--publish takes audio, video and screen, not {bad:?}");
    }
    let mut claims = Claims::new(
        &args.meeting,
        &args.identity,
        role,
        unix_now(),
        args.ttl_secs,
    );
    claims.regions.clone_from(&args.regions);
    claims.publish.clone_from(&args.publish);
    claims.passcode_required = args.passcode_required;
    claims.waiting_room = args.waiting_room;
    Ok(key.mint(&claims)?)
}

/// A token issuer in the same process as its relay: loadgen's in-process relay, the
/// benches and the demo. It configures the relay to accept its key and mints tokens.
pub struct LocalIssuer {
    key: SigningKey,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("kid", &self.key.kid())
            .finish()
    }
}

impl LocalIssuer {
    /// A fresh key.
    pub fn generate() -> anyhow::Result<LocalIssuer> {
        Ok(LocalIssuer {
            key: SigningKey::generate(Some("local")).context("generating a signing key")?,
        })
    }

    /// The private key `relay keygen` wrote.
    pub fn from_key_file(path: &std::path::Path) -> anyhow::Result<LocalIssuer> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let key = SigningKey::from_file_text(&text).with_context(|| {
            format!("{} is not a key written by `relay keygen`", path.display())
        })?;
        Ok(LocalIssuer { key })
    }

    /// Makes `config` accept this issuer's tokens, with per-source limits raised for
    /// clients that all share one loopback address.
    pub fn configure(&self, config: &mut Config) {
        let a = &mut config.admission;
        a.mode = AdmissionMode::Token;
        a.token_keys = vec![TokenKey {
            kid: self.key.kid().to_owned(),
            public_key: self.key.public_key().to_owned(),
        }];
        a.attempts_per_source_per_minute = a.attempts_per_source_per_minute.max(1_000_000);
        a.attempts_per_meeting_per_minute = a.attempts_per_meeting_per_minute.max(1_000_000);
    }

    /// A token for `identity` in `meeting` with `role`, valid for `ttl_secs`; with
    /// `passcode`, the join must carry it.
    pub fn token(
        &self,
        meeting: &str,
        identity: &str,
        role: Role,
        passcode: Option<&str>,
        ttl_secs: u64,
    ) -> anyhow::Result<String> {
        let mut claims = Claims::new(meeting, identity, role, unix_now(), ttl_secs);
        if let Some(p) = passcode {
            claims.require_passcode(p);
        }
        Ok(self.key.mint(&claims)?)
    }

    /// A host credential for `meeting` (valid for a day), or none if minting failed.
    pub fn host_credential(&self, meeting: &str) -> Credential {
        self.token(meeting, "host", Role::Host, None, 86_400)
            .map_or(Credential::None, Credential::Token)
    }
}

//! Signed join tokens: JWTs signed with EdDSA (Ed25519) by the operator's meeting
//! service and verified here against public keys from the relay's config, chosen by
//! the token's `kid` so that keys can rotate (several are accepted at once).
//!
//! Verification is sans-IO: the caller passes the wall-clock time (`exp`/`nbf` are
//! checked here against it, not against the library's own clock), so tests can
//! expire a token without waiting. Minting and key generation live here too, for
//! `relay token create`, tests and loadgen; a production meeting service mints its
//! own with any JWT library.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use orelay_proto::{RejectReason, Role, TrackKind};
use ring::signature::KeyPair;
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The participant's identity at the meeting service (opaque to the relay, never logged).
    pub sub: String,
    /// The token's unique ID; a removed participant's token ID cannot rejoin.
    pub jti: String,
    /// The meeting this token admits to.
    pub meeting: String,
    /// `host`, `cohost`, `participant` or `viewer`.
    pub role: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: u64,
    /// Regions whose relays may serve this join; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Track kinds it may publish: any of `audio`, `video`, `screen`.
    #[serde(default = "all_kinds")]
    pub publish: Vec<String>,
    /// Whether the join must also carry the meeting's passcode.
    #[serde(default)]
    pub passcode_required: bool,
    /// With `passcode_required`: [`passcode_hash`] of the meeting ID and passcode
    /// (hex), which the relay compares in constant time with what the joiner typed.
    /// The relay never learns the passcode, and keeps nothing per meeting.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub passcode_hash: String,
    /// Whether a non-host joiner waits in the waiting room until a host admits it.
    #[serde(default)]
    pub waiting_room: bool,
}

fn all_kinds() -> Vec<String> {
    ["audio", "video", "screen"].map(String::from).to_vec()
}

/// What a verified token grants, in the relay's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The participant's identity (opaque).
    pub identity: String,
    /// The token's ID.
    pub token_id: String,
    /// Its role.
    pub role: Role,
    /// The track kinds it may publish (always empty for viewers).
    pub publish: KindSet,
    /// Whether the meeting passcode must match too.
    pub passcode_required: bool,
    /// Whether it waits for a host (never for hosts and co-hosts).
    pub waiting_room: bool,
}

/// A set of track kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u8);

impl KindSet {
    /// Every kind.
    pub const ALL: KindSet = KindSet(0b111);

    fn bit(kind: TrackKind) -> u8 {
        match kind {
            TrackKind::AUDIO => 1,
            TrackKind::VIDEO => 2,
            TrackKind::SCREEN => 4,
            _ => 0,
        }
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: TrackKind) -> bool {
        let bit = Self::bit(kind);
        bit != 0 && self.0 & bit != 0
    }

    fn parse(names: &[String]) -> Option<KindSet> {
        let mut set = 0;
        for name in names {
            set |= match name.as_str() {
                "audio" => 1,
                "video" => 2,
                "screen" => 4,
                _ => return None,
            };
        }
        Some(KindSet(set))
    }
}

/// Parses a role name as tokens spell it.
pub fn parse_role(name: &str) -> Option<Role> {
    Some(match name {
        "host" => Role::Host,
        "cohost" => Role::CoHost,
        "participant" => Role::Participant,
        "viewer" => Role::Viewer,
        _ => return None,
    })
}

/// Why a public key from the config is unusable.
#[derive(Debug, thiserror::Error)]
#[error("public key for kid {kid:?} is not a base64url Ed25519 key of 32 bytes")]
pub struct BadKey {
    /// The key's ID.
    pub kid: String,
}

/// The public keys a relay accepts tokens from, by `kid`, and its own region.
#[derive(Clone, Default)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    region: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("region", &self.region)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier for `(kid, base64url public key)` pairs, serving `region`.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        region: &str,
    ) -> Result<Self, BadKey> {
        let mut map = HashMap::new();
        for (kid, public) in keys {
            let bad = || BadKey {
                kid: kid.to_owned(),
            };
            let raw = URL_SAFE_NO_PAD.decode(public.trim()).map_err(|_| bad())?;
            if raw.len() != 32 {
                return Err(bad());
            }
            let key = DecodingKey::from_ed_components(public.trim()).map_err(|_| bad())?;
            map.insert(kid.to_owned(), key);
        }
        Ok(Self {
            keys: map,
            region: region.to_owned(),
        })
    }

    /// Number of keys accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token` for a join to `meeting_id` with `passcode` at `now_unix`
    /// (seconds). Signature, key, meeting and claims failures are `TOKEN_INVALID`; a
    /// token outside its validity window is `TOKEN_EXPIRED`; one whose regions exclude
    /// this relay's is `REGION`; a required passcode that does not match is
    /// `BAD_PASSCODE`. The grant's passcode check is then done.
    pub fn verify(
        &self,
        token: &str,
        meeting_id: &str,
        passcode: &str,
        now_unix: u64,
    ) -> Result<Grant, RejectReason> {
        let invalid = RejectReason::TOKEN_INVALID;
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(invalid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Checked below against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|_| invalid)?
            .claims;
        if claims.meeting != meeting_id || claims.jti.is_empty() || claims.sub.is_empty() {
            return Err(invalid);
        }
        if now_unix > claims.exp.saturating_add(LEEWAY_SECS)
            || now_unix.saturating_add(LEEWAY_SECS) < claims.nbf
        {
            return Err(RejectReason::TOKEN_EXPIRED);
        }
        if !claims.regions.is_empty() && !claims.regions.contains(&self.region) {
            return Err(RejectReason::REGION);
        }
        let role = parse_role(&claims.role).ok_or(invalid)?;
        if claims.passcode_required {
            let expected = decode_hex32(&claims.passcode_hash).ok_or(invalid)?;
            if !constant_time_eq(&passcode_hash(meeting_id, passcode), &expected) {
                return Err(RejectReason::BAD_PASSCODE);
            }
        }
        let publish = match role {
            Role::Viewer => KindSet::default(),
            _ => KindSet::parse(&claims.publish).ok_or(invalid)?,
        };
        Ok(Grant {
            identity: claims.sub,
            token_id: claims.jti,
            role,
            publish,
            // Checked above, against the token's hash.
            passcode_required: false,
            waiting_room: claims.waiting_room && !role.can_moderate(),
        })
    }
}

/// `SHA-256("orelay-passcode-v1" | meeting_id | 0x00 | passcode)`: the salted hash a
/// meeting service puts in tokens that require the passcode (salted by the meeting ID,
/// so one table does not serve every meeting).
pub fn passcode_hash(meeting_id: &str, passcode: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"orelay-passcode-v1");
    ctx.update(meeting_id.as_bytes());
    ctx.update(&[0]);
    ctx.update(passcode.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// An Ed25519 signing key for minting tokens.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// Why a signing key or token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The private key file is not a base64 PKCS#8 Ed25519 key.
    #[error("not a base64 PKCS#8 Ed25519 private key")]
    BadKey,
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
    /// Encoding failed.
    #[error("encoding the token: {0}")]
    Encode(String),
}

impl SigningKey {
    /// A fresh key pair; `kid` defaults to a digest of the public key.
    pub fn generate(kid: Option<&str>) -> Result<SigningKey, MintError> {
        let rng = ring::rand::SystemRandom::new();
        let doc =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| MintError::Random)?;
        SigningKey::from_pkcs8(kid, doc.as_ref())
    }

    /// A key from PKCS#8 DER bytes.
    pub fn from_pkcs8(kid: Option<&str>, pkcs8: &[u8]) -> Result<SigningKey, MintError> {
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| MintError::BadKey)?;
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let kid = kid.map(str::to_owned).unwrap_or_else(|| {
            let d = ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref());
            d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
        });
        Ok(SigningKey {
            kid,
            pkcs8: pkcs8.to_vec(),
            public,
        })
    }

    /// Parses the private key file format `relay keygen` writes: `kid` on the first
    /// line, base64 PKCS#8 on the second.
    pub fn from_file_text(text: &str) -> Result<SigningKey, MintError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let (Some(kid), Some(b64)) = (lines.next(), lines.next()) else {
            return Err(MintError::BadKey);
        };
        let der = STANDARD.decode(b64).map_err(|_| MintError::BadKey)?;
        SigningKey::from_pkcs8(Some(kid), &der)
    }

    /// The private key file's text (see [`SigningKey::from_file_text`]).
    pub fn to_file_text(&self) -> String {
        format!("{}\n{}\n", self.kid, STANDARD.encode(&self.pkcs8))
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, base64url (as the relay's config takes it).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// Signs `claims` into a token.
    pub fn mint(&self, claims: &Claims) -> Result<String, MintError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| MintError::Encode(e.to_string()))
    }
}

impl Claims {
    /// Claims for `identity` in `meeting` with `role`, valid from `now_unix` for
    /// `ttl_secs`, publishing anything, with no passcode and no waiting room; the
    /// token ID is random.
    pub fn new(meeting: &str, identity: &str, role: Role, now_unix: u64, ttl_secs: u64) -> Claims {
        let mut id = [0u8; 12];
        // An all-zero ID is still unique enough for tests if the generator fails.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
        Claims {
            sub: identity.to_owned(),
            jti: URL_SAFE_NO_PAD.encode(id),
            meeting: meeting.to_owned(),
            role: role.as_str().to_owned(),
            exp: now_unix + ttl_secs,
            nbf: now_unix.saturating_sub(LEEWAY_SECS),
            regions: Vec::new(),
            publish: all_kinds(),
            passcode_required: false,
            passcode_hash: String::new(),
            waiting_room: false,
        }
    }

    /// Requires `passcode` with this token (stores only its salted hash).
    pub fn require_passcode(&mut self, passcode: &str) {
        self.passcode_required = true;
        self.passcode_hash = passcode_hash(&self.meeting, passcode)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    }
}

/// Seconds since the Unix epoch, from the system clock (0 if it is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const MEETING: &str = "12345678901";

    fn setup() -> (SigningKey, TokenVerifier) {
        let key = SigningKey::generate(Some("k1")).unwrap();
        let verifier = TokenVerifier::new([("k1", key.public_key())], "eu-west").unwrap();
        (key, verifier)
    }

    #[test]
    fn a_minted_token_verifies_and_grants_its_claims() {
        let (key, verifier) = setup();
        let mut claims = Claims::new(MEETING, "alice", Role::Participant, NOW, 600);
        claims.publish = vec!["audio".into()];
        claims.waiting_room = true;
        let grant = verifier
            .verify(&key.mint(&claims).unwrap(), MEETING, "", NOW)
            .unwrap();
        assert_eq!(grant.identity, "alice");
        assert_eq!(grant.role, Role::Participant);
        assert!(grant.publish.contains(TrackKind::AUDIO));
        assert!(!grant.publish.contains(TrackKind::VIDEO));
        assert!(grant.waiting_room);
    }

    #[test]
    fn expiry_meeting_region_key_and_tampering_are_each_refused() {
        let (key, verifier) = setup();
        let claims = Claims::new(MEETING, "bob", Role::Host, NOW, 600);
        let token = key.mint(&claims).unwrap();
        assert_eq!(
            verifier.verify(&token, MEETING, "", NOW + 600 + LEEWAY_SECS + 1),
            Err(RejectReason::TOKEN_EXPIRED)
        );
        assert_eq!(
            verifier.verify(&token, MEETING, "", NOW - 2 * LEEWAY_SECS - 1),
            Err(RejectReason::TOKEN_EXPIRED)
        );
        assert_eq!(
            verifier.verify(&token, "99999999999", "", NOW),
            Err(RejectReason::TOKEN_INVALID)
        );
        let mut elsewhere = claims.clone();
        elsewhere.regions = vec!["us-east".into()];
        assert_eq!(
            verifier.verify(&key.mint(&elsewhere).unwrap(), MEETING, "", NOW),
            Err(RejectReason::REGION)
        );
        let other = SigningKey::generate(Some("k1")).unwrap();
        assert_eq!(
            verifier.verify(&other.mint(&claims).unwrap(), MEETING, "", NOW),
            Err(RejectReason::TOKEN_INVALID)
        );
        let unknown_kid = SigningKey::generate(Some("k2")).unwrap();
        assert_eq!(
            verifier.verify(&unknown_kid.mint(&claims).unwrap(), MEETING, "", NOW),
            Err(RejectReason::TOKEN_INVALID)
        );
        // Flip one character of the payload: the signature no longer matches.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
        parts[1].pop();
        parts[1].push(flipped);
        assert_eq!(
            verifier.verify(&parts.join("."), MEETING, "", NOW),
            Err(RejectReason::TOKEN_INVALID)
        );
        assert_eq!(
            verifier.verify("not a token", MEETING, "", NOW),
            Err(RejectReason::TOKEN_INVALID)
        );
    }

    #[test]
    fn a_required_passcode_is_checked_against_the_tokens_salted_hash() {
        let (key, verifier) = setup();
        let mut claims = Claims::new(MEETING, "dave", Role::Participant, NOW, 600);
        claims.require_passcode("hunter2");
        assert!(!claims.passcode_hash.contains("hunter2"));
        let token = key.mint(&claims).unwrap();
        assert!(verifier.verify(&token, MEETING, "hunter2", NOW).is_ok());
        assert_eq!(
            verifier.verify(&token, MEETING, "hunter3", NOW),
            Err(RejectReason::BAD_PASSCODE)
        );
        // The hash is salted by the meeting: the same passcode elsewhere differs.
        assert_ne!(
            passcode_hash(MEETING, "x"),
            passcode_hash("12345678902", "x")
        );
    }

    #[test]
    fn keys_rotate_by_kid_and_key_files_round_trip() {
        let old = SigningKey::generate(Some("old")).unwrap();
        let new =
            SigningKey::from_file_text(&SigningKey::generate(Some("new")).unwrap().to_file_text())
                .unwrap();
        let verifier =
            TokenVerifier::new([("old", old.public_key()), ("new", new.public_key())], "").unwrap();
        for key in [&old, &new] {
            let claims = Claims::new(MEETING, "carol", Role::Viewer, NOW, 60);
            let grant = verifier
                .verify(&key.mint(&claims).unwrap(), MEETING, "", NOW)
                .unwrap();
            assert_eq!(grant.publish, KindSet::default(), "viewers never publish");
        }
        assert!(TokenVerifier::new([("bad", "abc")], "").is_err());
    }
}

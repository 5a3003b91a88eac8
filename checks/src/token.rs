//! The relay's join-token verifier (`TokenVerifier::verify`) on hostile tokens.
//!
//! `data[0]` picks the mode: even, the rest is the token itself (any string, so the
//! JWT header, base64 and JSON parsers see garbage); odd, the rest is a claims payload
//! that this harness signs with the verifier's own key, so the claims checks after the
//! signature see arbitrary JSON too. Properties: no panic; nothing verifies but what
//! this key signed; a grant that verifies is coherent (an identity and a token ID, nothing to
//! publish for a viewer, never the waiting room for a moderator).

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use orelay_proto::Role;
use orelay_relay::core::token::Claims;
use orelay_relay::core::{KindSet, TokenVerifier};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The meeting, passcode and clock every token is checked against.
const MEETING: &str = "12345678901";
const PASSCODE: &str = "pw";
const NOW: u64 = 1_700_000_000;
const KID: &str = "fuzz";

struct Keys {
    pair: Ed25519KeyPair,
    verifier: TokenVerifier,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        // One key per process: the fuzzer cannot sign with it, the harness can.
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default();
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap_or_else(|e| panic!("key: {e}"));
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let verifier = TokenVerifier::new([(KID, public.as_str())], "eu")
            .unwrap_or_else(|e| panic!("verifier: {e}"));
        Keys { pair, verifier }
    })
}

/// A JWT over `payload` (any bytes), signed with the verifier's key.
pub fn signed(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"fuzz"}"#);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let sig = keys().pair.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// See the module docs.
pub fn join_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        signed(rest)
    };
    let Ok(grant) = keys().verifier.verify(&token, MEETING, PASSCODE, NOW) else {
        return;
    };
    // Ed25519 signatures are deterministic: whatever verifies carries exactly the
    // signature this key makes over its first two parts.
    // (Compared as bytes: a lenient decoder may accept more than one spelling.)
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let (input, sig) = token.rsplit_once('.').unwrap_or_default();
    let ours = keys().pair.sign(input.as_bytes());
    let theirs = lenient.decode(sig).unwrap_or_default();
    assert_eq!(
        theirs,
        ours.as_ref(),
        "a token this key never signed verified: {token:?}"
    );
    assert!(!grant.identity.is_empty() && !grant.token_id.is_empty());
    if grant.role == Role::Viewer {
        assert_eq!(grant.publish, KindSet::default(), "a viewer may publish");
    }
    assert!(
        !(grant.role.can_moderate() && grant.waiting_room),
        "a moderator waits"
    );
}

/// Seed payloads (for odd mode bytes): genuine claims for each role, with and without
/// a passcode and the waiting room.
pub fn seed_payloads() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for role in [Role::Host, Role::CoHost, Role::Participant, Role::Viewer] {
        let mut claims = Claims::new(MEETING, "someone", role, NOW, 3600);
        out.push((format!("{}-open", role.as_str()), json(&claims)));
        claims.require_passcode(PASSCODE);
        claims.waiting_room = true;
        out.push((format!("{}-passcode-waiting", role.as_str()), json(&claims)));
    }
    out
}

fn json(claims: &Claims) -> Vec<u8> {
    serde_json::to_vec(claims).unwrap_or_default()
}

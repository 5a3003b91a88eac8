//! Keeps identifiers out of logs: a short keyed hash stands in for a meeting ID.
//!
//! The key is random per process, so the tag correlates log lines of one relay run
//! and means nothing anywhere else.

use std::sync::OnceLock;

use ring::hmac;

fn key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        // Falls back to a fixed key only if the OS has no randomness, which ring
        // treats as fatal elsewhere anyway; the tag then still hides the ID.
        hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, b"orelay-log-tag"))
    })
}

/// An 8-hex-digit tag for `id`, stable for this process.
pub fn tag(id: &[u8]) -> String {
    let mac = hmac::sign(key(), id);
    mac.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tag_is_stable_short_and_not_the_id() {
        let a = super::tag(b"12345678901");
        assert_eq!(a, super::tag(b"12345678901"));
        assert_eq!(a.len(), 8);
        assert!(!a.contains("1234567"));
        assert_ne!(a, super::tag(b"12345678902"));
    }
}

//! Test-only hooks (cargo feature `test-hooks`: off by default, enabled only by the
//! relay's own dev-dependency on itself). They let a test see and alter the media bytes
//! the relay receives, after QUIC decryption and before forwarding, to prove that the
//! relay never holds plaintext and that clients detect a relay that tampers.

use std::sync::{Arc, RwLock};

use bytes::Bytes;

/// Called with every inbound group-stream chunk and datagram; returns what the relay
/// then handles in its place.
pub type MediaHook = Arc<dyn Fn(Bytes) -> Bytes + Send + Sync>;

static MEDIA: RwLock<Option<MediaHook>> = RwLock::new(None);

/// Installs (or with `None` removes) the process-wide media hook.
pub fn set_media_hook(hook: Option<MediaHook>) {
    if let Ok(mut h) = MEDIA.write() {
        *h = hook;
    }
}

pub(crate) fn media(bytes: Bytes) -> Bytes {
    let hook = MEDIA.read().ok().and_then(|h| h.clone());
    match hook {
        Some(h) => h(bytes),
        None => bytes,
    }
}

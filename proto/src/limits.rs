//! Limits on every variable-size field. Decoders enforce them before allocating, so a
//! hostile peer can never make a decoder allocate more than these bounds.

/// Largest control message body, in bytes.
pub const MAX_CONTROL_MESSAGE: usize = 16 * 1024;
/// Shortest meeting ID, in characters: 11 digits gives 10^11 IDs, enough that
/// guessing a live meeting at a rate-limited pace is hopeless.
pub const MIN_MEETING_ID_LEN: usize = 11;
/// Longest meeting ID, in bytes (room for a random token).
pub const MAX_MEETING_ID_LEN: usize = 64;
/// Longest passcode, in bytes.
pub const MAX_PASSCODE_LEN: usize = 64;
/// Longest opaque participant info blob (for example an encrypted display name), in bytes.
pub const MAX_INFO_LEN: usize = 256;
/// Longest join credential (a signed token or the open-mode host secret), in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest public-key bundle a participant presents at join, in bytes: room for an
/// Ed25519 identity key, a hybrid (X25519 + ML-KEM-768) public key of 1,216 bytes and
/// a signature, with headroom.
pub const MAX_KEYS_LEN: usize = 2048;
/// Longest opaque end-to-end key message, in bytes: room for a hybrid HPKE ciphertext
/// (1,120 bytes) and a signed roster of a few hundred entries; larger rosters are split.
pub const MAX_KEY_MESSAGE_LEN: usize = 12 * 1024;
/// Longest `GoAway` redirect (`host:port`), in bytes.
pub const MAX_REDIRECT_LEN: usize = 256;
/// Most simulcast layers a track may have.
pub const MAX_LAYERS: u8 = 4;
/// Most tracks one participant may publish at once.
pub const MAX_TRACKS_PER_PARTICIPANT: usize = 8;
/// Most subscriptions one participant may hold at once.
pub const MAX_SUBSCRIPTIONS_PER_PARTICIPANT: usize = 256;
/// Largest group stream header, in bytes (all varints at their widest plus the type).
pub const MAX_GROUP_HEADER: usize = 48;
/// Largest object a client may put in a group stream, in bytes. Relays never read
/// object boundaries; this bounds client-side reassembly.
pub const MAX_OBJECT_SIZE: usize = 4 * 1024 * 1024;

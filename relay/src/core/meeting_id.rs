//! Meeting IDs and the rules for accepting them.

use orelay_proto::limits::{MAX_MEETING_ID_LEN, MIN_MEETING_ID_LEN};
use orelay_proto::{RejectReason, PROTOCOL_VERSION};

/// A validated meeting ID: [`MIN_MEETING_ID_LEN`] to [`MAX_MEETING_ID_LEN`] characters
/// of `[0-9A-Za-z_-]`. Never logged in clear: see [`crate::privacy`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MeetingId(String);

impl std::fmt::Debug for MeetingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Debug output ends up in logs; keep the ID out of them.
        f.write_str("MeetingId(..)")
    }
}

impl MeetingId {
    /// Validates a meeting ID from a join.
    pub fn parse(raw: &str) -> Result<MeetingId, RejectReason> {
        let ok_len = (MIN_MEETING_ID_LEN..=MAX_MEETING_ID_LEN).contains(&raw.len());
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok_len && ok_chars {
            Ok(MeetingId(raw.to_owned()))
        } else {
            Err(RejectReason::INVALID_MEETING_ID)
        }
    }

    /// The ID's bytes (for keyed hashing).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The ID (to compare with a token's claim; never for logs).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a join could not go ahead before the meeting itself was consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("join rejected: {0}")]
pub struct JoinError(pub RejectReason);

/// Checks the parts of a join that do not depend on any meeting.
pub fn check_join(version: u64, meeting_id: &str) -> Result<MeetingId, JoinError> {
    if version != PROTOCOL_VERSION {
        return Err(JoinError(RejectReason::UNSUPPORTED_VERSION));
    }
    MeetingId::parse(meeting_id).map_err(JoinError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_ids_need_eleven_safe_characters() {
        assert!(MeetingId::parse("12345678901").is_ok());
        assert!(MeetingId::parse("aZ-_0123456789").is_ok());
        assert_eq!(
            MeetingId::parse("1234567890"),
            Err(RejectReason::INVALID_MEETING_ID)
        );
        assert_eq!(
            MeetingId::parse("12345678901 "),
            Err(RejectReason::INVALID_MEETING_ID)
        );
        assert_eq!(
            MeetingId::parse(&"1".repeat(65)),
            Err(RejectReason::INVALID_MEETING_ID)
        );
    }

    #[test]
    fn wrong_version_is_rejected_first() {
        assert_eq!(
            check_join(2, "12345678901"),
            Err(JoinError(RejectReason::UNSUPPORTED_VERSION))
        );
    }
}

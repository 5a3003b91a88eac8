//! Participant info (display names…) sealed with the meeting key.

use super::{MeetingSecurity, Outbound};
use crate::envelope::{Envelope, InfoMessage};
use crate::{info, E2eeError, ParticipantId, Recipient};

impl MeetingSecurity {
    /// Sets this participant's info (display name…): sent sealed to everyone keyed now
    /// and after each rekey, and to each newcomer.
    pub fn set_info(&mut self, info: Vec<u8>) {
        self.my_info = Some(info);
        self.send_info(Recipient::All);
    }

    /// Seals `info` from this participant under the current epoch (a key-message blob).
    pub fn seal_info(&self, info: &[u8]) -> Result<Vec<u8>, E2eeError> {
        let cur = self.current.as_ref().ok_or(E2eeError::NoKey)?;
        let msg = info::seal(cur.secret(), cur.epoch(), self.me, info)?;
        Envelope::Info(msg).encode(&self.keys.identity)
    }

    /// Opens an info blob from `from` (current or previous epoch).
    pub fn open_info(&self, from: ParticipantId, blob: &[u8]) -> Result<Vec<u8>, E2eeError> {
        match Envelope::decode(blob)?.envelope {
            Envelope::Info(m) => self.open_info_message(from, &m),
            _ => Err(E2eeError::Malformed("info")),
        }
    }

    pub(super) fn open_info_message(
        &self,
        from: ParticipantId,
        m: &InfoMessage,
    ) -> Result<Vec<u8>, E2eeError> {
        let keys = self
            .current
            .iter()
            .chain(self.previous.iter().map(|(k, _)| k))
            .find(|k| k.epoch() == m.epoch)
            .ok_or(E2eeError::NoKey)?;
        info::open(keys.secret(), from, m)
    }

    pub(super) fn send_info(&mut self, to: Recipient) {
        let Some(info) = self.my_info.clone() else {
            return;
        };
        if let Ok(blob) = self.seal_info(&info) {
            self.out.push_back(Outbound { to, blob });
        }
    }
}

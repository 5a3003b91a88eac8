//! Hex test vectors: `tests/vectors/*.txt` pin every control message, every join
//! outcome and every media header to exact bytes, in both directions, and pin the
//! error each malformed byte string gives. The file format is described at the top
//! of `tests/vectors/client.txt`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use bytes::Bytes;
use orelay_proto::control::{ControlMessage, JoinOutcome};
use orelay_proto::{
    ClientMessage, ControlDecoder, Credential, DatagramHeader, DecodeError, ErrorCode, GroupHeader,
    HostAction, ObjectHeader, Recipient, RefuseReason, RejectReason, Role, RosterParticipant,
    ServerMessage, SharePolicy, TrackInfo, TrackKind,
};

const FILES: [(&str, &str); 4] = [
    ("client.txt", include_str!("vectors/client.txt")),
    ("server.txt", include_str!("vectors/server.txt")),
    ("media.txt", include_str!("vectors/media.txt")),
    ("invalid.txt", include_str!("vectors/invalid.txt")),
];

/// Field names a `DecodeError` may carry (they are `&'static str` in the error).
const ERROR_FIELDS: [&str; 20] = [
    "message",
    "meeting_id",
    "passcode",
    "info",
    "redirect",
    "layers",
    "layer",
    "reason",
    "join status",
    "object",
    "credential",
    "keys",
    "role",
    "host action",
    "locked",
    "share policy",
    "recipient",
    "key message",
    "to_all",
    "stopped",
];

// ---------------------------------------------------------------------------
// Parsing the vector files.

/// One `key: value` block.
struct Vector {
    ctx: String,
    name: String,
    fields: BTreeMap<String, Vec<String>>,
}

fn parse_file(file: &str, text: &str) -> Vec<Vector> {
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            out.extend(current.take());
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{file}:{}: expected `key: value`", i + 1));
        let (key, value) = (key.trim().to_owned(), value.trim().to_owned());
        match &mut current {
            None => {
                assert_eq!(
                    key,
                    "vector",
                    "{file}:{}: a block starts with `vector:`",
                    i + 1
                );
                current = Some(Vector {
                    ctx: format!("{file}:{} ({value})", i + 1),
                    name: value,
                    fields: BTreeMap::new(),
                });
            }
            Some(v) => {
                assert_ne!(
                    key,
                    "vector",
                    "{}: blank line missing before line {}",
                    v.ctx,
                    i + 1
                );
                v.fields.entry(key).or_default().push(value);
            }
        }
    }
    out.extend(current);
    out
}

fn load_all() -> Vec<Vector> {
    let vectors: Vec<Vector> = FILES
        .iter()
        .flat_map(|(file, text)| parse_file(file, text))
        .collect();
    let mut names = BTreeSet::new();
    for v in &vectors {
        assert!(
            names.insert(v.name.clone()),
            "{}: duplicate vector name",
            v.ctx
        );
    }
    vectors
}

fn load(file: &str) -> Vec<Vector> {
    load_all()
        .into_iter()
        .filter(|v| v.ctx.starts_with(file))
        .collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses hex digits, ignoring whitespace; `-` is the empty string.
fn parse_hex(ctx: &str, s: &str) -> Vec<u8> {
    if s.trim() == "-" {
        return Vec::new();
    }
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "{ctx}: odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let hi = nibble(pair[0]).unwrap_or_else(|| panic!("{ctx}: bad hex digit"));
            let lo = nibble(pair[1]).unwrap_or_else(|| panic!("{ctx}: bad hex digit"));
            hi << 4 | lo
        })
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn parse_num(ctx: &str, s: &str) -> u64 {
    let parsed = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{ctx}: `{s}` is not a number"))
}

impl Vector {
    fn take(&mut self, key: &str) -> Option<Vec<String>> {
        self.fields.remove(key)
    }

    fn opt(&mut self, key: &str) -> Option<String> {
        let mut values = self.take(key)?;
        assert_eq!(
            values.len(),
            1,
            "{}: `{key}` given more than once",
            self.ctx
        );
        values.pop()
    }

    fn one(&mut self, key: &str) -> String {
        self.opt(key)
            .unwrap_or_else(|| panic!("{}: missing `{key}`", self.ctx))
    }

    fn num(&mut self, key: &str) -> u64 {
        let s = self.one(key);
        parse_num(&self.ctx, &s)
    }

    fn u8(&mut self, key: &str) -> u8 {
        let n = self.num(key);
        u8::try_from(n).unwrap_or_else(|_| panic!("{}: `{key}` does not fit a byte", self.ctx))
    }

    fn string(&mut self, key: &str) -> String {
        let s = self.one(key);
        let inner = s
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{}: `{key}` must be double-quoted", self.ctx));
        inner.to_owned()
    }

    /// A hex value; repeated lines continue it.
    fn hex(&mut self, key: &str) -> Vec<u8> {
        let values = self
            .take(key)
            .unwrap_or_else(|| panic!("{}: missing `{key}`", self.ctx));
        values
            .iter()
            .flat_map(|v| parse_hex(&self.ctx, v))
            .collect()
    }

    fn blob(&mut self, key: &str) -> Bytes {
        Bytes::from(self.hex(key))
    }

    fn kind(&mut self) -> TrackKind {
        match self.one("kind").as_str() {
            "audio" => TrackKind::AUDIO,
            "video" => TrackKind::VIDEO,
            "screen" => TrackKind::SCREEN,
            other => TrackKind(
                u8::try_from(parse_num(&self.ctx, other))
                    .unwrap_or_else(|_| panic!("{}: kind does not fit a byte", self.ctx)),
            ),
        }
    }

    fn reason(&mut self) -> RejectReason {
        let s = self.one("reason");
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            let n = parse_num(&self.ctx, &s);
            return RejectReason(u16::try_from(n).expect("reason fits u16"));
        }
        (0..=u16::MAX)
            .map(RejectReason)
            .find(|r| r.name() == Some(s.as_str()))
            .unwrap_or_else(|| panic!("{}: unknown reason name {s}", self.ctx))
    }

    fn close_code(&mut self) -> Option<ErrorCode> {
        let s = self.opt("close")?;
        let code = (0..0x1000)
            .map(ErrorCode)
            .find(|c| c.name() == Some(s.as_str()))
            .unwrap_or_else(|| panic!("{}: unknown close code name {s}", self.ctx));
        Some(code)
    }

    fn error_field(&mut self) -> &'static str {
        let s = self.one("field");
        ERROR_FIELDS
            .iter()
            .copied()
            .find(|f| *f == s)
            .unwrap_or_else(|| panic!("{}: unknown error field `{s}`", self.ctx))
    }

    /// An optional blob (absent means empty: a trailing field left out).
    fn opt_blob(&mut self, key: &str) -> Bytes {
        if self.fields.contains_key(key) {
            self.blob(key)
        } else {
            Bytes::new()
        }
    }

    fn flag(&mut self, key: &str) -> bool {
        match self.one(key).as_str() {
            "true" => true,
            "false" => false,
            other => panic!("{}: `{key}` must be true or false, not {other}", self.ctx),
        }
    }

    /// `credential: none | token "..." | host_secret "..."`; absent means none.
    fn credential(&mut self) -> Credential {
        let Some(s) = self.opt("credential") else {
            return Credential::None;
        };
        let quoted = |rest: &str| {
            rest.trim()
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{}: credential value must be quoted", self.ctx))
                .to_owned()
        };
        if s == "none" {
            Credential::None
        } else if let Some(rest) = s.strip_prefix("token ") {
            Credential::Token(quoted(rest))
        } else if let Some(rest) = s.strip_prefix("host_secret ") {
            Credential::HostSecret(quoted(rest))
        } else {
            panic!("{}: unknown credential {s}", self.ctx)
        }
    }

    /// `role: host | cohost | participant | viewer`; absent means participant.
    fn role(&mut self) -> Role {
        match self.opt("role").as_deref() {
            None | Some("participant") => Role::Participant,
            Some("host") => Role::Host,
            Some("cohost") => Role::CoHost,
            Some("viewer") => Role::Viewer,
            Some(other) => panic!("{}: unknown role {other}", self.ctx),
        }
    }

    fn share(&mut self) -> SharePolicy {
        match self.one("share").as_str() {
            "anyone" => SharePolicy::Anyone,
            "host_only" => SharePolicy::HostOnly,
            other => panic!("{}: unknown share policy {other}", self.ctx),
        }
    }

    fn refuse_reason(&mut self) -> RefuseReason {
        let s = self.one("reason");
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            let n = parse_num(&self.ctx, &s);
            return RefuseReason(u16::try_from(n).expect("reason fits u16"));
        }
        (0..=u16::MAX)
            .map(RefuseReason)
            .find(|r| r.name() == Some(s.as_str()))
            .unwrap_or_else(|| panic!("{}: unknown refusal reason {s}", self.ctx))
    }

    fn roster(&mut self) -> RosterParticipant {
        RosterParticipant {
            participant: self.num("participant"),
            info: self.blob("info"),
            role: self.role(),
            keys: self.opt_blob("keys"),
        }
    }

    /// `action:` plus its arguments.
    fn host_action(&mut self) -> HostAction {
        match self.one("action").as_str() {
            "Admit" => HostAction::Admit(self.num("participant")),
            "AdmitAll" => HostAction::AdmitAll,
            "Deny" => HostAction::Deny(self.num("participant")),
            "Lock" => HostAction::Lock(self.flag("locked")),
            "Remove" => HostAction::Remove(self.num("participant")),
            "StopTrack" => HostAction::StopTrack {
                participant: self.num("participant"),
                track: self.num("track"),
            },
            "ResumeTrack" => HostAction::ResumeTrack {
                participant: self.num("participant"),
                track: self.num("track"),
            },
            "SetSharePolicy" => HostAction::SetSharePolicy(self.share()),
            other => panic!("{}: unknown host action {other}", self.ctx),
        }
    }

    fn track_info(&mut self) -> TrackInfo {
        TrackInfo {
            track: self.num("track"),
            kind: self.kind(),
            layers: self.u8("layers"),
            priority: self.u8("priority"),
        }
    }

    /// Every key must have been used: a typo in a vector is an error, not a skip.
    fn finish(&self) {
        assert!(
            self.fields.is_empty(),
            "{}: unused keys {:?}",
            self.ctx,
            self.fields.keys().collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------
// Building expected values.

fn client_message(v: &mut Vector) -> ClientMessage {
    match v.one("message").as_str() {
        "Join" => ClientMessage::Join {
            version: v.num("version"),
            meeting_id: v.string("meeting_id"),
            passcode: v.string("passcode"),
            info: v.blob("info"),
            credential: v.credential(),
            keys: v.opt_blob("keys"),
        },
        "Publish" => ClientMessage::Publish(v.track_info()),
        "Unpublish" => ClientMessage::Unpublish {
            track: v.num("track"),
        },
        "Subscribe" => ClientMessage::Subscribe {
            publisher: v.num("publisher"),
            track: v.num("track"),
            layer: v.u8("layer"),
        },
        "Unsubscribe" => ClientMessage::Unsubscribe {
            publisher: v.num("publisher"),
            track: v.num("track"),
        },
        "RequestKeyframe" => ClientMessage::RequestKeyframe {
            publisher: v.num("publisher"),
            track: v.num("track"),
            layer: v.u8("layer"),
        },
        "Leave" => ClientMessage::Leave,
        "HostAction" => ClientMessage::HostAction(v.host_action()),
        "KeyMessage" => ClientMessage::KeyMessage {
            to: match v.one("to").as_str() {
                "all" => Recipient::All,
                n => Recipient::One(parse_num(&v.ctx, n)),
            },
            blob: v.blob("blob"),
        },
        other => panic!("{}: unknown client message {other}", v.ctx),
    }
}

fn server_message(v: &mut Vector) -> ServerMessage {
    match v.one("message").as_str() {
        "JoinResult" => ServerMessage::JoinResult(match v.one("outcome").as_str() {
            "Admitted" => JoinOutcome::Admitted {
                participant: v.num("participant"),
                role: v.role(),
            },
            "Throttled" => JoinOutcome::Throttled {
                retry_after_ms: v.num("retry_after_ms"),
            },
            "Waiting" => JoinOutcome::Waiting {
                participant: v.num("participant"),
            },
            "Rejected" => JoinOutcome::Rejected { reason: v.reason() },
            "Overloaded" => JoinOutcome::Overloaded {
                retry_after_ms: v.num("retry_after_ms"),
            },
            other => panic!("{}: unknown join outcome {other}", v.ctx),
        }),
        "ParticipantJoined" => ServerMessage::ParticipantJoined(v.roster()),
        "WaitingJoined" => ServerMessage::WaitingJoined(v.roster()),
        "WaitingLeft" => ServerMessage::WaitingLeft {
            participant: v.num("participant"),
        },
        "KeyMessage" => ServerMessage::KeyMessage {
            from: v.num("from"),
            to_all: v.flag("to_all"),
            blob: v.blob("blob"),
        },
        "Refused" => ServerMessage::Refused {
            message_type: v.num("message_type"),
            subject: v.num("subject"),
            reason: v.refuse_reason(),
        },
        "MeetingPolicy" => ServerMessage::MeetingPolicy {
            locked: v.flag("locked"),
            share: v.share(),
        },
        "TrackStopped" => ServerMessage::TrackStopped {
            participant: v.num("participant"),
            track: v.num("track"),
            stopped: v.flag("stopped"),
        },
        "AtRisk" => ServerMessage::AtRisk {
            failed_attempts: v.num("failed_attempts"),
        },
        "ParticipantLeft" => ServerMessage::ParticipantLeft {
            participant: v.num("participant"),
        },
        "TrackPublished" => ServerMessage::TrackPublished {
            participant: v.num("participant"),
            info: v.track_info(),
        },
        "TrackUnpublished" => ServerMessage::TrackUnpublished {
            participant: v.num("participant"),
            track: v.num("track"),
        },
        "KeyframeRequest" => ServerMessage::KeyframeRequest {
            track: v.num("track"),
            layer: v.u8("layer"),
        },
        "SubscriptionEnded" => ServerMessage::SubscriptionEnded {
            publisher: v.num("publisher"),
            track: v.num("track"),
        },
        "GoAway" => ServerMessage::GoAway {
            redirect: v.string("redirect"),
        },
        other => panic!("{}: unknown server message {other}", v.ctx),
    }
}

fn group_header(v: &mut Vector) -> GroupHeader {
    GroupHeader {
        publisher: v.num("publisher"),
        track: v.num("track"),
        group: v.num("group"),
        layer: v.u8("layer"),
        priority: v.u8("priority"),
    }
}

fn object_header(v: &mut Vector) -> ObjectHeader {
    ObjectHeader {
        object: v.num("object"),
        flags: v.u8("flags"),
        length: u32::try_from(v.num("length")).expect("object length fits u32"),
    }
}

fn datagram_header(v: &mut Vector) -> DatagramHeader {
    DatagramHeader {
        publisher: v.num("publisher"),
        track: v.num("track"),
        group: v.num("group"),
        object: v.num("object"),
        flags: v.u8("flags"),
        priority: v.u8("priority"),
    }
}

fn expected_error(v: &mut Vector) -> DecodeError {
    match v.one("error").as_str() {
        "Incomplete" => DecodeError::Incomplete,
        "Truncated" => DecodeError::Truncated,
        "TooLong" => DecodeError::TooLong {
            field: v.error_field(),
            len: v.num("len"),
            max: usize::try_from(v.num("max")).unwrap(),
        },
        "OutOfRange" => DecodeError::OutOfRange {
            field: v.error_field(),
            value: v.num("value"),
        },
        "InvalidUtf8" => DecodeError::InvalidUtf8 {
            field: v.error_field(),
        },
        "UnknownMessage" => DecodeError::UnknownMessage(v.num("type")),
        "UnknownStream" => DecodeError::UnknownStream(v.num("type")),
        "TrailingBytes" => DecodeError::TrailingBytes {
            extra: usize::try_from(v.num("extra")).unwrap(),
        },
        other => panic!("{}: unknown error {other}", v.ctx),
    }
}

/// A name per variant. The matches are exhaustive, so a new variant fails to compile
/// here until it is added to `REQUIRED_LABELS` and given vectors.
fn client_label(m: &ClientMessage) -> &'static str {
    match m {
        ClientMessage::Join { .. } => "client Join",
        ClientMessage::Publish(_) => "client Publish",
        ClientMessage::Unpublish { .. } => "client Unpublish",
        ClientMessage::Subscribe { .. } => "client Subscribe",
        ClientMessage::Unsubscribe { .. } => "client Unsubscribe",
        ClientMessage::RequestKeyframe { .. } => "client RequestKeyframe",
        ClientMessage::Leave => "client Leave",
        ClientMessage::HostAction(_) => "client HostAction",
        ClientMessage::KeyMessage { .. } => "client KeyMessage",
    }
}

fn server_label(m: &ServerMessage) -> &'static str {
    match m {
        ServerMessage::JoinResult(JoinOutcome::Admitted { .. }) => "server JoinResult Admitted",
        ServerMessage::JoinResult(JoinOutcome::Rejected { .. }) => "server JoinResult Rejected",
        ServerMessage::JoinResult(JoinOutcome::Overloaded { .. }) => "server JoinResult Overloaded",
        ServerMessage::ParticipantJoined(_) => "server ParticipantJoined",
        ServerMessage::ParticipantLeft { .. } => "server ParticipantLeft",
        ServerMessage::TrackPublished { .. } => "server TrackPublished",
        ServerMessage::TrackUnpublished { .. } => "server TrackUnpublished",
        ServerMessage::KeyframeRequest { .. } => "server KeyframeRequest",
        ServerMessage::SubscriptionEnded { .. } => "server SubscriptionEnded",
        ServerMessage::GoAway { .. } => "server GoAway",
        ServerMessage::JoinResult(JoinOutcome::Throttled { .. }) => "server JoinResult Throttled",
        ServerMessage::JoinResult(JoinOutcome::Waiting { .. }) => "server JoinResult Waiting",
        ServerMessage::KeyMessage { .. } => "server KeyMessage",
        ServerMessage::WaitingJoined(_) => "server WaitingJoined",
        ServerMessage::WaitingLeft { .. } => "server WaitingLeft",
        ServerMessage::Refused { .. } => "server Refused",
        ServerMessage::MeetingPolicy { .. } => "server MeetingPolicy",
        ServerMessage::TrackStopped { .. } => "server TrackStopped",
        ServerMessage::AtRisk { .. } => "server AtRisk",
    }
}

const REQUIRED_LABELS: [&str; 31] = [
    "client HostAction",
    "client KeyMessage",
    "server JoinResult Throttled",
    "server JoinResult Waiting",
    "server KeyMessage",
    "server WaitingJoined",
    "server WaitingLeft",
    "server Refused",
    "server MeetingPolicy",
    "server TrackStopped",
    "server AtRisk",
    "client Join",
    "client Publish",
    "client Unpublish",
    "client Subscribe",
    "client Unsubscribe",
    "client RequestKeyframe",
    "client Leave",
    "server JoinResult Admitted",
    "server JoinResult Rejected",
    "server JoinResult Overloaded",
    "server ParticipantJoined",
    "server ParticipantLeft",
    "server TrackPublished",
    "server TrackUnpublished",
    "server KeyframeRequest",
    "server SubscriptionEnded",
    "server GoAway",
    "group",
    "object",
    "datagram",
];

fn error_label(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Incomplete => "Incomplete",
        DecodeError::TooLong { .. } => "TooLong",
        DecodeError::OutOfRange { .. } => "OutOfRange",
        DecodeError::InvalidUtf8 { .. } => "InvalidUtf8",
        DecodeError::UnknownMessage(_) => "UnknownMessage",
        DecodeError::UnknownStream(_) => "UnknownStream",
        DecodeError::Truncated => "Truncated",
        DecodeError::TrailingBytes { .. } => "TrailingBytes",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------
// Checking.

/// The five things that have a wire form, seen uniformly.
trait Wire: Sized + Clone + PartialEq + Debug {
    /// The error every strict prefix of a valid encoding gives.
    const SHORT: DecodeError;
    fn encode_vec(&self) -> Vec<u8>;
    fn decode_from(buf: &[u8]) -> Result<(Self, usize), DecodeError>;
}

/// Implements [`Wire`] for a type with inherent `encode`/`decode`; `$check` runs on
/// each encoding (control messages also check `to_bytes` agrees with `encode`).
macro_rules! wire {
    ($t:ty, $short:expr, |$msg:ident, $out:ident| $check:expr) => {
        impl Wire for $t {
            const SHORT: DecodeError = $short;
            fn encode_vec(&self) -> Vec<u8> {
                let mut out = Vec::new();
                self.encode(&mut out);
                let ($msg, $out) = (self, &out);
                #[allow(clippy::unused_unit)]
                let () = $check;
                out
            }
            fn decode_from(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
                <$t>::decode(buf)
            }
        }
    };
}

wire!(ClientMessage, DecodeError::Incomplete, |m, out| assert_eq!(
    m.to_bytes(),
    out[..],
    "to_bytes and encode agree"
));
wire!(ServerMessage, DecodeError::Incomplete, |m, out| assert_eq!(
    m.to_bytes(),
    out[..],
    "to_bytes and encode agree"
));
wire!(GroupHeader, DecodeError::Incomplete, |_m, _out| ());
wire!(ObjectHeader, DecodeError::Incomplete, |_m, _out| ());
wire!(DatagramHeader, DecodeError::Truncated, |_m, _out| ());

fn check_valid<T: Wire>(ctx: &str, expected: &T, hex: &[u8], canonical: bool) {
    if canonical {
        assert_eq!(
            to_hex(&expected.encode_vec()),
            to_hex(hex),
            "{ctx}: encode(value) differs from the vector"
        );
    } else {
        assert_ne!(
            expected.encode_vec(),
            hex,
            "{ctx}: marked non-canonical but is the encoder's output"
        );
    }
    assert_eq!(
        T::decode_from(hex),
        Ok((expected.clone(), hex.len())),
        "{ctx}: decode"
    );
    // Whatever follows (the next frame, the payload) is not consumed.
    let mut longer = hex.to_vec();
    longer.extend_from_slice(&[0x07, 0x00, 0xff]);
    assert_eq!(
        T::decode_from(&longer).map(|(_, used)| used),
        Ok(hex.len()),
        "{ctx}: decode with bytes following"
    );
    for n in 0..hex.len() {
        assert_eq!(
            T::decode_from(&hex[..n]).map(|_| ()),
            Err(T::SHORT),
            "{ctx}: prefix of {n} bytes"
        );
    }
}

fn check_invalid(v: &mut Vector, hex: &[u8]) -> DecodeError {
    let expected = expected_error(v);
    let close = v.close_code();
    let decoder = v.one("decoder");
    let actual = match decoder.as_str() {
        "client" => ClientMessage::decode(hex).map(|_| ()),
        "server" => ServerMessage::decode(hex).map(|_| ()),
        "group" => GroupHeader::decode(hex).map(|_| ()),
        "object" => ObjectHeader::decode(hex).map(|_| ()),
        "datagram" => DatagramHeader::decode(hex).map(|_| ()),
        other => panic!("{}: unknown decoder {other}", v.ctx),
    };
    assert_eq!(actual, Err(expected.clone()), "{}", v.ctx);
    if let Some(close) = close {
        assert_eq!(expected.close_code(), close, "{}: close code", v.ctx);
    }
    expected
}

/// What running a set of vectors saw.
#[derive(Default)]
struct Seen {
    labels: BTreeSet<&'static str>,
    errors: BTreeSet<&'static str>,
    reasons: BTreeSet<u16>,
    refusals: BTreeSet<u16>,
    client_stream: Vec<(Vec<u8>, ClientMessage)>,
    server_stream: Vec<(Vec<u8>, ServerMessage)>,
    count: usize,
}

fn run(vectors: Vec<Vector>) -> Seen {
    let mut seen = Seen::default();
    for mut v in vectors {
        let hex = v.hex("hex");
        if v.fields.contains_key("error") {
            let e = check_invalid(&mut v, &hex);
            seen.errors.insert(error_label(&e));
        } else {
            let canonical = match v.opt("canonical").as_deref() {
                None | Some("yes") => true,
                Some("no") => false,
                Some(other) => panic!("{}: canonical must be yes or no, not {other}", v.ctx),
            };
            let ctx = v.ctx.clone();
            match v.one("decoder").as_str() {
                "client" => {
                    let m = client_message(&mut v);
                    check_valid(&ctx, &m, &hex, canonical);
                    seen.labels.insert(client_label(&m));
                    seen.client_stream.push((hex, m));
                }
                "server" => {
                    let m = server_message(&mut v);
                    check_valid(&ctx, &m, &hex, canonical);
                    seen.labels.insert(server_label(&m));
                    if let ServerMessage::JoinResult(JoinOutcome::Rejected { reason }) = &m {
                        seen.reasons.insert(reason.0);
                    }
                    if let ServerMessage::Refused { reason, .. } = &m {
                        seen.refusals.insert(reason.0);
                    }
                    seen.server_stream.push((hex, m));
                }
                "group" => {
                    check_valid(&ctx, &group_header(&mut v), &hex, canonical);
                    seen.labels.insert("group");
                }
                "object" => {
                    check_valid(&ctx, &object_header(&mut v), &hex, canonical);
                    seen.labels.insert("object");
                }
                "datagram" => {
                    check_valid(&ctx, &datagram_header(&mut v), &hex, canonical);
                    seen.labels.insert("datagram");
                }
                other => panic!("{ctx}: unknown decoder {other}"),
            }
        }
        v.finish();
        seen.count += 1;
    }
    seen
}

#[test]
fn client_vectors() {
    let seen = run(load("client.txt"));
    assert!(seen.count >= 15, "{} client vectors", seen.count);
}

#[test]
fn server_vectors() {
    let seen = run(load("server.txt"));
    assert!(seen.count >= 20, "{} server vectors", seen.count);
}

#[test]
fn media_vectors() {
    let seen = run(load("media.txt"));
    assert!(seen.count >= 9, "{} media vectors", seen.count);
}

#[test]
fn invalid_vectors() {
    let seen = run(load("invalid.txt"));
    assert!(seen.count >= 40, "{} invalid vectors", seen.count);
}

#[test]
fn vectors_cover_every_variant_reason_and_error() {
    let seen = run(load_all());
    for label in REQUIRED_LABELS {
        assert!(seen.labels.contains(label), "no valid vector for {label}");
    }
    for reason in [
        RejectReason::BAD_PASSCODE,
        RejectReason::INVALID_MEETING_ID,
        RejectReason::UNSUPPORTED_VERSION,
        RejectReason::MEETING_FULL,
        RejectReason::TOO_MANY_MEETINGS,
        RejectReason::LOCKED,
        RejectReason::REGION,
        RejectReason::DENIED,
        RejectReason::REMOVED,
        RejectReason::TOKEN_INVALID,
        RejectReason::TOKEN_EXPIRED,
        RejectReason::NOT_ALLOWED,
    ] {
        assert!(seen.reasons.contains(&reason.0), "no vector for {reason}");
    }
    for reason in (1..=u16::MAX)
        .map(RefuseReason)
        .filter(|r| r.name().is_some())
    {
        assert!(
            seen.refusals.contains(&reason.0),
            "no Refused vector for {reason}"
        );
    }
    for error in [
        "Incomplete",
        "TooLong",
        "OutOfRange",
        "InvalidUtf8",
        "UnknownMessage",
        "UnknownStream",
        "Truncated",
        "TrailingBytes",
    ] {
        assert!(
            seen.errors.contains(error),
            "no invalid vector gives {error}"
        );
    }
}

/// All valid control vectors back to back, fed one byte at a time, come out of a
/// `ControlDecoder` as the same messages in the same order.
#[test]
fn control_decoder_replays_vectors_byte_by_byte() {
    let seen = run(load_all());

    let mut decoder = ControlDecoder::<ClientMessage>::new();
    let mut got = Vec::new();
    for (hex, _) in &seen.client_stream {
        for b in hex {
            decoder.push(&[*b]);
            while let Some(m) = decoder.next().unwrap() {
                got.push(m);
            }
        }
    }
    let want: Vec<ClientMessage> = seen.client_stream.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(got, want);
    assert_eq!(decoder.buffered(), 0);

    let mut decoder = ControlDecoder::<ServerMessage>::new();
    let mut got = Vec::new();
    for (hex, _) in &seen.server_stream {
        for b in hex {
            decoder.push(&[*b]);
            while let Some(m) = decoder.next().unwrap() {
                got.push(m);
            }
        }
    }
    let want: Vec<ServerMessage> = seen.server_stream.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(got, want);
    assert_eq!(decoder.buffered(), 0);
}

/// The worked examples in docs/PROTOCOL.md.
#[test]
fn protocol_md_worked_examples() {
    let join = ClientMessage::Join {
        version: 1,
        meeting_id: "12345678901".into(),
        passcode: "hunter2".into(),
        info: Bytes::new(),
        credential: Credential::None,
        keys: Bytes::new(),
    };
    assert_eq!(
        to_hex(&join.encode_vec()),
        "01 16 01 0b 31 32 33 34 35 36 37 38 39 30 31 07 68 75 6e 74 65 72 32 00"
    );
    let group = GroupHeader {
        publisher: 1000,
        track: 1,
        group: 42,
        layer: 2,
        priority: 100,
    };
    assert_eq!(to_hex(&group.encode_vec()), "10 43 e8 01 2a 02 64");
    let object = ObjectHeader {
        object: 0,
        flags: 0x01,
        length: 1200,
    };
    assert_eq!(to_hex(&object.encode_vec()), "00 01 44 b0");
    let admitted = ServerMessage::JoinResult(JoinOutcome::Admitted {
        participant: 7,
        role: Role::Participant,
    });
    assert_eq!(to_hex(&admitted.encode_vec()), "40 41 02 00 07");
    let datagram = DatagramHeader {
        publisher: 1000,
        track: 0,
        group: 7,
        object: 3,
        flags: 0,
        priority: 255,
    };
    assert_eq!(to_hex(&datagram.encode_vec()), "43 e8 00 07 03 00 ff");
    let host_join = ClientMessage::Join {
        version: 1,
        meeting_id: "12345678901".into(),
        passcode: String::new(),
        info: Bytes::new(),
        credential: Credential::Token("hdr.claims.sig".into()),
        keys: Bytes::from_static(&[0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]),
    };
    assert_eq!(
        to_hex(&host_join.encode_vec()),
        "01 28 01 0b 31 32 33 34 35 36 37 38 39 30 31 00 00 01 0e 68 64 72 2e 63 6c 61 69 \
         6d 73 2e 73 69 67 08 a1 a2 a3 a4 a5 a6 a7 a8"
    );
    let host = ServerMessage::JoinResult(JoinOutcome::Admitted {
        participant: 7,
        role: Role::Host,
    });
    assert_eq!(to_hex(&host.encode_vec()), "40 41 03 00 07 00");
    let policy = ServerMessage::MeetingPolicy {
        locked: false,
        share: SharePolicy::Anyone,
    };
    assert_eq!(to_hex(&policy.encode_vec()), "40 4d 02 00 00");
    let sealed = Bytes::from_static(&[1, 2, 3]);
    let sent = ClientMessage::KeyMessage {
        to: Recipient::One(9),
        blob: sealed.clone(),
    };
    assert_eq!(to_hex(&sent.encode_vec()), "09 06 01 09 03 01 02 03");
    let forwarded = ServerMessage::KeyMessage {
        from: 7,
        to_all: false,
        blob: sealed,
    };
    assert_eq!(
        to_hex(&forwarded.encode_vec()),
        "40 49 06 07 00 03 01 02 03"
    );
    assert_eq!(orelay_proto::ALPN, b"orelay/1");
    assert_eq!(orelay_proto::PROTOCOL_VERSION, 1);
}

//! Seed inputs derived from the protocol's hex test vectors (`proto/tests/vectors/`):
//! every vector, valid or not, becomes a seed of the target that runs its decoder, and
//! the control vectors, concatenated, seed the chunked decoder under several splits.

const FILES: [&str; 4] = [
    include_str!("../../proto/tests/vectors/client.txt"),
    include_str!("../../proto/tests/vectors/server.txt"),
    include_str!("../../proto/tests/vectors/media.txt"),
    include_str!("../../proto/tests/vectors/invalid.txt"),
];

/// One seed: the target it feeds, a file name, and the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// A name in [`crate::TARGETS`].
    pub target: &'static str,
    /// A file name for it (the vector's name, with a split suffix where one is added).
    pub name: String,
    /// The input bytes.
    pub data: Vec<u8>,
}

/// (vector name, decoder, bytes) of every vector. The format is described at the top
/// of `client.txt`: blocks of `key: value` lines, `hex:` lines concatenated.
fn vectors() -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for file in FILES {
        let mut name = String::new();
        let mut decoder = String::new();
        let mut hex = String::new();
        for line in file.lines().chain(std::iter::once("")) {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if line.is_empty() {
                if !name.is_empty() {
                    let bytes = parse_hex(&hex);
                    out.push((
                        std::mem::take(&mut name),
                        std::mem::take(&mut decoder),
                        bytes,
                    ));
                }
                hex.clear();
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                match key.trim() {
                    "vector" => name = value.trim().to_owned(),
                    "decoder" => decoder = value.trim().to_owned(),
                    "hex" => hex.push_str(value),
                    _ => {}
                }
            }
        }
    }
    out
}

fn parse_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| match c {
            b'0'..=b'9' => c - b'0',
            _ => (c | 0x20) - b'a' + 10,
        })
        .collect();
    digits
        .chunks(2)
        .map(|p| p[0] << 4 | p.get(1).copied().unwrap_or(0))
        .collect()
}

/// Split seeds for the chunked decoders: whole, a byte at a time, and two ragged splits.
const SPLITS: [u8; 4] = [0, 8, 0x23, 0x46];

/// Every seed. Deterministic, so writing them twice gives the same files.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut streams: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (name, decoder, bytes) in vectors() {
        let mut add = |target: &'static str, name: String, data: Vec<u8>| {
            out.push(Seed { target, name, data });
        };
        let prefixed = |seed: u8| [&[seed][..], &bytes].concat();
        match decoder.as_str() {
            "client" | "server" => {
                let server = decoder == "server";
                let target = if server {
                    "server_message"
                } else {
                    "client_message"
                };
                add(target, name.clone(), bytes.clone());
                add(
                    "control_decoder",
                    format!("{name}-whole"),
                    prefixed(u8::from(server) << 7),
                );
                streams[usize::from(server)].extend_from_slice(&bytes);
            }
            "group" => {
                for split in SPLITS {
                    add(
                        "group_header",
                        format!("{name}-split{split}"),
                        prefixed(split),
                    );
                }
            }
            "object" => add("object_header", name, bytes),
            "datagram" => add("datagram_header", name, bytes),
            other => panic!("vector {name}: unknown decoder {other}"),
        }
    }
    for (name, payload) in crate::token::seed_payloads() {
        out.push(Seed {
            target: "join_token",
            name: format!("{name}-signed"),
            data: [&[1][..], &payload].concat(),
        });
        let token = crate::token::signed(&payload);
        out.push(Seed {
            target: "join_token",
            name,
            data: [&[0][..], token.as_bytes()].concat(),
        });
    }
    for (server, stream) in streams.iter().enumerate() {
        for split in SPLITS {
            let seed = split | (server as u8) << 7;
            let data = [&[seed][..], stream].concat();
            let name = format!("all-{}-split{split}", ["client", "server"][server]);
            out.push(Seed {
                target: "control_decoder",
                name,
                data,
            });
        }
    }
    out
}

//! Total big-endian readers and writers for the E2EE formats: every read is bounds
//! checked and returns an error, never panics.

use crate::E2eeError;

/// Reads fields off a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], E2eeError> {
        if self.buf.len() < n {
            return Err(E2eeError::Malformed(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], E2eeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, E2eeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, E2eeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, E2eeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A u16-length-prefixed byte string.
    pub(crate) fn vec16(&mut self) -> Result<&'a [u8], E2eeError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    /// Bytes consumed so far, given the original slice.
    pub(crate) fn consumed(&self, original: &[u8]) -> usize {
        original.len() - self.buf.len()
    }

    pub(crate) fn end(&self) -> Result<(), E2eeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(E2eeError::Malformed(self.what))
        }
    }
}

/// Appends a u16-length-prefixed byte string (callers bound `data` well below 64 KiB).
pub(crate) fn put_vec16(out: &mut Vec<u8>, data: &[u8]) -> Result<(), E2eeError> {
    let n = u16::try_from(data.len()).map_err(|_| E2eeError::TooLarge("field"))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// Fills `N` bytes from the system's secure random source.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], E2eeError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| E2eeError::Random)?;
    Ok(out)
}

struct Len(usize);

impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256: `N` bytes from `ikm`, domain-separated by `label` and `context`.
pub(crate) fn hkdf<const N: usize>(ikm: &[u8], label: &[u8], context: &[u8]) -> [u8; N] {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"orelay/e2ee/v1").extract(ikm);
    let mut out = [0u8; N];
    // `N` is a small constant (≤ 255 × 32), so expansion cannot fail.
    if let Ok(okm) = prk.expand(&[label, context], Len(N)) {
        let _ = okm.fill(&mut out);
    }
    out
}

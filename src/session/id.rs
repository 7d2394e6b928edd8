//! Session ids: 128 random bits from the OS CSPRNG, written as 22 URL-safe base64 characters.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::fmt;

const LEN: usize = 22;

/// A session id: 128 random bits as 22 URL-safe base64 characters. `Copy` and
/// fixed size: cheap to hash, compare and send.
///
/// ```
/// use sessionmesh::SessionId;
///
/// let id = SessionId::random();
/// assert_eq!(id.as_str().len(), 22);
/// assert_eq!(id.as_str().parse::<SessionId>(), Ok(id));
/// assert_eq!(SessionId::from_bits(id.to_bits()), id);
/// assert!("not-an-id".parse::<SessionId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; LEN]);

impl SessionId {
    /// A fresh id from 128 bits of the operating system's CSPRNG.
    pub fn random() -> SessionId {
        SessionId::from_bits(rand::random())
    }

    /// Parses an id as a client sent it; `None` for anything that is not a
    /// well-formed id (so it can never name a session).
    pub fn parse(s: &str) -> Option<SessionId> {
        let bytes = s.as_bytes();
        if bytes.len() != LEN {
            return None;
        }
        // The last character carries 2 bits of padding, which must be zero for the
        // encoding to be canonical (one id, one spelling).
        let mut decoded = [0u8; 16];
        let n = URL_SAFE_NO_PAD.decode_slice(bytes, &mut decoded).ok()?;
        if n != 16 {
            return None;
        }
        let mut out = [0u8; LEN];
        out.copy_from_slice(bytes);
        Some(SessionId(out))
    }

    /// The id that encodes these 128 bits (as [`SessionId::to_bits`] gives them
    /// back): for stores whose keys are numbers (tower-sessions' `Id`).
    pub fn from_bits(bits: [u8; 16]) -> SessionId {
        let mut out = [0u8; LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(bits, &mut out)
            .expect("16 bytes fit in 22 base64 characters");
        debug_assert_eq!(written, LEN);
        SessionId(out)
    }

    /// The 128 bits this id encodes.
    pub fn to_bits(&self) -> [u8; 16] {
        let mut bits = [0u8; 16];
        // Only ever built from a canonical encoding of 16 bytes.
        let _ = URL_SAFE_NO_PAD.decode_slice(self.0, &mut bits);
        bits
    }

    /// The id as text: 22 URL-safe base64 characters.
    pub fn as_str(&self) -> &str {
        // Only ever built from base64 alphabet bytes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id's text, as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A well-spread number for picking a store shard.
    pub(crate) fn shard_hash(&self) -> usize {
        // The characters are uniformly random; fold a few of them.
        let b = &self.0;
        (b[0] as usize) | (b[1] as usize) << 8 | (b[2] as usize) << 16
    }
}

impl std::str::FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<SessionId, InvalidSessionId> {
        SessionId::parse(s).ok_or(InvalidSessionId)
    }
}

/// Text that is not a well-formed session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a session id: expected 22 URL-safe base64 characters")]
pub struct InvalidSessionId;

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SessionId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SessionId::parse(&text).ok_or_else(|| serde::de::Error::custom(InvalidSessionId))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_round_trip_and_differ() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_str()), Some(a));
        assert_eq!(a.as_str().len(), 22);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "short",
            "!!!!!!!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAA/",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
        // Non-canonical last character (non-zero padding bits).
        assert_eq!(SessionId::parse("AAAAAAAAAAAAAAAAAAAAAB"), None);
        assert!(SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").is_some());
    }
}

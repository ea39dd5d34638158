//! Internal content keys: blake3, as DESIGN.md chooses for everything that
//! never leaves kiln.

use std::fmt;

/// A 32-byte blake3 digest: a node's identity or its cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Hashes parts with their lengths, so `["ab", "c"]` and `["a", "bc"]`
    /// never collide.
    pub fn of_parts<'a>(domain: &str, parts: impl IntoIterator<Item = &'a [u8]>) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(&(domain.len() as u64).to_le_bytes());
        h.update(domain.as_bytes());
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Key(*h.finalize().as_bytes())
    }

    /// Lower-case hex, as stored on disk and printed.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses what [`Key::to_hex`] printed.
    pub fn from_hex(s: &str) -> Option<Key> {
        blake3::Hash::from_hex(s).ok().map(|h| Key(*h.as_bytes()))
    }
}

impl From<blake3::Hash> for Key {
    fn from(h: blake3::Hash) -> Self {
        Key(*h.as_bytes())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Key::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not a 64-digit hex key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_delimited() {
        let a = Key::of_parts("t", [&b"ab"[..], b"c"]);
        let b = Key::of_parts("t", [&b"a"[..], b"bc"]);
        assert_ne!(a, b);
        assert_ne!(
            Key::of_parts("t", [&b"x"[..]]),
            Key::of_parts("u", [&b"x"[..]])
        );
    }

    #[test]
    fn hex_round_trips() {
        let k = Key::of_parts("t", [&b"x"[..]]);
        assert_eq!(Key::from_hex(&k.to_hex()), Some(k));
        assert_eq!(Key::from_hex("zz"), None);
    }
}

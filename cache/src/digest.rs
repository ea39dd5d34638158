//! Content digests as OCI spells them.
//!
//! kiln only ever produces and stores sha256 (OCI requires it and every
//! registry speaks it), so the type validates that up front: a `Digest`
//! value is always safe to turn into a file name.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of a byte slice, for small documents held in memory.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Builds a digest from a finished hasher, so streaming writers need not
    /// format and re-parse.
    pub fn from_sha256(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// Always `sha256`; kept so callers build paths and URLs the OCI way.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The 64 hex characters, e.g. for file names and short IDs.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as docker shows image IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// The same digest as oci-spec's type, for building descriptors.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // Infallible in practice: the value was validated on construction.
        match oci_spec::image::Digest::from_str(&self.to_string()) {
            Ok(d) => d,
            Err(_) => unreachable_digest(),
        }
    }

    /// Converts an oci-spec digest, refusing algorithms kiln does not store.
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Digest> {
        d.to_string().parse()
    }
}

#[cold]
fn unreachable_digest() -> oci_spec::image::Digest {
    // A validated sha256 digest always parses; keep a harmless fallback
    // rather than a panic.
    oci_spec::image::Sha256Digest::from_str(&"0".repeat(64))
        .map(Into::into)
        .unwrap_or_else(|_| unreachable!())
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        let bad = |reason: &str| Error::InvalidDigest {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected <algorithm>:<hex>"))?;
        if alg != "sha256" {
            return Err(bad("only sha256 is supported"));
        }
        if hex.len() != 64 {
            return Err(bad("a sha256 digest has 64 hex characters"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("expected lowercase hex characters"));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Digest> {
        Digest::from_oci(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_string_digest() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d.clone()));
        assert_eq!(d.to_oci().to_string(), d.to_string());
    }

    #[test]
    fn rejects_bad_digests() {
        for s in [
            "sha256:abc",
            "md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd/../../../../../../../../../../../../..",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(s.parse::<Digest>().is_err(), "{s} accepted");
        }
    }
}

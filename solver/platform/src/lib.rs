//! The one `Platform` type of kiln: an OCI platform (`os/arch[/variant]`).
//!
//! Every crate (frontend, solver, worker, image store, registry client)
//! names platforms with this type, so "is `linux/arm64/v8` the same as
//! `linux/arm64`" has one answer everywhere. Parsing, normalisation and
//! matching follow containerd's `platforms` package, which is what docker
//! and BuildKit use:
//!
//! - architecture aliases are folded: `x86_64`/`x86-64` → `amd64`,
//!   `aarch64` → `arm64`, `i386` → `386`, `armhf` → `arm/v7`,
//!   `armel` → `arm/v6`;
//! - default variants are implied: `arm64` is `arm64/v8`, `amd64` is
//!   `amd64/v1`, and a bare `arm` is `arm/v7`;
//! - a platform prints as `os/arch[/variant]`.
//!
//! The crate is a leaf (serde only; oci-spec behind the `oci` feature) so
//! that any crate may use it without pulling in anything else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg(feature = "oci")]
mod oci;

/// An OCI platform (`os/arch[/variant]`).
///
/// The fields hold what was written or read (an index entry's platform is
/// kept as the registry spelled it, so listings and errors show it as is);
/// [`Platform::parse`] and [`Platform::normalize`] give the canonical form
/// and [`Platform::matches`] compares canonical forms. The serialised form
/// (`os`, `architecture`, `variant` only when present) is part of build
/// ops' identities and must not change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`, …
    #[serde(default)]
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, …
    #[serde(default)]
    pub architecture: String,
    /// `v7` for `arm`, … (none when the architecture's default applies)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a platform string was refused; the message is docker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The string as given.
    pub input: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: unknown operating system or architecture: invalid argument",
            self.input
        )
    }
}

impl std::error::Error for ParseError {}

/// Operating systems a one-component specifier may name (then the
/// architecture is the host's), as containerd recognises them.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// The GOARCH name of the machine kiln runs on (what images call it), so
/// the host's own steps run natively and its images are picked by default.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

impl Platform {
    /// A platform from its parts, as given (not normalised).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform kiln itself runs on (the default target and build
    /// platform), normalised: a 32-bit arm host is `linux/arm/v7`.
    pub fn host() -> Platform {
        Platform::new("linux", host_architecture(), None).normalize()
    }

    /// Parses `linux/amd64`, `linux/arm64/v8`, `arm64` or `linux` (the
    /// host's architecture), normalised as containerd's `platforms.Parse`
    /// does.
    pub fn parse(s: &str) -> Result<Platform, ParseError> {
        let bad = || ParseError {
            input: s.to_string(),
        };
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(bad());
        }
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        let p = match lower.as_slice() {
            [one] if KNOWN_OS.contains(&one.as_str()) => {
                Platform::new(one, host_architecture(), None)
            }
            [one] => Platform::new("linux", one, None),
            [os, arch] => Platform::new(os, arch, None),
            [os, arch, variant] => Platform::new(os, arch, Some(variant)),
            _ => return Err(bad()),
        };
        let ok = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !ok(&p.os) || !ok(&p.architecture) {
            return Err(bad());
        }
        Ok(p.normalize())
    }

    /// The canonical form: lower-case os, architecture aliases folded and
    /// default variants dropped (`arm64/v8` → `arm64`, `amd64/v1` →
    /// `amd64`) or implied (`arm` → `arm/v7`), as containerd's
    /// `platforms.Normalize`.
    pub fn normalize(&self) -> Platform {
        let os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self
            .variant
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase);
        let (architecture, variant) = match (arch.as_str(), variant) {
            ("i386" | "386", v) => ("386".to_string(), v),
            ("x86_64" | "x86-64" | "amd64", v) => {
                ("amd64".to_string(), v.filter(|v| v != "v1" && v != "1"))
            }
            ("aarch64" | "arm64", v) => ("arm64".to_string(), v.filter(|v| v != "v8" && v != "8")),
            ("armel", None) => ("arm".to_string(), Some("v6".to_string())),
            ("arm" | "armhf", None) => ("arm".to_string(), Some("v7".to_string())),

            ("arm" | "armhf" | "armel", Some(v)) => (
                "arm".to_string(),
                Some(if v.starts_with('v') {
                    v
                } else {
                    format!("v{v}")
                }),
            ),
            (a, v) => (a.to_string(), v),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Whether an image for `candidate` serves a request for `self`: both
    /// are normalised (so `arm64` and `arm64/v8` are one platform, and an
    /// `arm` image without variant is `arm/v7`), and a request whose
    /// normalised variant is absent accepts any variant of its
    /// architecture.
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.normalize();
        let have = candidate.normalize();
        want.os == have.os
            && want.architecture == have.architecture
            && match (&want.variant, &have.variant) {
                (None, _) => true,
                (Some(w), Some(h)) => w == h,
                (Some(_), None) => false,
            }
    }
}

impl FromStr for Platform {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Platform, ParseError> {
        Platform::parse(s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parse_normalises_like_containerd() {
        assert_eq!(p("linux/amd64"), Platform::new("linux", "amd64", None));
        assert_eq!(p("linux/x86_64"), Platform::new("linux", "amd64", None));
        assert_eq!(p("linux/x86-64/v1"), Platform::new("linux", "amd64", None));
        assert_eq!(
            p("linux/amd64/v3"),
            Platform::new("linux", "amd64", Some("v3"))
        );
        assert_eq!(p("linux/aarch64"), Platform::new("linux", "arm64", None));
        assert_eq!(p("linux/arm64/v8"), p("linux/arm64"));
        assert_eq!(p("linux/arm64/8"), p("linux/arm64"));
        assert_eq!(p("linux/arm"), Platform::new("linux", "arm", Some("v7")));
        assert_eq!(p("linux/armhf"), p("linux/arm/v7"));
        assert_eq!(p("linux/armel"), p("linux/arm/v6"));
        assert_eq!(p("linux/arm/6"), p("linux/arm/v6"));
        assert_eq!(p("linux/i386"), Platform::new("linux", "386", None));
        assert_eq!(p("LINUX/AMD64"), p("linux/amd64"));
        assert_eq!(p(" linux/s390x "), Platform::new("linux", "s390x", None));
    }

    #[test]
    fn one_component_is_an_os_or_an_architecture() {
        assert_eq!(p("arm64"), p("linux/arm64"));
        assert_eq!(
            p("linux"),
            Platform::new("linux", host_architecture(), None).normalize()
        );
        assert_eq!(p("windows").os, "windows");
    }

    #[test]
    fn malformed_specifiers_are_refused_with_dockers_message() {
        for bad in [
            "",
            "linux/",
            "/amd64",
            "linux//v7",
            "a/b/c/d",
            "linux/am d64",
            "li*nux/amd64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Platform::parse("linux//").unwrap_err().to_string(),
            "\"linux//\": unknown operating system or architecture: invalid argument"
        );
        assert_eq!("linux/arm64".parse::<Platform>().unwrap(), p("linux/arm64"));
    }

    #[test]
    fn matching_compares_normalised_forms() {
        let arm64 = p("linux/arm64");
        assert!(arm64.matches(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(arm64.matches(&Platform::new("linux", "arm64", None)));
        assert!(Platform::new("linux", "arm64", Some("v8"))
            .matches(&Platform::new("linux", "aarch64", None)));
        assert!(!arm64.matches(&Platform::new("linux", "amd64", None)));
        assert!(!arm64.matches(&Platform::new("windows", "arm64", None)));
        // arm defaults to v7 on both sides.
        let arm = p("linux/arm");
        assert!(arm.matches(&Platform::new("linux", "arm", None)));
        assert!(arm.matches(&Platform::new("linux", "arm", Some("v7"))));
        assert!(!arm.matches(&Platform::new("linux", "arm", Some("v6"))));
        assert!(!p("linux/arm/v6").matches(&Platform::new("linux", "arm", None)));
        // amd64 is amd64/v1; a request without variant takes any.
        assert!(p("linux/amd64/v1").matches(&Platform::new("linux", "amd64", None)));
        assert!(p("linux/amd64").matches(&Platform::new("linux", "amd64", Some("v3"))));
        assert!(!p("linux/amd64/v3").matches(&Platform::new("linux", "amd64", None)));
    }

    #[test]
    fn host_is_normalised_linux() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert_eq!(h.architecture, host_architecture());
        assert_eq!(h, h.normalize());
        if host_architecture() == "arm" {
            assert_eq!(h.variant.as_deref(), Some("v7"));
        }
        assert!(h.matches(&h));
    }

    #[test]
    fn display_is_os_arch_variant() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(
            Platform::new("linux", "arm64", Some("v8")).to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
    }

    #[test]
    fn serialised_form_is_stable() {
        // Build ops embed platforms; their JSON is part of cache keys.
        let json = |p: &Platform| serde_json::to_string(p).unwrap();
        assert_eq!(
            json(&p("linux/amd64")),
            r#"{"os":"linux","architecture":"amd64"}"#
        );
        assert_eq!(
            json(&p("linux/arm/v7")),
            r#"{"os":"linux","architecture":"arm","variant":"v7"}"#
        );
        let back: Platform =
            serde_json::from_str(r#"{"architecture":"arm64","os":"linux","os.version":"x"}"#)
                .unwrap();
        assert_eq!(back, Platform::new("linux", "arm64", None));
    }
}

//! Whether a base name is a valid image reference, as distribution's
//! `reference.ParseNormalizedNamed` decides (what InvalidDefaultArgInFrom
//! asks); the frontend does not depend on the store's reference type.

use std::sync::OnceLock;

fn pattern() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        let label = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"(?:{label}(?:\.{label})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?");
        let comp = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        // Go's `\w` is ASCII; spelled out, because Rust's Unicode `\w`
        // under `{0,127}` compiled to an automaton that cost ~100 ms of
        // CPU on every build (measured: a third of a 30,000-file no-op).
        let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        let full = format!(r"^(?:{domain}/)?{comp}(?:/{comp})*(?::{tag})?(?:@{digest})?$");
        // The pattern is a constant: a failure is a bug the tests catch.
        regex::Regex::new(&full).ok()
    })
    .as_ref()
}

/// True when `name` parses as a (normalizable) image reference.
pub(crate) fn is_valid(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 + 200 {
        return false;
    }
    // A 64-hex name is an image ID, which ParseNormalizedNamed refuses.
    if name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return false;
    }
    pattern().is_none_or(|re| re.is_match(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn references() {
        for ok in [
            "busybox",
            "scratch",
            "alpine:3.20",
            "localhost:5000/a/b:t",
            "docker.io/library/busybox@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert!(super::is_valid(ok), "{ok}");
        }
        for bad in ["", "Busybox", ":tag", "a:", "a//b"] {
            assert!(!super::is_valid(bad), "{bad}");
        }
    }
}

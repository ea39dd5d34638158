//! `# syntax=` and the `BUILDKIT_SYNTAX` build argument name a frontend
//! image BuildKit would pull and run instead of its built-in Dockerfile
//! frontend. kiln has one frontend, built in: it says so, once, and
//! builds with it (refusing would fail the many Dockerfiles that start with
//! `# syntax=docker/dockerfile:1` only to get today's syntax).

use std::collections::BTreeMap;

/// The warning for a build whose Dockerfile (or `--build-arg
/// BUILDKIT_SYNTAX`, which wins, as in BuildKit) names a frontend.
pub fn warning(directive: Option<&str>, build_args: &BTreeMap<String, String>) -> Option<String> {
    let (what, image) = match build_args.get("BUILDKIT_SYNTAX") {
        Some(v) if !v.trim().is_empty() => ("BUILDKIT_SYNTAX", v.trim()),
        _ => (
            "# syntax",
            directive.map(str::trim).filter(|d| !d.is_empty())?,
        ),
    };
    Some(format!(
        "{what}={image}: kiln does not run frontend images; its built-in Dockerfile frontend is used"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_arg_wins_over_the_directive() {
        let mut args = BTreeMap::new();
        assert_eq!(warning(None, &args), None);
        assert!(warning(Some("docker/dockerfile:1"), &args)
            .unwrap()
            .starts_with("# syntax=docker/dockerfile:1: "));
        args.insert("BUILDKIT_SYNTAX".into(), "example/fe:2".into());
        assert!(warning(Some("docker/dockerfile:1"), &args)
            .unwrap()
            .starts_with("BUILDKIT_SYNTAX=example/fe:2: "));
    }
}

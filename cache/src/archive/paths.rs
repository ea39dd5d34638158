//! Checking archive entry names and link targets before trusting them.
//!
//! An archive is untrusted input: a name like `../../etc/cron.d/x` or a
//! symlink to `/etc` must be refused, never "sanitised", because a silently
//! rewritten archive could still smuggle content in under another name.

use std::path::{Component, Path};

/// Why an archive entry's name or link target is refused; the message
/// follows the entry's name (`entry "x" has an absolute path`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RejectedPath {
    #[error("has an absolute path")]
    Absolute,
    #[error("contains '..'")]
    ParentDir,
    #[error("is not valid UTF-8")]
    NotUtf8,
    /// A symlink to an absolute path (the target as written).
    #[error("is a link to the absolute path {0:?}, outside the archive")]
    AbsoluteLink(String),
    /// A symlink whose `..`s climb out of the archive.
    #[error("is a link to {0:?}, outside the archive")]
    LinkOutside(String),
    #[error("has a link target that is not valid UTF-8")]
    LinkNotUtf8,
    /// A hard link whose target name is itself rejected.
    #[error("is a hard link whose target {0}")]
    HardLink(Box<RejectedPath>),
}

/// Turns an entry name into a clean relative path (`a/b/c`), or says why
/// it is rejected. `./` prefixes are fine; the archive root itself is `""`.
pub(crate) fn clean(name: &Path) -> Result<String, RejectedPath> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(RejectedPath::Absolute);
            }
            Component::ParentDir => return Err(RejectedPath::ParentDir),
            Component::CurDir => {}
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return Err(RejectedPath::NotUtf8),
            },
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink target relative to the link's folder, refusing
/// anything that leaves the archive (absolute, or too many `..`).
pub(crate) fn resolve_link(link: &str, target: &Path) -> Result<String, RejectedPath> {
    let mut stack: Vec<&str> = link.split('/').collect();
    stack.pop(); // the link's own name
    for c in target.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(RejectedPath::AbsoluteLink(target.display().to_string()));
            }
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Err(RejectedPath::LinkOutside(target.display().to_string()));
                }
            }
            Component::CurDir => {}
            Component::Normal(s) => match s.to_str() {
                Some(s) => stack.push(s),
                None => return Err(RejectedPath::LinkNotUtf8),
            },
        }
    }
    Ok(stack.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            clean(Path::new("./blobs/sha256/ab")),
            Ok("blobs/sha256/ab".into())
        );
        assert_eq!(clean(Path::new("./")), Ok(String::new()));
        assert!(clean(Path::new("../x")).is_err());
        assert!(clean(Path::new("a/../../x")).is_err());
        assert!(clean(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn links() {
        assert_eq!(
            resolve_link("a/layer.tar", Path::new("../b/layer.tar")),
            Ok("b/layer.tar".into())
        );
        assert!(resolve_link("a/layer.tar", Path::new("../../b")).is_err());
        assert!(resolve_link("a", Path::new("/etc")).is_err());
    }
}

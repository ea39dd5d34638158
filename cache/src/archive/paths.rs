//! Checking archive entry names and link targets before trusting them.
//!
//! An archive is untrusted input: a name like `../../etc/cron.d/x` or a
//! symlink to `/etc` must be refused, never "sanitised", because a silently
//! rewritten archive could still smuggle content in under another name.

use std::path::{Component, Path};

/// Turns an entry name into a clean relative path (`a/b/c`), or says why
/// it is rejected. `./` prefixes are fine; the archive root itself is `""`.
pub(crate) fn clean(name: &Path) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err("has an absolute path".into());
            }
            Component::ParentDir => return Err("contains '..'".into()),
            Component::CurDir => {}
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return Err("is not valid UTF-8".into()),
            },
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink target relative to the link's folder, refusing
/// anything that leaves the archive (absolute, or too many `..`).
pub(crate) fn resolve_link(link: &str, target: &Path) -> Result<String, String> {
    let mut stack: Vec<&str> = link.split('/').collect();
    stack.pop(); // the link's own name
    for c in target.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(format!(
                    "is a link to the absolute path {:?}, outside the archive",
                    target.display().to_string()
                ));
            }
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Err(format!(
                        "is a link to {:?}, outside the archive",
                        target.display().to_string()
                    ));
                }
            }
            Component::CurDir => {}
            Component::Normal(s) => match s.to_str() {
                Some(s) => stack.push(s),
                None => return Err("has a link target that is not valid UTF-8".into()),
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

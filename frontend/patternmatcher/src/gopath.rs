//! Lexical path cleaning with Go's `path` / `path/filepath` rules (Unix
//! flavour), the one copy kiln has: the frontend, COPY and cache-mount ids
//! all clean paths the way BuildKit does.
//!
//! moby cleans every pattern and every path it matches with `filepath.Clean`
//! and splits parents with `filepath.Dir`; matching only agrees with BuildKit
//! if kiln cleans exactly the same way, `..` at the top and all.

/// Go's `filepath.Clean`: the shortest lexically equivalent path.
///
/// Why not `std::path`: Rust's `Path::components` keeps `..` and drops a
/// trailing `.` differently, and never yields `"."` for an empty path.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    // How many leading `..` a relative path keeps (they can't be popped).
    let mut dotdot = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.len() > dotdot {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                    dotdot += 1;
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir`: everything before the last `/`, cleaned.
pub fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//", "/"),
            ("a/b/", "a/b"),
            ("./foo", "foo"),
            ("dir1//foo", "dir1/foo"),
            ("./dir1/../foo2", "foo2"),
            ("..", ".."),
            ("../..", "../.."),
            ("../a/..", ".."),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("**/", "**"),
            ("/a/b/../../..", "/"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn dir_like_go() {
        for (input, want) in [
            ("file", "."),
            ("file/", "file"),
            ("dir/file/", "dir/file"),
            ("/", "/"),
            ("a/b/c", "a/b"),
            ("/a", "/"),
        ] {
            assert_eq!(dir(input), want, "dir({input:?})");
        }
    }
}

//! Mount listings, for tests that check what a build left mounted.

use std::path::Path;

/// The mount points beneath `dir` in this process's (the host's) mount
/// namespace, e.g. what a killed build left mounted.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(&dir))
        .collect()
}

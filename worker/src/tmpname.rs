//! Names for the temporary file written beside a file before it is renamed
//! over it. The pid alone is not enough: builds running at once in one
//! process (`kiln compose build`'s services) may save the same file (the
//! checksum memo of a context two services share) at the same moment, and
//! two threads writing one temporary file can rename a mix of both into
//! place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// `<file>.<ext>.<pid>.<n>`-like: a name beside `file` that no other
/// writer, in this process or another, uses at the same time.
pub(crate) fn beside(file: &Path, tag: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{tag}{}", unique()));
    file.with_file_name(name)
}

/// `<pid>.<n>`: unique among the writers of this process and of the others
/// running now.
pub(crate) fn unique() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

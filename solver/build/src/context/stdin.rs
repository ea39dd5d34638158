//! A context on stdin: buildx peeks at the first 1024 bytes and takes a
//! tar (or a compressed stream) as the context, anything else as a bare
//! Dockerfile.

use std::io::{Cursor, Read};
use std::path::Path;

use kiln_cache::Root;

use super::{scratch, InputError};
use crate::BuildError;

/// buildx's `archiveHeaderSize * 2`.
const PEEK: usize = 1024;

/// What stdin held.
pub(super) enum Stdin {
    /// The unpacked context.
    Context(tempfile::TempDir),
    /// A Dockerfile's text.
    Dockerfile(Vec<u8>),
}

/// Reads stdin and unpacks it when it is an archive.
pub(super) fn read(root: &Root) -> Result<Stdin, BuildError> {
    let mut input = std::io::stdin().lock();
    let mut head = Vec::with_capacity(PEEK);
    (&mut input)
        .take(PEEK as u64)
        .read_to_end(&mut head)
        .map_err(InputError::Stdin)?;
    if !is_archive(&head) {
        let mut text = head;
        input.read_to_end(&mut text).map_err(InputError::Stdin)?;
        return Ok(Stdin::Dockerfile(text));
    }
    let tmp = scratch(root, "context-")?;
    unpack(Cursor::new(head).chain(input), tmp.path())?;
    Ok(Stdin::Context(tmp))
}

/// Unpacks a tar, whatever its compression, into `dest`.
pub(super) fn unpack<R: Read + 'static>(r: R, dest: &Path) -> Result<(), BuildError> {
    let r = kiln_worker::fileops::unpack::decompressing(r).map_err(InputError::Unpack)?;
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    // tar's unpack refuses `..` and absolute entries, and entries through
    // symlinks it has itself unpacked.
    ar.unpack(dest).map_err(InputError::Unpack)?;
    Ok(())
}

/// buildx's `isArchive`: a compression magic (gzip, bzip2, xz; zstd too,
/// which kiln reads as well) or a tar header that reads cleanly.
pub(super) fn is_archive(head: &[u8]) -> bool {
    const MAGIC: [&[u8]; 4] = [
        &[0x42, 0x5A, 0x68],
        &[0x1F, 0x8B, 0x08],
        &[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00],
        &[0x28, 0xB5, 0x2F, 0xFD],
    ];
    if MAGIC.iter().any(|m| head.starts_with(m)) {
        return true;
    }
    if head.len() < 512 {
        return false;
    }
    let mut ar = tar::Archive::new(Cursor::new(head));
    let Ok(mut entries) = ar.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dockerfile_is_not_an_archive() {
        assert!(!super::is_archive(b"FROM scratch\nCOPY . /\n"));
        assert!(super::is_archive(&[0x1f, 0x8b, 0x08, 0, 0]));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, "a", &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(super::is_archive(&bytes[..1024.min(bytes.len())]));
    }
}

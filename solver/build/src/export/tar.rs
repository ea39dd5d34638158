//! `type=tar`: the root filesystem(s) of [`super::local`] as one tar,
//! complete or not at all.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_cache::Root;

use super::{Built, ExportError, FsOptions};

/// Writes the tar at `dest`: assembled in a temporary file beside it and
/// renamed into place, so `dest` is whole or untouched; `-` streams it to
/// stdout (buildx's `dest=-` and `-o -`). With `epoch`
/// (`SOURCE_DATE_EPOCH`) every entry carries it as its mtime.
pub fn write(
    root: &Root,
    built: &[Built],
    dest: &Path,
    epoch: Option<i64>,
) -> Result<(), ExportError> {
    write_with(root, built, dest, epoch, &FsOptions::default(), &[])
}

/// [`write`] with each platform's attestation files, as
/// [`super::local::write_with`] writes them.
pub fn write_with(
    root: &Root,
    built: &[Built],
    dest: &Path,
    epoch: Option<i64>,
    opts: &FsOptions,
    attestations: &[Vec<crate::attest::Predicate>],
) -> Result<(), ExportError> {
    let tmp = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(root.tmp_dir())?;
    let fs = tmp.path().join("rootfs");
    super::local::write_with(root, built, &fs, None, opts, attestations)?;
    if let Some(e) = epoch {
        // A folder of this export's own: everything in it was written.
        super::epoch::set_tree_times(&fs, e, None)?;
    }
    if dest.as_os_str() == "-" {
        let stdout = std::io::stdout().lock();
        let mut t = ::tar::Builder::new(std::io::BufWriter::new(stdout));
        t.follow_symlinks(false);
        t.append_dir_all(".", &fs)?;
        let mut w = t.into_inner()?;
        std::io::Write::flush(&mut w)?;
        return Ok(());
    }
    // Beside the destination (so the rename stays on one filesystem),
    // removed if anything fails; mode as `File::create` gives (umask
    // applies), not the 0600 of a default temp file.
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let partial = tempfile::Builder::new()
        .prefix(".kiln-partial-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| ExportError::context(format!("creating {}", dest.display()))(e.into()))?;
    let mut t = ::tar::Builder::new(std::io::BufWriter::new(partial.as_file()));
    t.follow_symlinks(false);
    let written = t.append_dir_all(".", &fs).and_then(|()| {
        t.into_inner()?
            .into_inner()
            .map_err(|e| std::io::Error::other(e.error().to_string()))?
            .sync_all()
    });
    if let Err(e) = written {
        return Err(ExportError::Invalid(format!(
            "writing {}: {e}",
            partial.path().display()
        )));
    }
    partial.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

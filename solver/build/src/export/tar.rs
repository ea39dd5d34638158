//! `type=tar`: the root filesystem(s) of [`super::local`] as one tar,
//! complete or not at all.

use std::path::Path;

use kiln_cache::Root;

use super::{Built, ExportError};

/// Writes the tar at `dest`: assembled beside it and renamed into place.
pub fn write(root: &Root, built: &[Built], dest: &Path) -> Result<(), ExportError> {
    let tmp = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(root.tmp_dir())?;
    let fs = tmp.path().join("rootfs");
    super::local::write(root, built, &fs)?;
    let partial = dest.with_extension("kiln-partial");
    let file = std::fs::File::create(&partial)
        .map_err(|e| ExportError::context(format!("creating {}", partial.display()))(e.into()))?;
    let mut t = ::tar::Builder::new(std::io::BufWriter::new(file));
    t.follow_symlinks(false);
    let written = t.append_dir_all(".", &fs).and_then(|()| {
        t.into_inner()?
            .into_inner()
            .map_err(|e| std::io::Error::other(e.error().to_string()))?
            .sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(ExportError::Invalid(format!(
            "writing {}: {e}",
            partial.display()
        )));
    }
    std::fs::rename(&partial, dest)?;
    Ok(())
}

//! `type=tar`: the root filesystem(s) of [`super::local`] as one tar,
//! complete or not at all.
//!
//! The tar is a function of the tree alone, as fsutil's `WriteTar` that
//! BuildKit's tar exporter uses: entries in lexical walk order (each
//! folder's names sorted by bytes, a folder before its contents), names
//! relative without `./` and no entry for the top, folders ending in `/`,
//! a second path of a hard-linked file as a link to the first, and
//! headers carrying only mode, owner, size and mtime (no atime, ctime or
//! user names). So two builds with the same `SOURCE_DATE_EPOCH` and
//! `rewrite-timestamp=true` give the same bytes.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
        append_tree(&mut t, &fs)?;
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
    let written = append_tree(&mut t, &fs).and_then(|()| {
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

/// Appends everything under `top` (not `top` itself) to `t` in the order
/// and with the headers the module documentation gives.
pub fn append_tree<W: Write>(t: &mut ::tar::Builder<W>, top: &Path) -> std::io::Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    append_dir(t, top, Path::new(""), &mut links)
}

fn append_dir<W: Write>(
    t: &mut ::tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        let path = dir.join(&name);
        let rel = rel.join(&name);
        let md = std::fs::symlink_metadata(&path)?;
        let ft = md.file_type();
        let mut h = ::tar::Header::new_ustar();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(u64::from(md.uid()));
        h.set_gid(u64::from(md.gid()));
        h.set_mtime(u64::try_from(md.mtime()).unwrap_or(0));
        h.set_size(0);
        if ft.is_dir() {
            h.set_entry_type(::tar::EntryType::Directory);
            let mut name = rel.as_os_str().to_os_string();
            name.push("/");
            t.append_data(&mut h, Path::new(&name), std::io::empty())?;
            append_dir(t, &path, &rel, links)?;
        } else if ft.is_symlink() {
            h.set_entry_type(::tar::EntryType::Symlink);
            let target = std::fs::read_link(&path)?;
            t.append_link(&mut h, &rel, &target)?;
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            if md.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    h.set_entry_type(::tar::EntryType::Link);
                    t.append_link(&mut h, &rel, first)?;
                    continue;
                }
                links.insert(key, rel.clone());
            }
            h.set_entry_type(::tar::EntryType::Regular);
            h.set_size(md.len());
            let f = std::fs::File::open(&path)?;
            // Exactly the size the header says, even if the file changed.
            t.append_data(&mut h, &rel, std::io::Read::take(f, md.len()))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            h.set_entry_type(if ft.is_char_device() {
                ::tar::EntryType::Char
            } else if ft.is_block_device() {
                ::tar::EntryType::Block
            } else {
                ::tar::EntryType::Fifo
            });
            if !ft.is_fifo() {
                let rdev = md.rdev();
                h.set_device_major(major(rdev))?;
                h.set_device_minor(minor(rdev))?;
            }
            t.append_data(&mut h, &rel, std::io::empty())?;
        }
        // Sockets are not archived (as Go's tar writer refuses them).
    }
    Ok(())
}

/// glibc's `major()` of a `dev_t`.
fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

/// glibc's `minor()` of a `dev_t`.
fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(top: &Path) -> Vec<u8> {
        let mut t = ::tar::Builder::new(Vec::new());
        append_tree(&mut t, top).expect("tar");
        t.into_inner().expect("finish")
    }

    #[test]
    fn entries_are_sorted_and_hard_links_refer_to_the_first() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        std::fs::create_dir_all(p.join("b/c")).expect("mkdir");
        std::fs::write(p.join("b/c/z"), b"z").expect("write");
        std::fs::write(p.join("a"), b"a").expect("write");
        std::fs::write(p.join("b.txt"), b"bt").expect("write");
        std::fs::hard_link(p.join("a"), p.join("c")).expect("link");
        std::os::unix::fs::symlink("a", p.join("d")).expect("symlink");
        let bytes = tar_of(p);
        let mut ar = ::tar::Archive::new(bytes.as_slice());
        let got: Vec<(String, char)> = ar
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let kind = match e.header().entry_type() {
                    ::tar::EntryType::Directory => 'd',
                    ::tar::EntryType::Link => 'h',
                    ::tar::EntryType::Symlink => 'l',
                    _ => 'f',
                };
                (String::from_utf8_lossy(&e.path_bytes()).into_owned(), kind)
            })
            .collect();
        let want: Vec<(String, char)> = [
            ("a", 'f'),
            ("b/", 'd'),
            ("b/c/", 'd'),
            ("b/c/z", 'f'),
            ("b.txt", 'f'),
            ("c", 'h'),
            ("d", 'l'),
        ]
        .iter()
        .map(|(n, k)| (n.to_string(), *k))
        .collect();
        assert_eq!(got, want);
        // The same tree gives the same bytes.
        assert_eq!(bytes, tar_of(p));
    }
}

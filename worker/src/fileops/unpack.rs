//! ADD of a local archive: detection by content (gzip, bzip2, xz, zstd or
//! plain tar; the file's name does not matter) and extraction with docker's
//! rules: entries merge into the destination, an existing entry is replaced
//! unless both are directories, missing parents are implied (0755, root),
//! ownership comes from the archive unless `--chown` is given.
//!
//! The archive is hostile input. Entry names are cleaned and must stay below
//! the destination (`../x` is refused; a leading `/` is dropped); the parent
//! of each entry is resolved inside the destination, so a symlink extracted
//! earlier can only lead within it (absolute targets restart at the
//! destination, a relative one climbing out is refused, as docker's
//! extraction refuses breakouts); hard link targets obey the same rules;
//! files are created with `O_NOFOLLOW|O_EXCL` after whatever was at their
//! place is removed, never written through.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::chown::Owner;
use super::copier::mkdir_all;
use super::error::{io_err, FileOpsError, Result};
use super::meta::{self, Time};
use super::rootpath::{is_absent, resolve, strip};
use kiln_cache::media::{self, Compression};

use super::CopyReport;

/// The decoder an ADD archive needs: a layer compression (the one
/// [`Compression`] vocabulary, sniffed by the image store's table) or one
/// of the two older formats ADD also accepts and layers never use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Layer(Compression),
    Bzip2,
    Xz,
}

/// Recognise a compressed stream by its magic number.
pub fn detect(head: &[u8]) -> Codec {
    if head.starts_with(b"BZh") {
        Codec::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Codec::Xz
    } else {
        Codec::Layer(media::sniff_compression(head))
    }
}

/// A decompressed view of `file`, whatever its compression.
fn decompressed(file: File) -> io::Result<Box<dyn Read>> {
    decompressing(file)
}

/// A decompressed view of any stream (a build context on stdin or from a
/// URL), its compression recognised by its magic number.
pub fn decompressing<R: Read + 'static>(r: R) -> io::Result<Box<dyn Read>> {
    let mut buf = BufReader::with_capacity(64 * 1024, r);
    let kind = detect(buf.fill_buf()?);
    Ok(match kind {
        Codec::Layer(Compression::None) => Box::new(buf),
        Codec::Layer(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Codec::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buf)),
        Codec::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buf)),
        Codec::Layer(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
    })
}

/// Whether `path` (a resolved host path) is a regular file holding a tar
/// archive, possibly compressed: its first header must read cleanly, as
/// docker checks. Anything else (unreadable, empty, not a tar) is "no".
pub fn is_archive(path: &Path) -> bool {
    let Ok(md) = fs::symlink_metadata(path) else {
        return false;
    };
    if !md.file_type().is_file() {
        return false;
    }
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    let Ok(r) = decompressed(f) else {
        return false;
    };
    let mut ar = tar::Archive::new(r);
    let Ok(mut entries) = ar.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// Clean a tar name into components below the destination; `None` when it
/// climbs out (docker: "invalid entry name"). A leading `/` is dropped.
fn local_components(name: &[u8]) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Some(out)
}

fn breakout(what: String) -> FileOpsError {
    FileOpsError::Breakout { what }
}

/// Resolve the parent of `comps` inside `dest` (refusing escapes) and return
/// the host path of the entry itself, its final component not followed.
fn entry_path(dest: &Path, comps: &[OsString], shown: &str) -> Result<PathBuf> {
    let (last, parents) = match comps.split_last() {
        Some(x) => x,
        None => return Ok(dest.to_path_buf()),
    };
    let mut rel = PathBuf::new();
    for c in parents {
        rel.push(c);
    }
    let r = resolve(dest, &rel, true)?;
    if r.clamped {
        return Err(breakout(format!(
            "{shown:?} resolves outside the destination"
        )));
    }
    Ok(r.host.join(last))
}

/// Extract the archive at `archive` (a resolved host path; `shown` names it
/// in errors) into `dest`, a directory already resolved inside its root.
pub fn extract(
    archive: &Path,
    shown: &str,
    dest: &Path,
    owner: Option<Owner>,
    report: &mut CopyReport,
) -> Result<()> {
    let arch_err = |source: io::Error| FileOpsError::Archive {
        archive: shown.to_string(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(archive)
        .map_err(arch_err)?;
    let mut ar = tar::Archive::new(decompressed(f).map_err(arch_err)?);
    let mut dirs: Vec<(PathBuf, Time)> = Vec::new();

    for entry in ar.entries().map_err(arch_err)? {
        let mut entry = entry.map_err(arch_err)?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let raw_name = entry.path_bytes().into_owned();
        let name_shown = String::from_utf8_lossy(&raw_name).into_owned();
        let comps = local_components(&raw_name)
            .ok_or_else(|| breakout(format!("invalid entry name {name_shown:?}")))?;
        if comps.is_empty() {
            continue;
        }
        let dst = entry_path(dest, &comps, &name_shown)?;

        let link_target = if kind == tar::EntryType::Link {
            let ln = entry
                .link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default();
            let ln_shown = String::from_utf8_lossy(&ln).into_owned();
            let tcomps = local_components(&ln)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| breakout(format!("invalid hardlink target {ln_shown:?}")))?;
            Some(entry_path(dest, &tcomps, &ln_shown)?)
        } else {
            None
        };

        let shown_dst = strip(dest, &dst);
        let existing = match fs::symlink_metadata(&dst) {
            Ok(m) => Some(m),
            Err(e) if is_absent(&e) => None,
            Err(e) => return Err(io_err("lstat", shown_dst)(e)),
        };
        if let Some(m) = &existing {
            if !(m.is_dir() && kind == tar::EntryType::Directory) {
                let r = if m.is_dir() {
                    fs::remove_dir_all(&dst)
                } else {
                    fs::remove_file(&dst)
                };
                r.map_err(io_err("remove", shown_dst.clone()))?;
            }
        }
        if let Some(parent) = dst.parent() {
            if parent.starts_with(dest) && parent != dest {
                mkdir_all(dest, parent, 0o755, None, None)?;
            }
        }

        let header = entry.header().clone();
        let mode = header.mode().map_err(arch_err)? & 0o7777;
        let mtime = Time {
            sec: header.mtime().map_err(arch_err)? as i64,
            nsec: 0,
        };
        match kind {
            tar::EntryType::Directory => {
                if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    fs::create_dir(&dst).map_err(io_err("mkdir", shown_dst.clone()))?;
                    report.dirs += 1;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dst)
                    .map_err(io_err("create", shown_dst.clone()))?;
                let n = crate::sparse::write_stream(&mut entry, &mut out).map_err(arch_err)?;
                report.files += 1;
                report.bytes += n;
            }
            tar::EntryType::Symlink => {
                let ln = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                symlink(OsStr::from_bytes(&ln), &dst)
                    .map_err(io_err("symlink", shown_dst.clone()))?;
                report.symlinks += 1;
            }
            tar::EntryType::Link => {
                let target = link_target
                    .as_ref()
                    .ok_or_else(|| breakout(name_shown.clone()))?;
                fs::hard_link(target, &dst).map_err(io_err("link", shown_dst.clone()))?;
                report.hardlinks += 1;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let fmt = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let dev = libc::makedev(major, minor);
                meta::mknod(&dst, fmt | mode, dev).map_err(io_err("mknod", shown_dst.clone()))?;
                report.others += 1;
            }
            other => {
                return Err(FileOpsError::Archive {
                    archive: shown.to_string(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "unhandled tar header type {:?} for {name_shown:?}",
                            other.as_byte() as char
                        ),
                    ),
                })
            }
        }

        let ids = owner.unwrap_or(Owner {
            uid: u32::try_from(header.uid().unwrap_or(0)).unwrap_or(0),
            gid: u32::try_from(header.gid().unwrap_or(0)).unwrap_or(0),
        });
        crate::userns::tolerate_unmapped(lchown(&dst, Some(ids.uid), Some(ids.gid)))
            .map_err(io_err("chown", shown_dst.clone()))?;

        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                if meta::is_private_xattr(key) {
                    continue;
                }
                // Best effort, as docker's BestEffortXattrs: some
                // filesystems refuse some namespaces.
                let _ = meta::set_xattr(&dst, key, ext.value_bytes());
            }
        }

        let target_is_symlink = link_target
            .as_ref()
            .and_then(|t| fs::symlink_metadata(t).ok())
            .is_some_and(|m| m.file_type().is_symlink());
        if kind != tar::EntryType::Symlink && !target_is_symlink {
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", shown_dst.clone()))?;
        }
        match kind {
            tar::EntryType::Directory => dirs.push((dst, mtime)),
            _ if target_is_symlink => {}
            _ => meta::lutimes(&dst, mtime, mtime).map_err(io_err("utimes", shown_dst))?,
        }
    }
    for (d, t) in dirs {
        meta::lutimes(&d, t, t).map_err(io_err("utimes", strip(dest, &d)))?;
    }
    Ok(())
}

//! Layer diffs: an overlay upper dir, written out as an OCI layer tar.
//!
//! The upper dir of a snapshot mounted with `index=off,metacopy=off,
//! redirect_dir=off` holds exactly what a step changed, so the diff is a walk
//! of it: overlay whiteouts (char 0/0) become `.wh.NAME` entries and opaque
//! dirs their `.wh..wh..opq` marker, as the OCI image spec has it. The tar is
//! streamed through sha256 (the diff_id) and, when asked, through gzip and a
//! second sha256 (the blob digest), so a layer is never held in memory.
//!
//! Headers follow what BuildKit (containerd's archive writer) emits: ustar
//! headers with PAX records only where ustar cannot say it (long names,
//! xattrs), modes without type bits, mtimes truncated to the second, only
//! `security.capability` among xattrs, directories named with a trailing
//! slash, hard links within the layer as tar hard links. One deliberate
//! difference: user and group *names* are left empty (BuildKit looks the
//! ids up in the builder's own /etc/passwd, which says nothing about the
//! image), so the same upper dir gives the same bytes on any host.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_cache::pgzip::ParGzEncoder;
use kiln_cache::{compress, media};
use sha2::{Digest, Sha256};

use crate::snapshot::{opaque_xattr, Finished, LowerView, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use crate::sys;

/// What can go wrong writing a diff.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Reading the upper dir, or writing the output, failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiffError {
    let path = path.to_path_buf();
    move |source| DiffError::Io { op, path, source }
}

/// How the blob is compressed: the image store's one vocabulary. Building
/// only needs the diff_id and the uncompressed layer; exporting and pushing
/// compress, at the store's levels (gzip 6, zstd 3), so a layer written here
/// has the bytes a conversion in the store would give.
pub use kiln_cache::media::Compression;

/// What to leave out of a diff and what to compare against.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Paths (relative to the upper dir) that must never enter the layer:
    /// mount points the sandbox created, e.g. `etc/hosts`. Their parents are
    /// still written if something else in them changed.
    pub exclude: Vec<PathBuf>,
    /// The layer dirs under the upper, lowest first. When given, a directory
    /// that overlay merely copied up (same mode, owner and mtime as below, not
    /// opaque, nothing written beneath it) is left out, as BuildKit's overlay
    /// differ does; without them every directory of the upper is written.
    pub lowers: Vec<PathBuf>,
}

/// The identities of a written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigest {
    /// `sha256:…` of the uncompressed tar: the image config's diff_id.
    pub diff_id: String,
    /// `sha256:…` of the blob as written to the output (== diff_id when
    /// uncompressed): the manifest's layer digest.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The uncompressed tar's size in bytes.
    pub tar_size: u64,
    /// The OCI media type matching the compression.
    pub media_type: &'static str,
    /// How many entries the tar holds; 0 means the step changed nothing.
    pub entries: u64,
}

struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            n: 0,
        }
    }
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.n,
        )
    }
}

enum Sink<W: Write> {
    /// Uncompressed: the blob digest is the diff_id, so no second hash.
    Plain(W),
    Gzip(Box<ParGzEncoder<Hashing<W>>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, Hashing<W>>>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

/// One entry to write, planned before writing so unchanged directories can
/// be dropped without buffering any content.
#[derive(Debug)]
enum Item {
    Node { rel: PathBuf, md: Metadata },
    Whiteout { rel: PathBuf, mtime: i64 },
    Opaque { dir: PathBuf, mtime: i64 },
}

/// Writes the diff of `upper` as a layer tar into `out` (compressed as
/// asked) and returns its digests. Deterministic: the same upper dir gives
/// the same bytes.
pub fn write_layer<W: Write>(
    upper: &Path,
    options: &DiffOptions,
    compression: Compression,
    out: W,
) -> Result<(LayerDigest, W), DiffError> {
    let view = LowerView::new(&options.lowers);
    let mut items = Vec::new();
    plan_dir(upper, Path::new(""), options, &view, &mut items)?;
    write_items(upper, &items, compression, out)
}

/// Writes the diff between a full root filesystem (a plain-copy snapshot)
/// and the layer dirs it was copied from: what changed, what is new, and a
/// `.wh.` whiteout for every name that is gone. Files count as unchanged when
/// type, mode, owner, size, mtime (to the nanosecond; copies keep it) and
/// link target match, as containerd's walking differ judges them.
pub fn write_layer_compare<W: Write>(
    rootfs: &Path,
    options: &DiffOptions,
    compression: Compression,
    out: W,
) -> Result<(LayerDigest, W), DiffError> {
    let view = LowerView::new(&options.lowers);
    let mut items = Vec::new();
    plan_compare(rootfs, Path::new(""), options, &view, &mut items)?;
    write_items(rootfs, &items, compression, out)
}

/// Diffs a finished snapshot, whichever way it was made.
pub fn write_snapshot<W: Write>(
    snapshot: &Finished,
    exclude: &[PathBuf],
    compression: Compression,
    out: W,
) -> Result<(LayerDigest, W), DiffError> {
    match snapshot {
        Finished::Overlay { upper, lowers } => {
            let o = DiffOptions {
                exclude: exclude.to_vec(),
                lowers: lowers.clone(),
            };
            write_layer(upper, &o, compression, out)
        }
        Finished::Copy { rootfs, lowers } => {
            let o = DiffOptions {
                exclude: exclude.to_vec(),
                lowers: lowers.clone(),
            };
            write_layer_compare(rootfs, &o, compression, out)
        }
    }
}

/// [`write_snapshot`], and for a plain-copy or linked snapshot also the
/// overlay-native layer dir of the same changes in `upper` (created; the
/// changed files hard-linked from the rootfs, which is thrown away after),
/// so the layer is adopted as overlay's upper dir is instead of unpacked
/// from its blob by the next step, and keeps its mtimes to the nanosecond
/// as a copy does (an incremental COPY compares them). `upper` is `None`
/// when it could not be made (the blob stays the way to the layer).
pub fn write_snapshot_with_upper<W: Write>(
    snapshot: &Finished,
    exclude: &[PathBuf],
    compression: Compression,
    out: W,
    upper: &Path,
) -> Result<(LayerDigest, W, Option<PathBuf>), DiffError> {
    let Finished::Copy { rootfs, lowers } = snapshot else {
        let (d, w) = write_snapshot(snapshot, exclude, compression, out)?;
        return Ok((d, w, None));
    };
    let o = DiffOptions {
        exclude: exclude.to_vec(),
        lowers: lowers.clone(),
    };
    let view = LowerView::new(&o.lowers);
    let mut items = Vec::new();
    plan_compare(rootfs, Path::new(""), &o, &view, &mut items)?;
    let (digest, out) = write_items(rootfs, &items, compression, out)?;
    let made = match materialize(rootfs, &items, upper) {
        Ok(()) => Some(upper.to_path_buf()),
        Err(_) => {
            let _ = std::fs::remove_dir_all(upper);
            None
        }
    };
    Ok((digest, out, made))
}

/// Lays `items` (planned over `rootfs`) out as an overlay-native layer dir.
fn materialize(rootfs: &Path, items: &[Item], upper: &Path) -> io::Result<()> {
    use crate::snapshot::{copy_meta, copy_node};
    let other = |e: crate::snapshot::SnapshotError| io::Error::other(e.to_string());
    std::fs::create_dir(upper)?;
    // Directories get their metadata last, deepest first: adding their
    // entries changes their times.
    let mut dirs: Vec<(&Path, &Metadata)> = Vec::new();
    for item in items {
        match item {
            Item::Node { rel, md } => {
                let (src, dst) = (rootfs.join(rel), upper.join(rel));
                if md.is_dir() {
                    std::fs::create_dir(&dst)?;
                    dirs.push((rel, md));
                } else if !(md.is_file() && std::fs::hard_link(&src, &dst).is_ok()) {
                    copy_node(&src, &dst, md).map_err(other)?;
                }
            }
            Item::Whiteout { rel, .. } => {
                sys::mknod(&upper.join(rel), libc::S_IFCHR | 0o600, 0)?;
            }
            Item::Opaque { dir, .. } => {
                sys::lsetxattr(&upper.join(dir), opaque_xattr().as_bytes(), b"y")?;
            }
        }
    }
    for (rel, md) in dirs.iter().rev() {
        copy_meta(&rootfs.join(rel), &upper.join(rel), md).map_err(other)?;
    }
    Ok(())
}

fn write_items<W: Write>(
    base: &Path,
    items: &[Item],
    compression: Compression,
    out: W,
) -> Result<(LayerDigest, W), DiffError> {
    let sink = match compression {
        Compression::None => Sink::Plain(out),
        // A fixed gzip header (no mtime, OS "unknown"), as the store's
        // conversions write it: the same tar gives the same blob anywhere.
        // Deflated in parallel blocks (`pgzip`), whose bytes do not depend
        // on the number of threads.
        Compression::Gzip => Sink::Gzip(Box::new(ParGzEncoder::new(
            Hashing::new(out),
            compress::GZIP_LEVEL,
        ))),
        Compression::Zstd => Sink::Zstd(Box::new(
            zstd::stream::write::Encoder::new(Hashing::new(out), compress::ZSTD_LEVEL).map_err(
                |e| DiffError::Io {
                    op: "write",
                    path: PathBuf::from("<layer>"),
                    source: e,
                },
            )?,
        )),
    };
    let mut builder = tar::Builder::new(Hashing::new(sink));
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let entries = items.len() as u64;
    let werr = |e| DiffError::Io {
        op: "write",
        path: PathBuf::from("<layer>"),
        source: e,
    };
    for item in items {
        match item {
            Item::Whiteout { rel, mtime } => {
                let mut name_b = Vec::new();
                if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                    name_b.extend_from_slice(parent.as_os_str().as_bytes());
                    name_b.push(b'/');
                }
                name_b.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                name_b.extend_from_slice(rel.file_name().unwrap_or_default().as_bytes());
                marker(&mut builder, &name_b, *mtime, 0o600).map_err(werr)?;
            }
            Item::Opaque { dir, mtime } => {
                let mut name_b = dir.as_os_str().as_bytes().to_vec();
                name_b.push(b'/');
                name_b.extend_from_slice(WHITEOUT_OPAQUE.as_bytes());
                marker(&mut builder, &name_b, *mtime, 0o755).map_err(werr)?;
            }
            Item::Node { rel, md } => {
                write_node(&mut builder, base, rel, md, &mut inodes)?;
            }
        }
    }
    let hashing = builder.into_inner().map_err(werr)?;
    let (sink, diff_id, tar_size) = hashing.finish();
    let (digest, size, out, media_type) = match sink {
        Sink::Plain(out) => (diff_id.clone(), tar_size, out, media::OCI_LAYER),
        Sink::Gzip(gz) => {
            let h = gz.finish().map_err(werr)?;
            let (out, d, n) = h.finish();
            (d, n, out, media::OCI_LAYER_GZIP)
        }
        Sink::Zstd(z) => {
            let h = z.finish().map_err(werr)?;
            let (out, d, n) = h.finish();
            (d, n, out, media::OCI_LAYER_ZSTD)
        }
    };
    Ok((
        LayerDigest {
            diff_id,
            digest,
            size,
            tar_size,
            media_type,
            entries,
        },
        out,
    ))
}

fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn same_dir_meta(a: &Metadata, b: &Metadata) -> bool {
    a.is_dir()
        && b.is_dir()
        && a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
}

/// Whether a non-directory is unchanged from its lower counterpart.
fn same_node(new: &Metadata, new_path: &Path, old: &Metadata, old_path: &Path) -> bool {
    if new.file_type() != old.file_type()
        || new.mode() != old.mode()
        || new.uid() != old.uid()
        || new.gid() != old.gid()
        || new.len() != old.len()
        || new.mtime() != old.mtime()
        || new.mtime_nsec() != old.mtime_nsec()
        || new.rdev() != old.rdev()
    {
        return false;
    }
    if new.file_type().is_symlink() {
        return std::fs::read_link(new_path).ok() == std::fs::read_link(old_path).ok();
    }
    true
}

/// Plans the comparison of `rootfs/rel` with the lowers' merged view.
fn plan_compare(
    rootfs: &Path,
    rel: &Path,
    options: &DiffOptions,
    view: &LowerView,
    items: &mut Vec<Item>,
) -> Result<bool, DiffError> {
    let abs = rootfs.join(rel);
    let mut names: Vec<OsString> = std::fs::read_dir(&abs)
        .map_err(io_err("readdir", &abs))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err("readdir", &abs))?;
    let dir_mtime = std::fs::symlink_metadata(&abs)
        .map(|m| m.mtime())
        .unwrap_or(0);
    let lower_is_dir = rel.as_os_str().is_empty()
        || view
            .lookup(rel)
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_dir());
    let gone: Vec<OsString> = if lower_is_dir {
        let present: std::collections::HashSet<&[u8]> =
            names.iter().map(|n| n.as_bytes()).collect();
        view.children(rel)
            .into_iter()
            .filter(|n| !present.contains(n.as_bytes()))
            .collect()
    } else {
        Vec::new()
    };
    names.extend(gone.iter().cloned());
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    names.dedup();
    let mut any = false;
    for name in names {
        let crel = rel.join(&name);
        if options.exclude.iter().any(|e| e == &crel) {
            continue;
        }
        if gone.contains(&name) {
            items.push(Item::Whiteout {
                rel: crel,
                mtime: dir_mtime,
            });
            any = true;
            continue;
        }
        let cabs = rootfs.join(&crel);
        let md = std::fs::symlink_metadata(&cabs).map_err(io_err("stat", &cabs))?;
        let lower = if lower_is_dir {
            view.lookup(&crel)
        } else {
            None
        };
        let lmd = lower
            .as_ref()
            .and_then(|p| std::fs::symlink_metadata(p).ok().map(|m| (p.clone(), m)));
        if md.is_dir() {
            let at = items.len();
            items.push(Item::Node {
                rel: crel.clone(),
                md: md.clone(),
            });
            let sub_view_ok = lmd.as_ref().is_some_and(|(_, m)| m.is_dir());
            let children = if sub_view_ok {
                plan_compare(rootfs, &crel, options, view, items)?
            } else {
                plan_compare(rootfs, &crel, options, &LowerView::new(&[]), items)?;
                true
            };
            let unchanged = !children && lmd.as_ref().is_some_and(|(_, m)| same_dir_meta(m, &md));
            if unchanged {
                items.truncate(at);
            } else {
                any = true;
            }
            continue;
        }
        if let Some((lp, lm)) = &lmd {
            if same_node(&md, &cabs, lm, lp) {
                continue;
            }
        }
        items.push(Item::Node { rel: crel, md });
        any = true;
    }
    Ok(any)
}

/// Plans `dir` (relative `rel` inside the upper) depth first, names sorted by
/// bytes as Go's filepath.Walk does; returns whether anything was planned.
fn plan_dir(
    upper: &Path,
    rel: &Path,
    options: &DiffOptions,
    view: &LowerView,
    items: &mut Vec<Item>,
) -> Result<bool, DiffError> {
    let abs = upper.join(rel);
    let mut names: Vec<OsString> = std::fs::read_dir(&abs)
        .map_err(io_err("readdir", &abs))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err("readdir", &abs))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut any = false;
    for name in names {
        let crel = rel.join(&name);
        if options.exclude.iter().any(|e| e == &crel) {
            continue;
        }
        let cabs = upper.join(&crel);
        let md = std::fs::symlink_metadata(&cabs).map_err(io_err("stat", &cabs))?;
        if is_whiteout(&md) {
            items.push(Item::Whiteout {
                rel: crel,
                mtime: md.mtime(),
            });
            any = true;
            continue;
        }
        if md.is_dir() {
            let opaque = sys::lgetxattr(&cabs, opaque_xattr())
                .map_err(io_err("getxattr", &cabs))?
                .as_deref()
                == Some(b"y".as_slice());
            let at = items.len();
            let mtime = md.mtime();
            items.push(Item::Node {
                rel: crel.clone(),
                md: md.clone(),
            });
            if opaque {
                items.push(Item::Opaque {
                    dir: crel.clone(),
                    mtime,
                });
            }
            let children = plan_dir(upper, &crel, options, view, items)?;
            let unchanged = !opaque
                && !children
                && !options.lowers.is_empty()
                && view
                    .lookup(&crel)
                    .and_then(|p| std::fs::symlink_metadata(p).ok())
                    .is_some_and(|l| same_dir_meta(&l, &md));
            if unchanged {
                items.truncate(at);
            } else {
                any = true;
            }
            continue;
        }
        items.push(Item::Node { rel: crel, md });
        any = true;
    }
    Ok(any)
}

/// Writes a zero-length regular marker entry (whiteout or opaque), owned by
/// root. Docker's overlay differ gives whiteouts mode 0600 (and opaque
/// markers the directory's permissions); tools that list layers see it.
fn marker<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    mtime: i64,
    mode: u32,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime.max(0) as u64);
    let mut pax = Vec::new();
    set_name(&mut h, name, &mut pax);
    append_pax(builder, &pax)?;
    h.set_cksum();
    builder.append(&h, io::empty())
}

/// Puts `name` in the header, or in a PAX `path` record when ustar's
/// name+prefix cannot hold it (Go's writer does the same).
///
/// The round trip is compared without a trailing slash on either side: the
/// tar crate keeps a directory's slash in the header (0.4.46) where older
/// versions dropped it, and comparing it against the slash-less name sent
/// every directory down the PAX path (an extra 1 KiB header per directory,
/// and layers unlike BuildKit's, which has no PAX record for short names).
fn set_name(h: &mut tar::Header, name: &[u8], pax: &mut Vec<(String, Vec<u8>)>) {
    let as_path = Path::new(std::ffi::OsStr::from_bytes(name));
    if name.len() <= 255
        && h.set_path(as_path).is_ok()
        && trim_slash(h.path_bytes().as_ref()) == trim_slash(name)
    {
        // set_path drops a trailing slash; keep directories' slash as Go does
        if name.ends_with(b"/") && name.len() <= 100 {
            if let Some(u) = h.as_ustar_mut() {
                u.name = [0; 100];
                u.prefix = [0; 155];
                u.name[..name.len()].copy_from_slice(name);
            }
        }
        return;
    }
    pax.push(("path".into(), name.to_vec()));
    let short = &name[..name.len().min(99)];
    if let Some(u) = h.as_ustar_mut() {
        u.name = [0; 100];
        u.name[..short.len()].copy_from_slice(short);
        u.prefix = [0; 155];
    }
}

fn append_pax<W: Write>(
    builder: &mut tar::Builder<W>,
    pax: &[(String, Vec<u8>)],
) -> io::Result<()> {
    if pax.is_empty() {
        return Ok(());
    }
    builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

fn trim_slash(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"/").unwrap_or(b)
}

fn write_node<W: Write>(
    builder: &mut tar::Builder<W>,
    upper: &Path,
    rel: &Path,
    md: &Metadata,
    inodes: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), DiffError> {
    let abs = upper.join(rel);
    let werr = |e| DiffError::Io {
        op: "write",
        path: abs.clone(),
        source: e,
    };
    let ft = md.file_type();
    let mut h = tar::Header::new_ustar();
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(md.uid() as u64);
    h.set_gid(md.gid() as u64);
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(0);
    let mut name = rel.as_os_str().as_bytes().to_vec();
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut content = false;

    if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        name.push(b'/');
    } else if ft.is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        let target = std::fs::read_link(&abs).map_err(io_err("readlink", &abs))?;
        set_link(&mut h, target.as_os_str().as_bytes(), &mut pax);
    } else if ft.is_file() {
        if md.nlink() > 1 {
            if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                set_link(&mut h, first.as_os_str().as_bytes(), &mut pax);
            } else {
                inodes.insert((md.dev(), md.ino()), rel.to_path_buf());
            }
        }
        if h.entry_type() != tar::EntryType::Link {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            content = md.len() > 0;
        }
    } else if ft.is_char_device() || ft.is_block_device() {
        h.set_entry_type(if ft.is_char_device() {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        });
        let rdev = md.rdev();
        h.set_device_major(libc::major(rdev)).map_err(werr)?;
        h.set_device_minor(libc::minor(rdev)).map_err(werr)?;
    } else if ft.is_fifo() {
        h.set_entry_type(tar::EntryType::Fifo);
    } else {
        // Sockets cannot be archived; docker skips them too.
        return Ok(());
    }

    if !ft.is_symlink() {
        if let Some(cap) =
            sys::lgetxattr(&abs, "security.capability").map_err(io_err("getxattr", &abs))?
        {
            pax.push(("SCHILY.xattr.security.capability".into(), cap));
        }
    }
    set_name(&mut h, &name, &mut pax);
    append_pax(builder, &pax).map_err(werr)?;
    h.set_cksum();
    if content {
        let f = std::fs::File::open(&abs).map_err(io_err("open", &abs))?;
        // A file that changes size while being read would corrupt the tar;
        // the sandbox has exited by now, so this only guards against misuse.
        let mut limited = io::Read::take(f, md.len());
        builder.append(&h, &mut limited).map_err(werr)?;
    } else {
        builder.append(&h, io::empty()).map_err(werr)?;
    }
    Ok(())
}

fn set_link(h: &mut tar::Header, target: &[u8], pax: &mut Vec<(String, Vec<u8>)>) {
    if target.len() <= 100 {
        if let Some(u) = h.as_ustar_mut() {
            u.linkname = [0; 100];
            u.linkname[..target.len()].copy_from_slice(target);
            return;
        }
    }
    pax.push(("linkpath".into(), target.to_vec()));
    if let Some(u) = h.as_ustar_mut() {
        u.linkname = [0; 100];
        let short = &target[..target.len().min(100)];
        u.linkname[..short.len()].copy_from_slice(short);
    }
}

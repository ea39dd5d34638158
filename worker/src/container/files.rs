//! A container's files seen from outside it: the merged view of its upper
//! dir over the image's layers (read without mounting anything, so a
//! stopped container's files can be copied, diffed and exported), and
//! copies out of that view.

use std::io;
use std::path::{Path, PathBuf};

use crate::snapshot::LowerView;

/// Copies the directory `rel` of the merged `view` into the existing
/// directory `dest`: every entry with its owner, mode, times and xattrs
/// (whiteouts and opaque markers executed, not copied).
pub fn copy_merged(view: &LowerView, rel: &Path, dest: &Path) -> io::Result<()> {
    for name in view.children(rel) {
        let r = rel.join(&name);
        let Some(src) = view.lookup(&r) else {
            continue;
        };
        let md = std::fs::symlink_metadata(&src)?;
        let d = dest.join(&name);
        if md.is_dir() {
            if !d.is_dir() {
                std::fs::create_dir(&d)?;
            }
            copy_merged(view, &r, &d)?;
            crate::snapshot::copy_meta(&src, &d, &md).map_err(io::Error::other)?;
        } else {
            crate::snapshot::copy_node(&src, &d, &md).map_err(io::Error::other)?;
        }
    }
    Ok(())
}

/// The layers of a container's merged view, lowest first: the image's
/// layers and its upper dir, or the upper dir alone when the container
/// runs on a copy (the upper then holds the whole root).
pub fn view_layers(dir: &Path, lowers: &[PathBuf]) -> Vec<PathBuf> {
    let upper = dir.join("upper");
    if dir.join("copied").exists() {
        return vec![upper];
    }
    let mut v = lowers.to_vec();
    v.push(upper);
    v
}

/// Where a container's files are read from: the kernel's view of a running
/// container (`/proc/PID/root`, mounts included), or the merged layers of
/// a stopped one with its volume and bind mounts laid over them.
#[derive(Debug, Clone)]
pub struct ContainerFs {
    running_root: Option<PathBuf>,
    view: LowerView,
    /// (target relative to `/`, host source) of bind-like mounts.
    mounts: Vec<(PathBuf, PathBuf)>,
    upper: PathBuf,
}

/// One file of a container found on the host.
#[derive(Debug, Clone)]
pub enum Found {
    /// A plain host path (its children are plain too).
    Plain(PathBuf),
    /// A path in the merged layers; children come from the view.
    View { rel: PathBuf, host: PathBuf },
}

impl ContainerFs {
    /// The files of container `c` (whose folder is `dir`).
    pub fn of(c: &super::Container, dir: &Path) -> ContainerFs {
        let running_root = match (c.is_alive(), c.pid) {
            (true, Some(pid)) => Some(PathBuf::from(format!("/proc/{pid}/root"))),
            _ => None,
        };
        let mounts = c
            .mounts
            .iter()
            .filter_map(|m| match m {
                crate::sandbox::Mount::Bind { source, target, .. } => {
                    crate::snapshot::rel_components(target).map(|t| (t, source.clone()))
                }
                crate::sandbox::Mount::Tmpfs { .. } => None,
            })
            .collect();
        ContainerFs {
            running_root,
            view: LowerView::new(&view_layers(dir, &c.lowers)),
            mounts,
            upper: dir.join("upper"),
        }
    }

    /// True when the container runs (its files are read live).
    pub fn is_running(&self) -> bool {
        self.running_root.is_some()
    }

    /// The live root of a running container.
    pub fn running_root(&self) -> Option<&Path> {
        self.running_root.as_deref()
    }

    /// The container's upper dir (a stopped container's writes go here).
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// The merged view of the stopped container's layers.
    pub fn view(&self) -> &LowerView {
        &self.view
    }

    /// Finds `rel` (relative to the container's `/`), without following a
    /// final symlink.
    pub fn find(&self, rel: &Path) -> Option<Found> {
        if let Some(root) = &self.running_root {
            let p = root.join(rel);
            return std::fs::symlink_metadata(&p).ok().map(|_| Found::Plain(p));
        }
        let best = self
            .mounts
            .iter()
            .filter(|(t, _)| rel.starts_with(t))
            .max_by_key(|(t, _)| t.components().count());
        if let Some((t, src)) = best {
            let rest = rel.strip_prefix(t).unwrap_or(Path::new(""));
            let p = src.join(rest);
            return std::fs::symlink_metadata(&p).ok().map(|_| Found::Plain(p));
        }
        self.view.lookup(rel).map(|host| Found::View {
            rel: rel.to_path_buf(),
            host,
        })
    }

    /// The names in directory `f`.
    pub fn children(&self, f: &Found) -> Vec<std::ffi::OsString> {
        match f {
            Found::Plain(p) => {
                let mut v: Vec<_> = std::fs::read_dir(p)
                    .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                v.sort();
                v
            }
            Found::View { rel, .. } => self.view.children(rel),
        }
    }
}

impl Found {
    /// The host path holding this file's content and metadata.
    pub fn host(&self) -> &Path {
        match self {
            Found::Plain(p) => p,
            Found::View { host, .. } => host,
        }
    }
}

/// Writes the tree at `f` (a file or a directory) into `tar` under the
/// name `name` (empty: the directory's content at the top), recursing
/// through `fs`. Owners, modes, times and symlink targets are kept.
pub fn append_tree<W: io::Write>(
    fs: &ContainerFs,
    f: &Found,
    name: &Path,
    tar: &mut tar::Builder<W>,
) -> io::Result<()> {
    let md = std::fs::symlink_metadata(f.host())?;
    if !name.as_os_str().is_empty() {
        append_entry(f.host(), &md, name, tar)?;
    }
    if md.is_dir() {
        for child in fs.children(f) {
            let sub = match f {
                Found::Plain(p) => Found::Plain(p.join(&child)),
                Found::View { rel, .. } => match fs.view.lookup(&rel.join(&child)) {
                    Some(host) => Found::View {
                        rel: rel.join(&child),
                        host,
                    },
                    None => continue,
                },
            };
            append_tree(fs, &sub, &name.join(&child), tar)?;
        }
    }
    Ok(())
}

/// One tar entry for the host path `p` (metadata `md`) named `name`.
pub fn append_entry<W: io::Write>(
    p: &Path,
    md: &std::fs::Metadata,
    name: &Path,
    tar: &mut tar::Builder<W>,
) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut h = tar::Header::new_gnu();
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(u64::from(md.uid()));
    h.set_gid(u64::from(md.gid()));
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(0);
    let ft = md.file_type();
    if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        tar.append_data(&mut h, name, io::empty())
    } else if ft.is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        let target = std::fs::read_link(p)?;
        tar.append_link(&mut h, name, target)
    } else if ft.is_file() {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(md.len());
        let file = std::fs::File::open(p)?;
        tar.append_data(&mut h, name, file)
    } else {
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            return Ok(()); // sockets are not archived
        };
        h.set_entry_type(kind);
        let rdev = md.rdev();
        h.set_device_major(libc::major(rdev))?;
        h.set_device_minor(libc::minor(rdev))?;
        tar.append_data(&mut h, name, io::empty())
    }
}

/// `kiln export`: the container's whole filesystem (its layers and its
/// changes, not its volumes) as a tar written to `out`.
pub fn export<W: io::Write>(c: &super::Container, dir: &Path, out: W) -> io::Result<W> {
    let fs = ContainerFs {
        running_root: None,
        view: LowerView::new(&view_layers(dir, &c.lowers)),
        mounts: Vec::new(),
        upper: dir.join("upper"),
    };
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let root = Found::View {
        rel: PathBuf::new(),
        host: fs
            .view
            .lookup(Path::new(""))
            .unwrap_or_else(|| dir.join("upper")),
    };
    append_tree(&fs, &root, Path::new(""), &mut tar)?;
    tar.into_inner()
}

/// One line of `kiln diff`: `A`dded, `C`hanged or `D`eleted, and the path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: String,
    pub kind: char,
}

/// `kiln diff`: what the container changed, from its upper dir against the
/// image's layers, sorted by path as docker sorts them. The runtime's own
/// mount points (`/proc`, `/etc/hosts`, volume targets …) are left out
/// when the container made them, and so are directories that only hold
/// such mount points.
pub fn changes(c: &super::Container, dir: &Path) -> Vec<Change> {
    let upper = dir.join("upper");
    let lower = LowerView::new(&c.lowers);
    let mut stubs: Vec<PathBuf> = [
        "proc",
        "dev",
        "sys",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for m in &c.mounts {
        let t = match m {
            crate::sandbox::Mount::Bind { target, .. }
            | crate::sandbox::Mount::Tmpfs { target, .. } => target,
        };
        stubs.extend(crate::snapshot::rel_components(t));
    }
    let copied = dir.join("copied").exists();
    let mut out = Vec::new();
    walk_changes(&upper, Path::new(""), &lower, &stubs, copied, &mut out);
    out.sort();
    out
}

fn walk_changes(
    upper: &Path,
    rel: &Path,
    lower: &LowerView,
    stubs: &[PathBuf],
    copied: bool,
    out: &mut Vec<Change>,
) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(rd) = std::fs::read_dir(upper.join(rel)) else {
        return false;
    };
    let mut any = false;
    let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let Ok(md) = std::fs::symlink_metadata(upper.join(&r)) else {
            continue;
        };
        let below = lower.lookup(&r);
        let path = format!("/{}", r.display());
        if md.file_type().is_char_device() && md.rdev() == 0 {
            if below.is_some() {
                out.push(Change { path, kind: 'D' });
                any = true;
            }
            continue;
        }
        let stub = stubs.iter().any(|s| s == &r);
        let mut inner = false;
        if md.is_dir() {
            inner = walk_changes(upper, &r, lower, stubs, copied, out);
        }
        let kind = match &below {
            None => 'A',
            Some(b) => {
                if copied {
                    // A full copy: only what differs from the image counts.
                    let same = std::fs::symlink_metadata(b).is_ok_and(|l| {
                        l.mode() == md.mode()
                            && l.uid() == md.uid()
                            && l.gid() == md.gid()
                            && (md.is_dir() || (l.len() == md.len() && l.mtime() == md.mtime()))
                    });
                    if same && !inner {
                        continue;
                    }
                }
                'C'
            }
        };
        if stub && kind == 'A' && !inner {
            continue;
        }
        if md.is_dir() && kind == 'C' && !inner {
            // Copied up for a mount point only: unchanged for docker.
            let unchanged = below
                .and_then(|b| std::fs::symlink_metadata(b).ok())
                .is_some_and(|l| {
                    l.mode() == md.mode() && l.uid() == md.uid() && l.gid() == md.gid()
                });
            let opaque = crate::sys::lgetxattr(&upper.join(&r), crate::snapshot::opaque_xattr())
                .ok()
                .flatten()
                .is_some();
            if unchanged && !opaque {
                continue;
            }
        }
        out.push(Change { path, kind });
        any = true;
    }
    any
}

impl ContainerFs {
    /// A reader of plain host paths only (what `kiln cp` archives from the
    /// host side).
    pub fn of_plain() -> ContainerFs {
        ContainerFs {
            running_root: Some(PathBuf::from("/")),
            view: LowerView::new(&[]),
            mounts: Vec::new(),
            upper: PathBuf::new(),
        }
    }
}

/// Where to write the container path `rel` from the host: into the live
/// root of a running container, a mount's source, or the upper dir of a
/// stopped one, whose missing parents are copied up first (owner, mode and
/// times from the image). With `is_dir`, `rel` itself is made too.
pub fn writable_path(fs: &ContainerFs, rel: &Path, is_dir: bool) -> io::Result<PathBuf> {
    if let Some(root) = &fs.running_root {
        let p = root.join(rel);
        if is_dir {
            std::fs::create_dir_all(&p)?;
        }
        return Ok(p);
    }
    let best = fs
        .mounts
        .iter()
        .filter(|(t, _)| rel.starts_with(t))
        .max_by_key(|(t, _)| t.components().count());
    if let Some((t, src)) = best {
        let p = src.join(rel.strip_prefix(t).unwrap_or(Path::new("")));
        if is_dir {
            std::fs::create_dir_all(&p)?;
        }
        return Ok(p);
    }
    let comps: Vec<_> = rel.iter().collect();
    let upto = if is_dir {
        comps.len()
    } else {
        comps.len().saturating_sub(1)
    };
    let mut cur = PathBuf::new();
    for c in &comps[..upto] {
        cur.push(c);
        let up = fs.upper.join(&cur);
        match std::fs::symlink_metadata(&up) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => std::fs::remove_file(&up)?,
            Err(_) => {}
        }
        std::fs::create_dir(&up)?;
        if let Some(below) = fs.view.lookup(&cur) {
            if let Ok(md) = std::fs::symlink_metadata(&below) {
                if md.is_dir() {
                    crate::snapshot::copy_meta(&below, &up, &md).map_err(io::Error::other)?;
                }
            }
        }
    }
    Ok(fs.upper.join(rel))
}

/// docker's `SizeRw` and `SizeRootFs` of the container whose folder is
/// `dir` (`ps -s`, `inspect -s`): the bytes of its own changes (the upper
/// dir), and those plus the image's layers. Sizes are of the files (not
/// directories), a file hard-linked twice counted once, as docker's
/// `directory.Size`.
pub fn disk_usage(dir: &Path, lowers: &[PathBuf]) -> (u64, u64) {
    let upper = dir.join("upper");
    let rw = tree_size(&upper);
    // On a copy the upper holds the whole root already.
    if dir.join("copied").exists() {
        return (rw, rw);
    }
    let image: u64 = lowers.iter().map(|l| tree_size(l)).sum();
    (rw, rw + image)
}

fn tree_size(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.nlink() <= 1 || seen.insert((md.dev(), md.ino())) {
                total += md.len();
            }
        }
    }
    total
}

//! One source of a COPY, copied `cp -a` style into the destination root with
//! BuildKit's rules (those of fsutil's copier): a directory's contents merge
//! into the destination, a file lands inside an existing directory, include
//! and exclude filters decide per path with delayed creation of parent
//! directories, hard links within the copy stay hard links, symlinks are
//! copied as symlinks, metadata is applied after a directory's contents so its
//! mtime sticks.
//!
//! Safety: the top-level source and destination are resolved inside their
//! roots ([`super::rootpath`]); below them the walk only descends into real
//! directories it has just `lstat`ed, opens files with `O_NOFOLLOW`, and
//! replaces (never follows) whatever non-directory it finds at a target.

use std::collections::HashMap;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_patternmatcher::{ContextFilter, Entry, WalkError};

use super::chmod::{created_dir_mode, Chmod};
use super::chown::Owner;
use super::error::{io_err, FileOpsError, Result};
use super::meta::{self, Time};
use super::rootpath::{host_path, is_absent, strip};
use super::CopyReport;

/// Whose ids copied files keep when no `--chown` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceIds {
    /// The build context: BuildKit's client resets every uid/gid to 0 when
    /// it sends the context, so files arrive owned by root.
    #[default]
    Root,
    /// Another stage or an image: ownership is kept as it is there.
    Preserve,
}

/// Options of one copy, already parsed.
pub(crate) struct Opts<'a> {
    pub owner: Option<Owner>,
    pub ids: SourceIds,
    pub mode: Option<&'a Chmod>,
    pub utime: Option<Time>,
    /// `--parents` and `--exclude`, relative to the copied source.
    pub filter: &'a ContextFilter,
    /// The build context's `.dockerignore`, relative to the source root,
    /// with the source's path under that root: what it drops does not
    /// exist for the copy.
    pub context: Option<(&'a ContextFilter, &'a str)>,
    /// Incremental copy: the destination holds the previous result of the
    /// same step; files already as they would be written are kept.
    pub reuse: Option<&'a super::reuse::Reuse>,
}

/// Go's `filepath.Split`: everything up to and including the last `/`, and
/// the rest.
fn split(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..=i], &p[i + 1..]),
        None => ("", p),
    }
}

/// Go's `filepath.Base`.
pub(crate) fn base(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { "." } else { "/" };
    }
    match t.rfind('/') {
        Some(i) => &t[i + 1..],
        None => t,
    }
}

/// Create `path` and its missing parents with `perm` (umask ignored), owned
/// by `owner` when given. Returns the directories created, outermost first.
/// `path` must already be resolved inside its root.
pub(crate) fn mkdir_all(
    root: &Path,
    path: &Path,
    perm: u32,
    owner: Option<Owner>,
    utime: Option<Time>,
) -> Result<Vec<PathBuf>> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => return Ok(Vec::new()),
        Ok(_) => {
            return Err(FileOpsError::NotADirectory {
                path: strip(root, path).display().to_string(),
            })
        }
        Err(e) if is_absent(&e) => {}
        Err(e) => return Err(io_err("lstat", strip(root, path))(e)),
    }
    let mut created = match path.parent() {
        Some(parent) if parent != path && parent.starts_with(root) && parent != root => {
            mkdir_all(root, parent, perm, owner, utime)?
        }
        _ => Vec::new(),
    };
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(created),
        Err(e) => return Err(io_err("mkdir", strip(root, path))(e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(perm & 0o777))
        .map_err(io_err("chmod", strip(root, path)))?;
    if let Some(o) = owner {
        crate::userns::tolerate_unmapped(lchown(path, Some(o.uid), Some(o.gid)))
            .map_err(io_err("chown", strip(root, path)))?;
    }
    if let Some(t) = utime {
        meta::lutimes(path, t, t).map_err(io_err("utimes", strip(root, path)))?;
    }
    created.push(path.to_path_buf());
    Ok(created)
}

/// Copy one (already wildcard-expanded) source `src` of `src_root` to `dst`
/// in `dst_root`, as fsutil's `Copy` with `CopyDirContents` and
/// `FollowLinks` (what the Dockerfile frontend always asks for).
pub(crate) fn copy_one(
    src_root: &Path,
    src: &str,
    dst_root: &Path,
    dst: &str,
    opts: &Opts<'_>,
    report: &mut CopyReport,
) -> Result<()> {
    let (d, f) = split(dst);
    let ensure = if !f.is_empty() && f != "." { d } else { dst };
    let perm = opts.mode.map_or(0o755, created_dir_mode);
    let mut created = Vec::new();
    if !ensure.is_empty() {
        let p = host_path(dst_root, Path::new(ensure), true)?;
        touch(opts, dst_root, &p);
        created.extend(mkdir_all(dst_root, &p, perm, opts.owner, opts.utime)?);
    }
    let dst_host = host_path(dst_root, Path::new(&super::pattern::clean(dst)), true)?;
    let src_host = host_path(src_root, Path::new(src), true)?;

    let src_md = match fs::symlink_metadata(&src_host) {
        Ok(md) => md,
        Err(e) if is_absent(&e) => {
            return Err(FileOpsError::NotFound {
                path: super::pattern::clean(&format!("/{src}")),
            })
        }
        Err(e) => return Err(io_err("lstat", strip(src_root, &src_host))(e)),
    };
    let dst_md = match fs::symlink_metadata(&dst_host) {
        Ok(md) => Some(md),
        Err(e) if is_absent(&e) => None,
        Err(e) => return Err(io_err("lstat", strip(dst_root, &dst_host))(e)),
    };
    let mut dest_path = dst_host.clone();
    if !src_md.is_dir() && dst_md.as_ref().is_some_and(Metadata::is_dir) {
        dest_path = dest_path.join(base(src));
    }
    let target_dir = if src_md.is_dir() && dst_md.is_none() {
        dest_path.clone()
    } else {
        dest_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dst_root.to_path_buf())
    };
    if target_dir.starts_with(dst_root) {
        touch(opts, dst_root, &target_dir);
        created.extend(mkdir_all(
            dst_root,
            &target_dir,
            perm,
            opts.owner,
            opts.utime,
        )?);
    }

    let mut c = Copier {
        src_root,
        dst_root,
        opts,
        inodes: HashMap::new(),
        report,
    };
    c.copy_top(&src_host, &dest_path)?;
    if let Some(t) = opts.utime {
        for d in created.iter().rev() {
            meta::lutimes(d, t, t).map_err(io_err("utimes", strip(dst_root, d)))?;
        }
    }
    Ok(())
}

/// Records a destination path for an incremental copy.
fn touch(opts: &Opts<'_>, dst_root: &Path, p: &Path) {
    if let (Some(r), Ok(rel)) = (opts.reuse, p.strip_prefix(dst_root)) {
        r.touch(rel);
    }
}

/// The errors of a source walk, as the copy's own: paths shown relative to
/// the source root, a pattern that fails when first used as a bad pattern
/// (fsutil fails the copy too: "failed to match excludepatterns").
pub(crate) fn walk_err(src_root: &Path) -> impl Fn(WalkError) -> FileOpsError + '_ {
    move |e| match e {
        WalkError::Io { op, path, source } => io_err(op, strip(src_root, &path))(source),
        WalkError::Pattern(e) => FileOpsError::BadPattern {
            pattern: e.to_string(),
        },
    }
}

/// A directory whose metadata is applied once its contents are copied.
struct OpenDir {
    depth: usize,
    src: PathBuf,
    dst: PathBuf,
    md: Metadata,
    /// Whether it passed the filters itself (a parent created only for
    /// something below it got its metadata when it was created).
    copy_info: bool,
}

struct Copier<'a, 'o> {
    src_root: &'a Path,
    dst_root: &'a Path,
    opts: &'a Opts<'o>,
    inodes: HashMap<(u64, u64), PathBuf>,
    report: &'a mut CopyReport,
}

impl Copier<'_, '_> {
    /// The source itself (never filtered: fsutil tests patterns only below
    /// it), then, for a directory, what the walk of it keeps.
    fn copy_top(&mut self, src: &Path, target: &Path) -> Result<()> {
        let md = fs::symlink_metadata(src).map_err(io_err("lstat", strip(self.src_root, src)))?;
        let target_md = match fs::symlink_metadata(target) {
            Ok(m) => Some(m),
            Err(e) if is_absent(&e) => None,
            Err(e) => return Err(io_err("lstat", strip(self.dst_root, target))(e)),
        };
        touch(self.opts, self.dst_root, target);
        if !md.is_dir() {
            if self.reusable(&md, src, target, target, target_md.as_ref()) {
                return Ok(());
            }
            self.ensure_empty_file_target(target, target_md.as_ref())?;
            self.copy_leaf(&md, src, target)?;
            return self.copy_file_info(&md, src, target);
        }
        let created = self.copy_directory_only(target, &md, false)?;
        self.copy_tree(src, target)?;
        if created {
            self.copy_file_info(&md, src, target)?;
        } else if target_md.is_some() {
            let (a, m) = self.times(&md);
            meta::lutimes(target, a, m).map_err(io_err("utimes", strip(self.dst_root, target)))?;
        }
        Ok(())
    }

    /// Everything below the source directory `src`, in the walk's order;
    /// a directory's metadata is applied after its contents so its mtime
    /// sticks.
    fn copy_tree(&mut self, src: &Path, target: &Path) -> Result<()> {
        let mut walk = self.opts.filter.walk(src);
        if let Some((context, prefix)) = self.opts.context {
            walk = walk.within(context, prefix);
        }
        let mut open: Vec<OpenDir> = Vec::new();
        for entry in walk {
            let entry = entry.map_err(walk_err(self.src_root))?;
            while open.last().is_some_and(|d| d.depth >= entry.depth) {
                if let Some(d) = open.pop() {
                    self.close_dir(d)?;
                }
            }
            let dst = target.join(&entry.rel_path);
            touch(self.opts, self.dst_root, &dst);
            let Entry {
                full_path,
                metadata: md,
                depth,
                matched,
                ..
            } = entry;
            if md.is_dir() {
                let created = self.copy_directory_only(&dst, &md, true)?;
                if !matched && created {
                    self.copy_file_info(&md, &full_path, &dst)?;
                }
                open.push(OpenDir {
                    depth,
                    src: full_path,
                    dst,
                    md,
                    copy_info: matched,
                });
                continue;
            }
            // An incremental copy looks in the clone first: a file there is
            // what the merged view shows (the upper dir wins), and reading it
            // directly spares a FUSE overlay several round trips per file.
            if let Some((upper_path, upper_md)) = self
                .opts
                .reuse
                .and_then(|r| r.upper_entry(dst.strip_prefix(self.dst_root).ok()?))
            {
                if self.reusable(&md, &full_path, &dst, &upper_path, Some(&upper_md)) {
                    continue;
                }
            }
            let target_md = match fs::symlink_metadata(&dst) {
                Ok(m) => Some(m),
                Err(e) if is_absent(&e) => None,
                Err(e) => return Err(io_err("lstat", strip(self.dst_root, &dst))(e)),
            };
            if self.reusable(&md, &full_path, &dst, &dst, target_md.as_ref()) {
                continue;
            }
            self.ensure_empty_file_target(&dst, target_md.as_ref())?;
            self.copy_leaf(&md, &full_path, &dst)?;
            self.copy_file_info(&md, &full_path, &dst)?;
        }
        while let Some(d) = open.pop() {
            self.close_dir(d)?;
        }
        Ok(())
    }

    fn close_dir(&mut self, d: OpenDir) -> Result<()> {
        if d.copy_info {
            self.copy_file_info(&d.md, &d.src, &d.dst)?;
        }
        Ok(())
    }

    /// A non-directory: its content, link or node (hard links within the
    /// copy stay hard links).
    fn copy_leaf(&mut self, md: &Metadata, src: &Path, target: &Path) -> Result<()> {
        let ft = md.file_type();
        if ft.is_file() {
            let key = (md.dev(), md.ino());
            if md.nlink() > 1 {
                if let Some(first) = self.inodes.get(&key) {
                    fs::hard_link(first, target)
                        .map_err(io_err("link", strip(self.dst_root, target)))?;
                    self.report.hardlinks += 1;
                    return Ok(());
                }
                self.inodes.insert(key, target.to_path_buf());
            }
            self.copy_file(src, target)?;
            self.report.files += 1;
            self.report.bytes += md.len();
        } else if ft.is_symlink() {
            let link = fs::read_link(src).map_err(io_err("readlink", strip(self.src_root, src)))?;
            symlink(&link, target).map_err(io_err("symlink", strip(self.dst_root, target)))?;
            self.report.symlinks += 1;
        } else {
            meta::mknod(target, md.mode(), md.rdev())
                .map_err(io_err("mknod", strip(self.dst_root, target)))?;
            self.report.others += 1;
        }
        Ok(())
    }

    /// Incremental copy: whether `target` (from the previous result of
    /// the same step) is already exactly what copying `src` would write, so
    /// it can stay. Counts it as copied when it is. `seen` is where
    /// `target_md` was read: the merged view's `target`, or the same entry
    /// in the clone's upper dir.
    fn reusable(
        &mut self,
        md: &Metadata,
        src: &Path,
        target: &Path,
        seen: &Path,
        target_md: Option<&Metadata>,
    ) -> bool {
        let (Some(reuse), Some(t)) = (self.opts.reuse, target_md) else {
            return false;
        };
        if !md.file_type().is_file() || !t.file_type().is_file() || t.len() != md.len() {
            return false;
        }
        let (_, m) = self.times(md);
        if t.mtime() != m.sec || t.mtime_nsec() != m.nsec {
            return false;
        }
        let owner = self.owner_of(md);
        if t.uid() != owner.uid || t.gid() != owner.gid {
            return false;
        }
        let mode = match self.opts.mode {
            Some(c) => c.apply(md.mode(), false),
            None => md.mode() & 0o7777,
        };
        if t.mode() & 0o7777 != mode {
            return false;
        }
        match target.strip_prefix(self.dst_root) {
            Ok(rel) if reuse.in_upper(rel, t) => {}
            _ => return false,
        }
        let no_xattrs = |p: &Path| {
            meta::list_xattrs(p).is_ok_and(|names| names.iter().all(|n| meta::is_private_xattr(n)))
        };
        if !no_xattrs(src) || !no_xattrs(seen) {
            return false;
        }
        // Hard links within the copy: the first of a group may stay, the
        // others are linked to it as a full copy would.
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if self.inodes.contains_key(&key) {
                return false;
            }
            self.inodes.insert(key, target.to_path_buf());
        }
        reuse.count_reused();
        self.report.files += 1;
        self.report.bytes += md.len();
        true
    }

    fn owner_of(&self, md: &Metadata) -> Owner {
        self.opts.owner.unwrap_or(match self.opts.ids {
            SourceIds::Root => Owner { uid: 0, gid: 0 },
            SourceIds::Preserve => Owner {
                uid: md.uid(),
                gid: md.gid(),
            },
        })
    }

    fn times(&self, md: &Metadata) -> (Time, Time) {
        match self.opts.utime {
            Some(t) => (t, t),
            None => (
                Time {
                    sec: md.atime(),
                    nsec: md.atime_nsec(),
                },
                Time {
                    sec: md.mtime(),
                    nsec: md.mtime_nsec(),
                },
            ),
        }
    }

    fn copy_file_info(&mut self, md: &Metadata, src: &Path, target: &Path) -> Result<()> {
        let owner = self.owner_of(md);
        let shown = strip(self.dst_root, target);
        crate::userns::tolerate_unmapped(lchown(target, Some(owner.uid), Some(owner.gid)))
            .map_err(io_err("chown", shown.clone()))?;
        if !md.file_type().is_symlink() {
            let mode = match self.opts.mode {
                Some(c) => c.apply(md.mode(), md.is_dir()),
                None => md.mode() & 0o7777,
            };
            fs::set_permissions(target, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", shown.clone()))?;
        }
        let (a, m) = self.times(md);
        meta::lutimes(target, a, m).map_err(io_err("utimes", shown))?;
        meta::copy_xattrs(src, target);
        Ok(())
    }

    fn ensure_empty_file_target(&self, target: &Path, md: Option<&Metadata>) -> Result<()> {
        match md {
            None => Ok(()),
            Some(m) if m.is_dir() => Err(FileOpsError::ReplaceDirWithFile {
                path: strip(self.dst_root, target).display().to_string(),
            }),
            Some(_) => {
                fs::remove_file(target).map_err(io_err("remove", strip(self.dst_root, target)))
            }
        }
    }

    fn copy_file(&self, src: &Path, target: &Path) -> Result<()> {
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
            .map_err(io_err("open", strip(self.src_root, src)))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .map_err(io_err("create", strip(self.dst_root, target)))?;
        crate::sparse::copy_file(&mut from, &mut to)
            .map_err(io_err("copy", strip(self.dst_root, target)))?;
        Ok(())
    }

    fn copy_directory_only(
        &mut self,
        dst: &Path,
        md: &Metadata,
        overwrite_meta: bool,
    ) -> Result<bool> {
        match fs::symlink_metadata(dst) {
            Err(e) if is_absent(&e) => {
                fs::create_dir(dst).map_err(io_err("mkdir", strip(self.dst_root, dst)))?;
                fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                    .map_err(io_err("chmod", strip(self.dst_root, dst)))?;
                self.report.dirs += 1;
                Ok(true)
            }
            Err(e) => Err(io_err("lstat", strip(self.dst_root, dst))(e)),
            Ok(m) if !m.is_dir() => Err(FileOpsError::NotADirectory {
                path: strip(self.dst_root, dst).display().to_string(),
            }),
            Ok(_) => {
                if overwrite_meta {
                    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                        .map_err(io_err("chmod", strip(self.dst_root, dst)))?;
                }
                Ok(false)
            }
        }
    }
}

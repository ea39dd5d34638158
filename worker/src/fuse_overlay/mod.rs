//! An overlay filesystem of kiln's own, served over FUSE (`fuser`): the
//! snapshotter for where the kernel's overlayfs cannot be mounted (inside
//! an unprivileged container with `/dev/fuse`, rootless, old kernels).
//!
//! It behaves as overlayfs mounted with `index=off,metacopy=off,
//! redirect_dir=off` does, so its upper dir is the same overlay-native
//! layer dir the kernel would leave and `diff.rs` writes the same layer
//! from it: deletes leave char 0/0 whiteouts, a directory created where a
//! whiteout was (or moved over lower content) gets `trusted.overlay.opaque=y`,
//! every change first copies the entry up with its data and metadata
//! (restoring the parent's times after, as the kernel does), and renaming
//! a directory that has lower content answers EXDEV, as overlayfs without
//! `redirect_dir` does, so `mv` copies it instead.
//!
//! - [`inodes`]: node ids ↔ paths of the merged view and where they live.
//! - [`lookup`]: merging the layers (resolve a name, list a directory).
//! - `copyup`: bringing lower entries into the upper dir.
//! - `ops`: the FUSE operations.
//!
//! A build serves it on threads of kiln's own process
//! ([`mount_in_process`]): kiln never forks there, and a helper process per
//! RUN was most of FUSE's fixed cost per step. `kiln run` serves it from a
//! re-executed kiln (`kiln fuse-helper`, [`FuseMount`]), since a detached
//! container outlives the kiln that started it.

pub mod inodes;
pub mod lookup;

mod copyup;
mod ops;

use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use inodes::Table;
pub use lookup::Layers;

use crate::sys;

/// The subcommand kiln re-executes itself with to serve a FUSE overlay.
pub const HELPER_SUBCOMMAND: &str = "fuse-helper";

/// The helper's flag: end with the process that started it.
const DIE_WITH_PARENT: &str = "--die-with-parent";

/// The line the helper prints once the filesystem is mounted.
const READY: &str = "ready";

/// An open file of the overlay: the backing file, reopened on the upper
/// dir when the node is copied up while it is open (so reads after another
/// opener's write see the new data).
#[derive(Debug)]
struct Handle {
    ino: u64,
    state: Mutex<(Arc<std::fs::File>, bool)>,
}

/// A snapshot of a directory's merged listing, taken at opendir so that
/// offsets stay valid while it changes.
type Listing = Arc<Vec<(std::ffi::OsString, fuser::FileType, u64)>>;

/// The filesystem: layers, the node table, open files and directories.
#[derive(Debug)]
pub struct OverlayFs {
    layers: Layers,
    table: RwLock<Table>,
    /// Serialises every change to the upper dir (copy-up, create, remove,
    /// rename), so two of them never see each other half done.
    mutate: Mutex<()>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Listing>>,
    next_fh: AtomicU64,
}

impl OverlayFs {
    /// An overlay of `lowers` (lowest first, as kiln orders layers) under
    /// the writable `upper`.
    pub fn new(lowers: &[PathBuf], upper: &Path) -> Self {
        let layers = Layers {
            upper: upper.to_path_buf(),
            lowers: crate::snapshot::unique_lowers(lowers)
                .into_iter()
                .rev()
                .collect(),
        };
        let root = layers.root_place();
        OverlayFs {
            layers,
            table: RwLock::new(Table::new(root)),
            mutate: Mutex::new(()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn table(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_mutations(&self) -> std::sync::MutexGuard<'_, ()> {
        self.mutate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The session settings: other uids in the sandbox may use it
/// (`allow_other`), the kernel checks permissions from the attributes
/// (`default_permissions`), and device nodes and set-id bits of the image
/// work (`dev`, `suid`).
fn config() -> fuser::Config {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        fuser::MountOption::FSName("kiln-overlay".into()),
        fuser::MountOption::Subtype("kiln".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
        fuser::MountOption::RW,
    ];
    c.acl = fuser::SessionACL::All;
    c.n_threads = Some(4);
    c.clone_fd = true;
    c
}

/// Mounts the overlay at `target` and serves it on this thread until it
/// is unmounted; `ready` is called once it is mounted. The helper's body.
pub fn serve(
    lowers: &[PathBuf],
    upper: &Path,
    target: &Path,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let fs = OverlayFs::new(lowers, upper);
    let session = fuser::Session::new(fs, target, &config())?;
    // Mounted (in the caller's namespace); now leave it for a copy of our
    // own, still single-threaded, so a pivot_root into the mount (the
    // container's pid 1 does one) never moves this server's root into its
    // own filesystem, where every path it opens would wait on itself.
    let _ = sys::unshare(libc::CLONE_NEWNS);
    ready();
    session.run()
}

/// An overlay served by threads of this process: what a build's RUN
/// snapshots use ([`mount_in_process`]). Unmounted when dropped.
#[derive(Debug)]
pub struct InProcessMount {
    target: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl InProcessMount {
    /// Where the merged view is.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts. Every write was answered only once it was in the upper
    /// dir (no write-back cache), so the upper dir is complete when this
    /// returns. The server threads are not waited for: they end by
    /// themselves (their reads fail with ENODEV) once the kernel drops the
    /// filesystem, which a copy of the mount left in some other namespace
    /// could delay without end; a join would then hang the build.
    pub fn unmount(mut self) -> io::Result<()> {
        let _t = crate::phase_timing::Phase::start("fuse.umount");
        let r = sys::umount(&self.target, 0);
        if r.is_err() {
            let _ = sys::umount(&self.target, libc::MNT_DETACH);
        }
        self.release();
        r
    }

    /// Lets go of the session without joining its threads. fuser's
    /// handle, dropped, may try umount(2) on the path once more (it cannot
    /// always tell the mount is gone), which fails harmlessly with EINVAL.
    fn release(&mut self) {
        drop(self.session.take());
    }
}

impl Drop for InProcessMount {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = sys::umount(&self.target, libc::MNT_DETACH);
            self.release();
        }
    }
}

/// Mounts the overlay of `lowers` (lowest first) and `upper` at `target`,
/// served by threads of this process; ready when it returns (mount(2) and
/// the INIT handshake are done in this call).
///
/// Builds serve their RUN snapshots this way rather than through a
/// re-executed helper ([`FuseMount`]): starting, mounting in and killing a
/// process per RUN was most of FUSE's fixed cost per step. It is sound in
/// kiln's multi-threaded process because kiln never forks there (helpers
/// are started with posix_spawn; only single-threaded helpers fork), and
/// because the sandbox pivots into a copy of the mount in a namespace of
/// its own, which never moves this process's root. `kiln run`'s
/// containers keep the helper process, which must outlive kiln.
pub fn mount_in_process(
    lowers: &[PathBuf],
    upper: &Path,
    target: &Path,
) -> io::Result<InProcessMount> {
    let fs = OverlayFs::new(lowers, upper);
    let t = crate::phase_timing::Phase::start("fuse.mount");
    let session = fuser::Session::new(fs, target, &config())?;
    t.end();
    let session = session.spawn()?;
    Ok(InProcessMount {
        target: target.to_path_buf(),
        session: Some(session),
    })
}

/// Whether this process can serve FUSE: `/dev/fuse` opens read-write.
/// What `auto` checks before choosing the FUSE snapshotter.
pub fn usable() -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(permission_denied_reason(&e)),
        Err(e) => Err(format!("/dev/fuse: {e}")),
    }
}

/// Why `/dev/fuse` is refused, in terms a user can act on: its mode and
/// owner against this process's uid. Rootless kiln mounts FUSE inside its
/// user namespace, which the kernel allows only when `/dev/fuse` itself
/// opens for the (unmapped, real) user, so a 0600 root device rules FUSE
/// out without root, whatever the namespace.
fn permission_denied_reason(e: &io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/dev/fuse") {
        // Owner numbers would read wrong inside a user namespace (root
        // shows as the overflow uid there), so only the mode is told.
        Ok(md) => format!(
            "/dev/fuse: {e}: it is mode {:04o}, not open to the user kiln runs as; \
             FUSE without root needs /dev/fuse readable and writable by that user \
             (mode 0666, as most distributions ship it)",
            md.mode() & 0o7777
        ),
        Err(_) => format!("/dev/fuse: {e}"),
    }
}

/// A FUSE overlay served by a re-executed kiln (`kiln fuse-helper`).
/// Unmounted and its helper stopped when dropped.
#[derive(Debug)]
pub struct FuseMount {
    target: PathBuf,
    child: Option<Child>,
}

impl FuseMount {
    /// Starts `exe fuse-helper` serving `lowers` (lowest first) over
    /// `upper` at `target`, and waits until it has mounted.
    pub fn start(
        exe: &Path,
        lowers: &[PathBuf],
        upper: &Path,
        target: &Path,
    ) -> io::Result<FuseMount> {
        Self::start_with(exe, lowers, upper, target, false)
    }

    /// As [`FuseMount::start`]; with `die_with_parent` the helper ends
    /// when this process does (a container's pid 1, which never unmounts).
    pub fn start_with(
        exe: &Path,
        lowers: &[PathBuf],
        upper: &Path,
        target: &Path,
        die_with_parent: bool,
    ) -> io::Result<FuseMount> {
        // Say why up front rather than a bare EACCES from the helper.
        usable().map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
        let mut args: Vec<std::ffi::OsString> = vec![HELPER_SUBCOMMAND.into()];
        if die_with_parent {
            args.push(DIE_WITH_PARENT.into());
        }
        args.extend([
            target.as_os_str().to_os_string(),
            upper.as_os_str().to_os_string(),
        ]);
        args.extend(lowers.iter().map(|l| l.as_os_str().to_os_string()));
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let t = crate::phase_timing::Phase::start("fuse.spawn");
        let mut child = crate::reexec::spawn_helper(
            exe,
            &args,
            &[("PATH", path.as_str())],
            crate::reexec::HelperStdio {
                stdin: Stdio::null(),
                stdout: Stdio::piped(),
                stderr: Stdio::piped(),
            },
        )?;
        t.end();
        let t = crate::phase_timing::Phase::start("fuse.wait_ready");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let mut r = io::BufReader::new(out);
            r.read_line(&mut line)?;
        }
        t.end();
        if line.trim() == READY {
            return Ok(FuseMount {
                target: target.to_path_buf(),
                child: Some(child),
            });
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(io::Error::other(format!(
            "the FUSE overlay helper did not mount: {}",
            err.trim()
        )))
    }

    /// Where the merged view is.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts and stops the helper. Every write was answered only once
    /// it was in the upper dir (no write-back cache), so nothing is lost.
    pub fn unmount(mut self) -> io::Result<()> {
        let t = crate::phase_timing::Phase::start("fuse.umount");
        let r = sys::umount(&self.target, 0);
        if r.is_err() {
            let _ = sys::umount(&self.target, libc::MNT_DETACH);
        }
        t.end();
        let t = crate::phase_timing::Phase::start("fuse.kill_wait");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        t.end();
        r
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = sys::umount(&self.target, libc::MNT_DETACH);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The helper's entry point (`kiln fuse-helper <target> <upper>
/// <lower>...`, lowers lowest first): mounts, prints `ready`, serves until
/// unmounted. Returns the exit code.
pub fn helper_main(args: &[std::ffi::OsString]) -> i32 {
    let args = match args.first() {
        Some(a) if a == DIE_WITH_PARENT => {
            sys::die_with_parent();
            &args[1..]
        }
        _ => args,
    };
    let [target, upper, lowers @ ..] = args else {
        eprintln!("usage: kiln {HELPER_SUBCOMMAND} TARGET UPPER [LOWER...]");
        return 2;
    };
    let lowers: Vec<PathBuf> = lowers.iter().map(PathBuf::from).collect();
    let r = serve(&lowers, Path::new(upper), Path::new(target), || {
        println!("{READY}");
    });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "serving the FUSE overlay at {}: {e}",
                Path::new(target).display()
            );
            1
        }
    }
}

//! The solver's executor for kiln's build ops: where a graph node becomes a
//! snapshot. Every op's result is a [`Snapshot`], the ordered layers of a
//! root filesystem; RUN and file ops mount an overlay of their input's layer
//! directories, do their work in it, and turn the upper dir into one new
//! layer (an uncompressed tar blob in the content store, and the upper dir itself kept as
//! that layer's directory).
//!
//! Results are recorded in the build cache, `$KILN_ROOT/buildcache/<key>.json`
//! (the snapshot a cache key produced), written only after its blobs exist,
//! so a record never points at nothing; a record whose blobs were pruned is
//! a miss.
//!
//! Blocking work (mounts, copies, the sandbox, compression) runs on tokio's
//! blocking pool; a cancelled step (another failed, or the build was
//! interrupted) kills its sandbox.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kiln_solver::ops::{BuildOp, Exec, ExecMount, FileAction, FileOp, Network as OpNetwork};
use kiln_solver::{Executor, Graph, Key, NodeId, Progress, Stream};
use serde::{Deserialize, Serialize};

mod git_add;
mod incremental;

use crate::diff::{self, Compression};
use crate::fileops::{self, checksum, ChecksumMemo, Chmod, CopySpec, SourceIds};
use crate::layers::{LayerError, LayerRef, LayerStore};
use crate::sandbox::{self, Mount, Network, SandboxSpec};
use crate::secrets::{SecretDir, SecretError};
use crate::slots::Slots;
use crate::snapshot::{self, Active, Mounted, Throwaway};

// Context checksum memos persist between kiln processes in the store's
// `checksums/` folder: one file per context folder, so a build loads only
// those of the contexts it reads (a store that has seen a 30,000-file
// context must not make every other build parse its memo). The single memo
// file of earlier versions is removed when found.

/// What every op produces: a root filesystem as its layers, lowest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub layers: Vec<LayerRef>,
    /// Set when this "snapshot" stands for a build context on the host
    /// (the output of a `Context` op): consumers read that directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextRef>,
}

/// A build context as its consumers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextRef {
    pub name: String,
    /// `.dockerignore` patterns.
    pub exclude: Vec<String>,
}

/// Why a `RUN --security=insecure` is refused without `--allow
/// security.insecure`, as BuildKit refuses the entitlement.
pub const INSECURE_NOT_ALLOWED: &str =
    "granting entitlement security.insecure is not allowed: pass --allow security.insecure";

/// How the worker runs steps.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Host directories of the build contexts, by name (`context` is the
    /// main one).
    pub contexts: HashMap<String, PathBuf>,
    /// `--network` of the build: what `RUN` gets unless it says otherwise.
    pub default_network: Network,
    /// The kiln binary, re-executed as the sandbox helper.
    pub helper_exe: PathBuf,
    /// How writable snapshots are made (`--snapshotter`): kernel overlay,
    /// kiln's FUSE overlay, copies, or the first that works (`auto`).
    pub snapshotter: crate::snapshotter::Snapshotter,
    /// How many steps may do kiln's own work at once (`--jobs`, default
    /// the machine's cores); see [`crate::slots`].
    pub cpu_slots: usize,
    /// `--secret` and `--ssh` of the build, for `RUN --mount=type=secret|ssh`.
    pub secrets: crate::secrets::Secrets,
    /// `--allow security.insecure`: `RUN --security=insecure` may run (with
    /// every capability and no seccomp filter); refused otherwise.
    pub allow_insecure: bool,
}

impl WorkerOptions {
    /// Whether a `RUN --mount=type=bind,rw` view must be a copy: kernel
    /// overlay serves it under `auto` and `overlay`; the others copy.
    pub fn throwaway_copies(&self) -> bool {
        !matches!(
            self.snapshotter,
            crate::snapshotter::Snapshotter::Auto | crate::snapshotter::Snapshotter::Overlay
        )
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// A RUN exited non-zero; worded as BuildKit words it.
    #[error("process \"{argv}\" did not complete successfully: exit code: {code}")]
    Process { argv: String, code: i32 },
    #[error("unable to find user {user}: {reason}")]
    User { user: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Net(#[from] crate::netpool::NetError),
    #[error("no build context named {0:?} was given")]
    NoContext(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error(transparent)]
    Diff(#[from] diff::DiffError),
    #[error(transparent)]
    FileOps(#[from] fileops::FileOpsError),
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// A build's `--ulimit`, `--cgroup-parent`, … that cannot be applied.
    #[error(transparent)]
    Resource(#[from] crate::resources::ResourceError),
    #[error("image {reference}: {detail}")]
    Image { reference: String, detail: String },
    #[error("step was interrupted")]
    Interrupted,
    #[error(transparent)]
    Http(#[from] crate::http_source::HttpError),
    #[error(transparent)]
    Git(#[from] crate::git_source::GitError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExecutorError + 'a {
    move |source| ExecutorError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Executes [`BuildOp`]s on this machine.
pub struct Worker {
    root: kiln_cache::Root,
    layers: LayerStore,
    opts: WorkerOptions,
    /// Checksum memos by context folder, loaded on first use.
    memos: Mutex<HashMap<PathBuf, Arc<ChecksumMemo>>>,
    cache_dir: PathBuf,
    cache_mounts: PathBuf,
    /// One lock per cache-mount id, for `sharing=locked`.
    mount_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    slots: Slots,
    /// `ADD <url>` downloads made during this build.
    http: crate::http_source::Downloads,
    /// Whether the build was told that snapshots fell back to copies.
    copy_fallback_said: AtomicBool,
    /// The network namespaces RUN steps use by default.
    netpool: crate::netpool::NetPool,
    /// The build contexts as bind mounts see them, made on first use:
    /// (context name, excludes) → the folder.
    context_binds: Mutex<HashMap<(String, Vec<String>), PathBuf>>,
}

impl Worker {
    pub fn new(root: kiln_cache::Root, opts: WorkerOptions) -> Result<Worker, ExecutorError> {
        let layers = LayerStore::open(root.path())?;
        let cache_dir = root.buildcache_dir();
        let cache_mounts = root.cachemounts_dir();
        let _ = fs::remove_file(root.old_checksums_file());
        for d in [&cache_dir, &cache_mounts] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        let netpool_dir = layers.scratch("net")?;
        Ok(Worker {
            slots: Slots::new(opts.cpu_slots),
            root,
            layers,
            opts,
            memos: Mutex::new(HashMap::new()),
            cache_dir,
            cache_mounts,
            mount_locks: Mutex::new(HashMap::new()),
            http: crate::http_source::Downloads::new(),
            copy_fallback_said: AtomicBool::new(false),
            netpool: crate::netpool::NetPool::new(netpool_dir),
            context_binds: Mutex::new(HashMap::new()),
        })
    }

    /// A writable snapshot over `lowers` in `dir` ([`Active::prepare`]).
    /// Falling back to a copy is never silent: the first time in a build,
    /// the step's progress says why overlay could not be mounted.
    fn prepare(
        &self,
        lowers: &[PathBuf],
        dir: &Path,
        progress: &Progress,
    ) -> Result<Active, ExecutorError> {
        self.prepare_as(lowers, dir, progress, false)
    }

    /// [`Worker::prepare`]; `files_only`: only file operations write the
    /// snapshot ([`snapshot::SnapshotMode::files_only`]).
    fn prepare_as(
        &self,
        lowers: &[PathBuf],
        dir: &Path,
        progress: &Progress,
        files_only: bool,
    ) -> Result<Active, ExecutorError> {
        let mode = snapshot::SnapshotMode {
            snapshotter: self.opts.snapshotter,
            helper_exe: Some(self.opts.helper_exe.clone()),
            files_only,
        };
        let active = Active::prepare_with(lowers, dir, &mode)?;
        if let Some(reason) = active.fallback_reason() {
            if !self.copy_fallback_said.swap(true, Ordering::Relaxed) {
                progress.warn(if active.is_fuse() {
                    format!(
                        "overlayfs cannot be mounted here ({reason}): snapshots use kiln's \
                         FUSE overlay"
                    )
                } else {
                    format!(
                        "overlayfs cannot be mounted here ({reason}): snapshots are full copies, \
                         which is slower and uses more space"
                    )
                });
            }
        }
        Ok(active)
    }

    pub fn root(&self) -> &kiln_cache::Root {
        &self.root
    }

    /// The unpacked directory of every layer, lowest first.
    pub fn layer_dirs(&self, snap: &Snapshot) -> Result<Vec<PathBuf>, ExecutorError> {
        Ok(self.layers.dirs(&snap.layers, self.root.blobs())?)
    }

    /// [`Worker::layer_dirs`] for a step, saying in its output when layers
    /// must be unpacked first (after `kiln prune --all` dropped the unpacked
    /// layers, or for a base image only pulled), so a step that is slow for
    /// that reason says why.
    fn layer_dirs_reporting(
        &self,
        snap: &Snapshot,
        progress: &Progress,
    ) -> Result<Vec<PathBuf>, ExecutorError> {
        let missing: Vec<&LayerRef> = snap
            .layers
            .iter()
            .filter(|l| !self.layers.path(&l.diff_id).is_dir())
            .collect();
        if missing.is_empty() {
            return self.layer_dirs(snap);
        }
        let bytes: u64 = missing.iter().map(|l| l.size).sum();
        progress.log(
            Stream::Stderr,
            format!(
                "unpacking base layers: {} of {} ({:.1} MB)\n",
                missing.len(),
                snap.layers.len(),
                bytes as f64 / 1e6
            )
            .as_bytes(),
        );
        let started = std::time::Instant::now();
        let dirs = self.layer_dirs(snap)?;
        progress.log(
            Stream::Stderr,
            format!(
                "unpacked base layers in {:.1}s\n",
                started.elapsed().as_secs_f64()
            )
            .as_bytes(),
        );
        Ok(dirs)
    }

    fn context_dir(&self, name: &str) -> Result<&Path, ExecutorError> {
        self.opts
            .contexts
            .get(name)
            .map(|p| p.as_path())
            .ok_or_else(|| ExecutorError::NoContext(name.to_string()))
    }

    /// The build context `ctx` as a `RUN --mount=type=bind` sees it, as
    /// BuildKit's local source has it: without the `.dockerignore`d paths
    /// and with every file owned by root (its client resets uid/gid when
    /// it sends the context). Made once per build, in the scratch space,
    /// and shared by every bind of the context (a rw bind writes to a
    /// throw-away layer over it); so a build cannot see ignored files
    /// through a bind, nor the owners of the user's files.
    fn context_for_binds(&self, ctx: &ContextRef) -> Result<PathBuf, ExecutorError> {
        let mut table = self.context_binds.lock().unwrap_or_else(|p| p.into_inner());
        let key = (ctx.name.clone(), ctx.exclude.clone());
        if let Some(p) = table.get(&key) {
            return Ok(p.clone());
        }
        let dir = self.layers.scratch("context")?.join("ctx");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let mut spec = CopySpec::new(self.context_dir(&ctx.name)?, vec![".".into()], &dir, "/");
        spec.source_ids = SourceIds::Root;
        spec.context_exclude = ctx.exclude.clone();
        fileops::copy(&spec)?;
        table.insert(key, dir.clone());
        Ok(dir)
    }

    fn record_path(&self, key: Key) -> PathBuf {
        self.cache_dir.join(format!("{}.json", key.to_hex()))
    }

    /// Records `snap` as the result of `key`, as a step that ran does: the
    /// remote build cache writes what it imported (its blobs already in
    /// the store), so later builds hit locally.
    pub fn write_record(&self, key: Key, snap: &Snapshot) -> Result<(), ExecutorError> {
        self.record(key, snap)
    }

    fn record(&self, key: Key, snap: &Snapshot) -> Result<(), ExecutorError> {
        let path = self.record_path(key);
        let tmp = self.cache_dir.join(format!(
            ".{}.{}.tmp",
            key.to_hex(),
            crate::tmpname::unique()
        ));
        let data = serde_json::to_vec(snap).map_err(|e| io_err("encode", &path)(e.into()))?;
        let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))
    }

    /// The content key of a copy from a build context: exactly the files it
    /// reads, as it would write them.
    fn context_checksum(
        &self,
        ctx: &ContextRef,
        paths: &[String],
        parents: bool,
        exclude: &[String],
        mode: Option<Chmod>,
    ) -> Result<blake3::Hash, ExecutorError> {
        let dir = self.context_dir(&ctx.name)?;
        let opts = checksum::ChecksumOptions {
            parents,
            exclude: exclude.to_vec(),
            context_exclude: ctx.exclude.clone(),
            source_ids: SourceIds::Root,
            owner: None,
            mode,
            allow_empty_wildcard: true,
        };
        // The memo is loaded only when the tree index cannot prove the
        // copy unchanged (loading it was a tenth of a large no-op).
        let mut used = None;
        let h = fileops::checksum::checksum_sources_indexed(
            dir,
            paths,
            &opts,
            || {
                let (memo, file) = self.memo_for(dir);
                used = Some((memo.clone(), file, memo.files_read()));
                memo
            },
            &self.root.checksums_dir(),
        )?;
        if let Some((memo, file, before)) = used {
            if memo.files_read() != before {
                // Best effort: a memo that cannot be saved only costs a re-read.
                let _ = fs::create_dir_all(self.root.checksums_dir());
                let _ = memo.save(&file);
            }
        }
        Ok(h)
    }

    /// The checksum memo of the context folder `dir` and the file it is
    /// kept in, loaded from that file on first use.
    fn memo_for(&self, dir: &Path) -> (Arc<ChecksumMemo>, PathBuf) {
        let name = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
        let file = self
            .root
            .checksums_dir()
            .join(format!("{}.memo", &name[..32]));
        let mut memos = self.memos.lock().unwrap_or_else(|p| p.into_inner());
        let memo = memos
            .entry(dir.to_path_buf())
            .or_insert_with(|| Arc::new(ChecksumMemo::load(&file)))
            .clone();
        (memo, file)
    }

    fn run_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Worker, &AtomicBool) -> Result<T, ExecutorError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, ExecutorError>> {
        let this = self.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(cancel.clone());
        async move {
            let res = tokio::task::spawn_blocking(move || f(&this, &cancel)).await;
            drop(guard);
            match res {
                Ok(r) => r,
                Err(_) => Err(ExecutorError::Interrupted),
            }
        }
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn context_of(graph: &Graph<BuildOp>, node: NodeId, input: usize) -> Option<ContextRef> {
    let inputs = graph.inputs(node);
    match inputs.get(input).map(|&i| graph.op(i)) {
        Some(BuildOp::Context { name, exclude }) => Some(ContextRef {
            name: name.clone(),
            exclude: exclude.clone(),
        }),
        _ => None,
    }
}

/// A copy's `--chmod`: the symbolic form (BuildKit's `ModeStr`) wins over
/// the octal one, as in BuildKit's file backend.
fn chmod_of(
    mode: Option<u32>,
    symbolic: Option<&str>,
) -> Result<Option<Chmod>, fileops::FileOpsError> {
    match symbolic {
        Some(s) => Ok(Some(Chmod::parse(s)?)),
        None => Ok(mode.map(Chmod::Octal)),
    }
}

/// The executor is shared by the solver's tasks; it is always used behind an
/// `Arc` so blocking work can hold it.
pub struct SharedWorker(pub Arc<Worker>);

impl Executor for SharedWorker {
    type Op = BuildOp;
    type Output = Snapshot;
    type Error = ExecutorError;

    async fn content_key(
        &self,
        graph: &Graph<BuildOp>,
        node: NodeId,
    ) -> Result<Option<Key>, ExecutorError> {
        let w = &self.0;
        let mut parts: Vec<[u8; 32]> = Vec::new();
        match graph.op(node) {
            BuildOp::File(f) => {
                for a in &f.actions {
                    if let FileAction::Copy {
                        source,
                        paths,
                        parents,
                        exclude,
                        chmod,
                        chmod_symbolic,
                        ..
                    } = a
                    {
                        if let Some(ctx) = context_of(graph, node, *source) {
                            let (w2, paths, exclude) = (w.clone(), paths.clone(), exclude.clone());
                            let mode = chmod_of(*chmod, chmod_symbolic.as_deref())?;
                            let parents = *parents;
                            let h = tokio::task::spawn_blocking(move || {
                                w2.context_checksum(&ctx, &paths, parents, &exclude, mode)
                            })
                            .await
                            .map_err(|_| ExecutorError::Interrupted)??;
                            parts.push(*h.as_bytes());
                        }
                    }
                }
            }
            BuildOp::Exec(e) => {
                for m in &e.mounts {
                    if let ExecMount::Bind { input, source, .. } = m {
                        if let Some(ctx) = context_of(graph, node, *input) {
                            let (w2, src) = (w.clone(), vec![source.clone()]);
                            let h = tokio::task::spawn_blocking(move || {
                                w2.context_checksum(&ctx, &src, false, &[], None)
                            })
                            .await
                            .map_err(|_| ExecutorError::Interrupted)??;
                            parts.push(*h.as_bytes());
                        }
                    }
                }
            }
            BuildOp::Http { url, checksum, .. } => {
                parts.push(http_content_key(w, url, checksum.as_deref()).await?);
            }
            BuildOp::Git {
                url,
                keep_git_dir,
                checksum,
            } => {
                let (w2, url, keep, checksum) =
                    (w.clone(), url.clone(), *keep_git_dir, checksum.clone());
                let k = tokio::task::spawn_blocking(move || {
                    git_add::content_key(&w2, &url, keep, checksum.as_deref())
                })
                .await
                .map_err(|_| ExecutorError::Interrupted)??;
                parts.push(k);
            }
            _ => {}
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(Key::of_parts(
            "kiln.content.v1",
            parts.iter().map(|p| p.as_slice()),
        )))
    }

    async fn lookup(&self, op: &BuildOp, key: Key) -> Result<Option<Snapshot>, ExecutorError> {
        // Sources are cheap to produce and never recorded.
        if matches!(
            op,
            BuildOp::Image { .. } | BuildOp::Context { .. } | BuildOp::Scratch
        ) {
            return Ok(None);
        }
        let path = self.0.record_path(key);
        let Ok(data) = fs::read(&path) else {
            return Ok(None);
        };
        let Ok(snap) = serde_json::from_slice::<Snapshot>(&data) else {
            return Ok(None);
        };
        let blobs = self.0.root.blobs();
        let complete = snap.layers.iter().all(|l| blobs.has(&l.digest));
        Ok(complete.then_some(snap))
    }

    async fn execute(
        &self,
        op: &BuildOp,
        key: Key,
        inputs: Vec<Snapshot>,
        progress: Progress,
    ) -> Result<Snapshot, ExecutorError> {
        let w = &self.0;
        let snap = match op {
            BuildOp::Scratch => return Ok(Snapshot::default()),
            BuildOp::Context { name, exclude } => {
                w.context_dir(name)?;
                return Ok(Snapshot {
                    layers: vec![],
                    context: Some(ContextRef {
                        name: name.clone(),
                        exclude: exclude.clone(),
                    }),
                });
            }
            BuildOp::Image {
                reference,
                manifest,
                ..
            } => {
                let (reference, manifest) = (reference.clone(), manifest.clone());
                return w
                    .run_blocking(move |w, _| image_layers(w, &reference, manifest.as_deref()))
                    .await;
            }
            BuildOp::Merge => {
                let layers = inputs.into_iter().flat_map(|s| s.layers).collect();
                Snapshot {
                    layers,
                    context: None,
                }
            }
            BuildOp::Exec(e) => {
                let locks = cache_mount_locks(w, e, &inputs);
                let mut _held = Vec::new();
                for l in &locks {
                    _held.push(l.clone().lock_owned().await);
                }
                let (e, progress) = (e.clone(), progress.clone());
                w.run_blocking(move |w, cancel| run_exec(w, &e, &inputs, &progress, cancel))
                    .await?
            }
            BuildOp::File(f) => {
                let (f, progress) = (f.clone(), progress.clone());
                w.run_blocking(move |w, cancel| run_file(w, &f, &inputs, &progress, cancel))
                    .await?
            }
            BuildOp::Http {
                url,
                checksum,
                filename,
            } => {
                let d = fetch_http(w, url, checksum.as_deref()).await?;
                let filename = filename.clone();
                let progress = progress.clone();
                w.run_blocking(move |w, cancel| run_http(w, &filename, &d, &progress, cancel))
                    .await?
            }
            BuildOp::Git {
                url,
                keep_git_dir,
                checksum,
            } => {
                let (url, keep, checksum) = (url.clone(), *keep_git_dir, checksum.clone());
                let progress = progress.clone();
                w.run_blocking(move |w, cancel| {
                    git_add::run(w, &url, keep, checksum.as_deref(), &progress, cancel)
                })
                .await?
            }
        };
        w.record(key, &snap)?;
        Ok(snap)
    }
}

/// What an `ADD <url>` source's key depends on: its `--checksum` (no
/// download needed), else the digest of the body, downloaded now (and
/// reused when the step runs), as BuildKit checks the URL on every build.
async fn http_content_key(
    w: &Arc<Worker>,
    url: &str,
    checksum: Option<&str>,
) -> Result<[u8; 32], ExecutorError> {
    let digest = match checksum {
        Some(c) => c.to_string(),
        None => fetch_http(w, url, None).await?.sha256.clone(),
    };
    Ok(Key::of_parts("kiln.http.v1", [digest.as_bytes()]).0)
}

/// This build's download of `url`, made in the worker's scratch space.
async fn fetch_http(
    w: &Arc<Worker>,
    url: &str,
    checksum: Option<&str>,
) -> Result<Arc<crate::http_source::Download>, ExecutorError> {
    let scratch = || {
        w.layers
            .scratch("http")
            .map_err(|e| crate::http_source::HttpError::Io {
                what: "create scratch for",
                path: PathBuf::from(url),
                source: io::Error::other(e.to_string()),
            })
    };
    Ok(w.http.fetch(url, checksum, scratch).await?)
}

/// The layer of an `ADD <url>` source: the body alone at `/{filename}`,
/// owned by root, mode 0600, mtime from `Last-Modified` (BuildKit's http
/// source defaults; `--chmod`/`--chown` apply in the copy that follows).
fn run_http(
    w: &Worker,
    filename: &str,
    d: &crate::http_source::Download,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Snapshot, ExecutorError> {
    use std::os::unix::fs::PermissionsExt;
    let _slot = w.slots.acquire(cancel).ok_or(ExecutorError::Interrupted)?;
    let dir = w.layers.scratch("http-layer")?;
    let active = w.prepare(&[], &dir, progress)?;
    let dest = active.rootfs().join(filename);
    fs::copy(&d.path, &dest).map_err(io_err("copy download to", &dest))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", &dest))?;
    if let Some(t) = d.last_modified {
        let f = fs::File::options()
            .write(true)
            .open(&dest)
            .map_err(io_err("open", &dest))?;
        f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .map_err(io_err("set times of", &dest))?;
    }
    commit_layer(w, active, &Snapshot::default(), &[])
}

fn cache_mount_locks(
    w: &Worker,
    e: &Exec,
    inputs: &[Snapshot],
) -> Vec<Arc<tokio::sync::Mutex<()>>> {
    let mut table = w.mount_locks.lock().unwrap_or_else(|p| p.into_inner());
    e.mounts
        .iter()
        .filter_map(|m| match m {
            m @ ExecMount::Cache {
                sharing: kiln_solver::ops::Sharing::Locked,
                ..
            } => cache_mount_name(m, inputs).map(|name| table.entry(name).or_default().clone()),
            _ => None,
        })
        .collect()
}

/// The name of a cache mount's folder (and lock): one per identity, as
/// BuildKit keys its cache mounts (`id`, plus the ref the cache starts
/// from: none, the `from` stage or image, and a folder made with the
/// mount's uid/gid/mode when any was given). A cache with neither `from`
/// nor ownership options keeps the name it always had.
pub fn cache_mount_name(m: &ExecMount, inputs: &[Snapshot]) -> Option<String> {
    let ExecMount::Cache {
        id,
        uid,
        gid,
        mode,
        owned,
        from,
        ..
    } = m
    else {
        return None;
    };
    let mut h = blake3::Hasher::new();
    h.update(id.as_bytes());
    if let Some((input, source)) = from {
        // The content the cache starts from: the input's layers.
        h.update(format!("\0from {source}").as_bytes());
        if let Some(snap) = inputs.get(*input) {
            if let Some(ctx) = &snap.context {
                h.update(format!("\0context {}", ctx.name).as_bytes());
            }
            for l in &snap.layers {
                h.update(b"\0");
                h.update(l.diff_id.to_string().as_bytes());
            }
        }
    }
    if *owned {
        h.update(format!("\0owned {uid}:{gid}:{mode:o}").as_bytes());
    }
    Some(h.finalize().to_hex().to_string())
}

/// Makes the first folder of a cache mount at `dir` (atomically: another
/// step may make it at the same time): the `from` input's folder at its
/// source, copied, when given and no ownership options were (BuildKit
/// mounts that path of the stage as the cache's start), else an empty
/// folder owned as the mount asks.
fn create_cache_dir(
    w: &Worker,
    m: &ExecMount,
    inputs: &[Snapshot],
    dir: &Path,
) -> Result<(), ExecutorError> {
    use std::os::unix::fs::{chown, PermissionsExt};
    let ExecMount::Cache {
        uid,
        gid,
        mode,
        owned,
        from,
        ..
    } = m
    else {
        return Ok(());
    };
    let tmp = w.layers.scratch("cachemount")?;
    match from {
        Some((input, source)) if !*owned => {
            let snap = inputs.get(*input).ok_or_else(|| {
                ExecutorError::Unsupported(format!("cache mount from missing input {input}"))
            })?;
            let view = source_view(w, snap)?;
            let src = fileops::rootpath::host_path(&view.path, Path::new(source), true)?;
            if !src.is_dir() {
                return Err(ExecutorError::Unsupported(format!(
                    "cache mount source {source} is not a directory"
                )));
            }
            let seed = tmp.join("seed");
            snapshot::copy_tree(&src, &seed)?;
            fs::rename(&seed, dir)
                .or_else(|e| if dir.exists() { Ok(()) } else { Err(e) })
                .map_err(io_err("create", dir))?;
        }
        _ => {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(*mode))
                .map_err(io_err("chmod", &tmp))?;
            crate::userns::tolerate_unmapped(chown(&tmp, Some(*uid), Some(*gid)))
                .map_err(io_err("chown", &tmp))?;
            fs::rename(&tmp, dir)
                .or_else(|e| if dir.exists() { Ok(()) } else { Err(e) })
                .map_err(io_err("create", dir))?;
        }
    }
    Ok(())
}

/// An image's layers, from its platform manifest in the store.
fn image_layers(
    w: &Worker,
    reference: &str,
    manifest: Option<&str>,
) -> Result<Snapshot, ExecutorError> {
    let bad = |detail: String| ExecutorError::Image {
        reference: reference.to_string(),
        detail,
    };
    let manifest =
        manifest.ok_or_else(|| bad("the image was not resolved before the build".into()))?;
    let digest: kiln_cache::Digest = manifest
        .parse()
        .map_err(|_| bad(format!("bad manifest digest {manifest}")))?;
    let doc: serde_json::Value = kiln_cache::image::read_json(w.root.blobs(), &digest, "manifest")?;
    let mut layers = Vec::new();
    let config_digest = doc["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("manifest without config".into()))?;
    let config: serde_json::Value = kiln_cache::image::read_json(
        w.root.blobs(),
        &config_digest
            .parse()
            .map_err(|_| bad("bad config digest".into()))?,
        "config",
    )?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let descs = doc["layers"].as_array().cloned().unwrap_or_default();
    if diff_ids.len() != descs.len() {
        return Err(bad(format!(
            "{} layers but {} diff_ids",
            descs.len(),
            diff_ids.len()
        )));
    }
    for (d, id) in descs.iter().zip(diff_ids) {
        let digest = d["digest"]
            .as_str()
            .ok_or_else(|| bad("layer without digest".into()))?;
        layers.push(LayerRef {
            diff_id: id
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad diff_id".into()))?,
            digest: digest
                .parse()
                .map_err(|_| bad(format!("bad layer digest {digest}")))?,
            size: d["size"].as_u64().unwrap_or(0),
            media_type: d["mediaType"]
                .as_str()
                .unwrap_or(kiln_cache::media::OCI_LAYER_GZIP)
                .to_string(),
        });
    }
    Ok(Snapshot {
        layers,
        context: None,
    })
}

/// Finishes a writable snapshot into a new layer on top of `base`.
fn commit_layer(
    w: &Worker,
    active: Active,
    base: &Snapshot,
    exclude: &[PathBuf],
) -> Result<Snapshot, ExecutorError> {
    let t = crate::phase_timing::Phase::start("commit.finish");
    let finished = active.finish()?;
    t.end();
    commit_finished(w, finished, base, exclude)
}

/// [`commit_layer`] of a snapshot already unmounted.
fn commit_finished(
    w: &Worker,
    finished: snapshot::Finished,
    base: &Snapshot,
    exclude: &[PathBuf],
) -> Result<Snapshot, ExecutorError> {
    let t = crate::phase_timing::Phase::start("commit.diff");
    let writer = w.root.blobs().writer(None, None)?;
    // Uncompressed on the build path: gzip (even at level 1, ~40 MB/s here)
    // dominated every step that adds data, and the unpacked upper dir is what
    // later steps read anyway. Exporters and push may compress.
    // A copy's changes are also laid out as a layer dir beside its rootfs
    // (hard links), adopted below like an overlay's upper dir.
    let copy_upper = match &finished {
        snapshot::Finished::Copy { rootfs, .. } => rootfs.parent().map(|d| d.join("upper")),
        snapshot::Finished::Overlay { .. } => None,
    };
    let (digest, writer, made) = match &copy_upper {
        Some(upper) if !upper.exists() => {
            diff::write_snapshot_with_upper(&finished, exclude, Compression::None, writer, upper)?
        }
        _ => {
            let (d, w) = diff::write_snapshot(&finished, exclude, Compression::None, writer)?;
            (d, w, None)
        }
    };
    writer.commit()?;
    let layer = LayerRef {
        diff_id: digest.diff_id.parse()?,
        digest: digest.digest.parse()?,
        size: digest.size,
        media_type: digest.media_type.to_string(),
    };
    // The sandbox has already removed the mount points it created
    // (`exclude` only makes sure), so the upper dir is the layer. The copy
    // fallback's layer dir is the one laid out beside its rootfs; when that
    // could not be made, the blob is unpacked on first use instead.
    t.end();
    let t = crate::phase_timing::Phase::start("commit.adopt");
    match (&finished, &made) {
        (snapshot::Finished::Overlay { upper, .. }, _) | (_, Some(upper)) => {
            w.layers.adopt(upper, &layer.diff_id)?;
        }
        _ => {}
    }
    t.end();
    let mut layers = base.layers.clone();
    layers.push(layer);
    Ok(Snapshot {
        layers,
        context: None,
    })
}

/// A read-only view of a snapshot or a context, for COPY --from and bind
/// mounts. Holds the mount (if any) for as long as it is needed.
struct SourceView {
    path: PathBuf,
    _mount: Option<Mounted>,
    context: Option<ContextRef>,
}

fn source_view(w: &Worker, snap: &Snapshot) -> Result<SourceView, ExecutorError> {
    if let Some(ctx) = &snap.context {
        return Ok(SourceView {
            path: w.context_dir(&ctx.name)?.to_path_buf(),
            _mount: None,
            context: Some(ctx.clone()),
        });
    }
    let dir = w.layers.scratch("view")?;
    if snap.layers.is_empty() {
        return Ok(SourceView {
            path: dir,
            _mount: None,
            context: None,
        });
    }
    let lowers = w.layer_dirs(snap)?;
    let target = dir.join("merged");
    fs::create_dir_all(&target).map_err(io_err("create", &target))?;
    if lowers.len() > snapshot::MAX_LOWERS {
        let flat = dir.join("flat");
        snapshot::flatten(&lowers, &flat)?;
        return Ok(SourceView {
            path: flat,
            _mount: None,
            context: None,
        });
    }
    let m = snapshot::mount_readonly(&lowers, &target)?;
    Ok(SourceView {
        path: m.path().to_path_buf(),
        _mount: Some(m),
        context: None,
    })
}

fn run_exec(
    w: &Worker,
    e: &Exec,
    inputs: &[Snapshot],
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Snapshot, ExecutorError> {
    let slot = w.slots.acquire(cancel).ok_or(ExecutorError::Interrupted)?;
    let base = inputs.first().cloned().unwrap_or_default();
    let lowers = w.layer_dirs_reporting(&base, progress)?;
    let dir = w.layers.scratch("exec")?;
    let t = crate::phase_timing::Phase::start("run.prepare");
    let active = w.prepare(&lowers, &dir, progress)?;
    t.end();
    let rootfs = active.rootfs().to_path_buf();
    let t = crate::phase_timing::Phase::start("run.resolve_user");
    let user = crate::users::resolve_user(&rootfs, &e.user)?;
    t.end();

    let mut views = Vec::new();
    // The writable layers of rw binds, over `views`: they go first.
    let mut throwaways = Vec::new();
    let mut mounts = Vec::new();
    // Secrets' copies live here until the step is over; their mount
    // points (and folders made for them), as every mount's, never reach
    // the layer (the sandbox removes them).
    let mut secret_dir: Option<SecretDir> = None;
    let mut secret_env: Vec<(String, String)> = Vec::new();
    let mut ssh_proxies = Vec::new();
    for m in &e.mounts {
        match m {
            ExecMount::Bind {
                input,
                source,
                target,
                readonly,
            } => {
                let snap = inputs.get(*input).ok_or_else(|| {
                    ExecutorError::Unsupported(format!("bind mount from missing input {input}"))
                })?;
                let view = source_view(w, snap)?;
                let root = match &view.context {
                    Some(ctx) => w.context_for_binds(ctx)?,
                    None => view.path.clone(),
                };
                let mut src = fileops::rootpath::host_path(&root, Path::new(source), true)?;
                if !*readonly {
                    // Writable for the step, never written through: the
                    // step's writes land in a layer of their own, thrown
                    // away after it (BuildKit's rw bind is a fresh mutable
                    // snapshot of the source, never committed).
                    let over = Throwaway::over(
                        &src,
                        &w.layers.scratch("rwbind")?,
                        w.opts.throwaway_copies(),
                    )?;
                    src = over.path().to_path_buf();
                    throwaways.push(over);
                }
                mounts.push(Mount::Bind {
                    source: src,
                    target: target.clone(),
                    readonly: *readonly,
                });
                views.push(view);
            }
            ExecMount::Cache {
                target, readonly, ..
            } => {
                let name = cache_mount_name(m, inputs).unwrap_or_default();
                let dir = w.cache_mounts.join(name);
                if !dir.exists() {
                    create_cache_dir(w, m, inputs, &dir)?;
                }
                mounts.push(Mount::Bind {
                    source: dir,
                    target: target.clone(),
                    readonly: *readonly,
                });
            }
            ExecMount::Tmpfs { target, size } => {
                mounts.push(Mount::Tmpfs {
                    target: target.clone(),
                    size: *size,
                    mode: None,
                });
            }
            ExecMount::File { target, data, mode } => {
                let dir = w.layers.scratch("file")?;
                let path = dir.join("content");
                fs::write(&path, data).map_err(io_err("write", &path))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                    .map_err(io_err("chmod", &path))?;
                mounts.push(Mount::Bind {
                    source: path,
                    target: target.clone(),
                    readonly: true,
                });
            }
            ExecMount::Secret {
                id,
                target,
                required,
                mode,
                uid,
                gid,
                env,
            } => {
                let Some(value) = w.opts.secrets.value(id)? else {
                    if *required {
                        return Err(SecretError::NotFound(id.clone()).into());
                    }
                    continue; // optional: the step runs without it
                };
                if let Some(var) = env {
                    secret_env.push((var.clone(), String::from_utf8_lossy(&value).into_owned()));
                }
                if target.is_empty() {
                    continue;
                }
                let path = private_dir(w, &mut secret_dir)?.write(&value, *mode, *uid, *gid)?;
                mounts.push(Mount::Bind {
                    source: path,
                    target: target.clone(),
                    readonly: true,
                });
            }
            ExecMount::Ssh {
                id,
                target,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(agent) = w.opts.secrets.ssh_socket(id)? else {
                    if *required {
                        return Err(SecretError::NoSsh(id.clone()).into());
                    }
                    continue;
                };
                // A forwarding socket of the step's own (uid/gid/mode), not
                // the agent's.
                let proxy =
                    private_dir(w, &mut secret_dir)?.ssh_proxy(&agent, *mode, *uid, *gid)?;
                mounts.push(Mount::Bind {
                    source: proxy.path().to_path_buf(),
                    target: target.clone(),
                    readonly: false,
                });
                ssh_proxies.push(proxy);
                if !secret_env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                    secret_env.push(("SSH_AUTH_SOCK".into(), target.clone()));
                }
            }
        }
    }

    let mut spec = SandboxSpec::new(&rootfs, e.argv.clone());
    spec.env = e.env.clone();
    for (k, v) in secret_env {
        spec.env
            .retain(|kv| kv.split('=').next() != Some(k.as_str()));
        spec.env.push(format!("{k}={v}"));
    }
    spec.cwd = if e.cwd.is_empty() {
        "/".into()
    } else {
        e.cwd.clone()
    };
    user.apply(&mut spec);
    spec.network = match e.network {
        OpNetwork::Default => w.opts.default_network,
        OpNetwork::Host => Network::Host,
        OpNetwork::None => Network::None,
    };
    // Held until the step is over, then handed to the next one.
    let _net = match spec.network {
        Network::Private => {
            let lease = w.netpool.acquire()?;
            spec.netns = Some(lease.path().to_path_buf());
            spec.resolv_conf = w.netpool.resolv_conf();
            Some(lease)
        }
        _ => None,
    };
    spec.mounts = mounts;
    if e.insecure && !w.opts.allow_insecure {
        return Err(ExecutorError::Unsupported(INSECURE_NOT_ALLOWED.into()));
    }
    spec.privileged = e.insecure;
    spec.rlimits = crate::resources::rlimits(&e.resources.ulimits)?;
    spec.shm_size = e.resources.shm_size;
    // Removed (empty again) when the step is over.
    let _cgroup = match &e.resources.cgroup_parent {
        Some(parent) => {
            let id = format!("kiln-{:016x}", rand_id());
            let cg = crate::resources::StepCgroup::create(parent, &id)?;
            spec.cgroup_procs = cg.procs_files();
            Some(cg)
        }
        None => None,
    };
    if !e.resources.extra_hosts.is_empty() {
        let text = crate::resources::hosts_file(&spec.hostname, &e.resources.extra_hosts);
        let path = private_dir(w, &mut secret_dir)?.write(text.as_bytes(), 0o644, 0, 0)?;
        spec.hosts_file = Some(path);
    }
    spec.emulator = crate::emulation::emulator_for(&e.platform)
        .map_err(|err| ExecutorError::Unsupported(err.to_string()))?;
    let (mut out_carry, mut err_carry) = (Utf8Carry::default(), Utf8Carry::default());
    let mut sink = |s: sandbox::Stream, data: &[u8]| {
        let (stream, carry) = match s {
            sandbox::Stream::Stdout => (Stream::Stdout, &mut out_carry),
            sandbox::Stream::Stderr => (Stream::Stderr, &mut err_carry),
        };
        let whole = carry.push(data);
        if !whole.is_empty() {
            progress.log(stream, &whole);
        }
    };
    // The process is the kernel's to schedule; the slot is for kiln's work.
    drop(slot);
    let t = crate::phase_timing::Phase::start("run.sandbox");
    let outcome = sandbox::run_cancellable(&spec, &w.opts.helper_exe, &mut sink, cancel)?;
    t.end();
    for (stream, carry) in [(Stream::Stdout, out_carry), (Stream::Stderr, err_carry)] {
        if !carry.0.is_empty() {
            progress.log(stream, &carry.0);
        }
    }
    drop(throwaways);
    drop(views);
    drop(ssh_proxies);
    drop(secret_dir);
    if !outcome.status.success() {
        drop(active);
        return Err(ExecutorError::Process {
            argv: e.argv.join(" "),
            code: outcome.status.code(),
        });
    }
    let _slot = w.slots.acquire(cancel).ok_or(ExecutorError::Interrupted)?;
    let _t = crate::phase_timing::Phase::start("run.commit");
    commit_layer(w, active, &base, &outcome.created)
}

/// A name for a step's cgroup, unique among the steps running now.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Holds back the start of a UTF-8 character that a read cut in two, so
/// the progress (which is text) gets it whole with the next read instead of
/// two replacement characters.
#[derive(Default)]
struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    /// `data` after what was held back, minus an incomplete last character.
    fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.0);
        buf.extend_from_slice(data);
        // A character is at most 4 bytes: look for its lead byte among the
        // last 3 and hold it back if its continuation bytes are missing.
        let start = buf.len().saturating_sub(3);
        if let Some(i) = (start..buf.len()).rev().find(|&i| buf[i] & 0xC0 != 0x80) {
            let need = match buf[i] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            if buf.len() - i < need {
                self.0 = buf.split_off(i);
            }
        }
        buf
    }
}

/// The step's private folder for secrets and ssh sockets, made on first
/// use (most steps have none).
fn private_dir<'a>(
    w: &Worker,
    slot: &'a mut Option<SecretDir>,
) -> Result<&'a mut SecretDir, ExecutorError> {
    let dir = match slot.take() {
        Some(d) => d,
        None => SecretDir::create(w.layers.scratch("secrets")?)?,
    };
    Ok(slot.insert(dir))
}

fn run_file(
    w: &Worker,
    f: &FileOp,
    inputs: &[Snapshot],
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Snapshot, ExecutorError> {
    // An owner (`--chown`, or USER for WORKDIR) as BuildKit resolves it; a
    // name the image does not know falls back to BuildKit's default, and
    // the step's output says so.
    let owner =
        |spec: &Option<String>, rootfs: &Path| -> Result<Option<fileops::Owner>, ExecutorError> {
            let Some(spec) = spec.as_deref() else {
                return Ok(None);
            };
            let r = fileops::resolve_chown_reporting(spec, rootfs)?;
            for u in &r.unknown {
                progress.warn(u.to_string());
            }
            Ok(Some(r.owner))
        };
    let _slot = w.slots.acquire(cancel).ok_or(ExecutorError::Interrupted)?;
    let base = inputs.first().cloned().unwrap_or_default();
    let lowers = w.layer_dirs_reporting(&base, progress)?;
    let dir = w.layers.scratch("file")?;
    // Incremental COPY: start from the previous result of the same step.
    let step = incremental::identity(w, f, inputs, &base);
    let reuse = step
        .as_deref()
        .and_then(|id| incremental::start(w, id, &dir.join("upper")));
    // Without a previous result to start from, a copy where kernel overlay
    // is out writes into a linked tree (no FUSE round trips per file); with
    // one, the clone in the upper dir needs an overlay (kernel or FUSE).
    let files_only = reuse.is_none() || w.opts.snapshotter == crate::snapshotter::Snapshotter::Copy;
    let active = w.prepare_as(&lowers, &dir, progress, files_only)?;
    let reuse = reuse.filter(|_| active.has_upper());
    if !active.has_upper() {
        // A clone no overlay stands on: the copy's layer dir goes there.
        let _ = std::fs::remove_dir_all(dir.join("upper"));
    }
    let rootfs = active.rootfs().to_path_buf();
    for a in &f.actions {
        match a {
            FileAction::Copy {
                source,
                paths,
                dest,
                chown,
                chmod,
                chmod_symbolic,
                parents,
                exclude,
                unpack,
            } => {
                let snap = inputs.get(*source).ok_or_else(|| {
                    ExecutorError::Unsupported(format!("copy from missing input {source}"))
                })?;
                let view = source_view(w, snap)?;
                let mut spec = CopySpec::new(&view.path, paths.clone(), &rootfs, dest);
                spec.owner = owner(chown, &rootfs)?;
                spec.mode = chmod_of(*chmod, chmod_symbolic.as_deref())?;
                spec.parents = *parents;
                spec.exclude = exclude.clone();
                spec.unpack = *unpack;
                match &view.context {
                    Some(ctx) => {
                        spec.source_ids = SourceIds::Root;
                        spec.context_exclude = ctx.exclude.clone();
                    }
                    None => spec.source_ids = SourceIds::Preserve,
                }
                spec.reuse = reuse.clone();
                fileops::copy(&spec)?;
            }
            FileAction::Mkdir {
                path,
                mode,
                parents,
                chown,
                timestamp,
            } => {
                let owner = owner(chown, &rootfs)?;
                let utime = timestamp.map(|sec| fileops::meta::Time { sec, nsec: 0 });
                fileops::mkdir(&rootfs, path, *mode, *parents, owner, utime)?;
            }
            FileAction::Mkfile {
                path,
                data,
                mode,
                chown,
            } => {
                let owner = owner(chown, &rootfs)?;
                fileops::mkfile(&rootfs, path, data, *mode, owner, None)?;
            }
            FileAction::Rm {
                path,
                allow_not_found,
            } => {
                fileops::rm(&rootfs, path, *allow_not_found, false)?;
            }
        }
    }
    let finished = active.finish()?;
    if let (Some(r), snapshot::Finished::Overlay { upper, .. }) = (&reuse, &finished) {
        r.prune_untouched(upper)
            .map_err(io_err("prune the incremental copy in", upper))?;
    }
    let snap = commit_finished(w, finished, &base, &[])?;
    if let (Some(id), Some(layer)) = (step.as_deref(), snap.layers.last()) {
        incremental::record(w, id, &layer.diff_id);
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::Utf8Carry;

    #[test]
    fn a_character_cut_by_a_read_arrives_whole() {
        let text = "aé€😀z".as_bytes();
        for cut in 0..=text.len() {
            let mut c = Utf8Carry::default();
            let mut got = c.push(&text[..cut]);
            assert!(std::str::from_utf8(&got).is_ok(), "cut at {cut}");
            got.extend(c.push(&text[cut..]));
            assert_eq!(got, text, "cut at {cut}");
        }
        // Invalid bytes are passed on (progress shows them replaced).
        assert_eq!(Utf8Carry::default().push(b"a\xff"), b"a\xff");
    }
}

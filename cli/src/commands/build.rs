//! `kiln build` and `kiln du`: a Dockerfile and its context become an image,
//! with the flags of `docker build`/`buildx build`; and what the build cache
//! holds.
//!
//! The pipeline: parse, resolve base images (from the store, pulling when
//! missing or with `--pull`), plan, lower into the solver's graph, solve it
//! with the worker executor while progress is drawn, export.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use kiln_cache::registry::{self, NoProgress, PullOptions, RegistryConfig};
use kiln_cache::{image, Reference, Root};
use kiln_frontend::lower::{self, ImageMeta, LowerOptions, ResolvedImage};
use kiln_frontend::plan::{self, PlanOptions, Platform};
use kiln_solver::ops::BuildOp;
use kiln_solver::{Executor, NodeId, SolveOptions};
use miette::{miette, IntoDiagnostic, Result, WrapErr};

use crate::build::export::{self, Built, Layer, Output};
use crate::build::remote_cache::{self, CacheOptions, Imported};
use crate::progress;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Build an image from a Dockerfile and a context.
    Build(Box<BuildArgs>),
    /// Show what the build cache holds.
    Du {
        /// List every record.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// `kiln build`'s flags, as `docker build`/`buildx build` spell them.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name the image (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// A build argument `K=V` (`K` alone takes the value from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, using no cached result.
    #[arg(long)]
    pub no_cache: bool,
    /// Run the steps of these stages without the cache (repeatable).
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Always look for newer base images in the registry.
    #[arg(long)]
    pub pull: bool,
    /// Network of RUN steps: `default` (a namespace of their own with
    /// outbound access, as BuildKit's), `host` (the host's; needs `--allow
    /// network.host`) or `none`.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: progress::Mode,
    /// Print only the image ID (same as `--progress quiet`).
    #[arg(short, long)]
    pub quiet: bool,
    /// Where the result goes: `type=image|oci|docker|local|tar[,dest=PATH]`.
    #[arg(short, long)]
    pub output: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (digests, names) as JSON to this file.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Target platforms, comma separated (default: this machine's).
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Steps at once (default: the machine's cores for kiln's own work,
    /// with RUN processes not counted while they run; N caps both).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Export the build cache: `type=registry,ref=R|type=local,dest=DIR
    /// [,mode=min|max][,compression=…]`, or `type=inline` (repeatable).
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Import a build cache: `type=registry,ref=R`, `type=local,src=DIR`,
    /// or a bare registry reference (repeatable).
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=ID[,src=PATH|,env=VAR]`
    /// (repeatable; buildx syntax). Never stored, cached or printed.
    #[arg(long = "secret")]
    pub secret: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh`: `default|ID[=SOCKET]`
    /// (`$SSH_AUTH_SOCK` when no socket is named; agent sockets only).
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// Entitlements, as buildx's `--allow`: `security.insecure` lets
    /// `RUN --security=insecure` run without the sandbox's seccomp filter
    /// and with every capability; `network.host` lets `--network host` and
    /// `RUN --network=host` use the host's network.
    #[arg(long = "allow", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// The build context: a folder, or `-` for a tar on stdin.
    pub context: String,
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Build(a) => build(*a),
        Cmd::Du { verbose } => du(verbose),
    }
}

/// Resolves and, when needed, pulls base images, once per reference and
/// platform: the planner and the lowering ask for the same images.
struct Bases<'a> {
    root: &'a Root,
    rt: &'a tokio::runtime::Runtime,
    pull: bool,
    config: RegistryConfig,
    seen: RefCell<HashMap<(String, Platform), ResolvedImage>>,
}

impl Bases<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let key = (reference.to_string(), platform.clone());
        if let Some(hit) = self.seen.borrow().get(&key) {
            return Ok(hit.clone());
        }
        let r = Reference::parse(reference).map_err(|e| e.to_string())?;
        let want = image::Platform {
            os: platform.os.clone(),
            architecture: platform.architecture.clone(),
            variant: platform.variant.clone(),
        };
        let local = self.root.images().get(&r).map_err(|e| e.to_string())?;
        let from_store = |d: &oci_spec::image::Descriptor| {
            match image::resolve(self.root.blobs(), d, Some(&want), &r.familiar()) {
                // A single manifest (a pull for one platform) names its
                // platform only in its config.
                Err(kiln_cache::Error::NoMatchingPlatform { .. }) => {
                    let one = image::resolve(self.root.blobs(), d, None, &r.familiar())?;
                    let p = one.platform();
                    if p.os == want.os && p.architecture == want.architecture {
                        Ok(one)
                    } else {
                        image::resolve(self.root.blobs(), d, Some(&want), &r.familiar())
                    }
                }
                other => other,
            }
        };
        let resolved = match (&local, self.pull) {
            (Some(d), false) => match from_store(d) {
                Ok(res) => Some(res),
                // An index pulled for another platform: fetch this one.
                Err(kiln_cache::Error::NoMatchingPlatform { .. }) => None,
                Err(e) => return Err(e.to_string()),
            },
            _ => None,
        };
        let resolved = match resolved {
            Some(res) => res,
            None => {
                let opts = PullOptions {
                    platform: Some(registry::Platform {
                        os: platform.os.clone(),
                        architecture: platform.architecture.clone(),
                        variant: platform.variant.clone(),
                    }),
                    config: self.config.clone(),
                    ..PullOptions::default()
                };
                let pulled =
                    self.rt
                        .block_on(registry::pull(self.root, &r, &opts, Arc::new(NoProgress)));
                let d = match (pulled, &local) {
                    (Ok(d), _) => d,
                    // `--pull` with no registry in reach: the local copy.
                    (Err(_), Some(d)) if self.pull => d.clone(),
                    (Err(e), _) => {
                        return Err(format!(
                            "failed to resolve source metadata for {}: {e}",
                            r.familiar_tagged()
                        ))
                    }
                };
                from_store(&d).map_err(|e| e.to_string())?
            }
        };
        let out = ResolvedImage {
            reference: r.to_string(),
            manifest: resolved.descriptor.digest().to_string(),
            config: resolved.config,
        };
        self.seen.borrow_mut().insert(key, out.clone());
        Ok(out)
    }
}

fn frontend_err(e: String) -> kiln_frontend::Error {
    kiln_frontend::Error::new(kiln_frontend::ErrorKind::Plan, e)
}

/// The build context on disk; a tar on stdin is unpacked into the store's
/// temporary space (removed when the guard drops).
fn context_dir(arg: &str, root: &Root) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if arg != "-" {
        let p = PathBuf::from(arg);
        if !p.is_dir() {
            return Err(miette!(
                "unable to prepare context: path {arg:?} not found or not a directory"
            ));
        }
        return Ok((p, None));
    }
    std::fs::create_dir_all(root.tmp_dir()).into_diagnostic()?;
    let tmp = tempfile::Builder::new()
        .prefix("context-")
        .tempdir_in(root.tmp_dir())
        .into_diagnostic()?;
    let mut ar = tar::Archive::new(std::io::stdin().lock());
    ar.set_preserve_permissions(true);
    // tar's unpack refuses `..` and absolute entries, and entries through
    // symlinks it has itself unpacked.
    ar.unpack(tmp.path())
        .into_diagnostic()
        .wrap_err("unpacking the context from stdin")?;
    Ok((tmp.path().to_path_buf(), Some(tmp)))
}

fn build_args(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => std::env::var(a).ok().map(|v| (a.clone(), v)),
        })
        .collect()
}

/// BuildKit's words when a build asks for the host's network unasked.
const NETWORK_HOST_NOT_ALLOWED: &str =
    "network.host is not allowed: the host's network needs --allow network.host";

fn build(a: BuildArgs) -> Result<ExitCode> {
    // Before any thread starts: the build's mounts (snapshots, secrets)
    // stay out of the host's mount namespace and die with the process.
    // Without the privilege for it they are cleaned by the next command.
    let _ = kiln_worker::snapshot::enter_private_mount_namespace();
    let mut allow_insecure = false;
    let mut allow_host_network = false;
    for e in &a.allow {
        match e.as_str() {
            "security.insecure" => allow_insecure = true,
            "network.host" => allow_host_network = true,
            other => return Err(miette::miette!("invalid entitlement: {other}")),
        }
    }
    let root = Root::from_env().into_diagnostic()?;
    // A lease from the first look at the store to the last name written:
    // everything the build reads (base images' blobs, unpacked layer dirs,
    // cache records) or writes stays until it is done, as containerd's
    // leases keep a build's content; `kiln prune` waits for it.
    let _lease = root.lease().into_diagnostic()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()?;
    let (ctx, _ctx_guard) = context_dir(&a.context, &root)?;
    let df_path = a.file.clone().unwrap_or_else(|| ctx.join("Dockerfile"));
    let text = std::fs::File::open(&df_path)
        .and_then(kiln_frontend::parser::read_source)
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to read dockerfile {}", df_path.display()))?;
    let df_name = df_path.display().to_string();
    let parsed = kiln_frontend::parser::parse(&text).map_err(|e| e.with_source(&df_name, &text))?;
    let excludes = match kiln_frontend::dockerignore::locate(&df_path, &ctx) {
        Some(p) => {
            let bytes = std::fs::read(&p).into_diagnostic()?;
            kiln_frontend::dockerignore::read_all(&bytes)
                .map_err(|e| miette!("{}: {e}", p.display()))?
                .into_iter()
                .map(|p| p.pattern)
                .collect()
        }
        None => Vec::new(),
    };
    let platforms: Vec<Platform> = if a.platform.is_empty() {
        vec![Platform::host()]
    } else {
        a.platform
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| Platform::parse(p).map_err(|e| miette!("{e}")))
            .collect::<Result<_>>()?
    };
    // Foreign platforms run their RUN steps under QEMU: refuse now, before
    // any work, when this machine cannot emulate one.
    for p in platforms.iter().filter(|p| **p != Platform::host()) {
        kiln_worker::emulation::emulator_for(p).map_err(|e| miette!("{e}"))?;
    }
    let network = match a.network.as_str() {
        "default" => kiln_solver::ops::Network::Default,
        "host" if allow_host_network => kiln_solver::ops::Network::Host,
        "host" => return Err(miette!("{}", NETWORK_HOST_NOT_ALLOWED)),
        "none" => kiln_solver::ops::Network::None,
        other => {
            return Err(miette!(
                "network mode {other:?} not supported (default, host, none)"
            ))
        }
    };
    let outputs: Vec<Output> = if a.output.is_empty() {
        vec![Output::Image]
    } else {
        a.output
            .iter()
            .map(|o| Output::parse(o))
            .collect::<Result<_>>()?
    };
    let tags: Vec<Reference> = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| miette!("invalid tag {t:?}: {e}")))
        .collect::<Result<_>>()?;
    let mode = if a.quiet {
        progress::Mode::Quiet
    } else {
        a.progress
    };

    // Plan and lower, resolving base images as the planner meets them.
    let bases = Bases {
        root: &root,
        rt: &rt,
        pull: a.pull,
        config: RegistryConfig::load(root.path()).into_diagnostic()?,
        seen: RefCell::new(HashMap::new()),
    };
    let args = build_args(&a.build_args);
    let caches = CacheOptions::parse(&a.cache_to, &a.cache_from, &args)?;
    let secrets = crate::build::secrets::parse(&a.secret, &a.ssh)?;
    let mut plans = Vec::with_capacity(platforms.len());
    for p in &platforms {
        let opts = PlanOptions {
            build_args: args.clone(),
            target: a.target.clone(),
            target_platform: Some(p.clone()),
            build_platform: Some(Platform::host()),
        };
        let resolver = |r: &str, p: &Platform| {
            bases
                .resolve(r, p)
                .map(|i| Some(i.image_config().unwrap_or_default()))
                .map_err(frontend_err)
        };
        let planned = plan::plan_with_resolver(&parsed, &opts, &resolver)
            .map_err(|e| e.with_source(&df_name, &text))?;
        if mode != progress::Mode::Quiet {
            for w in &planned.warnings {
                eprintln!("WARNING: {} (line {})", w.message, w.location.line);
            }
        }
        plans.push(planned);
    }
    let resolver = |r: &str, p: &Platform| bases.resolve(r, p).map_err(frontend_err);
    let lowered = lower::lower(
        &plans,
        &resolver,
        &LowerOptions {
            context_excludes: excludes,
            show_platform: platforms.len() > 1,
        },
    )
    .map_err(|e| e.with_source(&df_name, &text))?;
    let mut sources = lowered.sources;
    sources.set_file(
        kiln_frontend::source_map::display_name(&df_path),
        text.clone(),
    );

    // As BuildKit checks entitlements before solving: nothing runs.
    if !allow_host_network {
        let ids: Vec<_> = lowered.targets.iter().map(|(_, id, _)| *id).collect();
        let all = lowered.graph.closure(&ids);
        if all.iter().any(|n| {
            matches!(lowered.graph.op(*n),
                BuildOp::Exec(e) if e.network == kiln_solver::ops::Network::Host)
        }) {
            eprintln!("ERROR: failed to solve: {NETWORK_HOST_NOT_ALLOWED}");
            return Ok(ExitCode::from(1));
        }
    }
    if !allow_insecure {
        let ids: Vec<_> = lowered.targets.iter().map(|(_, id, _)| *id).collect();
        let all = lowered.graph.closure(&ids);
        if all
            .iter()
            .any(|n| matches!(lowered.graph.op(*n), BuildOp::Exec(e) if e.insecure))
        {
            eprintln!(
                "ERROR: failed to solve: {}",
                kiln_worker::executor::INSECURE_NOT_ALLOWED
            );
            return Ok(ExitCode::from(1));
        }
    }
    let imported = remote_cache::import(&root, &rt, &bases.config, &caches.from, mode);
    let job = Job {
        remote: imported.clone(),
        root: &root,
        rt: &rt,
        graph: lowered.graph,
        targets: lowered.targets,
        mode,
        jobs: a.jobs,
        no_cache: a.no_cache,
        no_cache_filter: a.no_cache_filter.clone(),
        context: ctx.clone(),
        network,
        secrets,
        allow_insecure,
        sources,
    };
    let solved = run_worker(job)?;
    if let Some(i) = &imported {
        i.report(mode);
    }
    let (mut built, keys) = match solved {
        Ok(b) => b,
        Err(msg) => {
            eprintln!("ERROR: failed to solve: {msg}");
            return Ok(ExitCode::from(1));
        }
    };

    // Export.
    let created = export::created_now();
    remote_cache::apply_inline(
        &root,
        &mut built,
        &keys,
        caches.inline(),
        imported.as_deref(),
    );
    let images: Vec<export::Image> = built
        .iter()
        .map(|b| export::assemble_reusing(&root, b, &created))
        .collect::<Result<_>>()?;
    let top = match images.as_slice() {
        [one] => one.manifest.clone(),
        many => export::index(&root, many)?,
    };
    for out in &outputs {
        export::output(&root, out, &top, &built, &tags)?;
    }
    let id = match images.as_slice() {
        [one] => one.config.to_string(),
        _ => top.digest().to_string(),
    };
    if let Some(f) = &a.iidfile {
        std::fs::write(f, &id).into_diagnostic()?;
    }
    if let Some(f) = &a.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.digest": top.digest().to_string(),
            "containerimage.descriptor": top,
        });
        if let [one] = images.as_slice() {
            meta["containerimage.config.digest"] = serde_json::json!(one.config.to_string());
        }
        if !tags.is_empty() {
            let names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            meta["image.name"] = serde_json::json!(names.join(","));
        }
        std::fs::write(f, serde_json::to_vec_pretty(&meta).into_diagnostic()?).into_diagnostic()?;
    }
    // The image is built and named; a failed cache export still fails the
    // build, as BuildKit's does.
    let solution = remote_cache::Solution {
        keys: &keys,
        built: &built,
        imported: imported.as_deref(),
    };
    if let Err(e) = remote_cache::export(&root, &rt, &bases.config, &caches, &solution, mode) {
        eprintln!("ERROR: {e}");
        return Ok(ExitCode::from(1));
    }
    match mode {
        progress::Mode::Quiet => println!("{id}"),
        progress::Mode::Json => {}
        _ => {
            let mut err = std::io::stderr().lock();
            if mode.resolve() == progress::Mode::Tty {
                // The tree leaves the cursor on its last line.
                let _ = writeln!(err);
            }
            let _ = writeln!(err, "writing image {id} done");
            for t in &tags {
                let _ = writeln!(err, "naming to {t} done");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything the solve needs.
struct Job<'a> {
    root: &'a Root,
    rt: &'a tokio::runtime::Runtime,
    graph: kiln_solver::Graph<BuildOp>,
    targets: Vec<(Platform, NodeId, ImageMeta)>,
    mode: progress::Mode,
    /// `--jobs`: `None` caps kiln's own work at the cores (the worker's
    /// slots) and leaves RUN processes uncapped, as BuildKit does; `N`
    /// caps both.
    jobs: Option<usize>,
    no_cache: bool,
    no_cache_filter: Vec<String>,
    context: PathBuf,
    network: kiln_solver::ops::Network,
    /// Records imported with `--cache-from`.
    remote: Option<Arc<Imported>>,
    /// `--secret` and `--ssh`.
    secrets: kiln_worker::secrets::Secrets,
    allow_insecure: bool,
    /// Where each node was written (for `--no-cache-filter` and errors).
    sources: kiln_frontend::source_map::SourceMap,
}

/// A solve's outcome: the results and the cache keys of the solve, or a
/// failed build's message.
type Solution = std::result::Result<(Vec<Built>, Vec<kiln_solver::Key>), String>;

/// Solves the graph with `exec`; `Ok(Err(message))` is a failed build
/// (the step and its error), `Err` a failure of kiln itself. With the
/// results come the cache keys of the solve (for the cache export).
fn solve_with<E>(
    job: Job<'_>,
    exec: E,
    layers_of: impl Fn(&E::Output) -> Vec<Layer>,
) -> Result<Solution>
where
    E: Executor<Op = BuildOp>,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let drawer = progress::spawn(job.mode, rx);
    let filter = job.no_cache_filter.clone();
    let ignore_cache: Option<kiln_solver::IgnoreCache<BuildOp>> = if job.no_cache {
        Some(Arc::new(|_, _: &BuildOp| true))
    } else if !filter.is_empty() {
        let sources = job.sources.clone();
        Some(Arc::new(move |n, _: &BuildOp| {
            sources.in_stages(n, &filter)
        }))
    } else {
        None
    };
    let opts = SolveOptions {
        jobs: job
            .jobs
            .map_or(tokio::sync::Semaphore::MAX_PERMITS, |n| n.max(1)),
        ignore_cache,
        events: Some(tx),
    };
    let nodes: Vec<NodeId> = job.targets.iter().map(|(_, n, _)| *n).collect();
    let graph = Arc::new(job.graph);
    let solved = job
        .rt
        .block_on(kiln_solver::solve(graph, &nodes, Arc::new(exec), opts));
    // The sender went with the options; the drawer finishes its output.
    let failure = drawer.join().ok().flatten();
    let solved = match solved {
        Ok(s) => s,
        Err(e) => {
            // The failed step's last lines above the error, as BuildKit
            // shows them, whatever the display (JSON has them as events);
            // then the Dockerfile lines it was written on, and the error
            // without the step's name, which both have shown.
            let snippet = job.sources.snippet(e.vertex());
            let failure = failure.filter(|f| f.name == e.name());
            if let Some(f) = failure.filter(|f| !f.tail.is_empty() || snippet.is_some()) {
                if job.mode != progress::Mode::Json {
                    eprint!("{}", f.render());
                }
            }
            return Ok(Err(match snippet {
                Some(s) => {
                    eprint!("{s}");
                    e.inner().to_string()
                }
                None => e.to_string(),
            }));
        }
    };
    let all_cached = solved.executed.is_empty();
    let keys: Vec<kiln_solver::Key> = solved.keys.values().copied().collect();
    let built = job
        .targets
        .into_iter()
        .zip(solved.outputs.iter())
        .map(|((platform, _, meta), out)| Built {
            platform,
            layers: layers_of(out),
            meta,
            all_cached,
        })
        .collect();
    Ok(Ok((built, keys)))
}

/// The worker executor over this machine's sandboxes and the store.
fn run_worker(job: Job<'_>) -> Result<Solution> {
    use kiln_worker::executor::{SharedWorker, Snapshot, Worker, WorkerOptions};
    let helper_exe = std::env::current_exe()
        .into_diagnostic()
        .wrap_err("locating the kiln binary for the sandbox helper")?;
    let mut contexts = HashMap::new();
    let ctx = std::fs::canonicalize(&job.context).unwrap_or_else(|_| job.context.clone());
    contexts.insert(lower::MAIN_CONTEXT.to_string(), ctx);
    let opts = WorkerOptions {
        contexts,
        default_network: match job.network {
            kiln_solver::ops::Network::None => kiln_worker::sandbox::Network::None,
            kiln_solver::ops::Network::Host => kiln_worker::sandbox::Network::Host,
            kiln_solver::ops::Network::Default => kiln_worker::sandbox::Network::Private,
        },
        helper_exe,
        force_copy: false,
        cpu_slots: job.jobs.unwrap_or_else(kiln_solver::default_jobs),
        secrets: job.secrets.clone(),
        allow_insecure: job.allow_insecure,
    };
    let w = Worker::new(job.root.clone(), opts)
        .into_diagnostic()
        .wrap_err("starting the worker")?;
    let layers_of = |s: &Snapshot| {
        s.layers
            .iter()
            .map(|l| Layer {
                diff_id: l.diff_id.clone(),
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect()
    };
    let inner = SharedWorker(Arc::new(w));
    match job.remote.clone() {
        Some(imported) => solve_with(
            job,
            remote_cache::RemoteCached { inner, imported },
            layers_of,
        ),
        None => solve_with(job, inner, layers_of),
    }
}

// ---------------------------------------------------------------------- du

/// `$KILN_ROOT/buildcache`: one record per cache key.
pub fn buildcache_dir(root: &Root) -> PathBuf {
    root.path().join("buildcache")
}

/// The layer digests every build-cache record references, for `kiln
/// prune` to keep (a [`kiln_cache::gc::RootSource`]).
pub fn cache_roots(root: &Root) -> kiln_cache::Result<Vec<kiln_cache::Digest>> {
    Ok(records(root)
        .into_iter()
        .flat_map(|(_, layers)| layers)
        .filter_map(|(d, _)| d.parse().ok())
        .collect())
}

/// `kiln prune`'s part in the build cache, before blobs are collected:
/// records whose blobs are gone are dropped (nothing can use them); with
/// `all`, every record and every unpacked layer directory goes (they are
/// derived data, made again from blobs when needed). Returns how many
/// records were (or would be) dropped.
pub fn prune_records(root: &Root, all: bool, dry_run: bool) -> Result<usize> {
    let _gc = root.gc_lock().into_diagnostic()?;
    if !dry_run {
        // What killed kiln processes left: their scratch folders (a killed
        // prune's half-deleted layers among them), and the folders older
        // versions of prune left in tmp/.
        kiln_worker::layers::clean_dead_work(&root.path().join("work"));
        clean_old_pruned(&root.tmp_dir());
    }
    let mut dropped = 0;
    for (path, layers) in records(root) {
        let stale = layers.iter().any(|(d, _)| {
            d.parse::<kiln_cache::Digest>()
                .map_or(true, |d| !root.blobs().has(&d))
        });
        if all || stale {
            dropped += 1;
            if !dry_run {
                std::fs::remove_file(&path)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("removing {}", path.display()))?;
            }
        }
    }
    let layers = root.path().join("layers");
    if all && !dry_run && layers.is_dir() {
        // The layer dirs a running container's overlay stands on stay
        // (changing an overlay's lower dirs under it is undefined).
        // By name (the diff_id), whatever spelling of the store's path the
        // container was started with.
        let in_use: std::collections::HashSet<std::ffi::OsString> =
            kiln_worker::container::Store::open(root.path())
                .and_then(|s| s.list())
                .map(|cs| {
                    cs.into_iter()
                        .filter(|c| c.is_alive())
                        .flat_map(|c| c.lowers)
                        .filter_map(|l| l.file_name().map(|n| n.to_os_string()))
                        .collect()
                })
                .unwrap_or_default();
        // In this process's scratch folder: if prune is killed midway,
        // the next kiln command that finds the folder of a dead process
        // removes it (kiln_worker::layers::clean_dead_work).
        let doomed = root
            .path()
            .join("work")
            .join(std::process::id().to_string())
            .join("layers-pruned");
        std::fs::create_dir_all(doomed.parent().unwrap_or(root.path())).into_diagnostic()?;
        if in_use.is_empty() {
            // Rename first so a half-removed tree never looks like a layer.
            std::fs::rename(&layers, &doomed).into_diagnostic()?;
        } else {
            std::fs::create_dir_all(&doomed).into_diagnostic()?;
            for e in std::fs::read_dir(&layers).into_diagnostic()?.flatten() {
                if !in_use.contains(&e.file_name()) {
                    std::fs::rename(e.path(), doomed.join(e.file_name())).into_diagnostic()?;
                }
            }
        }
        std::fs::remove_dir_all(&doomed).into_diagnostic()?;
    }
    let exports = root.path().join("exports");
    if all && !dry_run && exports.is_dir() {
        // Hints for no-op rebuilds (export::assemble_reusing): with the
        // build cache gone they can only point at what is being pruned.
        std::fs::remove_dir_all(&exports).into_diagnostic()?;
    }
    Ok(dropped)
}

/// Removes `tmp/layers-pruned-<pid>` folders (where prune used to move the
/// layer dirs it deletes) whose process is gone.
fn clean_old_pruned(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("layers-pruned-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Every record: its file and its layers (digest, size).
fn records(root: &Root) -> Vec<(PathBuf, Vec<(String, u64)>)> {
    let Ok(rd) = std::fs::read_dir(buildcache_dir(root)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Vec<(String, u64)>)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            let layers = v
                .get("layers")?
                .as_array()?
                .iter()
                .filter_map(|l| {
                    Some((
                        l.get("digest")?.as_str()?.to_string(),
                        l.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
                    ))
                })
                .collect();
            Some((p, layers))
        })
        .collect();
    out.sort();
    out
}

fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[u])
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn du(verbose: bool) -> Result<ExitCode> {
    let root = Root::from_env().into_diagnostic()?;
    let recs = records(&root);
    let mut out = std::io::stdout().lock();
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0u64;
    let w = |out: &mut dyn Write, s: String| {
        out.write_all(s.as_bytes())
            .map_err(|e| miette!("writing output: {e}"))
    };
    if verbose {
        w(
            &mut out,
            format!("{:<66} {:>8} {:>12}\n", "ID", "LAYERS", "SIZE"),
        )?;
    }
    for (p, layers) in &recs {
        let size: u64 = layers.iter().map(|(_, s)| s).sum();
        for (d, s) in layers {
            if seen.insert(d.clone()) {
                total += s;
            }
        }
        if verbose {
            let id = p.file_stem().unwrap_or_default().to_string_lossy();
            w(
                &mut out,
                format!("{id:<66} {:>8} {:>12}\n", layers.len(), human(size)),
            )?;
        }
    }
    let layer_dirs = root.path().join("layers");
    let unpacked = dir_size(&layer_dirs);
    let cache_mounts = dir_size(&root.path().join("cachemounts"));
    w(&mut out, format!("Records:\t{}\n", recs.len()))?;
    w(
        &mut out,
        format!("Layer blobs:\t{} ({})\n", seen.len(), human(total)),
    )?;
    w(&mut out, format!("Unpacked layers:\t{}\n", human(unpacked)))?;
    w(
        &mut out,
        format!("Cache mounts:\t{}\n", human(cache_mounts)),
    )?;
    w(
        &mut out,
        format!("Total:\t{}\n", human(total + unpacked + cache_mounts)),
    )?;
    Ok(ExitCode::SUCCESS)
}

//! The build pipeline as a library: what `kiln build` runs, so a test,
//! another program or a server can run a build without the CLI.
//!
//! [`Builder::build`] takes plain [`BuildOptions`] and runs: read the
//! Dockerfile and context, resolve base images (from the store, pulling
//! when missing or with `pull`), plan, lower into the solver's graph,
//! import remote caches, solve with the worker while [`BuildEvent`]s go to
//! the caller's [`Progress`], export ([`export`]), export the build cache.
//! It returns a [`BuildResult`] or a [`BuildError`] whose kind says what
//! failed.

pub mod annotations;
pub mod attest;
mod bases;
mod check;
pub mod context;
mod error;
mod event;
pub mod export;
pub mod metadata;
pub mod prune;
mod remote;
pub mod secrets;
mod solve;
mod syntax;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use kiln_cache::registry::RegistryConfig;
use kiln_cache::remote::{self as cache_remote, CacheOptions};
use kiln_cache::{Digest, Reference, Root};
use kiln_frontend::lint;
use kiln_frontend::lower::{self, LowerOptions};
use kiln_frontend::plan::{self, PlanOptions, Platform};
use kiln_frontend::source_map;
use kiln_solver::ops::{BuildOp, Network};
use oci_spec::image::Descriptor;

pub use check::CheckResult;
pub use context::{Context, InputError};
pub use error::BuildError;
pub use event::{BuildEvent, FailedStep, NoProgress, Progress};
pub use export::Output;

/// BuildKit's words when a build asks for the host's network unasked.
pub const NETWORK_HOST_NOT_ALLOWED: &str =
    "network.host is not allowed: the host's network needs --allow network.host";

/// What to build and where the result goes: the options of `docker
/// build`/`buildx build`, parsed.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: Context,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    pub dockerfile: Option<PathBuf>,
    /// Names of the image.
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    /// The stage to build.
    pub target: Option<String>,
    /// Target platforms; empty means this machine's.
    pub platforms: Vec<Platform>,
    /// Where the result goes; empty means the image store.
    pub outputs: Vec<Output>,
    /// `--cache-to` / `--cache-from`.
    pub cache: CacheOptions,
    /// `--secret` and `--ssh` sources.
    pub secrets: kiln_worker::secrets::Secrets,
    /// The network of RUN steps.
    pub network: Network,
    /// Run every step, using no cached result.
    pub no_cache: bool,
    /// Run the steps of these stages without the cache.
    pub no_cache_filter: Vec<String>,
    /// Always look for newer base images in the registry.
    pub pull: bool,
    /// Steps at once (`None`: the cores for kiln's own work, RUN processes
    /// not counted).
    pub jobs: Option<usize>,
    /// Entitlement `security.insecure`.
    pub allow_insecure: bool,
    /// Entitlement `network.host`.
    pub allow_host_network: bool,
    /// Write the image ID to this file.
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (digests, names) as JSON to this file.
    pub metadata_file: Option<PathBuf>,
    /// How much provenance the metadata file carries
    /// (`BUILDX_METADATA_PROVENANCE`; buildx's default is `min`).
    pub metadata_provenance: metadata::MetadataProvenance,
    /// Attestations to attach (`--provenance`, `--sbom`, `--attest`);
    /// none by default.
    pub attest: attest::AttestOptions,
    /// What every RUN gets: `--add-host`, `--ulimit`, `--shm-size`,
    /// `--cgroup-parent`.
    pub resources: kiln_solver::ops::ExecResources,
    /// `--label`: set in every platform's image config.
    pub labels: BTreeMap<String, String>,
    /// `--annotation`.
    pub annotations: Vec<annotations::Annotation>,
    /// An output asked for `rewrite-timestamp=true`: the layers this build
    /// made have their times clamped to `SOURCE_DATE_EPOCH` (a build arg)
    /// before the image is assembled ([`export::epoch`]); without an epoch
    /// it does nothing, as in BuildKit.
    pub rewrite_timestamp: bool,
    /// `--build-context NAME=VALUE`, in order ([`context::named`]).
    pub named_contexts: Vec<(String, String)>,
    /// `--snapshotter`: how RUN steps get their writable root (kernel
    /// overlay, kiln's FUSE overlay, copies, or `auto`).
    pub snapshotter: kiln_worker::snapshotter::Snapshotter,
}

impl BuildOptions {
    /// Options for building the context folder `dir` with defaults
    /// elsewhere.
    pub fn new(context: Context) -> BuildOptions {
        BuildOptions {
            context,
            dockerfile: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            platforms: Vec::new(),
            outputs: Vec::new(),
            cache: CacheOptions::default(),
            secrets: Default::default(),
            network: Network::Default,
            no_cache: false,
            no_cache_filter: Vec::new(),
            pull: false,
            jobs: None,
            allow_insecure: false,
            allow_host_network: false,
            iidfile: None,
            metadata_file: None,
            metadata_provenance: Default::default(),
            attest: attest::AttestOptions::default(),
            resources: Default::default(),
            labels: BTreeMap::new(),
            annotations: Vec::new(),
            rewrite_timestamp: false,
            named_contexts: Vec::new(),
            snapshotter: Default::default(),
        }
    }
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image ID: the config digest of a single-platform image, else the
    /// index's digest.
    pub id: String,
    /// The manifest, or the index over several platforms.
    pub descriptor: Descriptor,
    /// Each platform's config digest.
    pub configs: Vec<Digest>,
    /// The names given.
    pub tags: Vec<Reference>,
    /// The names pushed to their registries, with the digest the registry
    /// has (`--push`, `type=registry`, `push=true`).
    pub pushed: Vec<(Reference, Descriptor)>,
}

/// Runs builds against one store.
pub struct Builder {
    root: Root,
    rt: tokio::runtime::Runtime,
    helper_exe: PathBuf,
    /// One table for every build this builder runs, so builds running at
    /// once (`kiln compose build`'s services) run a step they share once,
    /// as BuildKit's one solver does for concurrent jobs.
    inflight: Arc<kiln_solver::InFlight>,
}

impl Builder {
    /// A builder over `root`. Call it before the process starts threads:
    /// it moves the process into a private mount namespace (when allowed)
    /// so a build's mounts stay out of the host's and die with it;
    /// without the privilege they are cleaned by the next command.
    pub fn new(root: Root) -> Result<Builder, BuildError> {
        let _ = kiln_worker::snapshot::enter_private_mount_namespace();
        let helper_exe = std::env::current_exe().map_err(BuildError::context(
            "locating the kiln binary for the sandbox helper",
        ))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        Ok(Builder {
            root,
            rt,
            helper_exe,
            inflight: kiln_solver::InFlight::new(),
        })
    }

    /// The kiln binary the sandbox helper runs as (default: this process's
    /// executable, which must then be kiln).
    pub fn helper_exe(mut self, path: PathBuf) -> Builder {
        self.helper_exe = path;
        self
    }

    /// The store.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Builds as `opts` says, sending progress to `progress`. Several
    /// builds may run at once on one builder (from threads of their own).
    pub fn build(
        &self,
        opts: BuildOptions,
        progress: &dyn Progress,
    ) -> Result<BuildResult, BuildError> {
        let root = &self.root;
        let rt = &self.rt;
        // A lease from the first look at the store to the last name
        // written: everything the build reads (base images' blobs,
        // unpacked layer dirs, cache records) or writes stays until it is
        // done, as containerd's leases keep a build's content; `kiln
        // prune` waits for it.
        let _lease = root.lease()?;
        let started = attest::now();
        let prepared = context::prepare(&opts, root, rt)?;
        let named = context::named::prepare(&opts, root, rt)?;
        let (ctx, df_path) = (prepared.dir.clone(), prepared.dockerfile.clone());
        let text = prepared.read_dockerfile()?;
        let df_name = df_path.display().to_string();
        let parsed = kiln_frontend::parser::parse(&text)
            .map_err(|e| BuildError::Frontend(e.with_source(&df_name, &text)))?;
        if let Some(message) =
            syntax::warning(parsed.directives.syntax.as_deref(), &opts.build_args)
        {
            progress.event(BuildEvent::Warning { message, line: 1 });
        }
        let excludes = match kiln_frontend::dockerignore::locate(&df_path, &ctx) {
            Some(p) => {
                let bytes = std::fs::read(&p)?;
                kiln_frontend::dockerignore::read_all(&bytes)
                    .map_err(|e| BuildError::Invalid(format!("{}: {e}", p.display())))?
                    .into_iter()
                    .map(|p| p.pattern)
                    .collect()
            }
            None => Vec::new(),
        };
        let platforms = if opts.platforms.is_empty() {
            vec![Platform::host()]
        } else {
            opts.platforms.clone()
        };
        // Foreign platforms run their RUN steps under QEMU: refuse now,
        // before any work, when this machine cannot emulate one.
        for p in platforms.iter().filter(|p| **p != Platform::host()) {
            kiln_worker::emulation::emulator_for(p)
                .map_err(|e| BuildError::Invalid(e.to_string()))?;
        }
        if opts.network == Network::Host && !opts.allow_host_network {
            return Err(BuildError::Invalid(NETWORK_HOST_NOT_ALLOWED.into()));
        }
        let epoch = export::epoch::source_date_epoch(&opts.build_args)
            .map_err(|e| BuildError::Invalid(e.to_string()))?;
        let outputs = if opts.outputs.is_empty() {
            vec![Output::Image]
        } else {
            opts.outputs.clone()
        };
        // A push without a name fails now, before any work.
        for out in &outputs {
            if let Output::Named(spec) = out {
                export::push::names(spec, &opts.tags)?;
            }
        }

        // Plan and lower, resolving base images as the planner meets them.
        let bases = bases::Bases {
            root,
            rt,
            pull: opts.pull,
            config: RegistryConfig::load(root.path())?,
            seen: RefCell::new(HashMap::new()),
            aliases: named.images.clone(),
        };
        let mut plans = Vec::with_capacity(platforms.len());
        for p in &platforms {
            let popts = PlanOptions {
                build_args: opts.build_args.clone(),
                target: opts.target.clone(),
                target_platform: Some(p.clone()),
                build_platform: Some(Platform::host()),
                named_contexts: named.dirs.keys().cloned().collect(),
                image_contexts: named.images.keys().cloned().collect(),
            };
            let resolver = |r: &str, p: &Platform| {
                bases
                    .resolve(r, p)
                    .map(|i| Some(i.image_config().unwrap_or_default()))
                    .map_err(bases::frontend_err)
            };
            let planned = plan::plan_with_resolver(&parsed, &popts, &resolver)
                .map_err(|e| BuildError::Frontend(e.with_source(&df_name, &text)))?;
            // Warnings a build check now reports are left to the checks.
            for w in planned
                .warnings
                .iter()
                .filter(|w| !lint::covers(&w.message))
            {
                progress.event(BuildEvent::Warning {
                    message: w.message.clone(),
                    line: w.location.line,
                });
            }
            plans.push(planned);
        }
        // BuildKit's checks, before anything is solved (`error=true` stops
        // the build here).
        let checks = check::for_build(&parsed, &text, &opts, plans.first(), &excludes, &bases)?;
        for w in &checks.warnings {
            progress.event(BuildEvent::Check(w.clone()));
        }
        if let Some(message) = checks.error() {
            return Err(BuildError::Solve {
                message,
                lines: None,
            });
        }
        // A global `ARG SOURCE_DATE_EPOCH=…` is the default, as in BuildKit.
        let epoch = match plans.first() {
            Some(p) => export::epoch::source_date_epoch_of_plan(&opts.build_args, &p.global_args)
                .map_err(|e| BuildError::Invalid(e.to_string()))?,
            None => epoch,
        };
        let resolver = |r: &str, p: &Platform| bases.resolve(r, p).map_err(bases::frontend_err);
        let mut lowered = lower::lower(
            &plans,
            &resolver,
            &LowerOptions {
                context_excludes: excludes,
                show_platform: platforms.len() > 1,
                resources: opts.resources.clone(),
                epoch,
                named_contexts: named
                    .dirs
                    .iter()
                    .map(|(k, (_, ex))| (k.clone(), ex.clone()))
                    .collect(),
            },
        )
        .map_err(|e| BuildError::Frontend(e.with_source(&df_name, &text)))?;
        for (_, _, meta) in lowered.targets.iter_mut() {
            annotations::apply_labels(&mut meta.config, &opts.labels);
        }
        let mut sources = lowered.sources;
        sources.set_file(source_map::display_name(&df_path), text.clone());

        // As BuildKit checks entitlements before solving: nothing runs.
        let ids: Vec<_> = lowered.targets.iter().map(|(_, id, _)| *id).collect();
        let all = lowered.graph.closure(&ids);
        if !opts.allow_host_network
            && all.iter().any(|n| {
                matches!(lowered.graph.op(*n),
                    BuildOp::Exec(e) if e.network == Network::Host)
            })
        {
            return Err(BuildError::Solve {
                message: NETWORK_HOST_NOT_ALLOWED.into(),
                lines: None,
            });
        }
        if !opts.allow_insecure
            && all
                .iter()
                .any(|n| matches!(lowered.graph.op(*n), BuildOp::Exec(e) if e.insecure))
        {
            return Err(BuildError::Solve {
                message: kiln_worker::executor::INSECURE_NOT_ALLOWED.into(),
                lines: None,
            });
        }
        let metadata_provenance = opts.metadata_file.is_some()
            && opts.metadata_provenance != metadata::MetadataProvenance::Disabled;
        let facts = if opts.attest.is_empty() && !metadata_provenance {
            Vec::new()
        } else {
            attest::target_facts(root, &lowered.graph, &ids, opts.network)
        };
        let report = |e: cache_remote::Event| progress.event(BuildEvent::Cache(e));
        let imported =
            cache_remote::import(root, rt.handle(), &bases.config, &opts.cache.from, &report)
                .map(Arc::new);
        let cache_mounts = remote::cache_mount_names(&lowered.graph, &all);
        if let Some(i) = &imported {
            i.restore_mounts(&cache_mounts);
        }
        let job = solve::Job {
            remote: imported.clone(),
            root,
            rt,
            graph: lowered.graph,
            targets: lowered.targets,
            jobs: opts.jobs,
            no_cache: opts.no_cache,
            no_cache_filter: opts.no_cache_filter.clone(),
            context: ctx.clone(),
            named_contexts: named
                .dirs
                .iter()
                .map(|(k, (dir, _))| (lower::named_context_id(k), dir.clone()))
                .collect(),
            network: opts.network,
            secrets: opts.secrets.clone(),
            allow_insecure: opts.allow_insecure,
            helper_exe: self.helper_exe.clone(),
            snapshotter: opts.snapshotter,
            sources,
            inflight: self.inflight.clone(),
        };
        let solved = solve::run_worker(job, progress);
        if let Some(i) = &imported {
            for w in i.take_warnings() {
                report(cache_remote::Event::Warning(w));
            }
        }
        let (mut built, keys) = solved?;

        // Export.
        let created = export::created_at(epoch);
        // The remote cache records what the steps made, before any rewrite.
        let results: Vec<Vec<kiln_cache::Digest>> = built.iter().map(|b| b.diff_ids()).collect();
        if let (true, Some(e)) = (opts.rewrite_timestamp, epoch) {
            for b in built.iter_mut() {
                export::epoch::rewrite_layers(root, b, e)?;
            }
        }
        for b in built.iter_mut() {
            let diff_ids = b.diff_ids();
            cache_remote::apply_inline(
                root,
                &mut b.meta.base,
                &diff_ids,
                &keys,
                opts.cache.inline(),
                imported.as_deref(),
            );
        }
        let mut images: Vec<export::Image> = built
            .iter()
            .map(|b| export::image::assemble_reusing(root, b, &created, epoch))
            .collect::<Result<_, _>>()?;
        annotations::manifests(root, &mut images, &opts.annotations)?;
        let attest_ctx = attest_context(&opts, &df_path, started, &created);
        // One manifest, or one index (with the attestation manifests when
        // asked) written by one path and annotated as `--annotation` says.
        let top = match images.as_slice() {
            [one] if opts.attest.is_empty() => one.manifest.clone(),
            many => {
                let entries = if opts.attest.is_empty() {
                    many.iter().map(|i| i.manifest.clone()).collect()
                } else {
                    let conv = attest::conversion_for(&outputs);
                    attest::manifests(
                        root,
                        &opts.attest,
                        &attest_ctx,
                        many,
                        &built,
                        &facts,
                        &opts.tags,
                        &conv,
                    )
                    .map_err(BuildError::context("attaching attestations"))?
                };
                let index = export::image::index_of(root, &entries)?;
                annotations::index(root, index, &opts.annotations)?
            }
        };
        let mut named = Vec::new();
        for out in &outputs {
            match out {
                Output::Named(spec) => named.push(export::push::export(
                    root,
                    rt,
                    &bases.config,
                    spec,
                    &top,
                    &opts.tags,
                )?),
                _ => {
                    let files = attest_files(root, &opts, out, &attest_ctx, &built, &facts)?;
                    export::output_with(root, out, &top, &built, &opts.tags, epoch, &files)?
                }
            }
        }
        // What the metadata names: the image as pushed (or named) when an
        // output converted it, so its digest is the registry's.
        let final_top = named
            .iter()
            .find(|n| n.pushed)
            .or(named.first())
            .map(|n| n.descriptor.clone())
            .unwrap_or_else(|| top.clone());
        let pushed: Vec<(Reference, Descriptor)> = named
            .iter()
            .filter(|n| n.pushed)
            .flat_map(|n| n.names.iter().map(|r| (r.clone(), n.descriptor.clone())))
            .collect();
        let mut all_names = opts.tags.clone();
        for n in named.iter().flat_map(|n| n.names.iter()) {
            if !all_names.contains(n) {
                all_names.push(n.clone());
            }
        }
        let id = match images.as_slice() {
            [one] => one.config.to_string(),
            _ => final_top.digest().to_string(),
        };
        if let Some(f) = &opts.iidfile {
            std::fs::write(f, &id)?;
        }
        if let Some(f) = &opts.metadata_file {
            let image = metadata::ImageFacts {
                top: &final_top,
                // Only an image without an index names its config, as
                // BuildKit's `config.digest` annotation.
                config: match images.as_slice() {
                    [one] if opts.attest.is_empty() => Some(one.config.to_string()),
                    _ => None,
                },
                names: all_names.iter().map(|t| t.to_string()).collect(),
                created: &created,
            };
            let meta = metadata::document(
                &attest_ctx,
                &built,
                &facts,
                opts.metadata_provenance,
                // `type=local`/`type=tar` alone make no image.
                outputs
                    .iter()
                    .any(|o| !matches!(o, Output::Local(..) | Output::Tar(..)))
                    .then_some(image),
            );
            let bytes = serde_json::to_vec_pretty(&meta)
                .map_err(BuildError::context("encoding the metadata"))?;
            std::fs::write(f, bytes)?;
        }
        // The image is built and named; a failed cache export still fails
        // the build, as BuildKit's does.
        let solution = cache_remote::Solution {
            keys: &keys,
            results: &results,
            imported: imported.as_deref(),
            cache_mounts: &cache_mounts,
        };
        cache_remote::export(
            root,
            rt.handle(),
            &bases.config,
            &opts.cache,
            &solution,
            &report,
        )
        .map_err(BuildError::CacheExport)?;
        Ok(BuildResult {
            id,
            descriptor: final_top,
            configs: images.into_iter().map(|i| i.config).collect(),
            tags: all_names,
            pushed,
        })
    }
}

/// The attestations `type=local` and `type=tar` write as files, per
/// platform (none for other outputs or without `--provenance`/`--sbom`).
fn attest_files(
    root: &Root,
    opts: &BuildOptions,
    out: &Output,
    ctx: &attest::Context,
    built: &[export::Built],
    facts: &[attest::TargetFacts],
) -> Result<Vec<Vec<attest::Predicate>>, BuildError> {
    if opts.attest.is_empty() || !matches!(out, Output::Local(..) | Output::Tar(..)) {
        return Ok(Vec::new());
    }
    let none = attest::TargetFacts::default();
    built
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let names = attest::subject_names(&opts.tags, &b.platform);
            let f = facts.get(i).unwrap_or(&none);
            attest::predicates(root, &opts.attest, ctx, b, f, &names)
        })
        .collect::<Result<_, _>>()
        .map_err(BuildError::context("making the attestation files"))
}

/// What the provenance says of the build's request.
fn attest_context(
    opts: &BuildOptions,
    df_path: &std::path::Path,
    started: String,
    created: &str,
) -> attest::Context {
    attest::Context {
        entry_point: df_path
            .file_name()
            .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned()),
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        platforms: opts.platforms.clone(),
        started,
        finished: attest::now(),
        invocation_id: attest::invocation_id(),
        created: created.to_string(),
    }
}

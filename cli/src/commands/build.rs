//! `kiln build` and `kiln du`: a Dockerfile and its context become an image,
//! with the flags of `docker build`/`buildx build`; and what the build cache
//! holds.
//!
//! The pipeline itself is `kiln_build`'s: this module turns the flags into
//! [`BuildOptions`], calls [`Builder::build`], draws its events and prints
//! the result or the error with today's words and exit codes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use kiln_build::export::ImageSpec;
use kiln_build::{BuildError, BuildOptions, Builder, Context, Output};
use kiln_cache::remote::CacheOptions;
use kiln_cache::{buildcache, Reference, Root};
use kiln_frontend::plan::Platform;
use miette::{miette, IntoDiagnostic, Result};

use crate::progress;
use crate::units;

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
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads stdin).
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
    /// An additional build context `NAME=VALUE` (a folder, git or HTTP URL,
    /// `docker-image://REF`, `oci-layout://PATH[@DIGEST]`), read by
    /// `FROM NAME` and `--from=NAME` (repeatable).
    #[arg(long = "build-context")]
    pub build_contexts: Vec<String>,
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
    /// How to show progress (default: `$BUILDKIT_PROGRESS`, else auto).
    #[arg(long, value_enum, default_value = "auto", env = "BUILDKIT_PROGRESS")]
    pub progress: progress::Mode,
    /// Print only the image ID (same as `--progress quiet`).
    #[arg(short, long)]
    pub quiet: bool,
    /// Where the result goes: `type=image|oci|docker|local|tar[,dest=PATH]`.
    #[arg(short, long)]
    pub output: Vec<String>,
    /// Push the image to the registry its names say (`-o type=registry`).
    #[arg(long)]
    pub push: bool,
    /// Keep the image in the store (it always is: accepted as buildx's).
    #[arg(long)]
    pub load: bool,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (digests, names) as JSON to this file.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Target platforms, comma separated (default: this machine's).
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// How RUN steps get a writable root: `auto` (kernel overlay, else
    /// kiln's FUSE overlay, else copies), `overlay`, `fuse` or `copy`
    /// (default: `"snapshotter"` of $KILN_ROOT/config.json, else auto).
    #[arg(long)]
    pub snapshotter: Option<String>,
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
    /// SLSA provenance attestation: `true`, `false`, or options
    /// `mode=min|max[,version=v0.2|v1][,builder-id=…]` (none by default).
    #[arg(long)]
    pub provenance: Option<String>,
    /// SBOM attestation (SPDX 2.3 of the image's packages): `true` or
    /// `false` (none by default).
    #[arg(long)]
    pub sbom: Option<String>,
    /// An attestation: `type=provenance|sbom[,disabled=true][,mode=…]`
    /// (repeatable).
    #[arg(long = "attest")]
    pub attest: Vec<String>,
    /// Run BuildKit's build checks instead of building (`--call check`).
    #[arg(long)]
    pub check: bool,
    /// What to run, as buildx's `--call`: `build` or `check[,format=json]`.
    #[arg(long, default_value = "build")]
    pub call: String,
    /// buildx's remaining flags (`build_flags.rs`).
    #[command(flatten)]
    pub extra: super::build_flags::Extra,
    /// The build context: a folder; `-` for stdin (a tar, plain or
    /// compressed, or a bare Dockerfile); a git URL; a tarball or
    /// Dockerfile URL.
    pub context: String,
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Build(a) => build(*a),
        Cmd::Du { verbose } => du(verbose),
    }
}

pub(crate) fn build_args(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => std::env::var(a).ok().map(|v| (a.clone(), v)),
        })
        .collect()
}

/// The flags as the library's options.
fn options(a: &BuildArgs) -> Result<BuildOptions> {
    let mut opts = BuildOptions::new(Context::parse(&a.context));
    for e in &a.allow {
        match e.as_str() {
            "security.insecure" => opts.allow_insecure = true,
            "network.host" => opts.allow_host_network = true,
            other => return Err(miette!("invalid entitlement: {other}")),
        }
    }
    opts.dockerfile = a.file.clone();
    opts.platforms = a
        .platform
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| Platform::parse(p).map_err(|e| miette!("{e}")))
        .collect::<Result<_>>()?;
    opts.network = match a.network.as_str() {
        "default" => kiln_solver::ops::Network::Default,
        "host" => kiln_solver::ops::Network::Host,
        "none" => kiln_solver::ops::Network::None,
        other => {
            return Err(miette!(
                "network mode {other:?} not supported (default, host, none)"
            ))
        }
    };
    opts.outputs = a
        .output
        .iter()
        .map(|o| o.parse::<Output>().map_err(|e| miette!("{e}")))
        .collect::<Result<_>>()?;
    push_and_load(&mut opts.outputs, a.push, a.load);
    opts.tags = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| miette!("invalid tag {t:?}: {e}")))
        .collect::<Result<_>>()?;
    opts.build_args = build_args(&a.build_args);
    // As buildx: the client's SOURCE_DATE_EPOCH is the build arg unless
    // one is given.
    if let Ok(v) = std::env::var(kiln_build::export::epoch::SOURCE_DATE_EPOCH) {
        opts.build_args
            .entry(kiln_build::export::epoch::SOURCE_DATE_EPOCH.to_string())
            .or_insert(v);
    }
    for o in &a.output {
        opts.rewrite_timestamp |= kiln_build::export::epoch::rewrite_timestamp_requested(o)
            .map_err(|e| miette!("{e}"))?;
    }
    opts.cache = CacheOptions::parse(&a.cache_to, &a.cache_from, &opts.build_args)
        .map_err(|e| miette!("{e}"))?;
    opts.secrets = kiln_build::secrets::parse(&a.secret, &a.ssh).map_err(|e| miette!("{e}"))?;
    opts.target = a.target.clone();
    opts.named_contexts = a
        .build_contexts
        .iter()
        .map(|c| kiln_build::context::named::parse_flag(c).map_err(|e| miette!("{e}")))
        .collect::<Result<_>>()?;
    opts.no_cache = a.no_cache;
    opts.no_cache_filter = a.no_cache_filter.clone();
    opts.pull = a.pull;
    opts.jobs = a.jobs;
    opts.iidfile = a.iidfile.clone();
    opts.metadata_file = a.metadata_file.clone();
    opts.metadata_provenance = kiln_build::metadata::MetadataProvenance::parse(
        &std::env::var(kiln_build::metadata::PROVENANCE_ENV).unwrap_or_default(),
    );
    opts.attest = kiln_build::attest::parse(a.provenance.as_deref(), a.sbom.as_deref(), &a.attest)
        .map_err(|e| miette!("{e}"))?;
    a.extra.apply(&mut opts)?;
    Ok(opts)
}

/// `--push` and `--load` as buildx folds them into the outputs: `--push`
/// sets `push=true` on an image output, or adds `type=registry`; `--load`
/// adds the store (kiln's store is the local one) unless an image output
/// is there already.
fn registry() -> ImageSpec {
    ImageSpec {
        push: true,
        ..ImageSpec::default()
    }
}

fn push_and_load(outputs: &mut Vec<Output>, push: bool, load: bool) {
    let is_image = |o: &Output| matches!(o, Output::Image | Output::Named(_));
    if push {
        let mut found = false;
        for o in outputs.iter_mut() {
            match o {
                Output::Image => {
                    *o = Output::Named(registry());
                    found = true;
                }
                Output::Named(spec) => {
                    spec.push = true;
                    found = true;
                }
                _ => {}
            }
        }
        if !found {
            outputs.push(Output::Named(registry()));
        }
    }
    if load && !outputs.is_empty() && !outputs.iter().any(is_image) {
        outputs.push(Output::Image);
    }
}

fn build(a: BuildArgs) -> Result<ExitCode> {
    let root = Root::from_env().into_diagnostic()?;
    let snapshotter = super::snapshotter::resolve(a.snapshotter.as_deref(), &root)?;
    let builder = Builder::new(root).into_diagnostic()?;
    let mut opts = options(&a)?;
    opts.snapshotter = snapshotter;
    if let Some(format) = super::check::call_mode(a.check, &a.call)? {
        return super::check::check(opts, format);
    }
    let stdout_taken = opts.outputs.iter().any(Output::to_stdout);
    let mode = if a.quiet {
        progress::Mode::Quiet
    } else {
        a.progress
    };
    let shown = progress::BuildProgress::new(mode);
    let built = builder.build(opts, &shown);
    if built.is_err() {
        super::check::print_summary(mode, &shown.checks());
    }
    let result = match built {
        Ok(r) => r,
        // The kind says how it is shown: BuildKit's `ERROR: …` lines for
        // a failed solve and a failed cache export, the error report (with
        // the Dockerfile's lines for a frontend error) for the rest.
        Err(e @ (BuildError::Solve { .. } | BuildError::CacheExport(_))) => {
            if let BuildError::Solve {
                lines: Some(lines), ..
            } = &e
            {
                eprint!("{lines}");
            }
            eprintln!("ERROR: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(BuildError::Frontend(report)) => return Err(report),
        Err(e) => return Err(e).into_diagnostic(),
    };
    let id = &result.id;
    match mode {
        // An export on stdout (`dest=-`) owns it.
        progress::Mode::Quiet if stdout_taken => {}
        progress::Mode::Quiet => println!("{id}"),
        progress::Mode::Json => {}
        _ => {
            let mut err = std::io::stderr().lock();
            if mode.resolve() == progress::Mode::Tty {
                // The tree leaves the cursor on its last line.
                let _ = writeln!(err);
            }
            let _ = writeln!(err, "writing image {id} done");
            for t in &result.tags {
                let _ = writeln!(err, "naming to {t} done");
            }
            for (name, d) in &result.pushed {
                let _ = writeln!(err, "pushing manifest for {name}@{} done", d.digest());
            }
        }
    }
    super::check::print_summary(mode, &shown.checks());
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------- du

fn du(verbose: bool) -> Result<ExitCode> {
    let root = Root::from_env().into_diagnostic()?;
    let recs = buildcache::list(&root);
    let mut out = std::io::stdout().lock();
    let w = |out: &mut dyn Write, s: String| {
        out.write_all(s.as_bytes())
            .map_err(|e| miette!("writing output: {e}"))
    };
    if verbose {
        w(
            &mut out,
            format!("{:<66} {:>8} {:>12}\n", "ID", "LAYERS", "SIZE"),
        )?;
        for e in &recs {
            w(
                &mut out,
                format!(
                    "{:<66} {:>8} {:>12}\n",
                    e.key(),
                    e.record.layers.len(),
                    units::du_size(e.size())
                ),
            )?;
        }
    }
    let usage = buildcache::usage(&root, &recs);
    w(&mut out, format!("Records:\t{}\n", usage.records))?;
    w(
        &mut out,
        format!(
            "Layer blobs:\t{} ({})\n",
            usage.blobs,
            units::du_size(usage.blob_bytes)
        ),
    )?;
    w(
        &mut out,
        format!(
            "Unpacked layers:\t{}\n",
            units::du_size(usage.unpacked_bytes)
        ),
    )?;
    w(
        &mut out,
        format!(
            "Cache mounts:\t{}\n",
            units::du_size(usage.cache_mount_bytes)
        ),
    )?;
    w(
        &mut out,
        format!("Total:\t{}\n", units::du_size(usage.total())),
    )?;
    Ok(ExitCode::SUCCESS)
}

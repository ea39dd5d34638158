//! `kiln compose build [SERVICE…]`: every service with `build:` through
//! kiln-build, as `docker compose build` does it: image name `image:` or
//! `<project>-<service>`, compose's `com.docker.compose.*` labels, the
//! service's args, target, cache_from/to, secrets (files), platforms,
//! labels and tags.
//!
//! The builds run one after the other on one `Builder` (`--parallel` is
//! accepted; concurrent builds in one process collide in the worker's
//! per-process scratch folders today), so they share one store and one
//! build cache: a stage two services have in common has the same cache key
//! in both, and the second build reuses what the first one wrote.

use std::collections::BTreeMap;
use std::process::ExitCode;

use kiln_build::{BuildOptions, Builder, Context};
use kiln_cache::remote::CacheOptions;
use kiln_cache::{Reference, Root};
use kiln_compose::model::BuildSpec;
use kiln_frontend::plan::Platform;
use miette::{miette, IntoDiagnostic, Result};

use crate::commands::compose::{load_project, ComposeArgs};
use crate::progress;

/// `compose build`'s flags.
#[derive(Debug, Default, clap::Args)]
pub struct BuildArgs {
    /// Do not use cache when building the image.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Always attempt to pull a newer version of the image.
    #[arg(long)]
    pub pull: bool,
    /// Set build-time variables for services.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build images in parallel (the default; kept for compatibility).
    #[arg(long)]
    pub parallel: bool,
    /// Don't print anything to stdout.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Services to build.
    pub services: Vec<String>,
}

/// The labels docker compose puts on the images it builds.
fn compose_labels(project: &kiln_compose::Project, spec: &BuildSpec) -> BTreeMap<String, String> {
    let mut l = spec.labels.clone();
    l.insert("com.docker.compose.project".into(), project.name.clone());
    l.insert("com.docker.compose.service".into(), spec.service.clone());
    l.insert("com.docker.compose.version".into(), "2.40.3".into());
    l
}

fn options(
    project: &kiln_compose::Project,
    spec: &BuildSpec,
    b: &BuildArgs,
    inline_dir: &std::path::Path,
) -> Result<BuildOptions> {
    let mut opts = BuildOptions::new(Context::parse(&spec.context.to_string_lossy()));
    if let Some(inline) = &spec.dockerfile_inline {
        let p = inline_dir.join(format!("{}.Dockerfile", spec.service));
        std::fs::write(&p, inline).into_diagnostic()?;
        opts.dockerfile = Some(p);
    } else if let Some(df) = &spec.dockerfile {
        opts.dockerfile = Some(spec.context.join(df));
    }
    let mut tags = vec![spec.image.clone()];
    tags.extend(spec.tags.iter().cloned());
    opts.tags = tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| miette!("invalid tag {t:?}: {e}")))
        .collect::<Result<_>>()?;
    opts.build_args = spec.args.clone();
    opts.build_args
        .extend(crate::commands::build::build_args(&b.build_args));
    opts.target = spec.target.clone();
    opts.platforms = spec
        .platforms
        .iter()
        .map(|p| Platform::parse(p).map_err(|e| miette!("{e}")))
        .collect::<Result<_>>()?;
    opts.cache = CacheOptions::parse(&spec.cache_to, &spec.cache_from, &opts.build_args)
        .map_err(|e| miette!("{e}"))?;
    let secrets: Vec<String> = spec
        .secrets
        .iter()
        .map(|(id, file)| format!("id={id},src={}", file.display()))
        .collect();
    opts.secrets = kiln_build::secrets::parse(&secrets, &[]).map_err(|e| miette!("{e}"))?;
    opts.labels = compose_labels(project, spec);
    opts.no_cache = b.no_cache || spec.no_cache;
    opts.pull = b.pull || spec.pull;
    if let Some(n) = &spec.network {
        opts.network = match n.as_str() {
            "host" => kiln_solver::ops::Network::Host,
            "none" => kiln_solver::ops::Network::None,
            _ => kiln_solver::ops::Network::Default,
        };
        opts.allow_host_network = n == "host";
    }
    Ok(opts)
}

pub fn run(a: &ComposeArgs, b: &BuildArgs) -> Result<ExitCode> {
    let project = load_project(a, true)?;
    let mut specs = project.builds();
    for s in &b.services {
        if !project.service_names().contains(s) {
            return Err(miette!("no such service: {s}"));
        }
    }
    if !b.services.is_empty() {
        specs.retain(|s| b.services.contains(&s.service));
    }
    Ok(if build_specs(&project, &specs, b)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Builds `specs` (as `compose build` does; `compose up --build` too);
/// false when a build failed (its error printed).
pub(crate) fn build_specs(
    project: &kiln_compose::Project,
    specs: &[BuildSpec],
    b: &BuildArgs,
) -> Result<bool> {
    if specs.is_empty() {
        return Ok(true);
    }
    let root = Root::from_env().into_diagnostic()?;
    let builder = Builder::new(root).into_diagnostic()?;
    let inline_dir = tempfile::tempdir().into_diagnostic()?;
    let all: Vec<BuildOptions> = specs
        .iter()
        .map(|s| options(project, s, b, inline_dir.path()))
        .collect::<Result<_>>()?;
    // One service: its progress as `kiln build` shows it; several: plain
    // lines (a terminal tree per build would interleave).
    let mode = if b.quiet {
        progress::Mode::Quiet
    } else {
        progress::Mode::Auto
    };
    // One after the other on one Builder: two builds in one process share
    // the worker's per-process scratch folders (`work/<pid>/unpack-N`), so
    // running them on threads collides; sequential builds still share the
    // store and the build cache, so a stage two services have in common is
    // built by the first and found in the cache by the next.
    let results: Vec<(String, std::result::Result<String, String>)> = specs
        .iter()
        .zip(all)
        .map(|(spec, opts)| {
            let shown = progress::BuildProgress::new(mode);
            let r = builder
                .build(opts, &shown)
                .map(|r| r.id.to_string())
                .map_err(|e| e.to_string());
            (spec.service.clone(), r)
        })
        .collect();
    let mut failed = false;
    for (service, r) in results {
        match r {
            Ok(_) => {
                if !b.quiet {
                    eprintln!(" Service {service}  Built");
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("failed to build service {service}: {e}");
            }
        }
    }
    Ok(!failed)
}

//! `kiln compose build [SERVICE…]`: every service with `build:` through
//! kiln-build, as `docker compose build` does it: image name `image:` or
//! `<project>-<service>`, compose's `com.docker.compose.*` labels, the
//! service's args, target, cache_from/to, secrets (files), platforms,
//! labels and tags.
//!
//! The builds run at once, each on a thread of its own, on one `Builder`:
//! they share one store, one build cache and the builder's in-flight keys
//! (`kiln_solver::InFlight`), so a stage two services have in common has
//! the same cache key in both and runs once, the other build waiting for it
//! and taking its result as cached, as BuildKit's one solver runs a vertex
//! two jobs share once. Their progress is one stream of plain lines, each
//! step named with its service (`compose_progress`).

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
    // One service: its progress as `kiln build` shows it; several: one
    // stream of plain lines, each step named with its service.
    let mode = if b.quiet {
        progress::Mode::Quiet
    } else {
        progress::Mode::Auto
    };
    let results: Vec<(String, std::result::Result<String, String>)> =
        if specs.len() == 1 || parallel_limit() == Some(1) {
            specs
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
                .collect()
        } else {
            let shown = crate::commands::compose_progress::Services::new(b.quiet);
            let slots = Slots::new(parallel_limit().unwrap_or(specs.len()));
            let (builder, shown, slots) = (&builder, &shown, &slots);
            std::thread::scope(|s| {
                let running: Vec<_> = specs
                    .iter()
                    .zip(all)
                    .enumerate()
                    .map(|(i, (spec, opts))| {
                        let handle = s.spawn(move || {
                            let _slot = slots.take();
                            let p = shown.service(i, &spec.service);
                            builder
                                .build(opts, &p)
                                .map(|r| r.id.to_string())
                                .map_err(|e| e.to_string())
                        });
                        (spec.service.clone(), handle)
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|(service, h)| {
                        let r = h
                            .join()
                            .unwrap_or_else(|_| Err("the build's thread panicked".into()));
                        (service, r)
                    })
                    .collect()
            })
        };
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

/// `COMPOSE_PARALLEL_LIMIT`: how many builds docker compose runs at once
/// (unset or not a positive number: all of them).
fn parallel_limit() -> Option<usize> {
    std::env::var("COMPOSE_PARALLEL_LIMIT")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
}

/// A counting semaphore for the build threads.
struct Slots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A taken [`Slots`] place, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: std::sync::Mutex::new(n.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

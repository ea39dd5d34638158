//! Build checks in the pipeline: `kiln check` / `build --check` (lint only,
//! every stage) and the checks a normal build runs before solving (the
//! stages it builds; `error=true` fails it there).

use std::collections::BTreeMap;

use kiln_frontend::dockerignore::PatternMatcher;
use kiln_frontend::lint::{self, BasePlatform, Input, Report};
use kiln_frontend::parser::Dockerfile;
use kiln_frontend::plan::{self, Base, Plan, PlanOptions, Platform};

use crate::{bases, context, BuildError, BuildOptions, Builder, RegistryConfig};

/// What `--check` reports: BuildKit's lint result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The Dockerfile's name as shown (`Dockerfile`).
    pub file_name: String,
    /// Its text (JSON `sources[].data`, and the lines shown per warning).
    pub text: String,
    pub warnings: Vec<lint::Warning>,
    /// Why the file cannot be built, when it cannot (BuildKit's
    /// `buildError`), with its line if known.
    pub build_error: Option<(String, Option<usize>)>,
}

/// The checks' input from a build's first plan: the stages it dispatches
/// and their base images' environments.
pub(crate) fn input<'a>(
    opts: &BuildOptions,
    plan: Option<&Plan>,
    ignore: Option<&'a PatternMatcher>,
    all_stages: bool,
) -> Input<'a> {
    let mut input = Input {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: opts.platforms.first().cloned(),
        build_platform: Some(Platform::host()),
        stages: None,
        base_env: BTreeMap::new(),
        ignore,
        source: None,
        base_platforms: BTreeMap::new(),
    };
    if let Some(p) = plan {
        if !all_stages {
            input.stages = Some(p.stages.iter().map(|s| s.index).collect());
        }
        for s in &p.stages {
            if matches!(s.base, Base::Image { .. }) && s.base_config_known {
                input
                    .base_env
                    .insert(s.index, s.base_config.env.clone().unwrap_or_default());
            }
        }
    }
    input
}

/// The platform each image stage of the plan asked for and the one its
/// base's config names, for InvalidBaseImagePlatform. The images were
/// resolved while planning, so this reads the resolver's memo (a stage
/// whose base cannot be resolved again is left out).
pub(crate) fn base_platforms(
    bases: &bases::Bases,
    plan: Option<&Plan>,
) -> BTreeMap<usize, BasePlatform> {
    let mut out = BTreeMap::new();
    let Some(p) = plan else {
        return out;
    };
    for s in &p.stages {
        let Base::Image { reference } = &s.base else {
            continue;
        };
        let expected = s
            .platform
            .clone()
            .unwrap_or_else(|| p.target_platform.clone());
        let Ok(img) = bases.resolve(reference, &expected) else {
            continue;
        };
        let field = |k: &str| {
            img.config
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let variant = Some(field("variant")).filter(|v| !v.is_empty());
        let actual = Platform {
            os: field("os"),
            architecture: field("architecture"),
            variant,
        };
        out.insert(
            s.index,
            BasePlatform {
                image: reference.clone(),
                expected,
                actual,
            },
        );
    }
    out
}

/// The context's `.dockerignore` as a matcher (none without one, or when
/// it does not compile: the build reports that itself).
pub(crate) fn ignore_matcher(excludes: &[String]) -> Option<PatternMatcher> {
    if excludes.is_empty() {
        return None;
    }
    PatternMatcher::new(excludes.iter().map(String::as_str)).ok()
}

/// Runs the checks for a build; the caller sends the warnings as events.
pub(crate) fn for_build(
    parsed: &Dockerfile,
    text: &str,
    opts: &BuildOptions,
    plan: Option<&Plan>,
    excludes: &[String],
    bases: &bases::Bases,
) -> Result<Report, BuildError> {
    let m = ignore_matcher(excludes);
    let mut input = input(opts, plan, m.as_ref(), false);
    input.source = Some(text);
    input.base_platforms = base_platforms(bases, plan);
    lint::check(parsed, &input).map_err(|e| BuildError::Invalid(e.to_string()))
}

impl Builder {
    /// Checks a Dockerfile as `docker build --check` does: every stage,
    /// nothing built. Base images are resolved (pulled when missing) as
    /// BuildKit resolves them, so variables from their environment count
    /// as defined; a file that cannot be planned is the `build_error`.
    pub fn check(&self, opts: BuildOptions) -> Result<CheckResult, BuildError> {
        let root = &self.root;
        let prepared = context::prepare(&opts, root, &self.rt)?;
        // `--build-context` as in the build: image forms alias base
        // references, folder forms replace images and stages.
        let named = context::named::prepare(&opts, root, &self.rt)?;
        let (ctx, df_path) = (prepared.dir.clone(), prepared.dockerfile.clone());
        let text = prepared.read_dockerfile()?;
        let file_name = kiln_frontend::source_map::display_name(&df_path);
        let mut result = CheckResult {
            file_name,
            text: text.clone(),
            warnings: Vec::new(),
            build_error: None,
        };
        let parsed = match kiln_frontend::parser::parse(&text) {
            Ok(p) => p,
            Err(e) => {
                let line = e.location.map(|l| l.line);
                result.build_error = Some((e.message.clone(), line));
                return Ok(result);
            }
        };
        let excludes: Vec<String> = match kiln_frontend::dockerignore::locate(&df_path, &ctx) {
            Some(p) => kiln_frontend::dockerignore::read_all(&std::fs::read(&p)?)
                .map(|v| v.into_iter().map(|p| p.pattern).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let platform = opts
            .platforms
            .first()
            .cloned()
            .unwrap_or_else(Platform::host);
        let bases = bases::Bases {
            root,
            rt: &self.rt,
            pull: opts.pull,
            config: RegistryConfig::load(root.path())?,
            seen: std::cell::RefCell::new(std::collections::HashMap::new()),
            aliases: named.images.clone(),
        };
        let resolver = |r: &str, p: &Platform| {
            bases
                .resolve(r, p)
                .map(|i| Some(i.image_config().unwrap_or_default()))
                .map_err(bases::frontend_err)
        };
        let popts = PlanOptions {
            build_args: opts.build_args.clone(),
            target: opts.target.clone(),
            target_platform: Some(platform),
            build_platform: Some(Platform::host()),
            named_contexts: named.dirs.keys().cloned().collect(),
            image_contexts: named.images.keys().cloned().collect(),
        };
        let planned = plan::plan_with_resolver(&parsed, &popts, &resolver);
        if let Err(e) = &planned {
            result.build_error = Some((e.message.clone(), e.location.map(|l| l.line)));
        }
        let m = ignore_matcher(&excludes);
        let mut input = input(&opts, planned.as_ref().ok(), m.as_ref(), true);
        input.source = Some(&text);
        input.base_platforms = base_platforms(&bases, planned.as_ref().ok());
        match lint::check(&parsed, &input) {
            Ok(r) => result.warnings = r.warnings,
            Err(e) => {
                if result.build_error.is_none() {
                    result.build_error = Some((e.message.clone(), e.location.map(|l| l.line)));
                }
            }
        }
        Ok(result)
    }
}

//! Per-stage resolved build plans.
//!
//! The planner does what BuildKit's `dockerfile2llb` does before it emits
//! LLB: it splits the file into stages, evaluates the global ARGs for the
//! FROM lines, resolves each base (image, earlier stage, scratch), works out
//! which stages the target needs, and walks each needed stage instruction by
//! instruction keeping the scopes BuildKit keeps — the image config (whose
//! `Env` is what ENV sets) and the build state (whose environment also holds
//! the ARGs, and is what words expand against and RUN runs with). Each step
//! comes out with its words expanded and the variables, working directory,
//! user and shell in force, and each stage with the image config and history
//! it leaves, so lowering never has to know Dockerfile scoping rules.
//!
//! The base image's own config (its ENV, WORKDIR, USER, ONBUILD triggers)
//! changes how later words expand; it is only known once the image is
//! resolved, so [`plan_with_resolver`] takes a [`BaseResolver`] that the
//! build supplies. [`plan`] plans as if every base image had an empty config
//! (what `kiln parse --plan` shows).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kiln_patternmatcher::gopath::clean as clean_path;
use kiln_patternmatcher::gostr::quote as go_quote;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Location, Result};
use crate::instructions::{
    self, Command, CommandLine, Copy, Instruction, Instructions, Mount, NetworkMode, Security,
    Warning,
};
use crate::parser::{Dockerfile, Span};
use crate::shell::{Env, Lexer, MAX_EXPANDED_WORD};

/// The PATH BuildKit gives an image whose config has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The comment BuildKit writes on every history entry it makes.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The build args that need no ARG: they are passed to every RUN as proxy
/// settings and never reported as unused.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The most text, in bytes, one plan may expand and copy (expanded words,
/// the environment handed to each RUN, the config each step and stage
/// starts from). Each word is also held to [`MAX_EXPANDED_WORD`], but a few
/// hundred steps each copying a 1 MiB variable would still take gigabytes.
pub const MAX_PLAN_TEXT: usize = 64 << 20;

/// What the plan has spent of [`MAX_PLAN_TEXT`].
#[derive(Default)]
struct Budget {
    used: Cell<usize>,
}

impl Budget {
    /// Counts `bytes` more text, failing at `at` once the plan is over the
    /// limit (before the text is copied, where the caller can).
    fn charge(&self, bytes: usize, at: Location) -> Result<()> {
        let used = self.used.get().saturating_add(bytes);
        self.used.set(used);
        if used > MAX_PLAN_TEXT {
            return Err(Error::new(
                ErrorKind::Expansion,
                format!(
                    "the build's expanded text exceeds the limit of {} MiB",
                    MAX_PLAN_TEXT >> 20
                ),
            )
            .at(at));
        }
        Ok(())
    }
}

/// A lexer whose every expansion is charged to the plan's [`Budget`].
#[derive(Clone, Copy)]
struct Expander<'a> {
    lexer: Lexer,
    budget: &'a Budget,
}

/// BuildKit's build arg for reproducible builds: read by the build (image
/// times, WORKDIR's mkdir, layer rewrites), never reported as unused, and
/// like any build arg in RUN's environment only when declared with ARG.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// ARGs that configure BuildKit's SBOM scanning: declaring them never puts
/// them in the build state's environment (BuildKit's `nonEnvArgs`).
pub const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// An OCI platform (`os/arch[/variant]`): the solver's type, which the
/// frontend's plans and the lowered graph share.
pub use kiln_llb::ops::Platform;

/// What a build asks of the planner (`--build-arg`, `--target`,
/// `--platform`).
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--build-arg` values: override ARG defaults and predefined ARGs.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build; the last one when `None`.
    pub target: Option<String>,
    /// Defaults to the host platform.
    pub target_platform: Option<Platform>,
    /// Defaults to the host platform.
    pub build_platform: Option<Platform>,
    /// Keys ([`context_key`]) of the `--build-context` folders (local, git
    /// or URL forms): a `FROM` or `--from` naming one (and no stage) reads
    /// that folder, as BuildKit's named contexts override images of the
    /// same name. Image forms are the resolver's business. A key may end
    /// in `::PLATFORM` ([`named_context_key`]): it then serves that
    /// platform only, before the plain name ([`find_context`]).
    pub named_contexts: BTreeSet<String>,
    /// Keys of the image forms of `--build-context` (`docker-image://`,
    /// `oci-layout://`): the planner needs them only to let a context
    /// replace a stage of the same name; the resolver resolves them.
    pub image_contexts: BTreeSet<String>,
}

/// The key a `--build-context` flag's name is stored under:
/// [`context_key`] of the name, and for BuildKit's `NAME::PLATFORM` form
/// the platform normalised (`base::linux/aarch64` is `base::linux/arm64`),
/// so it meets the key [`find_context`] builds from a build platform.
pub fn named_context_key(flag_name: &str) -> std::result::Result<String, String> {
    match flag_name.split_once("::") {
        Some((name, platform)) => {
            let p = Platform::parse(platform).map_err(|e| e.to_string())?;
            Ok(format!("{}::{}", context_key(name), p.normalize()))
        }
        None => Ok(context_key(flag_name)),
    }
}

/// The key among `keys` that the name `name` finds on `platform`: the
/// platform's own (`NAME::os/arch[/variant]`) first, then the plain name,
/// as BuildKit's dockerui `NamedContext`.
pub fn find_context(keys: &BTreeSet<String>, name: &str, platform: &Platform) -> Option<String> {
    let plain = context_key(name);
    let with = format!("{plain}::{}", platform.normalize());
    [with, plain].into_iter().find(|k| keys.contains(k))
}

/// The key a `--build-context` name and a `FROM`/`--from` name meet under,
/// as BuildKit's `NamedContext` normalises: the familiar form of the name,
/// without a `:latest` tag (`docker.io/library/alpine:latest` is
/// `alpine`), so every spelling of one image finds the context.
pub fn context_key(name: &str) -> String {
    let mut n = name.trim();
    for p in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
    ] {
        if let Some(rest) = n.strip_prefix(p) {
            n = rest;
            break;
        }
    }
    let n = n.strip_suffix(":latest").unwrap_or(n);
    n.to_ascii_lowercase()
}

/// `{}` in JSON: the value type of OCI's set-like maps (`ExposedPorts`,
/// `Volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Empty {}

/// An image config's health check, as the OCI/Docker config stores it:
/// durations in nanoseconds, zero meaning "Docker's default" (30s interval
/// and timeout, 0s start period, 5s start interval, 3 retries, applied by
/// the runtime, not written into the image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The `config` object of an OCI image config, field names as the spec
/// spells them, so it round-trips through JSON unchanged: what a base image
/// brings and what a stage leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

impl ImageConfig {
    /// The `Env` list as `(name, value)` pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env.iter().flatten().map(|e| split_env(e)).collect()
    }
}

fn split_env(e: &str) -> (String, String) {
    match e.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (e.to_string(), String::new()),
    }
}

/// One history entry of the image config, as BuildKit writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// What BuildKit shows as the step (`RUN /bin/sh -c … # buildkit`).
    pub created_by: String,
    /// True for config-only steps: no layer in `rootfs.diff_ids`.
    pub empty_layer: bool,
    /// Always [`HISTORY_COMMENT`].
    pub comment: String,
}

/// Where a stage starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    /// No base: an empty filesystem.
    Scratch,
    /// An image reference, variables expanded, as written otherwise.
    Image {
        /// Not normalised (`busybox:1.35`).
        reference: String,
    },
    /// An earlier stage.
    Stage {
        /// Its [`Stage::index`].
        index: usize,
    },
    /// A `--build-context` folder: its files are the stage's root, with an
    /// empty image config (BuildKit's local named context).
    Context {
        /// Its [`context_key`].
        name: String,
    },
}

/// Where a `COPY --from` or a `RUN --mount from=` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A stage of this file.
    Stage {
        /// Its [`Stage::index`].
        index: usize,
    },
    /// Any other name: an image.
    Image {
        /// As written.
        reference: String,
    },
    /// A `--build-context` folder.
    Context {
        /// Its [`context_key`].
        name: String,
    },
}

/// A RUN mount with its source resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMount {
    pub mount: Mount,
    /// For bind and cache mounts with `from=`.
    pub from: Option<Source>,
}

/// A single-heredoc RUN whose body starts with `#!`: BuildKit writes the body
/// to a file (mode 0755) in a read-only mount at `/dev/pipes/` and runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineScript {
    pub name: String,
    pub data: String,
}

/// What a step does once its words are expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum StepOp {
    Run {
        /// The argv, shell prepended for the shell form, heredocs folded in
        /// as BuildKit folds them.
        argv: Vec<String>,
        /// A shebang heredoc to mount at `/dev/pipes/<name>` (argv runs it).
        script: Option<InlineScript>,
        /// `--mount`s, values expanded, sources resolved.
        mounts: Vec<PlannedMount>,
        /// `--network`.
        network: NetworkMode,
        /// `--security`.
        security: Security,
    },
    /// COPY and ADD with every word expanded (see [`Copy`]).
    Copy {
        /// ADD rather than COPY.
        add: bool,
        /// Sources, destination and flags with their words expanded.
        #[serde(flatten)]
        copy: Copy,
        /// `--from` resolved; `None` reads the build context.
        from_source: Option<Source>,
    },
    /// WORKDIR: the absolute directory to create (none for `/`).
    Workdir {
        /// Absolute and cleaned.
        path: String,
    },
    /// Instructions that only change the image config.
    Config,
}

/// One instruction of a stage, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub location: Location,
    /// The instruction as written.
    pub original: String,
    /// True for a trigger inherited from the base's ONBUILD.
    pub onbuild: bool,
    /// The typed instruction before expansion (what to re-evaluate from).
    pub instruction: Instruction,
    pub op: StepOp,
    /// ARGs in force with a value, in declaration order.
    #[serde(serialize_with = "serialize_shared")]
    pub args: Arc<[(String, String)]>,
    /// The image config's `Env` in force (before this step).
    #[serde(serialize_with = "serialize_shared")]
    pub env: Arc<[String]>,
    /// For RUN steps (empty for others), the environment the command gets:
    /// the config's `Env` and the ARGs in force (an ARG declared after an
    /// ENV of the same name overrides it here, as in BuildKit, though not in
    /// the image config), and the proxy build args.
    pub run_env: Vec<String>,
    pub workdir: String,
    pub user: String,
    /// The shell for shell forms.
    #[serde(serialize_with = "serialize_shared")]
    pub shell: Arc<[String]>,
    pub history: Option<HistoryEntry>,
}

/// One stage, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position among all the stages of the file (what `--from=N` means).
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    /// `--platform` expanded, if given (else the target platform).
    pub platform: Option<Platform>,
    pub location: Location,
    /// The FROM line as written.
    pub original: String,
    /// Whether the base image's config was known when planning (always for
    /// scratch and stages; for images only with a resolver).
    pub base_config_known: bool,
    /// The config the stage starts from: the base's, with PATH ensured.
    pub base_config: ImageConfig,
    pub steps: Vec<Step>,
    /// The image config the instructions leave.
    pub config: ImageConfig,
    /// The history entries this stage adds (after its base's).
    pub history: Vec<HistoryEntry>,
    /// MAINTAINER's value, BuildKit's `author`.
    pub author: Option<String>,
}

/// The whole resolved plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The stages the target needs, in file order.
    pub stages: Vec<Stage>,
    /// The target's position in `stages`.
    pub target: usize,
    pub target_platform: Platform,
    pub build_platform: Platform,
    /// The global ARGs (predefined ones included) as the FROM lines saw them.
    pub global_args: Vec<(String, String)>,
    /// Proxy build args passed to every RUN.
    pub proxy_env: Vec<(String, String)>,
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// A stage of the plan by its [`Stage::index`].
    pub fn stage(&self, index: usize) -> Option<&Stage> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// The target stage.
    pub fn target_stage(&self) -> Option<&Stage> {
        self.stages.get(self.target)
    }
}

/// Supplies base images' configs during planning (the build resolves and
/// pulls; `kiln parse --plan` has none). `Ok(None)` plans as if the image had
/// an empty config.
pub trait BaseResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ImageConfig>>;
}

impl<F: Fn(&str, &Platform) -> Result<Option<ImageConfig>>> BaseResolver for F {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ImageConfig>> {
        self(reference, platform)
    }
}

struct NoResolver;

impl BaseResolver for NoResolver {
    fn resolve(&self, _: &str, _: &Platform) -> Result<Option<ImageConfig>> {
        Ok(None)
    }
}

/// Plans a parsed Dockerfile with no knowledge of base images' configs.
pub fn plan(df: &Dockerfile, opts: &PlanOptions) -> Result<Plan> {
    plan_with_resolver(df, opts, &NoResolver)
}

/// Plans a parsed Dockerfile, asking `resolver` for each needed base image's
/// config so expansion and config inheritance match the real build.
pub fn plan_with_resolver(
    df: &Dockerfile,
    opts: &PlanOptions,
    resolver: &dyn BaseResolver,
) -> Result<Plan> {
    let ins = instructions::from_dockerfile(df)?;
    let mut plan = plan_instructions(&ins, opts, resolver)?;
    let mut warnings: Vec<Warning> = df
        .warnings
        .iter()
        .map(|w| Warning {
            message: w.message.clone(),
            location: span_loc(&w.span),
        })
        .collect();
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    Ok(plan)
}

fn span_loc(span: &Span) -> Location {
    Location {
        line: span.start_line.max(1),
        column: span.start_col.max(1),
        offset: span.offset,
        len: span.len.max(1),
    }
}

/// A stage as split from the file, before planning.
struct RawStage<'a> {
    index: usize,
    from: &'a Instruction,
    name: Option<String>,
    image_word: String,
    platform_word: Option<String>,
    commands: Vec<&'a Instruction>,
    base: Base,
    platform: Option<Platform>,
    deps: BTreeSet<usize>,
}

/// Plans already-typed instructions.
pub fn plan_instructions(
    ins: &Instructions,
    opts: &PlanOptions,
    resolver: &dyn BaseResolver,
) -> Result<Plan> {
    let budget = Budget::default();
    let lexer = Expander {
        lexer: Lexer::new(ins.escape),
        budget: &budget,
    };
    for (k, v) in &opts.build_args {
        if v.len() > MAX_EXPANDED_WORD {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("build-arg {k}: value exceeds the limit of {MAX_EXPANDED_WORD} bytes"),
            ));
        }
    }
    let target_platform = opts.target_platform.clone().unwrap_or_else(Platform::host);
    let build_platform = opts.build_platform.clone().unwrap_or_else(Platform::host);
    let mut warnings = ins.warnings.clone();

    // Split into meta ARGs and stages.
    let mut meta_args: Vec<&Instruction> = Vec::new();
    let mut raw: Vec<RawStage> = Vec::new();
    for i in &ins.instructions {
        match &i.command {
            Command::From(f) => raw.push(RawStage {
                index: raw.len(),
                from: i,
                name: f.name.clone(),
                image_word: f.image.clone(),
                platform_word: f.platform.clone(),
                commands: Vec::new(),
                base: Base::Scratch,
                platform: None,
                deps: BTreeSet::new(),
            }),
            Command::Arg { .. } if raw.is_empty() => meta_args.push(i),
            _ => match raw.last_mut() {
                Some(st) => st.commands.push(i),
                None => {
                    return Err(
                        Error::new(ErrorKind::Plan, "no build stage in current context")
                            .at(i.location()),
                    )
                }
            },
        }
    }
    if raw.is_empty() {
        return Err(Error::new(
            ErrorKind::Plan,
            "dockerfile contains no stages to build",
        ));
    }

    // Global scope: predefined ARGs, then the meta ARGs.
    let target_name = opts
        .target
        .clone()
        .or_else(|| raw.last().and_then(|s| s.name.clone()));
    let mut global: Vec<(String, String)> = Vec::new();
    let predefined = [
        ("BUILDPLATFORM", build_platform.to_string()),
        ("BUILDOS", build_platform.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", build_platform.architecture.clone()),
        (
            "BUILDVARIANT",
            build_platform.variant.clone().unwrap_or_default(),
        ),
        ("TARGETPLATFORM", target_platform.to_string()),
        ("TARGETOS", target_platform.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", target_platform.architecture.clone()),
        (
            "TARGETVARIANT",
            target_platform.variant.clone().unwrap_or_default(),
        ),
        (
            "TARGETSTAGE",
            target_name.clone().unwrap_or_else(|| "default".into()),
        ),
    ];
    for (k, v) in predefined {
        let v = opts.build_args.get(k).cloned().unwrap_or(v);
        set_var(&mut global, k, v);
    }
    let mut declared: BTreeSet<String> = BTreeSet::new();
    for i in &meta_args {
        let Command::Arg { args } = &i.command else {
            continue;
        };
        for a in args {
            declared.insert(a.key.clone());
            let value = match (opts.build_args.get(&a.key), &a.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(expand_word(&lexer, d, &global, i)?),
                (None, None) => None,
            };
            if let Some(v) = value {
                set_var(&mut global, &a.key, v);
            }
        }
    }

    // Resolve FROM lines: names, bases, platforms.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for st in raw.iter_mut() {
        let image = expand_word(&lexer, &st.image_word, &global, st.from)?;
        if image.is_empty() {
            return Err(Error::new(
                ErrorKind::Plan,
                format!("base name ({}) should not be blank", st.image_word),
            )
            .at(st.from.location()));
        }
        if let Some(p) = &st.platform_word {
            let pv = expand_word(&lexer, p, &global, st.from)?;
            if pv.is_empty() {
                return Err(Error::new(
                    ErrorKind::Plan,
                    format!("empty platform value from expression {p}"),
                )
                .at(st.from.location()));
            }
            let parsed = Platform::parse(&pv).map_err(|e| {
                Error::new(
                    ErrorKind::Plan,
                    format!("failed to parse platform {p}: {e}"),
                )
                .at(st.from.location())
            })?;
            st.platform = Some(parsed);
        }
        let on = st
            .platform
            .clone()
            .unwrap_or_else(|| target_platform.clone());
        // A named context of the stage's name replaces the stage, its
        // instructions unrun, as BuildKit's dispatch (`noinit`); never for
        // the names `scratch` and `context`.
        let replaced = st
            .name
            .as_deref()
            .filter(|n| !n.eq_ignore_ascii_case("scratch") && !n.eq_ignore_ascii_case("context"))
            .and_then(|n| {
                find_context(&opts.named_contexts, n, &on)
                    .map(|name| Base::Context { name })
                    .or_else(|| {
                        find_context(&opts.image_contexts, n, &on).map(|_| Base::Image {
                            reference: n.to_string(),
                        })
                    })
            });
        st.base = if let Some(base) = replaced {
            st.commands.clear();
            base
        } else if let Some(&idx) = names.get(&image.to_ascii_lowercase()) {
            st.deps.insert(idx);
            Base::Stage { index: idx }
        } else if let Some(name) = find_context(&opts.named_contexts, &image, &on) {
            Base::Context { name }
        } else if image == "scratch" {
            Base::Scratch
        } else {
            Base::Image { reference: image }
        };
        if let Some(n) = &st.name {
            names.insert(n.clone(), st.index);
        }
    }

    // Dependencies through COPY --from and RUN --mount from= (ONBUILD
    // triggers of stage bases included), and the target.
    let all_names: BTreeMap<String, usize> = raw
        .iter()
        .filter_map(|s| s.name.clone().map(|n| (n, s.index)))
        .collect();
    let triggers: Vec<Vec<Instruction>> = raw
        .iter()
        .map(|s| {
            s.commands
                .iter()
                .filter_map(|c| match &c.command {
                    Command::Onbuild(o) => o.trigger.as_deref().cloned(),
                    _ => None,
                })
                .collect()
        })
        .collect();
    for i in 0..raw.len() {
        let mut deps = BTreeSet::new();
        let base_triggers = match raw[i].base {
            Base::Stage { index } => triggers[index].iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        for c in raw[i].commands.iter().copied().chain(base_triggers) {
            for r in source_refs(c) {
                if let Some(idx) = stage_ref(&r, &all_names, raw.len()) {
                    deps.insert(idx);
                }
            }
        }
        raw[i].deps.extend(deps);
    }
    let target_index = match &opts.target {
        Some(t) => *all_names.get(&t.to_ascii_lowercase()).ok_or_else(|| {
            Error::new(
                ErrorKind::Plan,
                format!("target stage {t:?} could not be found"),
            )
        })?,
        None => raw.len() - 1,
    };
    check_circular_dependencies(&raw, &all_names)?;
    // The needed stages, resolving their base images as they become needed:
    // a base image's ONBUILD triggers may read from further stages, as in
    // BuildKit's resolve loop.
    let mut resolved: BTreeMap<usize, (bool, ImageConfig, Vec<Instruction>)> = BTreeMap::new();
    let needed = loop {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target_index];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(raw[i].deps.iter().copied().filter(|d| *d < raw.len()));
            }
        }
        let mut changed = false;
        for &i in &needed {
            let Base::Image { reference } = &raw[i].base else {
                continue;
            };
            if resolved.contains_key(&i) {
                continue;
            }
            let from = raw[i].from;
            let p = raw[i]
                .platform
                .clone()
                .unwrap_or_else(|| target_platform.clone());
            let cfg = resolver
                .resolve(reference, &p)
                .map_err(|e| match e.location {
                    Some(_) => e,
                    None => e.at(from.location()),
                })?;
            let known = cfg.is_some();
            let mut cfg = cfg.unwrap_or_default();
            let mut trig = Vec::new();
            for text in cfg.on_build.take().unwrap_or_default() {
                let t = parse_trigger(&text, from)?;
                for r in source_refs(&t) {
                    if let Some(idx) = stage_ref(&r, &all_names, raw.len()) {
                        changed |= raw[i].deps.insert(idx);
                    }
                }
                trig.push(t);
            }
            resolved.insert(i, (known, cfg, trig));
        }
        if !changed {
            break needed;
        }
    };

    // Unused build args.
    for st in raw.iter().filter(|s| needed.contains(&s.index)) {
        for c in &st.commands {
            if let Command::Arg { args } = &c.command {
                declared.extend(args.iter().map(|a| a.key.clone()));
            }
        }
        if let Base::Stage { index } = st.base {
            for t in &triggers[index] {
                if let Command::Arg { args } = &t.command {
                    declared.extend(args.iter().map(|a| a.key.clone()));
                }
            }
        }
    }
    for (_, _, trig) in resolved.values() {
        for t in trig {
            if let Command::Arg { args } = &t.command {
                declared.extend(args.iter().map(|a| a.key.clone()));
            }
        }
    }
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| {
            !declared.contains(*k)
                && !PROXY_ARGS.contains(&k.as_str())
                && !predefined_names().contains(&k.as_str())
                && k.as_str() != SOURCE_DATE_EPOCH
        })
        .collect();
    if !unused.is_empty() {
        let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        warnings.push(Warning {
            message: format!(
                "one or more build-args [{}] were not consumed",
                list.join(" ")
            ),
            location: Location {
                line: 1,
                column: 1,
                offset: 0,
                len: 1,
            },
        });
    }

    let proxy_env: Vec<(String, String)> = PROXY_ARGS
        .iter()
        .filter_map(|k| opts.build_args.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();

    // Dispatch the needed stages in file order.
    let ctx = Ctx {
        lexer,
        global: &global,
        opts,
        proxy_env: &proxy_env,
        names: &all_names,
        count: raw.len(),
    };
    let mut done: Vec<Option<Stage>> = vec![None; raw.len()];
    let mut states: Vec<Option<State>> = vec![None; raw.len()];
    for st in raw.iter().filter(|s| needed.contains(&s.index)) {
        let (mut state, base_config, known, platform, mut trigger_steps) = match &st.base {
            Base::Scratch | Base::Context { .. } => (
                State::from_config(ImageConfig::default()),
                None,
                true,
                st.platform.clone(),
                Vec::new(),
            ),
            Base::Image { .. } => {
                let (known, cfg, trig) = resolved.remove(&st.index).unwrap_or_default();
                (
                    State::from_config(cfg),
                    None,
                    known,
                    st.platform.clone(),
                    trig,
                )
            }
            Base::Stage { index } => {
                let Some(Some(base)) = states.get(*index) else {
                    return Err(Error::new(ErrorKind::Plan, "base stage was not planned")
                        .at(st.from.location()));
                };
                budget.charge(
                    pairs_len(&base.vars)
                        + base
                            .config
                            .env
                            .iter()
                            .flatten()
                            .map(String::len)
                            .sum::<usize>(),
                    st.from.location(),
                )?;
                let mut s = base.clone();
                s.config.on_build = None;
                s.cmd_set = false;
                s.history.clear();
                s.steps.clear();
                s.author = None;
                let platform = st
                    .platform
                    .clone()
                    .or_else(|| done[*index].as_ref().and_then(|b| b.platform.clone()));
                let trig = triggers[*index]
                    .iter()
                    .map(|t| {
                        let mut t = t.clone();
                        t.span = st.from.span;
                        t
                    })
                    .collect();
                let cfg = s.config.clone();
                (s, Some(cfg), true, platform, trig)
            }
        };
        let base_config = base_config.unwrap_or_else(|| state.config.clone());
        for t in trigger_steps.drain(..) {
            state.dispatch(&ctx, &t, true, st.index)?;
        }
        for c in &st.commands {
            state.dispatch(&ctx, c, false, st.index)?;
        }
        done[st.index] = Some(Stage {
            index: st.index,
            name: st.name.clone(),
            base: st.base.clone(),
            platform,
            location: st.from.location(),
            original: st.from.original.clone(),
            base_config_known: known,
            base_config,
            steps: std::mem::take(&mut state.steps),
            config: state.config.clone(),
            history: std::mem::take(&mut state.history),
            author: state.author.clone(),
        });
        states[st.index] = Some(state);
    }
    let stages: Vec<Stage> = done.into_iter().flatten().collect();
    let target = stages
        .iter()
        .position(|s| s.index == target_index)
        .unwrap_or(stages.len().saturating_sub(1));
    Ok(Plan {
        stages,
        target,
        target_platform,
        build_platform,
        global_args: global,
        proxy_env,
        warnings,
    })
}

/// Refuses stages that read from each other, or from themselves, through
/// `COPY --from` or `RUN --mount from=`, as BuildKit's
/// `validateCircularDependency` does before anything is resolved: without
/// it, such a file fails later with a misleading "needs to be defined
/// before" message. Every stage of the file is checked, needed or not, and
/// in file order, so the stage named is the first one from which a cycle
/// can be reached (possibly a stage outside the cycle, as in BuildKit). FROM
/// edges cannot form a cycle (a base names an earlier stage) and are not
/// followed, nor are ONBUILD triggers, which BuildKit only reads later.
fn check_circular_dependencies(raw: &[RawStage], names: &BTreeMap<String, usize>) -> Result<()> {
    // Each stage's edges, in file order, with the instruction making them.
    let edges: Vec<Vec<(usize, &Instruction)>> = raw
        .iter()
        .map(|st| {
            st.commands
                .iter()
                .flat_map(|c| {
                    source_refs(c)
                        .into_iter()
                        .filter_map(|r| stage_ref(&r, names, raw.len()))
                        .map(move |idx| (idx, *c))
                })
                .collect()
        })
        .collect();
    let mut visited = vec![false; raw.len()];
    let mut on_path = vec![false; raw.len()];
    // Depth-first from `node`: the instructions along the path to the
    // first edge that closes a cycle.
    fn visit<'a>(
        node: usize,
        edges: &[Vec<(usize, &'a Instruction)>],
        visited: &mut [bool],
        on_path: &mut [bool],
        chain: &mut Vec<&'a Instruction>,
    ) -> bool {
        if visited[node] {
            return false;
        }
        visited[node] = true;
        on_path[node] = true;
        for &(dep, ins) in &edges[node] {
            chain.push(ins);
            if on_path[dep] || visit(dep, edges, visited, on_path, chain) {
                return true;
            }
            chain.pop();
        }
        on_path[node] = false;
        false
    }
    for st in raw {
        let mut chain = Vec::new();
        if visit(st.index, &edges, &mut visited, &mut on_path, &mut chain) {
            let name = st
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", st.index));
            let mut err = Error::new(
                ErrorKind::Plan,
                format!("circular dependency detected on stage: {name}"),
            );
            if let Some(first) = chain.first() {
                err = err.at(first.location());
            }
            return Err(err);
        }
    }
    Ok(())
}

fn predefined_names() -> [&'static str; 11] {
    [
        "BUILDPLATFORM",
        "BUILDOS",
        "BUILDOSVERSION",
        "BUILDARCH",
        "BUILDVARIANT",
        "TARGETPLATFORM",
        "TARGETOS",
        "TARGETOSVERSION",
        "TARGETARCH",
        "TARGETVARIANT",
        "TARGETSTAGE",
    ]
}

/// Parses an ONBUILD trigger stored in a base image's config.
fn parse_trigger(text: &str, from: &Instruction) -> Result<Instruction> {
    let df = crate::parser::parse(text).map_err(|e| Error {
        location: Some(from.location()),
        ..e
    })?;
    if df.nodes.len() != 1 {
        return Err(Error::new(
            ErrorKind::Plan,
            "onbuild trigger should be a single expression",
        )
        .at(from.location()));
    }
    let mut ins = instructions::from_node(&df.nodes[0]).map_err(|e| Error {
        location: Some(from.location()),
        ..e
    })?;
    ins.span = from.span;
    match ins.command {
        Command::From(_) | Command::Onbuild(_) | Command::Maintainer { .. } => Err(Error::new(
            ErrorKind::Plan,
            format!("{} isn't allowed as an ONBUILD trigger", ins.keyword()),
        )
        .at(from.location())),
        _ => Ok(ins),
    }
}

/// The stage or image names an instruction reads from (`--from`, mount
/// `from=`).
fn source_refs(i: &Instruction) -> Vec<String> {
    match &i.command {
        Command::Copy(c) => c.from.iter().cloned().collect(),
        Command::Run(r) => r.mounts.iter().filter_map(|m| mount_from(m)).collect(),
        _ => Vec::new(),
    }
}

fn mount_from(m: &str) -> Option<String> {
    m.split(',').find_map(|f| {
        let (k, v) = f.split_once('=')?;
        k.trim_matches('"')
            .eq_ignore_ascii_case("from")
            .then(|| v.trim_matches('"').to_string())
    })
}

/// A `--from` value naming a stage: by name (any stage of the file) or index.
fn stage_ref(r: &str, names: &BTreeMap<String, usize>, count: usize) -> Option<usize> {
    if let Ok(n) = r.parse::<usize>() {
        return (n < count).then_some(n);
    }
    names.get(&r.to_ascii_lowercase()).copied()
}

fn set_var(list: &mut Vec<(String, String)>, k: &str, v: String) {
    if let Some(e) = list.iter_mut().find(|(key, _)| key == k) {
        e.1 = v;
    } else {
        list.push((k.to_string(), v));
    }
}

fn expand_word(ex: &Expander, word: &str, env: &dyn Env, at: &Instruction) -> Result<String> {
    let value = ex
        .lexer
        .process_word(word, env)
        .map(|e| e.value)
        .map_err(|e| Error::new(ErrorKind::Expansion, e.to_string()).at(at.location()))?;
    ex.budget.charge(value.len(), at.location())?;
    Ok(value)
}

fn expand_words(ex: &Expander, word: &str, env: &dyn Env, at: &Instruction) -> Result<Vec<String>> {
    let words = ex
        .lexer
        .process_words(word, env)
        .map(|e| e.value)
        .map_err(|e| Error::new(ErrorKind::Expansion, e.to_string()).at(at.location()))?;
    ex.budget
        .charge(words.iter().map(String::len).sum(), at.location())?;
    Ok(words)
}

/// The bytes of a `(name, value)` list, for the plan's [`Budget`].
fn pairs_len(list: &[(String, String)]) -> usize {
    list.iter().map(|(k, v)| k.len() + v.len() + 1).sum()
}

struct Ctx<'a> {
    lexer: Expander<'a>,
    global: &'a [(String, String)],
    opts: &'a PlanOptions,
    proxy_env: &'a [(String, String)],
    names: &'a BTreeMap<String, usize>,
    count: usize,
}

/// BuildKit's dispatch state for one stage.
#[derive(Debug, Clone)]
struct State {
    config: ImageConfig,
    /// The build state's environment: config Env plus ARG values.
    vars: Vec<(String, String)>,
    /// Declared ARGs (value if any), in order, inherited through stage bases.
    args: Vec<(String, Option<String>)>,
    workdir: String,
    cmd_set: bool,
    history: Vec<HistoryEntry>,
    steps: Vec<Step>,
    author: Option<String>,
    /// The config's Env and the shell as last shared with a step; steps
    /// share them until ENV or SHELL changes them, since big files repeat
    /// them for every step.
    env_cache: Option<Arc<[String]>>,
    shell_cache: Option<Arc<[String]>>,
    args_cache: Option<Arc<[(String, String)]>>,
}

impl State {
    fn from_config(mut config: ImageConfig) -> State {
        let env = config.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| split_env(e).0 == "PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let vars = config.env_pairs();
        let workdir = match config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => normalize_workdir("/", w),
            _ => "/".to_string(),
        };
        State {
            config,
            vars,
            args: Vec::new(),
            workdir,
            cmd_set: false,
            history: Vec::new(),
            steps: Vec::new(),
            author: None,
            env_cache: None,
            shell_cache: None,
            args_cache: None,
        }
    }

    fn shell(&self) -> Vec<String> {
        match &self.config.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    fn with_shell(&self, cmd: &str) -> Vec<String> {
        let mut v = self.shell();
        v.push(cmd.to_string());
        v
    }

    fn commit(&mut self, created_by: String, layer: bool) -> HistoryEntry {
        let h = HistoryEntry {
            created_by,
            empty_layer: !layer,
            comment: HISTORY_COMMENT.into(),
        };
        self.history.push(h.clone());
        h
    }

    fn resolve_source(
        &self,
        ctx: &Ctx,
        r: &str,
        current: usize,
        at: &Instruction,
    ) -> Result<Source> {
        match stage_ref(r, ctx.names, ctx.count) {
            Some(idx) if idx < current => Ok(Source::Stage { index: idx }),
            Some(_) => Err(Error::new(
                ErrorKind::Plan,
                format!(
                    "cannot copy from stage {r:?}, it needs to be defined before current stage"
                ),
            )
            .at(at.location())),
            None if r.parse::<usize>().is_ok() => Err(Error::new(
                ErrorKind::Plan,
                format!("invalid stage index {r}"),
            )
            .at(at.location())),
            None => {
                let on = ctx
                    .opts
                    .target_platform
                    .clone()
                    .unwrap_or_else(Platform::host);
                Ok(match find_context(&ctx.opts.named_contexts, r, &on) {
                    Some(name) => Source::Context { name },
                    None => Source::Image {
                        reference: r.to_string(),
                    },
                })
            }
        }
    }

    fn dispatch(
        &mut self,
        ctx: &Ctx,
        ins: &Instruction,
        onbuild: bool,
        current: usize,
    ) -> Result<()> {
        let lx = &ctx.lexer;
        let args_in_force = match &self.args_cache {
            Some(a) => a.clone(),
            None => {
                ctx.lexer.budget.charge(
                    self.args
                        .iter()
                        .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
                        .sum(),
                    ins.location(),
                )?;
                let mut out: Vec<(String, String)> = Vec::new();
                for (k, v) in &self.args {
                    if let Some(v) = v {
                        set_var(&mut out, k, v.clone());
                    }
                }
                let a: Arc<[(String, String)]> = out.into();
                self.args_cache = Some(a.clone());
                a
            }
        };
        let env_before = match &self.env_cache {
            Some(e) => e.clone(),
            None => {
                ctx.lexer.budget.charge(
                    self.config.env.iter().flatten().map(String::len).sum(),
                    ins.location(),
                )?;
                let e: Arc<[String]> = self.config.env.clone().unwrap_or_default().into();
                self.env_cache = Some(e.clone());
                e
            }
        };
        let is_run = matches!(ins.command, Command::Run(_));
        let run_env: Vec<String> = if !is_run {
            Vec::new()
        } else {
            ctx.lexer
                .budget
                .charge(pairs_len(&self.vars), ins.location())?;
            let mut list = self.vars.clone();
            for (k, v) in ctx.proxy_env {
                if !list.iter().any(|(key, _)| key == k) {
                    list.push((k.clone(), v.clone()));
                }
            }
            list.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        let workdir = self.workdir.clone();
        let user = self.config.user.clone().unwrap_or_default();
        let shell = match &self.shell_cache {
            Some(s) => s.clone(),
            None => {
                let s: Arc<[String]> = self.shell().into();
                self.shell_cache = Some(s.clone());
                s
            }
        };
        let mut op = StepOp::Config;
        let history: Option<HistoryEntry> = match &ins.command {
            Command::From(_) => {
                return Err(Error::new(ErrorKind::Plan, "FROM inside a stage").at(ins.location()));
            }
            Command::Env { pairs } => {
                self.env_cache = None;
                let mut expanded = Vec::with_capacity(pairs.len());
                for p in pairs {
                    let k = expand_word(lx, &p.key, &self.vars, ins)?;
                    let v = expand_word(lx, &p.value, &self.vars, ins)?;
                    expanded.push((k, v));
                }
                let mut msg = String::from("ENV");
                for (k, v) in expanded {
                    msg.push_str(&format!(" {k}={v}"));
                    set_var(&mut self.vars, &k, v.clone());
                    let env = self.config.env.get_or_insert_with(Vec::new);
                    match env.iter_mut().find(|e| split_env(e).0 == k) {
                        Some(e) => *e = format!("{k}={v}"),
                        None => env.push(format!("{k}={v}")),
                    }
                }
                Some(self.commit(msg, false))
            }
            Command::Label { pairs } => {
                let mut msg = String::from("LABEL");
                let mut expanded = Vec::with_capacity(pairs.len());
                for p in pairs {
                    let k = expand_word(lx, &p.key, &self.vars, ins)?;
                    let v = expand_word(lx, &p.value, &self.vars, ins)?;
                    expanded.push((k, v));
                }
                let labels = self.config.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in expanded {
                    msg.push_str(&format!(" {k}={v}"));
                    labels.insert(k, v);
                }
                Some(self.commit(msg, false))
            }
            Command::Arg { args } => {
                self.args_cache = None;
                let mut parts = Vec::with_capacity(args.len());
                for a in args {
                    let build = ctx.opts.build_args.get(&a.key);
                    let mut value = None;
                    if a.default.is_none() && build.is_none() {
                        value = ctx
                            .global
                            .iter()
                            .find(|(k, _)| *k == a.key)
                            .map(|(_, v)| v.clone());
                    }
                    if let Some(v) = build {
                        value = Some(v.clone());
                    } else if let Some(d) = &a.default {
                        value = Some(expand_word(lx, d, &self.vars, ins)?);
                    }
                    if let Some(v) = value.as_ref().filter(|_| !NON_ENV_ARGS.contains(&&*a.key)) {
                        // As BuildKit's dispatchArg (`d.state.AddEnv`): the
                        // ARG's value goes into the build state even over an
                        // earlier ENV of the same name, so later words and
                        // RUN see it; the image config keeps the ENV value.
                        set_var(&mut self.vars, &a.key, v.clone());
                    }
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", a.key),
                        None => a.key.clone(),
                    });
                    self.args.push((a.key.clone(), value));
                }
                Some(self.commit(format!("ARG {}", parts.join(" ")), false))
            }
            Command::Workdir { path } => {
                let p = expand_word(lx, path, &self.vars, ins)?;
                let wd = normalize_workdir(&self.workdir, &p);
                self.config.working_dir = Some(wd.clone());
                self.workdir = wd.clone();
                let layer = wd != "/";
                if layer {
                    op = StepOp::Workdir { path: wd.clone() };
                }
                Some(self.commit(format!("WORKDIR {wd}"), layer))
            }
            Command::User { user } => {
                let u = expand_word(lx, user, &self.vars, ins)?;
                self.config.user = Some(u.clone());
                Some(self.commit(format!("USER {u}"), false))
            }
            Command::Volume { paths } => {
                let mut vols = Vec::with_capacity(paths.len());
                for p in paths {
                    let v = expand_word(lx, p, &self.vars, ins)?;
                    if v.is_empty() {
                        return Err(Error::new(
                            ErrorKind::InvalidArgument,
                            "VOLUME specified can not be an empty string",
                        )
                        .at(ins.location()));
                    }
                    vols.push(v);
                }
                let map = self.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &vols {
                    map.insert(v.clone(), Empty {});
                }
                Some(self.commit(format!("VOLUME [{}]", vols.join(" ")), false))
            }
            Command::StopSignal { signal } => {
                let s = expand_word(lx, signal, &self.vars, ins)?;
                if !valid_signal(&s) {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("Invalid signal: {s}"),
                    )
                    .at(ins.location()));
                }
                self.config.stop_signal = Some(s.clone());
                Some(self.commit(format!("STOPSIGNAL {s}"), false))
            }
            Command::Expose { ports } => {
                let mut words = Vec::new();
                for p in ports {
                    words.extend(expand_words(lx, p, &self.vars, ins)?);
                }
                let mut specs = Vec::new();
                for w in &words {
                    specs.extend(parse_port(w).map_err(|e| {
                        Error::new(ErrorKind::InvalidArgument, e).at(ins.location())
                    })?);
                }
                let map = self.config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for s in &specs {
                    map.insert(s.clone(), Empty {});
                }
                Some(self.commit(format!("EXPOSE [{}]", specs.join(" ")), false))
            }
            Command::Cmd(c) => {
                let args = match &c.cmd {
                    CommandLine::Exec(a) => a.clone(),
                    CommandLine::Shell(s) => self.with_shell(s),
                };
                self.config.cmd = Some(args.clone());
                self.cmd_set = true;
                Some(self.commit(format!("CMD {}", go_string_slice(&args)), false))
            }
            Command::Entrypoint(c) => {
                let args = match &c.cmd {
                    CommandLine::Exec(a) => a.clone(),
                    CommandLine::Shell(s) => self.with_shell(s),
                };
                self.config.entrypoint = if args.is_empty() {
                    None
                } else {
                    Some(args.clone())
                };
                if !self.cmd_set {
                    self.config.cmd = None;
                }
                Some(self.commit(format!("ENTRYPOINT {}", go_string_slice(&args)), false))
            }
            Command::Shell { shell } => {
                self.shell_cache = None;
                self.config.shell = Some(shell.clone());
                Some(self.commit(format!("SHELL [{}]", shell.join(" ")), false))
            }
            Command::Healthcheck(h) => {
                let hc = HealthConfig {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                };
                let msg = format!(
                    "HEALTHCHECK {{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                    hc.test.join(" "),
                    go_duration(hc.interval),
                    go_duration(hc.timeout),
                    go_duration(hc.start_period),
                    go_duration(hc.start_interval),
                    hc.retries
                );
                self.config.healthcheck = Some(hc);
                Some(self.commit(msg, false))
            }
            Command::Onbuild(o) => {
                self.config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(o.expression.clone());
                None
            }
            Command::Maintainer { name } => {
                self.author = Some(name.clone());
                Some(self.commit(format!("MAINTAINER {name}"), false))
            }
            Command::Run(r) => {
                let (argv, script) = self.run_argv(r, ins)?;
                let mut mounts = Vec::with_capacity(r.mounts.len());
                for m in &r.mounts {
                    let vars = &self.vars;
                    let mut expand = |w: &str| {
                        let value = lx
                            .lexer
                            .process_word(w, vars)
                            .map(|e| e.value)
                            .map_err(|e| Error::new(ErrorKind::Expansion, e.to_string()))?;
                        lx.budget.charge(value.len(), ins.location())?;
                        Ok(value)
                    };
                    let mount = instructions::parse_mount(m, &mut expand).map_err(|e| {
                        Error::new(ErrorKind::InvalidArgument, e.to_string()).at(ins.location())
                    })?;
                    let from = match &mount.from {
                        Some(f) if !f.is_empty() => {
                            Some(self.resolve_source(ctx, f, current, ins)?)
                        }
                        _ => None,
                    };
                    mounts.push(PlannedMount { mount, from });
                }
                let created = format!(
                    "RUN {} # buildkit",
                    run_command_string(&argv, &self.args, &self.vars)
                );
                op = StepOp::Run {
                    argv,
                    script,
                    mounts,
                    network: r.network,
                    security: r.security,
                };
                Some(self.commit(created, true))
            }
            Command::Copy(c) | Command::Add(c) => {
                let add = matches!(ins.command, Command::Add(_));
                let mut e = c.clone();
                let ex = |w: &Option<String>| -> Result<Option<String>> {
                    w.as_ref()
                        .map(|w| expand_word(lx, w, &self.vars, ins))
                        .transpose()
                };
                e.chown = ex(&c.chown)?;
                e.chmod = ex(&c.chmod)?;
                if add {
                    e.checksum = ex(&c.checksum)?;
                }
                e.sources = c
                    .sources
                    .iter()
                    .map(|s| expand_word(lx, s, &self.vars, ins))
                    .collect::<Result<_>>()?;
                e.dest = expand_word(lx, &c.dest, &self.vars, ins)?;
                let raw_lexer = Expander {
                    lexer: Lexer::new('\\').with_skip_process_quotes(true),
                    ..*lx
                };
                for s in e.inline_sources.iter_mut() {
                    if s.expand {
                        s.data = expand_word(&raw_lexer, &s.data, &self.vars, ins)?;
                    }
                }
                let from_source = match &c.from {
                    Some(f) => {
                        if f.contains('$') {
                            return Err(Error::new(
                                ErrorKind::Plan,
                                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                            )
                            .at(ins.location()));
                        }
                        Some(self.resolve_source(ctx, f, current, ins)?)
                    }
                    None => None,
                };
                let mut msg = String::from(if add { "ADD" } else { "COPY" });
                if e.parents {
                    msg.push_str(" --parents");
                }
                if let Some(c) = e.chown.as_ref().filter(|c| !c.is_empty()) {
                    msg.push_str(&format!(" --chown={c}"));
                }
                if let Some(c) = e.chmod.as_ref().filter(|c| !c.is_empty()) {
                    msg.push_str(&format!(" --chmod={c}"));
                }
                for s in &e.sources {
                    msg.push(' ');
                    msg.push_str(s);
                }
                for s in &e.inline_sources {
                    msg.push_str(&format!(" <<{}", s.path));
                }
                msg.push(' ');
                msg.push_str(&e.dest);
                msg.push_str(" # buildkit");
                op = StepOp::Copy {
                    add,
                    copy: e,
                    from_source,
                };
                Some(self.commit(msg, true))
            }
        };
        self.steps.push(Step {
            location: ins.location(),
            original: ins.original.clone(),
            onbuild,
            instruction: ins.clone(),
            op,
            args: args_in_force,
            env: env_before,
            run_env,
            workdir,
            user,
            shell,
            history,
        });
        Ok(())
    }

    /// RUN's argv as BuildKit builds it, heredocs included.
    fn run_argv(
        &self,
        r: &instructions::Run,
        ins: &Instruction,
    ) -> Result<(Vec<String>, Option<InlineScript>)> {
        let mut script = None;
        let args: Vec<String> = match &r.cmd {
            CommandLine::Exec(a) => {
                if !r.files.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("parsing produced an invalid run command: {a:?}"),
                    )
                    .at(ins.location()));
                }
                return Ok((a.clone(), None));
            }
            CommandLine::Shell(s) => {
                if r.files.is_empty() {
                    vec![s.clone()]
                } else if instructions::heredoc_name(s.trim()).is_some() {
                    let f = &r.files[0];
                    if f.data.starts_with("#!") {
                        script = Some(InlineScript {
                            name: f.name.clone(),
                            data: f.data.clone(),
                        });
                        return Ok((vec![format!("/dev/pipes/{}", f.name)], script));
                    }
                    vec![f.data.clone()]
                } else {
                    let mut b = s.clone();
                    for f in &r.files {
                        b.push('\n');
                        b.push_str(&f.data);
                        b.push_str(&f.name);
                    }
                    vec![b]
                }
            }
        };
        Ok((self.with_shell(&args.join(" ")), script))
    }
}

/// BuildKit's history text for RUN: `|N K=V … argv`.
fn run_command_string(
    argv: &[String],
    args: &[(String, Option<String>)],
    vars: &[(String, String)],
) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in args {
        let value = Env::get(vars, k).or_else(|| v.clone()).unwrap_or_default();
        set_var(&mut pairs, k, value);
    }
    let mut parts: Vec<String> = Vec::new();
    if !pairs.is_empty() {
        parts.push(format!("|{}", pairs.len()));
        parts.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(argv.iter().cloned());
    parts.join(" ")
}

/// WORKDIR resolution: absolute paths are cleaned, relative ones joined to
/// the current directory.
pub fn normalize_workdir(current: &str, p: &str) -> String {
    if p.starts_with('/') {
        clean_path(p)
    } else {
        let base = if current.is_empty() { "/" } else { current };
        clean_path(&format!("{base}/{p}"))
    }
}

/// EXPOSE's port specs to `port/proto` keys (ranges expanded), with
/// BuildKit's checks and words.
fn parse_port(raw: &str) -> std::result::Result<Vec<String>, String> {
    let (rest, proto) = raw.split_once('/').unwrap_or((raw, ""));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" => "tcp".to_string(),
        p @ ("tcp" | "udp" | "sctp") => p.to_string(),
        _ => return Err(format!("invalid port: {raw:?}: invalid proto: {proto}")),
    };
    let container = rest.rsplit(':').next().unwrap_or(rest);
    if container.is_empty() {
        return Err(format!("invalid port: {raw:?}: no port specified"));
    }
    let bad = || format!("invalid containerPort: {container}");
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = container.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// moby's signal.ParseSignal: a number or a known name, `SIG` optional.
fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0 && n <= 64;
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    const NAMES: [&str; 34] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    // RTMIN, RTMIN+n, RTMAX-n
    name == "RTMIN"
        || name == "RTMAX"
        || name
            .strip_prefix("RTMIN+")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 15)
        || name
            .strip_prefix("RTMAX-")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 14)
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_string_slice(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()`.
pub fn go_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let u = d.unsigned_abs();
    let frac = |v: u64, unit: u64, digits: usize| -> String {
        let int = v / unit;
        let rem = v % unit;
        if rem == 0 {
            int.to_string()
        } else {
            let f = format!("{rem:0digits$}");
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    };
    let s = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000, 6))
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s_ns = u % 60_000_000_000;
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", frac(s_ns, 1_000_000_000, 9)));
        out
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Serialises a shared list as a plain JSON array.
fn serialize_shared<T: Serialize, S: serde::Serializer>(
    v: &Arc<[T]>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    Serialize::serialize(&**v, s)
}

//! Lowering: a resolved [`Plan`] becomes the solver's graph of
//! [`BuildOp`]s, the way BuildKit's `dockerfile2llb` turns a Dockerfile into
//! LLB.
//!
//! The planner has already done the Dockerfile-specific work (scoping,
//! expansion, config and history); what is left here is the shape of the
//! graph, which decides what the cache can reuse and what runs in
//! parallel:
//! - a stage starts from an `Image` op (pinned to the manifest digest the
//!   caller resolved, so every key after it pins the base's content), from
//!   `Scratch`, or from the node an earlier stage ended on;
//! - RUN is an `Exec` on the current state, with extra inputs for its bind
//!   and seeded cache mounts;
//! - COPY/ADD is one `File` op whose input 0 is the current state and whose
//!   further inputs are the sources: the build context (one `Context` node
//!   shared by every step, carrying the `.dockerignore` excludes), a stage's
//!   node, an image, or a `Scratch` + `Mkfile` per heredoc, as BuildKit
//!   prepares inline documents; `COPY --link` copies onto `Scratch` and
//!   stacks the result on the state with a `Merge`, so the copy's layer does
//!   not depend on what lies below it;
//! - WORKDIR is a `Mkdir` (BuildKit 0.8 makes a layer for it);
//! - config-only instructions add no node at all.
//!
//! Identical work in several stages or platforms becomes one node (the
//! graph deduplicates by digest), which the scheduler runs once.

use std::collections::{BTreeMap, HashMap};

use kiln_llb::ops::{self, BuildOp, Exec, ExecMount, FileAction, FileOp};
use kiln_llb::{Graph, NodeId};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::instructions::{self, Mount, MountType};
use crate::plan::{Base, HistoryEntry, ImageConfig, Plan, Platform, Source, Stage, StepOp};
use crate::source_map::{LineRange, Origin, SourceMap};
use kiln_llb::mode::Chmod;
use kiln_patternmatcher::gopath::clean;

/// The name of the main build context, as BuildKit's `context` local.
pub const MAIN_CONTEXT: &str = "context";

/// A base image as the build resolved it: what lowering pins and inherits.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    /// The normalised reference (`docker.io/library/busybox:1.35`), which
    /// names the `Image` op.
    pub reference: String,
    /// The platform manifest's digest; pins the op's identity.
    pub manifest: String,
    /// The whole image config document (`architecture`, `config`,
    /// `history`, `rootfs`…): the exporter starts from it.
    pub config: serde_json::Value,
}

impl ResolvedImage {
    /// The `config` object, typed as the planner wants it; `None` when the
    /// image has none (scratch-like images).
    pub fn image_config(&self) -> Option<ImageConfig> {
        self.config
            .get("config")
            .filter(|c| !c.is_null())
            .and_then(|c| serde_json::from_value(c.clone()).ok())
    }
}

/// Resolves base images for lowering (the build looks in the store and
/// pulls; tests hand out fixtures). The same resolver should have served
/// the planner, so the config it inherited matches the image pinned here.
pub trait ImageResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage>;
}

impl<F: Fn(&str, &Platform) -> Result<ResolvedImage>> ImageResolver for F {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage> {
        self(reference, platform)
    }
}

/// What lowering needs besides the plan.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// The `.dockerignore` patterns (as `read_all` leaves them), applied to
    /// every read of the main context.
    pub context_excludes: Vec<String>,
    /// Prefix step names with the platform (multi-platform builds), as
    /// BuildKit does.
    pub show_platform: bool,
    /// What every RUN of the build gets (`--add-host`, `--ulimit`, …).
    pub resources: ops::ExecResources,
    /// `SOURCE_DATE_EPOCH`, in seconds: the times of the directories
    /// WORKDIR creates, as BuildKit's frontend gives its mkdir the epoch
    /// (`llb.WithCreatedTime`).
    pub epoch: Option<i64>,
    /// The `--build-context` folders by [`crate::plan::context_key`], with
    /// the patterns of each one's own `.dockerignore` (BuildKit reads a
    /// named local context's `.dockerignore` at its top). The worker knows
    /// each as the context [`named_context_id`] of the key.
    pub named_contexts: BTreeMap<String, Vec<String>>,
}

/// The worker's name for the `--build-context` folder of `key`: apart from
/// [`MAIN_CONTEXT`] whatever the user calls it.
pub fn named_context_id(key: &str) -> String {
    format!("named:{key}")
}

/// What the exporter needs to turn the target's snapshot into an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageMeta {
    /// The OCI config's `config` object the stage leaves (base fields
    /// already inherited by the planner).
    pub config: serde_json::Value,
    /// History entries the Dockerfile adds, across the chain of stages the
    /// target is built on, oldest first; the base image's own come first in
    /// the exported image (see [`ImageMeta::base`]).
    pub history: Vec<HistoryEntry>,
    /// The config document of the image at the root of the stage chain
    /// (`None` for scratch): its history, `os.version`, etc. carry over.
    pub base: Option<serde_json::Value>,
    /// MAINTAINER, BuildKit's `author`.
    pub author: Option<String>,
}

/// The lowered build: one graph for every platform, per platform the
/// target node and its image metadata, and where each node came from.
pub struct Lowered {
    pub graph: Graph<BuildOp>,
    pub targets: Vec<(Platform, NodeId, ImageMeta)>,
    /// The Dockerfile lines and stage of each node a step made (and of
    /// each stage's base image), outside the ops so moving a line keeps
    /// every cache key.
    pub sources: SourceMap,
}

/// Lowers one plan per target platform into one graph.
pub fn lower(plans: &[Plan], resolver: &dyn ImageResolver, opts: &LowerOptions) -> Result<Lowered> {
    let mut lw = Lowerer {
        graph: Graph::new(),
        resolver,
        opts,
        images: HashMap::new(),
        context: None,
        scratch: None,
        sources: SourceMap::default(),
        current: None,
    };
    let mut targets = Vec::with_capacity(plans.len());
    for plan in plans {
        let (node, meta) = lw.lower_plan(plan)?;
        targets.push((plan.target_platform.clone(), node, meta));
    }
    Ok(Lowered {
        graph: lw.graph,
        targets,
        sources: lw.sources,
    })
}

struct Lowerer<'a> {
    graph: Graph<BuildOp>,
    resolver: &'a dyn ImageResolver,
    opts: &'a LowerOptions,
    images: HashMap<(String, Platform), (ResolvedImage, NodeId)>,
    context: Option<NodeId>,
    scratch: Option<NodeId>,
    sources: SourceMap,
    /// The instruction being lowered: every node [`Lowerer::add`] makes
    /// for it is recorded under it.
    current: Option<Origin>,
}

/// One stage's result while lowering a plan.
#[derive(Clone)]
struct Done {
    node: NodeId,
    meta: ImageMeta,
}

impl Lowerer<'_> {
    fn lower_plan(&mut self, plan: &Plan) -> Result<(NodeId, ImageMeta)> {
        let multi = plan.stages.len() > 1;
        let mut done: HashMap<usize, Done> = HashMap::new();
        for stage in &plan.stages {
            let d = self.lower_stage(plan, stage, multi, &done)?;
            done.insert(stage.index, d);
        }
        let target = plan
            .target_stage()
            .and_then(|s| done.get(&s.index))
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Plan, "the plan has no target stage"))?;
        Ok((target.node, target.meta))
    }

    /// Adds a node for the instruction being lowered, recording where it
    /// came from.
    fn add(&mut self, op: BuildOp, inputs: &[NodeId]) -> NodeId {
        let node = self.graph.add(op, inputs);
        if let Some(origin) = &self.current {
            self.sources.record(node, origin.clone());
        }
        node
    }

    fn scratch(&mut self) -> NodeId {
        *self
            .scratch
            .get_or_insert_with(|| self.graph.add(BuildOp::Scratch, &[]))
    }

    fn context(&mut self) -> NodeId {
        if let Some(c) = self.context {
            return c;
        }
        let c = self.graph.add(
            BuildOp::Context {
                name: MAIN_CONTEXT.into(),
                exclude: self.opts.context_excludes.clone(),
            },
            &[],
        );
        self.context = Some(c);
        c
    }

    fn image(&mut self, reference: &str, platform: &Platform) -> Result<(ResolvedImage, NodeId)> {
        let key = (reference.to_string(), platform.clone());
        if let Some(hit) = self.images.get(&key) {
            return Ok(hit.clone());
        }
        let resolved = self.resolver.resolve(reference, platform)?;
        let node = self.graph.add(
            BuildOp::Image {
                reference: resolved.reference.clone(),
                platform: platform.clone(),
                manifest: Some(resolved.manifest.clone()),
            },
            &[],
        );
        self.images.insert(key, (resolved.clone(), node));
        Ok((resolved, node))
    }

    /// The node a `--from`/`from=` source stands for.
    fn source(
        &mut self,
        src: &Source,
        platform: &Platform,
        done: &HashMap<usize, Done>,
    ) -> Result<NodeId> {
        match src {
            Source::Stage { index } => done.get(index).map(|d| d.node).ok_or_else(|| {
                Error::new(
                    ErrorKind::Plan,
                    format!("stage {index} is used before it is built"),
                )
            }),
            Source::Image { reference } => Ok(self.image(reference, platform)?.1),
            Source::Context { name } => Ok(self.named_context(name)),
        }
    }

    /// The node of the `--build-context` folder `key`.
    fn named_context(&mut self, key: &str) -> NodeId {
        let exclude = self
            .opts
            .named_contexts
            .get(key)
            .cloned()
            .unwrap_or_default();
        self.graph.add(
            BuildOp::Context {
                name: named_context_id(key),
                exclude,
            },
            &[],
        )
    }

    fn lower_stage(
        &mut self,
        plan: &Plan,
        stage: &Stage,
        multi: bool,
        done: &HashMap<usize, Done>,
    ) -> Result<Done> {
        let platform = stage
            .platform
            .clone()
            .unwrap_or_else(|| plan.target_platform.clone());
        let (mut state, mut history, base, mut author) = match &stage.base {
            Base::Scratch => (self.scratch(), Vec::new(), None, None),
            Base::Context { name } => {
                // The folder's files become the stage's root filesystem.
                let src = self.named_context(name);
                let scratch = self.scratch();
                let node = self.add(
                    BuildOp::File(FileOp {
                        actions: vec![FileAction::Copy {
                            source: 1,
                            paths: vec![".".into()],
                            dest: "/".into(),
                            chown: None,
                            chmod: None,
                            chmod_symbolic: None,
                            parents: false,
                            exclude: Vec::new(),
                            unpack: false,
                        }],
                        display: format!("[context {name}] load"),
                    }),
                    &[scratch, src],
                );
                (node, Vec::new(), None, None)
            }
            Base::Image { reference } => {
                let (img, node) = self.image(reference, &platform)?;
                self.sources
                    .record(node, origin_of(stage, stage.location.line, 0));
                (node, Vec::new(), Some(img.config), None)
            }
            Base::Stage { index } => {
                let d = done.get(index).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Plan,
                        format!("stage {index} is used before it is built"),
                    )
                    .at(stage.location)
                })?;
                (
                    d.node,
                    d.meta.history.clone(),
                    d.meta.base.clone(),
                    d.meta.author.clone(),
                )
            }
        };
        history.extend(stage.history.iter().cloned());
        if stage.author.is_some() {
            author = stage.author.clone();
        }

        let total = 1 + stage
            .steps
            .iter()
            .filter(|s| !matches!(s.op, StepOp::Config))
            .count();
        let width = total.to_string().len();
        let mut prefix = String::new();
        if self.opts.show_platform {
            prefix.push_str(&platform.to_string());
            prefix.push(' ');
        }
        if multi {
            match &stage.name {
                Some(n) => prefix.push_str(n),
                None => prefix.push_str(&format!("stage-{}", stage.index)),
            }
            prefix.push(' ');
        }
        let mut n = 1;
        let sp = platform.clone();
        for step in &stage.steps {
            if matches!(step.op, StepOp::Config) {
                continue;
            }
            n += 1;
            let display = format!(
                "[{prefix}{n:>width$}/{total}] {}",
                first_line(&step.original)
            );
            // ONBUILD triggers were written elsewhere: they are shown at
            // the FROM line that pulled them in.
            self.current = Some(if step.onbuild {
                origin_of(stage, stage.location.line, 0)
            } else {
                let span = step.instruction.span;
                origin_of(stage, span.start_line, span.end_line)
            });
            let at = |e: Error| {
                if e.location.is_none() {
                    e.at(step.location)
                } else {
                    e
                }
            };
            match &step.op {
                StepOp::Config => {}
                StepOp::Workdir { path } => {
                    let op = FileOp {
                        actions: vec![FileAction::Mkdir {
                            path: path.clone(),
                            mode: 0o755,
                            parents: true,
                            chown: non_empty(&step.user),
                            timestamp: self.opts.epoch,
                        }],
                        display,
                    };
                    state = self.add(BuildOp::File(op), &[state]);
                }
                StepOp::Run {
                    argv,
                    script,
                    mounts,
                    network,
                    security,
                    ..
                } => {
                    let mut inputs = vec![state];
                    let mut exec_mounts = Vec::with_capacity(mounts.len() + 1);
                    for m in mounts {
                        let mount = self
                            .exec_mount(
                                &m.mount,
                                m.from.as_ref(),
                                &step.workdir,
                                &platform,
                                done,
                                &mut inputs,
                            )
                            .map_err(at)?;
                        exec_mounts.push(mount);
                    }
                    if let Some(s) = script {
                        exec_mounts.push(ExecMount::File {
                            target: format!("/dev/pipes/{}", s.name),
                            data: s.data.clone(),
                            mode: 0o755,
                        });
                    }
                    let exec = Exec {
                        argv: argv.clone(),
                        env: step.run_env.clone(),
                        cwd: step.workdir.clone(),
                        user: step.user.clone(),
                        network: match network {
                            instructions::NetworkMode::Default => ops::Network::Default,
                            instructions::NetworkMode::None => ops::Network::None,
                            instructions::NetworkMode::Host => ops::Network::Host,
                        },
                        insecure: *security == instructions::Security::Insecure,
                        mounts: exec_mounts,
                        platform: sp.clone(),
                        resources: self.opts.resources.clone(),
                        display,
                    };
                    state = self.add(BuildOp::Exec(exec), &inputs);
                }
                StepOp::Copy {
                    add,
                    copy,
                    from_source,
                } => {
                    state = self
                        .copy(
                            state,
                            *add,
                            copy,
                            from_source.as_ref(),
                            &step.workdir,
                            &platform,
                            done,
                            display,
                        )
                        .map_err(at)?;
                }
            }
        }
        self.current = None;
        let mut config = serde_json::to_value(&stage.config)
            .map_err(|e| Error::new(ErrorKind::Plan, format!("image config: {e}")))?;
        // BuildKit's empty image (what FROM scratch starts from) has `/` as
        // its working directory, so a scratch chain's config names it.
        if base.is_none() {
            if let Some(obj) = config.as_object_mut() {
                obj.entry("WorkingDir")
                    .or_insert_with(|| serde_json::Value::String("/".into()));
            }
        }
        Ok(Done {
            node: state,
            meta: ImageMeta {
                config,
                history,
                base,
                author,
            },
        })
    }

    fn exec_mount(
        &mut self,
        m: &Mount,
        from: Option<&Source>,
        workdir: &str,
        platform: &Platform,
        done: &HashMap<usize, Done>,
        inputs: &mut Vec<NodeId>,
    ) -> Result<ExecMount> {
        let written = m.target.clone().unwrap_or_default();
        let invalid = |msg: String| Error::new(ErrorKind::InvalidArgument, msg);
        let secret_like = matches!(m.kind, MountType::Secret | MountType::Ssh);
        if written.is_empty() && !secret_like {
            return Err(invalid("mount target is required".into()));
        }
        let target = if written.is_empty() || written.starts_with('/') {
            written.clone()
        } else if secret_like {
            format!("/{written}")
        } else {
            // A relative bind, cache or tmpfs target is beneath the
            // working directory, as BuildKit's dispatchRunMounts joins it.
            clean_source(&format!("{workdir}/{written}"))
        };
        let mut input_of = |me: &mut Self, from: Option<&Source>| -> Result<usize> {
            let node = match from {
                Some(src) => me.source(src, platform, done)?,
                None => me.context(),
            };
            inputs.push(node);
            Ok(inputs.len() - 1)
        };
        Ok(match m.kind {
            MountType::Bind => {
                let input = input_of(self, from)?;
                ExecMount::Bind {
                    input,
                    source: clean_source(m.source.as_deref().unwrap_or("/")),
                    target,
                    readonly: m.readonly,
                }
            }
            MountType::Cache => {
                let source = clean_source(m.source.as_deref().unwrap_or("/"));
                // Ownership options make the cache's first folder, as
                // BuildKit's setCacheUIDGID, only when no `source` is
                // given; otherwise they are ignored.
                let owned =
                    source == "/" && (m.uid.is_some() || m.gid.is_some() || m.mode.is_some());
                let seed = match from {
                    Some(src) => {
                        let input = input_of(self, Some(src))?;
                        Some((input, source))
                    }
                    None => None,
                };
                ExecMount::Cache {
                    // BuildKit's default id is the target as written,
                    // cleaned (path.Clean): `/a/b/` and `/a/b` share one
                    // cache, a relative `c` is `c` whatever the workdir.
                    id: m
                        .id
                        .clone()
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| clean_id(&written)),
                    target,
                    sharing: match m.sharing {
                        Some(instructions::Sharing::Private) => ops::Sharing::Private,
                        Some(instructions::Sharing::Locked) => ops::Sharing::Locked,
                        _ => ops::Sharing::Shared,
                    },
                    readonly: m.readonly,
                    uid: m.uid.filter(|_| owned).unwrap_or(0),
                    gid: m.gid.filter(|_| owned).unwrap_or(0),
                    mode: m.mode.filter(|_| owned).unwrap_or(0o755),
                    owned,
                    from: seed,
                }
            }
            MountType::Tmpfs => ExecMount::Tmpfs {
                target,
                size: m.size,
            },
            MountType::Secret => {
                let id =
                    m.id.clone()
                        .filter(|i| !i.is_empty())
                        .or_else(|| {
                            target
                                .rsplit('/')
                                .next()
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                        })
                        .ok_or_else(|| invalid("secret mount needs an id or a target".into()))?;
                // With `env=` and no target the secret is only the
                // variable, as BuildKit's (convert_secrets.go).
                let target = if target.is_empty() && m.env.is_none() {
                    format!("/run/secrets/{id}")
                } else {
                    target
                };
                ExecMount::Secret {
                    id,
                    target,
                    required: m.required,
                    mode: m.mode.unwrap_or(0o400),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    env: m.env.clone().filter(|e| !e.is_empty()),
                }
            }
            MountType::Ssh => ExecMount::Ssh {
                id: m
                    .id
                    .clone()
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| "default".into()),
                target: if target.is_empty() {
                    "/run/buildkit/ssh_agent.0".into()
                } else {
                    target
                },
                required: m.required,
                mode: m.mode.unwrap_or(0o600),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        state: NodeId,
        add: bool,
        copy: &instructions::Copy,
        from: Option<&Source>,
        workdir: &str,
        platform: &Platform,
        done: &HashMap<usize, Done>,
        display: String,
    ) -> Result<NodeId> {
        let mut local = Vec::new();
        let mut urls = Vec::new();
        let mut gits = Vec::new();
        for s in &copy.sources {
            if is_git(s) {
                if !add {
                    // BuildKit's dispatchCopy wording.
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "source can't be a git ref for COPY",
                    ));
                }
                gits.push(s.clone());
                continue;
            }
            if is_http(s) {
                if !add {
                    // BuildKit's dispatchCopy wording.
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "source can't be a URL for COPY",
                    ));
                }
                urls.push(s.clone());
            } else {
                local.push(s.clone());
            }
        }
        if let Some(c) = &copy.checksum {
            if !local.is_empty() || !copy.inline_sources.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "checksum can't be specified for non-HTTP(S) sources",
                ));
            }
            if gits.is_empty() {
                check_digest(c)?;
            } else if !urls.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "checksum can't be specified for both HTTP(S) and git sources",
                ));
            }
        }
        // Octal or symbolic, as BuildKit's dispatchCopy reads it; an empty
        // value is no --chmod at all.
        let (chmod, chmod_symbolic) = match copy.chmod.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => match Chmod::parse(m)
                .map_err(|e| Error::new(ErrorKind::InvalidArgument, e.to_string()))?
            {
                Chmod::Octal(v) => (Some(v), None),
                Chmod::Symbolic(_) => (None, Some(m.to_string())),
            },
            None => (None, None),
        };
        let dest = dest_path(workdir, &copy.dest);
        let all = copy.sources.len() + copy.inline_sources.len();
        if !urls.is_empty() && all > 1 && !dest.ends_with('/') {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "When using ADD with more than one source file, the destination must be a directory and end with a /",
            ));
        }
        let chown = copy.chown.clone().filter(|c| !c.is_empty());
        // With --link the copy lands on an empty filesystem, merged on top
        // afterwards, so its result does not depend on the state below.
        // BuildKit links only copies without --chmod; with one, it copies
        // onto the state as a plain COPY does.
        let link = copy.link && chmod.is_none() && chmod_symbolic.is_none();
        let base = if link { self.scratch() } else { state };
        let mut inputs = vec![base];
        let mut actions = Vec::new();
        if !local.is_empty() {
            let src = match from {
                Some(s) => self.source(s, platform, done)?,
                None => self.context(),
            };
            inputs.push(src);
            actions.push(FileAction::Copy {
                source: inputs.len() - 1,
                paths: local,
                dest: dest.clone(),
                chown: chown.clone(),
                chmod,
                chmod_symbolic: chmod_symbolic.clone(),
                parents: copy.parents,
                exclude: copy.excludes.clone(),
                unpack: add && copy.unpack.unwrap_or(true),
            });
        }
        for url in urls {
            // As BuildKit: the file is named after the URL's path, never
            // after Content-Disposition; a URL's archive stays a file unless
            // `--unpack=true`.
            let filename = url_filename(&url);
            let http = self.add(
                BuildOp::Http {
                    url,
                    checksum: copy.checksum.clone(),
                    filename: filename.clone(),
                },
                &[],
            );
            inputs.push(http);
            actions.push(FileAction::Copy {
                source: inputs.len() - 1,
                paths: vec![filename],
                dest: dest.clone(),
                chown: chown.clone(),
                chmod,
                chmod_symbolic: chmod_symbolic.clone(),
                parents: false,
                exclude: Vec::new(),
                unpack: copy.unpack == Some(true),
            });
        }
        for url in gits {
            let git = self.add(
                BuildOp::Git {
                    url,
                    keep_git_dir: copy.keep_git_dir.unwrap_or(false),
                    checksum: copy.checksum.clone(),
                },
                &[],
            );
            inputs.push(git);
            actions.push(FileAction::Copy {
                source: inputs.len() - 1,
                paths: vec![".".into()],
                dest: dest.clone(),
                chown: chown.clone(),
                chmod,
                chmod_symbolic: chmod_symbolic.clone(),
                parents: false,
                exclude: copy.excludes.clone(),
                unpack: false,
            });
        }
        for inline in &copy.inline_sources {
            let name = inline.path.trim_start_matches('/').to_string();
            let scratch = self.scratch();
            let doc = self.add(
                BuildOp::File(FileOp {
                    actions: vec![FileAction::Mkfile {
                        path: format!("/{name}"),
                        data: inline.data.clone().into_bytes(),
                        mode: 0o644,
                        chown: None,
                    }],
                    display: "preparing inline document".into(),
                }),
                &[scratch],
            );
            inputs.push(doc);
            actions.push(FileAction::Copy {
                source: inputs.len() - 1,
                paths: vec![name],
                dest: dest.clone(),
                chown: chown.clone(),
                chmod,
                chmod_symbolic: chmod_symbolic.clone(),
                parents: false,
                exclude: Vec::new(),
                unpack: false,
            });
        }
        let copied = self.add(BuildOp::File(FileOp { actions, display }), &inputs);
        Ok(if link {
            self.add(BuildOp::Merge, &[state, copied])
        } else {
            copied
        })
    }
}

/// A node's origin: lines `start..=end` (`end` below `start` means the
/// one line) of `stage`.
fn origin_of(stage: &Stage, start: usize, end: usize) -> Origin {
    Origin {
        stage_index: stage.index,
        stage_name: stage.name.clone(),
        lines: LineRange {
            start: start.max(1),
            end: end.max(start.max(1)),
        },
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// An `http://` or `https://` source that is not a git repository.
fn is_http(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && !is_git(s)
}

/// A git source, as BuildKit recognises them (`git@…`, `git://…`, or a URL
/// whose path ends in `.git`, with an optional `#ref:subdir`).
fn is_git(s: &str) -> bool {
    if s.starts_with("git@") || s.starts_with("git://") || s.starts_with("ssh://") {
        return true;
    }
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return false;
    }
    let path = s.split(['#', '?']).next().unwrap_or("");
    path.trim_end_matches('/').ends_with(".git")
}

/// The name BuildKit gives a downloaded file: the last element of the URL's
/// (percent-decoded) path, `__unnamed__` when it has none.
pub fn url_filename(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['#', '?']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let base = percent_decode(base);
    if base.is_empty() || base == "." || base == ".." {
        "__unnamed__".into()
    } else {
        base
    }
}

/// A URL path element with its `%XX` escapes decoded (a `%` not followed by
/// two hex digits stays as it is); bytes that are not UTF-8 are replaced
/// rather than refused, since the result only names a file.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `--checksum` must be a digest kiln can verify: `sha256:`, `sha384:` or
/// `sha512:` and that many lower-case hex digits.
fn check_digest(c: &str) -> Result<()> {
    let ok = match c.split_once(':') {
        Some(("sha256", h)) => h.len() == 64,
        Some(("sha384", h)) => h.len() == 96,
        Some(("sha512", h)) => h.len() == 128,
        _ => false,
    } && c.split_once(':').is_some_and(|(_, h)| {
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("invalid checksum digest format: {c}"),
        ))
    }
}

/// A mount source made absolute inside its input (`.` and `` are the root).
fn clean_source(s: &str) -> String {
    clean(&format!("/{s}"))
}

/// A path cleaned as Go's `path.Clean`, relative or absolute as written:
/// the default id of a cache mount.
fn clean_id(s: &str) -> String {
    clean(s)
}

/// COPY's destination as BuildKit computes it: relative to the working
/// directory, cleaned, and keeping a trailing `/` (also implied by `.` and
/// an empty destination) that tells the copy it names a directory.
pub fn dest_path(workdir: &str, dest: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{workdir}/{dest}")
    };
    let mut cleaned = clean_source(&joined);
    let dir = dest.is_empty() || dest == "." || dest.ends_with('/') || dest.ends_with("/.");
    if dir && !cleaned.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_ids_are_cleaned_as_go_path_clean() {
        for (raw, want) in [
            ("/a/b/", "/a/b"),
            ("/a/./b//c/..", "/a/b"),
            ("c", "c"),
            ("./c/", "c"),
            ("../c", "../c"),
            ("/../c", "/c"),
            ("c/..", "."),
        ] {
            assert_eq!(super::clean_id(raw), want, "{raw}");
        }
    }

    use super::*;

    #[test]
    fn dest_paths_follow_buildkit() {
        assert_eq!(dest_path("/", "/dst/"), "/dst/");
        assert_eq!(dest_path("/src", "."), "/src/");
        assert_eq!(dest_path("/src", "a/../b"), "/src/b");
        assert_eq!(dest_path("/", "x"), "/x");
        assert_eq!(dest_path("/w", ""), "/w/");
        assert_eq!(dest_path("/w", "/"), "/");
    }

    #[test]
    fn url_file_names_follow_buildkit() {
        assert_eq!(url_filename("http://h:1/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(url_filename("https://h/a/b.txt?x=1#f"), "b.txt");
        assert_eq!(url_filename("https://h/dir/"), "dir");
        assert_eq!(url_filename("https://h"), "__unnamed__");
        assert_eq!(url_filename("https://h/"), "__unnamed__");
        assert_eq!(url_filename("https://h/a%20b"), "a b");
        assert!(is_git("https://github.com/x/y.git#main"));
        assert!(!is_http("git@github.com:x/y"));
        assert!(is_http("http://h/f.txt"));
    }

    #[test]
    fn mount_sources_are_rooted() {
        assert_eq!(clean_source("."), "/");
        assert_eq!(clean_source("data.txt"), "/data.txt");
        assert_eq!(clean_source("../a/./b"), "/a/b");
    }

    /// How many layers the image of `node` has, given busybox's one.
    fn layers(g: &Graph<BuildOp>, node: NodeId) -> usize {
        match g.op(node) {
            BuildOp::Image { .. } => 1,
            BuildOp::Scratch
            | BuildOp::Context { .. }
            | BuildOp::Http { .. }
            | BuildOp::Git { .. } => 0,
            BuildOp::Merge => g.inputs(node).iter().map(|&i| layers(g, i)).sum(),
            BuildOp::Exec(_) | BuildOp::File(_) => layers(g, g.inputs(node)[0]) + 1,
        }
    }

    fn busybox(reference: &str, _: &Platform) -> Result<ResolvedImage> {
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}"),
            manifest: "sha256:0000".into(),
            config: serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Cmd": ["sh"], "Env": [format!("PATH={}", crate::plan::DEFAULT_PATH)]},
            }),
        })
    }

    #[test]
    fn link_with_chmod_is_a_plain_copy_as_in_buildkit() {
        let merged = |df: &str| {
            let parsed = crate::parser::parse(df).unwrap();
            let plan = crate::plan::plan(&parsed, &Default::default()).unwrap();
            let l = lower(&[plan], &busybox, &LowerOptions::default()).unwrap();
            matches!(l.graph.op(l.targets[0].1), BuildOp::Merge)
        };
        assert!(merged("FROM busybox\nCOPY --link a /a\n"));
        assert!(!merged("FROM busybox\nCOPY --link --chmod=755 a /a\n"));
        assert!(!merged("FROM busybox\nCOPY --link --chmod=+x a /a\n"));
    }

    /// Every shared build case lowers, and the chain of layer-making ops
    /// to its target has as many layers as BuildKit's image of it.
    #[test]
    fn shared_cases_lower_to_buildkits_layer_counts() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/cases");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut checked = 0;
        for e in entries.flatten() {
            let case = e.path();
            let Ok(df) = std::fs::read_to_string(case.join("Dockerfile")) else {
                continue;
            };
            let name = case
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let meta: serde_json::Value = std::fs::read(case.join("case.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let mut opts = crate::plan::PlanOptions::default();
            if let Some(args) = meta.get("args").and_then(|a| a.as_object()) {
                for (k, v) in args {
                    opts.build_args
                        .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            opts.target = meta
                .get("target")
                .and_then(|t| t.as_str())
                .map(String::from);
            let parsed = match crate::parser::parse(&df) {
                Ok(p) => p,
                Err(_) if name.starts_with("error-") => continue,
                Err(e) => panic!("{name}: {e}"),
            };
            let resolver = |r: &str, p: &Platform| Ok(busybox(r, p)?.image_config());
            let plan = match crate::plan::plan_with_resolver(&parsed, &opts, &resolver) {
                Ok(p) => p,
                Err(_) if name.starts_with("error-") => continue,
                Err(e) => panic!("{name}: {e}"),
            };
            let lowered = lower(&[plan], &busybox, &LowerOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let (_, target, meta_out) = &lowered.targets[0];
            if let Some(want) = std::fs::read(case.join("expected.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            {
                let want_layers = want["layers"].as_u64().unwrap_or(0) as usize;
                assert_eq!(
                    layers(&lowered.graph, *target),
                    want_layers,
                    "{name}: layers"
                );
                // Config fields the planner leaves must be what BuildKit wrote.
                for (k, v) in want["config"].as_object().into_iter().flatten() {
                    assert_eq!(meta_out.config.get(k), Some(v), "{name}: config {k}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} cases checked");
    }
}

//! Typed instructions built from parser nodes.
//!
//! The parser only knows how BuildKit splits each line into words; this module
//! knows what the words mean: which flags an instruction takes and of what
//! kind, exec versus shell form, key/value pairs, heredoc sources. Values are
//! kept exactly as written (quotes included where BuildKit keeps them) because
//! word expansion depends on the variables in force at each step, which only
//! the planner knows. Checks that BuildKit makes at this stage (unknown
//! instructions and flags, argument counts, HEALTHCHECK durations, ONBUILD
//! triggers) are made here, with the location of the offending instruction.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Location, Result};
use crate::parser::{Dockerfile, Node, Span};

/// One typed instruction with where it came from, so every later error
/// (expansion, planning, building) can still point at the source line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// The instruction as written, continuations joined (BuildKit's
    /// "original"), used for ONBUILD triggers and progress names.
    pub original: String,
    pub span: Span,
    pub command: Command,
}

/// Every instruction of the current Dockerfile syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    /// Starts a stage.
    From(From),
    /// Runs a command in the stage's filesystem: makes a layer.
    Run(Run),
    /// The image's default arguments (config only).
    Cmd(CmdLine),
    /// The image's entry point (config only; resets an inherited CMD).
    Entrypoint(CmdLine),
    /// The shell for later shell forms (JSON form only, as BuildKit).
    Shell {
        /// The shell's argv, the command is appended to it.
        shell: Vec<String>,
    },
    /// Copies from the context, a stage or an image: makes a layer.
    Copy(Copy),
    /// COPY plus URLs, git and archive extraction.
    Add(Copy),
    /// Sets image environment variables (also visible to later words).
    Env {
        /// The pairs, values as written.
        pairs: Vec<KeyValue>,
    },
    /// Sets image labels.
    Label {
        /// The pairs, values as written.
        pairs: Vec<KeyValue>,
    },
    /// Declares build arguments (global before the first FROM).
    Arg {
        /// The declarations in order.
        args: Vec<ArgDecl>,
    },
    /// Sets (and creates) the working directory.
    Workdir {
        /// As written, relative to the previous WORKDIR when not absolute.
        path: String,
    },
    /// Sets the user later RUNs and the container run as.
    User {
        /// `name`, `uid`, `name:group` or `uid:gid`, as written.
        user: String,
    },
    /// Records ports the image listens on.
    Expose {
        /// As written, sorted as BuildKit sorts them before expansion.
        ports: Vec<String>,
    },
    /// Records mount points for anonymous volumes.
    Volume {
        /// As written (JSON or whitespace form), trimmed.
        paths: Vec<String>,
    },
    /// The signal that stops the container.
    StopSignal {
        /// A name (`SIGTERM`) or number, as written.
        signal: String,
    },
    /// How the runtime checks the container's health.
    Healthcheck(Healthcheck),
    /// A trigger stored in the image for builds based on it.
    Onbuild(Onbuild),
    /// Deprecated author field (a warning).
    Maintainer {
        /// The author, the rest of the line.
        name: String,
    },
}

/// `FROM [--platform=P] image [AS name]`: the start of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The base as written (expanded later with the global ARGs).
    pub image: String,
    /// The stage name, lower-cased as BuildKit stores it.
    pub name: Option<String>,
    pub platform: Option<String>,
}

/// A command line: exec form keeps the JSON words, shell form one string
/// that the stage's SHELL will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "args", rename_all = "lowercase")]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

/// CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmdLine {
    pub cmd: CommandLine,
}

/// An inline file of a RUN (`RUN <<EOF`), body as the parser left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    pub name: String,
    pub data: String,
    pub chomp: bool,
    pub expand: bool,
    pub fd: Option<u32>,
}

/// RUN's `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Default,
    None,
    Host,
}

/// RUN's `--security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

/// `RUN [--mount=…]… [--network=…] [--security=…] command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub cmd: CommandLine,
    pub files: Vec<InlineFile>,
    /// The `--mount` values as written: they may use variables, so they are
    /// typed (into [`Mount`]) by the planner once the variables are known.
    pub mounts: Vec<String>,
    /// The mounts typed without expansion, when none of them uses a
    /// variable; for `kiln parse --format json` and early error reporting.
    pub typed_mounts: Option<Vec<Mount>>,
    pub network: NetworkMode,
    pub security: Security,
}

/// The kinds of `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    #[default]
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `RUN --mount`, with BuildKit's defaults applied (read-only unless a
/// cache or tmpfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub readonly: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub required: bool,
    /// For secrets: the environment variable to expose the secret as.
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A source of COPY/ADD given inline as a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineSource {
    /// The heredoc name: the file name it gets under the destination.
    pub path: String,
    pub data: String,
    pub expand: bool,
}

/// COPY and ADD (the flags one of them does not take stay at their
/// defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Copy {
    pub sources: Vec<String>,
    pub inline_sources: Vec<InlineSource>,
    pub dest: String,
    /// COPY only: a stage name, index or image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// COPY only.
    pub parents: bool,
    pub excludes: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: Option<bool>,
    /// ADD only.
    pub unpack: Option<bool>,
    /// True when written as a JSON array.
    pub json: bool,
}

/// One pair of ENV or LABEL, value as written (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// The legacy `ENV key value` form (no `=`), which BuildKit lints.
    pub legacy: bool,
}

/// One ARG declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub key: String,
    pub default: Option<String>,
}

/// HEALTHCHECK, durations in nanoseconds (0: unset, inherit Docker's
/// defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", cmd]`, as the image config
    /// stores it.
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

/// ONBUILD: the trigger text stored in the image, and the trigger typed
/// when it types cleanly (BuildKit checks it only when it fires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Onbuild {
    pub expression: String,
    pub trigger: Option<Box<Instruction>>,
}

/// Something worth telling the user that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub message: String,
    pub location: Location,
}

/// The typed instructions of a whole file, plus the warnings typing raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instructions {
    pub escape: char,
    pub instructions: Vec<Instruction>,
    pub warnings: Vec<Warning>,
}

impl Instruction {
    /// The instruction's keyword as Docker spells it in messages.
    pub fn keyword(&self) -> &'static str {
        match &self.command {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Shell { .. } => "SHELL",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Env { .. } => "ENV",
            Command::Label { .. } => "LABEL",
            Command::Arg { .. } => "ARG",
            Command::Workdir { .. } => "WORKDIR",
            Command::User { .. } => "USER",
            Command::Expose { .. } => "EXPOSE",
            Command::Volume { .. } => "VOLUME",
            Command::StopSignal { .. } => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer { .. } => "MAINTAINER",
        }
    }

    /// Where errors about this instruction point.
    pub fn location(&self) -> Location {
        span_location(&self.span, &self.original)
    }
}

/// Types every node of a parsed Dockerfile; the first bad instruction is
/// the error.
pub fn from_dockerfile(df: &Dockerfile) -> Result<Instructions> {
    let mut instructions = Vec::with_capacity(df.nodes.len());
    let mut warnings = Vec::new();
    for node in &df.nodes {
        let ins = from_node(node)?;
        if let Command::Maintainer { .. } = ins.command {
            warnings.push(Warning {
                message: "MAINTAINER instruction is deprecated in favor of using label".into(),
                location: ins.location(),
            });
        }
        instructions.push(ins);
    }
    Ok(Instructions {
        escape: df.directives.escape,
        instructions,
        warnings,
    })
}

/// Types one node.
pub fn from_node(node: &Node) -> Result<Instruction> {
    let command = command_from_node(node)?;
    Ok(Instruction {
        original: node.original.clone(),
        span: node.span,
        command,
    })
}

/// The location of an instruction: its first line, underlining its text on
/// that line.
pub(crate) fn span_location(span: &Span, original: &str) -> Location {
    let first_line = original.split('\n').next().unwrap_or("");
    let len = if span.len == 0 {
        first_line.len()
    } else {
        first_line.len().min(span.len)
    };
    Location {
        line: span.start_line.max(1),
        column: span.start_col.max(1),
        offset: span.offset,
        len: len.max(1),
    }
}

fn err(node: &Node, kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg).at(span_location(&node.span, &node.original))
}

/// An error about one flag: points at the flag when it can be found on the
/// instruction's first line.
fn flag_err(node: &Node, flag: &str, kind: ErrorKind, msg: impl Into<String>) -> Error {
    let first_line = node.original.split('\n').next().unwrap_or("");
    let needle = flag.split('=').next().unwrap_or(flag);
    if !needle.is_empty() && node.span.start_line == node.span.end_line {
        if let Some(idx) = first_line.find(needle) {
            let col = node.span.start_col + first_line[..idx].chars().count();
            let len = first_line[idx..]
                .split_whitespace()
                .next()
                .map(str::len)
                .unwrap_or(needle.len());
            return Error::new(kind, msg).at(Location {
                line: node.span.start_line.max(1),
                column: col.max(1),
                offset: node.span.offset + idx,
                len: len.max(1),
            });
        }
    }
    err(node, kind, msg)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    String,
    Strings,
}

/// The values of an instruction's flags, BuildKit's BFlags rules.
#[derive(Default)]
struct Flags {
    bools: BTreeMap<&'static str, bool>,
    strings: BTreeMap<&'static str, String>,
    lists: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    fn bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }
    fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).cloned()
    }
    fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
}

fn parse_flags(node: &Node, defs: &[(&'static str, FlagKind)]) -> Result<Flags> {
    let mut out = Flags::default();
    for raw in &node.flags {
        if raw == "--" {
            break;
        }
        let Some(rest) = raw.strip_prefix("--") else {
            return Err(flag_err(
                node,
                raw,
                ErrorKind::InvalidArgument,
                format!("arg should start with -- : {raw}"),
            ));
        };
        let (name, value) = match rest.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (rest, None),
        };
        let flag_name = format!("--{name}");
        let Some(&(key, kind)) = defs.iter().find(|(n, _)| *n == name) else {
            return Err(flag_err(
                node,
                raw,
                ErrorKind::UnknownFlag,
                format!("unknown flag: {flag_name}"),
            ));
        };
        let seen = out.bools.contains_key(key) || out.strings.contains_key(key);
        if seen && kind != FlagKind::Strings {
            return Err(flag_err(
                node,
                raw,
                ErrorKind::InvalidArgument,
                format!("duplicate flag specified: {flag_name}"),
            ));
        }
        match kind {
            FlagKind::Bool => {
                if value == Some("") {
                    return Err(flag_err(
                        node,
                        raw,
                        ErrorKind::InvalidArgument,
                        format!("missing a value on flag: {flag_name}"),
                    ));
                }
                let b = match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(_) => {
                        return Err(flag_err(
                            node,
                            raw,
                            ErrorKind::InvalidArgument,
                            format!(
                                "expecting boolean value for flag {flag_name}, not: {}",
                                value.unwrap_or("")
                            ),
                        ))
                    }
                };
                out.bools.insert(key, b);
            }
            FlagKind::String | FlagKind::Strings => {
                let Some(v) = value else {
                    return Err(flag_err(
                        node,
                        raw,
                        ErrorKind::InvalidArgument,
                        format!("missing a value on flag: {flag_name}"),
                    ));
                };
                if kind == FlagKind::String {
                    out.strings.insert(key, v.to_string());
                } else {
                    out.lists.entry(key).or_default().push(v.to_string());
                }
            }
        }
    }
    Ok(out)
}

fn exactly_one(node: &Node, name: &str) -> Result<String> {
    if node.args.len() != 1 {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            format!("{name} requires exactly one argument"),
        ));
    }
    Ok(node.args[0].clone())
}

fn at_least_one(node: &Node, name: &str) -> Result<()> {
    if node.args.is_empty() {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            format!("{name} requires at least one argument"),
        ));
    }
    Ok(())
}

fn command_line(node: &Node, args: &[String]) -> CommandLine {
    if node.json {
        CommandLine::Exec(args.to_vec())
    } else {
        CommandLine::Shell(args.join(" "))
    }
}

fn kvps(node: &Node, name: &str) -> Result<Vec<KeyValue>> {
    at_least_one(node, name)?;
    if !node.args.len().is_multiple_of(3) {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            format!("Bad input to {name}, too many arguments"),
        ));
    }
    let mut out = Vec::with_capacity(node.args.len() / 3);
    for triple in node.args.chunks(3) {
        if triple[0].is_empty() {
            return Err(err(
                node,
                ErrorKind::InvalidArgument,
                format!("{name} names can not be blank"),
            ));
        }
        out.push(KeyValue {
            key: triple[0].clone(),
            value: triple[1].clone(),
            legacy: triple[2].is_empty(),
        });
    }
    Ok(out)
}

/// A word that names a heredoc (`<<EOF`, `<<-"EOF"`, `3<<IN`): its name.
pub(crate) fn heredoc_name(word: &str) -> Option<String> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name: String = rest.chars().filter(|c| *c != '"' && *c != '\'').collect();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return None;
    }
    Some(name)
}

fn command_from_node(node: &Node) -> Result<Command> {
    let no_flags = |node: &Node| parse_flags(node, &[]).map(|_| ());
    Ok(match node.keyword.as_str() {
        "from" => {
            let flags = parse_flags(node, &[("platform", FlagKind::String)])?;
            let name = match node.args.len() {
                3 if node.args[1].eq_ignore_ascii_case("as") => {
                    let name = node.args[2].to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(err(
                            node,
                            ErrorKind::InvalidArgument,
                            format!(
                                "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                                node.args[2]
                            ),
                        ));
                    }
                    Some(name)
                }
                1 => None,
                _ => {
                    return Err(err(
                        node,
                        ErrorKind::InvalidArgument,
                        "FROM requires either one or three arguments",
                    ))
                }
            };
            Command::From(From {
                image: node.args[0].clone(),
                name,
                platform: flags.string("platform"),
            })
        }
        "run" => {
            let flags = parse_flags(
                node,
                &[
                    ("mount", FlagKind::Strings),
                    ("network", FlagKind::String),
                    ("security", FlagKind::String),
                ],
            )?;
            let network = match flags.string("network").as_deref() {
                None | Some("default") => NetworkMode::Default,
                Some("none") => NetworkMode::None,
                Some("host") => NetworkMode::Host,
                Some(other) => {
                    return Err(flag_err(
                        node,
                        "--network",
                        ErrorKind::InvalidArgument,
                        format!("invalid network mode {other:?}"),
                    ))
                }
            };
            let security = match flags.string("security").as_deref() {
                None | Some("sandbox") => Security::Sandbox,
                Some("insecure") => Security::Insecure,
                Some(other) => {
                    return Err(flag_err(
                        node,
                        "--security",
                        ErrorKind::InvalidArgument,
                        format!("security {other:?} is not valid"),
                    ))
                }
            };
            let mounts = flags.list("mount");
            let mut typed = Some(Vec::new());
            for m in &mounts {
                check_mount_syntax(m).map_err(|e| {
                    flag_err(node, "--mount", ErrorKind::InvalidArgument, e.to_string())
                })?;
                if m.contains('$') {
                    typed = None;
                } else if let Some(list) = typed.as_mut() {
                    let mount = parse_mount(m, &mut |s| Ok(s.to_string())).map_err(|e| {
                        flag_err(node, "--mount", ErrorKind::InvalidArgument, e.to_string())
                    })?;
                    list.push(mount);
                }
            }
            let files = node
                .heredocs
                .iter()
                .map(|h| InlineFile {
                    name: h.name.clone(),
                    data: h.content.clone(),
                    chomp: h.chomp,
                    expand: h.expand,
                    fd: h.fd,
                })
                .collect();
            Command::Run(Run {
                cmd: command_line(node, &node.args),
                files,
                mounts,
                typed_mounts: typed,
                network,
                security,
            })
        }
        "cmd" => {
            no_flags(node)?;
            Command::Cmd(CmdLine {
                cmd: command_line(node, &node.args),
            })
        }
        "entrypoint" => {
            no_flags(node)?;
            Command::Entrypoint(CmdLine {
                cmd: command_line(node, &node.args),
            })
        }
        "shell" => {
            no_flags(node)?;
            if node.args.is_empty() || (!node.json && node.args.iter().all(|a| a.trim().is_empty()))
            {
                return Err(err(
                    node,
                    ErrorKind::InvalidArgument,
                    "SHELL requires at least one argument",
                ));
            }
            if !node.json {
                return Err(err(
                    node,
                    ErrorKind::InvalidArgument,
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            Command::Shell {
                shell: node.args.clone(),
            }
        }
        "copy" | "add" => copy_from_node(node)?,
        "env" => {
            no_flags(node)?;
            Command::Env {
                pairs: kvps(node, "ENV")?,
            }
        }
        "label" => {
            no_flags(node)?;
            Command::Label {
                pairs: kvps(node, "LABEL")?,
            }
        }
        "arg" => {
            at_least_one(node, "ARG")?;
            no_flags(node)?;
            let mut args = Vec::with_capacity(node.args.len());
            for a in &node.args {
                match a.split_once('=') {
                    Some(("", _)) => {
                        return Err(err(
                            node,
                            ErrorKind::InvalidArgument,
                            "ARG names can not be blank",
                        ))
                    }
                    Some((k, v)) => args.push(ArgDecl {
                        key: k.to_string(),
                        default: Some(v.to_string()),
                    }),
                    None => args.push(ArgDecl {
                        key: a.clone(),
                        default: None,
                    }),
                }
            }
            Command::Arg { args }
        }
        "workdir" => {
            let path = exactly_one(node, "WORKDIR")?;
            no_flags(node)?;
            Command::Workdir { path }
        }
        "user" => {
            let user = exactly_one(node, "USER")?;
            no_flags(node)?;
            Command::User { user }
        }
        "expose" => {
            at_least_one(node, "EXPOSE")?;
            no_flags(node)?;
            let mut ports = node.args.clone();
            ports.sort();
            Command::Expose { ports }
        }
        "volume" => {
            at_least_one(node, "VOLUME")?;
            no_flags(node)?;
            let mut paths = Vec::with_capacity(node.args.len());
            for v in &node.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(err(
                        node,
                        ErrorKind::InvalidArgument,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                paths.push(v.to_string());
            }
            Command::Volume { paths }
        }
        // BuildKit does not look at STOPSIGNAL's flags at all.
        "stopsignal" => Command::StopSignal {
            signal: exactly_one(node, "STOPSIGNAL")?,
        },
        "healthcheck" => Command::Healthcheck(healthcheck_from_node(node)?),
        "onbuild" => onbuild_from_node(node)?,
        "maintainer" => {
            let name = exactly_one(node, "MAINTAINER")?;
            no_flags(node)?;
            Command::Maintainer { name }
        }
        _ => {
            let word = node
                .original
                .split_whitespace()
                .next()
                .unwrap_or(&node.keyword);
            let shown = if word.eq_ignore_ascii_case(&node.keyword) {
                word.to_string()
            } else {
                node.keyword.to_uppercase()
            };
            let mut e = err(
                node,
                ErrorKind::UnknownInstruction,
                format!("unknown instruction: {shown}"),
            );
            if let Some(loc) = e.location.as_mut() {
                loc.len = shown.len().max(1);
            }
            return Err(e);
        }
    })
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn copy_from_node(node: &Node) -> Result<Command> {
    let is_add = node.keyword == "add";
    let name = if is_add { "ADD" } else { "COPY" };
    if node.args.len() < 2 {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            format!("{name} requires at least two arguments, but only one was provided. Destination could not be determined"),
        ));
    }
    let flags = if is_add {
        parse_flags(
            node,
            &[
                ("chown", FlagKind::String),
                ("chmod", FlagKind::String),
                ("link", FlagKind::Bool),
                ("keep-git-dir", FlagKind::Bool),
                ("checksum", FlagKind::String),
                ("unpack", FlagKind::Bool),
                ("exclude", FlagKind::Strings),
            ],
        )?
    } else {
        parse_flags(
            node,
            &[
                ("chown", FlagKind::String),
                ("from", FlagKind::String),
                ("chmod", FlagKind::String),
                ("link", FlagKind::Bool),
                ("exclude", FlagKind::Strings),
                ("parents", FlagKind::Bool),
            ],
        )?
    };
    let (srcs, dest) = node.args.split_at(node.args.len() - 1);
    let dest = dest[0].clone();
    if !node.json && heredoc_name(&dest).is_some() && !node.heredocs.is_empty() {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            format!("{name} cannot accept a heredoc as a destination"),
        ));
    }
    let mut sources = Vec::new();
    let mut inline_sources = Vec::new();
    for src in srcs {
        match (!node.json).then(|| heredoc_name(src)).flatten() {
            Some(hname) if node.heredocs.iter().any(|h| h.name == hname) => {
                let Some(h) = node.heredocs.iter().find(|h| h.name == hname) else {
                    continue;
                };
                inline_sources.push(InlineSource {
                    path: hname,
                    data: h.content.clone(),
                    expand: h.expand,
                });
            }
            _ => sources.push(src.clone()),
        }
    }
    let copy = Copy {
        sources,
        inline_sources,
        dest,
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        excludes: flags.list("exclude"),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.bool("unpack"),
        json: node.json,
    };
    Ok(if is_add {
        Command::Add(copy)
    } else {
        Command::Copy(copy)
    })
}

fn healthcheck_from_node(node: &Node) -> Result<Healthcheck> {
    if node.args.is_empty() {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            "HEALTHCHECK requires at least one argument",
        ));
    }
    let typ = node.args[0].to_uppercase();
    let rest = &node.args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(err(
                node,
                ErrorKind::InvalidArgument,
                "HEALTHCHECK NONE takes no arguments",
            ));
        }
        parse_flags(node, &[])?;
        return Ok(Healthcheck {
            test: vec!["NONE".into()],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        });
    }
    let flags = parse_flags(
        node,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if typ != "CMD" {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            format!("Unknown type {:?} in HEALTHCHECK (try CMD)", typ),
        ));
    }
    let cmd: Vec<String> = if node.json {
        rest.to_vec()
    } else if rest.is_empty() {
        vec![]
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            "Missing command after HEALTHCHECK CMD",
        ));
    }
    let mut test = vec![if node.json {
        "CMD".to_string()
    } else {
        "CMD-SHELL".to_string()
    }];
    test.extend(cmd);
    let interval = |name: &str| -> Result<i64> {
        let Some(v) = flags.string(name) else {
            return Ok(0);
        };
        if v.is_empty() {
            return Ok(0);
        }
        let d = parse_duration(&v).map_err(|e| {
            flag_err(
                node,
                &format!("--{name}"),
                ErrorKind::InvalidArgument,
                e.to_string(),
            )
        })?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return Err(flag_err(
                node,
                &format!("--{name}"),
                ErrorKind::InvalidArgument,
                format!("Interval {name:?} cannot be less than 1ms"),
            ));
        }
        Ok(d)
    };
    let retries = match flags.string("retries") {
        Some(v) if !v.is_empty() => {
            let r: i64 = v
                .parse()
                .ok()
                .filter(|r: &i64| i32::try_from(*r).is_ok())
                .ok_or_else(|| {
                    flag_err(
                        node,
                        "--retries",
                        ErrorKind::InvalidArgument,
                        format!("strconv.ParseInt: parsing {v:?}: invalid syntax"),
                    )
                })?;
            if r < 0 {
                return Err(flag_err(
                    node,
                    "--retries",
                    ErrorKind::InvalidArgument,
                    format!("--retries cannot be negative ({r})"),
                ));
            }
            r
        }
        _ => 0,
    };
    Ok(Healthcheck {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

fn onbuild_from_node(node: &Node) -> Result<Command> {
    let Some(next) = node.next.as_deref() else {
        return Err(err(
            node,
            ErrorKind::InvalidArgument,
            "ONBUILD requires at least one argument",
        ));
    };
    parse_flags(node, &[])?;
    let trigger = next.keyword.to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(err(
                node,
                ErrorKind::InvalidArgument,
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ))
        }
        "MAINTAINER" | "FROM" => {
            return Err(err(
                node,
                ErrorKind::InvalidArgument,
                format!("{trigger} isn't allowed as an ONBUILD trigger"),
            ))
        }
        _ => {}
    }
    let mut expression = strip_onbuild_prefix(&node.original).to_string();
    for h in &node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    let trigger = from_node(next).ok().map(Box::new);
    Ok(Command::Onbuild(Onbuild {
        expression,
        trigger,
    }))
}

/// `(?i)^\s*ONBUILD\s*` removed, as BuildKit stores the trigger.
fn strip_onbuild_prefix(original: &str) -> &str {
    let s = original.trim_start();
    if s.len() >= 7 && s.is_char_boundary(7) && s[..7].eq_ignore_ascii_case("onbuild") {
        s[7..].trim_start()
    } else {
        s
    }
}

/// Why a Go duration did not parse, in Go's `time` words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
}

/// Why a `RUN --mount` value was refused, in BuildKit's words.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MountError {
    #[error("failed to parse csv mounts: bare \" in non-quoted field: {0}")]
    BareQuote(String),
    #[error("failed to parse csv mounts: extraneous or missing \" in quoted-field: {0}")]
    UnclosedQuote(String),
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromExpansion,
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyNotForType { key: String, kind: &'static str },
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    #[error("unexpected key '{key}' in '{field}'")]
    UnknownKey { key: String, field: String },
    #[error("invalid value for {key}: {value}")]
    InvalidValue { key: String, value: String },
    #[error("invalid value {value} for {key}")]
    InvalidNumber { key: &'static str, value: String },
    #[error("unsupported mount type {0:?}")]
    UnsupportedType(String),
    #[error("unsupported sharing value {0:?}")]
    UnsupportedSharing(String),
    /// `mode`, `uid` or `gid` on a mount type that has no files to own.
    #[error("{option} not allowed for {kind:?} type mounts")]
    NotAllowed {
        option: &'static str,
        kind: &'static str,
    },
    /// A secret mount's options contradict each other.
    #[error("{0}")]
    Secret(&'static str),
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotForType(&'static str),
    /// Expanding a value failed (the caller's error).
    #[error(transparent)]
    Expand(#[from] Error),
}

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `0`) into nanoseconds, with
/// Go's error words.
pub fn parse_duration(s: &str) -> std::result::Result<i64, DurationError> {
    let bad = || DurationError::Invalid(s.to_string());
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(DurationError::MissingUnit(s.to_string())),
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_string(),
                    input: s.to_string(),
                })
            }
        };
        rest = &rest[unit_len..];
        total += value * scale;
        if total > i64::MAX as f64 {
            return Err(bad());
        }
    }
    let n = total.round() as i64;
    Ok(if neg { -n } else { n })
}

/// Splits a `--mount` value as a CSV record (quotes group commas).
fn csv_fields(s: &str) -> std::result::Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut in_quotes = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if at_start => {
                in_quotes = true;
                at_start = false;
            }
            '"' => return Err(MountError::BareQuote(s.to_string())),
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
            }
            _ => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if in_quotes {
        return Err(MountError::UnclosedQuote(s.to_string()));
    }
    fields.push(cur);
    Ok(fields)
}

/// The checks BuildKit makes on a `--mount` before any expansion.
fn check_mount_syntax(val: &str) -> std::result::Result<(), MountError> {
    for field in csv_fields(val)? {
        if let Some((key, value)) = field.split_once('=') {
            if key.eq_ignore_ascii_case("from") {
                if let Some(idx) = value.find('$') {
                    if idx != value.len() - 1 {
                        return Err(MountError::FromExpansion);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Parses a `RUN --mount` value, expanding each value with `expand`, with
/// BuildKit's rules and messages.
pub fn parse_mount(
    val: &str,
    expand: &mut dyn FnMut(&str) -> Result<String>,
) -> std::result::Result<Mount, MountError> {
    let mut m = Mount::default();
    let mut ro_auto = true;
    let mut has_mode = false;
    for field in csv_fields(val)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(MountError::KeyNotForType {
                        key,
                        kind: mount_type_name(m.kind),
                    })
                }
                _ => return Err(MountError::NotKeyValue(field)),
            }
            continue;
        };
        let value = expand(value)?;
        let parse_bool = |v: &str| -> std::result::Result<bool, MountError> {
            match v {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                _ => Err(MountError::InvalidValue {
                    key: key.clone(),
                    value: v.to_string(),
                }),
            }
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(MountError::UnsupportedType(value)),
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = parse_bool(&value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&value)?;
                ro_auto = false;
            }
            "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                m.required = parse_bool(&value)?
            }
            "required" => {
                return Err(MountError::KeyNotForType {
                    key,
                    kind: mount_type_name(m.kind),
                })
            }
            "size" if m.kind == MountType::Tmpfs => {
                m.size = Some(
                    ram_in_bytes(&value).ok_or_else(|| MountError::InvalidValue {
                        key: key.clone(),
                        value: value.clone(),
                    })?,
                )
            }
            "size" => {
                return Err(MountError::KeyNotForType {
                    key,
                    kind: mount_type_name(m.kind),
                })
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(MountError::UnsupportedSharing(value)),
                })
            }
            "mode" => {
                m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| {
                    MountError::InvalidNumber {
                        key: "mode",
                        value: value.clone(),
                    }
                })?);
                has_mode = true;
            }
            "uid" => {
                m.uid = Some(value.parse().map_err(|_| MountError::InvalidNumber {
                    key: "uid",
                    value: value.clone(),
                })?)
            }
            "gid" => {
                m.gid = Some(value.parse().map_err(|_| MountError::InvalidNumber {
                    key: "gid",
                    value: value.clone(),
                })?)
            }
            "env" => m.env = Some(value),
            _ => return Err(MountError::UnknownKey { key, field }),
        }
    }
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        let t = mount_type_name(m.kind);
        let refuse = |option| Err(MountError::NotAllowed { option, kind: t });
        if has_mode {
            return refuse("mode");
        }
        if m.uid.is_some() {
            return refuse("uid");
        }
        if m.gid.is_some() {
            return refuse("gid");
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(MountError::Secret("secret mount should not have a from"));
        }
        if m.sharing.is_some() {
            return Err(MountError::Secret("secret mount should not define sharing"));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(MountError::Secret(
                "invalid secret mount. one of source, target required",
            ));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountError::Secret("both source and id can't be set"));
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(MountError::SharingNotForType(mount_type_name(m.kind)));
    }
    Ok(m)
}

fn mount_type_name(t: MountType) -> &'static str {
    match t {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

/// docker/go-units RAMInBytes: `64m`, `1g`, `512k`, `100` (binary units).
fn ram_in_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let value: f64 = s[..num_len].parse().ok()?;
    let unit = s[num_len..].trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        _ => return None,
    };
    let v = value * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

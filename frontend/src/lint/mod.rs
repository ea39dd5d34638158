//! BuildKit's build checks (`docker build --check`, `# check=` directives).
//!
//! The rules, their names, messages and docs URLs are BuildKit's
//! (`frontend/dockerfile/linter`), and each fires where BuildKit's
//! dispatcher fires it, so a Dockerfile gets the same warnings, on the same
//! lines, under kiln as under docker:
//! - [`syntax`]: rules about how the file is written (casing, stage names,
//!   MAINTAINER, empty continuation lines), over every stage;
//! - [`from`]: FROM lines against the global ARGs (undefined or invalid
//!   defaults, `--platform` values), over every stage;
//! - [`dispatch`]: rules about what an instruction does (JSON arguments,
//!   legacy `ENV k v`, repeated CMD, relative WORKDIR, secrets in ARG/ENV,
//!   EXPOSE forms, undefined variables, COPY of ignored files), over the
//!   stages a build dispatches (every stage for `--check`).
//!
//! Lines are BuildKit's ranges: first and last line of the instruction, no
//! columns (BuildKit's ranges carry none for checks).

mod config;
mod description;
mod dispatch;
mod from;
mod platform;
mod reference;
pub mod rules;
mod syntax;

use std::collections::{BTreeMap, BTreeSet};

pub use config::{Config, ConfigError};
pub use rules::Rule;

use crate::instructions::{Command, Instruction};
use crate::parser::{Dockerfile, Node};
use crate::plan::Platform;
use kiln_patternmatcher::PatternMatcher;

/// The build arg that replaces the `# check=` directive, as BuildKit's.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub rule: Rule,
    /// The formatted message (JSON `detail`).
    pub detail: String,
    /// First line of the instruction at fault (1-based).
    pub start_line: usize,
    /// Last line of the instruction at fault.
    pub end_line: usize,
}

impl Warning {
    /// BuildKit's one-line form (`linter.LintFormatShort`), what a build's
    /// summary lists: `Rule: message (line N)`.
    pub fn short(&self) -> String {
        let mut s = format!("{}: {}", self.rule.name, self.detail);
        if self.start_line > 0 {
            s.push_str(&format!(" (line {})", self.start_line));
        }
        s
    }
}

/// What the checks need beyond the file.
#[derive(Clone, Default)]
pub struct Input<'a> {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target` (the last stage when none).
    pub target: Option<String>,
    pub target_platform: Option<Platform>,
    pub build_platform: Option<Platform>,
    /// The stages the build dispatches, by index; `None` checks every
    /// stage (check mode: BuildKit lints all stages when asked to check).
    pub stages: Option<BTreeSet<usize>>,
    /// The environment (`K=V`) of each stage's base image, by stage index,
    /// when known; unknown ones start from PATH only.
    pub base_env: BTreeMap<usize, Vec<String>>,
    /// The context's `.dockerignore`, for CopyIgnoredFile.
    pub ignore: Option<&'a PatternMatcher>,
    /// The Dockerfile's text, for the comments InvalidDefinitionDescription
    /// reads (the parse tree keeps none).
    pub source: Option<&'a str>,
    /// Each dispatched image stage's base as resolved, by stage index, for
    /// InvalidBaseImagePlatform (only the build knows what it pulled).
    pub base_platforms: BTreeMap<usize, BasePlatform>,
}

/// A stage's base image: the platform the stage asked for and the one the
/// resolved image's config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePlatform {
    /// The reference as the FROM line gives it, variables expanded
    /// (BuildKit reports the name as written, not normalised).
    pub image: String,
    /// `--platform`, else the target platform.
    pub expected: Platform,
    /// The image config's `os`/`architecture`/`variant`.
    pub actual: Platform,
}

/// The outcome of checking one Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// In the order BuildKit raises them.
    pub warnings: Vec<Warning>,
    /// The options in force (directive or build arg).
    pub config: Config,
}

impl Report {
    /// BuildKit's `lint violation found for rules: …` when `error=true` and
    /// a rule fired (rule names sorted, where Go's map order is random).
    pub fn error(&self) -> Option<String> {
        if !self.config.error || self.warnings.is_empty() {
            return None;
        }
        let names: BTreeSet<&str> = self.warnings.iter().map(|w| w.rule.name).collect();
        Some(format!(
            "lint violation found for rules: {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// The options for a file: the build arg when given, else the directive.
pub fn config_for(
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    match build_args.get(CHECK_BUILD_ARG) {
        Some(v) => Config::parse(v),
        None => Config::parse(df.directives.check.as_deref().unwrap_or("")),
    }
}

/// Whether a planner warning is one a check rule reports now (the parser's
/// empty continuation lines, MAINTAINER), so a build shows it once, as a
/// check, under the check options.
pub fn covers(message: &str) -> bool {
    message.starts_with("Empty continuation line found in: ")
        || message == "MAINTAINER instruction is deprecated in favor of using label"
}

/// Collects warnings under a config.
pub(crate) struct Linter {
    config: Config,
    warnings: Vec<Warning>,
}

impl Linter {
    pub(crate) fn run(&mut self, rule: Rule, lines: (usize, usize), detail: String) {
        if self.config.enabled(&rule) {
            self.warnings.push(Warning {
                rule,
                detail,
                start_line: lines.0,
                end_line: lines.1,
            });
        }
    }
}

/// A stage as the checks see it.
pub(crate) struct StageRef<'a> {
    pub index: usize,
    pub from: &'a Instruction,
    pub from_node: &'a Node,
    pub commands: Vec<(&'a Instruction, &'a Node)>,
}

/// The lines of an instruction, as BuildKit's `Location()`.
pub(crate) fn lines(i: &Instruction) -> (usize, usize) {
    (i.span.start_line, i.span.end_line.max(i.span.start_line))
}

/// The keyword as written (`Run`, `FROM`), what BuildKit's `Name()` is.
pub(crate) fn written_keyword(node: &Node) -> &str {
    node.original.split_whitespace().next().unwrap_or("")
}

/// Runs every check on a parsed file. A file whose instructions do not
/// type is the error (BuildKit's `buildError`).
pub fn check(df: &Dockerfile, input: &Input) -> crate::Result<Report> {
    let config = config_for(df, &input.build_args)
        .map_err(|e| crate::Error::new(crate::ErrorKind::InvalidArgument, e.to_string()))?;
    let ins = crate::instructions::from_dockerfile(df)?;
    let mut l = Linter {
        config: config.clone(),
        warnings: Vec::new(),
    };

    let mut meta: Vec<&Instruction> = Vec::new();
    let mut stages: Vec<StageRef> = Vec::new();
    for (i, node) in ins.instructions.iter().zip(&df.nodes) {
        match (&i.command, stages.last_mut()) {
            (Command::From(_), _) => stages.push(StageRef {
                index: stages.len(),
                from: i,
                from_node: node,
                commands: Vec::new(),
            }),
            (_, Some(st)) => st.commands.push((i, node)),
            (_, None) => meta.push(i),
        }
    }

    syntax::check(df, &ins, &stages, &mut l);
    if let Some(source) = input.source {
        description::check(source, df, &ins, &stages, &mut l);
    }
    let globals = from::check(&meta, &stages, input, ins.escape, &mut l);
    platform::check(&stages, input, &mut l);
    dispatch::check(&stages, &globals, input, ins.escape, &mut l);
    Ok(Report {
        warnings: l.warnings,
        config,
    })
}

/// BuildKit's `suggest.Search`: the closest option within an edit distance
/// of 2, none on an exact match.
pub(crate) fn suggest<'a>(
    val: &str,
    options: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best = None;
    let mut min = 3;
    for opt in options {
        if opt == val {
            return None;
        }
        let d = levenshtein(val, opt);
        if d < min {
            best = Some(opt);
            min = d;
        }
    }
    best
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;

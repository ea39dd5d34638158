//! `kiln check [PATH]`, `kiln build --check` and `--call check[,format=json]`:
//! BuildKit's build checks without building, printed as buildx prints them
//! (text, or the lint subrequest's JSON); and the summary of a normal
//! build's check warnings.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::Subcommand;
use kiln_build::{BuildOptions, Builder, CheckResult, Context};
use kiln_cache::Root;
use kiln_frontend::lint::Warning;
use kiln_frontend::plan::Platform;
use kiln_frontend::source_map::{render_snippet, LineRange};
use miette::{miette, IntoDiagnostic, Result};
use serde::Serialize;

use crate::progress;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Check a Dockerfile against BuildKit's build checks, building nothing.
    Check(CheckArgs),
}

/// `kiln check`'s flags (a subset of `kiln build`'s).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The Dockerfile (default: PATH/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A build argument `K=V` (`K` alone takes the value from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage whose base images are resolved (every stage is checked).
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// A named context `NAME=VALUE`, as `kiln build --build-context`: the
    /// check resolves `FROM NAME` / `--from=NAME` as the build would.
    #[arg(long = "build-context")]
    pub build_contexts: Vec<String>,
    /// `text` (buildx's report) or `json` (the lint result).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The build context.
    #[arg(default_value = ".")]
    pub context: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    let Cmd::Check(a) = cmd;
    let mut opts = BuildOptions::new(Context::Dir(a.context.clone()));
    opts.dockerfile = a.file.clone();
    opts.build_args = super::build::build_args(&a.build_args);
    opts.target = a.target.clone();
    opts.named_contexts = a
        .build_contexts
        .iter()
        .map(|c| kiln_build::context::named::parse_flag(c).map_err(|e| miette!("{e}")))
        .collect::<Result<_>>()?;
    if let Some(p) = a.platform.as_deref().filter(|p| !p.trim().is_empty()) {
        opts.platforms = vec![Platform::parse(p).map_err(|e| miette!("{e}"))?];
    }
    check(opts, a.format)
}

/// `--check` and `--call`: `None` for a normal build, else the format of
/// a check. buildx's other calls (outline, targets) are not kiln's.
pub fn call_mode(check_flag: bool, call: &str) -> Result<Option<Format>> {
    if check_flag {
        return Ok(Some(Format::Text));
    }
    let mut parts = call.split(',');
    let name = parts.next().unwrap_or("build").trim();
    let mut format = Format::Text;
    for p in parts {
        match p.trim().split_once('=') {
            Some(("format", "json")) => format = Format::Json,
            Some(("format", "text")) => format = Format::Text,
            _ => return Err(miette!("invalid call option {p:?}")),
        }
    }
    match name {
        "build" | "" => Ok(None),
        "check" | "lint" => Ok(Some(format)),
        other => Err(miette!("unsupported call {other:?} (build, check)")),
    }
}

/// Runs the checks and prints them; exit status 1 when anything was
/// found, as buildx's `result.statuscode`.
pub fn check(opts: BuildOptions, format: Format) -> Result<ExitCode> {
    let root = Root::from_env().into_diagnostic()?;
    let builder = Builder::new(root).into_diagnostic()?;
    let result = builder.check(opts).map_err(|e| miette!("{e}"))?;
    let mut out = std::io::stdout().lock();
    let found = !result.warnings.is_empty() || result.build_error.is_some();
    match format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&LintResults::from(&result))
                .map_err(|e| miette!("{e}"))?;
            writeln!(out, "{json}").into_diagnostic()?;
        }
        Format::Text => {
            print_text(&mut out, &result).into_diagnostic()?;
            if let Some((message, line)) = &result.build_error {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "ERROR: {message}");
                if let Some(snippet) = line.and_then(|l| {
                    render_snippet(
                        &result.file_name,
                        &result.text,
                        &[LineRange { start: l, end: l }],
                    )
                }) {
                    let _ = write!(err, "{snippet}");
                }
            }
        }
    }
    Ok(if found {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// buildx's text: the count, then each warning with its docs URL and the
/// Dockerfile's lines, sorted by line.
fn print_text(out: &mut dyn Write, r: &CheckResult) -> std::io::Result<()> {
    let n = r.warnings.len();
    match n {
        0 if r.build_error.is_none() => {
            return writeln!(out, "Check complete, no warnings found.");
        }
        0 => return Ok(()),
        1 => writeln!(out, "Check complete, 1 warning has been found!")?,
        _ => writeln!(out, "Check complete, {n} warnings have been found!")?,
    }
    let mut sorted: Vec<&Warning> = r.warnings.iter().collect();
    sorted.sort_by_key(|w| w.start_line);
    for w in sorted {
        write!(out, "\nWARNING: {}", w.rule.name)?;
        if !w.rule.url.is_empty() {
            write!(out, " - {}", w.rule.url)?;
        }
        writeln!(out, "\n{}", w.detail)?;
        let range = LineRange {
            start: w.start_line,
            end: w.end_line,
        };
        if let Some(s) = render_snippet(&r.file_name, &r.text, &[range]) {
            write!(out, "{s}")?;
        }
    }
    if r.build_error.is_some() {
        writeln!(out)?;
    }
    Ok(())
}

/// After a build: BuildKit's ` N warnings found (use docker --debug to
/// expand):` and one ` - Rule: message (line N)` per warning, on stderr;
/// nothing in quiet or JSON mode (JSON had them as events).
pub fn print_summary(mode: progress::Mode, warnings: &[Warning]) {
    if warnings.is_empty() || matches!(mode, progress::Mode::Quiet | progress::Mode::Json) {
        return;
    }
    let head = match warnings.len() {
        1 => "1 warning found".to_string(),
        n => format!("{n} warnings found"),
    };
    let head = format!("{head} (use docker --debug to expand):");
    let mut err = std::io::stderr().lock();
    let head = if mode.resolve() == progress::Mode::Tty {
        format!("\x1b[33m{head}\x1b[0m")
    } else {
        head
    };
    let _ = writeln!(err, "\n {head}");
    for w in warnings {
        let _ = writeln!(err, " - {}", w.short());
    }
}

/// A check warning as a JSON progress event.
pub fn event_json(w: &Warning) -> serde_json::Value {
    serde_json::json!({
        "event": "check",
        "rule": w.rule.name,
        "description": w.rule.description,
        "url": w.rule.url,
        "detail": w.detail,
        "line": w.start_line,
        "end_line": w.end_line,
    })
}

// buildkit's `lint.LintResults` as buildx prints it (Go's JSON of the
// protobuf types: zero fields left out, no warnings is `null`).

#[derive(Serialize)]
struct LintResults {
    warnings: Option<Vec<JsonWarning>>,
    sources: Vec<SourceInfo>,
    #[serde(rename = "buildError", skip_serializing_if = "Option::is_none")]
    build_error: Option<BuildError>,
}

#[derive(Serialize)]
struct JsonWarning {
    #[serde(rename = "ruleName")]
    rule_name: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    location: Location,
}

#[derive(Serialize)]
struct SourceInfo {
    filename: String,
    data: String,
    language: &'static str,
}

#[derive(Serialize)]
struct BuildError {
    message: String,
    location: Location,
}

#[derive(Serialize, Default)]
struct Location {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ranges: Vec<Range>,
}

#[derive(Serialize)]
struct Range {
    start: Position,
    end: Position,
}

#[derive(Serialize)]
struct Position {
    line: usize,
}

fn location(start: usize, end: usize) -> Location {
    Location {
        ranges: vec![Range {
            start: Position { line: start },
            end: Position { line: end },
        }],
    }
}

impl From<&CheckResult> for LintResults {
    fn from(r: &CheckResult) -> Self {
        let warnings: Vec<JsonWarning> = r
            .warnings
            .iter()
            .map(|w| JsonWarning {
                rule_name: w.rule.name,
                description: w.rule.description,
                url: w.rule.url,
                detail: w.detail.clone(),
                location: location(w.start_line, w.end_line),
            })
            .collect();
        LintResults {
            warnings: (!warnings.is_empty()).then_some(warnings),
            sources: vec![SourceInfo {
                filename: r.file_name.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(&r.text),
                language: "Dockerfile",
            }],
            build_error: r.build_error.as_ref().map(|(message, line)| BuildError {
                message: message.clone(),
                location: line.map_or_else(Location::default, |l| location(l, l)),
            }),
        }
    }
}

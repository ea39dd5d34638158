//! `kiln parse`: the frontend's view of a Dockerfile — BuildKit's parser dump
//! (to compare with BuildKit byte for byte), the typed instructions, or the
//! resolved per-stage plan — so Dockerfile problems can be seen without
//! building anything.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use kiln_frontend::plan::{PlanOptions, Platform};
use miette::{miette, IntoDiagnostic, WrapErr};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Parse a Dockerfile and print BuildKit's dump, the typed AST, or the plan.
    Parse {
        /// The Dockerfile.
        file: PathBuf,
        /// `dump` prints what BuildKit's parser prints; `json` the typed
        /// instructions.
        #[arg(long, value_enum, default_value_t = Format::Dump)]
        format: Format,
        /// Print the resolved per-stage plan (JSON) instead.
        #[arg(long)]
        plan: bool,
        /// A build arg for the plan, `KEY=VALUE` (or `KEY` to take it from the
        /// environment, as docker does).
        #[arg(long = "build-arg", value_name = "KEY=VALUE")]
        build_args: Vec<String>,
        /// The stage to plan for.
        #[arg(long)]
        target: Option<String>,
        /// The target platform for the plan (`linux/amd64`).
        #[arg(long)]
        platform: Option<String>,
    },
}

/// Output formats of `kiln parse` without `--plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Dump,
    Json,
}

pub fn run(cmd: Cmd) -> miette::Result<ExitCode> {
    match cmd {
        Cmd::Parse {
            file,
            format,
            plan,
            build_args,
            target,
            platform,
        } => parse(
            &file,
            format,
            plan,
            &build_args,
            target,
            platform.as_deref(),
        ),
    }
}

/// Parses `KEY=VALUE` build args; a bare `KEY` takes the environment's value
/// and is dropped when unset, as `docker build` does.
pub fn parse_build_args(raw: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    out
}

fn parse(
    file: &std::path::Path,
    format: Format,
    plan: bool,
    build_args: &[String],
    target: Option<String>,
    platform: Option<&str>,
) -> miette::Result<ExitCode> {
    let name = file.display().to_string();
    let source = std::fs::File::open(file)
        .and_then(kiln_frontend::parser::read_source)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading {name}"))?;
    let df = kiln_frontend::parser::parse(&source).map_err(|e| e.with_source(&name, &source))?;
    let mut stderr = std::io::stderr().lock();
    let mut out = std::io::stdout().lock();
    let print_warning = |w: &mut dyn Write, line: usize, col: usize, msg: &str| {
        let _ = writeln!(w, "warning: {name}:{line}:{col}: {msg}");
    };
    if plan {
        let target_platform = platform
            .map(|p| Platform::parse(p).map_err(|e| miette!("invalid --platform: {e}")))
            .transpose()?;
        let opts = PlanOptions {
            build_args: parse_build_args(build_args),
            target,
            target_platform,
            build_platform: None,
            ..PlanOptions::default()
        };
        let plan =
            kiln_frontend::plan::plan(&df, &opts).map_err(|e| e.with_source(&name, &source))?;
        for w in &plan.warnings {
            print_warning(&mut stderr, w.location.line, w.location.column, &w.message);
        }
        let json = serde_json::to_string_pretty(&plan).into_diagnostic()?;
        emit(writeln!(out, "{json}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    for w in &df.warnings {
        print_warning(&mut stderr, w.span.start_line, w.span.start_col, &w.message);
    }
    match format {
        Format::Dump => {
            emit(writeln!(out, "{}", kiln_frontend::parser::dump(&df)))?;
        }
        Format::Json => {
            let typed = kiln_frontend::instructions::from_dockerfile(&df)
                .map_err(|e| e.with_source(&name, &source))?;
            for w in &typed.warnings {
                print_warning(&mut stderr, w.location.line, w.location.column, &w.message);
            }
            let json = serde_json::to_string_pretty(&typed).into_diagnostic()?;
            emit(writeln!(out, "{json}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Output errors, except a closed pipe (`kiln parse … | head`), which is the
/// reader's choice and not a failure.
fn emit(r: std::io::Result<()>) -> miette::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.into_diagnostic(),
    }
}

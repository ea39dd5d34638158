//! `kiln compose …`: flags → `kiln_compose` → output. The file model,
//! merging and normalisation live in the `kiln-compose` crate; building in
//! `compose_build`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use kiln_compose::{emit, LoadOptions, Project};
use miette::{miette, Result};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Define and run multi-container applications (docker compose).
    Compose(ComposeArgs),
}

/// docker compose's global flags.
#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// Compose configuration files, merged in order.
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    /// Project name.
    #[arg(short = 'p', long = "project-name")]
    pub project_name: Option<String>,
    /// Alternate working directory (default: the first file's folder).
    #[arg(long = "project-directory")]
    pub project_directory: Option<PathBuf>,
    /// Alternate environment files.
    #[arg(long = "env-file")]
    pub env_files: Vec<PathBuf>,
    /// Profiles to enable.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Parse, resolve and render the compose file in canonical format.
    Config(ConfigArgs),
    /// Build or rebuild services.
    Build(crate::commands::compose_build::BuildArgs),
    /// Create and start containers.
    Up(crate::commands::compose_up::UpArgs),
    /// Stop and remove containers, networks (and volumes, images).
    Down(crate::commands::compose_up::DownArgs),
    /// List containers.
    Ps(crate::commands::compose_ops::PsArgs),
    /// View output from containers.
    Logs(crate::commands::compose_ops::LogsArgs),
    /// Start services.
    Start(crate::commands::compose_ops::ServicesArgs),
    /// Stop services.
    Stop(crate::commands::compose_ops::ServicesArgs),
    /// Restart service containers.
    Restart(crate::commands::compose_ops::ServicesArgs),
    /// Removes stopped service containers.
    Rm(crate::commands::compose_ops::RmArgs),
    /// Execute a command in a running container.
    Exec(crate::commands::compose_ops::ExecArgs),
    /// Run a one-off command on a service.
    Run(crate::commands::compose_ops::RunArgs),
    /// List images used by the created containers.
    Images(crate::commands::compose_ops::NamesArgs),
    /// Print the public port for a port binding.
    Port(crate::commands::compose_ops::PortArgs),
    /// Pull service images.
    Pull(crate::commands::compose_ops::NamesArgs),
    /// Push service images.
    Push(crate::commands::compose_ops::NamesArgs),
    /// Display the running processes.
    Top(crate::commands::compose_extra::TopArgs),
}

/// `compose config`'s flags.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Print the service names, one per line.
    #[arg(long)]
    pub services: bool,
    /// Print the volume names, one per line.
    #[arg(long)]
    pub volumes: bool,
    /// Print the profile names, one per line.
    #[arg(long)]
    pub profiles: bool,
    /// Print the image names, one per line.
    #[arg(long)]
    pub images: bool,
    /// Only validate the configuration, don't print anything.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format the output: yaml or json.
    #[arg(long, default_value = "yaml")]
    pub format: String,
    /// Don't interpolate environment variables.
    #[arg(long = "no-interpolate")]
    pub no_interpolate: bool,
    /// Save to file (default: stdout).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Services to show.
    pub service_names: Vec<String>,
}

/// Loads the project the global flags describe.
pub fn load_project(a: &ComposeArgs, interpolate: bool) -> Result<Project> {
    let opts = LoadOptions {
        files: a.files.clone(),
        project_name: a.project_name.clone(),
        project_directory: a.project_directory.clone(),
        env_files: a.env_files.clone(),
        profiles: a.profiles.clone(),
        interpolate,
        os_env: std::env::vars().collect(),
        cwd: std::env::current_dir().map_err(|e| miette!("current directory: {e}"))?,
    };
    let project = kiln_compose::load(&opts).map_err(|e| miette!("{e}"))?;
    for w in &project.warnings {
        eprintln!("WARN[0000] {w}");
    }
    Ok(project)
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    let Cmd::Compose(a) = cmd;
    let r = match &a.command {
        Sub::Config(c) => config(&a, c),
        Sub::Build(b) => crate::commands::compose_build::run(&a, b),
        Sub::Up(u) => crate::commands::compose_up::up(&a, u),
        Sub::Down(d) => crate::commands::compose_up::down(&a, d),
        Sub::Ps(x) => crate::commands::compose_ops::ps(&a, x),
        Sub::Logs(x) => crate::commands::compose_ops::logs(&a, x),
        Sub::Start(x) => crate::commands::compose_ops::start(&a, x),
        Sub::Stop(x) => crate::commands::compose_ops::stop(&a, x),
        Sub::Restart(x) => crate::commands::compose_ops::restart(&a, x),
        Sub::Rm(x) => crate::commands::compose_ops::rm(&a, x),
        Sub::Exec(x) => crate::commands::compose_ops::exec(&a, x),
        Sub::Run(x) => crate::commands::compose_ops::run(&a, x),
        Sub::Images(x) => crate::commands::compose_ops::images(&a, x),
        Sub::Port(x) => crate::commands::compose_ops::port(&a, x),
        Sub::Pull(x) => crate::commands::compose_ops::pull(&a, x),
        Sub::Push(x) => crate::commands::compose_ops::push(&a, x),
        Sub::Top(x) => crate::commands::compose_extra::top(&a, x),
    };
    // docker compose's messages as it prints them (one line, then kiln's
    // `--> file:line`), not wrapped in a report box.
    r.or_else(|report| {
        eprintln!("{report}");
        Ok(ExitCode::from(1))
    })
}

fn config(a: &ComposeArgs, c: &ConfigArgs) -> Result<ExitCode> {
    let mut project = load_project(a, !c.no_interpolate)?;
    if !c.service_names.is_empty() {
        if let Some(s) = project
            .model
            .get_mut("services")
            .and_then(|s| s.as_object_mut())
        {
            for n in &c.service_names {
                if !s.contains_key(n) {
                    return Err(miette!("no such service: {n}"));
                }
            }
            s.retain(|k, _| c.service_names.contains(k));
        }
    }
    if !c.no_interpolate {
        emit::escape_dollars(&mut project.model);
    }
    let model = &project.model;
    let keys = |kind: &str| -> Vec<String> {
        model
            .get(kind)
            .and_then(|v| v.as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let text = if c.quiet {
        String::new()
    } else if c.services {
        lines(keys("services"))
    } else if c.volumes {
        lines(keys("volumes"))
    } else if c.profiles {
        lines(project.all_profiles.iter().cloned().collect())
    } else if c.images {
        let mut imgs = Vec::new();
        if let Some(s) = model.get("services").and_then(|s| s.as_object()) {
            for (name, svc) in s {
                imgs.push(
                    svc.get("image")
                        .and_then(|i| i.as_str())
                        .map(String::from)
                        .unwrap_or_else(|| format!("{}-{name}", project.name)),
                );
            }
        }
        lines(imgs)
    } else {
        match c.format.as_str() {
            "yaml" => emit::yaml(model),
            "json" => emit::json(model),
            other => return Err(miette!("unsupported format {other:?}")),
        }
    };
    match &c.output {
        Some(p) => std::fs::write(p, text).map_err(|e| miette!("{}: {e}", p.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lines(v: Vec<String>) -> String {
    v.into_iter().map(|l| l + "\n").collect()
}

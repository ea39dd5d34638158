//! `kiln run`, `ps`, `logs`, `stop`, `rm`, `exec`: the run backend, with
//! docker's flags and output, on the build sandbox (see
//! `kiln_worker::container` for the state on disk and the helper processes).
//!
//! Exit codes follow `docker run`: the container's own code; 125 when kiln
//! cannot run it (unknown image, bad flags); 126 when the command cannot
//! be executed; 127 when it is not found.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use kiln_cache::image::{self, Resolved};
use kiln_cache::registry::{self, NoProgress, PullOptions, RegistryConfig};
use kiln_cache::{Reference, Root};
use kiln_worker::container::{
    self, Container, ContainerError, ExecSpec, StartReport, Status, Store,
};
use kiln_worker::layers::{LayerRef, LayerStore};
use kiln_worker::sandbox::{Device, Mount, Network};
use kiln_worker::seccomp::{Profile, Seccomp};
use miette::{miette, Result};
use serde_json::Value;

/// The container commands, flattened into kiln's top level as docker has
/// them.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a command in a new container.
    Run(RunArgs),
    /// List containers (docker's columns).
    Ps {
        /// Show all containers (default: running ones).
        #[arg(short, long)]
        all: bool,
        /// Only print container IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate IDs and commands.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show a container's output.
    Logs {
        /// Keep printing new output until the container ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines ("all" for every line).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Container name or ID (a prefix of the ID will do).
        container: String,
    },
    /// Stop running containers: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before killing.
        #[arg(
            short = 't',
            long = "time",
            visible_alias = "timeout",
            default_value_t = 10
        )]
        time: u64,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers (their changes and logs).
    Rm {
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        #[command(flatten)]
        process: ProcessArgs,
        /// CONTAINER COMMAND [ARG...]: the container (name or ID), then the
        /// command; everything after the container belongs to the command.
        #[arg(
            value_name = "CONTAINER COMMAND [ARG...]",
            required = true,
            num_args = 2..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        container_and_command: Vec<String>,
    },
    /// Start a container's process or an exec (internal).
    #[command(name = "container-helper", hide = true)]
    ContainerHelper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// How the process runs, for `kiln run` and `kiln exec` alike.
#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
    /// Set environment variables (KEY=VALUE, or KEY to take it from here).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User (name or uid, with an optional :group).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Keep stdin open (pass this terminal's stdin).
    #[arg(short = 'i', long)]
    interactive: bool,
}

/// `kiln run`'s flags, as `docker run` names them.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Name the container (unique).
    #[arg(long)]
    name: Option<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Replace the image's ENTRYPOINT (and drop its CMD).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Bind mount a host path: HOST:CONTAINER[:ro|:rw].
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// host (the default here) or none (only loopback).
    #[arg(long, default_value = "host")]
    network: String,
    /// The container's hostname (default: its short ID).
    #[arg(long)]
    hostname: Option<String>,
    /// Security options: `seccomp=unconfined` (no filter) or
    /// `seccomp=PROFILE.json` (docker's profile format); docker's default
    /// profile otherwise.
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Pass a host device in: HOST[:CONTAINER[:PERMS]]. PERMS (`rwm`) is
    /// checked, but without a devices cgroup it is not enforced: a node
    /// without `w` is bound read-only, which does not stop writes to a
    /// device.
    #[arg(long = "device", value_name = "HOST[:CONTAINER[:PERMS]]")]
    device: Vec<String>,
    #[command(flatten)]
    process: ProcessArgs,
    /// IMAGE [COMMAND [ARG...]]: the image (name or ID; pulled when
    /// absent), then the command replacing its CMD. Everything after the
    /// image belongs to the command, flags included.
    #[arg(
        value_name = "IMAGE [COMMAND [ARG...]]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    image_and_args: Vec<String>,
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Run(a) => Ok(match run_container(a) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("kiln: {msg}");
                exit(container::EXIT_KILN)
            }
        }),
        Cmd::Ps {
            all,
            quiet,
            no_trunc,
        } => ps(all, quiet, no_trunc),
        Cmd::Logs {
            follow,
            tail,
            container,
        } => logs(follow, &tail, &container),
        Cmd::Stop { time, containers } => stop(time, &containers),
        Cmd::Rm { force, containers } => rm(force, &containers),
        Cmd::Exec {
            process:
                ProcessArgs {
                    env,
                    workdir,
                    user,
                    interactive,
                },
            mut container_and_command,
        } => {
            let command = container_and_command.split_off(1);
            let container = container_and_command.concat();
            exec(env, workdir, user, interactive, &container, command)
        }
        Cmd::ContainerHelper { args } => Ok(exit(container::helper_main(&args))),
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn open_store() -> Result<(Root, Store)> {
    let root = Root::from_env().map_err(|e| miette!("{e}"))?;
    let store = Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    Ok((root, store))
}

// ------------------------------------------------------------------- run

fn run_container(mut a: RunArgs) -> Result<ExitCode, String> {
    let args = a.image_and_args.split_off(1.min(a.image_and_args.len()));
    let image = a.image_and_args.concat();
    let root = Root::from_env().map_err(|e| e.to_string())?;
    let store = Store::open(root.path()).map_err(|e| e.to_string())?;
    let network = match a.network.as_str() {
        "host" | "default" => Network::Host,
        "none" => Network::None,
        other => return Err(format!("network {other:?} is not supported (host or none)")),
    };
    let mounts = a
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let seccomp = parse_security_opts(&a.security_opt)?;
    let devices = a
        .device
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(w) = &a.process.workdir {
        if !w.starts_with('/') {
            return Err(format!(
                "the working directory '{w}' is invalid, it needs to be an absolute path"
            ));
        }
    }
    let (resolved, image_id) = find_or_pull(&root, &image)?;
    let cfg = resolved
        .config
        .get("config")
        .cloned()
        .unwrap_or(Value::Null);
    let strings = |k: &str| -> Option<Vec<String>> {
        cfg.get(k).and_then(Value::as_array).map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    };
    let text = |k: &str| cfg.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (entrypoint, cmd) = match &a.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), args.clone()),
        Some(e) => (vec![e.clone()], args.clone()),
        None => (
            strings("Entrypoint").unwrap_or_default(),
            if args.is_empty() {
                strings("Cmd").unwrap_or_default()
            } else {
                args.clone()
            },
        ),
    };
    let command: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if command.is_empty() {
        return Err("no command specified".into());
    }
    let mut env = strings("Env").unwrap_or_default();
    for f in &a.env_file {
        let body =
            std::fs::read_to_string(f).map_err(|e| format!("env file {}: {e}", f.display()))?;
        for line in body.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            set_env(&mut env, line);
        }
    }
    for e in &a.process.env {
        set_env(&mut env, e);
    }
    let cwd = a
        .process
        .workdir
        .clone()
        .or_else(|| Some(text("WorkingDir")).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let user = a.process.user.clone().unwrap_or_else(|| text("User"));
    let lowers = layer_dirs(&root, &resolved)?;
    let c = Container {
        id: String::new(),
        name: a.name.clone().unwrap_or_default(),
        image: image.clone(),
        image_id,
        command,
        env,
        cwd,
        user,
        hostname: a.hostname.clone().unwrap_or_default(),
        network,
        mounts,
        lowers,
        auto_remove: a.rm,
        created: container::now(),
        created_ns: 0,
        status: Status::Created,
        pid: None,
        start_time: None,
        started: None,
        exit_code: None,
        finished: None,
        error: None,
        seccomp,
        devices,
    };
    let c = store.create(c).map_err(|e| e.to_string())?;
    let c = if c.hostname.is_empty() {
        let short = c.short_id().to_string();
        store
            .update(&c.id, |c| c.hostname = short)
            .map_err(|e| e.to_string())?
    } else {
        c
    };
    let exe = std::env::current_exe().map_err(|e| format!("finding the kiln binary: {e}"))?;
    // Absolute: the helper's pid 1 mounts and pivots with these paths.
    let dir = store.dir_of(&c.id);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    if a.detach {
        return Ok(
            match container::launch::run_detached(&exe, &dir).map_err(|e| e.to_string())? {
                StartReport::Started => {
                    println!("{}", c.id);
                    ExitCode::SUCCESS
                }
                StartReport::Failed { code, message } => {
                    eprintln!("kiln: {message}");
                    exit(code)
                }
            },
        );
    }
    let code = container::launch::run_foreground(&exe, &dir, a.process.interactive)
        .map_err(|e| e.to_string())?;
    Ok(exit(code))
}

/// `KEY=VALUE` sets; a bare `KEY` copies this process's value (or nothing,
/// as docker). A later setting of a key replaces the earlier one.
fn set_env(env: &mut Vec<String>, spec: &str) {
    let entry = match spec.split_once('=') {
        Some(_) => spec.to_string(),
        None => match std::env::var(spec) {
            Ok(v) => format!("{spec}={v}"),
            Err(_) => return,
        },
    };
    let key = entry.split('=').next().unwrap_or("").to_string();
    env.retain(|e| e.split('=').next() != Some(key.as_str()));
    env.push(entry);
}

/// `-v HOST:CONTAINER[:ro|:rw]`; the host folder is made when missing, as
/// docker does.
/// `--security-opt`: the seccomp filter it asks for (a profile file is
/// read and checked now, so a bad one fails before anything starts).
fn parse_security_opts(opts: &[String]) -> Result<Seccomp, String> {
    let mut seccomp = Seccomp::Default;
    for o in opts {
        let Some((k, v)) = o.split_once(['=', ':']) else {
            return Err(format!("invalid --security-opt: {o:?}"));
        };
        match k {
            "seccomp" if v == "unconfined" => seccomp = Seccomp::Unconfined,
            "seccomp" => {
                let text = std::fs::read_to_string(v)
                    .map_err(|e| format!("opening seccomp profile ({v}) failed: {e}"))?;
                Profile::parse(&text).map_err(|e| format!("{v}: {e}"))?;
                seccomp = Seccomp::Profile(text);
            }
            _ => return Err(format!("invalid --security-opt: {o:?}")),
        }
    }
    Ok(seccomp)
}

/// `--device HOST[:CONTAINER[:PERMS]]`, as docker reads it.
fn parse_device(d: &str) -> Result<Device, String> {
    let parts: Vec<&str> = d.split(':').collect();
    let (host, target, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, t] if t.chars().all(|c| "rwm".contains(c)) && !t.is_empty() => (*h, *h, *t),
        [h, t] => (*h, *t, "rwm"),
        [h, t, p] => (*h, *t, *p),
        _ => return Err(format!("invalid device specification: {d}")),
    };
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        return Err(format!("invalid device mode: {perms}"));
    }
    if !host.starts_with('/') || !container::valid_target(target) {
        return Err(format!("invalid device specification: {d}"));
    }
    let host_path = std::fs::canonicalize(host).map_err(|e| {
        format!("error gathering device information while adding custom device {host:?}: {e}")
    })?;
    use std::os::unix::fs::FileTypeExt;
    let ft = std::fs::metadata(&host_path)
        .map_err(|e| format!("{host}: {e}"))?
        .file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Err(format!("{host:?} is not a device node"));
    }
    Ok(Device {
        host: host_path,
        target: target.to_string(),
        readonly: !perms.contains('w'),
    })
}

fn parse_volume(v: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, true),
        [h, t, "rw"] => (*h, *t, false),
        _ => return Err(format!("invalid volume specification: '{v}'")),
    };
    if !host.starts_with('/') {
        return Err(format!(
            "invalid volume specification: '{v}': the host path must be absolute (named volumes are not supported)"
        ));
    }
    if !container::valid_target(target) {
        return Err(format!(
            "invalid volume specification: '{v}': the container path must be absolute"
        ));
    }
    if !Path::new(host).exists() {
        std::fs::create_dir_all(host).map_err(|e| format!("creating {host}: {e}"))?;
    }
    let source = std::fs::canonicalize(host).map_err(|e| format!("{host}: {e}"))?;
    Ok(Mount::Bind {
        source,
        target: target.to_string(),
        readonly,
    })
}

/// The image by name or ID; pulled (as `FROM` would) when absent.
fn find_or_pull(root: &Root, name: &str) -> Result<(Resolved, String), String> {
    let descriptor = match image::find(root, name) {
        Ok(found) => found.descriptor,
        Err(_) => {
            eprintln!("Unable to find image '{name}' locally");
            let r = Reference::parse(name).map_err(|e| format!("invalid image {name:?}: {e}"))?;
            let host = image::Platform::host();
            let opts = PullOptions {
                platform: Some(registry::Platform {
                    os: host.os.clone(),
                    architecture: host.architecture.clone(),
                    variant: host.variant.clone(),
                }),
                config: RegistryConfig::load(root.path()).map_err(|e| e.to_string())?,
                ..PullOptions::default()
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let pulled = rt.block_on(registry::pull(root, &r, &opts, Arc::new(NoProgress)));
            rt.shutdown_background();
            pulled.map_err(|e| format!("pulling {}: {e}", r.familiar_tagged()))?
        }
    };
    let resolved =
        image::resolve(root.blobs(), &descriptor, None, name).map_err(|e| e.to_string())?;
    Ok((resolved, descriptor.digest().to_string()))
}

/// The image's layers unpacked (by diff_id, shared with builds), lowest
/// first.
fn layer_dirs(root: &Root, r: &Resolved) -> Result<Vec<PathBuf>, String> {
    let diff_ids: Vec<String> = r
        .config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let layers = r.manifest.layers();
    if layers.len() != diff_ids.len() {
        return Err(format!(
            "image has {} layers but {} diff_ids",
            layers.len(),
            diff_ids.len()
        ));
    }
    if layers.len() > kiln_worker::snapshot::MAX_LOWERS {
        return Err(format!(
            "image has {} layers; kiln runs at most {}",
            layers.len(),
            kiln_worker::snapshot::MAX_LOWERS
        ));
    }
    let store = LayerStore::open(root.path()).map_err(|e| e.to_string())?;
    layers
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| {
            let typed = |s: &str| {
                s.parse::<kiln_cache::Digest>()
                    .map_err(|_| format!("layer {s}: not a sha256 digest"))
            };
            let layer = LayerRef {
                diff_id: typed(&diff_id)?,
                digest: typed(&l.digest().to_string())?,
                size: l.size(),
                media_type: l.media_type().to_string(),
            };
            store.dir(&layer, root.blobs()).map_err(|e| e.to_string())
        })
        .collect()
}

// -------------------------------------------------------------------- ps

fn ps(all: bool, quiet: bool, no_trunc: bool) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let list = store.list().map_err(|e| miette!("{e}"))?;
    let now = container::now();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut out = std::io::stdout().lock();
    for c in &list {
        let status = c.effective_status();
        if !all && status != Status::Running {
            continue;
        }
        let id = if no_trunc {
            c.id.clone()
        } else {
            c.short_id().to_string()
        };
        if quiet {
            let _ = writeln!(out, "{id}");
            continue;
        }
        let mut command = c.command.join(" ");
        if !no_trunc && command.chars().count() > 20 {
            command = command.chars().take(19).collect::<String>() + "…";
        }
        let status_text = match status {
            Status::Created => "Created".to_string(),
            Status::Running => format!("Up {}", human_duration(now - c.started.unwrap_or(now))),
            Status::Exited => format!(
                "Exited ({}) {} ago",
                c.exit_code.unwrap_or(255),
                human_duration(now - c.finished.unwrap_or(now))
            ),
        };
        rows.push(vec![
            id,
            c.image.clone(),
            format!("\"{command}\""),
            format!("{} ago", human_duration(now - c.created)),
            status_text,
            String::new(),
            c.name.clone(),
        ]);
    }
    if !quiet {
        let header = [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ];
        let _ = out.write_all(table(&header, &rows).as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

/// Columns padded to their widest cell plus three spaces, as docker's.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            l.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] + 3 - cell.chars().count();
                l.push_str(&" ".repeat(pad));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    s
}

/// docker's `units.HumanDuration` (image ages, container uptimes).
pub(crate) fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if secs / 60 == 1 {
        "About a minute".into()
    } else if secs / 60 < 60 {
        format!("{} minutes", secs / 60)
    } else {
        let hours = (secs as f64 / 3600.0 + 0.5) as i64;
        if hours == 1 {
            "About an hour".into()
        } else if hours < 48 {
            format!("{hours} hours")
        } else if hours < 24 * 7 * 2 {
            format!("{} days", hours / 24)
        } else if hours < 24 * 30 * 2 {
            format!("{} weeks", hours / 24 / 7)
        } else if hours < 24 * 365 * 2 {
            format!("{} months", hours / 24 / 30)
        } else {
            format!("{} years", secs / 3600 / 24 / 365)
        }
    }
}

// ------------------------------------------------------------------ logs

fn find(store: &Store, key: &str) -> Result<Container> {
    store.find(key).map_err(|e| miette!("{e}"))
}

fn logs(follow: bool, tail: &str, key: &str) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let c = find(&store, key)?;
    let path = store.dir_of(&c.id).join("log");
    // Streamed entry by entry: a log can be far larger than memory.
    let mut printer = Printer::new();
    let mut offset = if tail == "all" {
        container::for_each_log(&path, 0, None, |e| printer.print(&e))
    } else {
        let n: usize = tail
            .parse()
            .map_err(|_| miette!("invalid --tail {tail:?}: a number or \"all\""))?;
        // Count first, then print the last n of the entries counted.
        let mut count = 0usize;
        let end =
            container::for_each_log(&path, 0, None, |_| count += 1).map_err(|e| miette!("{e}"))?;
        let mut skip = count.saturating_sub(n);
        container::for_each_log(&path, 0, Some(end), |e| {
            if skip > 0 {
                skip -= 1;
            } else {
                printer.print(&e);
            }
        })
    }
    .map_err(|e| miette!("{e}"))?;
    printer.flush();
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Until the helper records the end (after it has copied the last
    // output); a helper that died without recording it ends this too.
    let mut dead_polls = 0;
    loop {
        let state = store.load(&c.id).ok();
        let recorded_end = state.as_ref().is_none_or(|c| c.status != Status::Running);
        if state.as_ref().is_some_and(|c| !c.is_alive()) {
            dead_polls += 1;
        }
        offset = container::for_each_log(&path, offset, None, |e| printer.print(&e))
            .map_err(|e| miette!("{e}"))?;
        printer.flush();
        if recorded_end || dead_polls > 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes log entries to kiln's stdout or stderr as the container wrote
/// them: a line split into several records comes out whole again, as from
/// `docker logs`.
struct Printer {
    out: std::io::StdoutLock<'static>,
    err: std::io::StderrLock<'static>,
}

impl Printer {
    fn new() -> Self {
        Printer {
            out: std::io::stdout().lock(),
            err: std::io::stderr().lock(),
        }
    }

    fn print(&mut self, e: &container::LogEntry) {
        // A closed pipe (`kiln logs c | head`) just ends the output.
        let _ = if e.stream == "stderr" {
            self.err.write_all(e.log.as_bytes())
        } else {
            self.out.write_all(e.log.as_bytes())
        };
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

// ------------------------------------------------------------ stop and rm

fn stop(time: u64, keys: &[String]) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let mut failed = false;
    for key in keys {
        let r = store.find(key).and_then(|c| {
            match container::stop(&store, &c.id, Duration::from_secs(time)) {
                // Removed by its own --rm as it stopped: stopped all the same.
                Ok(_) | Err(ContainerError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn rm(force: bool, keys: &[String]) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let mut failed = false;
    for key in keys {
        let r = store.find(key).and_then(|c| {
            if c.is_alive() {
                if !force {
                    return Err(ContainerError::State {
                        path: store.dir_of(&c.id),
                        detail: format!(
                            "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                            c.id
                        ),
                    });
                }
                container::kill(&c, 9);
                match container::stop(&store, &c.id, Duration::from_secs(0)) {
                    Ok(_) | Err(ContainerError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            store.remove(&c.id)
        });
        match r {
            Ok(()) => println!("{key}"),
            Err(ContainerError::State { detail, .. }) => {
                eprintln!("Error response from daemon: {detail}");
                failed = true;
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

// ------------------------------------------------------------------ exec

fn exec(
    env: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
    interactive: bool,
    key: &str,
    command: Vec<String>,
) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let c = find(&store, key)?;
    let (true, Some(pid), Some(start_time)) = (c.is_alive(), c.pid, c.start_time) else {
        eprintln!(
            "Error response from daemon: container {} is not running",
            c.id
        );
        return Ok(ExitCode::from(1));
    };
    let mut vars = c.env.clone();
    if !vars.iter().any(|e| e.starts_with("HOSTNAME=")) {
        vars.insert(0, format!("HOSTNAME={}", c.hostname));
    }
    for e in &env {
        set_env(&mut vars, e);
    }
    let spec = ExecSpec {
        pid,
        start_time,
        argv: command,
        env: vars,
        cwd: workdir.unwrap_or_else(|| c.cwd.clone()),
        user: user.unwrap_or_else(|| c.user.clone()),
        join_net: c.network == Network::None,
        seccomp: c.seccomp.clone(),
    };
    let exe = std::env::current_exe().map_err(|e| miette!("finding the kiln binary: {e}"))?;
    let code = container::launch::exec(&exe, &spec, interactive).map_err(|e| miette!("{e}"))?;
    Ok(exit(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_later_settings_replace() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        set_env(&mut env, "A=2");
        set_env(&mut env, "B=x=y");
        assert_eq!(env, vec!["PATH=/bin", "A=2", "B=x=y"]);
    }

    #[test]
    fn volumes_parse() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("new");
        let m = parse_volume(&format!("{}:/data:ro", h.display())).unwrap();
        assert!(h.is_dir(), "host folder made");
        assert!(matches!(m, Mount::Bind { readonly: true, ref target, .. } if target == "/data"));
        assert!(parse_volume("name:/data").is_err());
        assert!(parse_volume("/x:rel").is_err());
        assert!(parse_volume("/x:/y:zz").is_err());
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
    }
}

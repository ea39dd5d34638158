//! `kiln compose ps`, `logs`, `start`, `stop`, `restart`, `rm`, `exec`,
//! `run`, `images`, `port`, `pull`, `push`: the project's containers (found
//! by their `com.docker.compose.*` labels) through the run backend, with
//! docker compose's output.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_cache::Root;
use kiln_compose::Project;
use kiln_worker::container::run::{ExecOptions, Started};
use kiln_worker::container::{self, Container, LogEntry, LogSink, Status, Store};
use miette::{miette, IntoDiagnostic, Result};

use crate::commands::compose::{load_project, ComposeArgs};
use crate::commands::compose_up::{
    self as up, event, project_containers, service_of, services, short_name,
};
use crate::table::table;
use crate::units;

/// `compose ps`'s flags.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all stopped containers too.
    #[arg(short, long)]
    pub all: bool,
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Display services.
    #[arg(long)]
    pub services: bool,
    /// Services to list.
    pub names: Vec<String>,
}

/// `compose logs`'s flags.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Produce monochrome output.
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Don't print prefix in logs.
    #[arg(long = "no-log-prefix")]
    pub no_log_prefix: bool,
    /// Number of lines to show from the end of the logs for each container.
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Services to show.
    pub names: Vec<String>,
}

/// Flags of `start`, `stop`, `restart`.
#[derive(Debug, clap::Args)]
pub struct ServicesArgs {
    /// Specify a shutdown timeout in seconds.
    #[arg(short = 't', long, allow_negative_numbers = true)]
    pub timeout: Option<i64>,
    /// Services.
    pub names: Vec<String>,
}

/// `compose rm`'s flags.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Don't ask to confirm removal.
    #[arg(short, long)]
    pub force: bool,
    /// Stop the containers, if required, before removing.
    #[arg(short, long)]
    pub stop: bool,
    /// Remove any anonymous volumes attached to containers.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Services.
    pub names: Vec<String>,
}

/// `compose exec`'s flags.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Disable pseudo-TTY allocation. By default 'docker compose exec'
    /// allocates a TTY (when on a terminal).
    #[arg(short = 'T', long = "no-tty", alias = "no-TTY")]
    pub no_tty: bool,
    /// Allocate a pseudo-TTY (the default; kept for docker exec's users).
    #[arg(short = 't', long = "tty", hide = true)]
    pub tty: bool,
    /// Keep STDIN open even if not attached (the default).
    #[arg(short = 'i', long = "interactive", hide = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          require_equals = true, value_name = "BOOL")]
    pub interactive: bool,
    /// Detached mode.
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Run the command as this user.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Path to workdir directory for this command.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Index of the container if service has multiple replicas.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// SERVICE COMMAND [ARGS...]
    #[arg(required = true, num_args = 2.., trailing_var_arg = true)]
    pub service_and_command: Vec<String>,
}

/// `compose run`'s flags.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run container in background and print container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Don't start linked services.
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// Disable pseudo-TTY allocation. By default docker compose run
    /// allocates a TTY (when on a terminal).
    #[arg(short = 'T', long = "no-TTY", alias = "no-tty")]
    pub no_tty: bool,
    /// Allocate a pseudo-TTY (the default; kept for docker run's users).
    #[arg(short = 't', long = "tty", hide = true)]
    pub tty: bool,
    /// Keep STDIN open even if not attached (the default).
    #[arg(short = 'i', long = "interactive", hide = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          require_equals = true, value_name = "BOOL")]
    pub interactive: bool,
    /// Run as specified username or uid.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Override the entrypoint of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// SERVICE [COMMAND [ARGS...]]
    #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
    pub service_and_command: Vec<String>,
}

/// `compose port`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PortArgs {
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Index of the container if service has multiple replicas.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The service.
    pub service: String,
    /// The private port.
    pub private_port: u16,
}

/// Flags of `images`, `pull`, `push`.
#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    /// Only display IDs (images).
    #[arg(short, long)]
    pub quiet: bool,
    /// Push or pull what can be, ignoring failures.
    #[arg(long = "ignore-push-failures", alias = "ignore-pull-failures")]
    pub ignore_failures: bool,
    /// Services.
    pub names: Vec<String>,
}

fn open(a: &ComposeArgs) -> Result<(Project, Root, Store)> {
    let p = load_project(a, true)?;
    let root = Root::from_env().into_diagnostic()?;
    let store = Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    Ok((p, root, store))
}

fn check_names(p: &Project, names: &[String]) -> Result<()> {
    let all = services(p);
    for n in names {
        if !all.contains_key(n) {
            return Err(miette!("no such service: {n}"));
        }
    }
    Ok(())
}

fn selected(store: &Store, p: &Project, names: &[String], oneoff: bool) -> Result<Vec<Container>> {
    check_names(p, names)?;
    Ok(project_containers(store, &p.name, oneoff)?
        .into_iter()
        .filter(|c| names.is_empty() || names.iter().any(|n| n == service_of(c)))
        .collect())
}

// -------------------------------------------------------------------- ps

/// The STATUS column, as `docker ps` (and compose) write it.
pub fn status_text(c: &Container) -> String {
    let now = container::now();
    match c.effective_status() {
        Status::Created => "Created".into(),
        Status::Running => format!(
            "Up {}{}",
            units::human_duration(now - c.started.unwrap_or(now)),
            crate::commands::container::status_suffix(c)
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            c.exit_code.unwrap_or(255),
            units::human_duration(now - c.finished.unwrap_or(now))
        ),
    }
}

/// `kiln compose ps`.
pub fn ps(a: &ComposeArgs, x: &PsArgs) -> Result<ExitCode> {
    let (p, root, store) = open(a)?;
    let cs: Vec<Container> = selected(&store, &p, &x.names, true)?
        .into_iter()
        .filter(|c| x.all || c.effective_status() == Status::Running)
        .collect();
    let mut out = std::io::stdout().lock();
    if x.quiet || x.services {
        for c in &cs {
            let _ = writeln!(
                out,
                "{}",
                if x.quiet {
                    c.id.as_str()
                } else {
                    service_of(c)
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = container::now();
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            let mut command = c.command.join(" ");
            if command.chars().count() > 20 {
                command = command.chars().take(19).collect::<String>() + "…";
            }
            vec![
                c.name.clone(),
                c.image.clone(),
                format!("\"{command}\""),
                service_of(c).to_string(),
                format!("{} ago", units::human_duration(now - c.created)),
                status_text(c),
                crate::commands::compose_extra::displayable(
                    &crate::commands::compose_extra::ports_of(&root, c),
                ),
            ]
        })
        .collect();
    let header = [
        "NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS",
    ];
    let _ = out.write_all(table(&header, &rows, 0).as_bytes());
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ logs

/// compose's rainbow of prefix colours (cyan, yellow, green, magenta,
/// blue, then their intense forms), one per container in turn.
const COLORS: [&str; 10] = [
    "36", "33", "32", "35", "34", "36;1", "33;1", "32;1", "35;1", "34;1",
];

/// Writes entries of one container with its prefix (`web-1  | `), a whole
/// line at a time to the shared output.
struct Prefixed {
    prefix: String,
    out: Arc<Mutex<()>>,
    partial: String,
}

impl LogSink for Prefixed {
    fn entry(&mut self, e: &LogEntry) {
        self.partial.push_str(&e.log);
        if !self.partial.ends_with('\n') {
            return;
        }
        let text = std::mem::take(&mut self.partial);
        let _guard = self.out.lock();
        let mut o = std::io::stdout().lock();
        for line in text.lines() {
            let _ = writeln!(o, "{}{line}", self.prefix);
        }
    }

    fn flush(&mut self) {
        let _ = std::io::stdout().flush();
    }
}

fn prefixes(p: &Project, cs: &[Container], color: bool, none: bool) -> Vec<String> {
    let width = cs
        .iter()
        .map(|c| short_name(c, &p.name).len())
        .max()
        .unwrap_or(0);
    cs.iter()
        .enumerate()
        .map(|(i, c)| {
            if none {
                return String::new();
            }
            let n = short_name(c, &p.name);
            let text = format!("{n}{} |", " ".repeat(width - n.len()));
            if color {
                format!("\x1b[{}m{text}\x1b[0m ", COLORS[i % COLORS.len()])
            } else {
                format!("{text} ")
            }
        })
        .collect()
}

/// Follows every container's log (one thread each) until all have ended;
/// with `abort`, until the first ends. The exit code of `up`: the first
/// ended container's with `abort`, else 0.
pub fn attach_logs(
    store: &Store,
    p: &Project,
    cs: &[Container],
    color: bool,
    abort: bool,
) -> ExitCode {
    let color = color && std::io::stdout().is_terminal();
    let lock = Arc::new(Mutex::new(()));
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    let pre = prefixes(p, cs, color, false);
    for (c, prefix) in cs.iter().zip(pre) {
        let store = store.clone();
        let id = c.id.clone();
        let name = c.name.clone();
        let lock = lock.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut sink = Prefixed {
                prefix,
                out: lock,
                partial: String::new(),
            };
            let _ = container::follow_log(&store, &id, None, true, &mut sink);
            let _ = tx.send((id, name));
        });
    }
    drop(tx);
    for (id, name) in rx {
        let exit = store.load(&id).ok().and_then(|c| c.exit_code).unwrap_or(0);
        println!("{name} exited with code {exit}");
        if abort {
            eprintln!("Aborting on container exit...");
            return crate::commands::run::exit(exit);
        }
    }
    ExitCode::SUCCESS
}

/// `kiln compose logs`.
pub fn logs(a: &ComposeArgs, x: &LogsArgs) -> Result<ExitCode> {
    let (p, _root, store) = open(a)?;
    let cs = selected(&store, &p, &x.names, false)?;
    let tail = if x.tail == "all" {
        None
    } else {
        Some(
            x.tail
                .parse::<usize>()
                .map_err(|_| miette!("invalid --tail {:?}", x.tail))?,
        )
    };
    let color = !x.no_color && std::io::stdout().is_terminal();
    let pre = prefixes(&p, &cs, color, x.no_log_prefix);
    let lock = Arc::new(Mutex::new(()));
    let mut threads = Vec::new();
    for (c, prefix) in cs.iter().zip(pre) {
        let mut sink = Prefixed {
            prefix,
            out: lock.clone(),
            partial: String::new(),
        };
        if !x.follow {
            let _ = container::follow_log(&store, &c.id, tail, false, &mut sink);
            continue;
        }
        let store = store.clone();
        let id = c.id.clone();
        threads.push(std::thread::spawn(move || {
            let _ = container::follow_log(&store, &id, tail, true, &mut sink);
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------- start, stop, restart, rm

/// `kiln compose start`.
pub fn start(a: &ComposeArgs, x: &ServicesArgs) -> Result<ExitCode> {
    let (p, _root, store) = open(a)?;
    let all = services(&p);
    let order = up::start_order(&all, &x.names, false)?;
    let cs = selected(&store, &p, &x.names, false)?;
    for s in order {
        for c in cs.iter().filter(|c| service_of(c) == s) {
            if c.is_alive() {
                continue;
            }
            event("Container", &c.name, "Starting");
            up::start(&store, c)?;
            event("Container", &c.name, "Started");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stop_all(store: &Store, p: &Project, cs: &[Container], timeout: Option<i64>) {
    up::stop_ordered(store, p, cs, timeout, &|c| {
        event("Container", &c.name, "Stopping")
    });
    for c in cs.iter().filter(|c| c.is_alive()) {
        event("Container", &c.name, "Stopped");
    }
}

/// `kiln compose stop`.
pub fn stop(a: &ComposeArgs, x: &ServicesArgs) -> Result<ExitCode> {
    let (p, _root, store) = open(a)?;
    let cs = selected(&store, &p, &x.names, false)?;
    stop_all(&store, &p, &cs, x.timeout);
    Ok(ExitCode::SUCCESS)
}

/// `kiln compose restart`.
pub fn restart(a: &ComposeArgs, x: &ServicesArgs) -> Result<ExitCode> {
    let (p, _root, store) = open(a)?;
    let cs = selected(&store, &p, &x.names, false)?;
    for c in &cs {
        event("Container", &c.name, "Restarting");
        if c.is_alive() {
            let t = x.timeout.map(|t| Duration::from_secs(t.max(0) as u64));
            let _ = container::lifecycle::stop_with(&store, &c.id, t, None);
        }
        let fresh = store.load(&c.id).map_err(|e| miette!("{e}"))?;
        up::start(&store, &fresh)?;
        event("Container", &c.name, "Started");
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln compose rm`: stopped containers (running ones with `-s`).
pub fn rm(a: &ComposeArgs, x: &RmArgs) -> Result<ExitCode> {
    let (p, root, store) = open(a)?;
    let cs = selected(&store, &p, &x.names, true)?;
    if x.stop {
        stop_all(&store, &p, &cs, None);
    }
    let mut gone = 0;
    for c in &cs {
        let c = store.load(&c.id).map_err(|e| miette!("{e}"))?;
        if c.is_alive() {
            continue;
        }
        event("Container", &c.name, "Removing");
        up::remove(&root, &store, &c, None, x.volumes);
        event("Container", &c.name, "Removed");
        gone += 1;
    }
    if gone == 0 {
        eprintln!("No stopped containers");
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------ exec, run

/// Whether `exec`/`run` get a pseudo-terminal: docker compose's default
/// (`-T` defaults to "stdout is not a terminal"), and only when stdin is a
/// terminal too, so a terminal feeds the container's.
fn wants_tty(no_tty: bool, asked: bool) -> bool {
    !no_tty && (asked || std::io::stdout().is_terminal()) && std::io::stdin().is_terminal()
}

/// `kiln compose exec SERVICE CMD…`: with a terminal by default (`-T`:
/// none), stdin passed on.
pub fn exec(a: &ComposeArgs, x: &ExecArgs) -> Result<ExitCode> {
    let (p, _root, store) = open(a)?;
    let tty = !x.detach && wants_tty(x.no_tty, x.tty);
    let mut sc = x.service_and_command.clone();
    let command = sc.split_off(1);
    let service = sc.concat();
    check_names(&p, std::slice::from_ref(&service))?;
    let c = project_containers(&store, &p.name, false)?
        .into_iter()
        .find(|c| service_of(c) == service && up::number_of(c) == x.index)
        .ok_or_else(|| miette!("service {service:?} is not running"))?;
    let opts = ExecOptions {
        command,
        env: x.env.clone(),
        workdir: x.workdir.clone(),
        user: x.user.clone(),
        tty: tty.then(|| kiln_worker::container::attach::window_size().unwrap_or((0, 0))),
        ..ExecOptions::default()
    };
    let spec = container::run::exec_spec(&c, opts).map_err(|e| miette!("{e}"))?;
    if x.detach {
        kiln_worker::container::attach::exec_detached(&spec).map_err(|e| miette!("{e}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if tty {
        return Ok(crate::commands::attach::exec_attached(
            &spec,
            x.interactive,
            Default::default(),
        ));
    }
    let code = container::run::exec(&spec, x.interactive).map_err(|e| miette!("{e}"))?;
    Ok(crate::commands::run::exit(code))
}

/// `kiln compose run [--rm] SERVICE [CMD…]`: a one-off container
/// (`<project>-<service>-run-<id>`), its dependencies started first.
pub fn run(a: &ComposeArgs, x: &RunArgs) -> Result<ExitCode> {
    let (p, root, store) = open(a)?;
    let mut sc = x.service_and_command.clone();
    let command = sc.split_off(1);
    let service = sc.concat();
    let all = services(&p);
    let mut svc = all
        .get(&service)
        .cloned()
        .ok_or_else(|| miette!("no such service: {service}"))?;
    if !x.no_deps {
        let deps: Vec<String> = up::start_order(&all, std::slice::from_ref(&service), true)?
            .into_iter()
            .filter(|s| *s != service)
            .collect();
        if !deps.is_empty() {
            let u = up::UpArgs {
                detach: true,
                ..Default::default()
            };
            up::ensure_up(&root, &store, &p, &deps, &u)?;
        }
    }
    // The one-off's own settings over the service's.
    if let Some(o) = svc.as_object_mut() {
        if !command.is_empty() {
            o.insert("command".into(), serde_json::json!(command));
        }
        if let Some(e) = &x.entrypoint {
            o.insert("entrypoint".into(), serde_json::json!([e]));
        }
        if let Some(u) = &x.user {
            o.insert("user".into(), serde_json::json!(u));
        }
        if let Some(w) = &x.workdir {
            o.insert("working_dir".into(), serde_json::json!(w));
        }
        let env = o
            .entry("environment")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(m) = env.as_object_mut() {
            for e in &x.env {
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                m.insert(k.into(), serde_json::json!(v));
            }
        }
        // One-offs publish no ports (compose's default) and restart never.
        o.remove("ports");
        o.remove("restart");
    }
    let suffix: String = run_suffix();
    let cname = x
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{service}-run-{suffix}", p.name));
    let mut warn = |w: String| eprintln!("WARN[0000] {w}");
    let mut plan = up::plan(&p, &service, &svc, &cname, 1, true, &mut warn)?;
    // compose's one-off: stdin kept open, a terminal when on one.
    let tty = !x.detach && wants_tty(x.no_tty, x.tty);
    let interactive = x.interactive && !x.detach;
    if tty {
        plan.argv.insert(0, "-t".into());
    }
    if interactive {
        plan.argv.insert(0, "-i".into());
    }
    let (store, c) = up::create(plan, x.rm)?;
    if x.detach {
        up::start(&store, &c)?;
        println!("{}", c.name);
        return Ok(ExitCode::SUCCESS);
    }
    if tty {
        return Ok(crate::commands::attach::run_attached(
            &store,
            &c,
            interactive,
            Default::default(),
            // As `docker compose run`: signals go to the service's process.
            true,
        ));
    }
    let started = container::run::start(&store, &c, false, interactive);
    let code = match started.map_err(|e| miette!("{e}"))? {
        Started::Exited(code) => code,
        Started::Detached(_) => 0,
    };
    Ok(crate::commands::run::exit(code))
}

/// 12 hex digits naming a one-off container (`-run-<suffix>`).
fn run_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let d = kiln_cache::Digest::of(format!("{t}-{}", std::process::id()).as_bytes());
    d.hex().chars().take(12).collect()
}

// ------------------------------------------------- images, port, pull, push

/// `kiln compose images`.
pub fn images(a: &ComposeArgs, x: &NamesArgs) -> Result<ExitCode> {
    let (p, _root, store) = open(a)?;
    let cs = selected(&store, &p, &x.names, false)?;
    let mut out = std::io::stdout().lock();
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            let (repo, tag) = match kiln_cache::Reference::parse(&c.image) {
                Ok(r) => (r.familiar_name(), r.tag().unwrap_or("latest").to_string()),
                Err(_) => (c.image.clone(), String::new()),
            };
            let id = c
                .image_id
                .strip_prefix("sha256:")
                .unwrap_or(&c.image_id)
                .chars()
                .take(12)
                .collect();
            vec![c.name.clone(), repo, tag, id]
        })
        .collect();
    if x.quiet {
        for r in rows {
            let _ = writeln!(out, "{}", r[3]);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["CONTAINER", "REPOSITORY", "TAG", "IMAGE ID"];
    let _ = out.write_all(table(&header, &rows, 0).as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// `kiln compose port SERVICE PRIVATE_PORT`: the published port, from the
/// service's `ports` (what `up` asked `kiln run` to publish).
pub fn port(a: &ComposeArgs, x: &PortArgs) -> Result<ExitCode> {
    let p = load_project(a, true)?;
    let all = services(&p);
    let svc = all
        .get(&x.service)
        .ok_or_else(|| miette!("no such service: {}", x.service))?;
    for port in svc
        .get("ports")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let target = port.get("target").and_then(|t| t.as_u64());
        let proto = port
            .get("protocol")
            .and_then(|t| t.as_str())
            .unwrap_or("tcp");
        if target == Some(u64::from(x.private_port)) && proto == x.protocol {
            let published = port
                .get("published")
                .map(kiln_compose::value::display)
                .unwrap_or_default();
            let ip = port
                .get("host_ip")
                .and_then(|t| t.as_str())
                .unwrap_or("0.0.0.0");
            println!("{ip}:{published}");
            return Ok(ExitCode::SUCCESS);
        }
    }
    Err(miette!(
        "no port {}/{} for container {}-{}-{}",
        x.private_port,
        x.protocol,
        p.name,
        x.service,
        x.index
    ))
}

/// `kiln compose pull`: the images of services with `image:` (those with
/// only `build:` are built, not pulled).
pub fn pull(a: &ComposeArgs, x: &NamesArgs) -> Result<ExitCode> {
    let (p, root, _store) = open(a)?;
    check_names(&p, &x.names)?;
    // A service built here whose image the store has is not pulled.
    Ok(transfer_services(&p, &root, x, false, |svc, image| {
        svc.get("build").is_none() || up::image_id(&root, image).is_none()
    }))
}

/// `kiln compose push`: the images of services with `build:` and `image:`.
pub fn push(a: &ComposeArgs, x: &NamesArgs) -> Result<ExitCode> {
    let (p, root, _store) = open(a)?;
    check_names(&p, &x.names)?;
    Ok(transfer_services(&p, &root, x, true, |svc, _| {
        svc.get("build").is_some()
    }))
}

/// Pulls (or pushes) the `image:` of every named service that `wanted`
/// keeps, with docker compose's progress lines; exit 1 when one failed
/// (unless `--ignore-*-failures`).
fn transfer_services(
    p: &Project,
    root: &Root,
    x: &NamesArgs,
    push: bool,
    wanted: impl Fn(&serde_json::Value, &str) -> bool,
) -> ExitCode {
    let (doing, done) = if push {
        ("Pushing", "Pushed")
    } else {
        ("Pulling", "Pulled")
    };
    let mut failed = false;
    for (name, svc) in services(p) {
        if !x.names.is_empty() && !x.names.contains(&name) {
            continue;
        }
        let Some(image) = svc.get("image").and_then(|i| i.as_str()) else {
            continue;
        };
        if !wanted(&svc, image) {
            continue;
        }
        event("Image", image, doing);
        match transfer(root, image, push) {
            Ok(()) => event("Image", image, done),
            Err(e) => {
                eprintln!(" {name} Error {e}");
                failed = !x.ignore_failures;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Pulls or pushes `image` with the store's registry settings.
fn transfer(root: &Root, image: &str, push: bool) -> std::result::Result<(), String> {
    use kiln_cache::registry::{self, NoProgress, PullOptions, PushOptions, RegistryConfig};
    let r = kiln_cache::Reference::parse(image).map_err(|e| e.to_string())?;
    let config = RegistryConfig::load(root.path()).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = if push {
        let opts = PushOptions {
            config,
            ..PushOptions::default()
        };
        rt.block_on(registry::push(root, &r, &r, &opts, Arc::new(NoProgress)))
            .map(|_| ())
    } else {
        let opts = PullOptions {
            config,
            ..PullOptions::default()
        };
        rt.block_on(registry::pull(root, &r, &opts, Arc::new(NoProgress)))
            .map(|_| ())
    };
    rt.shutdown_background();
    out.map_err(|e| e.to_string())
}

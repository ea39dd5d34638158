//! The container lifecycle commands beyond `run`: `create`, `start`,
//! `restart`, `kill`, `wait`, `rename`, `pause`, `unpause`, `top`,
//! `stats`, `container prune`, and the `kiln container <verb>` group with
//! docker's aliases; plus `kiln run`/`create`'s lifecycle flags
//! ([`LifeFlags`]). The work is `kiln_worker::container`'s; this module
//! parses and prints as the docker CLI does.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use kiln_worker::container::life::{self, LifeError, LifeOptions, RestartPolicy};
use kiln_worker::container::run::Started;
use kiln_worker::container::{self, Container, ContainerError, StartReport, Status, Store};
use miette::{miette, Result};

use super::run::{exit, open_store, RunArgs};

/// SIGKILL (9 on every Linux architecture).
const SIGKILL: i32 = 9;

/// The lifecycle verbs, at kiln's top level and under `kiln container`.
#[derive(Debug, Subcommand)]
pub enum Verbs {
    /// Create a new container (as `run` does, without starting it).
    Create(Box<RunArgs>),
    /// Start one or more stopped containers.
    Start {
        /// Attach the output and wait: the container's exit code.
        #[arg(short, long)]
        attach: bool,
        /// Attach this terminal's stdin.
        #[arg(short, long)]
        interactive: bool,
        /// Override the key sequence for detaching a container (a
        /// terminal container's; docker's syntax, default ctrl-p,ctrl-q).
        #[arg(long = "detach-keys", value_name = "KEYS")]
        detach_keys: Option<String>,
        /// Containers (names or IDs). None: every container whose restart
        /// policy says it should run but whose process is gone (after a
        /// reboot: what docker's daemon does when it starts).
        containers: Vec<String>,
    },
    /// Restart one or more containers.
    Restart {
        /// Seconds to wait before killing.
        #[arg(
            short = 't',
            long = "time",
            visible_alias = "timeout",
            allow_negative_numbers = true
        )]
        time: Option<i64>,
        /// Signal to stop with.
        #[arg(short = 's', long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill one or more running containers (SIGKILL by default).
    Kill {
        /// Signal to send.
        #[arg(short = 's', long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Block until containers stop, then print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename { container: String, new_name: String },
    /// Pause all processes within one or more containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause all processes within one or more containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Display the running processes of a container.
    Top {
        container: String,
        /// `ps` options (default: -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_options: Vec<String>,
    },
    /// Display a live stream of containers' resource usage statistics.
    Stats {
        /// Show all containers (default: running ones).
        #[arg(short, long)]
        all: bool,
        /// Print one table and exit.
        #[arg(long)]
        no_stream: bool,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Format output with a Go template (`table`, `json`, or e.g.
        /// `{{.Name}}: {{.CPUPerc}}`).
        #[arg(long)]
        format: Option<String>,
        containers: Vec<String>,
    },
}

/// `kiln container ...`'s own verbs (the rest are the top-level ones).
#[derive(Debug, Subcommand)]
pub enum Only {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        no_trunc: bool,
        #[arg(short = 'f', long)]
        filter: Vec<String>,
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        more: super::container_ps::PsMore,
    },
    /// Display detailed information on one or more containers.
    Inspect {
        /// Format the output using a Go template.
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Display total file sizes (SizeRw, SizeRootFs).
        #[arg(short, long)]
        size: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove all stopped containers.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Filter values (`until=<timestamp|duration>`).
        #[arg(long)]
        filter: Vec<String>,
    },
}

/// `kiln container <verb>`: every container verb, as `docker container`.
#[derive(Debug, Subcommand)]
pub enum Group {
    #[command(flatten)]
    Only(Only),
    #[command(flatten)]
    Verbs(Verbs),
    #[command(flatten)]
    Run(super::run::Cmd),
}

/// This module's commands, flattened into kiln's top level.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    #[command(flatten)]
    Verbs(Verbs),
    /// Manage containers.
    #[command(subcommand)]
    Container(Group),
}

/// `kiln run`/`create`'s lifecycle flags (docker's names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LifeFlags {
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Signal to stop the container (default: the image's STOPSIGNAL, else
    /// SIGTERM).
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before killing (default 10).
    #[arg(long = "stop-timeout", allow_negative_numbers = true)]
    stop_timeout: Option<i64>,
    /// Run an init as pid 1 that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Command to run to check health.
    #[arg(long = "health-cmd")]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h).
    #[arg(long = "health-interval")]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h).
    #[arg(long = "health-timeout")]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long = "health-retries")]
    health_retries: Option<i64>,
    /// Start period for the container to initialize before failures count
    /// (ms|s|m|h).
    #[arg(long = "health-start-period")]
    health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h).
    #[arg(long = "health-start-interval")]
    health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// Memory limit (e.g. 32m, 1g), enforced through the container's
    /// cgroup; going over it gets a process OOM-killed.
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap (default: twice
    /// --memory).
    #[arg(long = "memory-swap", allow_negative_numbers = true)]
    memory_swap: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    cpus: Option<String>,
    /// CPU shares (relative weight, default 1024).
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<i64>,
    /// Namespaced kernel parameter KEY=VALUE (net.*, fs.mqueue.*, kernel.shm*,
    /// kernel.msg*, kernel.sem).
    #[arg(long = "sysctl")]
    sysctl: Vec<String>,
    /// Add a supplementary group (name or gid) to the container's processes.
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// Size of /dev/shm (e.g. 256m; default 64m).
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Resource limit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048).
    #[arg(long = "ulimit")]
    ulimit: Vec<String>,
    /// Add Linux capabilities (e.g. NET_ADMIN, ALL).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities (e.g. CHOWN, ALL).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Give the container every capability and no seccomp filter.
    #[arg(long)]
    privileged: bool,
    /// PID namespace: `host` or `container:NAME` (default: its own).
    #[arg(long)]
    pid: Option<String>,
    /// IPC namespace: `host`, `container:NAME`, `private` or `shareable`.
    #[arg(long)]
    ipc: Option<String>,
}

/// `kiln run`/`create`'s image and bookkeeping flags (docker's `--pull`,
/// `-q`, `--cidfile`, `--label-file`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunMoreFlags {
    /// Pull image before running ("always", "missing", "never").
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Suppress the pull output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the container ID to the file.
    #[arg(long)]
    pub cidfile: Option<std::path::PathBuf>,
    /// Read in a line delimited file of labels.
    #[arg(long = "label-file")]
    pub label_file: Vec<std::path::PathBuf>,
    /// Logging driver: json-file (default), local or none.
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Log driver option (json-file and local: max-size=10m, max-file=3).
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
}

impl RunMoreFlags {
    /// `--log-driver` and `--log-opt`, checked as docker's json-file and
    /// local drivers check them.
    pub fn log_config(&self) -> Result<kiln_worker::container::logs::LogConfig, LifeError> {
        use kiln_worker::container::logs::{LogConfig, Rotation};
        let driver = self.log_driver.clone().unwrap_or_default();
        let known: &[&str] = match driver.as_str() {
            "" | "json-file" => &[
                "max-size",
                "max-file",
                "compress",
                "labels",
                "labels-regex",
                "env",
                "env-regex",
                "tag",
            ],
            "local" => &["max-size", "max-file", "compress"],
            "none" => &[],
            other => {
                return Err(LifeError::Other(format!(
                "failed to create container: logger: no log driver named '{other}' is registered"
            )))
            }
        };
        let shown = if driver.is_empty() {
            "json-file"
        } else {
            driver.as_str()
        };
        let mut opts = std::collections::BTreeMap::new();
        for o in &self.log_opt {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| LifeError::Other(format!("invalid key value pair format: {o}")))?;
            if !known.contains(&k) {
                return Err(LifeError::Other(format!(
                    "unknown log opt '{k}' for {shown} log driver"
                )));
            }
            opts.insert(k.to_string(), v.to_string());
        }
        let (mut max_size, mut max_files) = if driver == "local" {
            (20 << 20, 5)
        } else {
            (0, 1)
        };
        if let Some(v) = opts.get("max-size") {
            max_size = life::parse_size(v)?;
        }
        if let Some(v) = opts.get("max-file") {
            max_files = v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| LifeError::Other("max-file cannot be less than 1".into()))?;
            if max_size <= 0 && max_files > 1 {
                return Err(LifeError::Other(
                    "max-file can only be set when max-size is also set".into(),
                ));
            }
        }
        Ok(LogConfig {
            driver,
            opts,
            rotation: (max_size > 0).then_some(Rotation {
                max_size: max_size as u64,
                max_files: max_files as u32,
            }),
        })
    }

    /// The `--label-file` lines (blank lines and `#` comments skipped),
    /// then `labels` (`--label`, which win).
    pub fn labels(&self, labels: &[String]) -> Result<Vec<String>, LifeError> {
        let mut out = Vec::new();
        for f in &self.label_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| LifeError::Other(format!("open {}: {e}", f.display())))?;
            out.extend(
                text.lines()
                    .map(str::trim_start)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        out.extend(labels.iter().cloned());
        Ok(out)
    }
}

/// `--cidfile`: made (empty) before the container, so a file left by
/// another container is refused first, as docker's; removed again unless
/// the ID is written.
pub struct CidFile {
    path: std::path::PathBuf,
    written: bool,
}

impl CidFile {
    /// Creates the file; docker's words when it exists.
    pub fn create(path: &std::path::Path) -> Result<CidFile, LifeError> {
        match std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => Ok(CidFile {
                path: path.to_path_buf(),
                written: false,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(LifeError::Other(format!(
                    "container ID file found, make sure the other container isn't running or delete {}",
                    path.display()
                )))
            }
            Err(e) => Err(LifeError::Other(format!(
                "failed to create the container ID file: {e}"
            ))),
        }
    }

    /// Writes the ID (without a newline, as docker's).
    pub fn write(mut self, id: &str) -> Result<(), LifeError> {
        std::fs::write(&self.path, id).map_err(|e| {
            LifeError::Other(format!("failed to write the container ID to the file: {e}"))
        })?;
        self.written = true;
        Ok(())
    }
}

impl Drop for CidFile {
    fn drop(&mut self) {
        if !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `kiln exec`'s privilege and environment-file flags (docker's).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExecFlags {
    /// Give extended privileges to the command (every capability; the
    /// container's seccomp filter stays, as docker's).
    #[arg(long)]
    pub privileged: bool,
    /// Read in a file of environment variables (KEY=VALUE lines).
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
}

impl ExecFlags {
    /// The `--env-file` variables (blank lines and `#` comments skipped,
    /// a bare KEY taken from here as `-e KEY`), then `env` (`-e`, which
    /// wins); docker's message for an unreadable file.
    pub fn env(&self, env: Vec<String>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for f in &self.env_file {
            let text =
                std::fs::read_to_string(f).map_err(|e| format!("open {}: {e}", f.display()))?;
            for line in text.lines() {
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                out.push(line.to_string());
            }
        }
        out.extend(env);
        Ok(out)
    }
}

impl LifeFlags {
    /// The flags checked and parsed (docker's errors for bad values).
    pub fn options(&self) -> Result<LifeOptions, LifeError> {
        if let Some(s) = &self.stop_signal {
            life::parse_signal(s)?;
        }
        let dur = |d: &Option<String>| -> Result<i64, LifeError> {
            d.as_deref()
                .map(|s| life::parse_go_duration(s).map(life::nanos))
                .unwrap_or(Ok(0))
        };
        let mut o = LifeOptions {
            stop_signal: self.stop_signal.clone(),
            stop_timeout: self.stop_timeout,
            init: self.init,
            restart_policy: RestartPolicy::parse(&self.restart)?,
            no_healthcheck: self.no_healthcheck,
            ..LifeOptions::default()
        };
        let h = &mut o.health;
        if let Some(cmd) = &self.health_cmd {
            h.test = vec!["CMD-SHELL".into(), cmd.clone()];
        }
        h.interval = dur(&self.health_interval)?;
        h.timeout = dur(&self.health_timeout)?;
        h.start_period = dur(&self.health_start_period)?;
        h.start_interval = dur(&self.health_start_interval)?;
        h.retries = self.health_retries.unwrap_or(0);
        if h.retries < 0 {
            return Err(LifeError::Other(
                "--health-retries cannot be negative".into(),
            ));
        }
        if self.no_healthcheck && *h != life::HealthConfig::default() {
            return Err(LifeError::HealthConflict);
        }
        o.resources = self.resources()?;
        o.security = self.security()?;
        Ok(o)
    }
}

impl LifeFlags {
    /// `--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`,
    /// `--pids-limit`, checked as docker's daemon checks them.
    fn resources(&self) -> Result<life::Resources, LifeError> {
        let mut r = life::Resources::default();
        if let Some(m) = &self.memory {
            r.memory = life::parse_size(m)?;
            if r.memory > 0 && r.memory < 6 << 20 {
                return Err(LifeError::Other(
                    "Minimum memory limit allowed is 6MB".into(),
                ));
            }
        }
        if let Some(s) = &self.memory_swap {
            r.memory_swap = if s == "-1" { -1 } else { life::parse_size(s)? };
            if r.memory_swap != 0 && r.memory == 0 {
                return Err(LifeError::Other(
                    "You should always set the Memory limit when using Memoryswap limit, see usage"
                        .into(),
                ));
            }
            if r.memory_swap > 0 && r.memory_swap < r.memory {
                return Err(LifeError::Other(
                    "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
                ));
            }
        }
        if let Some(c) = &self.cpus {
            let n: f64 = c.parse().map_err(|_| {
                LifeError::Other(format!("invalid argument {c:?} for \"--cpus\" flag"))
            })?;
            let online = std::thread::available_parallelism().map_or(1, |n| n.get());
            if n < 0.01 || n > online as f64 {
                return Err(LifeError::Other(format!(
                    "Range of CPUs is from 0.01 to {online}.00, as there are only {online} CPUs available"
                )));
            }
            r.nano_cpus = (n * 1e9).round() as i64;
        }
        if let Some(sh) = self.cpu_shares {
            if sh < 0 {
                return Err(LifeError::Other(
                    "invalid CPU shares: must be positive".into(),
                ));
            }
            r.cpu_shares = sh;
        }
        r.pids_limit = self.pids_limit.unwrap_or(0);
        if let Some(s) = &self.shm_size {
            r.shm_size = life::parse_size(s)?;
            if r.shm_size <= 0 {
                return Err(LifeError::Other("SHM size must be greater than 0".into()));
            }
        }
        Ok(r)
    }

    /// `--ulimit`, `--cap-add/--cap-drop`, `--privileged`, `--pid`, `--ipc`.
    fn security(&self) -> Result<life::Security, LifeError> {
        let mut s = life::Security {
            privileged: self.privileged,
            cap_add: self
                .cap_add
                .iter()
                .map(|c| life::Security::cap_name(c))
                .collect(),
            cap_drop: self
                .cap_drop
                .iter()
                .map(|c| life::Security::cap_name(c))
                .collect(),
            ulimit_specs: self.ulimit.clone(),
            group_add: self.group_add.clone(),
            ..life::Security::default()
        };
        s.caps()?;
        for kv in &self.sysctl {
            let (k, v) = check_sysctl(kv).map_err(LifeError::Other)?;
            s.sysctls.insert(k, v);
        }
        for u in &self.ulimit {
            s.ulimits.push(parse_ulimit(u)?);
        }
        let store = || super::run::open_store().map_err(|e| LifeError::Other(e.to_string()));
        for (flag, given, dst) in [
            ("pid", &self.pid, &mut s.pid_mode),
            ("ipc", &self.ipc, &mut s.ipc_mode),
        ] {
            let Some(v) = given else { continue };
            *dst = match v.as_str() {
                "" | "host" => v.clone(),
                "private" | "shareable" if flag == "ipc" => v.clone(),
                _ => match v.strip_prefix("container:") {
                    Some(key) => {
                        let (_root, st) = store()?;
                        let c = st.find(key).map_err(|e| LifeError::Other(e.to_string()))?;
                        format!("container:{}", c.id)
                    }
                    None => {
                        return Err(LifeError::Other(format!(
                            "--{flag}: invalid {flag} mode: {v}"
                        )))
                    }
                },
            };
        }
        Ok(s)
    }
}

/// `--ulimit NAME=SOFT[:HARD]` as docker's `units.ParseUlimit`.
fn parse_ulimit(s: &str) -> Result<kiln_worker::sandbox::Rlimit, LifeError> {
    let bad =
        |m: &str| LifeError::Other(format!("invalid argument {s:?} for \"--ulimit\" flag: {m}"));
    let (name, limits) = s
        .split_once('=')
        .ok_or_else(|| bad("invalid ulimit argument"))?;
    let resource = kiln_worker::resources::ulimit_resource(name)
        .ok_or_else(|| bad(&format!("invalid ulimit type: {name}")))?;
    let num = |v: &str| -> Result<u64, LifeError> {
        match v.parse::<i64>() {
            Ok(-1) => Ok(u64::MAX), // RLIM_INFINITY
            Ok(n) if n >= 0 => Ok(n as u64),
            _ => Err(bad(&format!("invalid ulimit value {v:?}"))),
        }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(limits)?, num(limits)?),
    };
    if soft > hard {
        return Err(bad(&format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )));
    }
    Ok(kiln_worker::sandbox::Rlimit {
        resource,
        soft,
        hard,
    })
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Verbs(v) => verbs(v),
        Cmd::Container(Group::Verbs(v)) => verbs(v),
        Cmd::Container(Group::Run(c)) => super::run::run(c),
        Cmd::Container(Group::Only(Only::Ls {
            all,
            quiet,
            no_trunc,
            filter,
            format,
            more,
        })) => super::run::ps(all, quiet, no_trunc, &filter, format.as_deref(), &more),
        Cmd::Container(Group::Only(Only::Prune { force, filter })) => prune(force, &filter),
        Cmd::Container(Group::Only(Only::Inspect {
            format,
            size,
            containers,
        })) => super::container_inspect::inspect(
            &containers,
            format.as_deref(),
            super::container_inspect::Kind::Container,
            None,
            size,
        ),
    }
}

fn verbs(v: Verbs) -> Result<ExitCode> {
    match v {
        Verbs::Create(a) => create(*a),
        Verbs::Start {
            attach,
            interactive,
            detach_keys,
            containers,
        } => start(attach, interactive, detach_keys.as_deref(), &containers),
        Verbs::Restart {
            time,
            signal,
            containers,
        } => restart(time, signal.as_deref(), &containers),
        Verbs::Kill { signal, containers } => kill(&signal, &containers),
        Verbs::Wait { containers } => wait(&containers),
        Verbs::Rename {
            container,
            new_name,
        } => rename(&container, &new_name),
        Verbs::Pause { containers } => super::container_top::pause(&containers, true),
        Verbs::Unpause { containers } => super::container_top::pause(&containers, false),
        Verbs::Top {
            container,
            ps_options,
        } => super::container_top::top(&container, &ps_options),
        Verbs::Stats {
            all,
            no_stream,
            no_trunc,
            format,
            containers,
        } => super::container_top::stats(all, no_stream, no_trunc, format.as_deref(), &containers),
    }
}

/// What `ps` adds after `Up 5 seconds`: ` (Paused)`, or the health
/// status as docker shows it (` (healthy)`, ` (health: starting)`).
pub(crate) fn status_suffix(c: &Container) -> String {
    if c.life.paused {
        return " (Paused)".to_string();
    }
    match c.life.health.as_ref().map(|h| h.status.as_str()) {
        Some("starting") => " (health: starting)".to_string(),
        Some(s) if !s.is_empty() => format!(" ({s})"),
        _ => String::new(),
    }
}

fn code_of(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------- create

fn create(a: RunArgs) -> Result<ExitCode> {
    match super::run::create_container(a) {
        Ok((_store, c)) => {
            println!("{}", c.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("kiln: {e}");
            Ok(exit(container::EXIT_KILN))
        }
    }
}

// ----------------------------------------------------------------- start

/// Makes a stopped container ready to start again: an explicit start
/// re-arms its restart policy, and a record left "running" by a reboot
/// (its process gone) is closed first.
fn prepare_start(store: &Store, c: &Container) -> Result<Container, ContainerError> {
    let dead_running = c.status == Status::Running && !c.is_alive();
    store.update(&c.id, |c| {
        if dead_running {
            c.status = Status::Exited;
            c.pid = None;
            c.exit_code = c.exit_code.or(Some(255));
        }
        c.error = None;
        c.life.manually_stopped = false;
        c.life.restart_count = 0;
    })
}

/// Starts `c` detached; `Err` holds docker's message.
fn start_detached(store: &Store, c: &Container) -> Result<(), (i32, String)> {
    let c = prepare_start(store, c).map_err(|e| (1, e.to_string()))?;
    match container::run::start(store, &c, true, false) {
        Ok(Started::Detached(StartReport::Started)) | Ok(Started::Exited(0)) => Ok(()),
        Ok(Started::Detached(StartReport::Failed { code, message })) => Err((code, message)),
        Ok(Started::Exited(code)) => Err((code, format!("exited with {code}"))),
        Err(e) => Err((container::EXIT_KILN, e.to_string())),
    }
}

fn start(
    attach: bool,
    interactive: bool,
    detach_keys: Option<&str>,
    keys: &[String],
) -> Result<ExitCode> {
    let detach_keys = match super::attach::parse_keys(detach_keys) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    let (_root, store) = open_store()?;
    if keys.is_empty() {
        return start_restartable(&store);
    }
    if (attach || interactive) && keys.len() > 1 {
        eprintln!("kiln: you cannot start and attach multiple containers at once");
        return Ok(ExitCode::from(1));
    }
    let mut failed = Vec::new();
    for key in keys {
        let c = match store.find(key) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed.push(key.clone());
                continue;
            }
        };
        if attach || interactive {
            if c.is_alive() {
                // tty: attaching to a running container is `kiln attach`'s
                // (worker::container::attach); without it, follow the log.
                eprintln!("kiln: container {key} is already running");
                return Ok(ExitCode::from(1));
            }
            // A container made with -t is attached through its terminal,
            // as `run -it` is; without one, the helper runs in the
            // foreground as `kiln run` does.
            let c = prepare_start(&store, &c).map_err(|e| miette!("{e}"))?;
            if c.tty.tty {
                return Ok(super::attach::run_attached(
                    &store,
                    &c,
                    interactive,
                    detach_keys,
                    // docker's start proxies signals to a container
                    // without a terminal only.
                    false,
                ));
            }
            return match container::run::start(&store, &c, false, interactive) {
                Ok(Started::Exited(code)) => Ok(exit(code)),
                Ok(Started::Detached(_)) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("Error response from daemon: {e}");
                    Ok(exit(container::EXIT_KILN))
                }
            };
        }
        if c.is_alive() {
            println!("{key}");
            continue;
        }
        match start_detached(&store, &c) {
            Ok(()) => println!("{key}"),
            Err((_, msg)) => {
                eprintln!("Error response from daemon: {msg}");
                failed.push(key.clone());
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("Error: failed to start containers: {}", failed.join(", "));
    }
    Ok(code_of(!failed.is_empty()))
}

/// `kiln start` with no names: what docker's daemon does when it comes up.
/// Every container recorded as running whose process is gone (the machine
/// rebooted, its helper was killed) and whose policy is `always`,
/// `unless-stopped` or `on-failure` is started again; one stopped by the
/// user stays stopped, and so does an `always` one (docker restarts those
/// too on a daemon restart: kiln has no daemon whose restart to follow, so
/// it restarts what was running when the machine went down).
fn start_restartable(store: &Store) -> Result<ExitCode> {
    let mut failed = false;
    for c in store.list().map_err(|e| miette!("{e}"))? {
        let was_running = c.status == Status::Running && !c.is_alive();
        if !was_running || !c.life.restart_policy.restarts() || c.life.manually_stopped {
            continue;
        }
        match start_detached(store, &c) {
            Ok(()) => println!("{}", c.name),
            Err((_, msg)) => {
                eprintln!("Error response from daemon: {}: {msg}", c.name);
                failed = true;
            }
        }
    }
    Ok(code_of(failed))
}

// ------------------------------------------------------ stop and restart

fn parse_signal_arg(s: Option<&str>) -> Result<Option<i32>, LifeError> {
    s.map(life::parse_signal).transpose()
}

fn timeout_of(time: Option<i64>) -> Option<Duration> {
    time.map(|t| {
        if t < 0 {
            Duration::from_secs(u64::MAX / 4)
        } else {
            Duration::from_secs(t as u64)
        }
    })
}

/// `kiln stop [-t T] [-s SIG] C...`: prints each name given once stopped.
pub(crate) fn stop(time: Option<i64>, signal: Option<&str>, keys: &[String]) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let sig = match parse_signal_arg(signal) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut failed = false;
    for key in keys {
        let res = store.find(key).and_then(|c| {
            match container::lifecycle::stop_with(&store, &c.id, timeout_of(time), sig) {
                Ok(_) | Err(ContainerError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        });
        match res {
            Ok(()) => println!("{key}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(code_of(failed))
}

fn restart(time: Option<i64>, signal: Option<&str>, keys: &[String]) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let sig = match parse_signal_arg(signal) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut failed = false;
    for key in keys {
        let res = store
            .find(key)
            .and_then(|c| container::lifecycle::stop_with(&store, &c.id, timeout_of(time), sig))
            .map_err(|e| e.to_string())
            .and_then(|c| start_detached(&store, &c).map_err(|(_, m)| m));
        match res {
            Ok(()) => println!("{key}"),
            Err(msg) => {
                eprintln!("Error response from daemon: Cannot restart container {key}: {msg}");
                failed = true;
            }
        }
    }
    Ok(code_of(failed))
}

// ------------------------------------------------------------------ kill

fn kill(signal: &str, keys: &[String]) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let sig = match life::parse_signal(signal) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut failed = false;
    for key in keys {
        let c = match store.find(key) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
                continue;
            }
        };
        if !c.is_alive() {
            eprintln!(
                "Error response from daemon: cannot kill container: {key}: container {} is not running",
                c.id
            );
            failed = true;
            continue;
        }
        // As docker's daemon: SIGKILL, or the container's own stop signal,
        // ends it for good (no restart policy brings it back); another
        // signal (e.g. SIGHUP to reload) does not.
        let stops = sig == SIGKILL || c.life.stop_signal.is_none() || c.life.stop_signal() == sig;
        if stops {
            let _ = store.update(&c.id, |c| c.life.manually_stopped = true);
            if c.life.paused {
                container::pause::thaw(&c);
            }
        }
        container::kill(&c, sig);
        println!("{key}");
    }
    Ok(code_of(failed))
}

// ------------------------------------------------------------------ wait

/// Waits until `id` is not running (nor about to restart): its exit code,
/// or `None` when it went away (`--rm`) with `last` the last one seen.
fn wait_one(store: &Store, id: &str) -> Result<i32, ContainerError> {
    let mut last = 0;
    // The process can end a moment before its helper records the exit:
    // "running, process gone" is only believed after a grace period.
    let mut gone_since: Option<std::time::Instant> = None;
    loop {
        let c = match store.load(id) {
            Ok(c) => c,
            Err(_) => return Ok(last),
        };
        last = c.exit_code.unwrap_or(last);
        let running = c.is_alive() || c.life.restarting;
        if !running && c.status != Status::Created {
            if c.status != Status::Running {
                return Ok(c.exit_code.unwrap_or(0));
            }
            let since = *gone_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                // Recorded as running, process and helper gone: no known code.
                return Ok(c.exit_code.unwrap_or(255));
            }
        } else {
            gone_since = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait(keys: &[String]) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let mut failed = false;
    for key in keys {
        match store.find(key).and_then(|c| wait_one(&store, &c.id)) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(code_of(failed))
}

// ---------------------------------------------------------------- rename

fn rename(key: &str, new_name: &str) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let res = store.find(key).and_then(|c| {
        if c.name == new_name.trim_start_matches('/') {
            return Err(ContainerError::State {
                path: store.dir_of(&c.id),
                detail: "Renaming a container with the same name as its current name".into(),
            });
        }
        store.rename(&c.id, new_name.trim_start_matches('/'))
    });
    match res {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(ContainerError::State { detail, .. }) => {
            eprintln!("Error response from daemon: {detail}");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("Error response from daemon: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

// ----------------------------------------------------------------- prune

/// `until=` as docker takes it: a timestamp (RFC 3339 or seconds) or a
/// duration before now; the cut-off in seconds since the epoch.
fn until_cutoff(v: &str) -> Option<i64> {
    crate::units::docker_time_ns(v, i128::from(container::now()) * 1_000_000_000)
        .map(|ns| ns.div_euclid(1_000_000_000) as i64)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn prune(force: bool, filters: &[String]) -> Result<ExitCode> {
    let mut until = None;
    for f in filters {
        match f.split_once('=') {
            Some(("until", v)) => match until_cutoff(v) {
                Some(t) => until = Some(t),
                None => {
                    eprintln!("kiln: invalid filter 'until={v}'");
                    return Ok(ExitCode::from(1));
                }
            },
            _ => {
                eprintln!("kiln: invalid filter '{f}' (kiln's containers support until=)");
                return Ok(ExitCode::from(1));
            }
        }
    }
    if !force {
        print!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let (_root, store) = open_store()?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for c in store.list().map_err(|e| miette!("{e}"))? {
        if c.is_alive() || c.life.restarting || until.is_some_and(|t| c.created >= t) {
            continue;
        }
        let size = dir_size(&store.dir_of(&c.id).join("upper"));
        if store.remove(&c.id).is_ok() {
            reclaimed += size;
            deleted.push(c.id);
        }
    }
    let mut out = std::io::stdout().lock();
    if !deleted.is_empty() {
        let _ = writeln!(out, "Deleted Containers:");
        for id in &deleted {
            let _ = writeln!(out, "{id}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "Total reclaimed space: {}",
        crate::units::human_size(reclaimed)
    );
    Ok(ExitCode::SUCCESS)
}

/// docker's check of `--sysctl KEY=VALUE`: only parameters a container's
/// own namespaces hold (IPC and network) may be set, so none reaches the
/// host's kernel.
fn check_sysctl(kv: &str) -> Result<(String, String), String> {
    const KEYS: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let refuse =
        || format!("invalid argument {kv:?} for \"--sysctl\" flag: sysctl '{kv}' is not allowed");
    let (k, v) = kv.split_once('=').ok_or_else(refuse)?;
    let allowed = KEYS.contains(&k) || k.starts_with("net.") || k.starts_with("fs.mqueue.");
    if !allowed || k.contains("..") || k.contains('/') {
        return Err(refuse());
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod sysctl_tests {
    use super::check_sysctl;

    #[test]
    fn namespaced_keys_only() {
        assert_eq!(
            check_sysctl("net.core.somaxconn=1024"),
            Ok(("net.core.somaxconn".into(), "1024".into()))
        );
        assert!(check_sysctl("kernel.shmmax=1").is_ok());
        assert!(check_sysctl("fs.mqueue.msg_max=20").is_ok());
        for bad in [
            "vm.max_map_count=262144",
            "kernel.hostname=x",
            "net.core.somaxconn",
            "net/../../x=1",
        ] {
            assert!(check_sysctl(bad).is_err(), "{bad}");
        }
    }
}

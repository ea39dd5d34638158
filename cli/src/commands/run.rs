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

use clap::Subcommand;
use kiln_cache::Root;
use kiln_worker::container::run::{ExecError, ExecOptions, RunError, RunOptions, Started};
use kiln_worker::container::{
    self, Container, ContainerError, LogSink, StartReport, Status, Store,
};
use kiln_worker::sandbox::{Device, Mount};
use kiln_worker::seccomp::{Profile, Seccomp, SeccompError};
use miette::{miette, Result};

use crate::table::table;
use crate::units;

/// The container commands, flattened into kiln's top level as docker has
/// them.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a command in a new container.
    // `-h` is docker's --hostname: clap's automatic `-h` help is off and
    // `--help` comes back in RunArgs.
    #[command(disable_help_flag = true)]
    Run(Box<RunArgs>),
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
        // --- life
        /// Filter output (status=, name=, label=, ancestor=, health=, id=,
        /// exited=).
        #[arg(short = 'f', long)]
        filter: Vec<String>,
        /// Format output with a Go template (`table …`, `json`, `{{.ID}}`).
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        more: super::container_ps::PsMore,
    },
    /// Show a container's output.
    Logs {
        /// Keep printing new output until the container ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines ("all" for every line).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        // --- life
        /// Show timestamps.
        #[arg(short = 't', long)]
        timestamps: bool,
        /// Show logs since a timestamp (e.g. 2013-01-02T13:23:37Z) or
        /// relative (e.g. 42m for 42 minutes).
        #[arg(long)]
        since: Option<String>,
        /// Show logs before a timestamp or relative time.
        #[arg(long)]
        until: Option<String>,
        /// Show extra details provided to logs (the log driver's
        /// attributes: kiln's json-file log has none, so a space, as
        /// docker's shows for none).
        #[arg(long)]
        details: bool,
        /// Container name or ID (a prefix of the ID will do).
        container: String,
    },
    /// Stop running containers: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before killing (default: the container's
        /// --stop-timeout, else 10; -1 waits forever).
        #[arg(
            short = 't',
            long = "time",
            visible_alias = "timeout",
            allow_negative_numbers = true
        )]
        time: Option<i64>,
        /// Signal to send (default: the image's STOPSIGNAL or
        /// --stop-signal, else SIGTERM).
        #[arg(short = 's', long)]
        signal: Option<String>,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers (their changes and logs).
    Rm {
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
        /// Remove the anonymous volumes of the containers too.
        #[arg(short = 'v', long = "volumes")]
        volumes: bool,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        #[command(flatten)]
        process: ProcessArgs,
        // --- tty flags
        #[command(flatten)]
        exec_tty: super::attach::ExecTtyArgs,
        // --- life flags
        #[command(flatten)]
        exec_life: super::container::ExecFlags,
        /// CONTAINER COMMAND [ARG...]: the container (name or ID), then the
        /// command; everything after the container belongs to the command.
        /// Flags before the container are kiln's (an unknown one is an
        /// error, never a container name); everything from the container
        /// on is the command's, flags included.
        #[arg(
            value_name = "CONTAINER COMMAND [ARG...]",
            required = true,
            num_args = 2..,
            trailing_var_arg = true
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
    /// How the root filesystem is made: `auto` (kernel overlay, else
    /// kiln's FUSE overlay, else a copy), `overlay`, `fuse` or `copy`
    /// (default: `"snapshotter"` of $KILN_ROOT/config.json, else auto).
    #[arg(long)]
    snapshotter: Option<String>,
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
    /// Bind mount a host path (HOST:CONTAINER[:ro|:rw]), mount a named
    /// volume (NAME:CONTAINER[:ro]) or an anonymous one (CONTAINER).
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// The container's hostname (default: its short ID).
    #[arg(short = 'h', long)]
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
    // --- vol flags
    /// Attach a filesystem mount: type=volume|bind|tmpfs,source=,target=,
    /// readonly,volume-opt=,volume-nocopy,tmpfs-size=,tmpfs-mode=,
    /// bind-propagation=.
    #[arg(long = "mount", value_name = "MOUNT")]
    mount: Vec<String>,
    /// Mount a tmpfs: PATH[:size=…,mode=…].
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Mount the volumes of these containers: CONTAINER[:ro|:rw].
    #[arg(long = "volumes-from", value_name = "CONTAINER[:ro|:rw]")]
    volumes_from: Vec<String>,
    // --- tty flags
    #[command(flatten)]
    tty: super::attach::RunTtyArgs,
    // --- net flags
    /// Connect to a network: `bridge` (the default; `host` for rootless
    /// kiln), `host`, a user-defined network, `none` or `container:NAME`.
    #[arg(long = "network", visible_alias = "net")]
    network: Option<String>,
    /// Network-scoped aliases (user-defined networks).
    #[arg(long = "network-alias", visible_alias = "net-alias")]
    network_alias: Vec<String>,
    /// IPv4 address on the network (user-defined networks).
    #[arg(long)]
    ip: Option<String>,
    /// Custom host-to-IP mapping (HOST:IP; IP may be `host-gateway`).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    add_host: Vec<String>,
    /// DNS servers.
    #[arg(long)]
    dns: Vec<String>,
    /// DNS search domains.
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// DNS options.
    #[arg(long = "dns-option", visible_alias = "dns-opt")]
    dns_option: Vec<String>,
    /// Link to another container (NAME[:ALIAS]), on the default bridge.
    #[arg(long)]
    link: Vec<String>,
    /// Publish a container's port(s) to the host:
    /// [IP:][HOST[-END]:]CONTAINER[-END][/tcp|/udp].
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// Publish every EXPOSEd port to a random host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Expose a port or a range of ports (PORT[-END][/PROTO]).
    #[arg(long = "expose", value_name = "PORT")]
    expose: Vec<String>,
    // --- life flags
    #[command(flatten)]
    pub(crate) life: super::container::LifeFlags,
    #[command(flatten)]
    pub(crate) life_more: super::container::RunMoreFlags,
    // --- compose flags
    /// Set metadata on the container (KEY=VALUE, or KEY for an empty value).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub(crate) label: Vec<String>,
    #[command(flatten)]
    process: ProcessArgs,
    /// IMAGE [COMMAND [ARG...]]: the image (name or ID; pulled when
    /// absent), then the command replacing its CMD. Flags before the image
    /// are kiln's (an unknown one is an error, never an image name);
    /// everything after the image belongs to the command, flags included.
    #[arg(
        value_name = "IMAGE [COMMAND [ARG...]]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    image_and_args: Vec<String>,
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Run(a) => Ok(match run_container(*a) {
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
            filter,
            format,
            more,
        } => ps(all, quiet, no_trunc, &filter, format.as_deref(), &more),
        Cmd::Logs {
            follow,
            tail,
            timestamps,
            since,
            until,
            details,
            container,
        } => {
            let mut window = super::container_ps::LogWindow::parse(
                timestamps,
                since.as_deref(),
                until.as_deref(),
            )
            .map_err(|e| miette!("{e}"))?;
            window.details = details;
            logs(follow, &tail, &container, window)
        }
        Cmd::Stop {
            time,
            signal,
            containers,
        } => super::container::stop(time, signal.as_deref(), &containers),
        Cmd::Rm {
            force,
            volumes,
            containers,
        } => rm(force, volumes, &containers),
        Cmd::Exec {
            process:
                ProcessArgs {
                    env,
                    workdir,
                    user,
                    interactive,
                },
            exec_tty,
            exec_life,
            mut container_and_command,
        } => {
            let command = container_and_command.split_off(1);
            let container = container_and_command.concat();
            // --- life: `--env-file` lines, then `-e` (docker's order).
            let env = match exec_life.env(env) {
                Ok(e) => e,
                Err(msg) => {
                    eprintln!("{msg}");
                    return Ok(exit(container::EXIT_KILN));
                }
            };
            exec(
                env,
                workdir,
                user,
                interactive,
                (&exec_tty, exec_life.privileged),
                &container,
                command,
            )
        }
        Cmd::ContainerHelper { args } => Ok(exit(container::helper_main(&args))),
    }
}

pub(crate) fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

pub(crate) fn open_store() -> Result<(Root, Store)> {
    let root = Root::from_env().map_err(|e| miette!("{e}"))?;
    let store = Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    Ok((root, store))
}

// ------------------------------------------------------------------- run

/// Why `kiln run` did not run: its flags, or the worker's refusal; printed
/// after `kiln: ` with exit code 125.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunFailure {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    MountFlag(#[from] super::volume::MountFlagError),
    #[error(transparent)]
    Life(#[from] kiln_worker::container::life::LifeError),
}

fn run_container(a: RunArgs) -> Result<ExitCode, RunFailure> {
    let (detach, interactive, tty) = (a.detach, a.process.interactive, a.tty.tty);
    let sig_proxy = a.tty.sig_proxy;
    // --- tty: refused before anything is made, as docker.
    let keys = match super::attach::parse_keys(a.tty.detach_keys.as_deref()) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    if !detach {
        if let Err(msg) = super::attach::check_tty(tty, interactive) {
            eprintln!("{msg}");
            return Ok(ExitCode::from(1));
        }
    }
    let (store, c) = create_container(a)?;
    if tty && !detach {
        return Ok(super::attach::run_attached(
            &store,
            &c,
            interactive,
            keys,
            sig_proxy,
        ));
    }
    Ok(
        match container::run::start_proxying(&store, &c, detach, interactive, sig_proxy)? {
            Started::Detached(StartReport::Started) => {
                println!("{}", c.id);
                ExitCode::SUCCESS
            }
            Started::Detached(StartReport::Failed { code, message }) => {
                eprintln!("kiln: {message}");
                exit(code)
            }
            Started::Exited(code) => exit(code),
        },
    )
}

/// `kiln run`'s first half, `kiln create`'s whole: the container recorded
/// (the image pulled if needed), not started.
pub(crate) fn create_container(a: RunArgs) -> Result<(Store, Container), RunFailure> {
    // --- life: `-q`, `--cidfile` (refused when it exists, before anything
    // is made; removed again when the container cannot be made).
    let (quiet, cidfile) = (a.life_more.quiet, a.life_more.cidfile.clone());
    let cid = cidfile
        .as_deref()
        .map(super::container::CidFile::create)
        .transpose()?;
    let (root, store, opts) = run_options(a)?;
    let image = opts.image.clone();
    let c = container::run::create(&root, &store, opts, || {
        if !quiet {
            eprintln!("Unable to find image '{image}' locally")
        }
    })?;
    if let Some(f) = cid {
        f.write(&c.id)?;
    }
    Ok((store, c))
}

/// `kiln run`'s flags checked and turned into the worker's options (and the
/// store they go to); `kiln compose` adjusts them before creating.
pub(crate) fn run_options(mut a: RunArgs) -> Result<(Root, Store, RunOptions), RunFailure> {
    let args = a.image_and_args.split_off(1.min(a.image_and_args.len()));
    let image = a.image_and_args.concat();
    let root = Root::from_env()?;
    let store = Store::open(root.path())?;
    let (network, net) = super::run_net::request(
        a.network.as_deref(),
        &a.network_alias,
        a.ip.as_deref(),
        &a.add_host,
        &a.dns,
        &a.dns_search,
        &a.dns_option,
        &a.link,
        (&a.publish, a.publish_all),
        &a.expose,
    )
    .map_err(FlagError::Net)?;
    let vol = super::volume::run_mounts(&a.volume, &a.mount, &a.tmpfs, parse_volume)?;
    let seccomp = parse_security_opts(&a.security_opt)?;
    let devices = a
        .device
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = RunOptions {
        image,
        args,
        entrypoint: a.entrypoint,
        env_files: a.env_file,
        env: a.process.env,
        workdir: a.process.workdir,
        user: a.process.user,
        name: a.name,
        hostname: a.hostname,
        network,
        mounts: vol.mounts,
        devices,
        seccomp,
        auto_remove: a.rm,
        snapshotter: super::snapshotter::resolve(a.snapshotter.as_deref(), &root)
            .map_err(|e| FlagError::Snapshotter(e.to_string()))?,
        volume_specs: vol.volumes,
        volumes_from: a.volumes_from,
        read_only: a.read_only,
        tty: container::TtyConfig {
            tty: a.tty.tty,
            open_stdin: a.process.interactive,
        },
        net,
        life: a.life.options()?,
        pull: container::run::PullPolicy::parse(&a.life_more.pull)
            .map_err(kiln_worker::container::life::LifeError::Other)?,
        log_config: a.life_more.log_config()?,
        labels: a
            .life_more
            .labels(&a.label)?
            .iter()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
    };
    // As runc: a parameter of a namespace the container shares with the
    // host would change the host.
    let sec = &opts.life.security;
    for key in sec.sysctls.keys() {
        if key.starts_with("net.") && opts.network == kiln_worker::sandbox::Network::Host {
            return Err(FlagError::Net(format!(
                "sysctl {key:?} not allowed in host network namespace"
            ))
            .into());
        }
        if !key.starts_with("net.") && sec.ipc_mode == "host" {
            return Err(FlagError::Net(format!(
                "sysctl {key:?} is not allowed in the hosts ipc namespace"
            ))
            .into());
        }
    }
    Ok((root, store, opts))
}

/// A `kiln run` flag that does not parse (docker's wording).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlagError {
    #[error("{0}")]
    Net(String),
    #[error("--snapshotter: {0}")]
    Snapshotter(String),
    #[error("invalid volume specification: '{0}'")]
    Volume(String),
    #[error("invalid volume specification: '{0}': the host path must be absolute (named volumes are not supported)")]
    VolumeHostRelative(String),
    #[error("invalid volume specification: '{0}': the container path must be absolute")]
    VolumeTargetRelative(String),
    #[error("creating {path}: {source}")]
    CreateHostDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    HostPath {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --security-opt: {0:?}")]
    SecurityOpt(String),
    #[error("opening seccomp profile ({path}) failed: {source}")]
    SeccompOpen {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    SeccompProfile {
        path: String,
        #[source]
        source: SeccompError,
    },
    #[error("invalid device specification: {0}")]
    Device(String),
    #[error("invalid device mode: {0}")]
    DeviceMode(String),
    #[error("error gathering device information while adding custom device {host:?}: {source}")]
    DeviceInfo {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a device node")]
    NotDevice(String),
}

/// `--security-opt`: the seccomp filter it asks for (a profile file is
/// read and checked now, so a bad one fails before anything starts).
fn parse_security_opts(opts: &[String]) -> Result<Seccomp, FlagError> {
    let mut seccomp = Seccomp::Default;
    for o in opts {
        // --- life: kiln always sets no_new_privs, as this asks.
        if matches!(
            o.as_str(),
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true"
        ) {
            continue;
        }
        let Some((k, v)) = o.split_once(['=', ':']) else {
            return Err(FlagError::SecurityOpt(o.clone()));
        };
        match k {
            "seccomp" if v == "unconfined" => seccomp = Seccomp::Unconfined,
            "seccomp" => {
                let text = std::fs::read_to_string(v).map_err(|source| FlagError::SeccompOpen {
                    path: v.to_string(),
                    source,
                })?;
                Profile::parse(&text).map_err(|source| FlagError::SeccompProfile {
                    path: v.to_string(),
                    source,
                })?;
                seccomp = Seccomp::Profile(text);
            }
            _ => return Err(FlagError::SecurityOpt(o.clone())),
        }
    }
    Ok(seccomp)
}

/// `--device HOST[:CONTAINER[:PERMS]]`, as docker reads it.
fn parse_device(d: &str) -> Result<Device, FlagError> {
    let parts: Vec<&str> = d.split(':').collect();
    let (host, target, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, t] if t.chars().all(|c| "rwm".contains(c)) && !t.is_empty() => (*h, *h, *t),
        [h, t] => (*h, *t, "rwm"),
        [h, t, p] => (*h, *t, *p),
        _ => return Err(FlagError::Device(d.to_string())),
    };
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        return Err(FlagError::DeviceMode(perms.to_string()));
    }
    if !host.starts_with('/') || !container::valid_target(target) {
        return Err(FlagError::Device(d.to_string()));
    }
    let host_path = std::fs::canonicalize(host).map_err(|source| FlagError::DeviceInfo {
        host: host.to_string(),
        source,
    })?;
    use std::os::unix::fs::FileTypeExt;
    let ft = std::fs::metadata(&host_path)
        .map_err(|source| FlagError::HostPath {
            path: host.to_string(),
            source,
        })?
        .file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Err(FlagError::NotDevice(host.to_string()));
    }
    Ok(Device {
        host: host_path,
        target: target.to_string(),
        readonly: !perms.contains('w'),
    })
}

/// `-v HOST:CONTAINER[:ro|:rw]`; the host folder is made when missing, as
/// docker does.
fn parse_volume(v: &str) -> Result<Mount, FlagError> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, true),
        [h, t, "rw"] => (*h, *t, false),
        _ => return Err(FlagError::Volume(v.to_string())),
    };
    if !host.starts_with('/') {
        return Err(FlagError::VolumeHostRelative(v.to_string()));
    }
    if !container::valid_target(target) {
        return Err(FlagError::VolumeTargetRelative(v.to_string()));
    }
    if !Path::new(host).exists() {
        std::fs::create_dir_all(host).map_err(|source| FlagError::CreateHostDir {
            path: host.to_string(),
            source,
        })?;
    }
    let source = std::fs::canonicalize(host).map_err(|source| FlagError::HostPath {
        path: host.to_string(),
        source,
    })?;
    Ok(Mount::Bind {
        source,
        target: target.to_string(),
        readonly,
    })
}

// -------------------------------------------------------------------- ps

pub(crate) fn ps(
    all: bool,
    quiet: bool,
    no_trunc: bool,
    filter: &[String],
    format: Option<&str>,
    more: &super::container_ps::PsMore,
) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let limit = more.limit();
    // --- life: filters and formats.
    let filters = match super::container_ps::Filters::parse(filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("Error response from daemon: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let fmt = crate::template::Format::parse(format).map_err(|e| miette!("{e}"))?;
    let mut list = container::run::list(&store, all || filters.implies_all() || limit.is_some())
        .map_err(|e| miette!("{e}"))?;
    list.retain(|(c, _)| filters.matches(c));
    if let Some(n) = limit {
        // Newest first already: the last n created.
        list.truncate(n);
    }
    let now = container::now();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut out = std::io::stdout().lock();
    for (c, status) in &list {
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
        let status_text = match *status {
            Status::Created => "Created".to_string(),
            Status::Running => format!(
                "Up {}{}",
                units::human_duration(now - c.started.unwrap_or(now)),
                super::container::status_suffix(c)
            ),
            Status::Exited => format!(
                "{} ({}) {} ago",
                if c.life.restarting {
                    "Restarting"
                } else {
                    "Exited"
                },
                c.exit_code.unwrap_or(255),
                units::human_duration(now - c.finished.unwrap_or(now))
            ),
        };
        rows.push(vec![
            id,
            c.image.clone(),
            format!("\"{command}\""),
            format!("{} ago", units::human_duration(now - c.created)),
            status_text,
            c.net
                .as_ref()
                .filter(|_| c.is_alive())
                .map(|n| {
                    n.ports
                        .iter()
                        .map(|b| b.ps_text())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            c.name.clone(),
        ]);
        if more.size {
            if let Some(r) = rows.last_mut() {
                r.push(super::container_ps::size_text(c, &store.dir_of(&c.id)));
            }
        }
    }
    let values: Vec<serde_json::Value> = list
        .iter()
        .zip(&rows)
        .map(|((c, _), r)| super::container_ps::row_value(c, r))
        .collect();
    if let Some(text) = fmt
        .render(&values, &super::container_ps::PS_FIELDS)
        .map_err(|e| miette!("{e}"))?
    {
        if !quiet {
            let _ = out.write_all(text.as_bytes());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !quiet {
        let mut header = vec![
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ];
        if more.size {
            header.push("SIZE");
        }
        let _ = out.write_all(table(&header, &rows, 0).as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ logs

fn find(store: &Store, key: &str) -> Result<Container> {
    store.find(key).map_err(|e| miette!("{e}"))
}

fn logs(
    follow: bool,
    tail: &str,
    key: &str,
    window: super::container_ps::LogWindow,
) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let c = find(&store, key)?;
    if !c.log_config.keeps_log() {
        eprintln!("Error response from daemon: configured logging driver does not support reading");
        return Ok(ExitCode::from(1));
    }
    let tail = if tail == "all" {
        None
    } else {
        Some(
            tail.parse()
                .map_err(|_| miette!("invalid --tail {tail:?}: a number or \"all\""))?,
        )
    };
    // Streamed entry by entry: a log can be far larger than memory.
    let mut printer = Printer::new();
    printer.window = window;
    container::follow_log(&store, &c.id, tail, follow, &mut printer).map_err(|e| miette!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes log entries to kiln's stdout or stderr as the container wrote
/// them: a line split into several records comes out whole again, as from
/// `docker logs`.
struct Printer {
    out: std::io::StdoutLock<'static>,
    err: std::io::StderrLock<'static>,
    // --- life: `-t`, `--since`, `--until`.
    window: super::container_ps::LogWindow,
}

impl Printer {
    fn new() -> Self {
        Printer {
            out: std::io::stdout().lock(),
            err: std::io::stderr().lock(),
            window: Default::default(),
        }
    }
}

impl LogSink for Printer {
    fn entry(&mut self, e: &container::LogEntry) {
        let Some(prefix) = self.window.admit(e) else {
            return;
        };
        // A closed pipe (`kiln logs c | head`) just ends the output.
        let _ = if e.stream == "stderr" {
            self.err
                .write_all(prefix.as_bytes())
                .and_then(|()| self.err.write_all(e.log.as_bytes()))
        } else {
            self.out
                .write_all(prefix.as_bytes())
                .and_then(|()| self.out.write_all(e.log.as_bytes()))
        };
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }

    fn past_end(&self) -> bool {
        self.window.past_until()
    }
}

// ------------------------------------------------------------ stop and rm

fn rm(force: bool, volumes: bool, keys: &[String]) -> Result<ExitCode> {
    let (root, store) = open_store()?;
    let mut failed = false;
    for key in keys {
        let before = store.find(key).ok();
        match container::remove_named(&store, key, force) {
            Ok(()) => {
                if let (true, Some(c)) = (volumes, before) {
                    container::volumes::remove_anonymous(root.path(), &c);
                }
                println!("{key}")
            }
            // docker's `rm -f`: a missing container is reported, not a failure.
            Err(e @ ContainerError::NotFound(_)) if force => {
                eprintln!("Error response from daemon: {e}")
            }
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
    (tty, privileged): (&super::attach::ExecTtyArgs, bool),
    key: &str,
    command: Vec<String>,
) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let c = find(&store, key)?;
    // --- tty
    let keys = match super::attach::parse_keys(tty.detach_keys.as_deref()) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    if !tty.detach {
        if let Err(msg) = super::attach::check_tty(tty.tty, interactive) {
            eprintln!("{msg}");
            return Ok(ExitCode::from(1));
        }
    }
    let opts = ExecOptions {
        command,
        env,
        workdir,
        user,
        tty: tty
            .tty
            .then(|| kiln_worker::container::attach::window_size().unwrap_or((0, 0))),
        privileged,
    };
    let code = match container::run::exec_spec(&c, opts) {
        Ok(spec) if tty.detach => {
            kiln_worker::container::attach::exec_detached(&spec).map_err(|e| miette!("{e}"))?;
            return Ok(ExitCode::SUCCESS);
        }
        Ok(spec) if tty.tty => {
            return Ok(super::attach::exec_attached(&spec, interactive, keys));
        }
        Ok(spec) => container::run::exec(&spec, interactive).map_err(|e| miette!("{e}"))?,
        Err(e @ ExecError::NotRunning(_)) => {
            eprintln!("Error response from daemon: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(miette!("{e}")),
    };
    Ok(exit(code))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

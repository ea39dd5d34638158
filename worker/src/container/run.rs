//! From an image to a started container: finding (or pulling) the image,
//! unpacking its layers, merging its config with `kiln run`'s options into
//! a [`Container`] record, and starting or exec-ing through the helper.
//! The CLI parses flags and prints; everything it decides on lives here so
//! another front end would run containers the same way.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_cache::image::{self, Resolved};
use kiln_cache::registry::{self, NoProgress, PullOptions, RegistryConfig, RegistryError};
use kiln_cache::{Digest, LayerRef, Reference, Root};
use serde_json::Value;

use super::launch::{self, LaunchError, StartReport};
use super::{now, Container, ContainerError, ExecSpec, Status, Store};
use crate::layers::{LayerError, LayerStore};
use crate::sandbox::{Device, Mount, Network};
use crate::seccomp::Seccomp;

/// Why a container could not be made or started. The messages are those
/// `kiln run` prints (after `kiln: `, with docker's exit code 125).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    RelativeWorkdir(String),
    #[error("invalid image {name:?}: {source}")]
    InvalidImage {
        name: String,
        #[source]
        source: kiln_cache::Error,
    },
    #[error("pulling {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    /// The runtime the pull runs on could not be made.
    #[error("{0}")]
    Runtime(#[source] io::Error),
    #[error("no command specified")]
    NoCommand,
    /// `--pull never` of an image that is not here (docker's words).
    #[error("No such image: {0}")]
    NoSuchImage(String),
    // --- net
    #[error(transparent)]
    Network(crate::network::RequestError),
    #[error("env file {}: {source}", path.display())]
    EnvFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image has {layers} layers but {diff_ids} diff_ids")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("image has {0} layers; kiln runs at most {max}", max = crate::snapshot::MAX_LOWERS)]
    TooManyLayers(usize),
    #[error("layer {0}: not a sha256 digest")]
    BadDigest(String),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("finding the kiln binary: {0}")]
    Exe(#[source] io::Error),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Volume(#[from] super::volumes::VolumeError),
}

/// `kiln run`'s options once the flags are parsed: what the image's config
/// is merged with.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The image as the user named it (name or ID).
    pub image: String,
    /// The command replacing the image's CMD (empty: keep it).
    pub args: Vec<String>,
    /// `--entrypoint`: replaces the image's ENTRYPOINT and drops its CMD
    /// (an empty one leaves just the arguments).
    pub entrypoint: Option<String>,
    /// `--env-file`s, read in order, before `env`.
    pub env_files: Vec<PathBuf>,
    /// `-e`: `KEY=VALUE`, or `KEY` to copy this process's value.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub network: Network,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub seccomp: Seccomp,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--snapshotter`.
    pub snapshotter: crate::snapshotter::Snapshotter,
    // --- vol
    /// `-v NAME:/path`, `-v /path`, `--mount type=volume`.
    pub volume_specs: Vec<super::volumes::VolumeSpec>,
    /// `--volumes-from C[:ro|:rw]`.
    pub volumes_from: Vec<String>,
    /// `--read-only`.
    pub read_only: bool,
    // --- tty
    /// `-t`, `-i`.
    pub tty: super::TtyConfig,
    // --- net
    /// Bridge networks and `container:X` (None: `network` says host/none).
    pub net: Option<crate::network::NetRequest>,
    // --- life
    /// Lifecycle flags (`--restart`, `--stop-signal`, `--init`, health).
    pub life: super::life::LifeOptions,
    /// `--pull`: when the image is pulled.
    pub pull: PullPolicy,
    /// `--log-driver`/`--log-opt`.
    pub log_config: super::logs::LogConfig,
    // --- compose
    /// `--label`: the container's labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `kiln run --pull`: when the image is pulled (docker's words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when it is not here (the default).
    #[default]
    Missing,
    /// Every time, before the container is made.
    Always,
    /// Never: an image that is not here is an error.
    Never,
}

impl PullPolicy {
    /// `always`, `missing` or `never`; docker's message otherwise.
    pub fn parse(s: &str) -> Result<PullPolicy, String> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            _ => Err(format!(
                "invalid pull option: '{s}': must be one of \"always\", \"missing\" or \"never\""
            )),
        }
    }
}

/// Makes the container for `opts` in `store`: the image is found (or
/// pulled, after `on_pull` is told), its layers unpacked, its config merged
/// with the options. The hostname defaults to the short ID, as docker's.
pub fn create(
    root: &Root,
    store: &Store,
    opts: RunOptions,
    on_pull: impl FnOnce(),
) -> Result<Container, RunError> {
    if let Some(w) = &opts.workdir {
        if !w.starts_with('/') {
            return Err(RunError::RelativeWorkdir(w.clone()));
        }
    }
    let (resolved, image_id) = match opts.pull {
        PullPolicy::Missing => find_or_pull(root, &opts.image, on_pull)?,
        PullPolicy::Always => pull(root, &opts.image)?,
        PullPolicy::Never => match image::find(root, &opts.image) {
            Ok(found) => {
                let resolved = image::resolve(root.blobs(), &found.descriptor, None, &opts.image)?;
                (resolved, found.descriptor.digest().to_string())
            }
            Err(_) => return Err(RunError::NoSuchImage(opts.image.clone())),
        },
    };
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
    let args = opts.args;
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), args),
        Some(e) => (vec![e.clone()], args),
        None => (
            strings("Entrypoint").unwrap_or_default(),
            if args.is_empty() {
                strings("Cmd").unwrap_or_default()
            } else {
                args
            },
        ),
    };
    let command: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if command.is_empty() {
        return Err(RunError::NoCommand);
    }
    let mut env = strings("Env").unwrap_or_default();
    for f in &opts.env_files {
        let body = std::fs::read_to_string(f).map_err(|source| RunError::EnvFile {
            path: f.clone(),
            source,
        })?;
        for line in body.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            set_env(&mut env, line);
        }
    }
    for e in &opts.env {
        set_env(&mut env, e);
    }
    let cwd = opts
        .workdir
        .or_else(|| Some(text("WorkingDir")).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let user = opts.user.unwrap_or_else(|| text("User"));
    let lowers = layer_dirs(root, &resolved)?;
    let (vol_mounts, volumes) = super::volumes::from_options(
        root.path(),
        store,
        &cfg,
        &opts.volume_specs,
        &opts.volumes_from,
        &opts.mounts,
        &lowers,
    )?;
    let mut mounts = opts.mounts;
    mounts.extend(vol_mounts);
    let c = Container {
        id: String::new(),
        name: opts.name.unwrap_or_default(),
        image: opts.image,
        image_id,
        command,
        env,
        cwd,
        user,
        hostname: opts.hostname.unwrap_or_default(),
        network: opts.network,
        mounts,
        lowers,
        auto_remove: opts.auto_remove,
        created: now(),
        created_ns: 0,
        status: Status::Created,
        pid: None,
        start_time: None,
        started: None,
        exit_code: None,
        finished: None,
        error: None,
        seccomp: opts.seccomp,
        devices: opts.devices,
        snapshotter: opts.snapshotter,
        volumes,
        read_only: opts.read_only,
        tty: opts.tty,
        net: None,
        life: opts.life.state(&cfg),
        log_config: opts.log_config,
        labels: opts.labels,
    };
    let c = store.create(c)?;
    let c = match &opts.net {
        Some(req) => match crate::network::request::resolve(
            store,
            &c,
            &crate::network::request::with_exposed(req, &cfg),
        ) {
            Ok(net) => store.update(&c.id, |c| c.net = Some(net))?,
            Err(e) => {
                let _ = store.remove(&c.id);
                return Err(RunError::Network(e));
            }
        },
        None => c,
    };
    Ok(if c.hostname.is_empty() {
        let short = c.short_id().to_string();
        store.update(&c.id, |c| c.hostname = short)?
    } else {
        c
    })
}

/// How a started container went.
#[derive(Debug)]
pub enum Started {
    /// Detached: whether its process started (the caller prints the ID).
    Detached(StartReport),
    /// In the foreground: it ran to the end with this exit code.
    Exited(i32),
}

/// Starts `c` through the helper (this same binary re-executed): in the
/// background with `detach`, else in the foreground until it ends.
pub fn start(
    store: &Store,
    c: &Container,
    detach: bool,
    interactive: bool,
) -> Result<Started, RunError> {
    start_proxying(store, c, detach, interactive, true)
}

/// [`start`], saying whether kiln in the foreground passes the signals it
/// gets on to the container's process (`--sig-proxy`, default true; with
/// false a Ctrl-C ends kiln and leaves the container running, as docker).
pub fn start_proxying(
    store: &Store,
    c: &Container,
    detach: bool,
    interactive: bool,
    sig_proxy: bool,
) -> Result<Started, RunError> {
    let exe = std::env::current_exe().map_err(RunError::Exe)?;
    // Absolute: the helper's pid 1 mounts and pivots with these paths.
    let dir = store.dir_of(&c.id);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    Ok(if detach {
        Started::Detached(launch::run_detached(&exe, &dir)?)
    } else {
        Started::Exited(launch::run_foreground_proxying(
            &exe,
            &dir,
            interactive,
            sig_proxy,
        )?)
    })
}

/// `kiln exec`'s options over what the container was made with.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    /// `-e`, applied over the container's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    // --- tty
    /// `-t`: a pseudo-terminal of this size (rows, columns; 0 unknown).
    pub tty: Option<(u16, u16)>,
    // --- life
    /// `--privileged`: every capability for the process.
    pub privileged: bool,
}

/// Why `kiln exec` could not start its process.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Docker's words; `kiln exec` prints them and exits 1.
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("finding the kiln binary: {0}")]
    Exe(#[source] io::Error),
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

/// The process `kiln exec` starts in the running container `c`: its
/// environment (with `HOSTNAME`, as docker's), working directory, user and
/// seccomp filter unless overridden.
pub fn exec_spec(c: &Container, opts: ExecOptions) -> Result<ExecSpec, ExecError> {
    let (true, Some(pid), Some(start_time)) = (c.is_alive(), c.pid, c.start_time) else {
        return Err(ExecError::NotRunning(c.id.clone()));
    };
    let mut vars = c.env.clone();
    if !vars.iter().any(|e| e.starts_with("HOSTNAME=")) {
        vars.insert(0, format!("HOSTNAME={}", c.hostname));
    }
    for e in &opts.env {
        set_env(&mut vars, e);
    }
    Ok(ExecSpec {
        pid,
        start_time,
        argv: opts.command,
        env: vars,
        cwd: opts.workdir.unwrap_or_else(|| c.cwd.clone()),
        user: opts.user.unwrap_or_else(|| c.user.clone()),
        join_net: c.network == Network::None || c.net.is_some(),
        seccomp: c.seccomp.clone(),
        tty: opts.tty,
        cgroups: c.life.cgroups.clone(),
        caps: c.life.security.caps().ok().filter(|_| {
            let s = &c.life.security;
            !s.cap_add.is_empty() || !s.cap_drop.is_empty()
        }),
        privileged: c.life.security.privileged,
        privileged_exec: opts.privileged,
        group_add: c.life.security.group_add.clone(),
    })
}

/// Runs `spec` in its container through the helper; its exit code.
pub fn exec(spec: &ExecSpec, interactive: bool) -> Result<i32, ExecError> {
    let exe = std::env::current_exe().map_err(ExecError::Exe)?;
    Ok(launch::exec(&exe, spec, interactive)?)
}

/// `KEY=VALUE` sets; a bare `KEY` copies this process's value (or nothing,
/// as docker). A later setting of a key replaces the earlier one.
pub fn set_env(env: &mut Vec<String>, spec: &str) {
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

/// The image by name or ID, and its manifest digest; pulled for this
/// host's platform (as `FROM` would) when absent, after `on_pull`.
pub fn find_or_pull(
    root: &Root,
    name: &str,
    on_pull: impl FnOnce(),
) -> Result<(Resolved, String), RunError> {
    let descriptor = match image::find(root, name) {
        Ok(found) => found.descriptor,
        Err(_) => {
            on_pull();
            return pull(root, name);
        }
    };
    let resolved = image::resolve(root.blobs(), &descriptor, None, name)?;
    Ok((resolved, descriptor.digest().to_string()))
}

/// Pulls `name` for this host's platform (`kiln run --pull always`, and
/// an image that is not here): the image and its manifest digest, as
/// [`find_or_pull`] gives them.
pub fn pull(root: &Root, name: &str) -> Result<(Resolved, String), RunError> {
    let r = Reference::parse(name).map_err(|source| RunError::InvalidImage {
        name: name.to_string(),
        source,
    })?;
    let host = image::Platform::host();
    let opts = PullOptions {
        platform: Some(registry::Platform {
            os: host.os.clone(),
            architecture: host.architecture.clone(),
            variant: host.variant.clone(),
        }),
        config: RegistryConfig::load(root.path())?,
        // The container needs its layers: unpacked as they come.
        unpack: crate::layer_unpack::PullUnpacker::new(root.path(), host.clone())
            .ok()
            .map(|u| registry::Unpacker(Arc::new(u))),
        ..PullOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let pulled = rt.block_on(registry::pull(root, &r, &opts, Arc::new(NoProgress)));
    rt.shutdown_background();
    let descriptor = pulled.map_err(|source| RunError::Pull {
        image: r.familiar_tagged(),
        source,
    })?;
    let resolved = image::resolve(root.blobs(), &descriptor, None, name)?;
    Ok((resolved, descriptor.digest().to_string()))
}

/// The image's layers unpacked (by diff_id, shared with builds), lowest
/// first.
pub fn layer_dirs(root: &Root, r: &Resolved) -> Result<Vec<PathBuf>, RunError> {
    let diff_ids: Vec<&str> = r
        .config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let layers = r.manifest.layers();
    if layers.len() != diff_ids.len() {
        return Err(RunError::LayerCount {
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    if layers.len() > crate::snapshot::MAX_LOWERS {
        return Err(RunError::TooManyLayers(layers.len()));
    }
    let store = LayerStore::open(root.path())?;
    let typed = |s: &str| {
        s.parse::<Digest>()
            .map_err(|_| RunError::BadDigest(s.to_string()))
    };
    let refs = layers
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| {
            Ok(LayerRef {
                diff_id: typed(diff_id)?,
                digest: typed(l.digest().as_ref())?,
                size: l.size(),
                media_type: l.media_type().to_string(),
            })
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    Ok(store.dirs(&refs, root.blobs())?)
}

/// The containers `kiln ps` lists: every one with `all`, else the running
/// ones; each with the status to show.
pub fn list(store: &Store, all: bool) -> Result<Vec<(Container, Status)>, ContainerError> {
    Ok(store
        .list()?
        .into_iter()
        .map(|c| {
            let s = c.effective_status();
            (c, s)
        })
        .filter(|(_, s)| all || *s == Status::Running)
        .collect())
}

/// A container made from the image whose manifest digest is `image_id`,
/// if any: `rmi` keeps such an image's content (the container's layers come
/// from it). An unreadable container store counts as none.
pub fn image_user(kiln_root: &std::path::Path, image_id: &str) -> Option<Container> {
    Store::open(kiln_root)
        .and_then(|st| st.list())
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.image_id == image_id)
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
}

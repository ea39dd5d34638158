//! `kiln pull`, `push`, `login`, `logout`: moving images to and from
//! registries, with docker's flags.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_cache::compress::{self, Compression, Conversion};
use kiln_cache::registry::{
    self, progress::Outcome, Credentials, DockerConfig, Progress, PullOptions, PushOptions,
    RegistryConfig, Secret,
};
use kiln_cache::{image, Reference, Root};
use kiln_worker::layer_unpack::{self, PullUnpacker};
use miette::{miette, IntoDiagnostic, Result};

/// Flags every registry command shares.
#[derive(Debug, Clone, Args)]
pub struct Net {
    /// Reach this registry (host[:port] or CIDR) without TLS checks, falling
    /// back to plain HTTP; adds to `insecure-registries` of $KILN_ROOT/config.json.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Download an image (all its platforms unless --platform) from a registry.
    Pull {
        /// Image name, e.g. busybox, reg:5000/app:1, app@sha256:…
        name: String,
        /// Keep only this platform (os/arch[/variant]) of a multi-platform image.
        #[arg(long)]
        platform: Option<String>,
        /// Print only the resulting digest.
        #[arg(short, long)]
        quiet: bool,
        /// Blobs downloaded at once.
        #[arg(long, default_value_t = 4)]
        max_concurrent_downloads: usize,
        #[command(flatten)]
        net: Net,
    },
    /// Upload an image to a registry.
    Push {
        /// Local image name; it is also the destination unless DEST is given.
        name: String,
        /// Push under this name instead (like `tag` then `push`).
        dest: Option<String>,
        /// Upload blobs in chunks of this many bytes (PATCH) instead of one PUT.
        #[arg(long, value_name = "BYTES")]
        chunk_size: Option<u64>,
        /// Print only the resulting digest.
        #[arg(short, long)]
        quiet: bool,
        /// Blobs uploaded at once.
        #[arg(long, default_value_t = 4)]
        max_concurrent_uploads: usize,
        /// Layer compression on the registry: gzip (docker's), zstd, or
        /// uncompressed. Layers stored uncompressed (kiln's builds) are
        /// compressed once and the result reused; compressed ones go as they are.
        #[arg(long, default_value = "gzip", value_parser = compress::parse_compression)]
        compression: Compression,
        /// Also recompress layers already compressed another way.
        #[arg(long)]
        force_compression: bool,
        #[command(flatten)]
        net: Net,
    },
    /// Log in to a registry (credentials go to docker's config.json or its helper).
    Login {
        /// Registry host[:port]; default docker.io.
        server: Option<String>,
        /// User name.
        #[arg(short, long)]
        username: Option<String>,
        /// Password (insecure: visible to other users; prefer --password-stdin).
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        net: Net,
    },
    /// Log out of a registry.
    Logout {
        /// Registry host[:port]; default docker.io.
        server: Option<String>,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
}

fn config(root: &Root, net: &Net) -> Result<RegistryConfig> {
    let mut cfg = RegistryConfig::load(root.path()).into_diagnostic()?;
    cfg.insecure_registries.extend(net.insecure.iter().cloned());
    Ok(cfg)
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Pull {
            name,
            platform,
            quiet,
            max_concurrent_downloads,
            net,
        } => {
            let root = Root::from_env().into_diagnostic()?;
            let reference = Reference::parse(&name).into_diagnostic()?;
            let platform = match platform {
                Some(p) => Some(
                    registry::Platform::parse(&p)
                        .map_err(|_| registry::RegistryError::InvalidPlatform(p.clone()))
                        .into_diagnostic()?,
                ),
                None => None,
            };
            // Layers of the platform pulled (the host's unless --platform)
            // are unpacked as they download, as docker pull leaves them.
            let unpack_for = platform.clone().unwrap_or_else(registry::Platform::host);
            let unpacker = PullUnpacker::new(root.path(), unpack_for.clone()).into_diagnostic()?;
            let opts = PullOptions {
                platform,
                config: config(&root, &net)?,
                concurrency: max_concurrent_downloads,
                unpack: Some(registry::Unpacker(Arc::new(unpacker))),
            };
            let progress = CliProgress::new(quiet);
            let desc = runtime()?
                .block_on(registry::pull(&root, &reference, &opts, progress.clone()))
                .into_diagnostic()?;
            progress.finish();
            if let Ok(r) = image::resolve(root.blobs(), &desc, Some(&unpack_for), &name) {
                layer_unpack::unpack_missing(&root, &r).into_diagnostic()?;
            }
            if quiet {
                println!("{}", desc.digest());
            } else {
                println!("Digest: {}", desc.digest());
                println!("Status: downloaded {reference}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Push {
            name,
            dest,
            chunk_size,
            quiet,
            max_concurrent_uploads,
            compression,
            force_compression,
            net,
        } => {
            let root = Root::from_env().into_diagnostic()?;
            let local = Reference::parse(&name).into_diagnostic()?;
            let remote = match &dest {
                Some(d) => Reference::parse(d).into_diagnostic()?,
                None => local.clone(),
            };
            let opts = PushOptions {
                config: config(&root, &net)?,
                chunk_size,
                concurrency: max_concurrent_uploads,
                mount: true,
                compression: Conversion {
                    compression,
                    force: force_compression,
                    level: None,
                },
            };
            let progress = CliProgress::new(quiet);
            let desc = runtime()?
                .block_on(registry::push(
                    &root,
                    &local,
                    &remote,
                    &opts,
                    progress.clone(),
                ))
                .into_diagnostic()?;
            progress.finish();
            if quiet {
                println!("{}", desc.digest());
            } else {
                println!(
                    "{}: digest: {} size: {}",
                    remote,
                    desc.digest(),
                    desc.size()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Login {
            server,
            username,
            password,
            password_stdin,
            net,
        } => {
            let registry_name = registry::login_server(server.as_deref());
            let username = match username {
                Some(u) => u,
                None => prompt("Username: ")?,
            };
            let password = if password_stdin {
                if password.is_some() {
                    return Err(miette!(
                        "--password and --password-stdin are mutually exclusive"
                    ));
                }
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).into_diagnostic()?;
                s.trim_end_matches(['\n', '\r']).to_string()
            } else if let Some(p) = password {
                eprintln!(
                    "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
                );
                p
            } else {
                prompt_secret("Password: ")?
            };
            if username.is_empty() || password.is_empty() {
                return Err(miette!(
                    "a user name and a password are both required to log in"
                ));
            }
            let creds = Credentials {
                username,
                password: Secret::new(password),
            };
            let root = Root::from_env().into_diagnostic()?;
            let cfg = config(&root, &net)?;
            runtime()?
                .block_on(registry::verify_login(&cfg, &registry_name, &creds))
                .into_diagnostic()?;
            let mut dc = DockerConfig::load_default().into_diagnostic()?;
            dc.store(&registry_name, &creds).into_diagnostic()?;
            eprintln!("Credentials saved in {}", dc.path().display());
            println!("Login Succeeded");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logout { server } => {
            let registry_name = registry::login_server(server.as_deref());
            let mut dc = DockerConfig::load_default().into_diagnostic()?;
            if dc.erase(&registry_name).into_diagnostic()? {
                println!("Removing login credentials for {registry_name}");
            } else {
                println!("Not logged in to {registry_name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn prompt(label: &str) -> Result<String> {
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .into_diagnostic()?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a password from the terminal without echo (through `stty`, to
/// keep the CLI free of a termios dependency).
fn prompt_secret(label: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(miette!(
            "no password given: use --password-stdin when standard input is not a terminal"
        ));
    }
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .ok();
    };
    stty("-echo");
    let r = prompt(label);
    stty("echo");
    eprintln!();
    r
}

/// Draws transfers: one indicatif bar per blob on a terminal, one line per
/// event otherwise, nothing with `--quiet`.
struct CliProgress {
    mode: Mode,
}

enum Mode {
    Quiet,
    Plain,
    Tty {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
}

fn short(digest: &str) -> &str {
    let hex = digest.split(':').nth(1).unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl CliProgress {
    fn new(quiet: bool) -> Arc<CliProgress> {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Tty {
                multi: MultiProgress::new(),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Mode::Plain
        };
        Arc::new(CliProgress { mode })
    }

    fn finish(&self) {
        if let Mode::Tty { multi, .. } = &self.mode {
            let _ = multi.clear();
        }
    }
}

impl Progress for CliProgress {
    fn start(&self, digest: &str, kind: &str, total: u64) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{}: {kind}, {} bytes: transferring", short(digest), total),
            Mode::Tty { multi, bars } => {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {msg:7} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(short(digest).to_string());
                bar.set_message(kind.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                if let Ok(mut b) = bars.lock() {
                    b.insert(digest.to_string(), bar);
                }
            }
        }
    }

    fn advance(&self, digest: &str, bytes: u64) {
        if let Mode::Tty { bars, .. } = &self.mode {
            if let Some(bar) = bars.lock().ok().and_then(|b| b.get(digest).cloned()) {
                bar.inc(bytes);
            }
        }
    }

    fn done(&self, digest: &str, outcome: Outcome) {
        let what = match outcome {
            Outcome::Transferred => "done",
            Outcome::Exists => "already exists",
            Outcome::Mounted => "mounted from another repository",
        };
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{}: {what}", short(digest)),
            Mode::Tty { multi, bars } => {
                let bar = bars.lock().ok().and_then(|mut b| b.remove(digest));
                match bar {
                    Some(bar) => bar.finish_with_message(what.to_string()),
                    None => {
                        let _ = multi.println(format!("{}: {what}", short(digest)));
                    }
                }
            }
        }
    }

    fn message(&self, line: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{line}"),
            Mode::Tty { multi, .. } => {
                let _ = multi.println(line);
            }
        }
    }
}

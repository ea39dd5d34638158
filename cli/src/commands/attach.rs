//! Terminals for `kiln run`/`exec` (`-t`, `--detach-keys`, `--sig-proxy`),
//! `kiln attach`, and docker's way of refusing flags it does not know.
//!
//! The streams themselves are `kiln_worker::container::attach` (kiln's
//! side) and `kiln_worker::container::pty` (the container helper's side).

use std::process::ExitCode;

use clap::{ArgAction, Subcommand};
use kiln_worker::container::attach::{self, AttachEnd, DetachKeys};
use kiln_worker::container::{self, Status};
use miette::{miette, Result};

/// `kiln run`'s terminal flags (flattened into `RunArgs`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunTtyArgs {
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Override the key sequence for detaching a container (docker's
    /// syntax: `ctrl-p,ctrl-q`, the default).
    #[arg(long = "detach-keys", value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Proxy received signals to the process (default true; `-t` takes
    /// signals from the terminal's keys instead, as docker).
    #[arg(long = "sig-proxy", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true",
          require_equals = true, value_name = "BOOL")]
    pub sig_proxy: bool,
    /// Print help (`-h` is --hostname, as docker's).
    #[arg(long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// `kiln exec`'s terminal flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecTtyArgs {
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Detached mode: run the command in the background.
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// Override the key sequence for detaching from the exec.
    #[arg(long = "detach-keys", value_name = "KEYS")]
    pub detach_keys: Option<String>,
}

/// `kiln attach`.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Attach local standard input, output, and error streams to a running
    /// container.
    Attach {
        /// Do not attach STDIN.
        #[arg(long = "no-stdin")]
        no_stdin: bool,
        /// Proxy all received signals to the process.
        #[arg(long = "sig-proxy", action = ArgAction::Set, num_args = 0..=1,
              default_value_t = true, default_missing_value = "true",
              require_equals = true, value_name = "BOOL")]
        sig_proxy: bool,
        /// Override the key sequence for detaching a container.
        #[arg(long = "detach-keys", value_name = "KEYS")]
        detach_keys: Option<String>,
        /// Container name or ID.
        container: String,
    },
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Attach {
            no_stdin,
            sig_proxy,
            detach_keys,
            container,
        } => attach_cmd(!no_stdin, sig_proxy, detach_keys.as_deref(), &container),
    }
}

/// An exit status from a process's code (0..=255).
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `kiln run -t` in the foreground, after the container `c` was made:
/// started attached, our terminal raw with `-i`, until it ends (its exit
/// code) or the detach keys leave it running (0). With `sig_proxy` the
/// signals kiln gets go to the container's process (docker's `run
/// --sig-proxy`, which a terminal does not turn off; `start -a` of a
/// terminal container proxies none).
pub fn run_attached(
    store: &container::Store,
    c: &container::Container,
    interactive: bool,
    keys: DetachKeys,
    sig_proxy: bool,
) -> ExitCode {
    use kiln_worker::container::StartReport;
    let size = attach::window_size();
    let session = match attach::start_attached(store, c, size) {
        Ok((_, Some(s))) => s,
        Ok((StartReport::Failed { code, message }, None)) => {
            eprintln!("kiln: {message}");
            return exit_code(code);
        }
        Ok((StartReport::Started, None)) => return exit_code(container::EXIT_KILN),
        Err(e) => {
            eprintln!("kiln: {e}");
            return exit_code(container::EXIT_KILN);
        }
    };
    attached(session, interactive, keys, sig_proxy)
}

/// Runs the client on a session this kiln started; the exit code. With
/// `sig_proxy` signals go to the helper, which passes them to its process.
fn attached(
    session: attach::Session,
    interactive: bool,
    keys: DetachKeys,
    sig_proxy: bool,
) -> ExitCode {
    let sock = match session.sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln: {e}");
            return exit_code(container::EXIT_KILN);
        }
    };
    let opts = attach::ClientOptions {
        stdin: interactive,
        tty: true,
        detach_keys: keys,
        proxy_to: sig_proxy.then(|| session.helper_pid()),
    };
    match attach::run_client(sock, &opts) {
        Ok(AttachEnd::Exited(code)) => {
            let _ = session.wait();
            exit_code(code)
        }
        // The container runs on; its helper is not ours to wait for.
        Ok(AttachEnd::Detached) => ExitCode::SUCCESS,
        Ok(AttachEnd::Closed) => exit_code(session.wait()),
        Ok(AttachEnd::Signalled(s)) => exit_code(128 + s),
        Err(e) => {
            eprintln!("kiln: {e}");
            exit_code(container::EXIT_KILN)
        }
    }
}

/// `kiln exec -t`: the exec attached; its exit code.
pub fn exec_attached(spec: &container::ExecSpec, interactive: bool, keys: DetachKeys) -> ExitCode {
    match attach::exec_attached(spec) {
        // docker's exec proxies no signals.
        Ok(session) => attached(session, interactive, keys, false),
        Err(e) => {
            eprintln!("kiln: {e}");
            exit_code(container::EXIT_KILN)
        }
    }
}

/// Docker's words on stderr and exit code 1 (its plain errors).
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(1)
}

/// `kiln attach`: the container's streams live (a terminal's, or stdout
/// and stderr apart), stdin when it keeps one open (`-i`) and
/// `--no-stdin` is not given, signals proxied to its process without a
/// terminal (`--sig-proxy`, as docker's); ends with its exit code.
fn attach_cmd(stdin: bool, sig_proxy: bool, keys: Option<&str>, key: &str) -> Result<ExitCode> {
    let root = kiln_cache::Root::from_env().map_err(|e| miette!("{e}"))?;
    let store = container::Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    let c = match store.find(key) {
        Ok(c) => c,
        Err(e) => return Ok(fail(format!("Error response from daemon: {e}"))),
    };
    if c.effective_status() != Status::Running {
        return Ok(fail(
            "You cannot attach to a stopped container, start it first",
        ));
    }
    let keys = match parse_keys(keys) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    let tty = c.tty.tty;
    let stdin = stdin && c.tty.open_stdin;
    if tty && stdin && !attach::stdin_is_terminal() {
        return Ok(fail("the input device is not a TTY"));
    }
    let dir = store.dir_of(&c.id);
    let sock = match attach::connect(&dir) {
        Ok(s) => s,
        Err(e) => return Ok(fail(format!("Error response from daemon: attaching: {e}"))),
    };
    let opts = attach::ClientOptions {
        stdin,
        tty,
        // The detach keys are a terminal's (docker reads them from a TTY
        // container's input only).
        detach_keys: if tty { keys } else { DetachKeys(Vec::new()) },
        proxy_to: c.pid.filter(|_| sig_proxy && !tty),
    };
    match attach::run_client(sock, &opts) {
        Ok(AttachEnd::Exited(code)) => Ok(exit_code(code)),
        // docker attach: the escape error is its error (exit 1).
        Ok(AttachEnd::Detached) => Ok(fail("read escape sequence")),
        Ok(AttachEnd::Signalled(s)) => Ok(exit_code(128 + s)),
        Ok(AttachEnd::Closed) => {
            // The helper went without a word: the record says how it ended.
            let code = store.find(key).ok().and_then(|c| c.exit_code).unwrap_or(0);
            Ok(exit_code(code))
        }
        Err(e) => Ok(fail(format!("attaching: {e}"))),
    }
}

/// `--detach-keys` (or the default) as bytes; docker's error otherwise
/// (exit 125, as the daemon refuses it before starting anything).
pub fn parse_keys(keys: Option<&str>) -> Result<DetachKeys, ExitCode> {
    match keys {
        None => Ok(DetachKeys::default()),
        Some(k) => DetachKeys::parse(k).map_err(|e| {
            eprintln!("kiln: {e}");
            ExitCode::from(container::EXIT_KILN as u8)
        }),
    }
}

/// The subcommands whose flag errors docker reports its way (`unknown
/// flag: --bogus`, exit 125).
const DOCKER_FLAG_ERRORS: [&str; 5] = ["run", "exec", "create", "attach", "start"];

/// Renders a command-line error: for the container commands as docker
/// does (`unknown flag: --bogus` / `unknown shorthand flag: 'z' in -itz`,
/// then `See 'kiln run --help'.`, exit 125), so a mistyped flag is never
/// taken for an image; clap's own rendering for the rest (and for help).
pub fn flag_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sub) = args.iter().find(|a| !a.starts_with('-')).cloned() else {
        e.exit()
    };
    if !DOCKER_FLAG_ERRORS.contains(&sub.as_str()) {
        e.exit()
    }
    let invalid = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let line = match (e.kind(), invalid) {
        (ErrorKind::UnknownArgument, Some(flag)) if flag.starts_with("--") => {
            let name = flag.split('=').next().unwrap_or(&flag).to_string();
            format!("unknown flag: {name}")
        }
        (ErrorKind::UnknownArgument, Some(flag)) if flag.starts_with('-') => {
            let c = flag.chars().nth(1).unwrap_or('-');
            let cluster = args
                .iter()
                .find(|a| !a.starts_with("--") && a.starts_with('-') && a[1..].contains(c))
                .cloned()
                .unwrap_or(flag.clone());
            format!("unknown shorthand flag: '{c}' in {cluster}")
        }
        _ => {
            // clap's message without its "error: " prefix and usage tail.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("").to_string();
            first.strip_prefix("error: ").unwrap_or(&first).to_string()
        }
    };
    eprintln!("{line}\nSee 'kiln {sub} --help'.");
    std::process::exit(container::EXIT_KILN)
}

/// Why a terminal-related request is refused before anything starts.
pub fn check_tty(tty: bool, interactive: bool) -> Result<(), String> {
    if tty && interactive && !attach::stdin_is_terminal() {
        return Err("the input device is not a TTY".into());
    }
    Ok(())
}

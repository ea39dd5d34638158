//! A container's lifecycle settings and state beyond "is it running":
//! stop signal and timeout, `--init`, the restart policy and its count,
//! the health check and its results, pause, and resource limits.
//!
//! They live in one struct, [`LifeState`], flattened into `state.json`
//! (every field defaults, so older records still load), and are set at
//! creation from [`LifeOptions`] (`kiln run`/`create`'s flags) merged with
//! the image's config (`StopSignal`, `Healthcheck`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What can be wrong with a lifecycle flag.
#[derive(Debug, thiserror::Error)]
pub enum LifeError {
    #[error("invalid restart policy format: {0}")]
    RestartPolicy(String),
    #[error("invalid signal: {0}")]
    Signal(String),
    #[error("invalid duration {0:?}: a number with a unit (ms, s, m, h), e.g. 30s or 1m30s")]
    Duration(String),
    #[error("--no-healthcheck conflicts with --health-* options")]
    HealthConflict,
    #[error("{0}")]
    Other(String),
}

/// `--restart`: docker's `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `no` (shown as ""), `always`, `unless-stopped` or `on-failure`.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// on-failure's N (0: no limit).
    #[serde(rename = "MaximumRetryCount", default)]
    pub maximum_retry_count: u32,
}

impl RestartPolicy {
    /// Parses `no|always|unless-stopped|on-failure[:N]` as docker does.
    pub fn parse(s: &str) -> Result<RestartPolicy, LifeError> {
        let bad = || LifeError::RestartPolicy(s.to_string());
        let (name, max) = match s.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (s, None),
        };
        let maximum_retry_count = match (name, max) {
            ("on-failure", Some(m)) => m.parse().map_err(|_| bad())?,
            (_, Some(_)) => {
                return Err(LifeError::RestartPolicy(format!(
                    "maximum retry count can only be used with 'on-failure': {s}"
                )))
            }
            _ => 0,
        };
        match name {
            "" | "no" => Ok(RestartPolicy::default()),
            "always" | "unless-stopped" | "on-failure" => Ok(RestartPolicy {
                name: name.to_string(),
                maximum_retry_count,
            }),
            _ => Err(bad()),
        }
    }

    /// The policy says the container may come back by itself.
    pub fn restarts(&self) -> bool {
        !matches!(self.name.as_str(), "" | "no")
    }
}

/// The health check a container runs: docker's `Config.Healthcheck`
/// (durations in nanoseconds, as the image config holds them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["CMD", args...]`, `["CMD-SHELL", "cmd"]` or `["NONE"]`.
    #[serde(rename = "Test", default)]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Docker's defaults for a check's unset durations and retries.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: i64 = 3;

impl HealthConfig {
    /// The argv to exec, `None` when the check is disabled (`NONE`, empty).
    pub fn argv(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((k, rest)) if k == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            Some((k, [cmd])) if k == "CMD-SHELL" => {
                Some(vec!["/bin/sh".into(), "-c".into(), cmd.clone()])
            }
            _ => None,
        }
    }

    fn dur(ns: i64, default: Duration) -> Duration {
        if ns > 0 {
            Duration::from_nanos(ns as u64)
        } else {
            default
        }
    }

    pub fn interval(&self) -> Duration {
        Self::dur(self.interval, DEFAULT_INTERVAL)
    }
    pub fn timeout(&self) -> Duration {
        Self::dur(self.timeout, DEFAULT_TIMEOUT)
    }
    pub fn start_interval(&self) -> Duration {
        Self::dur(self.start_interval, DEFAULT_START_INTERVAL)
    }
    pub fn start_period(&self) -> Duration {
        Self::dur(self.start_period, Duration::ZERO)
    }
    pub fn retries(&self) -> i64 {
        if self.retries > 0 {
            self.retries
        } else {
            DEFAULT_RETRIES
        }
    }
}

/// One probe's result: docker's `State.Health.Log[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    #[serde(rename = "Start")]
    pub start: String,
    #[serde(rename = "End")]
    pub end: String,
    #[serde(rename = "ExitCode")]
    pub exit_code: i32,
    #[serde(rename = "Output")]
    pub output: String,
}

/// docker's `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "FailingStreak")]
    pub failing_streak: i64,
    /// The last five results, oldest first.
    #[serde(rename = "Log")]
    pub log: Vec<HealthResult>,
}

/// Resource limits (`--memory`, `--cpus`, `--pids-limit`): 0 is none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub memory: i64,
    #[serde(default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub pids_limit: i64,
    /// `--memory-swap`: memory plus swap (0: twice `memory`; -1: no limit).
    #[serde(default)]
    pub memory_swap: i64,
    /// `--cpu-shares`: the relative CPU weight (1024 is the default).
    #[serde(default)]
    pub cpu_shares: i64,
    /// `--shm-size`: bytes of the container's /dev/shm (0: docker's 64 MiB).
    /// A mount option, not a cgroup limit.
    #[serde(default)]
    pub shm_size: i64,
}

/// The process's privileges and the namespaces it shares (`--ulimit`,
/// `--cap-add/--cap-drop`, `--privileged`, `--pid`, `--ipc`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// `--ulimit NAME=SOFT[:HARD]`, applied over kiln's defaults.
    #[serde(default)]
    pub ulimits: Vec<crate::sandbox::Rlimit>,
    /// docker's `HostConfig.Ulimits` as given, for `inspect`.
    #[serde(default)]
    pub ulimit_specs: Vec<String>,
    /// The capability names given (`CAP_` prefixed, upper case; `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--privileged`: every capability, no seccomp filter.
    #[serde(default)]
    pub privileged: bool,
    /// `--pid`: "" (own namespace), `host` or `container:ID`.
    #[serde(default)]
    pub pid_mode: String,
    /// `--ipc`: "" / `private` / `shareable` (own), `host` or
    /// `container:ID`.
    #[serde(default)]
    pub ipc_mode: String,
    /// `--security-opt no-new-privileges` as given (kiln always sets
    /// no_new_privs; recorded for `inspect`).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// `--group-add`: more supplementary groups (names or gids), for the
    /// container's processes and its execs.
    #[serde(default)]
    pub group_add: Vec<String>,
    /// `--sysctl KEY=VALUE`, namespaced keys only (checked by the CLI).
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
}

impl Security {
    /// The capability set: docker's default with `cap_add` added and
    /// `cap_drop` removed (`ALL` in either), every one when privileged.
    pub fn caps(&self) -> Result<u64, LifeError> {
        if self.privileged {
            return Ok(crate::sandbox::ALL_CAPS);
        }
        let mask = |names: &[String]| -> Result<u64, LifeError> {
            let mut m = 0u64;
            for n in names {
                if n == "ALL" {
                    m |= crate::sandbox::ALL_CAPS;
                    continue;
                }
                let bit = crate::seccomp::cap_number(n)
                    .ok_or_else(|| LifeError::Other(format!("unknown capability: \"{n}\"")))?;
                m |= 1u64 << bit;
            }
            Ok(m)
        };
        let drop = mask(&self.cap_drop)?;
        let add = mask(&self.cap_add)?;
        Ok((crate::sandbox::DEFAULT_CAPS & !drop) | add)
    }

    /// Normalizes a capability name as docker does (`net_admin`,
    /// `CAP_NET_ADMIN` -> `CAP_NET_ADMIN`; `all` -> `ALL`).
    pub fn cap_name(n: &str) -> String {
        let up = n.trim().to_ascii_uppercase();
        if up == "ALL" || up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        }
    }
}

/// The lifecycle part of a container's record (flattened into
/// `state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LifeState {
    /// The signal `stop` sends (image STOPSIGNAL or `--stop-signal`);
    /// SIGTERM when unset.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// `--stop-timeout` in seconds (`stop` without `-t`); 10 when unset.
    #[serde(default)]
    pub stop_timeout: Option<i64>,
    /// `--init`: a minimal init is pid 1 and runs the command as its child.
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// How many times the helper restarted the container (docker's
    /// RestartCount).
    #[serde(default)]
    pub restart_count: u32,
    /// Stopped (or killed) by the user: no policy restarts it until the
    /// next `start`.
    #[serde(default)]
    pub manually_stopped: bool,
    /// The helper waits to restart it (docker's "Restarting").
    #[serde(default)]
    pub restarting: bool,
    /// The check the helper runs; `None`: no check.
    #[serde(default)]
    pub healthcheck: Option<HealthConfig>,
    /// The check's results since the last start.
    #[serde(default)]
    pub health: Option<Health>,
    /// Frozen by `kiln pause`.
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub resources: Resources,
    /// The container's cgroup (v2 or v1's per-controller dirs), if it has
    /// one.
    #[serde(default)]
    pub cgroups: Vec<std::path::PathBuf>,
    /// Start and finish times in nanoseconds, i64 (serde cannot flatten
    /// i128); docker's StartedAt and
    /// FinishedAt have nanoseconds).
    #[serde(default)]
    pub started_ns: i64,
    #[serde(default)]
    pub finished_ns: i64,
    /// The kernel's OOM killer killed a process of the last run (docker's
    /// `State.OOMKilled`).
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub security: Security,
}

impl LifeState {
    /// The container's process started: times, a fresh health state.
    pub fn on_start(&mut self) {
        self.started_ns = now_ns();
        self.oom_killed = false;
        self.restarting = false;
        self.paused = false;
        self.health = self
            .healthcheck
            .as_ref()
            .and_then(HealthConfig::argv)
            .map(|_| Health {
                status: "starting".into(),
                ..Health::default()
            });
    }

    /// The container's process ended.
    pub fn on_exit(&mut self) {
        self.finished_ns = now_ns();
        self.paused = false;
        if let Some(h) = self.health.as_mut() {
            h.status = "unhealthy".into();
        }
    }

    /// The signal `stop` sends: STOPSIGNAL / `--stop-signal`, else SIGTERM.
    pub fn stop_signal(&self) -> libc::c_int {
        self.stop_signal
            .as_deref()
            .and_then(|s| parse_signal(s).ok())
            .unwrap_or(libc::SIGTERM)
    }
}

/// `kiln run`/`create`'s lifecycle flags, parsed.
#[derive(Debug, Clone, Default)]
pub struct LifeOptions {
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub init: bool,
    pub restart_policy: RestartPolicy,
    /// Fields set by `--health-*` (zero/empty: keep the image's).
    pub health: HealthConfig,
    pub no_healthcheck: bool,
    pub resources: Resources,
    pub security: Security,
}

impl LifeOptions {
    /// The state a new container starts with, from these options over the
    /// image's config (`config` object of the image config).
    pub fn state(&self, image_config: &Value) -> LifeState {
        let image_signal = image_config
            .get("StopSignal")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let image_health: Option<HealthConfig> = image_config
            .get("Healthcheck")
            .and_then(|h| serde_json::from_value(h.clone()).ok());
        let healthcheck = if self.no_healthcheck {
            Some(HealthConfig {
                test: vec!["NONE".into()],
                ..HealthConfig::default()
            })
        } else {
            let mut h = image_health.unwrap_or_default();
            let o = &self.health;
            if !o.test.is_empty() {
                h.test = o.test.clone();
            }
            for (dst, src) in [
                (&mut h.interval, o.interval),
                (&mut h.timeout, o.timeout),
                (&mut h.start_period, o.start_period),
                (&mut h.start_interval, o.start_interval),
                (&mut h.retries, o.retries),
            ] {
                if src != 0 {
                    *dst = src;
                }
            }
            (!h.test.is_empty()).then_some(h)
        };
        LifeState {
            stop_signal: self.stop_signal.clone().or(image_signal),
            stop_timeout: self.stop_timeout,
            init: self.init,
            restart_policy: self.restart_policy.clone(),
            healthcheck,
            resources: self.resources.clone(),
            security: self.security.clone(),
            ..LifeState::default()
        }
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Nanoseconds since the epoch as RFC 3339 with nanoseconds (docker's
/// timestamps); the zero time as docker shows an unset one.
pub fn rfc3339_ns(ns: i64) -> String {
    if ns <= 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_string())
        .unwrap_or_else(|_| "0001-01-01T00:00:00Z".to_string())
}

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number, as docker's
/// `--signal`/`STOPSIGNAL` take it.
pub fn parse_signal(s: &str) -> Result<libc::c_int, LifeError> {
    let bad = || LifeError::Signal(s.to_string());
    if let Ok(n) = s.parse::<libc::c_int>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(off) = name.strip_prefix("RTMIN+") {
        let n: libc::c_int = off.parse().map_err(|_| bad())?;
        return Ok(libc::SIGRTMIN() + n);
    }
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(bad)
}

const SIGNALS: &[(&str, libc::c_int)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("BUS", libc::SIGBUS),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("IO", libc::SIGIO),
    ("IOT", libc::SIGIOT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("PROF", libc::SIGPROF),
    ("PWR", libc::SIGPWR),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("STKFLT", libc::SIGSTKFLT),
    ("STOP", libc::SIGSTOP),
    ("SYS", libc::SIGSYS),
    ("TERM", libc::SIGTERM),
    ("TRAP", libc::SIGTRAP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("VTALRM", libc::SIGVTALRM),
    ("WINCH", libc::SIGWINCH),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// A Go duration (`1h2m3.5s`, `300ms`, `10us`, `0`) as docker's flags
/// take it.
pub fn parse_go_duration(s: &str) -> Result<Duration, LifeError> {
    let bad = || LifeError::Duration(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    Ok(Duration::from_secs_f64(total))
}

/// Converts a duration to signed nanoseconds (as configs hold them).
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A size with docker's units (`32m`, `1g`, `512k`, `1024`, `1.5g`) in
/// bytes.
pub fn parse_size(s: &str) -> Result<i64, LifeError> {
    let bad = || LifeError::Other(format!("invalid size: '{s}'"));
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    if n < 0.0 {
        return Err(bad());
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse() {
        assert_eq!(
            RestartPolicy::parse("no").unwrap(),
            RestartPolicy::default()
        );
        let p = RestartPolicy::parse("on-failure:2").unwrap();
        assert_eq!((p.name.as_str(), p.maximum_retry_count), ("on-failure", 2));
        assert!(RestartPolicy::parse("always:3").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
    }

    #[test]
    fn signals_and_durations_parse() {
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("term").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_go_duration("5").is_err());
        assert_eq!(parse_size("32m").unwrap(), 32 << 20);
    }

    #[test]
    fn image_health_merges_with_flags() {
        let img = serde_json::json!({"StopSignal": "SIGQUIT", "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 1000}});
        let mut o = LifeOptions::default();
        o.health.retries = 7;
        let s = o.state(&img);
        assert_eq!(s.stop_signal.as_deref(), Some("SIGQUIT"));
        let h = s.healthcheck.unwrap();
        assert_eq!((h.interval, h.retries), (1000, 7));
        o.no_healthcheck = true;
        assert_eq!(o.state(&img).healthcheck.unwrap().argv(), None);
    }
}

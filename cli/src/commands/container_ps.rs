//! `ps --filter` and `ps --format`: docker's filters over the container
//! records and the row objects its templates see.

use kiln_worker::container::{inspect::status_word, Container};
use serde_json::{json, Value};

/// Parsed `--filter KEY=VALUE` flags: values of one key are alternatives,
/// different keys must all match (docker's rules).
#[derive(Debug, Default)]
pub struct Filters {
    pairs: Vec<(String, String)>,
}

const KEYS: [&str; 8] = [
    "status", "name", "label", "ancestor", "health", "id", "exited", "before",
];

impl Filters {
    /// Parses the flags; docker's error for a bad one.
    pub fn parse(flags: &[String]) -> Result<Filters, String> {
        let mut pairs = Vec::new();
        for f in flags {
            let Some((k, v)) = f.split_once('=') else {
                return Err(format!("bad format of filter (expected name=value): {f}"));
            };
            let k = k.trim().to_ascii_lowercase();
            if !KEYS.contains(&k.as_str()) {
                return Err(format!("invalid filter '{k}'"));
            }
            if k == "status"
                && ![
                    "created",
                    "restarting",
                    "running",
                    "removing",
                    "paused",
                    "exited",
                    "dead",
                ]
                .contains(&v)
            {
                return Err(format!(
                    "invalid filter 'status={v}': Unrecognised status. Valid values: created, restarting, running, removing, paused, exited, dead"
                ));
            }
            if k == "health" && !["starting", "healthy", "unhealthy", "none"].contains(&v) {
                return Err(format!(
                    "invalid filter 'health={v}': Unrecognised health status. Valid values: starting, healthy, unhealthy, none"
                ));
            }
            if k == "exited" && v.parse::<i32>().is_err() {
                return Err(format!("invalid filter 'exited={v}'"));
            }
            pairs.push((k, v.to_string()));
        }
        Ok(Filters { pairs })
    }

    /// docker lists stopped containers too when the filter is about them.
    pub fn implies_all(&self) -> bool {
        self.pairs
            .iter()
            .any(|(k, v)| k == "exited" || (k == "status" && v != "running"))
    }

    fn values(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `c` passes every filter.
    pub fn matches(&self, c: &Container) -> bool {
        let any = |key: &str, f: &dyn Fn(&str) -> bool| {
            let vs = self.values(key);
            vs.is_empty() || vs.iter().any(|v| f(v))
        };
        let status = status_word(c);
        let health = c.life.health.as_ref().map_or("none", |h| h.status.as_str());
        any("status", &|v| v == status)
            && any("name", &|v| c.name.contains(v.trim_start_matches('/')))
            && any("id", &|v| c.id.starts_with(v))
            // Every label filter must hold (docker ANDs them): `KEY`
            // present, or `KEY=VALUE` equal.
            && self.values("label").iter().all(|v| match v.split_once('=') {
                Some((k, want)) => c.labels.get(k).is_some_and(|have| have == want),
                None => c.labels.contains_key(*v),
            })
            && any("ancestor", &|v| ancestor(c, v))
            && any("health", &|v| v == health)
            && any("exited", &|v| {
                status == "exited" && v.parse::<i32>().ok() == c.exit_code
            })
            && any("before", &|_| true)
    }
}

/// `ancestor=IMAGE`: the image as named (with or without `:latest`), or
/// its ID (a prefix, with or without `sha256:`).
fn ancestor(c: &Container, v: &str) -> bool {
    let norm = |s: &str| {
        let s = s.strip_prefix("docker.io/library/").unwrap_or(s);
        if s.rsplit('/').next().is_some_and(|l| l.contains(':')) {
            s.to_string()
        } else {
            format!("{s}:latest")
        }
    };
    if norm(&c.image) == norm(v) {
        return true;
    }
    let id = c.image_id.trim_start_matches("sha256:");
    let want = v.trim_start_matches("sha256:");
    want.len() >= 4 && want.chars().all(|ch| ch.is_ascii_hexdigit()) && id.starts_with(want)
}

/// docker's ps column titles by field.
pub const PS_FIELDS: [(&str, &str); 14] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

/// `ps`'s `-n/--last`, `-l/--latest` and `-s/--size` (docker's).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PsMore {
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_negative_numbers = true)]
    pub last: i64,
    /// Show the latest created container (includes all states).
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Display total file sizes (the container's changes, and with the
    /// image's: "virtual").
    #[arg(short = 's', long)]
    pub size: bool,
}

impl PsMore {
    /// How many of the newest containers to keep (None: all); `-l` and
    /// `-n` list containers in every state, as docker's.
    pub fn limit(&self) -> Option<usize> {
        if self.latest {
            Some(1)
        } else {
            usize::try_from(self.last).ok().filter(|n| *n > 0)
        }
    }
}

/// docker's SIZE cell: `RW (virtual ROOTFS)`.
pub fn size_text(c: &Container, dir: &std::path::Path) -> String {
    let (rw, rootfs) = kiln_worker::container::files::disk_usage(dir, &c.lowers);
    let rw_text = crate::units::human_size(rw);
    if rootfs > 0 {
        format!("{rw_text} (virtual {})", crate::units::human_size(rootfs))
    } else {
        rw_text
    }
}

/// The object `ps --format` templates see for one row (`row` is the
/// default table's cells: ID, IMAGE, COMMAND, CREATED, STATUS, PORTS,
/// NAMES).
pub fn row_value(c: &Container, row: &[String]) -> Value {
    let g = |i: usize| row.get(i).cloned().unwrap_or_default();
    let created = jiff::Timestamp::from_second(c.created)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default();
    let mounts: Vec<String> = c.volumes.iter().map(|v| v.name.clone()).collect();
    let network = kiln_worker::container::inspect::document(c, "")
        .host_config
        .get("NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    json!({
        "Command": g(2),
        "CreatedAt": created,
        "ID": g(0),
        "Image": g(1),
        "Labels": "",
        "LocalVolumes": c.volumes.len().to_string(),
        "Mounts": mounts.join(","),
        "Names": g(6),
        "Networks": network,
        "Ports": g(5),
        "RunningFor": g(3),
        "Size": row.get(7).cloned().unwrap_or_else(|| "0B".to_string()),
        "State": status_word(c),
        "Status": g(4),
    })
}

/// `logs -t --since --until`: which entries to print, with what prefix.
#[derive(Debug, Default)]
pub struct LogWindow {
    timestamps: bool,
    since_ns: Option<u128>,
    until_ns: Option<u128>,
    /// The last entry printed ended mid-line (no prefix on the rest).
    mid_line: bool,
    /// `--details`: the entry's attributes (none in kiln's log) and a
    /// space before each entry, after the timestamp (docker's order).
    pub details: bool,
}

/// docker's `--since`/`--until` value: RFC 3339 (date, or date and
/// time), Unix seconds (with fractions), or a duration before now.
fn parse_time(v: &str) -> Result<u128, String> {
    let now = jiff::Timestamp::now().as_nanosecond();
    crate::units::docker_time_ns(v, now)
        .map(|ns| ns.max(0) as u128)
        .ok_or_else(|| format!("invalid value for \"since\"/\"until\": {v:?}"))
}

impl LogWindow {
    /// From `logs`'s flags.
    pub fn parse(
        timestamps: bool,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<LogWindow, String> {
        Ok(LogWindow {
            timestamps,
            since_ns: since.map(parse_time).transpose()?,
            until_ns: until.map(parse_time).transpose()?,
            mid_line: false,
            details: false,
        })
    }

    /// True once `--until` is in the past: `logs -f` stops following.
    pub fn past_until(&self) -> bool {
        self.until_ns
            .is_some_and(|u| jiff::Timestamp::now().as_nanosecond() > u as i128)
    }

    /// `None` to skip `e`; else the prefix to print before it (docker's
    /// fixed RFC 3339 timestamp with nanoseconds and a space, with `-t`).
    pub fn admit(&mut self, e: &kiln_worker::container::LogEntry) -> Option<String> {
        if self.since_ns.is_some_and(|s| e.time_ns < s)
            || self.until_ns.is_some_and(|u| e.time_ns > u)
        {
            return None;
        }
        let prefix = if self.timestamps && !self.mid_line {
            let t = jiff::Timestamp::from_nanosecond(e.time_ns as i128)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_string())
                .unwrap_or_default();
            // %f is as many digits as needed: docker's are always nine.
            let (head, frac) = t.split_once('.').unwrap_or((&t, "Z"));
            let frac = frac.trim_end_matches('Z');
            format!("{head}.{frac:0<9}Z ")
        } else {
            String::new()
        };
        // Its attributes (none here) and a space, where a timestamp goes.
        let prefix = if self.details && !self.mid_line {
            prefix + " "
        } else {
            prefix
        };
        self.mid_line = !e.log.ends_with('\n');
        Some(prefix)
    }
}

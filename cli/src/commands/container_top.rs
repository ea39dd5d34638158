//! `kiln pause`, `unpause`, `top` and `stats`: a running container's
//! processes and usage, printed as the docker CLI prints them. The
//! processes come from the container's cgroup (or its pid namespace), the
//! numbers from /proc and the cgroup ([`kiln_worker::container::cgroup`]).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kiln_worker::container::{self, cgroup, Container, Store};
use miette::{miette, Result};

use super::run::open_store;
use crate::table::table;

// ---------------------------------------------------------- pause/unpause

/// `kiln pause C...` / `kiln unpause C...`.
pub fn pause(keys: &[String], frozen: bool) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let mut failed = false;
    for key in keys {
        match pause_one(&store, key, frozen) {
            Ok(()) => println!("{key}"),
            Err(msg) => {
                eprintln!("Error response from daemon: {msg}");
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

fn pause_one(store: &Store, key: &str, frozen: bool) -> Result<(), String> {
    let c = store.find(key).map_err(|e| e.to_string())?;
    if !c.is_alive() {
        return Err(format!("container {} is not running", c.id));
    }
    match (frozen, c.life.paused) {
        (true, true) => return Err(format!("container {} is already paused", c.id)),
        (false, false) => return Err(format!("container {} is not paused", c.id)),
        _ => {}
    }
    if frozen {
        container::pause::freeze(&c).map_err(|e| format!("cannot pause container {key}: {e}"))?;
    } else {
        container::pause::thaw(&c);
    }
    store
        .update(&c.id, |c| c.life.paused = frozen)
        .map_err(|e| e.to_string())?;
    Ok(())
}

// -------------------------------------------------------------------- top

/// One process as `ps -ef` shows it.
struct Proc {
    uid: u32,
    pid: i32,
    ppid: i32,
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
    /// Start, clock ticks after boot.
    start_ticks: u64,
    tty_nr: u64,
    comm: String,
    cmdline: Vec<String>,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // f[0] is field 3 (state).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Proc {
        uid,
        pid,
        ppid: num(1) as i32,
        cpu_ticks: num(11) + num(12),
        start_ticks: num(19),
        tty_nr: num(4),
        comm,
        cmdline,
    })
}

/// `sysconf(_SC_CLK_TCK)`: Linux fixes USER_HZ, what /proc counts in, at
/// 100 on every architecture kiln runs on.
fn clock_ticks() -> u64 {
    100
}

/// Seconds since the epoch at boot (/proc/stat's btime).
fn boot_time() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn uptime_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The host's user names by uid (what `ps` on the host shows).
fn user_names() -> HashMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .collect()
}

fn hms(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The rows of `ps -ef` for `pids`: UID PID PPID C STIME TTY TIME CMD.
pub(crate) fn ps_ef(pids: &[i32]) -> Vec<Vec<String>> {
    let hz = clock_ticks();
    let (boot, up) = (boot_time(), uptime_secs());
    let names = user_names();
    let now = container::now();
    let tz = jiff::tz::TimeZone::system();
    let mut rows = Vec::new();
    for p in pids.iter().filter_map(|p| read_proc(*p)) {
        let started = boot + (p.start_ticks / hz) as i64;
        let elapsed = up - p.start_ticks as f64 / hz as f64;
        let c = if elapsed > 0.0 {
            ((p.cpu_ticks as f64 / hz as f64) / elapsed * 100.0) as u64
        } else {
            0
        };
        let stime = jiff::Timestamp::from_second(started)
            .map(|t| {
                let z = t.to_zoned(tz.clone());
                if now - started < 24 * 3600 {
                    z.strftime("%H:%M").to_string()
                } else {
                    z.strftime("%b%d").to_string()
                }
            })
            .unwrap_or_default();
        let major = (p.tty_nr >> 8) & 0xfff;
        let minor = (p.tty_nr & 0xff) | ((p.tty_nr >> 12) & 0xfff00);
        let tty = match major {
            0 => "?".to_string(),
            136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
            4 => format!("tty{minor}"),
            _ => "?".to_string(),
        };
        let cmd = if p.cmdline.is_empty() {
            format!("[{}]", p.comm)
        } else {
            p.cmdline.join(" ")
        };
        rows.push(vec![
            names
                .get(&p.uid)
                .cloned()
                .unwrap_or_else(|| p.uid.to_string()),
            p.pid.to_string(),
            p.ppid.to_string(),
            c.to_string(),
            stime,
            tty,
            hms(p.cpu_ticks / hz),
            cmd,
        ]);
    }
    rows
}

/// `kiln top CONTAINER [ps OPTIONS]`: docker runs the host's `ps` and keeps
/// the container's rows; kiln reads /proc for the default `-ef` columns,
/// and runs the host's `ps` with the options given otherwise.
pub fn top(key: &str, ps_args: &[String]) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let c = match store.find(key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error response from daemon: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if !c.is_alive() {
        eprintln!(
            "Error response from daemon: container {} is not running",
            c.id
        );
        return Ok(ExitCode::from(1));
    }
    let mut pids = container::pause::processes(&c);
    pids.sort_unstable();
    if ps_args.is_empty() || ps_args == ["-ef"] {
        let header = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
        print!("{}", table(&header, &ps_ef(&pids), 0));
        return Ok(ExitCode::SUCCESS);
    }
    host_ps(ps_args, &pids)
}

/// The host's `ps ARGS`, keeping the header and the rows whose PID column
/// is one of `pids` (docker's `top` with options).
fn host_ps(args: &[String], pids: &[i32]) -> Result<ExitCode> {
    let out = std::process::Command::new("ps")
        .args(args)
        .output()
        .map_err(|e| miette!("running ps: {e}"))?;
    if !out.status.success() {
        eprintln!(
            "Error response from daemon: ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(ExitCode::from(1));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
        eprintln!("Error response from daemon: Couldn't find PID field in ps output");
        return Ok(ExitCode::from(1));
    };
    let mut s = format!("{header}\n");
    for l in lines {
        let pid = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            s.push_str(l);
            s.push('\n');
        }
    }
    print!("{s}");
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ stats

/// go-units' `BytesSize`: binary units, `%.4g`.
pub(crate) fn bytes_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let digits = if v >= 1000.0 {
        0
    } else if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
}

/// Bytes received and sent by the container's network interfaces (not
/// loopback), from pid 1's view of /proc/net/dev.
fn net_io(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let (mut rx, mut tx) = (0, 0);
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        rx += f.first().copied().unwrap_or(0);
        tx += f.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

/// One container's sample.
struct Sample {
    at: Instant,
    stats: cgroup::Stats,
    net: (u64, u64),
}

fn sample(c: &Container) -> Sample {
    let net = match (c.is_alive(), c.pid, &c.net, c.network) {
        // On the host's network it has no interfaces of its own.
        (true, Some(pid), Some(_), _) => net_io(pid),
        (true, Some(pid), None, kiln_worker::sandbox::Network::None) => net_io(pid),
        _ => (0, 0),
    };
    Sample {
        at: Instant::now(),
        stats: cgroup::stats(&c.life.cgroups),
        net,
    }
}

fn stats_row(c: &Container, before: &Sample, now: &Sample, no_trunc: bool) -> Vec<String> {
    let alive = c.is_alive();
    let wall = now.at.duration_since(before.at).as_nanos() as f64;
    let cpu = if alive && wall > 0.0 {
        now.stats.cpu_ns.saturating_sub(before.stats.cpu_ns) as f64 / wall * 100.0
    } else {
        0.0
    };
    let s = &now.stats;
    let mem_pct = if s.mem_limit > 0 {
        s.mem_usage as f64 / s.mem_limit as f64 * 100.0
    } else {
        0.0
    };
    let id = if no_trunc {
        c.id.clone()
    } else {
        c.short_id().to_string()
    };
    let h = crate::units::human_size;
    if !alive {
        return vec![
            id,
            c.name.clone(),
            "0.00%".into(),
            "0B / 0B".into(),
            "0.00%".into(),
            "0B / 0B".into(),
            "0B / 0B".into(),
            "0".into(),
        ];
    }
    vec![
        id,
        c.name.clone(),
        format!("{cpu:.2}%"),
        format!("{} / {}", bytes_size(s.mem_usage), bytes_size(s.mem_limit)),
        format!("{mem_pct:.2}%"),
        format!("{} / {}", h(now.net.0), h(now.net.1)),
        format!("{} / {}", h(s.blk_read), h(s.blk_write)),
        s.pids.to_string(),
    ]
}

const STATS_HEADER: [&str; 8] = [
    "CONTAINER ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
    "PIDS",
];

/// `kiln stats [-a] [--no-stream] [--no-trunc] [C...]`: one table (after a
/// first sample half a second before, for CPU %), or a table a second
/// until interrupted.
pub fn stats(
    all: bool,
    no_stream: bool,
    no_trunc: bool,
    format: Option<&str>,
    keys: &[String],
) -> Result<ExitCode> {
    let (_root, store) = open_store()?;
    let pick = |store: &Store| -> Result<Vec<Container>> {
        if keys.is_empty() {
            Ok(store
                .list()
                .map_err(|e| miette!("{e}"))?
                .into_iter()
                .filter(|c| all || c.is_alive())
                .collect())
        } else {
            keys.iter()
                .map(|k| store.find(k).map_err(|e| miette!("{e}")))
                .collect()
        }
    };
    let mut before: HashMap<String, Sample> = HashMap::new();
    for c in pick(&store)? {
        before.insert(c.id.clone(), sample(&c));
    }
    std::thread::sleep(Duration::from_millis(if no_stream { 500 } else { 1000 }));
    loop {
        let list = match pick(&store) {
            Ok(l) => l,
            Err(e) if !keys.is_empty() => {
                eprintln!("Error response from daemon: {e}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e),
        };
        let mut rows = Vec::new();
        let mut next = HashMap::new();
        for c in &list {
            let now = sample(c);
            let row = match before.get(&c.id) {
                Some(b) => stats_row(c, b, &now, no_trunc),
                None => stats_row(c, &now, &now, no_trunc),
            };
            rows.push(row);
            next.insert(c.id.clone(), now);
        }
        let fmt = crate::template::Format::parse(format).map_err(|e| miette!("{e}"))?;
        let text = match fmt
            .render(&stats_json(&rows), &STATS_FIELDS)
            .map_err(|e| miette!("{e}"))?
        {
            Some(t) => t,
            None => table(&STATS_HEADER, &rows, 0),
        };
        let mut out = std::io::stdout().lock();
        if !no_stream {
            // docker's CLI clears the screen before each table.
            let _ = out.write_all(b"\x1b[2J\x1b[H");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        if no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        before = next;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// docker's stats column titles by field.
const STATS_FIELDS: [(&str, &str); 9] = [
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// The rows as the objects `{{json .}}` and `{{.Name}}` see (docker's
/// stats fields).
fn stats_json(rows: &[Vec<String>]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            let g = |i: usize| r.get(i).cloned().unwrap_or_default();
            serde_json::json!({
                "BlockIO": g(6),
                "CPUPerc": g(2),
                "Container": g(0),
                "ID": g(0),
                "MemPerc": g(4),
                "MemUsage": g(3),
                "Name": g(1),
                "NetIO": g(5),
                "PIDs": g(7),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes_as_go_units() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1536), "1.5KiB");
        assert_eq!(bytes_size(32 << 20), "32MiB");
        assert_eq!(bytes_size(1_234_567), "1.177MiB");
    }
}

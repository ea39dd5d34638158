//! Bounded memory and time on hostile input, through the real binary: an
//! expansion bomb, huge Dockerfile lines, and steps or containers printing
//! gigabytes without a newline. Every kiln run here is measured: its peak
//! RSS comes from `wait4` (the process and the descendants it reaped), and
//! its output is counted as it streams, never stored.
//!
//! `KILN_UNDER_TEST` runs another kiln binary (an older build, to see these
//! tests fail before the fix).
#![allow(unsafe_code)] // the harness measures and signals its own child processes

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kiln_testsupport::Kiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// The most a kiln process may take, in KiB, whatever it is fed.
const MAX_RSS_KIB: i64 = 256 * 1024;

/// How much output the noisy steps print without a newline (1.5 GB, as in
/// the report this reproduces).
const NOISE: u64 = 1_500_000_000;

/// Docker's log record size, which progress lines and log records keep to.
const RECORD: usize = 16 * 1024;

fn binary() -> String {
    std::env::var("KILN_UNDER_TEST").unwrap_or_else(|_| KILN.to_string())
}

fn kiln(k: &Kiln, args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.args(args)
        .env("KILN_ROOT", &k.root)
        .env("KILN_DEFAULT_NETWORK", "host")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// What a stream held, counted as it went by.
#[derive(Debug, Default)]
struct Counted {
    bytes: u64,
    /// The longest run of bytes between newlines.
    longest_line: usize,
    /// The first 64 KiB, for messages and assertions.
    head: String,
}

fn count(mut r: impl Read) -> Counted {
    let mut c = Counted::default();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut line = 0usize;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        c.bytes += n as u64;
        if head.len() < 64 * 1024 {
            head.extend_from_slice(&buf[..n.min(64 * 1024 - head.len())]);
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                c.longest_line = c.longest_line.max(line);
                line = 0;
            } else {
                line += 1;
            }
        }
    }
    c.longest_line = c.longest_line.max(line);
    c.head = String::from_utf8_lossy(&head).into_owned();
    c
}

/// One measured kiln run.
#[derive(Debug)]
struct Measured {
    status: ExitStatus,
    /// Peak RSS in KiB of kiln or any descendant it reaped.
    max_rss_kib: i64,
    elapsed: Duration,
    stdout: Counted,
    stderr: Counted,
}

// The child is reaped by `wait4`, which std does not know about.
#[allow(clippy::zombie_processes)]
fn measure(mut cmd: Command) -> Measured {
    // A spawned process starts with its parent's peak RSS as its own (the
    // kernel carries it over exec), so what is measured is at most the
    // larger of kiln's and this process's: keep this one small.
    // (A test that panicked before loads debug info for its backtrace and
    // makes this process big: then a measure is only an upper bound.)
    let own = own_hwm_kib();
    if own > 64 * 1024 {
        eprintln!("warning: the test process itself peaked at {own} KiB");
    }
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kiln");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || count(out));
    let err = std::thread::spawn(move || count(err));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let elapsed = started.elapsed();
    Measured {
        status: ExitStatus::from_raw(status),
        max_rss_kib: usage.ru_maxrss,
        elapsed,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// This test process's own peak RSS, in KiB.
fn own_hwm_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A context folder with this Dockerfile.
fn context(k: &Kiln, name: &str, dockerfile: &str) -> String {
    k.context(name, &[("Dockerfile", dockerfile)])
        .display()
        .to_string()
}

/// A build that must be refused quickly, in little memory, with an error
/// containing every one of `wanted`.
fn refused(k: &Kiln, ctx: &str, extra: &[&str], wanted: &[&str]) -> Measured {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx);
    let m = measure(kiln(k, &args));
    let err = &m.stderr.head;
    assert!(!m.status.success(), "the build should fail: {err}");
    assert_eq!(m.status.signal(), None, "kiln was killed: {m:?}");
    // miette wraps long messages inside its box.
    let flat = err
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(m.elapsed < Duration::from_secs(10), "{:?}", m.elapsed);
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB",
        m.max_rss_kib
    );
    for w in wanted {
        assert!(flat.contains(w), "{w:?} not in:\n{err}");
    }
    eprintln!("refused in {:?}, peak RSS {} KiB", m.elapsed, m.max_rss_kib);
    m
}

/// 30 lines each quadrupling a variable would make a 8 × 4^30-byte value;
/// kiln stops at the first word over 1 MiB and names its line.
#[test]
fn an_expansion_bomb_fails_fast_naming_its_line() {
    let k = Kiln::with_busybox(KILN);
    let bomb = |kw: &str, prefix: &str| {
        let mut df = String::from(prefix);
        df.push_str(&format!("{kw} A0=aaaaaaaa\n"));
        for i in 1..=30 {
            let p = format!("${{A{}}}", i - 1);
            df.push_str(&format!("{kw} A{i}={p}{p}{p}{p}\n"));
        }
        df
    };
    // ENV in a stage: A9 (8 × 4^9 = 2 MiB) is the first too big, line 11.
    let ctx = context(&k, "env", &bomb("ENV", "FROM busybox:1.35\n"));
    refused(
        &k,
        &ctx,
        &[],
        &[
            "exceeds the limit of 1048576 bytes",
            "Dockerfile:11:1",
            "line 11",
        ],
    );
    // ARG defaults before FROM (the global scope), line 10.
    let ctx = context(&k, "arg", &(bomb("ARG", "") + "FROM busybox:1.35\n"));
    refused(&k, &ctx, &[], &["exceeds the limit", "line 10"]);
    // LABEL values, and a heredoc expanding a variable.
    let mut df = bomb("ENV", "FROM busybox:1.35\n")
        .lines()
        .take(10)
        .collect::<Vec<_>>()
        .join("\n");
    df.push_str("\nLABEL big=${A8}${A8}${A8}${A8}\n");
    let ctx = context(&k, "label", &df);
    refused(&k, &ctx, &[], &["exceeds the limit", "line 11"]);
    let df = df.replace(
        "LABEL big=${A8}${A8}${A8}${A8}",
        "COPY <<EOF /big\n${A8}${A8}${A8}${A8}\nEOF",
    );
    let ctx = context(&k, "heredoc", &df);
    refused(&k, &ctx, &[], &["exceeds the limit", "line 11"]);
    // Words under the limit, copied into many steps, hit the plan's limit.
    let mut df = bomb("ENV", "FROM busybox:1.35\n")
        .lines()
        .take(10)
        .collect::<Vec<_>>()
        .join("\n");
    df.push('\n');
    for i in 0..200 {
        df.push_str(&format!("RUN echo {i}\n"));
    }
    let ctx = context(&k, "copies", &df);
    refused(
        &k,
        &ctx,
        &[],
        &["expanded text exceeds the limit of 64 MiB"],
    );
}

/// A 20 MB line (over the 16 MiB file limit), a 10 MB line (over
/// BuildKit's 64 KiB line limit) and a 2 MB instruction made of
/// continuation lines are all refused at once, in little memory.
#[test]
fn huge_dockerfile_lines_are_refused_fast() {
    let k = Kiln::with_busybox(KILN);
    // Written piece by piece: the test process itself stays small, as its
    // peak RSS is part of what `measure` reports.
    let write = |name: &str, parts: &mut dyn Iterator<Item = String>| {
        let dir = k.path(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(dir.join("Dockerfile")).expect("Dockerfile"),
        );
        for p in parts {
            f.write_all(p.as_bytes()).expect("write");
        }
        f.flush().expect("flush");
        dir.display().to_string()
    };
    let line = |n: usize| {
        std::iter::once("FROM busybox:1.35\nRUN echo ".to_string())
            .chain((0..n / 10_000).map(|_| "a".repeat(10_000)))
            .chain(std::iter::once("\n".to_string()))
    };
    let ctx = write("20mb", &mut line(20_000_000));
    refused(
        &k,
        &ctx,
        &[],
        &["dockerfile greater than max allowed size of 16 MiB"],
    );
    let ctx = write("10mb", &mut line(10_000_000));
    let m = refused(
        &k,
        &ctx,
        &[],
        &[
            "dockerfile line greater than max allowed size of 65535",
            "line 2",
        ],
    );
    assert!(
        m.stderr.bytes < 64 * 1024,
        "the error shows the line clipped"
    );
    let ctx = write(
        "cont",
        &mut std::iter::once("FROM busybox:1.35\nRUN echo \\\n".to_string())
            .chain((0..40).map(|_| format!("{} \\\n", "b".repeat(50_000))))
            .chain(std::iter::once("end\n".to_string())),
    );
    refused(
        &k,
        &ctx,
        &[],
        &[
            "instruction greater than max allowed size of 1048576 bytes",
            "line 2",
        ],
    );
}

/// Bytes free to an unprivileged writer on the filesystem holding `path`
/// (or its nearest existing parent).
fn free_bytes(path: &Path) -> u64 {
    let dir = path
        .ancestors()
        .find(|p| p.exists())
        .expect("an existing parent");
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df's avail column")
}

/// The longest line of a container log file, counted as it streams.
fn longest_log_record(path: &Path) -> (usize, u64) {
    let c = count(std::fs::File::open(path).expect("log file"));
    (c.longest_line, c.bytes)
}

/// The shell command printing [`NOISE`] bytes of `a` and no newline.
fn noise() -> String {
    format!("head -c {NOISE} /dev/zero | tr '\\0' a")
}

/// A RUN printing 1.5 GB without a newline: plain progress prints it in
/// lines of at most 16 KiB and kiln stays small.
#[test]
fn a_step_printing_gigabytes_without_newline_stays_bounded() {
    let k = Kiln::with_busybox(KILN);
    let ctx = context(
        &k,
        "noisy",
        &format!("FROM busybox:1.35\nRUN {}\n", noise()),
    );
    let m = measure(kiln(&k, &["build", "--progress", "plain", &ctx]));
    eprintln!(
        "build: {:?}, peak RSS {} KiB, {} bytes of progress, longest line {}",
        m.elapsed, m.max_rss_kib, m.stderr.bytes, m.stderr.longest_line
    );
    assert!(m.status.success(), "{}", m.stderr.head);
    assert!(m.stderr.bytes > NOISE, "all the output is shown");
    // `#N SECONDS ` before each piece.
    assert!(
        m.stderr.longest_line <= RECORD + 32,
        "{}",
        m.stderr.longest_line
    );
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB",
        m.max_rss_kib
    );
}

/// `kiln run` of the same output keeps kiln small and writes log records
/// of at most 16 KiB; `kiln logs` streams them back (the line whole again,
/// as `docker logs` prints it) in little memory.
#[test]
fn a_container_printing_gigabytes_without_newline_stays_bounded() {
    let k = Kiln::with_busybox(KILN);
    // The log holds all of it (docker's json-file keeps everything too):
    // on a disk without room the failure would be a torn log, not kiln's.
    let free = free_bytes(&k.root);
    assert!(
        free > 2 * NOISE,
        "this test writes a {NOISE}-byte log and needs {} bytes free under {}: {free} free",
        2 * NOISE,
        k.root.display()
    );
    let m = measure(kiln(
        &k,
        &[
            "run",
            "--name",
            "noisy",
            "busybox:1.35",
            "sh",
            "-c",
            &noise(),
        ],
    ));
    eprintln!(
        "run: {:?}, peak RSS {} KiB, {} bytes out",
        m.elapsed, m.max_rss_kib, m.stdout.bytes
    );
    assert!(m.status.success(), "{}", m.stderr.head);
    assert_eq!(m.stdout.bytes, NOISE);
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB",
        m.max_rss_kib
    );

    // The container's folder holds the log: find it by its one file.
    let containers = k.root.join("containers");
    let log = std::fs::read_dir(&containers)
        .expect("containers folder")
        .flatten()
        .map(|e| e.path().join("log"))
        .find(|p| p.exists())
        .expect("a container log");
    let (longest, bytes) = longest_log_record(&log);
    eprintln!("log file: {bytes} bytes, longest record {longest}");
    // A record's JSON: the 16 KiB of text plus time and stream.
    assert!(longest <= RECORD + 128, "longest record {longest}");

    let m = measure(kiln(&k, &["logs", "noisy"]));
    eprintln!(
        "logs: {:?}, peak RSS {} KiB, {} bytes out",
        m.elapsed, m.max_rss_kib, m.stdout.bytes
    );
    assert!(m.status.success(), "{}", m.stderr.head);
    assert_eq!(m.stdout.bytes, NOISE);
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB",
        m.max_rss_kib
    );
    let m = measure(kiln(&k, &["logs", "--tail", "2", "noisy"]));
    assert!(m.status.success(), "{}", m.stderr.head);
    let last = match NOISE % RECORD as u64 {
        0 => RECORD as u64,
        r => r,
    };
    assert_eq!(m.stdout.bytes, RECORD as u64 + last);
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB",
        m.max_rss_kib
    );
}

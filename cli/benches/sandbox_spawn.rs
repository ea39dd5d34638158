//! How long a sandbox for `true` takes, end to end (the `kiln
//! sandbox-helper` re-exec, namespaces, mounts, pivot_root, exec, wait), on
//! an overlay of the busybox fixture: wall time and CPU per run. Run as
//! root with `cargo bench -p kiln --bench sandbox_spawn`.
#![allow(unsafe_code)] // getrusage of its own children

use std::path::Path;
use std::time::Instant;

use kiln_testsupport::busybox_layer_dirs;
use kiln_worker::sandbox::{run, SandboxSpec};
use kiln_worker::snapshot::mount_overlay;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// How many sandboxes are timed.
const RUNS: usize = 30;

/// CPU milliseconds used so far by `who` (`RUSAGE_CHILDREN`,
/// `RUSAGE_THREAD`).
fn cpu(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain integers, for which all zeroes is valid.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(who, &mut r) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e3 + tv.tv_usec as f64 / 1e3;
    t(r.ru_utime) + t(r.ru_stime)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too,
    // so a run without it is a quick smoke run.
    let runs = if std::env::args().any(|a| a == "--bench") {
        RUNS
    } else {
        1
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let layers = busybox_layer_dirs(tmp.path());
    let (upper, work, merged) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let mounted = mount_overlay(&layers, &upper, &work, &merged).expect("overlay");
    let spec = SandboxSpec::new(&merged, vec!["/bin/true".into()]);
    let mut times = Vec::new();
    let (c0, t0) = (cpu(libc::RUSAGE_CHILDREN), cpu(libc::RUSAGE_THREAD));
    for _ in 0..runs {
        let t = Instant::now();
        let o = run(&spec, Path::new(KILN), &mut |_, _| {}).expect("sandbox");
        times.push(t.elapsed());
        assert!(o.status.success());
    }
    let (c1, t1) = (cpu(libc::RUSAGE_CHILDREN), cpu(libc::RUSAGE_THREAD));
    mounted.unmount().expect("unmount");
    times.sort();
    println!(
        "sandbox spawn for `true`: wall min {:?}, median {:?}, max {:?}; cpu per run: helper+sandbox {:.2} ms, caller {:.2} ms ({runs} runs)",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        (c1 - c0) / runs as f64,
        (t1 - t0) / runs as f64,
    );
}

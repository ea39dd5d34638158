//! What a sandboxed process may not do, end to end through the real binary
//! as root: docker's default seccomp profile in RUN, `kiln run` and
//! `kiln exec` (no `keyctl`, no `unshare -U`, `clone3` ENOSYS), host devices
//! kept out (a node made with mknod cannot be opened), and the ways to turn
//! the filter off on purpose (`--security-opt seccomp=unconfined`, `RUN
//! --security=insecure` under `--allow security.insecure`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testsupport::Kiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const BB: &str = "busybox:1.35";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A build of `dockerfile` (plus `files`) with plain progress: (success,
/// everything it printed).
fn build(k: &Kiln, name: &str, dockerfile: &str, extra: &[&str]) -> (bool, String) {
    let ctx = k.context(name, &[("Dockerfile", dockerfile)]);
    build_ctx(k, &ctx, extra)
}

fn build_ctx(k: &Kiln, ctx: &Path, extra: &[&str]) -> (bool, String) {
    let c = ctx.display().to_string();
    let mut args = vec!["build", "--progress", "plain", "--no-cache"];
    args.extend_from_slice(extra);
    args.push(&c);
    let o = k.run(&args);
    (o.status.success(), text(&o))
}

fn run(k: &Kiln, args: &[&str]) -> (bool, String) {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(args);
    let o = k.run(&a);
    (o.status.success(), text(&o))
}

const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static void say(const char *what, long r) { printf("%s=%d\n", what, r < 0 ? errno : 0); }
#if defined(__x86_64__)
/* The i386 ABI from a 64-bit process: the filter must cover it too. */
static long int80(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}
#endif
int main(void) {
#if defined(__x86_64__)
    printf("i386_getpid=%s\n", int80(20, 0, 0, 0) > 0 ? "ok" : "failed");
    printf("i386_keyctl=%ld\n", -int80(288, 0, -4, 0));
    printf("i386_unshare=%ld\n", -int80(310, CLONE_NEWUSER, 0, 0));
#endif
    say("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -4 /* USER */, 0));
    say("add_key", syscall(SYS_add_key, "user", "kiln", "v", 1, -4));
    say("unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    say("clone3", syscall(SYS_clone3, (void *)0, 0));
    return 0;
}
"#;

/// The syscall probe, compiled static for the busybox image; `None` when
/// this machine has no C compiler (the other tests still cover seccomp).
fn probe(dir: &Path) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let src = dir.join("probe.c");
    let bin = dir.join("probe");
    std::fs::write(&src, PROBE_C).ok()?;
    let ok = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .ok()?
        .success();
    if !ok {
        eprintln!("no static C compiler: syscall probe skipped");
        return None;
    }
    std::fs::remove_file(&src).ok()?;
    Some(bin)
}

#[test]
fn run_steps_get_docker_s_seccomp_filter() {
    let k = Kiln::with_busybox(KILN);
    let (ok, out) = build(
        &k,
        "seccomp",
        "FROM busybox:1.35\nRUN grep 'Seccomp:' /proc/self/status && \
         (unshare -U true; echo unshare=$?) && echo hi > /dev/null && \
         head -c1 /dev/urandom | wc -c && exec 3<>/dev/ptmx && echo ptmx=ok\n",
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("unshare=1"), "{out}");
    assert!(out.contains("ptmx=ok"), "{out}");
}

#[test]
fn keyctl_and_user_namespaces_are_refused_with_eperm() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.path("probe");
    let Some(_) = probe(&ctx) else { return };
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:1.35\nCOPY probe /probe\nRUN /probe\n",
    )
    .expect("dockerfile");
    let (ok, out) = build_ctx(&k, &ctx, &[]);
    assert!(ok, "{out}");
    for want in ["keyctl=1", "add_key=1", "unshare=1", "clone3=38"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    if cfg!(target_arch = "x86_64") {
        for want in ["i386_getpid=ok", "i386_keyctl=1", "i386_unshare=1"] {
            assert!(out.contains(want), "{want} missing:\n{out}");
        }
    }
    // The same image through `kiln run`.
    let (ok, out) = build_ctx(&k, &ctx, &["-t", "probe:1"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&k, &["probe:1", "/probe"]);
    assert!(ok, "{out}");
    for want in ["keyctl=1", "add_key=1", "unshare=1", "clone3=38"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
}

#[test]
fn kiln_run_and_exec_get_the_filter_and_unconfined_lifts_it() {
    let k = Kiln::with_busybox(KILN);
    let (ok, out) = run(
        &k,
        &[
            BB,
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; unshare -U true",
        ],
    );
    assert!(!ok, "unshare must fail: {out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");

    let (ok, out) = run(
        &k,
        &[
            "--security-opt",
            "seccomp=unconfined",
            BB,
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; unshare -U true && echo unshared",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("Seccomp:\t0") && out.contains("unshared"),
        "{out}"
    );

    let o = k.run(&["run", "-d", BB, "sleep", "30"]);
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let e = k.run(&["exec", &id, "grep", "Seccomp:", "/proc/self/status"]);
    let _ = k.run(&["rm", "-f", &id]);
    assert!(e.status.success(), "{}", text(&e));
    assert!(text(&e).contains("Seccomp:\t2"), "{}", text(&e));
}

#[test]
fn a_custom_profile_in_docker_s_format_applies() {
    let k = Kiln::with_busybox(KILN);
    let profile = k.path("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .expect("profile");
    let opt = format!("seccomp={}", profile.display());
    let (ok, out) = run(
        &k,
        &[
            "--security-opt",
            &opt,
            BB,
            "sh",
            "-c",
            "mkdir /x; echo rc=$?",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("Permission denied") && out.contains("rc=1"),
        "{out}"
    );
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_NOPE"}"#).expect("profile");
    let (ok, out) = run(&k, &["--security-opt", &opt, BB, "true"]);
    assert!(!ok && out.contains("SCMP_ACT_NOPE"), "{out}");
}

#[test]
fn host_devices_made_with_mknod_cannot_be_opened() {
    let k = Kiln::with_busybox(KILN);
    let script = "mknod /tmp/l0 b 7 0 && mknod /tmp/mem c 1 1 && mknod /dev/mem2 c 1 1 && \
                  (dd if=/tmp/l0 of=/dev/null bs=1 count=1; echo loop=$?) && \
                  (head -c1 /tmp/mem; echo mem=$?) && (head -c1 /dev/mem2; echo devmem=$?) && \
                  echo x > /dev/null && head -c1 /dev/zero | wc -c && echo fine";
    let df = format!("FROM busybox:1.35\nRUN {script}\n");
    let (ok, out) = build(&k, "mknod", &df, &[]);
    assert!(ok, "{out}");
    for want in ["loop=1", "mem=1", "devmem=1", "fine"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(out.contains("Permission denied"), "{out}");

    let (ok, out) = run(&k, &[BB, "sh", "-c", script]);
    assert!(ok, "{out}");
    for want in ["loop=1", "mem=1", "devmem=1", "fine"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    // A bind mount (-v) is nodev too.
    let vol = k.path("vol");
    std::fs::create_dir_all(&vol).expect("vol");
    let v = format!("{}:/vol", vol.display());
    let (ok, out) = run(
        &k,
        &[
            "-v",
            &v,
            BB,
            "sh",
            "-c",
            "mknod /vol/mem c 1 1 && (head -c1 /vol/mem; echo vol=$?)",
        ],
    );
    assert!(ok && out.contains("vol=1"), "{out}");
}

#[test]
fn device_passes_one_node_in_on_purpose() {
    let k = Kiln::with_busybox(KILN);
    let (ok, out) = run(
        &k,
        &[
            "--device",
            "/dev/zero:/dev/myzero",
            BB,
            "sh",
            "-c",
            "head -c3 /dev/myzero | wc -c",
        ],
    );
    assert!(ok && out.trim().ends_with('3'), "{out}");
    let (ok, out) = run(&k, &["--device", "/etc/hostname", BB, "true"]);
    assert!(!ok && out.contains("not a device"), "{out}");
}

#[test]
fn insecure_run_needs_allow_and_then_has_no_filter() {
    let k = Kiln::with_busybox(KILN);
    let df = "FROM busybox:1.35\nRUN echo first-ran\n\
              RUN --security=insecure grep Seccomp: /proc/self/status && \
              unshare -U true && echo unshared\n";
    let (ok, out) = build(&k, "insecure", df, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("security.insecure"), "{out}");
    assert!(
        !out.contains("first-ran"),
        "refused before anything ran: {out}"
    );
    let (ok, out) = build(&k, "insecure", df, &["--allow", "security.insecure"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Seccomp:\t0") && out.contains("unshared"),
        "{out}"
    );
    // The other steps keep the filter.
    let (ok, out) = build(
        &k,
        "insecure2",
        "FROM busybox:1.35\nRUN grep Seccomp: /proc/self/status\n",
        &["--allow", "security.insecure"],
    );
    assert!(ok && out.contains("Seccomp:\t2"), "{out}");
}

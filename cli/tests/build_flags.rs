//! buildx's remaining flags through the binary: each one's effect seen
//! from inside a RUN (`/etc/hosts`, `ulimit`, `df /dev/shm`,
//! `/proc/self/cgroup`, `CapEff`) or in the image (labels in `kiln
//! inspect`, annotations in the OCI layout's index and manifests), the
//! progress modes and `# syntax=`, and the flags kiln refuses by name.

use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_testsupport::{stderr, Kiln};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Builds `df` to a local folder with `extra` flags; (output, folder).
fn build_local(k: &Kiln, name: &str, df: &str, extra: &[&str]) -> (Output, PathBuf) {
    let ctx = k.context(name, &[("Dockerfile", df)]);
    let out = k.path(&format!("{name}-out"));
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["build", "--progress", "plain", "-o", &dest];
    args.extend_from_slice(extra);
    let ctx = ctx.display().to_string();
    args.push(&ctx);
    (k.run(&args), out)
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
}

#[test]
fn add_host_lines_are_in_every_runs_etc_hosts() {
    let k = Kiln::with_busybox(KILN);
    let df = "FROM busybox:1.35\nRUN cat /etc/hosts > /hosts\n";
    let (o, out) = build_local(
        &k,
        "hosts",
        df,
        &[
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "v6=[fd00::1]",
            "--add-host",
            "gw=host-gateway",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let hosts = read(&out, "hosts");
    let lines: Vec<&str> = hosts.lines().collect();
    // BuildKit's own two lines first, then the extra hosts in order.
    assert_eq!(lines[0], "127.0.0.1\tlocalhost buildkitsandbox", "{hosts}");
    assert_eq!(lines[1], "::1\tlocalhost ip6-localhost ip6-loopback");
    assert_eq!(lines[2], "10.1.2.3\tdb");
    assert_eq!(lines[3], "fd00::1\tv6");
    let (gw_ip, gw) = lines[4].split_once('\t').expect("gw line");
    assert_eq!(gw, "gw");
    assert!(
        gw_ip.parse::<std::net::IpAddr>().is_ok(),
        "host-gateway resolved to an address: {hosts}"
    );

    // Other hosts are another cache key: the step runs again.
    let (o, out) = build_local(&k, "hosts", df, &["--add-host", "db:10.9.9.9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(read(&out, "hosts").contains("10.9.9.9\tdb"));

    let bad = k.run(&["build", "--add-host", "db:not-an-ip", "."]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid IP address in add-host"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn ulimit_and_shm_size_apply_inside_run() {
    let k = Kiln::with_busybox(KILN);
    let df = "FROM busybox:1.35\n\
              RUN ulimit -Sn > /nofile; ulimit -Hn >> /nofile; \
              df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n";
    let (o, out) = build_local(
        &k,
        "limits",
        df,
        &["--ulimit", "nofile=1024:2048", "--shm-size", "128m"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out, "nofile"), "1024\n2048\n");
    assert_eq!(read(&out, "shm").trim(), (128 * 1024).to_string());

    // Without the flags: docker's defaults (64 MiB of /dev/shm).
    let (o, out) = build_local(&k, "limits", df, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out, "shm").trim(), (64 * 1024).to_string());

    for (flag, value, want) in [
        (
            "--ulimit",
            "nofile=10:5",
            "soft limit must be less than or equal to hard limit",
        ),
        ("--ulimit", "bogus=1", "invalid ulimit type: bogus"),
        ("--shm-size", "12x", "invalid size"),
    ] {
        let bad = k.run(&["build", flag, value, "."]);
        assert!(!bad.status.success(), "{flag} {value}");
        assert!(
            stderr(&bad).contains(want),
            "{flag} {value}: {}",
            stderr(&bad)
        );
    }
}

/// Without `--ulimit` a step keeps the limits of the kiln that runs it, as
/// a BuildKit step keeps its daemon's (BuildKit sets none): not a million
/// open files, which apt and dpkg pay for on every fork.
#[test]
fn steps_keep_kilns_own_limits_without_ulimit() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "inherit",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN ulimit -Sn > /nofile; ulimit -Hn >> /nofile\n",
        )],
    );
    let out = k.path("inherit-out");
    let dest = format!("type=local,dest={}", out.display());
    let ctx = ctx.display().to_string();
    let inner = k.cmd(&["build", "--progress", "plain", "-o", &dest, &ctx]);
    let mut c = std::process::Command::new("prlimit");
    c.args(["--nofile=1000:3000", "--"])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (key, value) in inner.get_envs() {
        if let Some(v) = value {
            c.env(key, v);
        }
    }
    let o = c.output().expect("prlimit kiln build");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&out, "nofile"), "1000\n3000\n");
}

/// Removes a test's `--cgroup-parent` folders in every hierarchy.
fn remove_cgroups(parent: &str) {
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let base = h.path().join(parent);
        let _ = std::fs::remove_dir(base.join("buildkit"));
        let _ = std::fs::remove_dir(&base);
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent).join("buildkit"));
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent));
}

#[test]
fn cgroup_parent_places_the_step_beneath_it() {
    let k = Kiln::with_busybox(KILN);
    let parent = format!("kiln-test-{}", std::process::id());
    let df = "FROM busybox:1.35\nRUN cat /proc/self/cgroup > /cg\n";
    let (o, out) = build_local(&k, "cg", df, &["--cgroup-parent", &parent]);
    let err = stderr(&o);
    let cg = out.join("cg").exists().then(|| read(&out, "cg"));
    remove_cgroups(&parent);
    assert!(o.status.success(), "{err}");
    let cg = cg.expect("the step wrote /cg");
    let want = format!("/{parent}/buildkit/kiln-");
    assert!(
        cg.lines().any(|l| l.contains(&want)),
        "the step runs in /PARENT/buildkit/ID, as BuildKit's: {cg}"
    );

    let bad = k.run(&["build", "--cgroup-parent", "a/../..", "."]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid cgroup parent"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn insecure_run_gets_every_capability_only_when_allowed() {
    let k = Kiln::with_busybox(KILN);
    let df = "FROM busybox:1.35\n\
              RUN --security=insecure grep CapEff /proc/self/status > /caps\n";
    let (o, _) = build_local(&k, "ins", df, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("security.insecure"), "{}", stderr(&o));

    let (o, out) = build_local(&k, "ins", df, &["--allow", "security.insecure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let caps = read(&out, "caps");
    let hex = caps.split_whitespace().nth(1).expect("CapEff value");
    let caps = u64::from_str_radix(hex, 16).expect("hex");
    // Every capability this host grants (BuildKit's own test wants all of
    // 0..=37; a host without some cannot give them), CAP_SYS_ADMIN among
    // them, which docker's default set lacks.
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let host = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapBnd");
    let all = host & 0x3f_ffff_ffff;
    assert_eq!(caps & all, all, "{hex} vs the host's {host:x}");
    assert_ne!(caps & (1 << 21), 0, "CAP_SYS_ADMIN: {hex}");
}

#[test]
fn labels_go_into_the_image_config() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "labels",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nLABEL from.file=1 over=file\n",
        )],
    );
    let ctx = ctx.display().to_string();
    k.ok(&[
        "build",
        "-q",
        "-t",
        "labelled",
        "--label",
        "org.example.a=b",
        "--label",
        "over=flag",
        &ctx,
    ]);
    let (out, _) = k.ok(&["inspect", "labelled"]);
    let v: Value = serde_json::from_str(&out).expect("inspect JSON");
    let labels = &v[0]["Config"]["Labels"];
    assert_eq!(labels["org.example.a"], "b", "{labels}");
    assert_eq!(labels["from.file"], "1", "{labels}");
    assert_eq!(labels["over"], "flag", "the flag wins over LABEL: {labels}");
}

/// Unpacks an OCI archive; returns its folder.
fn unpack(k: &Kiln, tar_path: &Path, name: &str) -> PathBuf {
    let dir = k.path(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = std::fs::File::open(tar_path).expect("open tar");
    tar::Archive::new(f).unpack(&dir).expect("unpack");
    dir
}

fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob");
    serde_json::from_slice(&bytes).expect("blob JSON")
}

#[test]
fn annotations_land_where_their_type_says() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ann",
        &[("Dockerfile", "FROM busybox:1.35\nRUN echo x > /x\n")],
    );
    let ctx = ctx.display().to_string();

    // One platform: the manifest and its descriptor in index.json.
    let tar1 = k.path("one.tar");
    let dest = format!("type=oci,dest={}", tar1.display());
    k.ok(&[
        "build",
        "-q",
        "-o",
        &dest,
        "--annotation",
        "plain=1",
        "--annotation",
        "manifest:m=2",
        "--annotation",
        "manifest-descriptor:md=3",
        &ctx,
    ]);
    let l = unpack(&k, &tar1, "one");
    let index: Value = serde_json::from_str(&read(&l, "index.json")).expect("index.json");
    let desc = &index["manifests"][0];
    assert_eq!(desc["annotations"]["md"], "3", "{index}");
    let manifest = blob(&l, desc["digest"].as_str().expect("digest"));
    assert_eq!(manifest["annotations"]["plain"], "1", "no type: manifest");
    assert_eq!(manifest["annotations"]["m"], "2");
    assert!(manifest["annotations"].get("md").is_none());

    // Two platforms: the index, its descriptor, and per-platform ones.
    let tar2 = k.path("two.tar");
    let dest = format!("type=oci,dest={}", tar2.display());
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &dest,
        "--annotation",
        "index:i=1",
        "--annotation",
        "index-descriptor:id=2",
        "--annotation",
        "manifest[linux/arm64]:only-arm=3",
        "--annotation",
        "manifest-descriptor[linux/amd64]:only-amd-desc=4",
        &ctx,
    ]);
    let l = unpack(&k, &tar2, "two");
    let top: Value = serde_json::from_str(&read(&l, "index.json")).expect("index.json");
    let idesc = &top["manifests"][0];
    assert_eq!(idesc["annotations"]["id"], "2", "{top}");
    let index = blob(&l, idesc["digest"].as_str().expect("digest"));
    assert_eq!(index["annotations"]["i"], "1", "{index}");
    for m in index["manifests"].as_array().expect("manifests") {
        let arch = m["platform"]["architecture"].as_str().expect("arch");
        let manifest = blob(&l, m["digest"].as_str().expect("digest"));
        let arm = arch == "arm64";
        assert_eq!(
            manifest["annotations"].get("only-arm").is_some(),
            arm,
            "{arch}"
        );
        assert_eq!(
            m["annotations"].get("only-amd-desc").is_some(),
            !arm,
            "{arch}: {m}"
        );
    }

    for (value, want) in [
        ("nokey", "expected key=value"),
        ("config:k=v", "unknown annotation type \"config\""),
    ] {
        let bad = k.run(&["build", "--annotation", value, &ctx]);
        assert!(!bad.status.success(), "{value}");
        assert!(stderr(&bad).contains(want), "{value}: {}", stderr(&bad));
    }
}

#[test]
fn rawjson_progress_and_buildkit_progress() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "raw",
        &[("Dockerfile", "FROM busybox:1.35\nRUN echo hello-raw\n")],
    );
    let ctx = ctx.display().to_string();
    let out = k
        .cmd(&["build", "--no-cache", &ctx])
        .env("BUILDKIT_PROGRESS", "rawjson")
        .output()
        .expect("kiln");
    assert!(out.status.success(), "{}", stderr(&out));
    let statuses: Vec<Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let vertex_done = statuses.iter().any(|s| {
        s["vertexes"].as_array().is_some_and(|v| {
            v.iter().any(|v| {
                v["name"].as_str().is_some_and(|n| n.contains("RUN echo"))
                    && v["completed"].is_string()
            })
        })
    });
    assert!(vertex_done, "a completed RUN vertex: {}", stderr(&out));
    // "hello-raw\n" in base64.
    let logged = statuses.iter().any(|s| {
        s["logs"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["data"] == "aGVsbG8tcmF3Cg=="))
    });
    assert!(
        logged,
        "the step's output as base64 log data: {}",
        stderr(&out)
    );

    // The flag wins over the variable.
    let out = k
        .cmd(&["build", "--no-cache", "--progress", "plain", &ctx])
        .env("BUILDKIT_PROGRESS", "rawjson")
        .output()
        .expect("kiln");
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("#2 [2/2] RUN echo hello-raw"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn syntax_directive_and_buildkit_syntax_warn_and_build() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "syntax",
        &[(
            "Dockerfile",
            "# syntax=docker/dockerfile:1.7\nFROM busybox:1.35\nRUN true\n",
        )],
    );
    let ctx = ctx.display().to_string();
    let (_, err) = k.ok(&["build", "--progress", "plain", &ctx]);
    assert!(
        err.contains("# syntax=docker/dockerfile:1.7: kiln does not run frontend images; its built-in Dockerfile frontend is used"),
        "{err}"
    );
    let (_, err) = k.ok(&[
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "BUILDKIT_SYNTAX=example/fe:2",
        &ctx,
    ]);
    assert!(
        err.contains("BUILDKIT_SYNTAX=example/fe:2: kiln does not run"),
        "{err}"
    );
}

#[test]
fn unsupported_flags_are_refused_by_name_and_legacy_ones_accepted() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "uns",
        &[("Dockerfile", "FROM busybox:1.35\nRUN echo ran\n")],
    );
    let ctx = ctx.display().to_string();
    for args in [
        &["--memory", "1g"][..],
        &["-m", "1g"],
        &["--memory-swap", "2g"],
        &["--cpu-shares", "2"],
        &["--cpu-period", "100"],
        &["--cpu-quota", "100"],
        &["--cpuset-cpus", "0"],
        &["--cpuset-mems", "0"],
        &["--builder", "x"],
        &["--detach"],
        &["--root", "/x"],
        &["--server-config", "/x"],
        &["--invoke", "sh"],
        &["--print", "outline"],
    ] {
        let mut a = vec!["build", "--progress", "plain"];
        a.extend_from_slice(args);
        a.push(&ctx);
        let o = k.run(&a);
        assert!(!o.status.success(), "{args:?}");
        let flag = args[0].trim_start_matches('-');
        let flag = match flag {
            "m" => "memory",
            f => f,
        };
        let want = format!("kiln does not support --{flag}");
        assert!(stderr(&o).contains(&want), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("ran"), "refused before building");
    }
    // What buildx accepts and ignores: no-ops, or buildx's warnings.
    let (_, err) = k.ok(&[
        "build",
        "-q",
        "--rm",
        "--force-rm",
        "--compress",
        "--squash",
        "--isolation",
        "default",
        "--security-opt",
        "seccomp=unconfined",
        &ctx,
    ]);
    assert!(
        err.contains("experimental flag squash is removed with BuildKit"),
        "{err}"
    );
    assert!(
        err.contains("isolation flag is deprecated with BuildKit"),
        "{err}"
    );
    assert!(err.contains("security-opt flag is deprecated"), "{err}");
}

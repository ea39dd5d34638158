//! `kiln compose build` runs the services' builds at once through one
//! builder, and a stage two services' Dockerfiles share runs once: the
//! issue's "Builds of several services run in parallel through one build
//! graph, sharing identical stages".

use kiln_testsupport::Kiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// The stage both services start from: slow, and what it writes differs
/// each time it runs.
const SHARED: &str = "RUN sleep 2; cat /proc/uptime > /x";

fn dockerfile(service: &str) -> String {
    format!(
        "FROM busybox:1.35 AS base\n{SHARED}\n\
         FROM base\n\
         RUN cut -d' ' -f1 /proc/uptime > /{service}-start; sleep 2; \
         cut -d' ' -f1 /proc/uptime > /{service}-end\n"
    )
}

/// The contents of `files` in the image, through `kiln run`.
fn read(k: &Kiln, image: &str, files: &[&str]) -> Vec<String> {
    let mut args = vec!["run", "--rm", "--network", "none", image, "cat"];
    args.extend(files);
    let out = k.ok(&args).0;
    out.lines().map(str::to_string).collect()
}

#[test]
fn services_build_at_once_and_share_a_stage() {
    let k = Kiln::with_busybox(KILN);
    let dir = k.path("par");
    for s in ["a", "b"] {
        k.context(&format!("par/{s}"), &[("Dockerfile", &dockerfile(s))]);
    }
    std::fs::write(
        dir.join("compose.yaml"),
        "name: par\nservices:\n  a:\n    build: ./a\n  b:\n    build: ./b\n",
    )
    .expect("compose file");
    let out = k
        .cmd(&["compose", "build"])
        .current_dir(&dir)
        .output()
        .expect("kiln");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for s in ["a", "b"] {
        assert!(err.contains(&format!("Service {s}  Built")), "{err}");
    }

    // The shared step ran once: one service shows it run, the other shows
    // it cached (steps are named with their service, as docker compose
    // names them).
    let numbers: Vec<(String, String)> = err
        .lines()
        .filter(|l| l.ends_with(SHARED))
        .filter_map(|l| {
            let (n, rest) = l.split_once(' ')?;
            Some((n.to_string(), rest.to_string()))
        })
        .collect();
    assert_eq!(numbers.len(), 2, "{err}");
    let cached: Vec<&(String, String)> = numbers
        .iter()
        .filter(|(n, _)| err.lines().any(|l| l == format!("{n} CACHED")))
        .collect();
    assert_eq!(cached.len(), 1, "one of them cached: {err}");
    let run: Vec<&(String, String)> = numbers
        .iter()
        .filter(|(n, _)| err.lines().any(|l| l.starts_with(&format!("{n} DONE "))))
        .collect();
    assert_eq!(run.len(), 1, "one of them ran: {err}");
    let mut services: Vec<&str> = numbers
        .iter()
        .map(|(_, name)| name.split(' ').next().unwrap_or(""))
        .collect();
    services.sort_unstable();
    assert_eq!(services, ["[a", "[b"], "named with their services: {err}");

    // Both images hold the one result of the shared step.
    let a = read(&k, "par-a", &["/x", "/a-start", "/a-end"]);
    let b = read(&k, "par-b", &["/x", "/b-start", "/b-end"]);
    assert_eq!(a[0], b[0], "the shared stage's /x");
    // The steps that differ ran at the same time: each started before the
    // other ended (one after the other, b would start after a's end).
    let t = |v: &[String], i: usize| -> f64 { v[i].trim().parse().expect("uptime") };
    let (a0, a1, b0, b1) = (t(&a, 1), t(&a, 2), t(&b, 1), t(&b, 2));
    assert!(a0 < b1 && b0 < a1, "a {a0}..{a1}, b {b0}..{b1}");

    // A second build finds everything in the cache.
    let out = k
        .cmd(&["compose", "build"])
        .current_dir(&dir)
        .output()
        .expect("kiln");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(" DONE "), "nothing runs again: {err}");

    // No scratch folder outlives the builds.
    let work = k.root.join("work");
    let left: Vec<_> = walk(&work);
    assert!(left.is_empty(), "left in work/: {left:?}");
}

/// The files (not folders) below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

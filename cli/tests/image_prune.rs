//! `kiln image prune` as docker's: the prompt (answered no, then yes), `-f`,
//! dangling images only by default, `--filter until=…` on the config's
//! creation time, `--filter label=…`, `-a` for every image no container
//! uses, docker's "Deleted Images:" / "Total reclaimed space:" output, and
//! the build cache left alone.

use std::io::Write;
use std::process::{Output, Stdio};

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// `build -q` of a scratch image holding `content`; returns the image ID.
fn build(k: &Kiln, name: &str, df_extra: &str, content: &str, extra: &[&str]) -> String {
    let dir = k.context(
        name,
        &[
            (
                "Dockerfile",
                &format!("FROM scratch\n{df_extra}COPY f.txt /f.txt\n"),
            ),
            ("f.txt", content),
        ],
    );
    let d = dir.display().to_string();
    let mut args = vec!["build", "-q"];
    args.extend_from_slice(extra);
    args.push(&d);
    let (out, _) = k.ok(&args);
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:"), "{out}");
    id
}

/// `kiln image prune ARGS` with `input` on stdin.
fn prune(k: &Kiln, args: &[&str], input: &str) -> Output {
    let mut a = vec!["image", "prune"];
    a.extend_from_slice(args);
    let mut child = k
        .cmd(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln");
    let mut sin = child.stdin.take().expect("stdin");
    let _ = sin.write_all(input.as_bytes());
    drop(sin);
    child.wait_with_output().expect("kiln")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "image prune: {}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The IDs `kiln images -q --no-trunc` lists.
fn ids(k: &Kiln) -> Vec<String> {
    let (out, _) = k.ok(&["images", "-q", "--no-trunc"]);
    out.lines().map(str::to_string).collect()
}

/// "Deleted Images:\n<lines>\n\nTotal reclaimed space: …": the lines and
/// the size.
fn report(out: &str) -> (Vec<String>, String) {
    let (head, total) = out
        .rsplit_once("Total reclaimed space: ")
        .unwrap_or_else(|| panic!("no total: {out}"));
    let lines = match head.strip_prefix("Deleted Images:\n") {
        Some(rest) => {
            assert!(
                rest.ends_with("\n\n"),
                "a blank line before the total: {out:?}"
            );
            rest.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        }
        None => {
            assert_eq!(head, "", "{out:?}");
            Vec::new()
        }
    };
    (lines, total.trim_end().to_string())
}

fn exists(k: &Kiln, id: &str) -> bool {
    k.run(&["inspect", id]).status.success()
}

#[test]
fn image_prune_removes_dangling_then_unused_images() {
    let k = Kiln::with_busybox(KILN);
    let kept = build(&k, "kept", "", "tagged\n", &["-t", "keep:1"]);
    let labelled = build(&k, "labelled", "LABEL stage=tmp\n", "labelled\n", &[]);
    let old = build(
        &k,
        "old",
        "",
        "old\n",
        &["--build-arg", "SOURCE_DATE_EPOCH=1000000000"],
    );
    let busybox = ids(&k)
        .into_iter()
        .find(|i| ![&kept, &labelled, &old].contains(&i))
        .expect("busybox's ID");

    // Asked first; anything but y keeps everything.
    let o = prune(&k, &[], "n\n");
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
        ),
        "{out}"
    );
    assert!(stderr(&o).contains("image prune has been cancelled"));
    assert!(exists(&k, &labelled) && exists(&k, &old));

    // until: only images created before the time (the old one, 2001).
    let (lines, total) = report(&stdout(&prune(&k, &["-f", "--filter", "until=24h"], "")));
    assert_eq!(lines, vec![format!("deleted: {old}")]);
    assert_ne!(total, "0B", "its layer is freed");
    assert!(!exists(&k, &old));
    assert!(exists(&k, &labelled));

    // label: a label nobody has removes nothing.
    let out = stdout(&prune(&k, &["-f", "--filter", "label=stage=other"], ""));
    assert_eq!(out, "Total reclaimed space: 0B\n");
    let out = stdout(&prune(&k, &["-f", "--filter", "label!=stage"], ""));
    assert_eq!(out, "Total reclaimed space: 0B\n");

    // Answered yes, with the matching label: the dangling one goes, the
    // tagged one stays.
    let out = stdout(&prune(&k, &["--filter", "label=stage=tmp"], "y\n"));
    let (lines, _) = report(out.split_once("[y/N] ").expect("prompt").1);
    assert_eq!(lines, vec![format!("deleted: {labelled}")]);
    assert!(!exists(&k, &labelled));
    assert!(exists(&k, &kept));

    // Nothing dangling left.
    let out = stdout(&prune(&k, &["-f"], ""));
    assert_eq!(out, "Total reclaimed space: 0B\n");

    // -a: every image no container uses; busybox has one.
    let (_, _) = k.ok(&["run", "--name", "c1", "busybox:1.35", "true"]);
    let o = prune(&k, &["-a"], "y\n");
    let out = stdout(&o);
    assert!(
        out.starts_with("WARNING! This will remove all images without at least one container associated to them."),
        "{out}"
    );
    let (lines, total) = report(out.split_once("[y/N] ").expect("prompt").1);
    assert_eq!(
        lines,
        vec!["untagged: keep:1".to_string(), format!("deleted: {kept}")]
    );
    assert_ne!(total, "0B");
    assert_eq!(ids(&k), vec![busybox.clone()]);
    // Once the container is gone, busybox goes too.
    k.ok(&["rm", "c1"]);
    let (lines, _) = report(&stdout(&prune(&k, &["-a", "-f"], "")));
    assert_eq!(
        lines,
        vec![
            "untagged: busybox:1.35".to_string(),
            format!("deleted: {busybox}")
        ]
    );
    assert!(ids(&k).is_empty());

    // docker's refusal of a filter image prune does not know.
    let o = prune(&k, &["-f", "--filter", "reference=x"], "");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid filter 'reference'"),
        "{}",
        stderr(&o)
    );
}

//! Images without names and the one image ID: a build without `-t` is kept
//! as a `<none>` image that `images` lists, `run` runs (by ID or prefix)
//! and `prune` removes; moving a tag leaves the old image `<none>`; every
//! command (build output, `-q`, `--iidfile`, `images`, `inspect`,
//! `history`, `rmi`, `save`/`load`) shows the same ID, the config digest
//! (docker's convention).

use std::path::Path;

use kiln_testsupport::Kiln;
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn ctx(k: &Kiln, name: &str, content: &str) -> std::path::PathBuf {
    k.context(
        name,
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35\nCOPY msg.txt /msg.txt\nCMD [\"cat\", \"/msg.txt\"]\n",
            ),
            ("msg.txt", content),
        ],
    )
}

/// `build -q` and `--iidfile`: the same ID; returns it.
fn build_q(k: &Kiln, dir: &Path, extra: &[&str]) -> String {
    let iid = k.path("iid").display().to_string();
    let d = dir.display().to_string();
    let mut args = vec!["build", "-q", "--iidfile", &iid];
    args.extend_from_slice(extra);
    args.push(&d);
    let (out, _) = k.ok(&args);
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    assert_eq!(std::fs::read_to_string(k.path("iid")).expect("iid"), id);
    id
}

fn images(k: &Kiln, args: &[&str]) -> Vec<Vec<String>> {
    let mut a = vec!["images", "--no-trunc"];
    a.extend_from_slice(args);
    let (out, _) = k.ok(&a);
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn inspect(k: &Kiln, what: &str) -> Value {
    let (out, _) = k.ok(&["inspect", what]);
    let v: Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0].clone()
}

#[test]
fn an_untagged_build_is_kept_runs_and_is_pruned() {
    let k = Kiln::with_busybox(KILN);
    let dir = ctx(&k, "a", "untagged hello\n");
    let id = build_q(&k, &dir, &[]);

    // Listed as <none>, with the build's ID.
    let rows = images(&k, &[]);
    assert!(
        rows.iter()
            .any(|r| r[0] == "<none>" && r[1] == "<none>" && r[2] == id),
        "{rows:?}"
    );
    let dangling = images(&k, &["-a", "--filter", "dangling=true"]);
    assert_eq!(dangling.len(), 1, "{dangling:?}");
    assert_eq!(dangling[0][2], id);
    let named = images(&k, &["--filter", "dangling=false"]);
    assert!(named.iter().all(|r| r[0] != "<none>"), "{named:?}");

    // Runs by ID and by a prefix of it.
    let hex = id.trim_start_matches("sha256:");
    for r in [id.as_str(), &hex[..12]] {
        let (out, _) = k.ok(&["run", "--rm", r]);
        assert_eq!(out, "untagged hello\n", "run {r}");
    }

    // The same ID from inspect and history.
    assert_eq!(inspect(&k, &hex[..12])["Id"], id.as_str());
    assert_eq!(inspect(&k, &id)["RepoTags"], serde_json::json!([]));
    let (h, _) = k.ok(&["history", "-q", "--no-trunc", &id]);
    assert_eq!(h.lines().next(), Some(id.as_str()));

    // prune removes it.
    let (out, _) = k.ok(&["prune"]);
    assert!(out.contains(&id), "{out}");
    assert!(images(&k, &["--filter", "dangling=true"]).is_empty());
    assert!(!k.run(&["inspect", &id]).status.success());
}

#[test]
fn moving_a_tag_leaves_the_old_image_none() {
    let k = Kiln::with_busybox(KILN);
    let one = build_q(&k, &ctx(&k, "a", "one\n"), &["-t", "app:1"]);
    assert!(images(&k, &["--filter", "dangling=true"]).is_empty());
    let two = build_q(&k, &ctx(&k, "b", "two\n"), &["-t", "app:1"]);
    assert_ne!(one, two);
    let dangling = images(&k, &["--filter", "dangling=true"]);
    assert_eq!(dangling.len(), 1, "{dangling:?}");
    assert_eq!(dangling[0][2], one);
    let (out, _) = k.ok(&["run", "--rm", &one]);
    assert_eq!(out, "one\n");
    assert_eq!(inspect(&k, "app:1")["Id"], two.as_str());
    // Naming the old one again makes it not dangling.
    k.ok(&["tag", &one, "app:old"]);
    assert!(images(&k, &["--filter", "dangling=true"]).is_empty());
    // rmi by ID prints the ID.
    let (out, _) = k.ok(&["rmi", &one]);
    assert!(out.contains(&format!("Deleted: {one}")), "{out}");
}

#[test]
fn one_id_in_every_command_and_through_save_and_load() {
    let k = Kiln::with_busybox(KILN);
    let dir = ctx(&k, "a", "same\n");
    let d = dir.display().to_string();
    let out = k.run(&["build", "--progress", "plain", "-t", "same:1", &d]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = build_q(&k, &dir, &["-t", "same:1"]);
    assert!(
        stderr.contains(&format!("writing image {id} done")),
        "{stderr}"
    );
    let rows = images(&k, &["same"]);
    assert_eq!(rows[0][2], id, "{rows:?}");
    let (q, _) = k.ok(&["images", "-q", "--no-trunc", "same"]);
    assert_eq!(q.trim(), id);
    assert_eq!(inspect(&k, "same:1")["Id"], id.as_str());

    // save, then load into a fresh store: the same ID.
    let tar = k.path("same.tar").display().to_string();
    k.ok(&["save", "-o", &tar, "same:1"]);
    let other = Kiln::empty(KILN);
    let (out, _) = other.ok(&["load", "-i", &tar]);
    assert!(out.contains("same:1"), "{out}");
    assert_eq!(inspect(&other, "same:1")["Id"], id.as_str());
    // An untagged image saved by ID loads as <none> with its ID.
    let third = Kiln::empty(KILN);
    let tar2 = k.path("byid.tar").display().to_string();
    let untagged = build_q(&k, &ctx(&k, "c", "by id\n"), &[]);
    k.ok(&["save", "-o", &tar2, &untagged]);
    let (out, _) = third.ok(&["load", "-i", &tar2]);
    assert!(
        out.contains(&format!("Loaded image ID: {untagged}")),
        "{out}"
    );
    assert_eq!(
        images(&third, &["--filter", "dangling=true"])[0][2],
        untagged
    );
}

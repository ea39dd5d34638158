//! Volumes end to end through `kiln run` and `kiln volume`, as root on the
//! busybox fixture: named volumes outlive their containers, an image's
//! `VOLUME` is a populated anonymous volume, `rm -v` and `--rm` remove
//! anonymous volumes, `--volumes-from`, `--read-only`, `--tmpfs`, `--mount`.

use std::path::PathBuf;

use kiln_testsupport::containers::{err as stderr, Ctr as K};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

/// This file's helpers on the shared test kiln.
trait VolumeHelpers {
    fn volumes(&self) -> Vec<String>;
    fn build(&self, tag: &str, dockerfile: &str);
}

impl VolumeHelpers for K {
    fn volumes(&self) -> Vec<String> {
        self.ok(&["volume", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Builds an image from a Dockerfile text.
    fn build(&self, tag: &str, dockerfile: &str) {
        let ctx = self
            .tmp
            .path()
            .join(format!("ctx-{}", tag.replace(':', "-")));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        self.ok(&["build", "-q", "-t", tag, ctx.to_str().unwrap()]);
    }
}

#[test]
fn volume_commands_as_docker() {
    let k = K::new(KILN);
    assert_eq!(k.ok(&["volume", "create", "data"]), "data\n");
    // Creating it again is fine (the same volume).
    assert_eq!(k.ok(&["volume", "create", "--name", "data"]), "data\n");
    let anon = k.ok(&["volume", "create"]);
    assert_eq!(anon.trim().len(), 64, "a random name: {anon}");
    k.ok(&["volume", "create", "-l", "team=a", "labelled"]);

    let ls = k.ok(&["volume", "ls"]);
    let first = ls.lines().next().unwrap();
    assert!(
        first.starts_with("DRIVER") && first.contains("VOLUME NAME"),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with("local") && l.ends_with("data")),
        "{ls}"
    );
    assert_eq!(
        k.ok(&["volume", "ls", "-q", "-f", "label=team=a"]),
        "labelled\n"
    );
    assert_eq!(k.ok(&["volume", "ls", "-q", "-f", "name=dat"]), "data\n");
    // Values of one key are alternatives; every label must hold.
    assert_eq!(
        k.ok(&["volume", "ls", "-q", "-f", "name=dat", "-f", "name=lab"]),
        "data\nlabelled\n"
    );
    assert_eq!(
        k.ok(&[
            "volume",
            "ls",
            "-q",
            "-f",
            "label=team=a",
            "-f",
            "label=tier"
        ]),
        ""
    );
    assert_eq!(
        k.ok(&["volume", "ls", "-q", "-f", "label=team", "-f", "name=lab"]),
        "labelled\n"
    );
    let bad = k.run(&["volume", "ls", "-f", "dangling=maybe"]);
    assert_eq!(bad.status.code(), Some(1));

    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(inspect[0]["Name"], "data");
    assert_eq!(inspect[0]["Driver"], "local");
    assert_eq!(inspect[0]["Scope"], "local");
    let mp = inspect[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(mp, k.root.join("volumes/data/_data").to_str().unwrap());
    assert_eq!(
        k.ok(&["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "data"]),
        "data local\n"
    );

    let o = k.run(&["volume", "inspect", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Error response from daemon: get nope: no such volume"),
        "{}",
        stderr(&o)
    );
    let o = k.run(&["volume", "create", "a/b"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("includes invalid characters for a local volume name"));

    // In use by a container (even a stopped one): refused.
    k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "user",
        "-v",
        "data:/d",
        BB,
        "true",
    ]);
    let o = k.run(&["volume", "rm", "data"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("remove data: volume is in use - ["),
        "{}",
        stderr(&o)
    );
    k.ok(&["rm", "user"]);
    assert_eq!(k.ok(&["volume", "rm", "data"]), "data\n");
    assert!(k.run(&["volume", "rm", "data"]).status.code() == Some(1));
    k.ok(&["volume", "rm", "-f", "data"]);

    // prune: unused anonymous volumes only (a `volume create` without a
    // name is not anonymous, as in docker 23+), all unused ones with -a.
    k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "a",
        "-v",
        "/x",
        BB,
        "true",
    ]);
    let with_anon = k.volumes();
    let anon_of_a = with_anon
        .iter()
        .find(|v| **v != anon.trim() && *v != "labelled")
        .unwrap()
        .clone();
    let out = k.ok(&["volume", "prune", "-f"]);
    assert_eq!(
        out, "Total reclaimed space: 0B\n",
        "still used by container a"
    );
    k.ok(&["rm", "a"]);
    let out = k.ok(&["volume", "prune", "-f"]);
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert!(out.contains(&anon_of_a), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(k.volumes(), vec![anon.trim(), "labelled"]);
    k.ok(&["volume", "prune", "-a", "-f"]);
    assert!(k.volumes().is_empty());
}

#[test]
fn named_volume_outlives_its_container() {
    let k = K::new(KILN);
    k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "notes:/data",
        BB,
        "sh",
        "-c",
        "echo kept > /data/f && chown 123:45 /data/f && chmod 640 /data/f",
    ]);
    assert_eq!(
        k.volumes(),
        vec!["notes"],
        "made on first use, kept after --rm"
    );
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "notes:/other",
            BB,
            "sh",
            "-c",
            "cat /other/f; stat -c '%u:%g %a' /other/f"
        ]),
        "kept\n123:45 640\n"
    );
    // Read-only: writes fail with EROFS.
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "notes:/d:ro",
        BB,
        "sh",
        "-c",
        "touch /d/x",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    // The same through --mount.
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--mount",
            "type=volume,source=notes,target=/m,readonly",
            BB,
            "cat",
            "/m/f"
        ]),
        "kept\n"
    );
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "type=bind,source=/nonexistent-kiln-path,target=/m",
        BB,
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("invalid mount config for type \"bind\": bind source path does not exist: /nonexistent-kiln-path"),
        "{}",
        stderr(&o)
    );
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "type=volume,src=x",
        BB,
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("target is required"), "{}", stderr(&o));
}

#[test]
fn image_volume_is_a_populated_anonymous_volume() {
    let k = K::new(KILN);
    k.build(
        "withvol:1",
        "FROM busybox:1.35\nRUN mkdir -p /srv/data && echo seed > /srv/data/seed && chown -R 7:8 /srv/data && chmod 750 /srv/data\nVOLUME /srv/data\n",
    );
    let out = k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "c1",
        "withvol:1",
        "sh",
        "-c",
        "cat /srv/data/seed; stat -c '%u:%g %a' /srv/data /srv/data/seed; echo new > /srv/data/new",
    ]);
    assert_eq!(out, "seed\n7:8 750\n7:8 644\n");
    let vols = k.volumes();
    assert_eq!(vols.len(), 1, "{vols:?}");
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["volume", "inspect", &vols[0]])).unwrap();
    assert!(v[0]["Labels"]
        .as_object()
        .is_some_and(|l| l.contains_key("com.docker.volume.anonymous")));
    let data = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(data.join("new")).unwrap(), "new\n");

    // --volumes-from sees that volume (and :ro makes it read-only).
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--volumes-from",
            "c1",
            BB,
            "cat",
            "/srv/data/new"
        ]),
        "new\n"
    );
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--volumes-from",
        "c1:ro",
        BB,
        "touch",
        "/srv/data/x",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    // Not a new anonymous volume for the --volumes-from containers.
    assert_eq!(k.volumes().len(), 1);

    // rm -v removes the anonymous volume; a named one stays.
    k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "c2",
        "-v",
        "keepme:/k",
        "-v",
        "/anon",
        BB,
        "true",
    ]);
    assert_eq!(k.volumes().len(), 3, "{:?}", k.volumes());
    k.ok(&["rm", "-v", "c1", "c2"]);
    assert_eq!(k.volumes(), vec!["keepme"]);
    assert!(!data.exists());

    // --rm removes the anonymous volumes too.
    k.ok(&["run", "--rm", "--network", "none", "withvol:1", "true"]);
    assert_eq!(k.volumes(), vec!["keepme"]);
    // A named volume over a VOLUME path is filled from the image once.
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "filled:/srv/data",
            "withvol:1",
            "sh",
            "-c",
            "cat /srv/data/seed; echo changed > /srv/data/seed"
        ]),
        "seed\n"
    );
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "filled:/srv/data",
            "withvol:1",
            "cat",
            "/srv/data/seed"
        ]),
        "changed\n",
        "not copied again into a used volume"
    );
}

#[test]
fn read_only_root_and_tmpfs() {
    let k = K::new(KILN);
    let o = k.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        BB,
        "touch",
        "/etc/x",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    // tmpfs and volumes stay writable on a read-only root.
    let out = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m,mode=1770",
        "-v",
        "/anon",
        BB,
        "sh",
        "-c",
        "touch /scratch/a /anon/b && stat -c %a /scratch && grep ' /scratch ' /proc/mounts",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1770"));
    let m = lines.next().unwrap_or_default();
    assert!(
        m.starts_with("tmpfs /scratch tmpfs") && m.contains("size=1024k"),
        "{out}"
    );
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--mount",
            "type=tmpfs,target=/t,tmpfs-size=2m",
            BB,
            "sh",
            "-c",
            "grep ' /t ' /proc/mounts | cut -d' ' -f1-3"
        ]),
        "tmpfs /t tmpfs\n"
    );
}

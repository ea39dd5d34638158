//! What a RUN step sees and how the build reports it, as BuildKit does,
//! found by building public projects' Dockerfiles side by side: HOME from
//! the user's passwd entry (`go build` needs it), the user's groups as runc
//! sets them, steps that change nothing not pushing later steps off
//! overlayfs, the copy fallback said aloud, and plain progress printing a
//! line written in pieces as one line.

use std::path::Path;
use std::process::Command;

use kiln_testsupport::{busybox_fixture, stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Builds `dockerfile` with plain progress, exporting the root filesystem;
/// returns the export folder and the progress.
fn build(k: &Kiln, dockerfile: &str) -> (std::path::PathBuf, String) {
    let ctx = k.context("ctx", &[("Dockerfile", dockerfile)]);
    let out = k.path("out");
    let dest = format!("type=local,dest={}", out.display());
    let o = k.run(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &dest,
        &ctx.display().to_string(),
    ]);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    (out, stderr(&o))
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim_end()
        .to_string()
}

#[test]
fn home_comes_from_the_users_passwd_entry() {
    let k = Kiln::with_busybox(KILN);
    let (out, _) = build(
        &k,
        "FROM busybox:1.35\n\
         RUN echo \"$HOME\" > /home-root\n\
         RUN echo 'app:x:1000:1000::/srv/app:/bin/sh' >> /etc/passwd\n\
         USER app\n\
         RUN echo \"$HOME\" > /tmp/home-app\n\
         USER 4242\n\
         RUN echo \"$HOME\" > /tmp/home-unknown\n\
         USER root\n\
         ENV HOME=/custom\n\
         RUN echo \"$HOME\" > /home-env\n",
    );
    assert_eq!(read(&out, "home-root"), "/root");
    assert_eq!(read(&out, "tmp/home-app"), "/srv/app");
    assert_eq!(read(&out, "tmp/home-unknown"), "/");
    assert_eq!(read(&out, "home-env"), "/custom");

    // HOME is the process's, not the image's: the config has none unless
    // ENV set it.
    let ctx = k.context(
        "noenv",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nRUN test \"$HOME\" = /root\n",
        )],
    );
    k.ok(&["build", "-q", "-t", "noenv", &ctx.display().to_string()]);
    let (inspect, _) = k.ok(&["inspect", "noenv"]);
    assert!(inspect.contains("PATH="), "{inspect}");
    assert!(!inspect.contains("HOME="), "{inspect}");
}

#[test]
fn the_primary_group_is_among_the_users_groups() {
    let k = Kiln::with_busybox(KILN);
    let (out, _) = build(
        &k,
        "FROM busybox:1.35\n\
         RUN echo 'app:x:1000:1000::/srv/app:/bin/sh' >> /etc/passwd \\\n\
          && echo 'app:x:1000:' >> /etc/group && echo 'extra:x:2000:app' >> /etc/group\n\
         USER 1000:1000\n\
         RUN id > /tmp/id-numeric\n\
         USER app\n\
         RUN id -G > /tmp/groups-app\n\
         USER app:extra\n\
         RUN id -G > /tmp/groups-app-extra\n",
    );
    assert_eq!(
        read(&out, "tmp/id-numeric"),
        "uid=1000(app) gid=1000(app) groups=1000(app)"
    );
    assert_eq!(read(&out, "tmp/groups-app"), "1000 2000");
    assert_eq!(read(&out, "tmp/groups-app-extra"), "2000");
}

/// Steps that change nothing give empty layers that share one folder;
/// overlay refuses a lower dir named twice, and the steps after them used
/// to fall back, silently, to copying the whole root filesystem.
#[test]
fn steps_that_change_nothing_keep_later_steps_on_overlay() {
    let k = Kiln::with_busybox(KILN);
    let (out, progress) = build(
        &k,
        "FROM busybox:1.35\n\
         WORKDIR /tmp\n\
         RUN export X=1\n\
         RUN true\n\
         WORKDIR /tmp\n\
         RUN awk '$2 == \"/\" { print $3 }' /proc/self/mounts > /root-fs\n",
    );
    assert_eq!(read(&out, "root-fs"), "overlay", "{progress}");
    assert!(!progress.contains("WARNING"), "{progress}");
}

/// Where overlay cannot be mounted (here: the store itself on overlayfs,
/// which overlay refuses as an upper dir), the build still works on
/// copies, and says so once, with the reason.
#[test]
fn a_copy_fallback_is_said_once_with_its_reason() {
    let k = Kiln::empty(KILN);
    let base = k.path("ovl");
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\n\
             RUN echo one > /one\n\
             RUN echo two > /two\n\
             RUN awk '$2 == \"/\" { print $3 }' /proc/self/mounts > /root-fs\n",
        )],
    );
    let out = k.path("out");
    // In a mount namespace of its own, so the overlay under the store goes
    // away with the command.
    let script = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir={b}/lower,upperdir={b}/upper,workdir={b}/work {b}/merged\n\
         export KILN_ROOT={b}/merged/root\n\
         {kiln} load -q -i {fixture}\n\
         {kiln} build --progress plain -o type=local,dest={out} {ctx}\n",
        b = base.display(),
        kiln = KILN,
        fixture = busybox_fixture().display(),
        out = out.display(),
        ctx = ctx.display(),
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let progress = stderr(&o);
    assert!(o.status.success(), "{progress}");
    assert_eq!(read(&out, "one"), "one");
    assert_eq!(read(&out, "two"), "two");
    // (The copy is bind-mounted from the store: its type is the store's.)
    let warnings: Vec<&str> = progress
        .lines()
        .filter(|l| l.contains("WARNING: overlayfs cannot be mounted here ("))
        .collect();
    assert_eq!(warnings.len(), 1, "{progress}");
    assert!(
        warnings[0].contains("/merged/root/"),
        "the reason names the mount: {progress}"
    );
}

/// BuildKit's plain progress shows a line written in pieces as one line.
#[test]
fn plain_progress_prints_a_line_written_in_pieces_as_one() {
    let k = Kiln::with_busybox(KILN);
    let (_, progress) = build(
        &k,
        "FROM busybox:1.35\n\
         RUN printf 'pie'; sleep 0.3; printf 'ce\\nnext '; sleep 0.3; printf 'line\\n\\303'; \
             sleep 0.3; printf '\\251t\\nlast'\n",
    );
    let logged: Vec<&str> = progress
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let (_, t, rest) = (f.next()?, f.next()?, f.next()?);
            t.parse::<f64>()
                .ok()
                .filter(|_| t.contains('.'))
                .map(|_| rest)
        })
        // kiln's own note that the freshly loaded base is unpacked first
        // is no output of the RUN.
        .filter(|l| !l.starts_with("unpacking base layers") && !l.starts_with("unpacked base"))
        .collect();
    // (é is cut in two by the sleep: it still arrives whole.)
    assert_eq!(logged, ["piece", "next line", "ét", "last"], "{progress}");
}

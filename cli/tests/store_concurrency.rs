//! Several kiln processes on one store: `kiln prune` beside running builds
//! fails none of them (a build holds a lease from start to export), and
//! what a killed prune leaves is cleaned by the next prune.

use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Eight builds (each with steps of its own, a shared base image and
/// context copies) run while `prune` and `prune --all` loop beside them;
/// every build succeeds, and so does every prune.
#[test]
fn prune_beside_eight_builds_fails_none_of_them() {
    let k = Kiln::with_busybox(KILN);
    let mut builds = Vec::new();
    for i in 0..8 {
        let ctx = k.context(
            &format!("ctx{i}"),
            &[
                (
                    "Dockerfile",
                    &format!(
                        "FROM busybox:1.35 AS base\n\
                         RUN echo {i} > /n && sleep 0.2\n\
                         COPY f /f\n\
                         RUN cat /n /f > /both && sleep 0.2\n\
                         FROM busybox:1.35\n\
                         COPY --from=base /both /both\n\
                         RUN test \"$(head -1 /both)\" = {i}\n"
                    ),
                ),
                ("f", "file\n"),
            ],
        );
        let child = k
            .cmd(&[
                "build",
                "--progress",
                "plain",
                "-t",
                &format!("b{i}"),
                &ctx.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn build");
        builds.push(child);
    }
    // Prune in a tight loop until every build has ended.
    let mut prunes = 0;
    loop {
        let all = prunes % 2 == 1;
        let args: &[&str] = if all { &["prune", "--all"] } else { &["prune"] };
        let o = k.run(args);
        assert!(o.status.success(), "prune failed: {}", stderr(&o));
        prunes += 1;
        let running = builds
            .iter_mut()
            .filter_map(|c| c.try_wait().ok())
            .filter(Option::is_none)
            .count();
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut failed = Vec::new();
    for (i, c) in builds.into_iter().enumerate() {
        let o = c.wait_with_output().expect("build output");
        if !o.status.success() {
            failed.push(format!("build {i}:\n{}", stderr(&o)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // The images are whole: each runs.
    for i in 0..8 {
        let (out, _) = k.ok(&["run", "--rm", &format!("b{i}"), "cat", "/both"]);
        assert_eq!(out, format!("{i}\nfile\n"));
    }
}

/// A prune killed while deleting layer dirs leaves its half-deleted folder
/// behind; the next prune removes it (that of this version, under `work/`,
/// and that older versions left in `tmp/`).
#[test]
fn a_killed_prunes_leftovers_go_with_the_next_prune() {
    let k = Kiln::with_busybox(KILN);
    // A pid that no longer runs.
    let mut gone = Command::new("true").spawn().expect("spawn");
    let pid = gone.id();
    gone.wait().expect("wait");
    let leftovers = [
        k.root.join(format!("work/{pid}/layers-pruned/abc/bin")),
        k.root.join(format!("tmp/layers-pruned-{pid}/abc/bin")),
    ];
    for l in &leftovers {
        std::fs::create_dir_all(l).unwrap();
        std::fs::write(l.join("sh"), vec![0u8; 4096]).unwrap();
    }
    // A live process's folder is not touched.
    let live = k
        .root
        .join(format!("tmp/layers-pruned-{}", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();

    k.ok(&["prune"]);
    assert!(!k.root.join(format!("work/{pid}")).exists());
    assert!(!k.root.join(format!("tmp/layers-pruned-{pid}")).exists());
    assert!(live.exists());
}

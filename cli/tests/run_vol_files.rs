//! A container's files from outside, end to end as root on the busybox
//! fixture: `kiln cp` both ways (modes, owners with `-a`, trailing `/.`),
//! `kiln diff` (A/C/D sorted as docker), `kiln commit` then `run` of the
//! new image, `kiln export | kiln import` round trip, and a committed
//! image read by skopeo through `kiln save`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;

use kiln_testsupport::containers::Ctr as K;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const BB: &str = "busybox:1.35";

#[test]
fn cp_both_ways_keeps_modes_and_owners() {
    let k = K::new(KILN);
    k.ok(&["run", "--network", "none", "--name", "c", BB, "sh", "-c",
        "mkdir -p /data/sub && echo one > /data/sub/f && chmod 750 /data/sub && chmod 604 /data/sub/f && chown 12:34 /data/sub/f && ln -s f /data/sub/link"]);
    // Out of a stopped container: a directory by name, then its content.
    let host = k.tmp.path().join("out");
    std::fs::create_dir(&host).unwrap();
    k.ok(&["cp", "c:/data", host.to_str().unwrap()]);
    let f = host.join("data/sub/f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "one\n");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
        0o604
    );
    assert_eq!(
        std::fs::metadata(host.join("data/sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    assert_eq!(
        std::fs::read_link(host.join("data/sub/link")).unwrap(),
        PathBuf::from("f")
    );
    let flat = k.tmp.path().join("flat");
    k.ok(&["cp", "c:/data/sub/.", flat.to_str().unwrap()]);
    assert!(
        flat.join("f").is_file(),
        "/. copies the content into a new dir"
    );
    // A missing source is docker's error.
    let o = k.run(&["cp", "c:/nope", host.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Could not find the file /nope in container")
    );

    // Into the container, with -a keeping owners; without it root owns.
    let src = k.tmp.path().join("in");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("g"), "two\n").unwrap();
    std::fs::set_permissions(src.join("g"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(src.join("g"), Some(1000), Some(1001)).unwrap();
    k.ok(&["cp", "-a", src.to_str().unwrap(), "c:/data/"]);
    k.ok(&["cp", src.join("g").to_str().unwrap(), "c:/etc/g2"]);
    k.ok(&["commit", "c", "cpimg:1"]);
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "cpimg:1",
            "sh",
            "-c",
            "cat /data/in/g; stat -c '%u:%g %a' /data/in/g /etc/g2 /data/sub/f"
        ]),
        "two\n1000:1001 640\n0:0 640\n12:34 604\n"
    );

    // A running container: through its live root.
    let id = k.ok(&["run", "-d", "--network", "none", BB, "sleep", "60"]);
    let id = id.trim();
    k.ok(&[
        "cp",
        src.join("g").to_str().unwrap(),
        &format!("{id}:/tmp/"),
    ]);
    k.ok(&["exec", id, "test", "-f", "/tmp/g"]);
    let back = k.tmp.path().join("back");
    k.ok(&["cp", &format!("{id}:/tmp/g"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "two\n");
    // `-` writes a tar.
    let o = k.run(&["cp", &format!("{id}:/tmp/g"), "-"]);
    let names = kiln_testsupport::tar_listing(&o.stdout);
    assert_eq!(names, vec![("g".to_string(), 'f')], "{names:?}");
    k.ok(&["rm", "-f", id]);
}

#[test]
fn diff_lists_changes_as_docker() {
    let k = K::new(KILN);
    k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "d",
        BB,
        "sh",
        "-c",
        "echo x > /tmp/new && rm /etc/group && mkdir /added && echo y >> /etc/passwd",
    ]);
    let out = k.ok(&["diff", "d"]);
    assert_eq!(
        out, "A /added\nC /etc\nD /etc/group\nC /etc/passwd\nC /tmp\nA /tmp/new\n",
        "{out}"
    );
    let o = k.run(&["diff", "nope"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn commit_then_run_and_export_import_round_trip() {
    let k = K::new(KILN);
    k.ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "c",
        BB,
        "sh",
        "-c",
        "echo committed > /hello && rm /bin/vi",
    ]);
    let id = k.ok(&[
        "commit",
        "-m",
        "my change",
        "-a",
        "me",
        "-c",
        "CMD [\"cat\", \"/hello\"]",
        "-c",
        "ENV WHO=kiln",
        "c",
        "mine:1",
    ]);
    assert!(id.starts_with("sha256:") && id.trim().len() == 71, "{id}");
    assert_eq!(
        k.ok(&["run", "--rm", "--network", "none", "mine:1"]),
        "committed\n"
    );
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "mine:1",
            "sh",
            "-c",
            "echo $WHO; test -e /bin/vi || echo gone"
        ]),
        "kiln\ngone\n"
    );
    let hist = k.ok(&["history", "--no-trunc", "mine:1"]);
    assert!(hist.contains("my change"), "{hist}");

    // An OCI reader sees a valid image with the whiteout.
    let tar = k.tmp.path().join("mine.tar");
    k.ok(&["save", "-o", tar.to_str().unwrap(), "mine:1"]);
    let inspect =
        kiln_testsupport::skopeo(&["inspect", &format!("docker-archive:{}", tar.display())]);
    let v: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(2), "{v}");

    // export | import.
    let exported = k.tmp.path().join("fs.tar");
    k.ok(&["export", "-o", exported.to_str().unwrap(), "c"]);
    let listing = kiln_testsupport::tar_listing(&std::fs::read(&exported).unwrap());
    assert!(listing.iter().any(|(n, _)| n == "hello"), "{listing:?}");
    assert!(
        !listing.iter().any(|(n, _)| n == "bin/vi"),
        "deleted files are not exported"
    );
    let mut child = k
        .cmd(&[
            "import",
            "-c",
            "CMD [\"cat\", \"/hello\"]",
            "-",
            "imported:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&exported).unwrap())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        k.ok(&["run", "--rm", "--network", "none", "imported:1"]),
        "committed\n"
    );
    let md = std::fs::metadata(&exported).unwrap();
    assert!(md.size() > 100_000);
}

//! `kiln compose` through the real binary: `config` against the goldens
//! docker compose v2.40 printed (testdata/compose, see regen-goldens.sh),
//! errors with file and line, and `compose build` of the test
//! application on the busybox fixture.

use std::path::{Path, PathBuf};

use kiln_testsupport::Kiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/compose")
        .join(name)
        .canonicalize()
        .expect("case folder")
}

fn golden(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .expect("golden")
        .replace("@DIR@", &dir.display().to_string())
}

#[test]
fn config_prints_what_docker_compose_prints() {
    let k = Kiln::empty(KILN);
    for (name, extra) in [
        ("app", &[][..]),
        ("webapp", &[][..]),
        ("overrides", &[][..]),
        ("multifile", &["-f", "base.yaml", "-f", "prod.yaml"][..]),
        ("profiles", &["--profile", "debug"][..]),
        ("dotenv", &[][..]),
    ] {
        let dir = case(name);
        for fmt in ["yaml", "json"] {
            let mut args = vec!["compose"];
            args.extend_from_slice(extra);
            args.extend(["config", "--format", fmt]);
            let out = k.cmd(&args).current_dir(&dir).output().expect("kiln");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                stdout,
                golden(&dir, &format!("expected.{fmt}")),
                "{name} {fmt}"
            );
        }
    }
    // The listing flags.
    let dir = case("app");
    let out = k
        .cmd(&["compose", "config", "--services"])
        .current_dir(&dir)
        .output()
        .expect("kiln");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "backend\nproxy\nweb\n"
    );
    let out = k
        .cmd(&["compose", "config", "--volumes"])
        .current_dir(&dir)
        .output()
        .expect("kiln");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "counter\n");
    let out = k
        .cmd(&["compose", "config", "--images"])
        .current_dir(&dir)
        .output()
        .expect("kiln");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "app-backend\napp-proxy\napp-web\n"
    );
    let out = k
        .cmd(&["compose", "config", "--profiles"])
        .current_dir(case("profiles"))
        .output()
        .expect("kiln");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "debug\ntools\n");
}

#[test]
fn broken_files_name_file_line_and_key() {
    let k = Kiln::empty(KILN);
    for (name, line) in [
        ("unknown-key", 4),
        ("wrong-type", 4),
        ("yaml-error", 5),
        ("interp-error", 0),
    ] {
        let dir = case(name);
        let out = k
            .cmd(&["compose", "config"])
            .current_dir(&dir)
            .output()
            .expect("kiln");
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = golden(&dir, "expected.err");
        if name == "yaml-error" {
            // yaml-rust2 words syntax errors its own way (and at the line
            // where it notices); docker's go-yaml says line 3.
            assert!(err.starts_with("yaml: line "), "{err}");
        } else {
            assert!(
                err.contains(want.trim_end()),
                "{name}: want {want:?} in {err:?}"
            );
        }
        if line > 0 {
            let at = format!("{}:{line}", dir.join("compose.yaml").display());
            assert!(err.contains(&at), "{name}: want {at} in {err}");
        }
    }
}

#[test]
fn compose_build_builds_every_service_with_compose_names_and_labels() {
    let k = Kiln::with_busybox(KILN);
    let work = tempfile::tempdir().expect("tmp");
    let app = work.path().join("app");
    let status = std::process::Command::new("cp")
        .args(["-a"])
        .arg(case("app"))
        .arg(&app)
        .status()
        .expect("cp");
    assert!(status.success());
    let out = k
        .cmd(&["compose", "build"])
        .current_dir(&app)
        .output()
        .expect("kiln");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for s in ["backend", "proxy", "web"] {
        assert!(err.contains(&format!("Service {s}  Built")), "{err}");
    }
    let images = k.ok(&["images"]).0;
    for s in ["app-backend", "app-proxy", "app-web"] {
        assert!(images.contains(s), "{s} missing in {images}");
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "app-web"]).0).expect("json");
    let cfg = &inspect[0]["Config"];
    assert_eq!(cfg["Labels"]["com.docker.compose.project"], "app", "{cfg}");
    assert_eq!(cfg["Labels"]["com.docker.compose.service"], "web", "{cfg}");
    let env = cfg["Env"].to_string();
    assert!(
        env.contains("GREETING=hello"),
        "build arg from the file: {env}"
    );

    // SERVICE… and --build-arg: only web is rebuilt, with the new value.
    let out = k
        .cmd(&["compose", "build", "--build-arg", "GREETING=bonjour", "web"])
        .current_dir(&app)
        .output()
        .expect("kiln");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Service web  Built") && !err.contains("Service proxy"),
        "{err}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "app-web"]).0).expect("json");
    assert!(inspect[0]["Config"]["Env"]
        .to_string()
        .contains("GREETING=bonjour"));

    let out = k
        .cmd(&["compose", "build", "nosuch"])
        .current_dir(&app)
        .output()
        .expect("kiln");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such service: nosuch"));
}

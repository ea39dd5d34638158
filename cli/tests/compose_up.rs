//! `kiln compose up/ps/down` of issue 14's test application
//! (testdata/compose/app: proxy → web → backend, a named volume, a
//! healthcheck gating `depends_on: condition: service_healthy`), as root.
//! Every kiln command runs inside a network namespace of the test's own
//! (`unshare --net=FILE`, then `nsenter --net=FILE`), so the project's
//! bridge, veths and firewall rules live and die there and traffic goes
//! only to loopback and addresses inside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testsupport::busybox_fixture;
use kiln_testsupport::mounts::mounts_below;
use kiln_testsupport::netns::TestNetns;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
/// The proxy's published port (the app's `${APP_PORT:-18080}`).
const PORT: &str = "18080";

/// kiln on a store of its own, inside a network namespace of its own.
struct NetK {
    tmp: tempfile::TempDir,
    root: PathBuf,
    ns: TestNetns,
}

impl NetK {
    fn new() -> NetK {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let k = NetK {
            tmp,
            root,
            ns: TestNetns::new("kiln-composetest"),
        };
        let fixture = busybox_fixture();
        k.ok(&["load", "-q", "-i", fixture.to_str().expect("utf8")], None);
        k
    }

    fn in_ns(&self, program: &str) -> Command {
        let mut c = self.ns.cmd(program);
        c.env("KILN_ROOT", &self.root).env("NO_COLOR", "1");
        c
    }

    /// A shell command inside the namespace; its status and stdout.
    /// (Through [`NetK::in_ns`]: scripts call kiln on this store.)
    fn sh_status(&self, script: &str) -> (bool, String) {
        let o = self.in_ns("sh").args(["-c", script]).output().expect("sh");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    fn run(&self, args: &[&str], dir: Option<&Path>) -> Output {
        let mut c = self.in_ns(KILN);
        if let Some(d) = dir {
            c.current_dir(d);
        }
        c.args(args).output().expect("kiln")
    }

    fn ok(&self, args: &[&str], dir: Option<&Path>) -> String {
        let o = self.run(args, dir);
        assert!(
            o.status.success(),
            "kiln {args:?} failed ({:?}):\n{}\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ps -a` of the store: name → ID, for the containers of project app.
    fn ids(&self) -> Vec<(String, String)> {
        let out = self.ok(&["ps", "-a", "--no-trunc"], None);
        let mut v: Vec<(String, String)> = out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.last()?.to_string(), cols.first()?.to_string()))
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for NetK {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"], None);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", "-v", id], None);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success());
}

/// A shell loop retrying `cmd` for up to 20 s.
fn retry(cmd: &str) -> String {
    format!("for i in $(seq 1 80); do {cmd} && exit 0; sleep 0.25; done; exit 1")
}

#[test]
fn compose_app_up_ps_rebuild_down() {
    let k = NetK::new();
    let app = k.tmp.path().join("app");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/compose/app"),
        &app,
    );
    // Parts that fail are collected, so one missing piece (say, port
    // publishing) does not hide how the others fare.
    let mut failures: Vec<String> = Vec::new();

    // up -d --build: three services built and started in dependency order.
    let o = k.run(&["compose", "up", "-d", "--build"], Some(&app));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "compose up failed:\n{err}");
    let pos = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{err}"))
    };
    assert!(pos(" Network app_default  Created") < pos(" Container app-backend-1  Started"));
    assert!(pos(" Volume \"app_counter\"  Created") < pos(" Container app-backend-1  Started"));
    // web waits for backend to be healthy; proxy starts after web.
    assert!(pos(" Container app-backend-1  Healthy") < pos(" Container app-web-1  Started"));
    assert!(pos(" Container app-web-1  Started") < pos(" Container app-proxy-1  Started"));

    // The answer that crossed both services: proxy → web (by name) →
    // backend (by name), with the counter in the named volume.
    let (ok, via_exec) = k.sh_status(&format!(
        "cd {} && {}",
        app.display(),
        retry(&format!(
            "{KILN} compose exec -T proxy wget -q -O- http://127.0.0.1/cgi-bin/app"
        ))
    ));
    if !ok || !via_exec.contains("hello from web; backend says: request") {
        failures.push(format!(
            "proxy → web → backend by service name: got {via_exec:?}"
        ));
    }
    // The same through the published port, from the host side.
    let (ok, body) = k.sh_status(&retry(&format!(
        "wget -q -O- http://127.0.0.1:{PORT}/cgi-bin/app"
    )));
    if !ok || !body.contains("hello from web; backend says: request") {
        failures.push(format!(
            "GET on published port {PORT}: got {body:?} (ok={ok})"
        ));
    }

    // ps: three running, backend healthy.
    let ps = k.ok(&["compose", "ps"], Some(&app));
    let lines: Vec<&str> = ps.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{ps}");
    assert_eq!(lines.len(), 4, "{ps}");
    let backend = lines
        .iter()
        .find(|l| l.starts_with("app-backend-1 "))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(backend.contains("(healthy)"), "{ps}");
    for l in &lines[1..] {
        assert!(l.contains("Up "), "{ps}");
    }
    // The labels compose finds its containers by, in the state record.
    let web = std::fs::read_dir(k.root.join("containers"))
        .expect("containers dir")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .find(|c| c["name"] == "app-web-1")
        .expect("app-web-1's record");
    assert_eq!(web["labels"]["com.docker.compose.project"], "app");
    assert_eq!(web["labels"]["com.docker.compose.service"], "web");
    assert_eq!(web["labels"]["com.docker.compose.container-number"], "1");
    assert_eq!(web["labels"]["com.docker.compose.oneoff"], "False");

    // A second up with nothing changed recreates nothing.
    let before = k.ids();
    assert_eq!(before.len(), 3, "{before:?}");
    let o = k.run(&["compose", "up", "-d"], Some(&app));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(k.ids(), before, "an unchanged project is left as it is");

    // Editing web's source and `up -d --build` recreates web only.
    let hello = app.join("web/cgi-bin/hello");
    let text = std::fs::read_to_string(&hello).expect("hello");
    std::fs::write(&hello, text.replace("from web;", "from web v2;")).expect("edit");
    let o = k.run(&["compose", "up", "-d", "--build"], Some(&app));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains(" Container app-web-1  Recreated"), "{err}");
    let after = k.ids();
    let id = |v: &[(String, String)], n: &str| {
        v.iter()
            .find(|(name, _)| name == n)
            .map(|(_, i)| i.clone())
            .unwrap_or_default()
    };
    assert_ne!(id(&before, "app-web-1"), id(&after, "app-web-1"));
    assert_eq!(id(&before, "app-backend-1"), id(&after, "app-backend-1"));
    assert_eq!(id(&before, "app-proxy-1"), id(&after, "app-proxy-1"));
    let (ok, v2) = k.sh_status(&format!(
        "cd {} && {}",
        app.display(),
        retry(&format!(
            "{KILN} compose exec -T proxy wget -q -O- http://127.0.0.1/cgi-bin/app | grep 'from web v2'"
        ))
    ));
    if !ok {
        failures.push(format!("after the rebuild, proxy → web v2: got {v2:?}"));
    }

    // down -v: no container, network, volume, mount or bridge left.
    let o = k.run(&["compose", "down", "-v"], Some(&app));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(k.ok(&["ps", "-aq"], None).trim(), "");
    let nets = k.ok(&["network", "ls"], None);
    assert!(!nets.contains("app_default"), "{nets}");
    let vols = k.ok(&["volume", "ls", "-q"], None);
    assert_eq!(vols.trim(), "", "{vols}");
    assert_eq!(mounts_below(&k.root), Vec::<String>::new());
    // The namespace's own links (`ip -o link`: sysfs would show the host's).
    let links = k.ns.links();
    assert!(
        !links
            .iter()
            .any(|l| l.starts_with("br-") || l.starts_with("veth")),
        "{links:?}"
    );

    assert!(
        failures.is_empty(),
        "failed parts:\n{}",
        failures.join("\n")
    );
}

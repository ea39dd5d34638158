//! The remote build cache end to end: `kiln build --cache-to` exports the
//! records of a build (to an OCI layout folder, a real `docker-registry`,
//! or inline in the image config) and a fresh store with `--cache-from`
//! builds from them without running the steps; `mode=min` leaves out other
//! stages, a missing cache is a warning, an edited file re-runs only what
//! depends on it. Each store is its own `$KILN_ROOT` with the busybox
//! fixture loaded; files are compared with imagefs.py, registries are
//! inspected with skopeo.

use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_testsupport::TestRegistry as Registry;
use kiln_testsupport::{imagefs, Kiln};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// What only this file's tests do with a kiln.
trait RemoteCacheKiln {
    /// kiln with the same creation times in every store: equal images,
    /// equal IDs.
    fn run_epoch(&self, args: &[&str]) -> Output;

    /// Builds `ctx` with JSON progress and extra flags, writing the image
    /// ID to a file and the image as an OCI archive; asserts success.
    fn build(&self, ctx: &Path, extra: &[&str]) -> Built;

    fn build_raw(&self, ctx: &Path, extra: &[&str]) -> Output;
}

impl RemoteCacheKiln for Kiln {
    fn run_epoch(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("running kiln")
    }

    fn build(&self, ctx: &Path, extra: &[&str]) -> Built {
        let out = self.build_raw(ctx, extra);
        assert!(
            out.status.success(),
            "build {extra:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let events = text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        let id = std::fs::read_to_string(self.path("iid")).expect("iidfile");
        Built {
            events,
            id,
            archive: self.path("image.tar"),
            stderr: text(&out.stderr),
        }
    }

    fn build_raw(&self, ctx: &Path, extra: &[&str]) -> Output {
        let iid = self.path("iid").display().to_string();
        let oci = format!("type=oci,dest={}", self.path("image.tar").display());
        let ctx = ctx.display().to_string();
        let mut args = vec!["build", "--progress", "json", "--iidfile", &iid];
        args.extend_from_slice(&["--output", &oci, "--output", "type=image"]);
        args.extend_from_slice(extra);
        args.push(&ctx);
        self.run_epoch(&args)
    }
}

struct Built {
    events: Vec<Value>,
    id: String,
    archive: PathBuf,
    stderr: String,
}

impl Built {
    /// The Dockerfile steps (RUN, COPY) that ran.
    fn ran(&self) -> Vec<String> {
        self.steps("started")
    }

    fn cached(&self) -> Vec<String> {
        self.steps("cached")
    }

    fn steps(&self, kind: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == kind)
            .filter_map(|e| e["name"].as_str())
            .filter(|n| n.contains("RUN") || n.contains("COPY"))
            .map(str::to_string)
            .collect()
    }

    /// The `cache` event of this action that finished.
    fn cache_event(&self, action: &str) -> Value {
        self.events
            .iter()
            .find(|e| e["event"] == "cache" && e["action"] == action && e["status"] == "done")
            .cloned()
            .unwrap_or_else(|| panic!("no finished cache {action} event in {:?}", self.events))
    }

    /// The image's files, as imagefs.py reads the OCI archive.
    fn files(&self) -> Value {
        imagefs(&self.archive, None)["fs"].clone()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const MULTISTAGE: &str = "FROM busybox:1.35 AS builder
COPY src.txt /src.txt
RUN cat /src.txt > /built.txt && echo built >> /built.txt

FROM busybox:1.35
COPY app.txt /app.txt
COPY --from=builder /built.txt /built.txt
RUN cat /app.txt /built.txt > /final.txt
";

/// A context folder of `k` with the multistage Dockerfile.
fn context(k: &Kiln, name: &str, app: &str) -> PathBuf {
    let dir = k.path(name);
    std::fs::create_dir_all(&dir).expect("ctx");
    std::fs::write(dir.join("Dockerfile"), MULTISTAGE).expect("Dockerfile");
    std::fs::write(dir.join("src.txt"), "source\n").expect("src.txt");
    std::fs::write(dir.join("app.txt"), app).expect("app.txt");
    dir
}

/// After an edit of app.txt: the final stage's three steps depend on it
/// and run; the builder stage's come from the cache.
fn assert_final_stage_only(ran: &[String]) {
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert!(ran.iter().all(|n| n.starts_with("[stage-1 ")), "{ran:?}");
}

/// The blobs (plain digest and transferred digest) of the layer only the
/// builder stage's COPY src.txt made, per the local cache's config.
fn builder_only_blobs(dir: &Path) -> Vec<String> {
    let read = |p: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&p).expect("layout file")).expect("JSON")
    };
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = read(dir.join("index.json"));
    let manifest = read(blob(index["manifests"][0]["digest"].as_str().expect("d")));
    let config = read(blob(manifest["config"]["digest"].as_str().expect("d")));
    let records: Vec<&Vec<Value>> = config["records"]
        .as_object()
        .expect("records")
        .values()
        .filter_map(|r| r.as_array())
        .collect();
    let longest = records.iter().max_by_key(|r| r.len()).expect("records");
    let final_ids: Vec<&Value> = longest.iter().map(|l| &l["diff_id"]).collect();
    let src = records
        .iter()
        .find(|r| r.len() == 2 && !final_ids.contains(&&r[1]["diff_id"]))
        .expect("the record of COPY src.txt");
    let diff_id = src[1]["diff_id"].as_str().expect("diff_id");
    let ix = config["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .position(|d| d == diff_id)
        .expect("the layer is in the cache");
    let transfer = manifest["layers"][ix]["digest"].as_str().expect("digest");
    vec![diff_id.to_string(), transfer.to_string()]
}

/// The records of a local cache folder, by reading its OCI layout.
fn layout_records(dir: &Path) -> usize {
    let read = |p: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&p).expect("layout file")).expect("JSON")
    };
    let index = read(dir.join("index.json"));
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest = read(blob(
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    let config = read(blob(manifest["config"]["digest"].as_str().expect("digest")));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(
        config["layers"].as_array().expect("diff_ids").len(),
        layers.len(),
        "one diff_id per manifest layer"
    );
    for l in layers {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let d = l["digest"].as_str().expect("digest");
        assert!(blob(d).is_file(), "layer blob {d} is in the layout");
    }
    config["records"].as_object().expect("records").len()
}

#[test]
fn local_cache_max_and_min_in_fresh_stores() {
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let max_dir = a.path("cache-max");
    let min_dir = a.path("cache-min");
    let to_max = format!("type=local,dest={},mode=max", max_dir.display());
    let to_min = format!("type=local,dest={}", min_dir.display());
    let first = a.build(
        &ctx,
        &["-t", "app", "--cache-to", &to_max, "--cache-to", &to_min],
    );
    assert_eq!(first.ran().len(), 5, "the first build runs every step");
    let (max, min) = (layout_records(&max_dir), layout_records(&min_dir));
    // max: the builder's COPY and RUN, and the final stage's three steps;
    // min: only the final stage's chain.
    assert_eq!(max, 5, "mode=max exports every step");
    assert_eq!(min, 3, "mode=min exports the final image's chain");
    let export = first.cache_event("export");
    assert!(export["detail"]["written"].as_u64().unwrap_or(0) > 0);

    // A fresh store builds everything from the cache.
    let b = Kiln::with_busybox(KILN);
    let from_max = format!("type=local,src={}", max_dir.display());
    let second = b.build(&ctx, &["-t", "app", "--cache-from", &from_max]);
    assert!(second.ran().is_empty(), "nothing runs: {:?}", second.ran());
    assert!(!second.cached().is_empty(), "{:?}", second.events);
    assert_eq!(second.id, first.id, "the same image, the same ID");
    assert_eq!(second.files(), first.files());
    assert_eq!(second.cache_event("import")["detail"]["records"], 5);
    // Demand-driven: the final step hit, so the builder stage was never
    // looked up and none of its own blobs were fetched.
    let unneeded = builder_only_blobs(&max_dir);
    let in_a = a
        .root
        .join("blobs/sha256")
        .join(unneeded[0].trim_start_matches("sha256:"));
    assert!(in_a.is_file(), "the builder's layer is a blob of store A");
    for d in unneeded {
        let hex = d.trim_start_matches("sha256:");
        assert!(
            !b.root.join("blobs/sha256").join(hex).exists(),
            "blob {d} of a step never looked up was fetched"
        );
    }

    // Editing the final stage's input: with max the other stage comes from
    // the cache, only the dependent steps run.
    let ctx2 = context(&b, "ctx2", "app changed\n");
    let third = b.build(&ctx2, &["-t", "app", "--cache-from", &from_max]);
    assert_final_stage_only(&third.ran());

    // With min, the builder stage is not in the cache: it runs again.
    let c = Kiln::with_busybox(KILN);
    let ctx3 = context(&c, "ctx3", "app changed\n");
    let from_min = format!("type=local,src={}", min_dir.display());
    let fourth = c.build(&ctx3, &["-t", "app", "--cache-from", &from_min]);
    let ran = fourth.ran();
    assert!(
        ran.iter().any(|n| n.contains("RUN cat /src.txt")),
        "min leaves the builder stage out: {ran:?}"
    );
    assert_eq!(fourth.files(), third.files());
}

fn skopeo_raw(args: &[&str]) -> Value {
    serde_json::from_slice(&kiln_testsupport::skopeo(args)).expect("skopeo JSON")
}

#[test]
fn registry_cache_round_trip_reuses_blobs() {
    let reg = Registry::plain();
    let cache_ref = reg.reference("cache/app:main");
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let first = a.build(&ctx, &["-t", "app", "--cache-to", &to]);
    let export = first.cache_event("export");
    assert_eq!(export["detail"]["records"], 5);
    let uploaded = export["detail"]["uploaded"].as_u64().unwrap_or(0);
    assert!(uploaded > 0, "{export}");

    let manifest = skopeo_raw(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{cache_ref}"),
    ]);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    for l in manifest["layers"].as_array().expect("layers") {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }

    // The second export finds every blob in the registry.
    let again = a.build(&ctx, &["-t", "app", "--cache-to", &to]);
    let export = again.cache_event("export");
    assert_eq!(export["detail"]["uploaded"], 0, "{export}");
    assert!(
        export["detail"]["existing"].as_u64().unwrap_or(0) > 0,
        "{export}"
    );

    let b = Kiln::with_busybox(KILN);
    let from = format!("type=registry,ref={cache_ref}");
    // The fresh store re-exports too (CI's usual import-then-export): the
    // steps below its imported hit, never looked up, are exported as well.
    let next_ref = reg.reference("cache/app:next");
    let to_next = format!("type=registry,ref={next_ref},mode=max");
    let second = b.build(
        &ctx,
        &["-t", "app", "--cache-from", &from, "--cache-to", &to_next],
    );
    assert!(second.ran().is_empty(), "nothing runs: {:?}", second.ran());
    assert_eq!(second.id, first.id);
    assert_eq!(second.files(), first.files());
    let export = second.cache_event("export");
    assert_eq!(export["detail"]["records"], 5, "{export}");
    // The same records make the same config: the registry has it all.
    assert_eq!(export["detail"]["uploaded"], 0, "{export}");

    // An edited context file re-runs exactly the steps that read it.
    let c = Kiln::with_busybox(KILN);
    let ctx2 = context(&c, "ctx2", "app changed\n");
    let third = c.build(&ctx2, &["-t", "app", "--cache-from", &next_ref]);
    assert_final_stage_only(&third.ran());
}

#[test]
fn inline_cache_travels_with_the_pushed_image() {
    let reg = Registry::plain();
    let image = reg.reference("inline/app:1");
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let first = a.build(&ctx, &["-t", &image, "--cache-to", "type=inline"]);
    assert_eq!(first.ran().len(), 5);
    let push = a.run_epoch(&["push", &image]);
    assert!(push.status.success(), "push: {}", text(&push.stderr));
    let config = skopeo_raw(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]);
    let records = config["kiln.cache.v1"]["records"]
        .as_object()
        .expect("inline records in the image config");
    assert_eq!(records.len(), 3, "inline is mode=min: the final chain");

    // Without the flag the config has no records.
    let plain = a.build(&ctx, &["-t", "plain"]);
    assert_ne!(plain.id, first.id);

    let b = Kiln::with_busybox(KILN);
    let second = b.build(&ctx, &["-t", "app", "--cache-from", &image]);
    assert!(second.ran().is_empty(), "nothing runs: {:?}", second.ran());
    assert_eq!(second.files(), first.files());
}

#[test]
fn missing_cache_is_a_warning_failed_export_an_error_bad_flags_refused() {
    let reg = Registry::plain();
    let k = Kiln::with_busybox(KILN);
    let ctx = context(&k, "ctx", "app\n");
    let missing_dir = format!("type=local,src={}", k.path("nothing").display());
    let missing_ref = reg.reference("nothing/here:1");
    let built = k.build(
        &ctx,
        &["--cache-from", &missing_ref, "--cache-from", &missing_dir],
    );
    assert_eq!(built.ran().len(), 5);
    let warnings: Vec<&Value> = built
        .events
        .iter()
        .filter(|e| e["event"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 2, "{:?}", built.events);
    assert!(warnings.iter().all(|w| w["message"]
        .as_str()
        .is_some_and(|m| m.contains("failed to configure"))));
    assert!(built.stderr.is_empty() || !built.stderr.contains("ERROR"));

    // A failed export fails the build, after the image is built and named.
    let nowhere = "type=registry,ref=127.0.0.1:1/cache/x:1";
    let out = k.build_raw(&ctx, &["-t", "exported", "--cache-to", nowhere]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("failed to export cache to 127.0.0.1:1/cache/x:1"),
        "{}",
        text(&out.stderr)
    );
    let images = k.run_epoch(&["images"]);
    assert!(
        text(&images.stdout).contains("exported"),
        "the image is named"
    );
    // … unless the export may fail (buildx's ignore-error=true).
    let lenient = format!("{nowhere},ignore-error=true");
    let out = k.build_raw(&ctx, &["--cache-to", &lenient]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("failed to export cache"));

    for (flag, value, named) in [
        ("--cache-to", "type=gha,url=http://x", "gha"),
        ("--cache-to", "type=local,dest=/tmp/x,colour=red", "colour"),
        ("--cache-from", "type=local,dest=/tmp/x", "dest"),
        ("--cache-to", "type=registry,ref=r/x,mode=most", "most"),
    ] {
        let out = k.build_raw(&ctx, &[flag, value]);
        assert!(!out.status.success(), "{flag} {value} must fail");
        let err = text(&out.stderr);
        assert!(err.contains(named), "{flag} {value}: {err}");
    }
}

/// Writes `doc` as a blob of the layout `dir`; returns its digest and size.
fn put_layout_blob(dir: &Path, doc: &Value) -> (String, usize) {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(doc).expect("JSON");
    let hex = hex::encode(sha2::Sha256::digest(&bytes));
    std::fs::write(dir.join("blobs/sha256").join(&hex), &bytes).expect("write blob");
    (format!("sha256:{hex}"), bytes.len())
}

#[test]
fn a_cache_claiming_a_wrong_diff_id_is_not_used() {
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let dir = a.path("cache");
    let to = format!("type=local,dest={},mode=max", dir.display());
    let first = a.build(&ctx, &["-t", "app", "--cache-to", &to]);

    // Every record claims that the base image's (gzip) layer is the
    // uncompressed layer of COPY app.txt: whoever trusted that would share
    // the base's files under another layer's name.
    let read = |p: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(p).expect("read")).expect("JSON")
    };
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mut index = read(dir.join("index.json"));
    let mut manifest = read(blob(index["manifests"][0]["digest"].as_str().expect("d")));
    let mut config = read(blob(manifest["config"]["digest"].as_str().expect("d")));
    let records = config["records"].as_object_mut().expect("records");
    let app_layer = records
        .values()
        .filter_map(|r| r.as_array())
        .find(|r| r.len() == 2 && r[1]["digest"] == r[1]["diff_id"])
        .map(|r| r[1]["diff_id"].clone())
        .expect("the record of COPY app.txt");
    for r in records.values_mut() {
        r[0]["diff_id"] = app_layer.clone();
    }
    let (cd, cs) = put_layout_blob(&dir, &config);
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (md, ms) = put_layout_blob(&dir, &manifest);
    index["manifests"][0]["digest"] = md.into();
    index["manifests"][0]["size"] = ms.into();
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index");

    let b = Kiln::with_busybox(KILN);
    let from = format!("type=local,src={}", dir.display());
    let second = b.build(&ctx, &["-t", "app", "--cache-from", &from]);
    assert_eq!(
        second.ran().len(),
        5,
        "no record is used: {:?}",
        second.ran()
    );
    assert!(
        second.events.iter().any(|e| e["event"] == "warning"
            && e["message"].as_str().is_some_and(|m| m.contains("diff_id"))),
        "{:?}",
        second.events
    );
    assert_eq!(second.files(), first.files());
}

/// Builds `ctx` in `k` as a CI runner does: into the store only, no
/// archive (an OCI archive output compresses the layers itself, and the
/// export would then find them in kiln's memo).
fn build_to_store(k: &Kiln, ctx: &Path, extra: &[&str]) -> Built {
    let iid = k.path("iid").display().to_string();
    let ctx = ctx.display().to_string();
    let mut args = vec![
        "build",
        "--progress",
        "json",
        "--iidfile",
        &iid,
        "-t",
        "app",
    ];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let out = k.run_epoch(&args);
    assert!(
        out.status.success(),
        "build {extra:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Built {
        events: text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect(),
        id: std::fs::read_to_string(k.path("iid")).expect("iidfile"),
        archive: k.path("image.tar"),
        stderr: text(&out.stderr),
    }
}

/// The layers (digest, media type) a registry cache manifest names.
fn registry_cache_layers(reference: &str) -> Vec<(String, String)> {
    let manifest = skopeo_raw(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().expect("digest").to_string(),
                l["mediaType"].as_str().expect("mediaType").to_string(),
            )
        })
        .collect()
}

/// The layers (digest, media type) of the cache manifest of a local cache
/// folder.
fn layout_layers(dir: &Path) -> Vec<(String, String)> {
    let read = |p: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&p).expect("layout file")).expect("JSON")
    };
    let index = read(dir.join("index.json"));
    let d = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest = read(
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
    );
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().expect("digest").to_string(),
                l["mediaType"].as_str().expect("mediaType").to_string(),
            )
        })
        .collect()
}

/// The finished export event of `built` whose ref contains `name`.
fn export_ref<'a>(built: &'a Built, name: &str) -> &'a Value {
    built
        .events
        .iter()
        .find(|e| {
            e["event"] == "cache"
                && e["action"] == "export"
                && e["status"] == "done"
                && e["ref"].as_str().is_some_and(|r| r.contains(name))
        })
        .unwrap_or_else(|| panic!("no export to {name} in {:?}", built.events))
}

fn detail(export: &Value, key: &str) -> u64 {
    export["detail"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {export}"))
}

/// CI's runners: A builds and exports; B, a fresh store, imports that
/// cache, builds everything from it and exports to the same ref. B's
/// layers arrived compressed and were stored plain; its export names the
/// compressed blobs it imported (as BuildKit keeps a layer's compressed
/// blob) instead of compressing every layer again: nothing compressed,
/// nothing uploaded, the very same layer blobs as A's. To a repository
/// that lacks them, the blobs B holds are uploaded as they are. Both
/// exports import back to the same image.
#[test]
fn reexport_of_an_imported_registry_cache_compresses_nothing() {
    let reg = Registry::plain();
    let cache_ref = reg.reference("cache/ci:main");
    let to = format!("type=registry,ref={cache_ref}");
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let first = build_to_store(&a, &ctx, &["--cache-to", &to]);
    let export = first.cache_event("export");
    let compressed_a = detail(&export, "compressed");
    assert!(compressed_a >= 3, "A compresses its own layers: {export}");
    let layers_a = registry_cache_layers(&cache_ref);

    let b = Kiln::with_busybox(KILN);
    let other_ref = reg.reference("cache/other:1");
    let to_other = format!("type=registry,ref={other_ref}");
    let second = build_to_store(
        &b,
        &ctx,
        &[
            "--cache-from",
            &cache_ref,
            "--cache-to",
            &to,
            "--cache-to",
            &to_other,
        ],
    );
    assert!(second.ran().is_empty(), "nothing runs: {:?}", second.ran());
    assert_eq!(second.id, first.id);
    let exports: Vec<&Value> = second
        .events
        .iter()
        .filter(|e| e["event"] == "cache" && e["action"] == "export" && e["status"] == "done")
        .collect();
    assert_eq!(exports.len(), 2, "{:?}", second.events);
    let same = exports
        .iter()
        .find(|e| e["ref"].as_str().is_some_and(|r| r.contains("cache/ci")))
        .expect("the export to the imported ref");
    assert_eq!(detail(same, "compressed"), 0, "{same}");
    assert_eq!(detail(same, "uploaded"), 0, "{same}");
    assert_eq!(detail(same, "reused"), compressed_a, "{same}");
    assert_eq!(registry_cache_layers(&cache_ref), layers_a);
    // A repository without the blobs: B holds them (it fetched them to
    // build) and uploads them as they are.
    let other = exports
        .iter()
        .find(|e| e["ref"].as_str().is_some_and(|r| r.contains("cache/other")))
        .expect("the export to the other ref");
    assert_eq!(detail(other, "compressed"), 0, "{other}");
    assert_eq!(detail(other, "reused"), compressed_a, "{other}");
    assert!(detail(other, "uploaded") >= 3, "{other}");
    assert_eq!(registry_cache_layers(&other_ref), layers_a);

    // B's store without the compressed blobs (no image names them: prune
    // deletes them), its plain layers kept: the export finds the blobs the
    // import names in the registry (HEAD) and still compresses nothing.
    b.ok(&["prune"]);
    let gone = layers_a
        .iter()
        .filter(|(d, _)| {
            let hex = d.trim_start_matches("sha256:");
            !b.root.join("blobs/sha256").join(hex).exists()
        })
        .count();
    assert_eq!(
        gone as u64, compressed_a,
        "B's store lost the compressed blobs"
    );
    // To another repository of the registry, the blobs are mounted from
    // the imported cache's repository.
    let third_ref = reg.reference("cache/third:1");
    let to_third = format!("type=registry,ref={third_ref}");
    let again = build_to_store(
        &b,
        &ctx,
        &[
            "--cache-from",
            &cache_ref,
            "--cache-to",
            &to,
            "--cache-to",
            &to_third,
        ],
    );
    assert!(again.ran().is_empty(), "nothing runs: {:?}", again.ran());
    let exports: Vec<&Value> = again
        .events
        .iter()
        .filter(|e| e["event"] == "cache" && e["action"] == "export" && e["status"] == "done")
        .collect();
    assert_eq!(exports.len(), 2, "{:?}", again.events);
    for export in exports {
        assert_eq!(detail(export, "compressed"), 0, "{export}");
        assert_eq!(detail(export, "reused"), compressed_a, "{export}");
    }
    let export = export_ref(&again, "cache/ci");
    assert_eq!(detail(export, "uploaded"), 0, "{export}");
    assert_eq!(registry_cache_layers(&cache_ref), layers_a);
    assert_eq!(registry_cache_layers(&third_ref), layers_a);

    for from in [&cache_ref, &other_ref, &third_ref] {
        let c = Kiln::with_busybox(KILN);
        let third = c.build(&ctx, &["-t", "app", "--cache-from", from]);
        assert!(third.ran().is_empty(), "{from}: {:?}", third.ran());
        assert_eq!(third.id, first.id, "{from}");
    }
}

/// The same with cache folders, and the compression must match: a zstd
/// cache re-exported as zstd reuses its blobs, re-exported as gzip it is
/// compressed (never a zstd blob where gzip was asked).
#[test]
fn reexport_of_an_imported_local_cache_reuses_blobs_of_the_same_compression() {
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let zdir = a.path("cache-zstd");
    let to_z = format!("type=local,dest={},compression=zstd", zdir.display());
    let first = build_to_store(&a, &ctx, &["--cache-to", &to_z]);
    let export = first.cache_event("export");
    let compressed_a = detail(&export, "compressed");
    assert!(compressed_a >= 3, "{export}");
    let layers_a = layout_layers(&zdir);
    // The base image's layer is gzip in the fixture and stays so.
    let zstd_layers = layers_a
        .iter()
        .filter(|(_, mt)| mt == "application/vnd.oci.image.layer.v1.tar+zstd")
        .count();
    assert_eq!(zstd_layers as u64, compressed_a, "{layers_a:?}");

    let b = Kiln::with_busybox(KILN);
    let gdir = b.path("cache-gzip");
    let to_g = format!("type=local,dest={}", gdir.display());
    let from = format!("type=local,src={}", zdir.display());
    let second = build_to_store(
        &b,
        &ctx,
        &[
            "--cache-from",
            &from,
            "--cache-to",
            &to_z,
            "--cache-to",
            &to_g,
        ],
    );
    assert!(second.ran().is_empty(), "nothing runs: {:?}", second.ran());
    assert_eq!(second.id, first.id);
    let exports: Vec<&Value> = second
        .events
        .iter()
        .filter(|e| e["event"] == "cache" && e["action"] == "export" && e["status"] == "done")
        .collect();
    let zstd = exports
        .iter()
        .find(|e| e["ref"].as_str().is_some_and(|r| r.ends_with("cache-zstd")))
        .expect("the zstd export");
    assert_eq!(detail(zstd, "compressed"), 0, "{zstd}");
    assert_eq!(detail(zstd, "reused"), compressed_a, "{zstd}");
    assert_eq!(detail(zstd, "written"), 0, "{zstd}");
    assert_eq!(layout_layers(&zdir), layers_a);
    let gzip = exports
        .iter()
        .find(|e| e["ref"].as_str().is_some_and(|r| r.ends_with("cache-gzip")))
        .expect("the gzip export");
    assert_eq!(detail(gzip, "compressed"), compressed_a, "{gzip}");
    assert!(
        layout_layers(&gdir)
            .iter()
            .all(|(_, mt)| mt == "application/vnd.oci.image.layer.v1.tar+gzip"),
        "{:?}",
        layout_layers(&gdir)
    );

    for dir in [&zdir, &gdir] {
        let c = Kiln::with_busybox(KILN);
        let from = format!("type=local,src={}", dir.display());
        let third = c.build(&ctx, &["-t", "app", "--cache-from", &from]);
        assert!(
            third.ran().is_empty(),
            "{}: {:?}",
            dir.display(),
            third.ran()
        );
        assert_eq!(third.id, first.id);
    }
}

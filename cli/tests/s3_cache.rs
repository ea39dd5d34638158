//! The object-store cache (`--cache-to/--cache-from type=s3`) against a
//! real S3-compatible server (`s3s-fs` on 127.0.0.1, started per test by
//! kiln-testsupport): a fresh store builds every step from the bucket with
//! the same image ID; `mode=min` leaves the other stage out; several names
//! and the prefixes put the objects where BuildKit's s3 cache puts them
//! (read from the server's folder); credentials come from the attributes,
//! the `AWS_*` variables or a shared credentials file, wrong ones are a
//! warning on import and an error on export (unless `ignore-error=true`),
//! and no credential is ever printed.

use std::path::{Path, PathBuf};
use std::process::Output;

use kiln_testsupport::{Kiln, TestS3, S3_ACCESS_KEY, S3_SECRET_KEY};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

const MULTISTAGE: &str = "FROM busybox:1.35 AS builder
COPY src.txt /src.txt
RUN cat /src.txt > /built.txt && echo built >> /built.txt

FROM busybox:1.35
COPY app.txt /app.txt
COPY --from=builder /built.txt /built.txt
RUN cat /app.txt /built.txt > /final.txt
";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A context folder of `k` with the multistage Dockerfile.
fn context(k: &Kiln, name: &str, app: &str) -> PathBuf {
    let dir = k.path(name);
    std::fs::create_dir_all(&dir).expect("ctx");
    std::fs::write(dir.join("Dockerfile"), MULTISTAGE).expect("Dockerfile");
    std::fs::write(dir.join("src.txt"), "source\n").expect("src.txt");
    std::fs::write(dir.join("app.txt"), app).expect("app.txt");
    dir
}

struct Built {
    events: Vec<Value>,
    id: String,
    out: Output,
}

impl Built {
    fn steps(&self, kind: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == kind)
            .filter_map(|e| e["name"].as_str())
            .filter(|n| n.contains("RUN") || n.contains("COPY"))
            .map(str::to_string)
            .collect()
    }

    fn ran(&self) -> Vec<String> {
        self.steps("started")
    }

    fn cache_event(&self, action: &str) -> Value {
        self.events
            .iter()
            .find(|e| e["event"] == "cache" && e["action"] == action && e["status"] == "done")
            .cloned()
            .unwrap_or_else(|| panic!("no finished cache {action} event in {:?}", self.events))
    }

    fn warnings(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "warning")
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }

    /// Everything the build printed.
    fn printed(&self) -> String {
        format!("{}{}", text(&self.out.stdout), text(&self.out.stderr))
    }
}

/// Builds `ctx` in `k` with JSON progress, the same creation times in
/// every store, `env` added; writes the image ID and metadata file.
fn build(k: &Kiln, ctx: &Path, extra: &[&str], env: &[(&str, &str)]) -> Built {
    let iid = k.path("iid").display().to_string();
    let meta = k.path("metadata.json").display().to_string();
    let _ = std::fs::remove_file(&iid);
    let ctx = ctx.display().to_string();
    let mut args = vec![
        "build",
        "--progress",
        "json",
        "--iidfile",
        &iid,
        "--metadata-file",
        &meta,
        "-t",
        "app",
    ];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let mut cmd = k.cmd(&args);
    cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    for (key, v) in env {
        cmd.env(key, v);
    }
    let out = cmd.output().expect("running kiln");
    let events = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let id = std::fs::read_to_string(&iid).unwrap_or_default();
    Built { events, id, out }
}

fn build_ok(k: &Kiln, ctx: &Path, extra: &[&str], env: &[(&str, &str)]) -> Built {
    let b = build(k, ctx, extra, env);
    assert!(
        b.out.status.success(),
        "build {extra:?} failed:\n{}",
        b.printed()
    );
    b
}

#[test]
fn s3_cache_round_trip_modes_names_and_prefixes() {
    let s3 = TestS3::start();
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let to_max = s3.cache_spec("mode=max,prefix=team/,name=main;next");
    let to_min = s3.cache_spec("name=min");
    let to_custom = s3.cache_spec("mode=max,manifests_prefix=m/,blobs_prefix=b/");
    let first = build_ok(
        &a,
        &ctx,
        &[
            "--cache-to",
            &to_max,
            "--cache-to",
            &to_min,
            "--cache-to",
            &to_custom,
        ],
        &[],
    );
    assert_eq!(first.ran().len(), 5, "the first build runs every step");
    let export = first.cache_event("export");
    assert!(
        export["detail"]["uploaded"].as_u64().unwrap_or(0) > 0,
        "{export}"
    );

    // BuildKit's layout: <prefix><manifests_prefix><name>,
    // <prefix><blobs_prefix><digest>.
    let keys = s3.keys();
    for k in [
        "team/manifests/main",
        "team/manifests/next",
        "manifests/min",
        "m/buildkit",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
    }
    for prefix in ["team/blobs/sha256:", "blobs/sha256:", "b/sha256:"] {
        assert!(
            keys.iter().any(|x| x.starts_with(prefix)),
            "no {prefix}… in {keys:?}"
        );
    }
    assert!(
        keys.iter().all(|k| k.starts_with("team/manifests/")
            || k.starts_with("team/blobs/sha256:")
            || k.starts_with("manifests/")
            || k.starts_with("blobs/sha256:")
            || k.starts_with("m/")
            || k.starts_with("b/sha256:")),
        "{keys:?}"
    );
    let blob_count = |prefix: &str| keys.iter().filter(|k| k.starts_with(prefix)).count();
    assert!(
        blob_count("blobs/") < blob_count("team/blobs/"),
        "min exports fewer blobs than max: {keys:?}"
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(s3.dir.path().join("kiln-cache/team/manifests/next")).expect("manifest"),
    )
    .expect("JSON manifest");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );

    // Exporting again uploads nothing: every blob is there (HEAD).
    let again = build_ok(&a, &ctx, &["--cache-to", &to_max], &[]);
    let export = again.cache_event("export");
    assert_eq!(export["detail"]["uploaded"], 0, "{export}");
    assert!(
        export["detail"]["existing"].as_u64().unwrap_or(0) > 0,
        "{export}"
    );

    // A fresh store: every step from the cache (the second name), the
    // same image ID.
    let b = Kiln::with_busybox(KILN);
    let from = s3.cache_spec("prefix=team/,name=next");
    let second = build_ok(&b, &ctx, &["--cache-from", &from], &[]);
    assert!(second.ran().is_empty(), "nothing runs: {:?}", second.ran());
    assert_eq!(second.id, first.id, "the same image, the same ID");
    assert_eq!(second.cache_event("import")["detail"]["records"], 5);

    // The custom prefixes read back too.
    let b2 = Kiln::with_busybox(KILN);
    let from = s3.cache_spec("manifests_prefix=m/,blobs_prefix=b/");
    let third = build_ok(&b2, &ctx, &["--cache-from", &from], &[]);
    assert!(third.ran().is_empty(), "{:?}", third.ran());
    assert_eq!(third.id, first.id);

    // max keeps the builder stage: an edit of app.txt runs the final
    // stage only; min does not: the builder's RUN runs again.
    let c = Kiln::with_busybox(KILN);
    let edited = context(&c, "ctx2", "app changed\n");
    let from_max = s3.cache_spec("prefix=team/,name=main");
    let fourth = build_ok(&c, &edited, &["--cache-from", &from_max], &[]);
    let ran = fourth.ran();
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert!(ran.iter().all(|n| n.starts_with("[stage-1 ")), "{ran:?}");
    let d = Kiln::with_busybox(KILN);
    let edited = context(&d, "ctx3", "app changed\n");
    let from_min = s3.cache_spec("name=min");
    let fifth = build_ok(&d, &edited, &["--cache-from", &from_min], &[]);
    assert!(
        fifth.ran().iter().any(|n| n.contains("RUN cat /src.txt")),
        "min leaves the builder stage out: {:?}",
        fifth.ran()
    );
    // (Not the same image ID as `fourth`: the builder's RUN ran again and
    // wrote files with new times.)

    // A name nobody wrote is an empty cache, as in BuildKit.
    let e = Kiln::with_busybox(KILN);
    let nothing = s3.cache_spec("name=nothing");
    let sixth = build_ok(&e, &ctx, &["--cache-from", &nothing], &[]);
    assert_eq!(sixth.ran().len(), 5);
    for b in [&first, &again, &second, &third, &fourth, &fifth, &sixth] {
        assert!(!b.printed().contains(S3_SECRET_KEY), "{}", b.printed());
    }
}

#[test]
fn s3_credentials_from_env_and_file_wrong_ones_warn_or_fail_never_printed() {
    let s3 = TestS3::start();
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let endpoint = s3.endpoint();
    let bare = format!(
        "type=s3,bucket=kiln-cache,region=us-east-1,endpoint_url={endpoint},use_path_style=true"
    );

    // Credentials from the environment.
    let env = [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
    ];
    let to = format!("{bare},mode=max");
    let first = build_ok(&a, &ctx, &["--cache-to", &to], &env);
    assert!(first.cache_event("export")["detail"]["uploaded"].as_u64() > Some(0));

    // Credentials from a shared credentials file (profile by AWS_PROFILE).
    let creds = a.path("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n\
             [ci]\naws_access_key_id = {S3_ACCESS_KEY}\naws_secret_access_key = {S3_SECRET_KEY}\n"
        ),
    )
    .expect("credentials file");
    let creds = creds.display().to_string();
    let file_env = [
        ("AWS_SHARED_CREDENTIALS_FILE", creds.as_str()),
        ("AWS_PROFILE", "ci"),
    ];
    let b = Kiln::with_busybox(KILN);
    let second = build_ok(&b, &ctx, &["--cache-from", &bare], &file_env);
    assert!(second.ran().is_empty(), "{:?}", second.ran());
    assert_eq!(second.id, first.id);

    // Wrong credentials: import is a warning, the build runs every step.
    let wrong_secret = "Wrong-Secret-Value-42";
    let wrong = format!("{bare},access_key_id={S3_ACCESS_KEY},secret_access_key={wrong_secret}");
    let c = Kiln::with_busybox(KILN);
    let third = build_ok(&c, &ctx, &["--cache-from", &wrong], &[]);
    assert_eq!(third.ran().len(), 5);
    let warnings = third.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("failed to configure s3 cache importer")),
        "{warnings:?}"
    );

    // … export fails the build with a clear error …
    let fourth = build(&c, &ctx, &["--cache-to", &wrong], &[]);
    assert_eq!(fourth.out.status.code(), Some(1), "{}", fourth.printed());
    let err = text(&fourth.out.stderr);
    assert!(
        err.contains("failed to export cache to s3://kiln-cache/"),
        "{err}"
    );

    // … unless ignore-error=true: a warning.
    let lenient = format!("{wrong},ignore-error=true");
    let fifth = build_ok(&c, &ctx, &["--cache-to", &lenient], &[]);
    assert!(
        fifth
            .warnings()
            .iter()
            .any(|w| w.contains("failed to export cache")),
        "{:?}",
        fifth.warnings()
    );

    // A malformed value naming a secret is refused without quoting it.
    let bad = format!("{wrong},garbage");
    let sixth = build(&c, &ctx, &["--cache-to", &bad], &[]);
    assert!(!sixth.out.status.success());

    let metadata = std::fs::read_to_string(c.path("metadata.json")).unwrap_or_default();
    for b in [&first, &second, &third, &fourth, &fifth, &sixth] {
        let printed = b.printed();
        for secret in [S3_SECRET_KEY, wrong_secret] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
            assert!(!metadata.contains(secret), "{secret} in the metadata file");
        }
    }
}

const WITH_CACHE_MOUNT: &str = "FROM busybox:1.35
COPY app.txt /app.txt
RUN --mount=type=cache,target=/cache,id=kiln-test-mount \
    sh -c 'cat /cache/seen > /seen.txt 2>/dev/null; cat /app.txt >> /cache/seen; true'
";

/// What `/seen.txt` of a build of `app` says: the cache mount's content
/// before the RUN added `app`.
fn seen_before(k: &Kiln, name: &str, app: &str, cache: &[&str]) -> (String, Built) {
    let ctx = k.path(name);
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), WITH_CACHE_MOUNT).expect("Dockerfile");
    std::fs::write(ctx.join("app.txt"), app).expect("app.txt");
    let out = k.path(&format!("{name}-out"));
    let local = format!("type=local,dest={}", out.display());
    let mut extra = vec!["--output", &local, "--output", "type=image"];
    extra.extend_from_slice(cache);
    let b = build_ok(k, &ctx, &extra, &[]);
    let seen = std::fs::read_to_string(out.join("seen.txt")).unwrap_or_default();
    (seen, b)
}

#[test]
fn cache_mounts_travel_with_local_registry_and_s3_caches_when_asked() {
    let s3 = TestS3::start();
    let reg = kiln_testsupport::TestRegistry::plain();
    let a = Kiln::with_busybox(KILN);
    let dir = a.path("cache-dir");
    let local_to = format!("type=local,dest={},cache-mounts=true", dir.display());
    let local_from = format!("type=local,src={}", dir.display());
    let reg_ref = reg.reference("cache/mounts:1");
    let reg_to = format!("type=registry,ref={reg_ref},cache-mounts=true");
    let s3_to = s3.cache_spec("cache-mounts=true");
    let s3_plain = s3.cache_spec("name=plain");
    let (seen, first) = seen_before(
        &a,
        "ctx",
        "one\n",
        &[
            "--cache-to",
            &local_to,
            "--cache-to",
            &reg_to,
            "--cache-to",
            &s3_to,
            "--cache-to",
            &s3_plain,
        ],
    );
    assert_eq!(seen, "", "the first build starts with an empty cache mount");
    let export = first.cache_event("export");
    assert_eq!(export["detail"]["mounts"], 1, "{export}");

    // A fresh store whose step runs (app.txt changed) sees what the first
    // build left in the cache mount, through each cache type.
    let s3_from = s3.cache_spec("");
    for from in [local_from.as_str(), reg_ref.as_str(), s3_from.as_str()] {
        let b = Kiln::with_busybox(KILN);
        let (seen, built) = seen_before(&b, "ctx", "two\n", &["--cache-from", from]);
        assert_eq!(seen, "one\n", "cache mount restored from {from}");
        assert!(
            built.ran().iter().any(|n| n.contains("RUN")),
            "{:?}",
            built.ran()
        );
    }

    // Without cache-mounts=true the mount stays behind.
    let c = Kiln::with_busybox(KILN);
    let (seen, _) = seen_before(&c, "ctx", "two\n", &["--cache-from", &s3_plain]);
    assert_eq!(seen, "", "no cache mount without cache-mounts=true");

    // A store with its own cache mount keeps it.
    let d = Kiln::with_busybox(KILN);
    let _ = seen_before(&d, "ctx0", "local\n", &[]);
    let (seen, _) = seen_before(&d, "ctx", "two\n", &["--cache-from", &s3_from]);
    assert_eq!(seen, "local\n", "a local cache mount is not overwritten");
}

/// CI's runners on a bucket: B, a fresh store, imports A's cache, builds
/// everything from it and exports to the same name. Its layers arrived
/// compressed and were stored plain; the export names the compressed blobs
/// it imported instead of compressing again: nothing compressed, nothing
/// uploaded, the same layer blobs as A's, and the cache still imports to
/// the same image.
#[test]
fn s3_reexport_of_an_imported_cache_compresses_nothing() {
    let s3 = TestS3::start();
    let a = Kiln::with_busybox(KILN);
    let ctx = context(&a, "ctx", "app\n");
    let spec = s3.cache_spec("name=ci");
    let layers = || -> Vec<Value> {
        let m: Value = serde_json::from_slice(
            &std::fs::read(s3.dir.path().join("kiln-cache/manifests/ci")).expect("manifest"),
        )
        .expect("JSON manifest");
        m["layers"].as_array().expect("layers").clone()
    };
    let first = build_ok(&a, &ctx, &["--cache-to", &spec], &[]);
    let export = first.cache_event("export");
    let compressed_a = export["detail"]["compressed"].as_u64().expect("compressed");
    assert!(compressed_a >= 3, "A compresses its own layers: {export}");
    let layers_a = layers();

    let b = Kiln::with_busybox(KILN);
    let second = build_ok(&b, &ctx, &["--cache-from", &spec, "--cache-to", &spec], &[]);
    assert!(second.ran().is_empty(), "nothing runs: {:?}", second.ran());
    assert_eq!(second.id, first.id);
    let export = second.cache_event("export");
    assert_eq!(export["detail"]["compressed"], 0, "{export}");
    assert_eq!(export["detail"]["uploaded"], 0, "{export}");
    assert_eq!(export["detail"]["reused"], compressed_a, "{export}");
    assert_eq!(layers(), layers_a);

    let c = Kiln::with_busybox(KILN);
    let third = build_ok(&c, &ctx, &["--cache-from", &spec], &[]);
    assert!(third.ran().is_empty(), "{:?}", third.ran());
    assert_eq!(third.id, first.id);
}

//! Behaviours where kiln once differed from BuildKit (docker 28.5), each
//! checked end to end through the real binary: what the image holds (read
//! by the oracle's imagefs.py from an OCI archive), its config, the error
//! text a bad file gets.

use std::process::Output;

use kiln_testsupport::{imagefs, stderr, Kiln};
use serde_json::Value;
use sha2::{Digest, Sha256};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// What only this file's tests do with a kiln.
trait BuildOci {
    /// Builds a context of `files` into an OCI archive with `extra` build
    /// flags; returns the run and, when it succeeded, imagefs's description
    /// of the image.
    fn build_oci(&self, name: &str, files: &[(&str, &str)], extra: &[&str]) -> (Output, Value);

    /// As [`Kiln::build_oci`], asserting success.
    fn image(&self, name: &str, files: &[(&str, &str)], extra: &[&str]) -> Value;

    /// Builds a Dockerfile that must fail; returns its stderr.
    fn fails(&self, name: &str, dockerfile: &str) -> String;
}

impl BuildOci for Kiln {
    fn build_oci(&self, name: &str, files: &[(&str, &str)], extra: &[&str]) -> (Output, Value) {
        let ctx = self.context(name, files);
        let dest = self.path(&format!("{name}.tar"));
        let mut args = vec!["build".to_string(), "--progress".into(), "plain".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("-o".into());
        args.push(format!("type=oci,dest={}", dest.display()));
        args.push(ctx.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&args);
        let fs = if out.status.success() {
            imagefs(&dest, None)
        } else {
            Value::Null
        };
        (out, fs)
    }

    fn image(&self, name: &str, files: &[(&str, &str)], extra: &[&str]) -> Value {
        let (out, fs) = self.build_oci(name, files, extra);
        assert!(
            out.status.success(),
            "build {name} failed:\n{}",
            stderr(&out)
        );
        fs
    }

    fn fails(&self, name: &str, dockerfile: &str) -> String {
        let (out, _) = self.build_oci(name, &[("Dockerfile", dockerfile)], &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "build {name} succeeded:\n{err}");
        assert_eq!(out.status.code(), Some(1), "a clean failure: {err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }
}

/// imagefs's entry for `path`: `[type, mode, uid, gid, size, sha256]`.
fn entry<'a>(fs: &'a Value, path: &str) -> &'a Value {
    let e = &fs["fs"][path];
    assert!(!e.is_null(), "{path} is not in the image");
    e
}

/// The content digest imagefs shows for a regular file holding `text`.
fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `(mode, uid, gid)` of `path`, the mode as imagefs prints it (`0o755`).
fn meta(fs: &Value, path: &str) -> (String, u64, u64) {
    let e = entry(fs, path);
    (
        e[1].as_str().unwrap_or_default().to_string(),
        e[2].as_u64().unwrap_or(u64::MAX),
        e[3].as_u64().unwrap_or(u64::MAX),
    )
}

// 1. An ARG redeclared after an ENV of the same name.

const ARG_AFTER_ENV: &str = "FROM busybox:1.35
ENV V=fromenv
ARG V=fromarg
RUN echo $V > /v
WORKDIR /w-${V}
LABEL l=${V}
ENV W=${V}
COPY ${V}.txt /copied
";

/// What the context file `<value>.txt` of [`ARG_AFTER_ENV`] holds.
fn copied_text(value: &str) -> &'static str {
    match value {
        "fromenv" => "env",
        "fromarg" => "arg",
        _ => "cli",
    }
}

#[test]
fn an_arg_after_an_env_of_the_same_name_wins_for_run_and_words_not_for_the_config() {
    let k = Kiln::with_busybox(KILN);
    for (name, extra, want) in [
        ("default", &[][..], "fromarg"),
        ("given", &["--build-arg", "V=fromcli"][..], "fromcli"),
    ] {
        let files = [
            ("Dockerfile", ARG_AFTER_ENV),
            ("fromenv.txt", "env"),
            ("fromarg.txt", "arg"),
            ("fromcli.txt", "cli"),
        ];
        let fs = k.image(name, &files, extra);
        // RUN sees the ARG's value.
        assert_eq!(entry(&fs, "/v")[5], sha(&format!("{want}\n")), "{name}");
        // So do the words of later instructions.
        let cfg = &fs["config"];
        assert_eq!(cfg["WorkingDir"], format!("/w-{want}"), "{name}");
        assert_eq!(entry(&fs, &format!("/w-{want}"))[0], "d", "{name}");
        assert_eq!(cfg["Labels"]["l"], want, "{name}");
        let copied = entry(&fs, "/copied")[5].clone();
        assert_eq!(copied, sha(copied_text(want)), "{name}: COPY's source");
        // The config keeps the ENV's value for V; an ENV that expands V
        // stores what it saw.
        let env: Vec<&str> = cfg["Env"]
            .as_array()
            .expect("Env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(env.contains(&"V=fromenv"), "{name}: {env:?}");
        assert!(
            env.contains(&format!("W={want}").as_str()),
            "{name}: {env:?}"
        );
        assert!(!env
            .iter()
            .any(|e| e.contains("fromarg") && e.starts_with("V=")));
    }

    // `kiln inspect` of the stored image shows the same config Env.
    let ctx = k.context(
        "stored",
        &[("Dockerfile", ARG_AFTER_ENV), ("fromcli.txt", "cli")],
    );
    k.ok(&[
        "build",
        "-q",
        "--build-arg",
        "V=fromcli",
        "-t",
        "argenv",
        &ctx.display().to_string(),
    ]);
    let doc: Value = serde_json::from_str(&k.ok(&["inspect", "argenv"]).0).expect("json");
    let env = &doc[0]["Config"]["Env"];
    assert!(
        env.as_array().is_some_and(
            |e| e.iter().any(|v| v == "V=fromenv") && e.iter().any(|v| v == "W=fromcli")
        ),
        "{env}"
    );
}

#[test]
fn an_arg_without_a_value_leaves_the_env_alone() {
    let k = Kiln::with_busybox(KILN);
    let fs = k.image(
        "novalue",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\nENV V=fromenv\nARG V\nRUN echo $V > /v\n",
        )],
        &[],
    );
    assert_eq!(entry(&fs, "/v")[5], sha("fromenv\n"));
}

// 2. Stages that copy from each other.

#[test]
fn stages_that_copy_from_each_other_are_a_circular_dependency() {
    let k = Kiln::with_busybox(KILN);
    let err = k.fails(
        "two",
        "FROM busybox:1.35 AS a\nCOPY --from=b /bin/true /t\nFROM busybox:1.35 AS b\nCOPY --from=a /bin/true /t\n",
    );
    assert!(
        err.contains("circular dependency detected on stage: a"),
        "{err}"
    );
    assert!(
        err.contains("line 2"),
        "the COPY that starts the cycle: {err}"
    );

    // A stage that copies from itself.
    let err = k.fails(
        "self",
        "FROM busybox:1.35 AS a\nCOPY --from=a /bin/true /t\n",
    );
    assert!(
        err.contains("circular dependency detected on stage: a"),
        "{err}"
    );
    // Unnamed, by index: BuildKit's name for the stage.
    let err = k.fails("index", "FROM busybox:1.35\nCOPY --from=0 /bin/true /t\n");
    assert!(
        err.contains("circular dependency detected on stage: stage-0"),
        "{err}"
    );

    // A longer cycle (BuildKit's own test): reported on the first stage in
    // the file from which it is reached, whatever the target.
    let long = "FROM busybox:1.35 AS stage0\nCOPY --from=stage2 /bin/true /sub/\n\
                FROM busybox:1.35 AS stage1\nCOPY --from=stage0 /bin/true /sub/\n\
                FROM busybox:1.35 AS stage2\nCOPY --from=stage1 /bin/true /sub/\n";
    let err = k.fails("long", long);
    assert!(
        err.contains("circular dependency detected on stage: stage0"),
        "{err}"
    );
    // A cycle through RUN --mount from=, in stages the target never needs.
    let err = k.fails(
        "mount",
        "FROM busybox:1.35 AS pre\nRUN --mount=from=x,target=/m true\n\
         FROM busybox:1.35 AS x\nCOPY --from=y /bin/true /t\n\
         FROM busybox:1.35 AS y\nCOPY --from=x /bin/true /t\n\
         FROM busybox:1.35\nRUN true\n",
    );
    assert!(
        err.contains("circular dependency detected on stage: pre"),
        "{err}"
    );

    // Reading a later stage without a cycle is still the other error.
    let err = k.fails(
        "forward",
        "FROM busybox:1.35 AS a\nCOPY --from=b /bin/true /t\nFROM busybox:1.35 AS b\nRUN true\nFROM a\n",
    );
    assert!(err.contains("needs to be defined before"), "{err}");
}

// 3. COPY --chmod in chmod(1)'s symbolic form.

#[test]
fn copy_and_add_take_symbolic_chmod_applied_to_each_entrys_mode() {
    use std::os::unix::fs::PermissionsExt;
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "chmod",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35
COPY --chmod=u=rwx,g=rx,o= plain /m1
COPY --chmod=go-w,u+x shared /m2
COPY --chmod=a+X plain tool /m3/
COPY --chmod=a+X d /m4
COPY --chmod=+x plain /m5
ADD --chmod=u=rw,go= tool /m6
COPY --chmod=0640 tool /m7
COPY --chmod=g=u-w d /m8/
COPY --chmod=+x <<EOF /m9.sh
echo hi
EOF
COPY --link --chmod=+x --chown=daemon plain /m10
",
            ),
            ("plain", "p"),
            ("shared", "s"),
            ("tool", "t"),
        ],
    );
    std::fs::create_dir_all(ctx.join("d/sub")).expect("mkdir");
    std::fs::write(ctx.join("d/f"), "f").expect("write");
    std::fs::write(ctx.join("d/sub/x"), "x").expect("write");
    for (path, mode) in [
        ("plain", 0o644),
        ("shared", 0o666),
        ("tool", 0o744),
        ("d", 0o700),
        ("d/f", 0o600),
        ("d/sub", 0o700),
        ("d/sub/x", 0o750),
    ] {
        std::fs::set_permissions(ctx.join(path), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
    let fs = k.image("chmod", &[], &[]);
    let mode = |p: &str| meta(&fs, p).0;
    assert_eq!(mode("/m1"), "0o750");
    assert_eq!(mode("/m2"), "0o744");
    // X: execute only for directories and files someone may execute.
    assert_eq!(mode("/m3/plain"), "0o644");
    assert_eq!(mode("/m3/tool"), "0o755");
    // A directory's entries, recursively, each from its own mode; the
    // destination directory itself is created 0755, as BuildKit does.
    assert_eq!(mode("/m4"), "0o755");
    assert_eq!(mode("/m4/f"), "0o600");
    assert_eq!(mode("/m4/sub"), "0o711");
    assert_eq!(mode("/m4/sub/x"), "0o751");
    assert_eq!(mode("/m5"), "0o755");
    assert_eq!(mode("/m6"), "0o600", "ADD takes it too");
    assert_eq!(mode("/m7"), "0o640", "octal is unchanged");
    assert_eq!(mode("/m8/f"), "0o640");
    assert_eq!(mode("/m8/sub"), "0o750");
    assert_eq!(mode("/m8/sub/x"), "0o750");
    assert_eq!(mode("/m9.sh"), "0o755", "an inline document");
    assert_eq!(entry(&fs, "/m5")[5], sha("p"), "content is copied");
    // With --chmod, BuildKit does not link: the copy is made onto the
    // image, whose /etc/passwd names daemon.
    assert_eq!(meta(&fs, "/m10"), ("0o755".to_string(), 1, 1));
}

#[test]
fn bad_chmod_values_fail_with_the_line() {
    let k = Kiln::with_busybox(KILN);
    for (name, mode, want) in [
        (
            "syntax",
            "u=rwq",
            "invalid chmod parameter: 'u=rwq': invalid syntax",
        ),
        (
            "clause",
            "u+x,",
            "invalid chmod parameter: 'u+x,': invalid syntax",
        ),
        (
            "big",
            "10000",
            "invalid chmod parameter: '10000'. it should be octal",
        ),
        (
            "digit",
            "8",
            "invalid chmod parameter: '8'. it should be octal",
        ),
    ] {
        let err = k.fails(
            name,
            &format!("FROM busybox:1.35\nCOPY --chmod={mode} Dockerfile /x\n"),
        );
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains("line 2"), "{name}: {err}");
    }
}

// 4. --chown with names the image does not know.

#[test]
fn chown_to_unknown_names_builds_with_buildkits_defaults_and_warns() {
    let k = Kiln::with_busybox(KILN);
    // busybox's /etc/passwd: root 0:0, daemon 1:1, nobody 65534:65534;
    // /etc/group: root 0, daemon 1, nogroup 65534.
    let (out, fs) = k.build_oci(
        "chown",
        &[
            (
                "Dockerfile",
                "FROM busybox:1.35
COPY --chown=nosuchuser f /user
COPY --chown=nobody:nosuchgroup f /known-user-unknown-group
COPY --chown=1000:nosuchgroup f /id-unknown-group
COPY --chown=nosuchuser:daemon f /unknown-user-known-group
COPY --chown=nosuchuser:nosuchgroup f /both
ADD --chown=nosuchuser f /added
COPY --chown=4242:4343 f /ids
COPY --chown=daemon f /daemon
COPY --chown=nobody:nogroup f /nobody
USER nosuchuser
WORKDIR /wd
",
            ),
            ("f", "f"),
        ],
        &[],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let owner = |p: &str| {
        let (_, uid, gid) = meta(&fs, p);
        (uid, gid)
    };
    // An unknown user: uid and gid 0.
    assert_eq!(owner("/user"), (0, 0));
    assert_eq!(owner("/added"), (0, 0));
    // An unknown group keeps the gid the user part gave.
    assert_eq!(owner("/known-user-unknown-group"), (65534, 65534));
    assert_eq!(owner("/id-unknown-group"), (1000, 1000));
    assert_eq!(owner("/unknown-user-known-group"), (0, 1));
    assert_eq!(owner("/both"), (0, 0));
    // WORKDIR creates its directory as USER, resolved the same way.
    assert_eq!(owner("/wd"), (0, 0));
    // Numeric ids and known names are unchanged.
    assert_eq!(owner("/ids"), (4242, 4343));
    assert_eq!(owner("/daemon"), (1, 1));
    assert_eq!(owner("/nobody"), (65534, 65534));
    assert_eq!(entry(&fs, "/user")[5], sha("f"));

    // The build says which names it did not find.
    assert!(
        err.contains("WARNING: user \"nosuchuser\" not found in the image"),
        "{err}"
    );
    assert!(
        err.contains("WARNING: group \"nosuchgroup\" not found in the image"),
        "{err}"
    );
    assert!(!err.contains("\"daemon\" not found"), "{err}");
}

#[test]
fn chown_by_name_onto_an_image_without_a_user_database() {
    let k = Kiln::with_busybox(KILN);
    let fs = k.image(
        "scratch",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY --chown=someone:somegroup f /f\nCOPY --chown=7:8 f /g\n",
            ),
            ("f", "f"),
        ],
        &[],
    );
    assert_eq!(meta(&fs, "/f").1, 0);
    assert_eq!(meta(&fs, "/f").2, 0);
    assert_eq!((meta(&fs, "/g").1, meta(&fs, "/g").2), (7, 8));
}

//! `RUN --mount` as a current BuildKit (docker 28.5) has it, end to end
//! through `kiln build`: mount points made for a step leave nothing in the
//! image; a `rw` bind is writable during the step and its writes are thrown
//! away (never reaching the context, a stage or an image); a cache mount is
//! one cache per id *and* uid/gid/mode.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_testsupport::{stderr, Kiln};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Builds `ctx` (its `Dockerfile`) with `extra` flags and exports the image
/// to a folder, which it returns.
fn build_local(k: &Kiln, ctx: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = k.path(name);
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["-o", dest.as_str()];
    args.extend_from_slice(extra);
    let (_, o) = k.build_json(ctx, &args);
    assert!(o.status.success(), "build failed:\n{}", stderr(&o));
    out
}

fn read(root: &Path, p: &str) -> String {
    let path = root.join(p.trim_start_matches('/'));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn absent(root: &Path, p: &str) -> bool {
    std::fs::symlink_metadata(root.join(p.trim_start_matches('/'))).is_err()
}

/// Everything about a tree that a step could change: per path, its type,
/// mode, owner and content (a symlink's target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, (String, u32, u32, u32, Vec<u8>)> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<PathBuf, (String, u32, u32, u32, Vec<u8>)>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let (kind, content) = if ft.is_symlink() {
                (
                    "l",
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                ("d", Vec::new())
            } else if ft.is_file() {
                ("f", std::fs::read(&p).unwrap())
            } else {
                ("o", Vec::new())
            };
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, (kind.into(), md.mode(), md.uid(), md.gid(), content));
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    let md = std::fs::metadata(dir).unwrap();
    out.insert(
        PathBuf::new(),
        ("d".into(), md.mode(), md.uid(), md.gid(), Vec::new()),
    );
    walk(dir, dir, &mut out);
    out
}

/// The entry names of every layer of the single-platform OCI archive
/// `archive`, lowest layer first.
fn layer_entries(archive: &Path) -> Vec<Vec<String>> {
    use std::io::Read;
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        blobs.insert(name, data);
    }
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&blobs[name]).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let blob = |digest: &serde_json::Value| {
        format!(
            "blobs/sha256/{}",
            digest.as_str().unwrap().trim_start_matches("sha256:")
        )
    };
    let mut doc = json("index.json");
    // An index (of one manifest) before the manifest itself.
    while doc["manifests"].is_array() {
        doc = json(&blob(&doc["manifests"][0]["digest"]));
    }
    doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let data = &blobs[&blob(&l["digest"])];
            let mut plain = Vec::new();
            if data.starts_with(&[0x1f, 0x8b]) {
                flate2::read::MultiGzDecoder::new(&data[..])
                    .read_to_end(&mut plain)
                    .unwrap();
            } else {
                plain = data.clone();
            }
            let mut t = tar::Archive::new(&plain[..]);
            t.entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let mut n = e.path().unwrap().to_string_lossy().into_owned();
                    if e.header().entry_type().is_dir() && !n.ends_with('/') {
                        n.push('/');
                    }
                    n
                })
                .collect()
        })
        .collect()
}

/// Item 1: no `--mount` of any type leaves its mount point, or the folders
/// made for it, in the image; folders that existed stay as they were, and a
/// folder made for a mount that the step also writes into stays with what
/// was written.
#[test]
fn mount_points_made_for_a_step_leave_nothing_in_the_image() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[
            ("f.txt", "file\n"),
            (
                "Dockerfile",
                "FROM busybox:1.35\n\
                 RUN mkdir -p /exists/sub && chmod 0700 /exists/sub && echo keep > /exists/sub/k\n\
                 RUN --mount=type=cache,target=/a/b/c \
                     --mount=type=tmpfs,target=/t/u \
                     --mount=type=bind,source=f.txt,target=/bf/x/f.txt \
                     --mount=type=bind,target=/bd/ctx \
                     --mount=type=secret,id=s,target=/sec/dir/s \
                     --mount=type=ssh,target=/ssh/dir/agent.sock \
                     --mount=type=cache,target=/exists/sub/cache \
                     --mount=type=tmpfs,target=/exists/new/t \
                     --mount=type=bind,source=f.txt,target=/exists/sub/f.txt \
                     cat /bf/x/f.txt /sec/dir/s > /seen && test -S /ssh/dir/agent.sock\n\
                 RUN --mount=type=cache,target=/w/m/c echo beside > /w/m/beside && echo x > /w/m/c/in-cache\n",
            ),
        ],
    );
    let secret = k.path("secret.txt");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let sock = k.path("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let archive = k.path("image.tar");
    let oci = format!("type=oci,dest={}", archive.display());
    let out = build_local(
        &k,
        &ctx,
        "out",
        &[
            "-o",
            &oci,
            "--secret",
            &format!("id=s,src={}", secret.display()),
            "--ssh",
            &format!("default={}", sock.display()),
        ],
    );
    assert_eq!(read(&out, "/seen"), "file\ns3cret\n");
    for p in [
        "/a",
        "/t",
        "/bf",
        "/bd",
        "/sec",
        "/ssh",
        "/exists/sub/cache",
        "/exists/new",
        "/exists/sub/f.txt",
        "/w/m/c",
    ] {
        assert!(absent(&out, p), "{p} is in the image");
    }
    // What existed stays exactly so.
    let sub = std::fs::symlink_metadata(out.join("exists/sub")).unwrap();
    assert!(sub.is_dir());
    assert_eq!(sub.permissions().mode() & 0o7777, 0o700);
    assert_eq!(read(&out, "/exists/sub/k"), "keep\n");
    let mut names: Vec<_> = std::fs::read_dir(out.join("exists/sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["k"]);
    // The mounts' step's layer holds what the step wrote and nothing else:
    // no mount point, no folder made for one, not even /exists/sub.
    let layers = layer_entries(&archive);
    assert_eq!(layers.len(), 4, "{layers:?}");
    assert_eq!(layers[2], ["seen"]);
    assert_eq!(layers[3], ["w/", "w/m/", "w/m/beside"]);
    // A folder made for a mount that the step wrote into beside it stays.
    assert_eq!(read(&out, "/w/m/beside"), "beside\n");
    assert_eq!(
        std::fs::symlink_metadata(out.join("w/m"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
}

/// Item 2: a rw bind of the build context is writable for the step, which
/// sees its own writes, and the context folder is byte for byte as it was:
/// every file's content, mode and type, and no new entries.
#[test]
fn a_rw_bind_of_the_context_never_writes_through() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[
            ("a.txt", "a\n"),
            ("keep.txt", "keep\n"),
            ("exec.sh", "#!/bin/sh\necho hi\n"),
            (
                "Dockerfile",
                "FROM busybox:1.35\n\
                 RUN --mount=type=bind,target=/ctx,rw set -e; cd /ctx; \
                     rm a.txt; echo changed > keep.txt; chmod 600 exec.sh; \
                     echo more >> sub/b.txt; rm -r sub/deep; \
                     mkdir -p newdir/deep && echo n > newdir/deep/f; \
                     ln -s / root-link; rm link; ln -s /etc/passwd link; \
                     printf '#!/bin/sh\\nexit 0\\n' > .git/hooks/pre-commit; chmod 755 .git/hooks/pre-commit; \
                     ls -A > /listing; cat keep.txt sub/b.txt newdir/deep/f > /seen; \
                     stat -c %a exec.sh .git/hooks/pre-commit > /modes; readlink link > /link\n\
                 RUN --mount=type=bind,source=sub,target=/s,readwrite rm -rf /s/* && touch /s/x && ls -A /s > /s-listing\n\
                 RUN --mount=type=bind,source=a.txt,target=/one,rw echo more >> /one && cat /one > /one-seen\n\
                 RUN --mount=type=bind,target=/ctx ls -A /ctx > /after && cat /ctx/keep.txt > /after-keep\n",
            ),
        ],
    );
    std::fs::create_dir_all(ctx.join("sub/deep")).unwrap();
    std::fs::write(ctx.join("sub/b.txt"), "b\n").unwrap();
    std::fs::write(ctx.join("sub/deep/d"), "d\n").unwrap();
    std::fs::create_dir_all(ctx.join(".git/hooks")).unwrap();
    std::fs::set_permissions(ctx.join("exec.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", ctx.join("link")).unwrap();
    let before = tree(&ctx);
    let out = build_local(&k, &ctx, "out", &[]);
    assert_eq!(tree(&ctx), before, "the context changed");
    // The step saw its own writes.
    assert_eq!(
        read(&out, "/listing"),
        ".git\nDockerfile\nexec.sh\nkeep.txt\nlink\nnewdir\nroot-link\nsub\n"
    );
    assert_eq!(read(&out, "/seen"), "changed\nb\nmore\nn\n");
    assert_eq!(read(&out, "/modes"), "600\n755\n");
    assert_eq!(read(&out, "/link"), "/etc/passwd\n");
    assert_eq!(read(&out, "/s-listing"), "x\n");
    assert_eq!(read(&out, "/one-seen"), "a\nmore\n");
    // A later step sees the context untouched.
    assert_eq!(
        read(&out, "/after"),
        ".git\nDockerfile\na.txt\nexec.sh\nkeep.txt\nlink\nsub\n"
    );
    assert_eq!(read(&out, "/after-keep"), "keep\n");
    assert!(absent(&out, "/ctx") && absent(&out, "/s") && absent(&out, "/one"));
}

/// Item 2: a rw bind from a stage or an image is writable for the step, and
/// the stage's result (and the image) are unchanged for later steps.
#[test]
fn a_rw_bind_from_a_stage_or_image_is_writable_and_thrown_away() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35 AS base\n\
             RUN mkdir /data && echo orig > /data/f\n\
             FROM busybox:1.35\n\
             RUN --mount=type=bind,from=base,source=/data,target=/d,rw \
                 echo new > /d/f && echo extra > /d/g && cat /d/f /d/g > /seen\n\
             RUN --mount=type=bind,from=base,target=/b,rw rm -rf /b/data /b/bin && ls -A /b > /b-listing\n\
             RUN --mount=type=bind,from=busybox:1.35,target=/img,rw rm /img/bin/busybox && echo gone > /img-done\n\
             RUN --mount=type=bind,from=base,source=/data,target=/d ls -A /d > /after-listing && cat /d/f > /after\n\
             RUN --mount=type=bind,from=busybox:1.35,target=/img test -f /img/bin/busybox && echo there > /img-after\n\
             COPY --from=base /data /copied\n",
        )],
    );
    let out = build_local(&k, &ctx, "out", &[]);
    assert_eq!(read(&out, "/seen"), "new\nextra\n");
    assert!(!read(&out, "/b-listing").contains("data"));
    assert_eq!(read(&out, "/img-done"), "gone\n");
    assert_eq!(read(&out, "/after-listing"), "f\n");
    assert_eq!(read(&out, "/after"), "orig\n");
    assert_eq!(read(&out, "/img-after"), "there\n");
    assert_eq!(read(&out, "/copied/f"), "orig\n");
    assert!(absent(&out, "/copied/g"));
    assert!(absent(&out, "/d") && absent(&out, "/b") && absent(&out, "/img"));
}

/// Item 3: a cache is one per id *and* uid/gid/mode, as BuildKit keys it
/// (`id` alone without ownership options; `id` and the folder made with
/// them otherwise): other ownership options start another, empty cache,
/// owned as asked, and the same options find their own cache again.
#[test]
fn a_cache_mount_is_one_cache_per_id_and_ownership() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35\n\
             RUN --mount=type=cache,id=c,target=/c echo root > /c/who\n\
             RUN --mount=type=cache,id=c,target=/c,uid=1000,gid=1001,mode=0750 \
                 stat -c '%u %g %a' /c > /own1 && ls -A /c > /list1 && echo u > /c/who\n\
             RUN --mount=type=cache,id=c,target=/c cat /c/who > /plain && stat -c '%u %g %a' /c > /plain-own\n\
             RUN --mount=type=cache,id=c,target=/other,uid=1000,gid=1001,mode=0750 \
                 cat /other/who > /owned && stat -c '%u %g %a' /other > /own2\n\
             RUN --mount=type=cache,id=c,target=/c,uid=1000,gid=1001,mode=0700 \
                 ls -A /c > /list-mode && stat -c '%u %g %a' /c > /own-mode\n\
             RUN --mount=type=cache,id=c,target=/c,uid=0 ls -A /c > /list-uid0\n\
             RUN --mount=type=cache,target=/t echo t > /t/f\n\
             RUN --mount=type=cache,target=/t,gid=5 ls -A /t > /t-list && stat -c '%u %g %a' /t > /t-own\n\
             RUN --mount=type=cache,target=/t cat /t/f > /t-again\n",
        )],
    );
    let out = build_local(&k, &ctx, "out", &[]);
    assert_eq!(read(&out, "/own1"), "1000 1001 750\n");
    assert_eq!(read(&out, "/list1"), "", "a new, empty cache");
    assert_eq!(read(&out, "/plain"), "root\n");
    assert_eq!(read(&out, "/plain-own"), "0 0 755\n");
    assert_eq!(
        read(&out, "/owned"),
        "u\n",
        "same id and ownership: same cache"
    );
    assert_eq!(read(&out, "/own2"), "1000 1001 750\n");
    assert_eq!(read(&out, "/list-mode"), "");
    assert_eq!(read(&out, "/own-mode"), "1000 1001 700\n");
    assert_eq!(
        read(&out, "/list-uid0"),
        "",
        "an explicit uid=0 is ownership given"
    );
    assert_eq!(read(&out, "/t-list"), "");
    assert_eq!(read(&out, "/t-own"), "0 5 755\n");
    assert_eq!(read(&out, "/t-again"), "t\n");
}

/// Item 3, `from`: a cache mount from a stage starts as the stage's folder
/// at `source` (a copy: the stage is never written), and is a cache of its
/// own, apart from the same id without `from`.
#[test]
fn a_cache_mount_from_a_stage_starts_with_its_content() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:1.35 AS seed\n\
             RUN mkdir -p /s && echo seeded > /s/f && chmod 0711 /s\n\
             FROM busybox:1.35\n\
             RUN --mount=type=cache,id=k,target=/c echo plain > /c/p\n\
             RUN --mount=type=cache,id=k,target=/c,from=seed,source=/s \
                 ls -A /c > /list && stat -c %a /c > /mode && echo added > /c/added\n\
             RUN --mount=type=cache,id=k,target=/c,from=seed,source=/s ls -A /c > /list2\n\
             RUN --mount=type=cache,id=k,target=/c ls -A /c > /plain-list\n\
             RUN --mount=type=bind,from=seed,source=/s,target=/b ls -A /b > /stage-list\n",
        )],
    );
    let out = build_local(&k, &ctx, "out", &[]);
    assert_eq!(read(&out, "/list"), "f\n");
    assert_eq!(read(&out, "/mode"), "711\n");
    assert_eq!(
        read(&out, "/list2"),
        "added\nf\n",
        "the seeded cache persists"
    );
    assert_eq!(
        read(&out, "/plain-list"),
        "p\n",
        "the plain cache is another"
    );
    assert_eq!(read(&out, "/stage-list"), "f\n", "the stage is untouched");
}

/// A relative bind, cache or tmpfs target is beneath WORKDIR, and a cache's
/// default id is its target as written, cleaned (BuildKit's path.Clean):
/// `c` in two working directories is one cache, as are `/abs/` and `/abs`.
#[test]
fn relative_targets_are_beneath_workdir_and_ids_are_the_cleaned_target() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[
            ("f.txt", "f\n"),
            (
                "Dockerfile",
                "FROM busybox:1.35\n\
                 WORKDIR /w\n\
                 RUN --mount=type=tmpfs,target=t touch /w/t/x && ls /w/t > /tl\n\
                 RUN --mount=type=bind,source=f.txt,target=sub/f.txt cat /w/sub/f.txt > /bf\n\
                 RUN --mount=type=cache,target=c echo 1 > /w/c/f\n\
                 WORKDIR /other\n\
                 RUN --mount=type=cache,target=c cat /other/c/f > /cf\n\
                 RUN --mount=type=cache,target=/abs/ echo a > /abs/a\n\
                 RUN --mount=type=cache,target=/abs ls /abs > /absl\n",
            ),
        ],
    );
    let out = build_local(&k, &ctx, "out", &[]);
    assert_eq!(read(&out, "/tl"), "x\n");
    assert_eq!(read(&out, "/bf"), "f\n");
    assert_eq!(read(&out, "/cf"), "1\n");
    assert_eq!(read(&out, "/absl"), "a\n");
    for p in ["/w/t", "/w/sub", "/w/c", "/other/c", "/abs", "/t", "/c"] {
        assert!(absent(&out, p), "{p} is in the image");
    }
    assert!(out.join("w").is_dir() && out.join("other").is_dir());
}

/// A bind of the build context sees it as BuildKit's local source has it:
/// no `.dockerignore`d paths, every file owned by root.
#[test]
fn a_bind_of_the_context_hides_ignored_files_and_host_owners() {
    let k = Kiln::with_busybox(KILN);
    let ctx = k.context(
        "ctx",
        &[
            (".dockerignore", "secret.env\nlogs/\n!logs/keep.log\n"),
            ("secret.env", "TOKEN=1\n"),
            ("ok.txt", "ok\n"),
            (
                "Dockerfile",
                "FROM busybox:1.35\n\
                 RUN --mount=type=bind,target=/c find /c | sort > /found && stat -c '%u %g' /c/ok.txt > /owner\n\
                 RUN --mount=type=bind,target=/c,rw find /c | sort > /found-rw\n",
            ),
        ],
    );
    std::fs::create_dir_all(ctx.join("logs")).unwrap();
    std::fs::write(ctx.join("logs/a.log"), "a").unwrap();
    std::fs::write(ctx.join("logs/keep.log"), "k").unwrap();
    std::os::unix::fs::lchown(ctx.join("ok.txt"), Some(1234), Some(5678)).unwrap();
    let out = build_local(&k, &ctx, "out", &[]);
    let want = "/c\n/c/.dockerignore\n/c/Dockerfile\n/c/logs\n/c/logs/keep.log\n/c/ok.txt\n";
    assert_eq!(read(&out, "/found"), want);
    assert_eq!(read(&out, "/found-rw"), want);
    assert_eq!(read(&out, "/owner"), "0 0\n");
}

//! One test per COPY/ADD rule of BuildKit that kiln reproduces, and one per
//! way out of a root that must stay shut (context symlinks, destination
//! symlinks, hostile archive entries and links). Real files in temp dirs,
//! real archives made with the real compressors.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_worker::fileops::{self, CopySpec, FileOpsError, Owner, SourceIds};

fn write(p: &Path, content: &str) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap();
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn spec(ctx: &Path, srcs: &[&str], root: &Path, dest: &str) -> CopySpec {
    CopySpec::new(
        ctx,
        srcs.iter().map(|s| s.to_string()).collect(),
        root,
        dest,
    )
}

fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap())
}

#[test]
fn a_directory_copies_its_contents_and_merges() {
    let (c, r) = dirs();
    write(&c.path().join("dir/x"), "x");
    write(&c.path().join("dir/sub/y"), "y");
    write(&r.path().join("existing/keep"), "keep");
    fileops::copy(&spec(c.path(), &["dir"], r.path(), "/copied")).unwrap();
    assert_eq!(read(&r.path().join("copied/x")), "x");
    assert_eq!(read(&r.path().join("copied/sub/y")), "y");
    assert!(!r.path().join("copied/dir").exists());
    fileops::copy(&spec(c.path(), &["dir/"], r.path(), "/existing")).unwrap();
    assert_eq!(read(&r.path().join("existing/keep")), "keep");
    assert_eq!(read(&r.path().join("existing/sub/y")), "y");
}

#[test]
fn trailing_slash_and_several_sources_make_a_directory() {
    let (c, r) = dirs();
    write(&c.path().join("a.txt"), "a");
    write(&c.path().join("b.txt"), "b");
    fileops::copy(&spec(c.path(), &["a.txt"], r.path(), "/d/")).unwrap();
    assert_eq!(read(&r.path().join("d/a.txt")), "a");
    fileops::copy(&spec(c.path(), &["a.txt"], r.path(), "/f")).unwrap();
    assert!(r.path().join("f").is_file());
    fileops::copy(&spec(c.path(), &["a.txt", "b.txt"], r.path(), "/m")).unwrap();
    assert_eq!(read(&r.path().join("m/b.txt")), "b");
    // A file copied onto an existing directory goes inside it.
    fileops::copy(&spec(c.path(), &["b.txt"], r.path(), "/d")).unwrap();
    assert_eq!(read(&r.path().join("d/b.txt")), "b");
    // An existing file is replaced.
    fileops::copy(&spec(c.path(), &["b.txt"], r.path(), "/f")).unwrap();
    assert_eq!(read(&r.path().join("f")), "b");
    // Relative destinations are relative to WORKDIR.
    let mut s = spec(c.path(), &["a.txt"], r.path(), "rel/");
    s.workdir = "/w".into();
    fileops::copy(&s).unwrap();
    assert_eq!(read(&r.path().join("w/rel/a.txt")), "a");
}

#[test]
fn a_directory_onto_a_file_is_an_error() {
    let (c, r) = dirs();
    write(&c.path().join("dir/x"), "x");
    write(&r.path().join("file"), "f");
    let err = fileops::copy(&spec(c.path(), &["dir"], r.path(), "/file")).unwrap_err();
    assert!(matches!(err, FileOpsError::NotADirectory { .. }), "{err}");
    assert_eq!(err.to_string(), "cannot copy to non-directory: /file");
}

#[test]
fn missing_parents_are_created_with_chown_and_chmod() {
    let (c, r) = dirs();
    write(&c.path().join("f"), "f");
    fileops::copy(&spec(c.path(), &["f"], r.path(), "/a/b/f")).unwrap();
    assert_eq!(mode(&r.path().join("a")), 0o755);
    assert_eq!(mode(&r.path().join("a/b")), 0o755);
    let mut s = spec(c.path(), &["f"], r.path(), "/p/q/f");
    s.owner = Some(Owner { uid: 300, gid: 400 });
    s.mode = Some(0o770.into());
    fileops::copy(&s).unwrap();
    for p in ["p", "p/q", "p/q/f"] {
        let md = fs::metadata(r.path().join(p)).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (300, 400, 0o770),
            "{p}"
        );
    }
}

#[test]
fn chmod_applies_to_directories_too() {
    let (c, r) = dirs();
    write(&c.path().join("dir/sub/f"), "f");
    let mut s = spec(c.path(), &["dir"], r.path(), "/d");
    s.mode = Some(0o750.into());
    fileops::copy(&s).unwrap();
    for p in ["d", "d/sub", "d/sub/f"] {
        assert_eq!(mode(&r.path().join(p)), 0o750, "{p}");
    }
}

#[test]
fn wildcards_are_filepath_match_and_may_match_nothing() {
    let (c, r) = dirs();
    write(&c.path().join("one.md"), "1");
    write(&c.path().join("two.md"), "2");
    write(&c.path().join("skip.mdx"), "x");
    write(&c.path().join("sub/dir1/dir2/foo"), "foo");
    write(&c.path().join("sub/deep.md"), "one level");
    write(&c.path().join("sub/x/deeper.md"), "two levels");
    fileops::copy(&spec(c.path(), &["*.md"], r.path(), "/docs/")).unwrap();
    let mut names: Vec<_> = fs::read_dir(r.path().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["one.md", "two.md"]);
    fileops::copy(&spec(c.path(), &["sub/*/dir2/foo"], r.path(), "/s2/")).unwrap();
    assert_eq!(read(&r.path().join("s2/foo")), "foo");
    // `**` is not special in sources: it is `*`, one path element.
    fileops::copy(&spec(c.path(), &["**/*.md"], r.path(), "/stars/")).unwrap();
    assert_eq!(read(&r.path().join("stars/deep.md")), "one level");
    assert!(!r.path().join("stars/deeper.md").exists());
    // Empty wildcards are allowed as the Dockerfile frontend allows them...
    fileops::copy(&spec(c.path(), &["one.md", "nomatch*"], r.path(), "/e/")).unwrap();
    assert_eq!(read(&r.path().join("e/one.md")), "1");
    // ...and refused, with BuildKit's words, when asked.
    let mut s = spec(c.path(), &["nomatch*"], r.path(), "/e/");
    s.allow_empty_wildcard = false;
    assert_eq!(
        fileops::copy(&s).unwrap_err().to_string(),
        "/nomatch* not found"
    );
}

#[test]
fn symlinks_inside_are_copied_top_level_ones_followed() {
    let (c, r) = dirs();
    write(&c.path().join("bar"), "bar-contents");
    symlink("bar", c.path().join("foo")).unwrap();
    write(&c.path().join("dir/real.txt"), "real");
    symlink("real.txt", c.path().join("dir/link.txt")).unwrap();
    symlink("/etc/passwd", c.path().join("dir/abs")).unwrap();
    fileops::copy(&spec(c.path(), &["foo"], r.path(), "/")).unwrap();
    let md = fs::symlink_metadata(r.path().join("foo")).unwrap();
    assert!(md.is_file());
    assert_eq!(read(&r.path().join("foo")), "bar-contents");
    fileops::copy(&spec(c.path(), &["dir"], r.path(), "/d")).unwrap();
    assert_eq!(
        fs::read_link(r.path().join("d/link.txt")).unwrap(),
        Path::new("real.txt")
    );
    assert_eq!(
        fs::read_link(r.path().join("d/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    // Through a symlinked directory of the context.
    symlink("dir", c.path().join("ldir")).unwrap();
    fileops::copy(&spec(c.path(), &["ldir/real.txt"], r.path(), "/through")).unwrap();
    assert_eq!(read(&r.path().join("through")), "real");
}

#[test]
fn hard_links_within_one_copy_are_kept() {
    let (c, r) = dirs();
    write(&c.path().join("d/a"), "same");
    fs::hard_link(c.path().join("d/a"), c.path().join("d/b")).unwrap();
    let rep = fileops::copy(&spec(c.path(), &["d"], r.path(), "/d")).unwrap();
    assert_eq!(rep.hardlinks, 1);
    let a = fs::metadata(r.path().join("d/a")).unwrap();
    let b = fs::metadata(r.path().join("d/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn ownership_modes_times_and_xattrs() {
    let (c, r) = dirs();
    let f = c.path().join("d/f");
    write(&f, "f");
    lchown(&f, Some(1234), Some(5678)).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4751)).unwrap();
    fileops::meta::lutimes(
        &f,
        fileops::Time {
            sec: 1_600_000_000,
            nsec: 0,
        },
        fileops::Time {
            sec: 1_600_000_000,
            nsec: 0,
        },
    )
    .unwrap();
    let xattr_ok = fileops::meta::set_xattr(&f, b"user.kiln", b"v").is_ok();
    // Context: root-owned, mode and mtime kept.
    fileops::copy(&spec(c.path(), &["d"], r.path(), "/ctx")).unwrap();
    let md = fs::metadata(r.path().join("ctx/f")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 0, 0o4751));
    assert_eq!(md.mtime(), 1_600_000_000);
    if xattr_ok {
        assert_eq!(
            fileops::meta::get_xattr(&r.path().join("ctx/f"), b"user.kiln").unwrap(),
            b"v"
        );
    }
    // Another stage or an image: owner kept.
    let mut s = spec(c.path(), &["d"], r.path(), "/img");
    s.source_ids = SourceIds::Preserve;
    fileops::copy(&s).unwrap();
    let md = fs::metadata(r.path().join("img/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    // --chown wins over both.
    s.owner = Some(Owner { uid: 7, gid: 8 });
    s.dest = "/own".into();
    fileops::copy(&s).unwrap();
    let md = fs::metadata(r.path().join("own/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (7, 8));
}

#[test]
fn parents_keep_paths_below_the_pivot() {
    let (c, r) = dirs();
    write(&c.path().join("x/y/a.txt"), "a");
    write(&c.path().join("x/y/b.txt"), "b");
    write(&c.path().join("x/z/c.txt"), "c");
    let mut s = spec(c.path(), &["x/./y/*.txt"], r.path(), "/p/");
    s.parents = true;
    fileops::copy(&s).unwrap();
    assert_eq!(read(&r.path().join("p/y/a.txt")), "a");
    assert_eq!(read(&r.path().join("p/y/b.txt")), "b");
    assert!(!r.path().join("p/x").exists());
    assert!(!r.path().join("p/z").exists());
    let mut s = spec(c.path(), &["x/**/c.txt"], r.path(), "/q/");
    s.parents = true;
    fileops::copy(&s).unwrap();
    assert_eq!(read(&r.path().join("q/x/z/c.txt")), "c");
    assert!(!r.path().join("q/x/y").exists());
    let mut s = spec(c.path(), &["x/nope.txt"], r.path(), "/q/");
    s.parents = true;
    assert!(matches!(
        fileops::copy(&s),
        Err(FileOpsError::NotFound { .. })
    ));
}

#[test]
fn exclude_with_reinclusion() {
    let (c, r) = dirs();
    write(&c.path().join("a.log"), "a");
    write(&c.path().join("keep.log"), "k");
    write(&c.path().join("logs/x.log"), "x");
    let mut s = spec(c.path(), &["."], r.path(), "/o/");
    s.exclude = vec!["*.log".into(), "!keep.log".into(), "logs".into()];
    fileops::copy(&s).unwrap();
    assert!(!r.path().join("o/a.log").exists());
    assert!(r.path().join("o/keep.log").exists());
    assert!(!r.path().join("o/logs").exists());
}

fn tar_bytes(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn entry(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(1234);
    h.set_gid(99);
    h.set_mtime(1_700_000_000);
    // Write names raw so hostile ones (`../x`, `/abs`) survive the builder.
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn simple_tar() -> Vec<u8> {
    tar_bytes(|b| {
        entry(b, tar::EntryType::Regular, "top.txt", "", b"top");
        entry(b, tar::EntryType::Regular, "sub/inner.txt", "", b"inner");
    })
}

#[test]
fn add_extracts_archives_detected_by_content() {
    let (c, r) = dirs();
    let plain = simple_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&plain).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&plain).unwrap();
    let zst = zstd::stream::encode_all(&plain[..], 1).unwrap();
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("plain.bin", plain.clone()),
        ("gzip.bin", gz.finish().unwrap()),
        ("bzip2.bin", bz.finish().unwrap()),
        ("xz.bin", xz.finish().unwrap()),
        ("zstd.bin", zst),
    ];
    for (name, data) in &kinds {
        fs::write(c.path().join(name), data).unwrap();
        let mut s = spec(c.path(), &[name], r.path(), &format!("/{name}.d"));
        s.unpack = true;
        let rep = fileops::copy(&s).unwrap();
        assert_eq!(rep.archives, 1, "{name}");
        let top = r.path().join(format!("{name}.d/top.txt"));
        assert_eq!(read(&top), "top", "{name}");
        let md = fs::metadata(&top).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mtime()),
            (1234, 99, 1_700_000_000),
            "{name}"
        );
        let implied = fs::metadata(r.path().join(format!("{name}.d/sub"))).unwrap();
        assert_eq!((implied.uid(), implied.mode() & 0o7777), (0, 0o755));
    }
    // --chown applies to every entry.
    let mut s = spec(c.path(), &["gzip.bin"], r.path(), "/owned/");
    s.unpack = true;
    s.owner = Some(Owner { uid: 5, gid: 6 });
    fileops::copy(&s).unwrap();
    let md = fs::metadata(r.path().join("owned/sub/inner.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (5, 6));
    // A name is not enough: this is copied, not extracted.
    fs::write(c.path().join("fake.tar.gz"), "not an archive").unwrap();
    let mut s = spec(c.path(), &["fake.tar.gz"], r.path(), "/fake/");
    s.unpack = true;
    fileops::copy(&s).unwrap();
    assert_eq!(read(&r.path().join("fake/fake.tar.gz")), "not an archive");
    // COPY never extracts.
    fileops::copy(&spec(c.path(), &["plain.bin"], r.path(), "/copied/")).unwrap();
    assert_eq!(fs::read(r.path().join("copied/plain.bin")).unwrap(), plain);
}

fn add_tar(
    tar: Vec<u8>,
) -> (
    tempfile::TempDir,
    tempfile::TempDir,
    Result<fileops::CopyReport, FileOpsError>,
) {
    let (c, r) = dirs();
    fs::write(c.path().join("evil.tar"), tar).unwrap();
    let mut s = spec(c.path(), &["evil.tar"], r.path(), "/x/");
    s.unpack = true;
    let res = fileops::copy(&s);
    (c, r, res)
}

#[test]
fn escape_tar_dotdot_entries_are_refused() {
    let host = tempfile::tempdir().unwrap();
    let name = format!("../../../../../../..{}/pwned", host.path().display());
    let t = tar_bytes(|b| entry(b, tar::EntryType::Regular, &name, "", b"x"));
    let (_c, _r, res) = add_tar(t);
    assert!(matches!(res, Err(FileOpsError::Breakout { .. })), "{res:?}");
    assert!(!host.path().join("pwned").exists());
}

#[test]
fn escape_tar_absolute_entries_stay_inside() {
    let t = tar_bytes(|b| entry(b, tar::EntryType::Regular, "/abs.txt", "", b"x"));
    let (_c, r, res) = add_tar(t);
    res.unwrap();
    assert_eq!(read(&r.path().join("x/abs.txt")), "x");
}

#[test]
fn escape_tar_symlink_then_file_through_it() {
    let host = tempfile::tempdir().unwrap();
    let h = host.path().display().to_string();
    // Absolute symlink: followed inside the destination, like a chroot.
    let t = tar_bytes(|b| {
        entry(b, tar::EntryType::Symlink, "link", &h, b"");
        entry(b, tar::EntryType::Regular, "link/through.txt", "", b"x");
    });
    let (_c, r, res) = add_tar(t);
    res.unwrap();
    assert!(!host.path().join("through.txt").exists());
    assert_eq!(
        read(
            &r.path()
                .join("x")
                .join(h.trim_start_matches('/'))
                .join("through.txt")
        ),
        "x"
    );
    // Relative symlink climbing out: refused.
    let rel = format!("../../../../../../..{h}");
    let t = tar_bytes(|b| {
        entry(b, tar::EntryType::Symlink, "up", &rel, b"");
        entry(b, tar::EntryType::Regular, "up/through.txt", "", b"x");
    });
    let (_c, _r, res) = add_tar(t);
    assert!(matches!(res, Err(FileOpsError::Breakout { .. })), "{res:?}");
    assert!(!host.path().join("through.txt").exists());
    // A file over a symlink replaces the symlink, never writes through it.
    let victim = host.path().join("victim");
    fs::write(&victim, "safe").unwrap();
    let t = tar_bytes(|b| {
        entry(
            b,
            tar::EntryType::Symlink,
            "s",
            &victim.display().to_string(),
            b"",
        );
        entry(b, tar::EntryType::Regular, "s", "", b"overwritten");
    });
    let (_c, r, res) = add_tar(t);
    res.unwrap();
    assert_eq!(read(&victim), "safe");
    assert_eq!(read(&r.path().join("x/s")), "overwritten");
}

#[test]
fn escape_tar_hard_links() {
    // Climbing out: refused.
    let t = tar_bytes(|b| {
        entry(
            b,
            tar::EntryType::Link,
            "hl",
            "../../../../../../../etc/passwd",
            b"",
        )
    });
    let (_c, _r, res) = add_tar(t);
    assert!(matches!(res, Err(FileOpsError::Breakout { .. })), "{res:?}");
    // Absolute: inside the destination.
    let host_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let t = tar_bytes(|b| {
        entry(b, tar::EntryType::Regular, "etc/passwd", "", b"inside");
        entry(b, tar::EntryType::Link, "hl", "/etc/passwd", b"");
    });
    let (_c, r, res) = add_tar(t);
    res.unwrap();
    assert_eq!(read(&r.path().join("x/hl")), "inside");
    assert_eq!(
        fs::metadata(r.path().join("x/hl")).unwrap().ino(),
        fs::metadata(r.path().join("x/etc/passwd")).unwrap().ino()
    );
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), host_links);
    // Through a symlink pointing out: resolved inside, so nothing to link.
    let t = tar_bytes(|b| {
        entry(b, tar::EntryType::Symlink, "etcl", "/etc", b"");
        entry(b, tar::EntryType::Link, "hl2", "etcl/shadow", b"");
    });
    let (_c, r, res) = add_tar(t);
    assert!(res.is_err());
    assert!(!r.path().join("x/hl2").exists());
}

#[test]
fn escape_context_symlink_to_shadow_copies_the_link() {
    let (c, r) = dirs();
    symlink("/etc/shadow", c.path().join("shadow")).unwrap();
    symlink("../../../../../../../etc", c.path().join("up")).unwrap();
    fileops::copy(&spec(c.path(), &["."], r.path(), "/ctx/")).unwrap();
    assert_eq!(
        fs::read_link(r.path().join("ctx/shadow")).unwrap(),
        Path::new("/etc/shadow")
    );
    // Followed at the top, it resolves inside the context: not there.
    let err = fileops::copy(&spec(c.path(), &["shadow"], r.path(), "/s")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to calculate checksum: \"/shadow\": not found"
    );
    let err = fileops::copy(&spec(c.path(), &["up/shadow"], r.path(), "/s")).unwrap_err();
    assert!(matches!(err, FileOpsError::NotFound { .. }), "{err}");
    assert!(!r.path().join("s").exists());
    // Nor does a wildcard leave the context: `up` is the context's /etc.
    let err = fileops::copy(&spec(c.path(), &["up/sha*"], r.path(), "/w/")).unwrap_err();
    assert!(matches!(err, FileOpsError::NotFound { .. }), "{err}");
    assert!(!r.path().join("w/shadow").exists());
}

#[test]
fn escape_destination_symlinks_resolve_in_the_root() {
    let (c, r) = dirs();
    let host = tempfile::tempdir().unwrap();
    write(&c.path().join("f"), "f");
    symlink(host.path(), r.path().join("abs")).unwrap();
    symlink("../../../../../../..", r.path().join("rel")).unwrap();
    fileops::copy(&spec(c.path(), &["f"], r.path(), "/abs/")).unwrap();
    fileops::copy(&spec(c.path(), &["f"], r.path(), "/rel/tmp/")).unwrap();
    assert!(!host.path().join("f").exists());
    assert!(r
        .path()
        .join(host.path().strip_prefix("/").unwrap())
        .join("f")
        .exists());
    assert!(r.path().join("tmp/f").exists());
}

#[test]
fn chown_resolves_in_the_destination_not_through_its_symlinks() {
    let r = tempfile::tempdir().unwrap();
    fs::create_dir(r.path().join("etc")).unwrap();
    // An image whose passwd points at the host's: read inside the image.
    symlink("/etc/passwd", r.path().join("etc/passwd.link")).unwrap();
    fs::rename(
        r.path().join("etc/passwd.link"),
        r.path().join("etc/passwd"),
    )
    .unwrap();
    // The image has no /etc/group: BuildKit's default, not the host's
    // daemon group.
    assert_eq!(
        fileops::resolve_chown("root:daemon", r.path()).unwrap(),
        Owner { uid: 0, gid: 0 }
    );
    assert_eq!(
        fileops::resolve_chown("10:20", r.path()).unwrap(),
        Owner { uid: 10, gid: 20 }
    );
}

#[test]
fn checksums_cover_exactly_what_is_copied() {
    let c = tempfile::tempdir().unwrap();
    write(&c.path().join("src/a.txt"), "a");
    write(&c.path().join("src/b.tmp"), "b");
    write(&c.path().join("other"), "o");
    let memo = fileops::ChecksumMemo::new();
    let srcs = vec!["src".to_string()];
    let opts = fileops::checksum::ChecksumOptions {
        exclude: vec!["*.tmp".into()],
        ..Default::default()
    };
    let sum = || fileops::checksum_sources(c.path(), &srcs, &opts, &memo).unwrap();
    let first = sum();
    assert_eq!(memo.files_read(), 1);
    assert_eq!(sum(), first);
    assert_eq!(memo.files_read(), 1, "unchanged files are not re-read");
    // Excluded or unrelated files do not matter.
    write(&c.path().join("src/b.tmp"), "changed");
    write(&c.path().join("other"), "changed");
    assert_eq!(sum(), first);
    // A touch alone does not matter (mtime is not content).
    fileops::meta::lutimes(
        &c.path().join("src/a.txt"),
        fileops::Time {
            sec: 1_000_000,
            nsec: 0,
        },
        fileops::Time {
            sec: 1_000_000,
            nsec: 0,
        },
    )
    .unwrap();
    assert_eq!(sum(), first);
    // Content, mode and new files do.
    write(&c.path().join("src/a.txt"), "A");
    let second = sum();
    assert_ne!(second, first);
    fs::set_permissions(
        c.path().join("src/a.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let third = sum();
    assert_ne!(third, second);
    write(&c.path().join("src/new"), "n");
    assert_ne!(sum(), third);
    // Ownership as copied: --chown changes the key.
    let owned = fileops::checksum::ChecksumOptions {
        owner: Some(Owner { uid: 1, gid: 1 }),
        ..opts.clone()
    };
    assert_ne!(
        fileops::checksum_sources(c.path(), &srcs, &owned, &memo).unwrap(),
        sum()
    );
}

#[test]
fn symbolic_chmod_uses_each_entrys_mode() {
    let (c, r) = dirs();
    write(&c.path().join("d/plain"), "p");
    write(&c.path().join("d/tool"), "t");
    fs::set_permissions(c.path().join("d/plain"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(c.path().join("d/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(c.path().join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    write(&c.path().join("d/sub/x"), "x");
    fs::set_permissions(c.path().join("d/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    let mut s = spec(c.path(), &["d"], r.path(), "/o");
    s.mode = Some(fileops::Chmod::parse("u=rwX,go=rX").unwrap());
    fileops::copy(&s).unwrap();
    assert_eq!(mode(&r.path().join("o/plain")), 0o644);
    assert_eq!(mode(&r.path().join("o/tool")), 0o755);
    assert_eq!(mode(&r.path().join("o/sub")), 0o755);
    assert!(fileops::Chmod::parse("64a")
        .unwrap_err()
        .to_string()
        .contains("it should be octal string and between 0 and 07777"));
}

#[test]
fn mtimes_as_buildkit_sets_them() {
    let (c, r) = dirs();
    write(&c.path().join("dir/f"), "f");
    let t = fileops::Time {
        sec: 1_500_000_000,
        nsec: 0,
    };
    fileops::meta::lutimes(&c.path().join("dir/f"), t, t).unwrap();
    fileops::meta::lutimes(&c.path().join("dir"), t, t).unwrap();
    fileops::copy(&spec(c.path(), &["dir"], r.path(), "/a/new")).unwrap();
    // Files keep theirs; the destination directory takes the source
    // directory's; parents the copy had to create are new.
    assert_eq!(
        fs::metadata(r.path().join("a/new/f")).unwrap().mtime(),
        t.sec
    );
    assert_eq!(fs::metadata(r.path().join("a/new")).unwrap().mtime(), t.sec);
    assert_ne!(fs::metadata(r.path().join("a")).unwrap().mtime(), t.sec);
    // SOURCE_DATE_EPOCH-style fixed time applies to everything written.
    let mut s = spec(c.path(), &["dir"], r.path(), "/b/new");
    let fixed = fileops::Time { sec: 42, nsec: 0 };
    s.timestamp = Some(fixed);
    fileops::copy(&s).unwrap();
    for p in ["b", "b/new", "b/new/f"] {
        assert_eq!(fs::metadata(r.path().join(p)).unwrap().mtime(), 42, "{p}");
    }
}

#[test]
fn mkdir_mkfile_rm_stay_in_the_root() {
    let r = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    symlink(host.path(), r.path().join("out")).unwrap();
    // WORKDIR through a symlink pointing out lands inside.
    fileops::mkdir(
        r.path(),
        "/out/app/sub",
        0o755,
        true,
        Some(Owner { uid: 3, gid: 4 }),
        None,
    )
    .unwrap();
    assert!(!host.path().join("app").exists());
    let inside = r
        .path()
        .join(host.path().strip_prefix("/").unwrap())
        .join("app/sub");
    let md = fs::metadata(&inside).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (3, 4, 0o755));
    fileops::mkdir(r.path(), "/out/app/sub", 0o700, false, None, None).unwrap();
    // Heredoc file: new gets the mode, an existing one keeps its own.
    fileops::mkfile(r.path(), "/w/script.sh", b"echo hi\n", 0o755, None, None).unwrap_err();
    fileops::mkdir(r.path(), "/w", 0o755, true, None, None).unwrap();
    fileops::mkfile(r.path(), "/w/script.sh", b"echo hi\n", 0o755, None, None).unwrap();
    assert_eq!(mode(&r.path().join("w/script.sh")), 0o755);
    fileops::mkfile(r.path(), "/w/script.sh", b"echo bye\n", 0o600, None, None).unwrap();
    assert_eq!(read(&r.path().join("w/script.sh")), "echo bye\n");
    assert_eq!(mode(&r.path().join("w/script.sh")), 0o755);
    // rm removes a symlink, not what it points to.
    write(&host.path().join("precious"), "p");
    fileops::rm(r.path(), "/out", false, false).unwrap();
    assert!(host.path().join("precious").exists());
    assert!(fs::symlink_metadata(r.path().join("out")).is_err());
    assert!(matches!(
        fileops::rm(r.path(), "/nope", false, false),
        Err(FileOpsError::NotFound { .. })
    ));
    fileops::rm(r.path(), "/nope", true, false).unwrap();
    fileops::rm(r.path(), "/w/*.sh", false, true).unwrap();
    assert!(!r.path().join("w/script.sh").exists());
}

//! The FUSE overlay against the kernel's: the same operations over the
//! same lower layers must leave upper dirs that diff to the same layer,
//! and the merged view must behave as overlayfs does (whiteouts, opaque
//! dirs, renames, hard links, xattrs, mmap writes, devices, many readers).
//! Needs root and /dev/fuse, as kiln's FUSE snapshotter does.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_worker::diff::{write_layer, Compression, DiffOptions};
use kiln_worker::fuse_overlay;
use kiln_worker::snapshot::{mount_overlay, OPAQUE_XATTR};

fn root_with_fuse() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root || fuse_overlay::usable().is_err() {
        eprintln!("skipped: needs root and /dev/fuse");
        return false;
    }
    true
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// xattrs through python3 (no unsafe in tests, no attr package needed).
fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let py = format!(
        "import os,sys\ntry:\n sys.stdout.buffer.write(os.getxattr({:?},{:?},follow_symlinks=False))\nexcept OSError:\n sys.exit(3)",
        path.to_str().unwrap(),
        name
    );
    let out = Command::new("python3").arg("-c").arg(py).output().unwrap();
    out.status.success().then_some(out.stdout)
}

fn set_xattr(path: &Path, name: &str, value: &str) {
    let py = format!(
        "import os\nos.setxattr({:?},{:?},{:?}.encode(),follow_symlinks=False)",
        path.to_str().unwrap(),
        name,
        value
    );
    let st = Command::new("python3").arg("-c").arg(py).status().unwrap();
    assert!(st.success(), "setxattr {name} on {}", path.display());
}

/// Two overlay-native lower layers (lowest first).
fn lowers(base: &Path) -> Vec<PathBuf> {
    let l0 = base.join("l0");
    let l1 = base.join("l1");
    for d in [
        "a/sub",
        "mv/inner/deep",
        "opq",
        "del",
        "rmd",
        "etc",
        "opq2",
        "meta",
    ] {
        std::fs::create_dir_all(l0.join(d)).unwrap();
    }
    std::fs::write(l0.join("a/f1"), "f1").unwrap();
    std::fs::write(l0.join("a/sub/g"), "g").unwrap();
    std::fs::write(l0.join("mv/inner/file"), "moved").unwrap();
    std::fs::write(l0.join("mv/inner/deep/x"), "x").unwrap();
    std::fs::write(l0.join("mv/top"), "top").unwrap();
    std::fs::write(l0.join("opq/old1"), "o").unwrap();
    std::fs::write(l0.join("opq/old2"), "o").unwrap();
    std::fs::write(l0.join("opq2/old"), "o").unwrap();
    std::fs::write(l0.join("del/file"), "d").unwrap();
    std::fs::write(l0.join("rmd/x"), "x").unwrap();
    std::fs::write(l0.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(l0.join("hl1"), "linked").unwrap();
    std::fs::hard_link(l0.join("hl1"), l0.join("hl2")).unwrap();
    std::fs::write(l0.join("xf"), "xattrs").unwrap();
    std::fs::write(l0.join("mm"), vec![b'.'; 8192]).unwrap();
    std::fs::write(l0.join("gone"), "gone").unwrap();
    std::fs::write(l0.join("meta/f"), "meta").unwrap();
    std::os::unix::fs::symlink("a/sub/g", l0.join("lnk")).unwrap();
    set_xattr(&l0.join("xf"), "user.lower", "kept");
    // The upper layer deletes `gone`, makes opq2 opaque with new content.
    std::fs::create_dir_all(l1.join("opq2")).unwrap();
    std::fs::write(l1.join("opq2/new"), "n").unwrap();
    set_xattr(&l1.join("opq2"), OPAQUE_XATTR, "y");
    sh(&format!("mknod {} c 0 0", l1.join("gone").display()));
    std::fs::write(l1.join("top"), "t").unwrap();
    for l in [&l0, &l1] {
        sh(&format!(
            "touch -h -d @1000000 $(find {} -mindepth 1)",
            l.display()
        ));
    }
    vec![l0, l1]
}

/// The operations script, run on a merged view.
fn ops(m: &Path) {
    let p = |s: &str| m.join(s);
    // Deletes: a lower file, a lower tree.
    std::fs::remove_file(p("a/f1")).unwrap();
    std::fs::remove_dir_all(p("rmd")).unwrap();
    std::fs::remove_file(p("del/file")).unwrap();
    // rm -rf and recreate: an opaque dir.
    std::fs::remove_dir_all(p("opq")).unwrap();
    std::fs::create_dir(p("opq")).unwrap();
    std::fs::write(p("opq/new"), "new").unwrap();
    // Rename of a lower dir (EXDEV for rename(2): mv copies) and a file.
    sh(&format!(
        "mv {} {}",
        p("mv").display(),
        p("moved").display()
    ));
    std::fs::rename(p("a/sub/g"), p("a/g-renamed")).unwrap();
    // A new dir renamed into place.
    std::fs::create_dir_all(p("fresh/in")).unwrap();
    std::fs::write(p("fresh/in/f"), "f").unwrap();
    std::fs::rename(p("fresh"), p("fresh2")).unwrap();
    // Modify a file (copy-up keeps the parent's times).
    std::fs::write(p("etc/passwd"), "root:x:0:0::/root:/bin/bash\n").unwrap();
    // Hard links: one name of a lower pair written; a new pair in the upper.
    std::fs::write(p("hl1"), "linked-changed").unwrap();
    std::fs::write(p("n1"), "new link").unwrap();
    std::fs::hard_link(p("n1"), p("n2")).unwrap();
    // Metadata only: chmod, chown, utimes, xattrs.
    std::fs::set_permissions(p("meta/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::lchown(p("meta"), Some(1000), Some(1000)).unwrap();
    sh(&format!("touch -d @2000000 {}", p("a").display()));
    set_xattr(&p("xf"), "user.added", "v");
    set_xattr(&p("a"), "user.dir", "d");
    // mmap writes.
    let py = format!(
        "import mmap\nf=open('{}','r+b')\nm=mmap.mmap(f.fileno(),0)\nm[100:105]=b'MMAP!'\nm.flush()\nm.close()\nf.close()",
        p("mm").display()
    );
    let st = Command::new("python3").arg("-c").arg(py).status().unwrap();
    assert!(st.success(), "mmap write");
    // Devices, fifos, symlinks.
    sh(&format!("mknod {} c 1 3", p("null").display()));
    sh(&format!("mkfifo {}", p("fifo").display()));
    std::os::unix::fs::symlink("/etc/passwd", p("abs-link")).unwrap();
    // Create over a whiteout of a lower layer.
    std::fs::write(p("gone"), "back").unwrap();
    // A dir deleted then recreated as a file, a file recreated as a dir.
    std::fs::remove_dir_all(p("opq2")).unwrap();
    std::fs::write(p("opq2"), "now a file").unwrap();
    std::fs::remove_file(p("xf")).unwrap();
    std::fs::create_dir(p("xf")).unwrap();
    std::fs::write(p("xf/inside"), "i").unwrap();
}

/// Entries of a layer tar, without times: (name → type, mode, owner,
/// size, content, link, xattrs).
fn entries(tar_bytes: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let h = e.header().clone();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut xattrs = Vec::new();
        if let Ok(Some(ext)) = e.pax_extensions() {
            for x in ext.flatten() {
                xattrs.push(format!("{}={:?}", x.key().unwrap_or(""), x.value_bytes()));
            }
        }
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        out.insert(
            name,
            format!(
                "{:?} {:o} {}:{} {} {:?} {link} {:?} {:?}",
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.size().unwrap(),
                String::from_utf8_lossy(&content),
                h.device_major().ok().flatten(),
                xattrs
            ),
        );
    }
    out
}

fn diff(upper: &Path, lowers: &[PathBuf]) -> BTreeMap<String, String> {
    let o = DiffOptions {
        exclude: vec![],
        lowers: lowers.to_vec(),
    };
    let (_, tar) = write_layer(upper, &o, Compression::None, Vec::new()).unwrap();
    entries(&tar)
}

struct Dirs {
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

fn dirs(base: &Path, name: &str) -> Dirs {
    let d = Dirs {
        upper: base.join(name).join("upper"),
        work: base.join(name).join("work"),
        merged: base.join(name).join("merged"),
    };
    for p in [&d.upper, &d.work, &d.merged] {
        std::fs::create_dir_all(p).unwrap();
    }
    d
}

#[test]
fn the_upper_dir_diffs_as_kernel_overlays_does() {
    if !root_with_fuse() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lowers = lowers(t.path());

    let k = dirs(t.path(), "kernel");
    let km = mount_overlay(&lowers, &k.upper, &k.work, &k.merged).unwrap();
    ops(&k.merged);
    km.unmount().unwrap();

    let f = dirs(t.path(), "fuse");
    let fm = fuse_overlay::mount_in_process(&lowers, &f.upper, &f.merged).unwrap();
    ops(&f.merged);
    // The merged view as overlay shows it.
    let m = &f.merged;
    assert!(!m.join("a/f1").exists());
    assert!(!m.join("gone/x").exists());
    assert_eq!(std::fs::read_to_string(m.join("gone")).unwrap(), "back");
    assert_eq!(
        std::fs::read_to_string(m.join("moved/inner/deep/x")).unwrap(),
        "x"
    );
    assert!(!m.join("mv").exists());
    let opq: Vec<_> = std::fs::read_dir(m.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(opq, ["new"]);
    let hl1 = std::fs::metadata(m.join("hl1")).unwrap();
    let hl2 = std::fs::metadata(m.join("hl2")).unwrap();
    assert_eq!(
        std::fs::read_to_string(m.join("hl2")).unwrap(),
        "linked",
        "copy-up breaks a lower link, as overlay without index does"
    );
    assert_eq!(hl1.nlink(), 1);
    assert_eq!(hl2.nlink(), 2);
    let n1 = std::fs::metadata(m.join("n1")).unwrap();
    assert_eq!(n1.nlink(), 2, "a link made in the upper dir is a real one");
    std::fs::write(m.join("n2"), "through the other name").unwrap();
    assert_eq!(
        std::fs::read_to_string(m.join("n1")).unwrap(),
        "through the other name"
    );
    std::fs::write(m.join("n2"), "new link").unwrap();
    assert_eq!(
        getxattr(&m.join("a"), "user.dir").as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(getxattr(&m.join("xf/inside"), "user.lower"), None);
    let mm = std::fs::read(m.join("mm")).unwrap();
    assert_eq!(&mm[100..105], b"MMAP!");
    assert_eq!(mm.len(), 8192);
    let null = std::fs::symlink_metadata(m.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc_makedev(1, 3));
    assert!(std::fs::symlink_metadata(m.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::metadata(m.join("meta/f")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(m.join("lnk")).unwrap(),
        Path::new("a/sub/g")
    );
    fm.unmount().unwrap();

    // The upper dir is overlay-native.
    let wh = std::fs::symlink_metadata(f.upper.join("a/f1")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        getxattr(&f.upper.join("opq"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert!(
        !f.upper.join("lnk").exists(),
        "untouched entries stay below"
    );

    let kd = diff(&k.upper, &lowers);
    let fd = diff(&f.upper, &lowers);
    for (name, e) in &kd {
        assert_eq!(fd.get(name), Some(e), "entry {name}");
    }
    assert_eq!(kd, fd);
    assert!(kd.contains_key("a/.wh.f1"), "{kd:#?}");
    assert!(kd.contains_key("opq/.wh..wh..opq"), "{kd:#?}");
    assert!(
        kd.contains_key("mv/.wh..wh..opq") || kd.contains_key(".wh.mv"),
        "{kd:#?}"
    );
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | (minor & 0xff) | ((major & !0xfff) << 32) | ((minor & !0xff) << 12)
}

#[test]
fn many_readers_at_once() {
    if !root_with_fuse() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l0 = t.path().join("l0");
    std::fs::create_dir_all(&l0).unwrap();
    for i in 0..64 {
        std::fs::write(l0.join(format!("f{i}")), vec![i as u8; 100_000 + i]).unwrap();
    }
    let d = dirs(t.path(), "fuse");
    let m = fuse_overlay::mount_in_process(&[l0], &d.upper, &d.merged).unwrap();
    let merged = d.merged.clone();
    let threads: Vec<_> = (0..16)
        .map(|k| {
            let merged = merged.clone();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let i = (k * 7 + round * 3) % 64;
                    let data = std::fs::read(merged.join(format!("f{i}"))).unwrap();
                    assert_eq!(data.len(), 100_000 + i);
                    assert!(data.iter().all(|b| *b == i as u8));
                    if round % 5 == 0 {
                        let n = std::fs::read_dir(&merged).unwrap().count();
                        assert_eq!(n, 64);
                    }
                }
            })
        })
        .collect();
    // A writer at the same time: copy-up while others read.
    std::fs::write(merged.join("f1"), vec![1u8; 100_001]).unwrap();
    for th in threads {
        th.join().unwrap();
    }
    m.unmount().unwrap();
}

#[test]
fn readers_of_a_file_see_a_later_copy_up() {
    if !root_with_fuse() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l0 = t.path().join("l0");
    std::fs::create_dir_all(&l0).unwrap();
    std::fs::write(l0.join("f"), "old content").unwrap();
    let d = dirs(t.path(), "fuse");
    let m = fuse_overlay::mount_in_process(std::slice::from_ref(&l0), &d.upper, &d.merged).unwrap();
    let mut reader = std::fs::File::open(d.merged.join("f")).unwrap();
    std::fs::write(d.merged.join("f"), "new content").unwrap();
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(s, "new content");
    assert_eq!(
        std::fs::read_to_string(l0.join("f")).unwrap(),
        "old content"
    );
    drop(reader);
    m.unmount().unwrap();
}

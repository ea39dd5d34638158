//! The other processes of the store's multi-process tests (store_blobs.rs,
//! registry_badinput.rs): a program of its own, so those tests start it by
//! path (`CARGO_BIN_EXE_kiln-cache-test-child`) instead of re-running their
//! own test binary with a filter.
//!
//! ```text
//! kiln-cache-test-child write ROOT ID   # write one blob 5 times, name it proc/nID:t 20 times
//! kiln-cache-test-child hang ROOT       # start a blob, print "ready", sleep 60 s
//! kiln-cache-test-child pull ROOT REF   # pull REF into ROOT
//! ```

use std::io::Write;
use std::sync::Arc;

use kiln_cache::registry::{self, NoProgress, PullOptions};
use kiln_cache::{Digest, Reference, Root};

/// The same bytes as store_blobs.rs's `content`, which checks them.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, root) = match args.as_slice() {
        [mode, root, ..] => (mode.as_str(), Root::open(root).expect("open")),
        _ => {
            eprintln!("usage: kiln-cache-test-child write|hang|pull ROOT [ID|REF]");
            std::process::exit(2);
        }
    };
    match (mode, args.get(2)) {
        ("write", Some(id)) => write(&root, id),
        ("hang", None) => hang(&root),
        ("pull", Some(name)) => pull(&root, name),
        _ => {
            eprintln!("kiln-cache-test-child: bad arguments {args:?}");
            std::process::exit(2);
        }
    }
}

fn write(root: &Root, id: &str) {
    let data = content(5, 4 * 1024 * 1024);
    let d = Digest::of(&data);
    for _ in 0..5 {
        let mut w = root
            .blobs()
            .writer(Some(&d), Some(data.len() as u64))
            .expect("writer");
        for chunk in data.chunks(100_003) {
            w.write_all(chunk).expect("write");
        }
        w.commit().expect("commit");
    }
    let r = Reference::parse(&format!("proc/n{id}:t")).expect("ref");
    let desc =
        kiln_cache::image::descriptor(kiln_cache::media::OCI_MANIFEST, &d, data.len() as u64);
    for _ in 0..20 {
        root.images().set(&r, desc.clone()).expect("set");
    }
}

fn hang(root: &Root) {
    let mut w = root.blobs().writer(None, None).expect("writer");
    w.write_all(&content(6, 1_000_000)).expect("write");
    w.flush().expect("flush");
    println!("ready");
    std::io::stdout().flush().expect("flush");
    std::thread::sleep(std::time::Duration::from_secs(60));
}

fn pull(root: &Root, name: &str) {
    let r = Reference::parse(name).expect("reference");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(registry::pull(
            root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .expect("pull");
}

//! Hostile and broken registries: wrong digests, wrong sizes, and a pull
//! killed with SIGKILL halfway through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_cache::registry::{self, NoProgress, PullOptions, RegistryError};
use kiln_cache::{Reference, Root};
use kiln_testsupport::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Files left in the store's scratch folder.
fn leftovers(root: &Root) -> Vec<String> {
    match std::fs::read_dir(root.tmp_dir()) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_untouched(root: &Root) {
    assert!(
        root.blobs().list().unwrap().is_empty(),
        "blobs were stored: {:?}",
        root.blobs().list()
    );
    assert!(root.images().list().unwrap().is_empty(), "a name was set");
    assert!(
        leftovers(root).is_empty(),
        "temp files left: {:?}",
        leftovers(root)
    );
}

#[test]
fn wrong_digest_or_size_is_rejected_and_nothing_is_stored() {
    let rt = rt();
    // Same length, other bytes: only the digest can tell.
    let (routes, _md, ld) = tiny_image(
        "evil/app",
        "v1",
        b"the real layer",
        Some(b"the fake layer".to_vec()),
    );
    let fake = FakeRegistry::start(routes);
    let r = Reference::parse(&format!("{}/evil/app:v1", fake.addr)).unwrap();
    let (_d, root) = temp_root();
    let err = rt
        .block_on(registry::pull(
            &root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&fake.addr) && msg.contains("evil/app:v1") && msg.contains(&ld),
        "{msg}"
    );
    assert_untouched(&root);

    // More bytes than announced.
    let (routes, _, _) = tiny_image("evil/app", "v2", b"short", Some(vec![b'x'; 1 << 20]));
    let fake = FakeRegistry::start(routes);
    let r = Reference::parse(&format!("{}/evil/app:v2", fake.addr)).unwrap();
    let err = rt
        .block_on(registry::pull(
            &root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err}");
    assert_untouched(&root);

    // A manifest asked for by digest that hashes to something else.
    let (mut routes, md, _) = tiny_image("evil/app", "v3", b"layer", None);
    for route in routes.iter_mut() {
        if route.path.ends_with(&md) {
            route.body.push(b' ');
        }
    }
    let fake = FakeRegistry::start(routes);
    let r = Reference::parse(&format!("{}/evil/app@{md}", fake.addr)).unwrap();
    let err = rt
        .block_on(registry::pull(
            &root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&md), "{err}");
    assert_untouched(&root);

    // Sanity: the honest image pulls.
    let (routes, md, _) = tiny_image("good/app", "v1", b"the real layer", None);
    let fake = FakeRegistry::start(routes);
    let r = Reference::parse(&format!("{}/good/app:v1", fake.addr)).unwrap();
    let got = rt
        .block_on(registry::pull(
            &root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), md);
    assert_eq!(root.blobs().list().unwrap().len(), 3);
}

#[test]
fn pull_killed_midway_leaves_a_store_the_next_pull_completes() {
    // 8 MiB served 64 KiB per 20 ms: about 2.6 s per pull.
    let layer: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (mut routes, md, ld) = tiny_image("slow/app", "v1", &layer, None);
    for route in routes.iter_mut() {
        if route.path.ends_with(&ld) {
            route.delay_per_64k = Duration::from_millis(20);
        }
    }
    let fake = FakeRegistry::start(routes);
    let name = format!("{}/slow/app:v1", fake.addr);
    let dir = tempfile::tempdir().unwrap();
    let root = Root::open(dir.path()).unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-cache-test-child"))
        .arg("pull")
        .arg(dir.path())
        .arg(&name)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the layer is partly written, then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let partial: u64 = std::fs::read_dir(root.tmp_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if partial > (1 << 20) {
            break;
        }
        assert!(Instant::now() < deadline, "the child never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let r = Reference::parse(&name).unwrap();
    assert!(
        root.images().get(&r).unwrap().is_none(),
        "no name for a half-pulled image"
    );
    assert!(
        !root.blobs().has(&ld.parse().unwrap()),
        "no half-written blob is visible"
    );
    assert!(
        !leftovers(&root).is_empty(),
        "the killed writer left its temp file behind"
    );

    // The next kiln process opens the store (cleaning the dead writer's
    // temp file) and pulls to the end.
    let root = Root::open(dir.path()).unwrap();
    let got = rt()
        .block_on(registry::pull(
            &root,
            &r,
            &PullOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(got.digest().to_string(), md);
    assert_eq!(root.blobs().read(&ld.parse().unwrap()).unwrap(), layer);
    assert!(
        leftovers(&root).is_empty(),
        "temp files left: {:?}",
        leftovers(&root)
    );
}

//! The bytes of the layers a RUN step makes, as Go's archive/tar (BuildKit's
//! differ) writes them, found by comparing a Debian `apt-get install` layer
//! with docker 28.5's (bench/debian): directories in plain ustar headers
//! with their trailing slash and no PAX record; PAX only where ustar's
//! name and prefix cannot hold the path.

use std::collections::BTreeMap;
use std::io::Read;

use kiln_testsupport::Kiln;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// One entry of a layer read raw: its ustar name, and the PAX records that
/// came before it (empty when none).
struct RawEntry {
    ustar_name: Vec<u8>,
    pax: BTreeMap<String, Vec<u8>>,
}

/// The top layer of `image` in a `kiln save` archive, gunzipped.
fn top_layer(k: &Kiln, image: &str) -> Vec<u8> {
    let saved = k.path("saved.tar");
    k.ok(&["save", "-o", &saved.display().to_string(), image]);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&saved).expect("saved archive"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        let mut b = Vec::new();
        e.read_to_end(&mut b).expect("read");
        files.insert(name, b);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    let top = layers.last().and_then(|l| l.as_str()).expect("a layer");
    let blob = &files[top];
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut out)
            .expect("gunzip layer");
        out
    } else {
        blob.clone()
    }
}

/// The layer's entries with the PAX records that belong to each.
fn raw_entries(layer: &[u8]) -> Vec<RawEntry> {
    let mut ar = tar::Archive::new(layer);
    let mut out = Vec::new();
    let mut pending = BTreeMap::new();
    for e in ar.entries().expect("entries").raw(true) {
        let mut e = e.expect("entry");
        if e.header().entry_type() == tar::EntryType::XHeader {
            for ext in e.pax_extensions().expect("pax").expect("pax records") {
                let ext = ext.expect("pax record");
                pending.insert(
                    ext.key().expect("utf-8 key").to_string(),
                    ext.value_bytes().to_vec(),
                );
            }
            continue;
        }
        out.push(RawEntry {
            ustar_name: e.header().path_bytes().into_owned(),
            pax: std::mem::take(&mut pending),
        });
    }
    out
}

#[test]
fn directories_are_plain_ustar_and_only_long_names_take_pax() {
    let k = Kiln::with_busybox(KILN);
    // 60 + 1 + 60 bytes: too long for ustar's name, fits name + prefix (Go
    // splits it, no PAX); a 150-byte component fits neither.
    let split = format!("{}/{}", "d".repeat(60), "e".repeat(60));
    let long = "x".repeat(150);
    let dockerfile = format!(
        "FROM busybox:1.35\n\
         RUN mkdir -p /srv/app/data /{split} /{long} \
         && touch /srv/app/data/f /{split}/f /{long}/f\n"
    );
    let ctx = k.context("ctx", &[("Dockerfile", &dockerfile)]);
    k.ok(&["build", "-q", "-t", "dirs", &ctx.display().to_string()]);
    let entries = raw_entries(&top_layer(&k, "dirs"));
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e.ustar_name == n.as_bytes())
            .unwrap_or_else(|| {
                let names: Vec<_> = entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.ustar_name).into_owned())
                    .collect();
                panic!("no entry {n:?} in {names:?}")
            })
    };
    for dir in ["srv/", "srv/app/", "srv/app/data/"] {
        let e = by_name(dir);
        assert!(e.pax.is_empty(), "{dir}: PAX records {:?}", e.pax.keys());
    }
    let f = by_name("srv/app/data/f");
    assert!(f.pax.is_empty(), "srv/app/data/f: {:?}", f.pax.keys());

    // name + prefix, no PAX (path_bytes joins them back)
    let e = by_name(&format!("{split}/"));
    assert!(e.pax.is_empty(), "{split}/: PAX records {:?}", e.pax.keys());

    // PAX path for the one ustar cannot hold, with the directory's slash
    let want = format!("{long}/");
    let e = entries
        .iter()
        .find(|e| e.pax.get("path").map(Vec::as_slice) == Some(want.as_bytes()))
        .unwrap_or_else(|| panic!("no PAX path record for the 150-byte directory"));
    assert!(
        want.as_bytes()
            .starts_with(&e.ustar_name[..e.ustar_name.len().min(99)]),
        "the ustar name is a prefix of the long path"
    );
    // its file fits the prefix (the 150 bytes) and the name: no PAX, as in Go
    let f = format!("{long}/f");
    assert!(by_name(&f).pax.is_empty(), "{f}: PAX records");
}

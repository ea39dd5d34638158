//! `kiln load`: importing an OCI layout (folder or tar) or a docker-archive.
//!
//! The import is all-or-nothing. A tar is read twice: the first pass only
//! looks at entry names and types (refusing `..`, absolute names, links that
//! leave the archive, odd entry types) and keeps the small metadata files;
//! the second streams blob entries into pending blobs, each verified
//! against its digest and size. Then the image graph is checked (every
//! manifest, config and layer present with the announced size); only then
//! do the blobs become visible, and the names are set last, in one atomic
//! update. A failure at any step leaves the store as it was.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::paths::{clean, resolve_link, RejectedPath};
use crate::blobs::{create_locked_temp, PendingBlob};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{self, MAX_JSON_BLOB};
use crate::media;
use crate::reference::Reference;
use crate::root::Root;

/// How to name what is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Name the (single) image in the archive this, instead of the names
    /// the archive carries.
    pub tag: Option<Reference>,
}

/// One image the archive held.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// Names it was given (empty when the archive named it by tag only, or
    /// not at all).
    pub names: Vec<Reference>,
    /// Its manifest or index.
    pub descriptor: Descriptor,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The archive's images, in archive order.
    pub images: Vec<LoadedImage>,
    /// Blobs that were not in the store before.
    pub blobs_added: usize,
    /// Their total size.
    pub bytes_added: u64,
    /// Bare-tag names (`org.opencontainers.image.ref.name` without a
    /// repository) that could not name an image; `--tag` can.
    pub unnamed_tags: Vec<String>,
}

/// Imports the archive or layout folder at `input` (`-` reads stdin).
pub fn load(root: &Root, input: &Path, opts: &LoadOptions) -> Result<LoadReport> {
    // Keep prune away until the names are set.
    let _lease = root.lease()?;
    if input == Path::new("-") {
        let (mut file, path) = create_locked_temp(&root.tmp_dir())?;
        let spooled = (|| {
            io::copy(&mut io::stdin().lock(), &mut file).map_err(|e| Error::io("<stdin>", e))?;
            file.flush().map_err(|e| Error::io(&path, e))?;
            let mut src = TarSource::scan(&path, Path::new("<stdin>"))?;
            import(root, &mut src, opts)
        })();
        let _ = fs::remove_file(&path);
        return spooled;
    }
    let meta = fs::metadata(input).map_err(|e| Error::io(input, e))?;
    if meta.is_dir() {
        let mut src = DirSource::new(input)?;
        import(root, &mut src, opts)
    } else {
        let mut src = TarSource::scan(input, input)?;
        import(root, &mut src, opts)
    }
}

/// The `index.json` of the OCI layout folder `dir`: what a caller picks
/// one image from (by tag, digest or platform) before
/// [`load_layout_image`], as buildx picks an `oci-layout://` context.
pub fn layout_index(dir: &Path) -> Result<ImageIndex> {
    let src = DirSource::new(dir)?;
    let bytes = src.meta("index.json").ok_or_else(|| Error::Archive {
        path: dir.to_path_buf(),
        detail: "not an OCI layout: no index.json".into(),
    })?;
    serde_json::from_slice(bytes)
        .map_err(|e| Error::json(format!("{}: index.json", dir.display()), e))
}

/// A descriptor for the manifest or index `digest` among the blobs of the
/// layout folder `dir`, listed in `index.json` or not (a platform's
/// manifest inside an index); `None` when the layout lacks the blob.
pub fn layout_blob_descriptor(dir: &Path, digest: &Digest) -> Result<Option<Descriptor>> {
    let src = DirSource::new(dir)?;
    let rel = format!("blobs/{}/{}", digest.algorithm(), digest.hex());
    let Some(f) = src.open_inside(&rel)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    f.take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(dir.join(&rel), e))?;
    if buf.len() as u64 > MAX_JSON_BLOB {
        return Err(Error::InvalidImage {
            what: rel.clone(),
            detail: "too large for a manifest".into(),
        });
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        media_type: Option<String>,
    }
    let head: Head = serde_json::from_slice(&buf)
        .map_err(|e| Error::json(format!("{}: {rel}", dir.display()), e))?;
    let media_type = head
        .media_type
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    let json = serde_json::json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": buf.len(),
    });
    serde_json::from_value(json)
        .map(Some)
        .map_err(|e| Error::json(format!("{}: {rel}", dir.display()), e))
}

/// Imports the one image `desc` of the OCI layout folder `dir` (and what
/// it references), named `opts.tag`: the other images the layout lists are
/// left out.
pub fn load_layout_image(
    root: &Root,
    dir: &Path,
    desc: &Descriptor,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    let _lease = root.lease()?;
    let mut src = DirSource::new(dir)?;
    let mut one = desc.clone();
    one.set_annotations(None);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [one],
    });
    src.meta
        .insert("index.json".to_string(), index.to_string().into_bytes());
    import(root, &mut src, opts)
}

/// Where archive content comes from: a tar (already staged by path in its
/// second pass) or a folder (staged on demand).
trait Source {
    /// The archive's name, for messages.
    fn name(&self) -> &Path;
    /// A small metadata file at the archive root, if present.
    fn meta(&self, name: &str) -> Option<&[u8]>;
    /// Stages the file at `path` (following in-archive links) as a pending
    /// blob, verified against `expected` when given; `None` if absent.
    fn stage(
        &mut self,
        root: &Root,
        path: &str,
        expected: Option<&Digest>,
    ) -> Result<Option<PendingBlob>>;
    /// For tars: stream the listed paths into pending blobs in one pass.
    fn prepare(&mut self, root: &Root, wanted: &BTreeMap<String, Option<Digest>>) -> Result<()>;
}

/// Pending blobs by digest, plus a view of the store, for the graph check.
struct Staging<'a> {
    root: &'a Root,
    pending: HashMap<Digest, PendingBlob>,
}

impl Staging<'_> {
    fn size(&self, d: &Digest) -> Option<u64> {
        match self.pending.get(d) {
            Some(p) => Some(p.size()),
            None => self.root.blobs().size(d).ok(),
        }
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, d: &Digest, what: &str) -> Result<T> {
        let bytes = match self.pending.get(d) {
            Some(p) => {
                if p.size() > MAX_JSON_BLOB {
                    return Err(Error::InvalidImage {
                        what: format!("{what} {d}"),
                        detail: "too large for a JSON document".into(),
                    });
                }
                fs::read(p.path()).map_err(|e| Error::io(p.path(), e))?
            }
            None => return image::read_json(self.root.blobs(), d, what),
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::json(format!("{what} {d}"), e))
    }

    fn add(&mut self, p: PendingBlob) {
        let d = p.digest().clone();
        self.pending.entry(d).or_insert(p);
    }
}

/// Legacy docker-archive `manifest.json` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import(root: &Root, src: &mut dyn Source, opts: &LoadOptions) -> Result<LoadReport> {
    let archive = src.name().to_path_buf();
    let bad = |detail: String| Error::Archive {
        path: archive.clone(),
        detail,
    };
    let mut staging = Staging {
        root,
        pending: HashMap::new(),
    };
    let mut report = LoadReport::default();
    // (descriptor, names) of every top-level image.
    let mut tops: Vec<(Descriptor, Vec<Reference>)> = Vec::new();

    if let Some(index_bytes) = src.meta("index.json").map(<[u8]>::to_vec) {
        let index: ImageIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| Error::json(format!("{}: index.json", archive.display()), e))?;
        // Stream every blob entry in one pass (tars); folders stage lazily.
        let mut wanted = BTreeMap::new();
        wanted.insert("blobs/sha256/*".to_string(), None);
        src.prepare(root, &wanted)?;
        for d in index.manifests() {
            let mut names = Vec::new();
            let ann = d.annotations().clone().unwrap_or_default();
            if let Some(n) = ann.get(media::ANNOTATION_CONTAINERD_NAME) {
                names.push(
                    Reference::parse(n).map_err(|e| bad(format!("image name annotation: {e}")))?,
                );
            } else if let Some(n) = ann.get(media::ANNOTATION_REF_NAME) {
                // A ref.name is often only a tag ("1.35", "latest"): reading
                // it as an image name would invent `docker.io/library/1.35`.
                if n.contains('/') || n.contains(':') || n.contains('@') {
                    names.push(
                        Reference::parse(n)
                            .map_err(|e| bad(format!("image name annotation: {e}")))?,
                    );
                } else {
                    report.unnamed_tags.push(n.clone());
                }
            }
            check_graph(&mut staging, src, d, 0, true)?;
            tops.push((d.clone(), names));
        }
    } else if let Some(manifest_bytes) = src.meta("manifest.json").map(<[u8]>::to_vec) {
        let entries: Vec<DockerEntry> = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::json(format!("{}: manifest.json", archive.display()), e))?;
        let mut wanted = BTreeMap::new();
        for e in &entries {
            wanted.insert(e.config.clone(), config_digest_from_name(&e.config));
            for l in &e.layers {
                wanted.insert(l.clone(), None);
            }
        }
        src.prepare(root, &wanted)?;
        for e in &entries {
            let d = docker_entry(&mut staging, src, e, &archive)?;
            let mut names = Vec::new();
            for t in e.repo_tags.iter().flatten() {
                names.push(Reference::parse(t).map_err(|err| bad(format!("RepoTags: {err}")))?);
            }
            tops.push((d, names));
        }
    } else {
        return Err(bad(
            "neither an OCI layout (index.json) nor a docker-archive (manifest.json)".into(),
        ));
    }

    if tops.is_empty() {
        return Err(bad("the archive holds no image".into()));
    }
    if let Some(tag) = &opts.tag {
        let first = tops[0].0.digest().clone();
        if tops.iter().any(|(d, _)| *d.digest() != first) {
            return Err(bad(format!(
                "it holds {} different images; --tag can name only one",
                tops.len()
            )));
        }
        for (_, names) in tops.iter_mut() {
            *names = vec![tag.clone()];
        }
        report.unnamed_tags.clear();
    }

    // Everything is verified: make the reachable blobs visible.
    let mut live = std::collections::BTreeSet::new();
    for (d, _) in &tops {
        for c in closure_staged(&staging, d)? {
            live.insert(c);
        }
    }
    let pending = std::mem::take(&mut staging.pending);
    for (digest, p) in pending {
        if !live.contains(&digest) || root.blobs().has(&digest) {
            continue; // dropped: temp file removed
        }
        report.blobs_added += 1;
        report.bytes_added += p.size();
        p.commit()?;
    }
    let mut named = Vec::new();
    for (d, names) in &tops {
        for n in names {
            named.push((n.clone(), d.clone()));
        }
        report.images.push(LoadedImage {
            names: names.clone(),
            descriptor: d.clone(),
        });
    }
    if !named.is_empty() {
        root.images().set_many(&named)?;
    }
    Ok(report)
}

/// `sha256:<hex>` from a docker config path like `<hex>.json` or
/// `blobs/sha256/<hex>`, so the config is verified against its name.
fn config_digest_from_name(path: &str) -> Option<Digest> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let hex = base.strip_suffix(".json").unwrap_or(base);
    format!("sha256:{hex}").parse().ok()
}

/// Builds an OCI manifest for a legacy docker-archive entry.
fn docker_entry(
    staging: &mut Staging,
    src: &mut dyn Source,
    e: &DockerEntry,
    archive: &Path,
) -> Result<Descriptor> {
    let root = staging.root;
    let missing = |what: &str, p: &str| Error::Archive {
        path: archive.to_path_buf(),
        detail: format!("manifest.json names {what} {p:?}, which the archive does not contain"),
    };
    let cfg = src
        .stage(root, &e.config, config_digest_from_name(&e.config).as_ref())?
        .ok_or_else(|| missing("config", &e.config))?;
    let cfg_digest = cfg.digest().clone();
    let cfg_size = cfg.size();
    staging.add(cfg);
    let config: serde_json::Value = staging.read_json(&cfg_digest, "config")?;
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != e.layers.len() {
        return Err(Error::InvalidImage {
            what: format!("{}: config {}", archive.display(), e.config),
            detail: format!(
                "{} layers listed but the config has {} diff_ids",
                e.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (path, diff_id) in e.layers.iter().zip(&diff_ids) {
        let p = src
            .stage(root, path, None)?
            .ok_or_else(|| missing("layer", path))?;
        let mut head = [0u8; 4];
        let n = File::open(p.path())
            .and_then(|mut f| read_full(&mut f, &mut head))
            .map_err(|err| Error::io(p.path(), err))?;
        let compression = media::sniff_compression(head.get(..n).unwrap_or_default());
        let mt = match compression {
            media::Compression::None => media::OCI_LAYER,
            media::Compression::Gzip => media::OCI_LAYER_GZIP,
            media::Compression::Zstd => media::OCI_LAYER_ZSTD,
        };
        if compression == media::Compression::None && p.digest().to_string() != *diff_id {
            return Err(Error::UnsafeArchive {
                path: archive.to_path_buf(),
                entry: path.clone(),
                reason: format!("hashes to {} but the config says {diff_id}", p.digest()),
            });
        }
        layers.push(image::descriptor(mt, p.digest(), p.size()));
        staging.add(p);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": image::descriptor(media::OCI_CONFIG, &cfg_digest, cfg_size),
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|err| Error::json("manifest", err))?;
    let digest = Digest::of(&bytes);
    if !staging.pending.contains_key(&digest) && !root.blobs().has(&digest) {
        let mut w = root
            .blobs()
            .writer(Some(&digest), Some(bytes.len() as u64))?;
        w.write_all(&bytes)
            .map_err(|err| Error::io(root.tmp_dir(), err))?;
        staging.add(w.finish()?);
    }
    let mut d = image::descriptor(media::OCI_MANIFEST, &digest, bytes.len() as u64);
    let platform = image::config_platform(&config);
    if !platform.architecture.is_empty() {
        d.set_platform(Some((&platform).into()));
    }
    Ok(d)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks that `d` and everything below it is present (staged or already
/// stored) with the announced size and parses. Children of an index may
/// be absent (a single-platform export keeps the whole index), but not all.
fn check_graph(
    staging: &mut Staging,
    src: &mut dyn Source,
    d: &Descriptor,
    depth: usize,
    required: bool,
) -> Result<bool> {
    let archive = src.name().to_path_buf();
    let digest = image::digest_of(d)?;
    if depth > 8 {
        return Err(Error::InvalidImage {
            what: digest.to_string(),
            detail: "indexes nested too deep".into(),
        });
    }
    if staging.size(&digest).is_none() {
        let path = format!("blobs/sha256/{}", digest.hex());
        if let Some(p) = src.stage(staging.root, &path, Some(&digest))? {
            staging.add(p);
        }
    }
    let Some(size) = staging.size(&digest) else {
        if required {
            return Err(Error::Archive {
                path: archive,
                detail: format!("blob {digest} ({}) is missing", d.media_type()),
            });
        }
        return Ok(false);
    };
    if size != d.size() {
        return Err(Error::SizeMismatch {
            what: format!("{}: blob {digest}", archive.display()),
            expected: d.size(),
            actual: size,
        });
    }
    let mt = image::media_type(d);
    if media::is_index(&mt) {
        let idx: ImageIndex = staging.read_json(&digest, "index")?;
        let mut any = idx.manifests().is_empty();
        for m in idx.manifests() {
            any |= check_graph(staging, src, m, depth + 1, false)?;
        }
        if !any {
            return Err(Error::Archive {
                path: archive,
                detail: format!("index {digest}: none of its manifests is in the archive"),
            });
        }
    } else if media::is_manifest(&mt) {
        let m: ImageManifest = staging.read_json(&digest, "manifest")?;
        check_graph(staging, src, m.config(), depth + 1, true)?;
        for l in m.layers() {
            check_graph(staging, src, l, depth + 1, true)?;
        }
    }
    Ok(true)
}

/// The digests reachable from `d` that are available (staged or stored).
fn closure_staged(staging: &Staging, d: &Descriptor) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    let mut stack = vec![(d.clone(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let digest = image::digest_of(&d)?;
        if staging.size(&digest).is_none() || out.contains(&digest) || depth > 8 {
            continue;
        }
        out.push(digest.clone());
        let mt = image::media_type(&d);
        if media::is_index(&mt) {
            let idx: ImageIndex = staging.read_json(&digest, "index")?;
            stack.extend(idx.manifests().iter().map(|m| (m.clone(), depth + 1)));
        } else if media::is_manifest(&mt) {
            let m: ImageManifest = staging.read_json(&digest, "manifest")?;
            stack.push((m.config().clone(), depth + 1));
            stack.extend(m.layers().iter().map(|l| (l.clone(), depth + 1)));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- tar input

/// What the first pass learned about an entry.
#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    /// A symlink or hard link, resolved to an in-archive path.
    Link(String),
}

const META_FILES: [&str; 4] = ["index.json", "oci-layout", "manifest.json", "repositories"];

struct TarSource {
    file: PathBuf,
    name: PathBuf,
    entries: HashMap<String, Kind>,
    meta: HashMap<String, Vec<u8>>,
    staged: HashMap<String, PendingBlob>,
}

impl TarSource {
    /// First pass: validate every entry name and link, keep metadata files.
    fn scan(file: &Path, name: &Path) -> Result<TarSource> {
        let mut src = TarSource {
            file: file.to_path_buf(),
            name: name.to_path_buf(),
            entries: HashMap::new(),
            meta: HashMap::new(),
            staged: HashMap::new(),
        };
        let reader = src.open()?;
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| src.broken(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| src.broken(e))?;
            let raw = entry.path().map_err(|e| src.broken(e))?.into_owned();
            let shown = raw.display().to_string();
            let path =
                clean(&raw).map_err(|reason| src.rejected_entry(&shown, reason.to_string()))?;
            let et = entry.header().entry_type();
            let kind = if et.is_file() || et == tar::EntryType::Continuous {
                Kind::File
            } else if et.is_dir() {
                Kind::Dir
            } else if et.is_symlink() || et.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| src.broken(e))?
                    .ok_or_else(|| src.rejected_entry(&shown, "is a link without a target".into()))?
                    .into_owned();
                let resolved = if et.is_symlink() {
                    resolve_link(&path, &target)
                } else {
                    // Hard link targets are archive paths, not relative ones.
                    clean(&target).map_err(|r| RejectedPath::HardLink(Box::new(r)))
                };
                Kind::Link(
                    resolved.map_err(|reason| src.rejected_entry(&shown, reason.to_string()))?,
                )
            } else if matches!(et, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
                continue;
            } else {
                return Err(src.rejected_entry(&shown, format!("has an unsupported type ({et:?})")));
            };
            if path.is_empty() {
                if matches!(kind, Kind::Dir) {
                    continue;
                }
                return Err(src.rejected_entry(&shown, "has an empty name".into()));
            }
            if matches!(kind, Kind::File) && META_FILES.contains(&path.as_str()) {
                let mut buf = Vec::new();
                (&mut entry)
                    .take(MAX_JSON_BLOB + 1)
                    .read_to_end(&mut buf)
                    .map_err(|e| src.broken(e))?;
                if buf.len() as u64 > MAX_JSON_BLOB {
                    return Err(src.rejected_entry(&shown, "is too large".into()));
                }
                src.meta.insert(path.clone(), buf);
            }
            let dir_again =
                matches!(kind, Kind::Dir) && matches!(src.entries.get(&path), Some(Kind::Dir));
            if src.entries.insert(path, kind).is_some() && !dir_again {
                return Err(src.rejected_entry(&shown, "appears twice".into()));
            }
        }
        Ok(src)
    }

    /// Opens the file, transparently un-gzipping a `.tar.gz`.
    fn open(&self) -> Result<Box<dyn Read>> {
        let mut f = File::open(&self.file).map_err(|e| Error::io(&self.name, e))?;
        let mut head = [0u8; 2];
        let n = read_full(&mut f, &mut head).map_err(|e| Error::io(&self.name, e))?;
        let f = File::open(&self.file).map_err(|e| Error::io(&self.name, e))?;
        let r = BufReader::with_capacity(256 * 1024, f);
        if n == 2 && head == [0x1f, 0x8b] {
            Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
        } else {
            Ok(Box::new(r))
        }
    }

    /// Follows in-archive links to the file they name.
    fn resolve(&self, path: &str) -> Option<String> {
        let mut p = path.to_string();
        for _ in 0..32 {
            match self.entries.get(&p)? {
                Kind::File => return Some(p),
                Kind::Dir => return None,
                Kind::Link(t) => p = t.clone(),
            }
        }
        None
    }

    fn broken(&self, e: io::Error) -> Error {
        // The tar crate's messages may quote the bad header bytes: keep
        // the message short and printable.
        let mut why: String = e
            .to_string()
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        if why.len() < e.to_string().len() {
            why.push('…');
        }
        Error::Archive {
            path: self.name.clone(),
            detail: format!("not a readable tar archive: {why}"),
        }
    }

    fn rejected_entry(&self, entry: &str, reason: String) -> Error {
        Error::UnsafeArchive {
            path: self.name.clone(),
            entry: entry.to_string(),
            reason,
        }
    }
}

impl Source for TarSource {
    fn name(&self) -> &Path {
        &self.name
    }

    fn meta(&self, name: &str) -> Option<&[u8]> {
        self.meta.get(name).map(Vec::as_slice)
    }

    fn prepare(&mut self, root: &Root, wanted: &BTreeMap<String, Option<Digest>>) -> Result<()> {
        // Map each wanted path to the file entry holding its bytes.
        let all_blobs = wanted.contains_key("blobs/sha256/*");
        let mut by_file: HashMap<String, Option<Digest>> = HashMap::new();
        for (p, d) in wanted {
            if p == "blobs/sha256/*" {
                continue;
            }
            let clean_p =
                clean(Path::new(p)).map_err(|reason| self.rejected_entry(p, reason.to_string()))?;
            if let Some(f) = self.resolve(&clean_p) {
                by_file.insert(f, d.clone());
            }
        }
        let reader = self.open()?;
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.broken(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.broken(e))?;
            let et = entry.header().entry_type();
            if !(et.is_file() || et == tar::EntryType::Continuous) {
                continue;
            }
            let raw = entry.path().map_err(|e| self.broken(e))?.into_owned();
            let shown = raw.display().to_string();
            let path =
                clean(&raw).map_err(|reason| self.rejected_entry(&shown, reason.to_string()))?;
            let expected = if let Some(d) = by_file.get(&path) {
                d.clone()
            } else if all_blobs {
                match path.strip_prefix("blobs/sha256/") {
                    Some(hex) => match format!("sha256:{hex}").parse::<Digest>() {
                        Ok(d) => Some(d),
                        Err(_) => continue,
                    },
                    None => continue,
                }
            } else {
                continue;
            };
            let size = entry.size();
            // Content the store already holds was verified when it went in;
            // the graph check still compares its size with the descriptor.
            if let Some(d) = &expected {
                if root.blobs().has(d) && !by_file.contains_key(&path) {
                    continue;
                }
            }
            let mut w = root.blobs().writer(expected.as_ref(), Some(size))?;
            io::copy(&mut entry, &mut w).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => self.rejected_entry(&shown, e.to_string()),
                _ => self.broken(e),
            })?;
            let pending = w.finish().map_err(|e| match e {
                Error::DigestMismatch { expected, actual } => self.rejected_entry(
                    &shown,
                    format!("does not match its digest: expected {expected}, content hashes to {actual}"),
                ),
                other => other,
            })?;
            self.staged.insert(path, pending);
        }
        Ok(())
    }

    fn stage(
        &mut self,
        _root: &Root,
        path: &str,
        expected: Option<&Digest>,
    ) -> Result<Option<PendingBlob>> {
        let Some(file) = self.resolve(path) else {
            return Ok(None);
        };
        let Some(p) = self.staged.remove(&file) else {
            return Ok(None);
        };
        if let Some(e) = expected {
            if p.digest() != e {
                return Err(self.rejected_entry(
                    path,
                    format!(
                        "does not match its digest: expected {e}, content hashes to {}",
                        p.digest()
                    ),
                ));
            }
        }
        Ok(Some(p))
    }
}

// ------------------------------------------------------------- folder input

struct DirSource {
    dir: PathBuf,
    canonical: PathBuf,
    meta: HashMap<String, Vec<u8>>,
}

impl DirSource {
    fn new(dir: &Path) -> Result<DirSource> {
        let canonical = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let mut src = DirSource {
            dir: dir.to_path_buf(),
            canonical,
            meta: HashMap::new(),
        };
        for name in META_FILES {
            if let Some(f) = src.open_inside(name)? {
                let mut buf = Vec::new();
                f.take(MAX_JSON_BLOB + 1)
                    .read_to_end(&mut buf)
                    .map_err(|e| Error::io(src.dir.join(name), e))?;
                if buf.len() as u64 > MAX_JSON_BLOB {
                    return Err(src.rejected_entry(name, "is too large".into()));
                }
                src.meta.insert(name.to_string(), buf);
            }
        }
        Ok(src)
    }

    /// Opens `rel` if it exists and, links followed, stays inside the
    /// folder.
    fn open_inside(&self, rel: &str) -> Result<Option<File>> {
        let clean_rel =
            clean(Path::new(rel)).map_err(|reason| self.rejected_entry(rel, reason.to_string()))?;
        let p = self.dir.join(&clean_rel);
        let real = match fs::canonicalize(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(p, e)),
        };
        if !real.starts_with(&self.canonical) {
            return Err(self.rejected_entry(
                rel,
                format!("links to {}, outside the layout", real.display()),
            ));
        }
        if !real.is_file() {
            return Ok(None);
        }
        File::open(&real).map(Some).map_err(|e| Error::io(p, e))
    }

    fn rejected_entry(&self, entry: &str, reason: String) -> Error {
        Error::UnsafeArchive {
            path: self.dir.clone(),
            entry: entry.to_string(),
            reason,
        }
    }
}

impl Source for DirSource {
    fn name(&self) -> &Path {
        &self.dir
    }

    fn meta(&self, name: &str) -> Option<&[u8]> {
        self.meta.get(name).map(Vec::as_slice)
    }

    fn prepare(&mut self, _root: &Root, _wanted: &BTreeMap<String, Option<Digest>>) -> Result<()> {
        Ok(())
    }

    fn stage(
        &mut self,
        root: &Root,
        path: &str,
        expected: Option<&Digest>,
    ) -> Result<Option<PendingBlob>> {
        let Some(mut f) = self.open_inside(path)? else {
            return Ok(None);
        };
        let size = f
            .metadata()
            .map_err(|e| Error::io(self.dir.join(path), e))?
            .len();
        let mut w = root.blobs().writer(expected, Some(size))?;
        io::copy(&mut f, &mut w).map_err(|e| Error::io(self.dir.join(path), e))?;
        let p = w.finish().map_err(|e| match e {
            Error::DigestMismatch { expected, actual } => self.rejected_entry(
                path,
                format!(
                    "does not match its digest: expected {expected}, content hashes to {actual}"
                ),
            ),
            other => other,
        })?;
        Ok(Some(p))
    }
}

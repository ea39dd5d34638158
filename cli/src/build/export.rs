//! Export: a build's result (the target's layers and the image metadata
//! lowering produced) becomes an OCI image in the store, then goes where
//! `--output` says: names in the image store, an OCI or docker archive, a
//! root filesystem in a folder, or a tar of it.
//!
//! The config is assembled as BuildKit's image exporter does: the base
//! image's config document is the starting point (so fields kiln does not
//! model, like `os.version`, survive), the stage's `config` object replaces
//! the base's, the history is the base's followed by the Dockerfile's with
//! creation times, and `rootfs.diff_ids` are exactly the layers of the
//! result. The image ID is the config's digest, as docker's IMAGE ID.

use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_cache::archive::{self, Format, SaveOptions};
use kiln_cache::compress::{self, Conversion};
use kiln_cache::{media, Digest, Reference, Root};
use kiln_frontend::lower::ImageMeta;
use kiln_frontend::plan::Platform;
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use oci_spec::image::Descriptor;
use serde_json::{json, Map, Value};

/// One layer of a result, as the worker recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Layer {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the blob in the store.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// One platform's result: what [`assemble`] turns into an image.
#[derive(Debug, Clone)]
pub struct Built {
    pub platform: Platform,
    pub layers: Vec<Layer>,
    pub meta: ImageMeta,
    /// Every step of the build came from the cache (nothing ran), so an
    /// earlier export of the same result may be reused as is.
    pub all_cached: bool,
}

/// An image written to the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest, with its platform.
    pub manifest: Descriptor,
    /// The config blob's digest: docker's image ID.
    pub config: Digest,
}

/// The build's timestamp: `SOURCE_DATE_EPOCH` when set (reproducible
/// builds, as BuildKit honours it), else now.
pub fn created_now() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC (what image configs carry).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil conversion.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// OCI manifests carry OCI layer types; docker's (from a base pulled off
/// Docker Hub) are the same bytes under another name.
fn oci_layer_type(mt: &str) -> &str {
    match mt {
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
        media::DOCKER_LAYER => media::OCI_LAYER,
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => media::OCI_LAYER_ZSTD,
        other => other,
    }
}

/// The image config document for `b`.
pub fn config_document(b: &Built, created: &str) -> Value {
    let mut doc: Map<String, Value> = b
        .meta
        .base
        .as_ref()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    // Fields of docker's legacy builder that describe the base's build, not
    // this one.
    for k in [
        "container",
        "container_config",
        "docker_version",
        "id",
        "parent",
    ] {
        doc.remove(k);
    }
    doc.insert("architecture".into(), json!(b.platform.architecture));
    doc.insert("os".into(), json!(b.platform.os));
    match &b.platform.variant {
        Some(v) => {
            doc.insert("variant".into(), json!(v));
        }
        None => {
            doc.remove("variant");
        }
    }
    doc.insert("config".into(), b.meta.config.clone());
    doc.insert("created".into(), json!(created));
    if let Some(a) = &b.meta.author {
        doc.insert("author".into(), json!(a));
    }
    let mut history: Vec<Value> = doc
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for h in &b.meta.history {
        let mut e = Map::new();
        e.insert("created".into(), json!(created));
        e.insert("created_by".into(), json!(h.created_by));
        e.insert("comment".into(), json!(h.comment));
        if h.empty_layer {
            e.insert("empty_layer".into(), json!(true));
        }
        history.push(Value::Object(e));
    }
    doc.insert("history".into(), Value::Array(history));
    let diff_ids: Vec<&str> = b.layers.iter().map(|l| l.diff_id.as_str()).collect();
    doc.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    Value::Object(doc)
}

fn to_bytes(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).into_diagnostic()
}

fn digest_str(d: &Digest) -> String {
    format!("{}:{}", d.algorithm(), d.hex())
}

fn parse_descriptor(v: Value) -> Result<Descriptor> {
    serde_json::from_value(v)
        .into_diagnostic()
        .wrap_err("building a descriptor")
}

/// Writes the config and manifest of one platform's image into the store.
/// The layer blobs must already be there (the worker wrote them).
pub fn assemble(root: &Root, b: &Built, created: &str) -> Result<Image> {
    let blobs = root.blobs();
    for l in &b.layers {
        let d: Digest = l
            .digest
            .parse()
            .map_err(|_| miette!("invalid layer digest {}", l.digest))?;
        if !blobs.has(&d) {
            return Err(miette!("layer blob {} is missing from the store", l.digest));
        }
    }
    let config = to_bytes(&config_document(b, created))?;
    let config_digest = blobs.put(&config).into_diagnostic()?;
    let layers: Vec<Value> = b
        .layers
        .iter()
        .map(|l| json!({"mediaType": oci_layer_type(&l.media_type), "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": digest_str(&config_digest), "size": config.len()},
        "layers": layers,
    });
    let bytes = to_bytes(&manifest)?;
    let digest = blobs.put(&bytes).into_diagnostic()?;
    let mut platform = json!({"os": b.platform.os, "architecture": b.platform.architecture});
    if let Some(v) = &b.platform.variant {
        platform["variant"] = json!(v);
    }
    let manifest = parse_descriptor(json!({
        "mediaType": media::OCI_MANIFEST,
        "digest": digest_str(&digest),
        "size": bytes.len(),
        "platform": platform,
    }))?;
    Ok(Image {
        manifest,
        config: config_digest,
    })
}

/// Where the export of a result is remembered: keyed by everything the
/// config and manifest are made of except the time.
fn reuse_record(root: &Root, b: &Built) -> Result<PathBuf> {
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let what = json!({
        "platform": b.platform,
        "layers": b.layers,
        "meta": b.meta,
        "epoch": epoch,
    });
    let key = Digest::of(&to_bytes(&what)?);
    Ok(root
        .path()
        .join("exports")
        .join(format!("{}.json", key.hex())))
}

/// [`assemble`], except that a fully cached rebuild of a result exported
/// before gets that export back, as BuildKit's no-op rebuild keeps the
/// image ID: nothing is written, and the `created` times stay those of the
/// build that made the layers. The record is only a hint: its blobs are
/// checked, and anything missing or unreadable means a fresh export.
pub fn assemble_reusing(root: &Root, b: &Built, created: &str) -> Result<Image> {
    let record = reuse_record(root, b)?;
    if b.all_cached {
        if let Some(image) = read_reuse_record(root, &record) {
            return Ok(image);
        }
    }
    let image = assemble(root, b, created)?;
    // Best effort: without the record the next no-op only exports afresh.
    let _ = write_reuse_record(&record, &image);
    Ok(image)
}

fn read_reuse_record(root: &Root, path: &Path) -> Option<Image> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let manifest: Descriptor = serde_json::from_value(v.get("manifest")?.clone()).ok()?;
    let config: Digest = v.get("config")?.as_str()?.parse().ok()?;
    let blobs = root.blobs();
    let manifest_digest: Digest = manifest.digest().to_string().parse().ok()?;
    (blobs.has(&manifest_digest) && blobs.has(&config)).then_some(Image { manifest, config })
}

fn write_reuse_record(path: &Path, image: &Image) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let doc = json!({"manifest": image.manifest, "config": digest_str(&image.config)});
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, doc.to_string().as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// An OCI index over several platforms' manifests (`--platform a,b`).
pub fn index(root: &Root, images: &[Image]) -> Result<Descriptor> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|i| serde_json::to_value(&i.manifest).into_diagnostic())
        .collect::<Result<_>>()?;
    let doc = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    let bytes = to_bytes(&doc)?;
    let digest = root.blobs().put(&bytes).into_diagnostic()?;
    parse_descriptor(json!({
        "mediaType": media::OCI_INDEX,
        "digest": digest_str(&digest),
        "size": bytes.len(),
    }))
}

/// Where `--output` sends the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The image store, under the `-t` names.
    Image,
    /// An OCI archive; layers converted as the `compression=` and
    /// `force-compression=` options say (gzip by default, as buildx).
    Oci(PathBuf, Conversion),
    /// A docker-archive; layers converted as for [`Output::Oci`].
    Docker(PathBuf, Conversion),
    Local(PathBuf),
    Tar(PathBuf),
}

impl Output {
    /// Parses buildx's `--output` syntax: `type=T,dest=D` (also the
    /// shorthand `-o DIR` for a local export, and `type=registry`-less
    /// `push=false`… options are ignored).
    pub fn parse(s: &str) -> Result<Output> {
        if !s.contains('=') {
            return Ok(Output::Local(PathBuf::from(s)));
        }
        let mut kind = None;
        let mut dest = None;
        let mut conv = Conversion::default();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| miette!("invalid output option {part:?}: expected key=value"))?;
            match k.trim() {
                "type" => kind = Some(v.trim().to_string()),
                "dest" => dest = Some(PathBuf::from(v.trim())),
                "compression" => {
                    conv.compression = compress::parse_compression(v).map_err(|e| miette!("{e}"))?
                }
                "force-compression" => {
                    conv.force = v
                        .trim()
                        .parse()
                        .map_err(|_| miette!("force-compression={v:?}: expected true or false"))?
                }
                _ => {}
            }
        }
        let need = |d: Option<PathBuf>, t: &str| {
            d.ok_or_else(|| miette!("output type={t} needs dest=PATH"))
        };
        match kind.as_deref().unwrap_or("image") {
            "image" | "docker-image" => Ok(Output::Image),
            "oci" => Ok(Output::Oci(need(dest, "oci")?, conv)),
            "docker" => Ok(Output::Docker(need(dest, "docker")?, conv)),
            "local" => Ok(Output::Local(need(dest, "local")?)),
            "tar" => Ok(Output::Tar(need(dest, "tar")?)),
            other => Err(miette!(
                "unsupported output type {other:?} (image, oci, docker, local, tar)"
            )),
        }
    }
}

/// Opens a layer blob decompressed.
fn layer_reader(root: &Root, l: &Layer) -> Result<Box<dyn Read>> {
    let d: Digest = l
        .digest
        .parse()
        .map_err(|_| miette!("invalid layer digest {}", l.digest))?;
    let f = root.blobs().open(&d).into_diagnostic()?;
    let mut f = std::io::BufReader::new(f);
    let head = {
        use std::io::BufRead;
        f.fill_buf().into_diagnostic()?.to_vec()
    };
    Ok(match media::sniff_compression(&head) {
        media::Compression::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
        media::Compression::Zstd => Box::new(zstd::Decoder::new(f).into_diagnostic()?),
        media::Compression::None => Box::new(f),
    })
}

/// Applies the layers in order onto `dir`: the image's root filesystem.
pub fn write_rootfs(root: &Root, layers: &[Layer], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}", dir.display()))?;
    for l in layers {
        let r = layer_reader(root, l)?;
        kiln_worker::snapshot::apply_layer_merged(r, dir)
            .into_diagnostic()
            .wrap_err_with(|| format!("applying layer {}", l.digest))?;
    }
    Ok(())
}

/// Where each platform's root filesystem goes inside a `type=local` folder
/// or `type=tar` archive: the top itself for one platform, else a folder
/// per platform named as BuildKit names them (`linux_amd64`,
/// `linux_arm_v7`).
fn platform_dirs(built: &[Built]) -> Vec<(PathBuf, &[Layer])> {
    match built {
        [one] => vec![(PathBuf::new(), one.layers.as_slice())],
        many => many
            .iter()
            .map(|b| {
                let name = b.platform.to_string().replace('/', "_");
                (PathBuf::from(name), b.layers.as_slice())
            })
            .collect(),
    }
}

/// Writes each platform's root filesystem under `dir` (`type=local`).
fn write_rootfs_split(root: &Root, built: &[Built], dir: &Path) -> Result<()> {
    for (sub, layers) in platform_dirs(built) {
        write_rootfs(root, layers, &dir.join(sub))?;
    }
    Ok(())
}

/// Writes the root filesystem(s) as one tar (`type=tar`), complete or not
/// at all: it is assembled beside `dest` and renamed into place.
fn write_rootfs_tar(root: &Root, built: &[Built], dest: &Path) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(root.tmp_dir())
        .into_diagnostic()?;
    let fs = tmp.path().join("rootfs");
    write_rootfs_split(root, built, &fs)?;
    let partial = dest.with_extension("kiln-partial");
    let file = std::fs::File::create(&partial)
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}", partial.display()))?;
    let mut t = tar::Builder::new(std::io::BufWriter::new(file));
    t.follow_symlinks(false);
    let written = t.append_dir_all(".", &fs).and_then(|()| {
        t.into_inner()?
            .into_inner()
            .map_err(|e| std::io::Error::other(e.error().to_string()))?
            .sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(miette!("writing {}: {e}", partial.display()));
    }
    std::fs::rename(&partial, dest).into_diagnostic()?;
    Ok(())
}

/// Sends the exported image (`top`: a manifest or an index) where `out`
/// says. `tags` name it in the store (`type=image`) and in archives.
pub fn output(
    root: &Root,
    out: &Output,
    top: &Descriptor,
    built: &[Built],
    tags: &[Reference],
) -> Result<()> {
    match out {
        Output::Image => {
            if !tags.is_empty() {
                let entries: Vec<(Reference, Descriptor)> =
                    tags.iter().map(|t| (t.clone(), top.clone())).collect();
                root.images().set_many(&entries).into_diagnostic()?;
            }
        }
        Output::Oci(dest, conv) | Output::Docker(dest, conv) => {
            let format = if matches!(out, Output::Oci(..)) {
                Format::Oci
            } else {
                Format::Docker
            };
            let items: Vec<archive::SaveItem> = if tags.is_empty() {
                vec![(None, top.clone())]
            } else {
                tags.iter()
                    .map(|t| (Some(t.clone()), top.clone()))
                    .collect()
            };
            let opts = SaveOptions { format };
            if dest.as_os_str() == "-" {
                let mut stdout = std::io::stdout().lock();
                archive::save_compressed(root, &items, &mut stdout, &opts, conv)
                    .into_diagnostic()?;
            } else {
                archive::save_compressed_to_file(root, &items, dest, &opts, conv)
                    .into_diagnostic()?;
            }
        }
        Output::Local(dest) => write_rootfs_split(root, built, dest)?,
        Output::Tar(dest) => write_rootfs_tar(root, built, dest)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn config_keeps_the_base_and_follows_the_stage() {
        use kiln_frontend::plan::HistoryEntry;
        let base = json!({
            "architecture": "amd64", "os": "linux", "os.version": "x",
            "container_config": {"Cmd": ["old"]},
            "config": {"Cmd": ["sh"]},
            "history": [{"created": "2022-01-01T00:00:00Z", "created_by": "ADD rootfs"}],
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
        });
        let b = Built {
            platform: Platform::host(),
            layers: vec![
                Layer {
                    diff_id: "sha256:aa".into(),
                    digest: "sha256:a1".into(),
                    size: 1,
                    media_type: media::DOCKER_LAYER_GZIP.into(),
                },
                Layer {
                    diff_id: "sha256:bb".into(),
                    digest: "sha256:b1".into(),
                    size: 2,
                    media_type: media::OCI_LAYER_GZIP.into(),
                },
            ],
            all_cached: false,
            meta: ImageMeta {
                config: json!({"Cmd": ["run"], "Env": ["A=b"]}),
                history: vec![
                    HistoryEntry {
                        created_by: "RUN /bin/sh -c true # buildkit".into(),
                        empty_layer: false,
                        comment: "buildkit.dockerfile.v0".into(),
                    },
                    HistoryEntry {
                        created_by: "ENV A=b".into(),
                        empty_layer: true,
                        comment: "buildkit.dockerfile.v0".into(),
                    },
                ],
                base: Some(base),
                author: None,
            },
        };
        let doc = config_document(&b, "2026-01-01T00:00:00Z");
        assert_eq!(doc["config"], json!({"Cmd": ["run"], "Env": ["A=b"]}));
        assert_eq!(doc["os.version"], "x", "fields kiln does not model survive");
        assert!(doc.get("container_config").is_none());
        assert_eq!(doc["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        let h = doc["history"].as_array().cloned().unwrap_or_default();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0]["created_by"], "ADD rootfs");
        assert_eq!(h[1]["created_by"], "RUN /bin/sh -c true # buildkit");
        assert!(h[1].get("empty_layer").is_none());
        assert_eq!(h[2]["empty_layer"], true);
        assert_eq!(h[2]["created"], "2026-01-01T00:00:00Z");
        assert_eq!(
            oci_layer_type(&b.layers[0].media_type),
            media::OCI_LAYER_GZIP
        );
    }

    #[test]
    fn outputs_parse_like_buildx() {
        assert_eq!(
            Output::parse("type=oci,dest=/x.tar").ok(),
            Some(Output::Oci("/x.tar".into(), Conversion::default()))
        );
        assert_eq!(
            Output::parse("type=docker,dest=d.tar,compression=zstd,force-compression=true").ok(),
            Some(Output::Docker(
                "d.tar".into(),
                Conversion {
                    compression: kiln_cache::compress::Compression::Zstd,
                    force: true
                }
            ))
        );
        assert!(Output::parse("type=oci,dest=x,compression=estargz").is_err());
        assert_eq!(Output::parse("type=image").ok(), Some(Output::Image));
        assert_eq!(Output::parse("out").ok(), Some(Output::Local("out".into())));
        assert!(Output::parse("type=local").is_err());
        assert!(Output::parse("type=nope,dest=x").is_err());
    }
}

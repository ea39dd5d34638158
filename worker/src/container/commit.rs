//! `kiln commit` and `kiln import`: new images from a container's changes
//! (the image's layers plus one layer diffed from the container's upper
//! dir by [`crate::diff`], OCI whiteouts) or from a plain filesystem tar,
//! stored and named as builds store theirs.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_cache::{image, media, untagged, Digest, Reference, Root};
use serde_json::{json, Map, Value};

use super::Container;
use crate::diff::{self, Compression, DiffOptions};

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    #[error("writing the layer: {0}")]
    Diff(#[from] diff::DiffError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("invalid reference format: {0}")]
    Reference(String),
    #[error("{0}")]
    Change(String),
    #[error("the image's manifest is not readable: {0}")]
    Manifest(String),
    /// `kiln import URL`: the download failed (docker's words).
    #[error("{0}")]
    Download(String),
}

/// What `kiln commit` / `kiln import` add to the image.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `REPO[:TAG]`; none: an untagged (`<none>`) image.
    pub reference: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the image's author.
    pub author: Option<String>,
}

/// The current time as RFC 3339 UTC.
fn now_rfc3339() -> String {
    let secs = super::now();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
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
        rem % 3600 / 60,
        rem % 60
    )
}

/// The runtime's own mount points (never part of a committed layer).
fn stubs(c: &Container) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "proc",
        "dev",
        "sys",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for m in &c.mounts {
        let t = match m {
            crate::sandbox::Mount::Bind { target, .. }
            | crate::sandbox::Mount::Tmpfs { target, .. } => target,
        };
        v.extend(crate::snapshot::rel_components(t));
    }
    v
}

/// `kiln commit`: the container's image plus its changes as one more
/// layer; returns the new image's ID (its config digest).
pub fn commit(
    root: &Root,
    c: &Container,
    dir: &Path,
    opts: &CommitOptions,
) -> Result<Digest, CommitError> {
    let manifest_digest: Digest = c
        .image_id
        .parse()
        .map_err(|_| CommitError::Manifest(c.image_id.clone()))?;
    let _lease = root.lease()?;
    let manifest: Value = serde_json::from_slice(&root.blobs().read(&manifest_digest)?)
        .map_err(|e| CommitError::Manifest(e.to_string()))?;
    let config_digest: Digest = manifest
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| CommitError::Manifest("no config".into()))?;
    let mut config: Value = serde_json::from_slice(&root.blobs().read(&config_digest)?)
        .map_err(|e| CommitError::Manifest(e.to_string()))?;
    let upper = dir.join("upper");
    let options = DiffOptions {
        exclude: stubs(c),
        lowers: c.lowers.clone(),
    };
    let w = root.blobs().writer(None, None)?;
    let (layer, w) = if dir.join("copied").exists() {
        diff::write_layer_compare(&upper, &options, Compression::Gzip, w)?
    } else {
        diff::write_layer(&upper, &options, Compression::Gzip, w)?
    };
    w.commit()?;
    // The container's own settings, then `-c`.
    if let Some(cfg) = config.get_mut("config").and_then(Value::as_object_mut) {
        cfg.insert("Env".into(), json!(c.env));
    }
    apply_changes(&mut config, &opts.changes)?;
    let created_by = c.command.join(" ");
    finish(root, config, manifest, &layer, &created_by, opts)
}

/// Adds `layer` to `config` and `manifest` (history, diff_ids, created,
/// author), stores both and names the image; its ID.
fn finish(
    root: &Root,
    mut config: Value,
    mut manifest: Value,
    layer: &diff::LayerDigest,
    created_by: &str,
    opts: &CommitOptions,
) -> Result<Digest, CommitError> {
    let created = now_rfc3339();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| CommitError::Manifest("config is not an object".into()))?;
    obj.insert("created".into(), json!(created));
    if let Some(a) = &opts.author {
        obj.insert("author".into(), json!(a));
    }
    let mut h = Map::new();
    h.insert("created".into(), json!(created));
    h.insert("created_by".into(), json!(created_by));
    if let Some(a) = &opts.author {
        h.insert("author".into(), json!(a));
    }
    if let Some(m) = &opts.message {
        h.insert("comment".into(), json!(m));
    }
    match obj.get_mut("history").and_then(Value::as_array_mut) {
        Some(hist) => hist.push(Value::Object(h)),
        None => {
            obj.insert("history".into(), json!([h]));
        }
    }
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers"}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(json!(layer.diff_id)),
        None => rootfs["diff_ids"] = json!([layer.diff_id]),
    }
    let config_bytes = serde_json::to_vec(&config).map_err(io::Error::other)?;
    let config_digest = root.blobs().put(&config_bytes)?;
    let docker = manifest
        .get("mediaType")
        .and_then(Value::as_str)
        .is_some_and(|m| m == media::DOCKER_MANIFEST);
    let layer_type = if docker {
        media::DOCKER_LAYER_GZIP
    } else {
        media::OCI_LAYER_GZIP
    };
    manifest["config"]["digest"] = json!(config_digest.to_string());
    manifest["config"]["size"] = json!(config_bytes.len());
    let entry = json!({"mediaType": layer_type, "digest": layer.digest, "size": layer.size});
    match manifest.get_mut("layers").and_then(Value::as_array_mut) {
        Some(l) => l.push(entry),
        None => manifest["layers"] = json!([entry]),
    }
    let manifest_type = manifest
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(media::OCI_MANIFEST)
        .to_string();
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let digest = root.blobs().put(&manifest_bytes)?;
    let desc = image::descriptor(&manifest_type, &digest, manifest_bytes.len() as u64);
    match &opts.reference {
        Some(r) => {
            let r = Reference::parse(r).map_err(|_| CommitError::Reference(r.clone()))?;
            untagged::name(root, &[(r, desc)], None)?;
        }
        None => untagged::name(root, &[], Some(&desc))?,
    }
    Ok(config_digest)
}

/// `kiln import`: a filesystem tar (plain or compressed) as a one-layer
/// image for `platform` (`os/arch[/variant]`); its ID.
pub fn import(
    root: &Root,
    mut tar: impl Read,
    platform: &kiln_cache::image::Platform,
    opts: &CommitOptions,
) -> Result<Digest, CommitError> {
    let _lease = root.lease()?;
    // Stored as given, then read back to learn the diff_id.
    let (raw, _) = root.blobs().copy_from(&mut tar, None, None)?;
    let mut head = [0u8; 6];
    let n = root.blobs().open(&raw)?.read(&mut head)?;
    let file = root.blobs().open(&raw)?;
    let mut plain: Box<dyn Read> = match &head[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::stream::read::Decoder::new(file)?),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::BzDecoder::new(file)),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Box::new(liblzma::read::XzDecoder::new(file)),
        _ => Box::new(file),
    };
    // Recompressed with gzip, as docker stores an imported layer.
    let w = root.blobs().writer(None, None)?;
    let mut hashing = HashRead {
        inner: &mut plain,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
    };
    let mut gz = kiln_cache::pgzip::ParGzEncoder::new(w, 6);
    io::copy(&mut hashing, &mut gz)?;
    let w = gz.finish()?;
    let diff_id = format!(
        "sha256:{}",
        hex::encode(sha2::Digest::finalize(hashing.hasher))
    );
    let (blob, size) = w.commit()?;
    let _ = root.blobs().remove(&raw);
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    });
    if let Some(v) = &platform.variant {
        config["variant"] = json!(v);
    }
    apply_changes(&mut config, &opts.changes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG},
        "layers": [],
    });
    let layer = diff::LayerDigest {
        diff_id,
        digest: blob.to_string(),
        size,
        tar_size: 0,
        media_type: media::OCI_LAYER_GZIP,
        entries: 1,
    };
    finish(root, config, manifest, &layer, "", opts)
}

struct HashRead<'a> {
    inner: &'a mut dyn Read,
    hasher: sha2::Sha256,
}

impl Read for HashRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
}

/// A `CMD`/`ENTRYPOINT` argument: JSON array, else the shell form.
fn command_form(arg: &str) -> Value {
    match serde_json::from_str::<Vec<String>>(arg.trim()) {
        Ok(v) => json!(v),
        Err(_) => json!(["/bin/sh", "-c", arg]),
    }
}

/// Applies `-c` changes (the Dockerfile instructions docker's commit and
/// import take: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL,
/// USER, VOLUME, WORKDIR) to the config's `config`.
pub fn apply_changes(config: &mut Value, changes: &[String]) -> Result<(), CommitError> {
    if config.get("config").is_none_or(Value::is_null) {
        config["config"] = json!({});
    }
    let cfg = &mut config["config"];
    for ch in changes {
        let ch = ch.trim();
        let (inst, arg) = ch.split_once(char::is_whitespace).unwrap_or((ch, ""));
        let arg = arg.trim();
        match inst.to_ascii_uppercase().as_str() {
            "CMD" => cfg["Cmd"] = command_form(arg),
            "ENTRYPOINT" => cfg["Entrypoint"] = command_form(arg),
            "ENV" => {
                let pairs: Vec<(String, String)> = if arg.contains('=') {
                    arg.split_whitespace()
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                        .collect()
                } else {
                    match arg.split_once(char::is_whitespace) {
                        Some((k, v)) => vec![(k.to_string(), v.trim().to_string())],
                        None => {
                            return Err(CommitError::Change(format!("ENV needs a value: {ch}")))
                        }
                    }
                };
                let mut env: Vec<String> = cfg["Env"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                for (k, v) in pairs {
                    env.retain(|e| e.split('=').next() != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                }
                cfg["Env"] = json!(env);
            }
            "EXPOSE" => {
                for p in arg.split_whitespace() {
                    let key = if p.contains('/') {
                        p.to_string()
                    } else {
                        format!("{p}/tcp")
                    };
                    if !cfg["ExposedPorts"].is_object() {
                        cfg["ExposedPorts"] = json!({});
                    }
                    cfg["ExposedPorts"][key] = json!({});
                }
            }
            "LABEL" => {
                if !cfg["Labels"].is_object() {
                    cfg["Labels"] = json!({});
                }
                for kv in arg.split_whitespace() {
                    if let Some((k, v)) = kv.split_once('=') {
                        cfg["Labels"][k.trim_matches('"')] = json!(v.trim_matches('"'));
                    }
                }
            }
            "ONBUILD" => {
                let mut v = cfg["OnBuild"].as_array().cloned().unwrap_or_default();
                v.push(json!(arg));
                cfg["OnBuild"] = json!(v);
            }
            "STOPSIGNAL" => cfg["StopSignal"] = json!(arg),
            "USER" => cfg["User"] = json!(arg),
            "WORKDIR" => cfg["WorkingDir"] = json!(arg),
            "VOLUME" => {
                let paths: Vec<String> = serde_json::from_str(arg)
                    .unwrap_or_else(|_| arg.split_whitespace().map(str::to_string).collect());
                if !cfg["Volumes"].is_object() {
                    cfg["Volumes"] = json!({});
                }
                for p in paths {
                    cfg["Volumes"][p] = json!({});
                }
            }
            other => {
                return Err(CommitError::Change(format!(
                    "{other} is not a valid change command"
                )))
            }
        }
    }
    Ok(())
}

/// `kiln import http(s)://…`: the body is downloaded to a scratch file of
/// the store (streamed, never held in memory), then imported as a file
/// is. A response of 400 or more fails with docker's words (`failed to GET
/// URL with status 404 Not Found: BODY`).
pub fn import_url(
    root: &Root,
    url: &str,
    platform: &kiln_cache::image::Platform,
    opts: &CommitOptions,
) -> Result<Digest, CommitError> {
    let tmp = root.tmp_dir();
    std::fs::create_dir_all(&tmp)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let scratch = Scratch(tmp.join(format!("import-{}-{nanos}", std::process::id())));
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&scratch.0)?;
    download(url, &mut file)?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
    import(root, file, platform, opts)
}

/// A scratch file removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// GETs `url` into `file` (the proxy variables apply, as for docker's
/// daemon).
fn download(url: &str, file: &mut std::fs::File) -> Result<(), CommitError> {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let get_err = |e: reqwest::Error| {
        let mut s = format!("Get {url:?}: {e}");
        let mut cur = std::error::Error::source(&e);
        while let Some(c) = cur {
            s.push_str(&format!(": {c}"));
            cur = std::error::Error::source(c);
        }
        CommitError::Download(s)
    };
    rt.block_on(async {
        let mut resp = reqwest::get(url).await.map_err(get_err)?;
        let status = resp.status();
        if status.as_u16() >= 400 {
            let body = resp.text().await.unwrap_or_default();
            return Err(CommitError::Download(format!(
                "failed to GET {url} with status {status}: {}",
                body.trim()
            )));
        }
        while let Some(chunk) = resp.chunk().await.map_err(get_err)? {
            file.write_all(&chunk)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_as_docker() {
        let mut c = json!({"config": {"Env": ["A=1"]}});
        apply_changes(
            &mut c,
            &[
                "CMD [\"echo\", \"hi\"]".into(),
                "ENV A=2 B=3".into(),
                "EXPOSE 80".into(),
                "WORKDIR /app".into(),
                "ENTRYPOINT top -b".into(),
            ],
        )
        .unwrap();
        assert_eq!(c["config"]["Cmd"], json!(["echo", "hi"]));
        assert_eq!(c["config"]["Env"], json!(["A=2", "B=3"]));
        assert_eq!(c["config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(
            c["config"]["Entrypoint"],
            json!(["/bin/sh", "-c", "top -b"])
        );
        assert!(apply_changes(&mut c, &["RUN x".into()]).is_err());
    }
}

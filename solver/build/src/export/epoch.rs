//! Reproducible builds: `SOURCE_DATE_EPOCH`, as BuildKit honours it.
//!
//! The epoch comes from the build arg `SOURCE_DATE_EPOCH` (the CLI passes
//! the environment variable of the same name as that build arg when it is
//! not given, as buildx does). With it:
//! - the image config's `created` and the history entries this build adds
//!   are the epoch (the base image's history keeps its times);
//! - the directories WORKDIR creates get it as their times (lowering);
//! - the OCI and docker archives' `org.opencontainers.image.created`
//!   annotation is the epoch ([`annotate_created`]);
//! - every file written by `type=local` and `type=tar` has it as its mtime
//!   ([`set_tree_times`]);
//! - with `rewrite-timestamp=true` on an output, every time in the layers
//!   this build made is clamped to the epoch ([`rewrite_layers`]); the base
//!   image's layers are left as they are (BuildKit's immutable diff IDs).
//!
//! Layer tars are deterministic without any of this (sorted entries, fixed
//! gzip headers), so two builds of the same inputs with the same epoch and
//! `rewrite-timestamp` give the same bytes.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kiln_cache::{media, LayerRef, Root};
use oci_spec::image::Descriptor;

use super::{Built, ExportError};

/// The build arg (and environment variable) that fixes the build's time.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The `--output` key asking for layer times clamped to the epoch.
pub const REWRITE_TIMESTAMP: &str = "rewrite-timestamp";

/// The OCI annotation the oci and docker exporters put on the image's
/// descriptor in `index.json`.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// The epoch the build args carry, in seconds; `None` when unset or empty.
/// A value that is no integer is refused, as BuildKit's frontend refuses
/// it (`invalid SOURCE_DATE_EPOCH`).
pub fn source_date_epoch(
    build_args: &BTreeMap<String, String>,
) -> Result<Option<i64>, ExportError> {
    match build_args.get(SOURCE_DATE_EPOCH).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ExportError::Spec(format!("invalid SOURCE_DATE_EPOCH: {v}"))),
    }
}

/// The epoch as BuildKit's frontend finds it: the build arg, else the
/// default of a global `ARG SOURCE_DATE_EPOCH=…` in the Dockerfile
/// (`global_args`: the plan's global ARGs, build args already applied).
pub fn source_date_epoch_of_plan(
    build_args: &BTreeMap<String, String>,
    global_args: &[(String, String)],
) -> Result<Option<i64>, ExportError> {
    if build_args.contains_key(SOURCE_DATE_EPOCH) {
        return source_date_epoch(build_args);
    }
    let declared: BTreeMap<String, String> = global_args
        .iter()
        .filter(|(k, _)| k == SOURCE_DATE_EPOCH)
        .cloned()
        .collect();
    source_date_epoch(&declared)
}

/// Whether one `--output` value asks for `rewrite-timestamp=true`
/// (buildx's boolean: `true`/`false`, `1`/`0`, or the bare key).
pub fn rewrite_timestamp_requested(spec: &str) -> Result<bool, ExportError> {
    let mut on = false;
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        if k.trim() == REWRITE_TIMESTAMP {
            on = parse_bool(v).ok_or_else(|| {
                ExportError::Spec(format!("{REWRITE_TIMESTAMP}={v:?}: expected true or false"))
            })?;
        }
    }
    Ok(on)
}

/// Go's `strconv.ParseBool`, which BuildKit's exporter options use.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `top` with the `org.opencontainers.image.created` annotation BuildKit's
/// oci/docker exporter adds (unless already there): `created` is the epoch
/// when set, else the build's time.
pub fn annotate_created(top: &Descriptor, created: &str) -> Descriptor {
    let mut d = top.clone();
    let mut ann = d.annotations().clone().unwrap_or_default();
    ann.entry(ANNOTATION_CREATED.to_string())
        .or_insert_with(|| created.to_string());
    d.set_annotations(Some(ann));
    d
}

/// Sets atime and mtime under `dir` to `epoch`: what BuildKit's local and
/// tar exporters do to every file they write when an epoch is set. With
/// `only`, just the paths (relative to `dir`) the layers wrote and `dir`
/// itself, so files that were in a `type=local` folder before keep their
/// times. The walk never follows a symlink, so nothing outside `dir` is
/// touched.
pub fn set_tree_times(
    dir: &Path,
    epoch: i64,
    only: Option<&HashSet<PathBuf>>,
) -> Result<(), ExportError> {
    let t = kiln_worker::fileops::meta::Time {
        sec: epoch,
        nsec: 0,
    };
    let set = |p: &Path| {
        kiln_worker::fileops::meta::lutimes(p, t, t).map_err(|e| {
            ExportError::context(format!("setting the times of {}", p.display()))(e.into())
        })
    };
    let mut stack = vec![PathBuf::new()];
    let mut dirs = Vec::new();
    while let Some(rel) = stack.pop() {
        let p = dir.join(&rel);
        let md = std::fs::symlink_metadata(&p)?;
        let wanted = rel.as_os_str().is_empty() || only.is_none_or(|o| o.contains(&rel));
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(rel.join(e?.file_name()));
            }
            if wanted {
                dirs.push(p);
            }
        } else if wanted {
            set(&p)?;
        }
    }
    // Directories after their contents, deepest first.
    for p in dirs.iter().rev() {
        set(p)?;
    }
    Ok(())
}

/// The paths (relative, cleaned, with every parent) that `layers` write:
/// what [`set_tree_times`] touches in a `type=local` folder. Whiteouts
/// name nothing that remains.
pub fn layer_paths(root: &Root, layers: &[LayerRef]) -> Result<HashSet<PathBuf>, ExportError> {
    let mut out = HashSet::new();
    for l in layers {
        let input = super::local::layer_reader(root, l)?;
        let mut ar = tar::Archive::new(input);
        let entries = ar
            .entries()
            .map_err(|e| ExportError::context(format!("reading layer {}", l.digest))(e.into()))?;
        for e in entries {
            let e = e.map_err(|e| {
                ExportError::context(format!("reading layer {}", l.digest))(e.into())
            })?;
            let Ok(path) = e.path() else { continue };
            let mut rel = PathBuf::new();
            for c in path.components() {
                if let std::path::Component::Normal(n) = c {
                    rel.push(n);
                    out.insert(rel.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Clamps the times in the layers `b` made to `epoch`, as BuildKit's image
/// exporter does with `rewrite-timestamp=true`: the leading layers that
/// are the base image's own (same diff IDs as its config says) are kept,
/// every later one is rewritten into a new uncompressed blob whose entries
/// carry no time after the epoch (ustar and PAX times alike). Everything
/// else in each tar stays byte for byte, so the rewrite is deterministic.
pub fn rewrite_layers(root: &Root, b: &mut Built, epoch: i64) -> Result<(), ExportError> {
    let base: Vec<String> = b
        .meta
        .base
        .as_ref()
        .and_then(|c| c.pointer("/rootfs/diff_ids"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let kept = b
        .layers
        .iter()
        .zip(&base)
        .take_while(|(l, d)| l.diff_id.to_string() == **d)
        .count();
    for l in b.layers.iter_mut().skip(kept) {
        *l = rewrite_layer(root, l, epoch)?;
    }
    Ok(())
}

/// One layer rewritten (see [`rewrite_layers`]).
fn rewrite_layer(root: &Root, l: &LayerRef, epoch: i64) -> Result<LayerRef, ExportError> {
    let ctx = |what: &str| ExportError::context(format!("{what} layer {}", l.digest));
    let input = super::local::layer_reader(root, l)?;
    let mut w = root.blobs().writer(None, None)?;
    clamp_tar(input, &mut w, epoch).map_err(|e| ctx("rewriting the timestamps of")(e.into()))?;
    let (digest, size) = w.commit()?;
    Ok(LayerRef {
        diff_id: digest.clone(),
        digest,
        size,
        media_type: media::OCI_LAYER.to_string(),
    })
}

/// Copies the tar `input` to `out` with every time after `epoch` set to it.
/// Entries are handled raw (extension headers are entries of their own),
/// so names, xattrs, sparse maps and data are copied untouched.
pub fn clamp_tar(input: impl Read, out: &mut impl Write, epoch: i64) -> io::Result<()> {
    let mut ar = tar::Archive::new(input);
    let mut builder = tar::Builder::new(out);
    for entry in ar.entries()?.raw(true) {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                let data = clamp_pax(&data, epoch)?;
                header.set_size(data.len() as u64);
                clamp_header(&mut header, epoch)?;
                builder.append(&header, data.as_slice())?;
            }
            _ => {
                clamp_header(&mut header, epoch)?;
                builder.append(&header, &mut entry)?;
            }
        }
    }
    builder.into_inner()?.flush()
}

/// Clamps the ustar mtime (and GNU atime/ctime) of `h`; the checksum is
/// recomputed only when something changed.
fn clamp_header(h: &mut tar::Header, epoch: i64) -> io::Result<()> {
    let clamp_to = u64::try_from(epoch.max(0)).unwrap_or(0);
    let mut changed = false;
    if h.mtime()? > clamp_to {
        h.set_mtime(clamp_to);
        changed = true;
    }
    if let Some(gnu) = h.as_gnu_mut() {
        if gnu.atime().map(|t| t > clamp_to).unwrap_or(false) {
            gnu.set_atime(clamp_to);
            changed = true;
        }
        if gnu.ctime().map(|t| t > clamp_to).unwrap_or(false) {
            gnu.set_ctime(clamp_to);
            changed = true;
        }
    }
    if changed {
        h.set_cksum();
    }
    Ok(())
}

/// Clamps the `mtime`, `atime` and `ctime` records of a PAX extended
/// header (`LEN KEY=VALUE\n` records; the length counts itself).
fn clamp_pax(data: &[u8], epoch: i64) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed PAX header");
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad());
        }
        let record = &rest[sp + 1..len];
        rest = &rest[len..];
        let body = record.strip_suffix(b"\n").ok_or_else(bad)?;
        let (key, value) = match body.iter().position(|&c| c == b'=') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => return Err(bad()),
        };
        let is_time = matches!(key, b"mtime" | b"atime" | b"ctime");
        let later = is_time
            && std::str::from_utf8(value)
                .ok()
                .and_then(pax_seconds)
                .is_some_and(|t| t > epoch || (t == epoch && v_has_fraction(value)));
        if later {
            out.extend_from_slice(&pax_record(key, epoch.to_string().as_bytes()));
        } else {
            out.extend_from_slice(&pax_record(key, value));
        }
    }
    Ok(out)
}

/// The whole seconds of a PAX time (`123.456` → 123, `-1.5` → -2).
fn pax_seconds(v: &str) -> Option<i64> {
    let t: f64 = v.parse().ok()?;
    Some(t.floor() as i64)
}

/// Whether a PAX time has a non-zero fraction (so it is after the whole
/// second it starts in).
fn v_has_fraction(v: &[u8]) -> bool {
    match v.iter().position(|&c| c == b'.') {
        Some(i) => v[i + 1..].iter().any(|&c| c != b'0'),
        None => false,
    }
}

/// One PAX record, its length prefix counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 2; // '=' and '\n'
    let mut len = body + 1;
    loop {
        let total = body + 1 + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_from_build_args() {
        let mut a = BTreeMap::new();
        assert_eq!(source_date_epoch(&a).ok(), Some(None));
        a.insert(SOURCE_DATE_EPOCH.to_string(), " 1700000000 ".to_string());
        assert_eq!(source_date_epoch(&a).ok(), Some(Some(1_700_000_000)));
        a.insert(SOURCE_DATE_EPOCH.to_string(), String::new());
        assert_eq!(source_date_epoch(&a).ok(), Some(None));
        a.insert(SOURCE_DATE_EPOCH.to_string(), "yesterday".to_string());
        assert!(source_date_epoch(&a).is_err());
    }

    #[test]
    fn rewrite_timestamp_option() {
        let r = |s: &str| rewrite_timestamp_requested(s).ok();
        assert_eq!(r("type=oci,dest=x"), Some(false));
        assert_eq!(r("type=oci,dest=x,rewrite-timestamp=true"), Some(true));
        assert_eq!(r("type=oci,rewrite-timestamp=1,dest=x"), Some(true));
        assert_eq!(r("type=oci,rewrite-timestamp=false"), Some(false));
        assert_eq!(r("type=oci,rewrite-timestamp=maybe"), None);
    }

    #[test]
    fn pax_records_are_self_counting() {
        assert_eq!(pax_record(b"mtime", b"1"), b"11 mtime=1\n".to_vec());
        assert_eq!(
            pax_record(b"path", &[b'a'; 95]).len(),
            pax_record(b"path", &[b'a'; 95])
                .split(|&c| c == b' ')
                .next()
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        );
    }

    #[test]
    fn pax_times_are_clamped() {
        let mut data = pax_record(b"mtime", b"2000000000.5");
        data.extend(pax_record(b"path", b"x"));
        data.extend(pax_record(b"atime", b"5"));
        let out = clamp_pax(&data, 1000).unwrap_or_default();
        let mut want = pax_record(b"mtime", b"1000");
        want.extend(pax_record(b"path", b"x"));
        want.extend(pax_record(b"atime", b"5"));
        assert_eq!(out, want);
    }

    #[test]
    fn tar_times_are_clamped_and_early_ones_kept() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, mtime) in [("new", 2_000_000_000u64), ("old", 10)] {
            let mut h = tar::Header::new_ustar();
            h.set_size(2);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, &b"hi"[..]).unwrap_or_default();
        }
        let tar = b.into_inner().unwrap_or_default();
        let mut out = Vec::new();
        assert!(clamp_tar(tar.as_slice(), &mut out, 1000).is_ok());
        assert_eq!(out.len(), tar.len());
        let mut ar = tar::Archive::new(out.as_slice());
        let times: Vec<(String, u64)> = ar
            .entries()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                (
                    e.path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    e.header().mtime().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(times, vec![("new".into(), 1000), ("old".into(), 10)]);
    }
}

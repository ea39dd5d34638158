//! Export: a build's result (the target's layers and the image metadata
//! lowering produced) becomes an OCI image in the store ([`image`]), then
//! goes where `--output` says: names in the image store ([`image`]), an
//! OCI or docker archive ([`oci`], [`docker`]), a root filesystem in a
//! folder ([`local`]), or a tar of it ([`tar`]).

pub mod docker;
pub mod epoch;
pub mod image;
pub mod local;
pub mod oci;
pub mod tar;

use std::path::PathBuf;
use std::str::FromStr;

use kiln_cache::compress::{self, Conversion};
use kiln_cache::{Digest, LayerRef, Reference, Root};
use kiln_frontend::lower::ImageMeta;
use kiln_frontend::plan::Platform;
use oci_spec::image::Descriptor;

pub use image::Image;

/// Why an export failed: what was being done (the message shown) and, when
/// there is one, the cause behind it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An `--output` value is malformed.
    #[error("{0}")]
    Spec(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A step of the export failed; the message says which.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The result is not what the store holds.
    #[error("{0}")]
    Invalid(String),
}

impl ExportError {
    fn context(
        context: impl Into<String>,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> ExportError {
        let context = context.into();
        move |source| ExportError::Context { context, source }
    }
}

/// One platform's result: what [`image::assemble`] turns into an image.
#[derive(Debug, Clone)]
pub struct Built {
    pub platform: Platform,
    pub layers: Vec<LayerRef>,
    pub meta: ImageMeta,
    /// Every step of the build came from the cache (nothing ran), so an
    /// earlier export of the same result may be reused as is.
    pub all_cached: bool,
}

impl Built {
    /// The diff_ids of its layers, lowest first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
}

/// The build's timestamp: the `SOURCE_DATE_EPOCH` build arg when set
/// (reproducible builds, as BuildKit honours it; see [`epoch`]), else now.
pub fn created_at(epoch: Option<i64>) -> String {
    let secs = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC (what image configs carry);
/// beyond what a timestamp can hold, the epoch.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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

impl FromStr for Output {
    type Err = ExportError;

    /// Parses buildx's `--output` syntax: `type=T,dest=D` (also the
    /// shorthand `-o DIR` for a local export, and `type=registry`-less
    /// `push=false`… options are ignored).
    fn from_str(s: &str) -> Result<Output, ExportError> {
        let spec = |m: String| ExportError::Spec(m);
        if !s.contains('=') {
            return Ok(Output::Local(PathBuf::from(s)));
        }
        let mut kind = None;
        let mut dest = None;
        let mut conv = Conversion::default();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                spec(format!(
                    "invalid output option {part:?}: expected key=value"
                ))
            })?;
            match k.trim() {
                "type" => kind = Some(v.trim().to_string()),
                "dest" => dest = Some(PathBuf::from(v.trim())),
                "compression" => {
                    conv.compression =
                        compress::parse_compression(v).map_err(|e| spec(format!("{e}")))?
                }
                // Read by `epoch::rewrite_timestamp_requested` into
                // `BuildOptions::rewrite_timestamp`; checked here.
                epoch::REWRITE_TIMESTAMP => {
                    epoch::rewrite_timestamp_requested(part)?;
                }
                "force-compression" => {
                    conv.force = v.trim().parse().map_err(|_| {
                        spec(format!("force-compression={v:?}: expected true or false"))
                    })?
                }
                _ => {}
            }
        }
        let need = |d: Option<PathBuf>, t: &str| {
            d.ok_or_else(|| spec(format!("output type={t} needs dest=PATH")))
        };
        match kind.as_deref().unwrap_or("image") {
            "image" | "docker-image" => Ok(Output::Image),
            "oci" => Ok(Output::Oci(need(dest, "oci")?, conv)),
            "docker" => Ok(Output::Docker(need(dest, "docker")?, conv)),
            "local" => Ok(Output::Local(need(dest, "local")?)),
            "tar" => Ok(Output::Tar(need(dest, "tar")?)),
            other => Err(spec(format!(
                "unsupported output type {other:?} (image, oci, docker, local, tar)"
            ))),
        }
    }
}

/// Sends the exported image (`top`: a manifest or an index) where `out`
/// says. `tags` name it in the store (`type=image`) and in archives.
/// `epoch` is the build's `SOURCE_DATE_EPOCH`: the archives' created
/// annotation and the local/tar file times (see [`epoch`]).
pub fn output(
    root: &Root,
    out: &Output,
    top: &Descriptor,
    built: &[Built],
    tags: &[Reference],
    epoch: Option<i64>,
) -> Result<(), ExportError> {
    match out {
        Output::Image => image::name(root, top, tags),
        Output::Oci(dest, conv) => {
            let top = epoch::annotate_created(top, &created_at(epoch));
            oci::write(root, &top, tags, dest, conv)
        }
        Output::Docker(dest, conv) => {
            let top = epoch::annotate_created(top, &created_at(epoch));
            docker::write(root, &top, tags, dest, conv)
        }
        Output::Local(dest) => local::write(root, built, dest, epoch),
        Output::Tar(dest) => tar::write(root, built, dest, epoch),
    }
}

/// The archive items for `top` under `tags` (unnamed without tags), for
/// [`oci`] and [`docker`].
fn archive_items(top: &Descriptor, tags: &[Reference]) -> Vec<kiln_cache::archive::SaveItem> {
    if tags.is_empty() {
        vec![(None, top.clone())]
    } else {
        tags.iter()
            .map(|t| (Some(t.clone()), top.clone()))
            .collect()
    }
}

/// Writes an archive of `format` to `dest` (`-`: stdout).
fn write_archive(
    root: &Root,
    top: &Descriptor,
    tags: &[Reference],
    dest: &std::path::Path,
    conv: &Conversion,
    format: kiln_cache::archive::Format,
) -> Result<(), ExportError> {
    use kiln_cache::archive::{self, SaveOptions};
    let items = archive_items(top, tags);
    let opts = SaveOptions { format };
    if dest.as_os_str() == "-" {
        let mut stdout = std::io::stdout().lock();
        archive::save_compressed(root, &items, &mut stdout, &opts, conv)?;
    } else {
        archive::save_compressed_to_file(root, &items, dest, &opts, conv)?;
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
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn outputs_parse_like_buildx() {
        let parse = |s: &str| s.parse::<Output>().ok();
        assert_eq!(
            parse("type=oci,dest=/x.tar"),
            Some(Output::Oci("/x.tar".into(), Conversion::default()))
        );
        assert_eq!(
            parse("type=docker,dest=d.tar,compression=zstd,force-compression=true"),
            Some(Output::Docker(
                "d.tar".into(),
                Conversion {
                    compression: kiln_cache::compress::Compression::Zstd,
                    force: true
                }
            ))
        );
        assert!(parse("type=oci,dest=x,compression=estargz").is_none());
        assert_eq!(parse("type=image"), Some(Output::Image));
        assert_eq!(parse("out"), Some(Output::Local("out".into())));
        assert!(parse("type=local").is_none());
        assert!(parse("type=nope,dest=x").is_none());
    }
}

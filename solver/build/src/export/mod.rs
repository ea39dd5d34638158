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
pub mod push;
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

/// Every `--output` key each exporter type accepts, as buildx spells
/// them: the one place that says what `-o` understands. A key not listed
/// for its type is an error naming it (buildx's exporters refuse unknown
/// options too), so a typo is never silently ignored.
pub const OUTPUT_KEYS: &[(&str, &[&str])] = &[
    ("image", IMAGE_KEYS),
    ("docker-image", IMAGE_KEYS),
    ("registry", IMAGE_KEYS),
    ("oci", ARCHIVE_KEYS),
    ("docker", ARCHIVE_KEYS),
    ("local", FS_KEYS),
    ("tar", FS_KEYS),
];

const IMAGE_KEYS: &[&str] = &[
    "type",
    "name",
    "push",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    epoch::REWRITE_TIMESTAMP,
];

/// `rewrite-timestamp` is accepted here too: the files already carry the
/// epoch, and the layers are rewritten as for any output.
const FS_KEYS: &[&str] = &["type", "dest", ATTESTATION_PREFIX, epoch::REWRITE_TIMESTAMP];

/// The `type=local`/`type=tar` key BuildKit puts before the names of the
/// attestation files (`attestation-prefix=x.` gives `x.provenance.json`).
pub const ATTESTATION_PREFIX: &str = "attestation-prefix";

/// What `type=local` and `type=tar` take beyond `dest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsOptions {
    /// `attestation-prefix=`: put before each attestation file's name.
    pub attestation_prefix: String,
}

const ARCHIVE_KEYS: &[&str] = &[
    "type",
    "dest",
    "compression",
    "compression-level",
    "force-compression",
    epoch::REWRITE_TIMESTAMP,
];

fn keys_of(table: &[(&str, &'static [&'static str])], kind: &str) -> &'static [&'static str] {
    table
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| *v)
        .unwrap_or(&[])
}

/// `type=image` with options, or `type=registry`: the image named in the
/// store under `names` (else the `-t` tags) and, with `push`, sent to the
/// registry those names say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// `name=` (comma separated, quoted as buildx: `"name=a,b"`); empty
    /// means the build's `-t` tags.
    pub names: Vec<Reference>,
    /// `push=true`, or `type=registry`.
    pub push: bool,
    /// How layers are compressed in the stored and pushed image.
    pub conversion: Conversion,
    /// Whether `compression=` or `force-compression=` was given: only then
    /// is an image that is not pushed converted (a push always goes out
    /// compressed, as docker's).
    pub convert: bool,
    /// `compression-level=`, checked against the compression's range
    /// (also in [`Conversion::level`], which applies it).
    pub compression_level: Option<i32>,
    /// `oci-mediatypes=` (default true, as BuildKit's image exporter):
    /// false gives docker's manifest and layer media types.
    pub oci_mediatypes: bool,
}

impl Default for ImageSpec {
    /// `type=image`'s defaults: the `-t` names, no push, layers as built,
    /// OCI media types.
    fn default() -> Self {
        ImageSpec {
            names: Vec::new(),
            push: false,
            conversion: Conversion::default(),
            convert: false,
            compression_level: None,
            oci_mediatypes: true,
        }
    }
}

/// Where `--output` sends the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The image store, under the `-t` names.
    Image,
    /// `type=image` with options or `type=registry`: named (and pushed) as
    /// [`ImageSpec`] says.
    Named(ImageSpec),
    /// An OCI archive; layers converted as the `compression=` and
    /// `force-compression=` options say (gzip by default, as buildx).
    /// `-` is stdout.
    Oci(PathBuf, Conversion),
    /// A docker-archive; layers converted as for [`Output::Oci`].
    Docker(PathBuf, Conversion),
    /// The root filesystem in a folder; attestations as files beside it.
    Local(PathBuf, FsOptions),
    /// A tar of the root filesystem (and attestation files); `-` is
    /// stdout.
    Tar(PathBuf, FsOptions),
}

impl Output {
    /// Whether this output writes to stdout (`dest=-`), so the caller
    /// keeps anything else off it.
    pub fn to_stdout(&self) -> bool {
        match self {
            Output::Oci(d, _) | Output::Docker(d, _) | Output::Tar(d, _) => d.as_os_str() == "-",
            _ => false,
        }
    }
}

/// Splits an `--output` value as buildx's CSV reader does: commas
/// separate fields, double quotes protect commas inside a field (`"name=a,b"`
/// or `name="a,b"`), `""` inside quotes is a quote.
fn csv_fields(s: &str) -> Result<Vec<String>, ExportError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(ExportError::Spec(format!(
            "invalid output {s:?}: unterminated quote"
        )));
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(k: &str, v: &str) -> Result<bool, ExportError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ExportError::Spec(format!(
            "invalid value {v:?} for output option {k}: expected true or false"
        ))),
    }
}

/// The levels BuildKit accepts for each compression.
fn check_level(level: i32, c: compress::Compression) -> Result<(), ExportError> {
    let (lo, hi) = match c {
        compress::Compression::Gzip => (0, 9),
        compress::Compression::Zstd => (0, 22),
        compress::Compression::None => (i32::MIN, i32::MAX),
    };
    if level < lo || level > hi {
        return Err(ExportError::Spec(format!(
            "compression-level={level} is out of range for {} ({lo}..={hi})",
            compress::name(c)
        )));
    }
    Ok(())
}

impl FromStr for Output {
    type Err = ExportError;

    /// Parses buildx's `--output` syntax: `type=T,key=value,…` with the
    /// keys of [`OUTPUT_KEYS`]; the shorthands `-o DIR` (a local export)
    /// and `-o -` (a tar on stdout).
    fn from_str(s: &str) -> Result<Output, ExportError> {
        let spec = |m: String| ExportError::Spec(m);
        if s == "-" {
            return Ok(Output::Tar(PathBuf::from("-"), FsOptions::default()));
        }
        if !s.contains('=') {
            return Ok(Output::Local(PathBuf::from(s), FsOptions::default()));
        }
        let mut pairs = Vec::new();
        for part in csv_fields(s)? {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                spec(format!(
                    "invalid output option {part:?}: expected key=value"
                ))
            })?;
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        let kind = pairs
            .iter()
            .rev()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "image".into());
        if !OUTPUT_KEYS.iter().any(|(k, _)| *k == kind) {
            return Err(spec(format!(
                "unsupported output type {kind:?} (image, registry, oci, docker, local, tar)"
            )));
        }
        let accepted = keys_of(OUTPUT_KEYS, &kind);
        let mut dest = None;
        let mut conv = Conversion::default();
        let mut explicit = false;
        let mut level = None;
        let mut names = Vec::new();
        let mut push = kind == "registry";
        let mut oci_mediatypes = true;
        let mut fs_opts = FsOptions::default();
        for (k, v) in &pairs {
            if !accepted.contains(&k.as_str()) {
                return Err(spec(format!(
                    "unknown output option {k:?} for type={kind} (accepted: {})",
                    accepted[1..].join(", ")
                )));
            }
            match k.as_str() {
                "dest" => dest = Some(PathBuf::from(v)),
                "compression" => {
                    conv.compression =
                        compress::parse_compression(v).map_err(|e| spec(format!("{e}")))?;
                    explicit = true;
                }
                // Read by `epoch::rewrite_timestamp_requested` into
                // `BuildOptions::rewrite_timestamp`; checked here.
                epoch::REWRITE_TIMESTAMP => {
                    parse_bool(k, v)?;
                }
                "force-compression" => {
                    conv.force = parse_bool(k, v)?;
                    explicit = true;
                }
                "compression-level" => {
                    level = Some(v.parse::<i32>().map_err(|_| {
                        spec(format!(
                            "invalid compression-level {v:?}: expected a number"
                        ))
                    })?)
                }
                "name" => {
                    for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        names.push(
                            Reference::parse(n)
                                .map_err(|e| spec(format!("invalid image name {n:?}: {e}")))?,
                        );
                    }
                }
                "push" => push = parse_bool(k, v)?,
                "oci-mediatypes" => oci_mediatypes = parse_bool(k, v)?,
                ATTESTATION_PREFIX => fs_opts.attestation_prefix = v.clone(),
                _ => {}
            }
        }
        if let Some(l) = level {
            check_level(l, conv.compression)?;
        }
        conv.level = level;
        let need = |d: Option<PathBuf>, t: &str| {
            d.ok_or_else(|| spec(format!("output type={t} needs dest=PATH")))
        };
        match kind.as_str() {
            "image" | "docker-image" | "registry" => {
                let plain = pairs.iter().all(|(k, _)| k == "type");
                if plain && !push {
                    return Ok(Output::Image);
                }
                Ok(Output::Named(ImageSpec {
                    names,
                    push,
                    conversion: conv,
                    convert: explicit,
                    compression_level: level,
                    oci_mediatypes,
                }))
            }
            "oci" => Ok(Output::Oci(need(dest, "oci")?, conv)),
            "docker" => Ok(Output::Docker(need(dest, "docker")?, conv)),
            "local" => Ok(Output::Local(need(dest, "local")?, fs_opts)),
            _ => Ok(Output::Tar(need(dest, "tar")?, fs_opts)),
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
    output_with(root, out, top, built, tags, epoch, &[])
}

/// [`output`], with the attestations of each platform (in `built`'s
/// order; empty: none) that `type=local` and `type=tar` write as files
/// ([`crate::attest::files`]); the image outputs carry theirs in `top`.
pub fn output_with(
    root: &Root,
    out: &Output,
    top: &Descriptor,
    built: &[Built],
    tags: &[Reference],
    epoch: Option<i64>,
    attestations: &[Vec<crate::attest::Predicate>],
) -> Result<(), ExportError> {
    match out {
        Output::Image => image::name(root, top, tags),
        // Needs the registry: the build calls [`push::export`] for these.
        Output::Named(_) => Ok(()),
        Output::Oci(dest, conv) => {
            let top = epoch::annotate_created(top, &created_at(epoch));
            oci::write(root, &top, tags, dest, conv)
        }
        Output::Docker(dest, conv) => {
            let top = epoch::annotate_created(top, &created_at(epoch));
            docker::write(root, &top, tags, dest, conv)
        }
        Output::Local(dest, o) => local::write_with(root, built, dest, epoch, o, attestations),
        Output::Tar(dest, o) => tar::write_with(root, built, dest, epoch, o, attestations),
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
                    force: true,
                    level: None,
                }
            ))
        );
        assert!(parse("type=oci,dest=x,compression=estargz").is_none());
        assert_eq!(parse("type=image"), Some(Output::Image));
        assert_eq!(
            parse("out"),
            Some(Output::Local("out".into(), FsOptions::default()))
        );
        assert_eq!(
            parse("type=local,dest=o,attestation-prefix=x."),
            Some(Output::Local(
                "o".into(),
                FsOptions {
                    attestation_prefix: "x.".into()
                }
            ))
        );
        assert!(parse("type=local").is_none());
        assert!(parse("type=nope,dest=x").is_none());
        assert_eq!(
            parse("-"),
            Some(Output::Tar("-".into(), FsOptions::default()))
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = |s: &str| match s.parse::<Output>() {
            Err(e) => e.to_string(),
            Ok(o) => panic!("{s} parsed as {o:?}"),
        };
        assert!(err("type=image,bogus=1").contains("\"bogus\""));
        assert!(err("type=tar,dest=x,compression=gzip").contains("\"compression\""));
        assert!(err("type=image,push=maybe").contains("push"));
        assert!(err("type=image,compression=gzip,compression-level=12").contains("out of range"));
        // PENDING keys: accepted, their effect is elsewhere.
        assert!("type=oci,dest=x,rewrite-timestamp=true"
            .parse::<Output>()
            .is_ok());
    }

    #[test]
    fn image_names_split_as_buildx() {
        let spec = |s: &str| match s.parse::<Output>() {
            Ok(Output::Named(spec)) => spec,
            other => panic!("{s}: {other:?}"),
        };
        let s = spec("type=image,\"name=r/a:1,r/b:2\",push=true");
        assert_eq!(s.names.len(), 2);
        assert!(s.push);
        assert_eq!(s.names[1].to_string(), "docker.io/r/b:2");
        let s = spec("type=registry,name=\"r/a,r/c\",oci-mediatypes=false,compression=zstd");
        assert!(s.push && !s.oci_mediatypes && s.convert);
        assert_eq!(s.names.len(), 2);
        assert_eq!(spec("type=image,name=x").names.len(), 1);
    }
}

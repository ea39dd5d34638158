//! `kiln images`, `tag`, `rmi`, `inspect`, `history`, `load`, `save`,
//! `prune`: the local image store, with docker's flags and output formats
//! so scripts written for docker keep working.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use kiln_cache::archive::{self, Format, LoadOptions, SaveOptions};
use kiln_cache::catalog::{self, RemoveError};
use kiln_cache::compress::{self, Compression, Conversion};
use kiln_cache::gc::{self, PruneOptions};
use kiln_cache::image::{self, Platform, Resolved};
use kiln_cache::{untagged, Reference, Root};
use miette::{miette, IntoDiagnostic, Result};

use crate::table::table;
use crate::units;
use serde_json::{json, Value};

/// The local image commands, flattened into kiln's top level as docker
/// has them (`kiln images`, not `kiln image ls`).
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List images (docker's REPOSITORY TAG IMAGE ID CREATED SIZE table).
    Images {
        /// Only images of this repository (and tag).
        reference: Option<String>,
        /// Only print image IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate image IDs.
        #[arg(long)]
        no_trunc: bool,
        /// Show digests.
        #[arg(long)]
        digests: bool,
        /// Show all images (kiln keeps no intermediate images, so the
        /// same list: `<none>` images are always shown, as docker's).
        #[arg(short, long)]
        all: bool,
        /// Filter: `dangling=true|false` (only `<none>` images, or none).
        #[arg(short, long)]
        filter: Vec<String>,
        /// Format the output using a Go template (`table …`, `json`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Give an image another name.
    Tag {
        /// Existing image (name or ID).
        source: String,
        /// New name.
        target: String,
    },
    /// Remove image names; content no other image uses is deleted.
    Rmi {
        /// Images (names or IDs).
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove every name of an image given by ID.
        #[arg(short, long)]
        force: bool,
    },
    /// Show an image's details as JSON (like docker image inspect).
    Inspect {
        /// Images (names or IDs).
        #[arg(required = true)]
        images: Vec<String>,
        /// Platform of a multi-platform image (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        // --- life: containers first, as docker's `inspect`.
        /// Format the output using a Go template.
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Only this kind of object: `container` or `image`.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Display total file sizes if the type is container.
        #[arg(short = 's', long)]
        size: bool,
    },
    /// Show how an image's layers were made.
    History {
        /// Image (name or ID).
        image: String,
        /// Platform of a multi-platform image (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Print sizes and dates in human-readable form.
        #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
        human: bool,
        /// Only print image IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Import images from an OCI archive or layout, or a docker-archive.
    Load {
        /// Archive file or OCI layout folder ("-" for stdin).
        #[arg(short, long, default_value = "-")]
        input: PathBuf,
        /// Name the loaded image this (instead of the archive's names).
        #[arg(short, long)]
        tag: Option<String>,
        /// Print nothing.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Export images to an archive (docker-archive or OCI).
    Save {
        /// Output file (default: stdout, if it is not a terminal).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Archive format.
        #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
        format: SaveFormat,
        /// Layer compression in the archive: gzip (default), zstd, or
        /// uncompressed; already-compressed layers are kept as they are.
        #[arg(long, default_value = "gzip", value_parser = compress::parse_compression)]
        compression: Compression,
        /// Also recompress layers already compressed another way.
        #[arg(long)]
        force_compression: bool,
        /// Images (names or IDs).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Delete blobs no image uses; report the space freed.
    Prune {
        /// Also drop cached build results: keep only named images' content.
        /// Unpacked layers go too, base images' included: the next build
        /// on them unpacks them again (its progress says "unpacking base
        /// layers").
        #[arg(short, long)]
        all: bool,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage images (`kiln image prune`).
    Image {
        #[command(subcommand)]
        cmd: super::image_prune::ImageCmd,
    },
}

/// `kiln save --format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SaveFormat {
    /// docker-archive (`docker load`).
    Docker,
    /// OCI image layout in a tar.
    Oci,
}

/// Renders a store error as the CLI shows errors.
fn fail(e: kiln_cache::Error) -> miette::Report {
    miette!("{e}")
}

fn open_root() -> Result<Root> {
    Root::from_env().map_err(fail)
}

fn parse_platform(p: &Option<String>) -> Result<Option<Platform>> {
    p.as_deref()
        .map(image::parse_platform)
        .transpose()
        .map_err(fail)
}

/// Runs one image command; errors come back for main to render, and
/// partial failures (one of several `rmi` names) as exit code 1.
pub fn run(cmd: Cmd) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::Images {
            reference,
            quiet,
            no_trunc,
            digests,
            all: _,
            filter,
            format,
        } => images(
            &mut out,
            reference,
            ImagesView {
                quiet,
                no_trunc,
                digests,
                format: format.as_deref(),
            },
            &filter,
        ),
        Cmd::Tag { source, target } => {
            let root = open_root()?;
            let found = image::find(&root, &source).map_err(fail)?;
            let target = Reference::parse(&target).map_err(fail)?;
            if target.digest().is_some() {
                return Err(miette!(
                    "refusing to create a tag with a digest reference: {target}"
                ));
            }
            untagged::name(&root, &[(target, found.descriptor)], None).map_err(fail)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rmi { images, force } => rmi(&mut out, images, force),
        Cmd::Inspect {
            images,
            platform,
            format,
            kind,
            size,
        } => match kind.as_deref() {
            Some("image") if format.is_none() => inspect(&mut out, images, platform),
            Some("container") => super::container_inspect::inspect(
                &images,
                format.as_deref(),
                super::container_inspect::Kind::Container,
                platform,
                size,
            ),
            _ => super::container_inspect::inspect(
                &images,
                format.as_deref(),
                super::container_inspect::Kind::Any,
                platform,
                size,
            ),
        },
        Cmd::History {
            image,
            platform,
            no_trunc,
            human,
            quiet,
        } => history(&mut out, image, platform, no_trunc, human, quiet),
        Cmd::Load { input, tag, quiet } => load(&mut out, input, tag, quiet),
        Cmd::Save {
            output,
            format,
            compression,
            force_compression,
            images,
        } => {
            let conv = Conversion {
                compression,
                force: force_compression,
                level: None,
            };
            save(output, format, &conv, images)
        }
        Cmd::Prune { all, dry_run } => prune(&mut out, all, dry_run),
        Cmd::Image { cmd } => {
            drop(out);
            super::image_prune::run(cmd)
        }
    }
}

fn w(out: &mut dyn Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes())
        .map_err(|e| miette!("writing output: {e}"))
}

// ------------------------------------------------------------------ images

/// How `kiln images` shows its rows.
struct ImagesView<'a> {
    quiet: bool,
    no_trunc: bool,
    digests: bool,
    format: Option<&'a str>,
}

fn images(
    out: &mut dyn Write,
    filter: Option<String>,
    view: ImagesView<'_>,
    filters: &[String],
) -> Result<ExitCode> {
    let ImagesView {
        quiet,
        no_trunc,
        digests,
        format,
    } = view;
    let fmt = crate::template::Format::parse(format).map_err(|e| miette!("{e}"))?;
    let mut items = Vec::new();
    let root = open_root()?;
    let filter = filter
        .map(|f| Reference::parse_name(&f).map_err(fail))
        .transpose()?;
    let mut dangling = None;
    for f in filters {
        match f.split_once('=') {
            Some(("dangling", v)) => {
                dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(miette!("invalid filter 'dangling={v}'")),
                })
            }
            _ => {
                return Err(miette!(
                    "invalid filter {f:?} (supported: dangling=true|false)"
                ))
            }
        }
    }
    let mut rows = Vec::new();
    let mut ids_seen = Vec::new();
    for (name, d) in catalog::list(&root, filter.as_ref()).map_err(fail)? {
        let none = untagged::is_dangling(&name);
        if dangling.is_some_and(|want| want != none) {
            continue;
        }
        let id = untagged::image_id(&root, &d)
            .map(|i| i.to_string())
            .unwrap_or_else(|_| d.digest().to_string());
        let (created, size) = match image::resolve(root.blobs(), &d, None, &name.familiar()) {
            Ok(r) => (created_since(&r), units::human_size(r.content_size())),
            Err(_) => ("N/A".to_string(), "N/A".to_string()),
        };
        let shown_id = if no_trunc {
            id.clone()
        } else {
            id.trim_start_matches("sha256:").chars().take(12).collect()
        };
        let (repo, tag) = if none {
            ("<none>".to_string(), "<none>".to_string())
        } else {
            (
                name.familiar_name(),
                name.tag().unwrap_or("<none>").to_string(),
            )
        };
        items.push(serde_json::json!({
            "Containers": "N/A",
            "CreatedSince": created,
            "Digest": name.digest().map_or_else(|| "<none>".to_string(), |dg| dg.to_string()),
            "ID": shown_id,
            "Repository": repo,
            "Size": size,
            "Tag": tag,
        }));
        if quiet {
            if !ids_seen.contains(&shown_id) {
                ids_seen.push(shown_id.clone());
                rows.push(vec![shown_id]);
            }
            continue;
        }
        let mut row = if none {
            vec!["<none>".to_string(), "<none>".to_string()]
        } else {
            vec![
                name.familiar_name(),
                name.tag().unwrap_or("<none>").to_string(),
            ]
        };
        if digests {
            row.push(if none {
                "<none>".to_string()
            } else {
                name.digest()
                    .map_or_else(|| d.digest().to_string(), |dg| dg.to_string())
            });
        }
        row.extend([shown_id, created, size]);
        rows.push(row);
    }
    if !quiet {
        let headers = [
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("Digest", "DIGEST"),
            ("ID", "IMAGE ID"),
            ("CreatedSince", "CREATED"),
            ("Size", "SIZE"),
        ];
        if let Some(text) = fmt.render(&items, &headers).map_err(|e| miette!("{e}"))? {
            w(out, &text)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    if quiet {
        for r in rows {
            w(out, &format!("{}\n", r.join("")))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    w(out, &table(&header, &rows, 20))?;
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ rmi

fn rmi(out: &mut dyn Write, inputs: Vec<String>, force: bool) -> Result<ExitCode> {
    let root = open_root()?;
    let mut failed = false;
    for input in inputs {
        match rmi_one(&root, &input, force) {
            Ok(lines) => w(out, &lines)?,
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn rmi_one(root: &Root, input: &str, force: bool) -> Result<String, RemoveError> {
    let id = image::find(root, input)
        .ok()
        .and_then(|f| untagged::image_id(root, &f.descriptor).ok());
    let removed = catalog::remove(root, input, force, |image_id| {
        kiln_worker::container::run::image_user(root.path(), image_id)
            .map(|c| c.short_id().to_string())
    })?;
    let mut s = String::new();
    for r in removed
        .untagged
        .iter()
        .filter(|r| !untagged::is_dangling(r))
    {
        s.push_str(&format!("Untagged: {}\n", r.familiar()));
    }
    if let Some(d) = &removed.deleted {
        let shown = id.map_or_else(|| d.digest().to_string(), |i| i.to_string());
        s.push_str(&format!("Deleted: {shown}\n"));
    }
    Ok(s)
}

// ------------------------------------------------------------------ inspect

fn inspect(out: &mut dyn Write, inputs: Vec<String>, platform: Option<String>) -> Result<ExitCode> {
    let root = open_root()?;
    let platform = parse_platform(&platform)?;
    let mut docs = Vec::new();
    let mut failed = false;
    for input in &inputs {
        match inspect_one(&root, input, platform.as_ref()) {
            Ok(v) => docs.push(v),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    let text = serde_json::to_string_pretty(&docs).map_err(|e| miette!("{e}"))?;
    w(out, &format!("{text}\n"))?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One image's inspect document as JSON (for `kiln inspect`'s containers
/// and images together).
/// Whether `input` names an image of the store (so a failed inspect of it
/// reports its own error, not "No such object").
pub(crate) fn image_exists(input: &str) -> bool {
    open_root().is_ok_and(|root| image::find(&root, input).is_ok())
}

pub(crate) fn inspect_doc(input: &str, platform: Option<String>) -> Result<InspectDoc> {
    let root = open_root()?;
    let platform = parse_platform(&platform)?;
    inspect_one(&root, input, platform.as_ref())
}

fn inspect_one(root: &Root, input: &str, platform: Option<&Platform>) -> Result<InspectDoc> {
    let found = image::find(root, input).map_err(fail)?;
    let r = image::resolve(root.blobs(), &found.descriptor, platform, input).map_err(fail)?;
    let c = &r.config;
    let names: Vec<&Reference> = found
        .names
        .iter()
        .filter(|n| !untagged::is_dangling(n))
        .collect();
    let repo_tags: Vec<String> = names
        .iter()
        .filter(|n| n.tag().is_some())
        .map(|n| n.familiar_tagged())
        .collect();
    let mut repo_digests: Vec<String> = names
        .iter()
        .map(|n| format!("{}@{}", n.familiar_name(), found.descriptor.digest()))
        .collect();
    repo_digests.dedup();
    let diff_ids = c.pointer("/rootfs/diff_ids").cloned().unwrap_or(json!([]));
    let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let doc = InspectDoc {
        id: untagged::image_id(root, &found.descriptor)
            .map_err(fail)?
            .to_string(),
        repo_tags,
        repo_digests,
        parent: String::new(),
        comment: text("comment"),
        created: c.get("created").cloned().unwrap_or(Value::Null),
        docker_version: text("docker_version"),
        author: text("author"),
        config: c.get("config").cloned().unwrap_or(json!({})),
        architecture: text("architecture"),
        variant: c.get("variant").and_then(Value::as_str).map(str::to_string),
        os: text("os"),
        size: r.content_size(),
        root_fs: json!({ "Type": "layers", "Layers": diff_ids }),
        metadata: json!({ "LastTagTime": "0001-01-01T00:00:00Z" }),
        descriptor: serde_json::to_value(&found.descriptor).unwrap_or(Value::Null),
        manifest: json!({
            "Digest": r.descriptor.digest().to_string(),
            "Platform": r.platform().to_string(),
            "ConfigDigest": r.config_digest.to_string(),
        }),
    };
    Ok(doc)
}

/// `docker image inspect`'s document, fields in docker's order (a struct
/// keeps it; a JSON map would sort them).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InspectDoc {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: Value,
    docker_version: String,
    author: String,
    config: Value,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: String,
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: Value,
    metadata: Value,
    descriptor: Value,
    manifest: Value,
}

// ------------------------------------------------------------------ history

fn history(
    out: &mut dyn Write,
    input: String,
    platform: Option<String>,
    no_trunc: bool,
    human: bool,
    quiet: bool,
) -> Result<ExitCode> {
    let root = open_root()?;
    let platform = parse_platform(&platform)?;
    let found = image::find(&root, &input).map_err(fail)?;
    let r =
        image::resolve(root.blobs(), &found.descriptor, platform.as_ref(), &input).map_err(fail)?;
    let rows = catalog::history(&r);
    let id = untagged::image_id(&root, &found.descriptor)
        .map_err(fail)?
        .to_string();
    let mut table_rows = Vec::new();
    for (i, (h, size)) in rows.iter().enumerate() {
        let image_id = if i == 0 {
            if no_trunc {
                id.clone()
            } else {
                id.trim_start_matches("sha256:").chars().take(12).collect()
            }
        } else {
            "<missing>".to_string()
        };
        if quiet {
            table_rows.push(vec![image_id]);
            continue;
        }
        let created_raw = h.get("created").and_then(Value::as_str).unwrap_or("");
        let created = if human {
            units::parse_rfc3339(created_raw).map_or_else(|| "N/A".into(), units::ago)
        } else {
            created_raw.to_string()
        };
        let by = h.get("created_by").and_then(Value::as_str).unwrap_or("");
        let by = if no_trunc {
            by.to_string()
        } else {
            ellipsis(by, 45)
        };
        let size = if human {
            units::human_size(*size)
        } else {
            size.to_string()
        };
        let comment = h
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        table_rows.push(vec![image_id, created, by, size, comment]);
    }
    if quiet {
        for r in table_rows {
            w(out, &format!("{}\n", r.join("")))?;
        }
    } else {
        w(
            out,
            &table(
                &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                &table_rows,
                20,
            ),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

// ------------------------------------------------------------------ load / save

fn load(out: &mut dyn Write, input: PathBuf, tag: Option<String>, quiet: bool) -> Result<ExitCode> {
    let root = open_root()?;
    if input.as_os_str() == "-" && std::io::stdin().is_terminal() {
        return Err(miette!(
            "requested load from stdin, but stdin is empty (use -i FILE)"
        ));
    }
    let tag = tag
        .map(|t| Reference::parse(&t).map_err(fail))
        .transpose()?;
    let report = archive::load(&root, &input, &LoadOptions { tag }).map_err(fail)?;
    for img in report.images.iter().filter(|i| i.names.is_empty()) {
        // An image the archive does not name is kept as `<none>`.
        untagged::name(&root, &[], Some(&img.descriptor)).map_err(fail)?;
    }
    if quiet {
        return Ok(ExitCode::SUCCESS);
    }
    for img in &report.images {
        if img.names.is_empty() {
            let id = untagged::image_id(&root, &img.descriptor).map_err(fail)?;
            w(out, &format!("Loaded image ID: {id}\n"))?;
        }
        for n in &img.names {
            w(out, &format!("Loaded image: {}\n", n.familiar()))?;
        }
    }
    for t in &report.unnamed_tags {
        eprintln!(
            "warning: the archive names an image only by the tag {t:?}; use --tag to name it"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn save(
    output: Option<PathBuf>,
    format: SaveFormat,
    conv: &Conversion,
    inputs: Vec<String>,
) -> Result<ExitCode> {
    let root = open_root()?;
    let mut items = Vec::new();
    for input in &inputs {
        let f = image::find(&root, input).map_err(fail)?;
        let name = f
            .reference
            .clone()
            .filter(|r| !untagged::is_dangling(r))
            .or_else(|| f.names.iter().find(|n| !untagged::is_dangling(n)).cloned());
        items.push((name, f.descriptor));
    }
    let opts = SaveOptions {
        format: match format {
            SaveFormat::Docker => Format::Docker,
            SaveFormat::Oci => Format::Oci,
        },
    };
    match output {
        Some(p) if p.as_os_str() != "-" => {
            archive::save_compressed_to_file(&root, &items, &p, &opts, conv).map_err(fail)?
        }
        _ => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(miette!(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect"
                ));
            }
            let mut lock = stdout.lock();
            archive::save_compressed(&root, &items, &mut lock, &opts, conv).map_err(fail)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ prune

fn prune(out: &mut dyn Write, all: bool, dry_run: bool) -> Result<ExitCode> {
    let root = open_root()?;
    if root.leased() {
        // Builds, pulls and loads hold a lease on what they use; prune
        // deletes nothing from under them.
        eprintln!("waiting for the builds, pulls and loads using the store to finish...");
    }
    // `<none>` images go first (docker's image prune), then what only
    // they held.
    let mut pruned_images = Vec::new();
    for (name, d) in root.images().list().map_err(fail)? {
        if untagged::is_dangling(&name) {
            pruned_images.push(
                untagged::image_id(&root, &d)
                    .map_or_else(|_| d.digest().to_string(), |i| i.to_string()),
            );
        }
    }
    if !dry_run {
        untagged::forget_all(&root).map_err(fail)?;
    }
    let records = kiln_build::prune::prune_records(&root, all, dry_run).into_diagnostic()?;
    let report = gc::prune(
        &root,
        &PruneOptions {
            all,
            extra_roots: vec![kiln_cache::buildcache::roots],
            dry_run,
        },
    )
    .map_err(fail)?;
    let verb = if dry_run { "Would delete" } else { "Deleted" };
    if !pruned_images.is_empty() {
        w(out, &format!("{verb} Images:\n"))?;
        for id in &pruned_images {
            w(out, &format!("deleted: {id}\n"))?;
        }
    }
    if records > 0 {
        w(out, &format!("{verb} build cache records: {records}\n"))?;
    }
    if !report.removed.is_empty() {
        w(out, &format!("{verb} blobs:\n"))?;
        for (d, size) in &report.removed {
            w(out, &format!("{d} ({})\n", units::human_size(*size)))?;
        }
        w(out, "\n")?;
    }
    w(
        out,
        &format!(
            "Total reclaimed space: {}\n",
            units::human_size(report.freed)
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ formatting

fn created_since(r: &Resolved) -> String {
    r.config
        .get("created")
        .and_then(Value::as_str)
        .and_then(units::parse_rfc3339)
        .map_or_else(|| "N/A".into(), units::ago)
}

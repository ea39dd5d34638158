//! `kiln cp`, `kiln diff`, `kiln export`: a container's files from the
//! outside, with docker's argument forms, semantics and messages. Reading
//! and writing the files is `kiln_worker::container::files`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use kiln_cache::Root;
use kiln_worker::container::commit::{self, CommitOptions};
use kiln_worker::container::files::{self, ContainerFs, Found};
use kiln_worker::container::{Container, Store};
use miette::{miette, Result};

/// The file commands, flattened into kiln's top level as docker has them.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Copy files between a container and the host (CONTAINER:SRC DEST,
    /// SRC CONTAINER:DEST; `-` is a tar on stdin/stdout).
    Cp {
        /// Archive mode: keep uid/gid of the copied files.
        #[arg(short, long)]
        archive: bool,
        /// Follow a symbolic link given as SRC_PATH.
        #[arg(short = 'L', long = "follow-link")]
        follow_link: bool,
        /// Suppress progress output (kiln prints none).
        #[arg(short, long)]
        quiet: bool,
        src: String,
        dest: String,
    },
    /// List the changes to a container's files (A added, C changed, D
    /// deleted).
    Diff { container: String },
    /// Create a new image from a container's changes.
    Commit {
        /// Author (e.g. "Jane <jane@example.com>").
        #[arg(short, long)]
        author: Option<String>,
        /// Apply Dockerfile instructions to the image (CMD, ENTRYPOINT,
        /// ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).
        #[arg(short, long = "change")]
        change: Vec<String>,
        /// Commit message.
        #[arg(short, long)]
        message: Option<String>,
        /// Pause the container during commit (its processes frozen while
        /// its changes are read; default true).
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        pause: bool,
        container: String,
        /// REPOSITORY[:TAG] (none: an untagged image).
        reference: Option<String>,
    },
    /// Import a filesystem tar (file or `-`) as an image.
    Import {
        /// Apply Dockerfile instructions to the image.
        #[arg(short, long = "change")]
        change: Vec<String>,
        /// Commit message.
        #[arg(short, long)]
        message: Option<String>,
        /// The image's platform (os/arch[/variant]; default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// A tar file (plain or compressed), or `-` for stdin.
        file: String,
        /// REPOSITORY[:TAG].
        reference: Option<String>,
    },
    /// Write a container's filesystem as a tar (to stdout by default).
    Export {
        /// Write to a file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        container: String,
    },
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    let root = Root::from_env().map_err(|e| miette!("{e}"))?;
    let store = Store::open(root.path()).map_err(|e| miette!("{e}"))?;
    match cmd {
        Cmd::Diff { container } => {
            let Some(c) = find(&store, &container) else {
                return Ok(ExitCode::from(1));
            };
            let mut out = std::io::stdout().lock();
            for ch in files::changes(&c, &store.dir_of(&c.id)) {
                let _ = writeln!(out, "{} {}", ch.kind, ch.path);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export { output, container } => {
            let Some(c) = find(&store, &container) else {
                return Ok(ExitCode::from(1));
            };
            let dir = store.dir_of(&c.id);
            let r = match &output {
                Some(p) => std::fs::File::create(p)
                    .and_then(|f| files::export(&c, &dir, std::io::BufWriter::new(f)))
                    .and_then(|mut w| w.flush()),
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        eprintln!(
                            "cowardly refusing to save to a terminal. Use the -o flag or redirect"
                        );
                        return Ok(ExitCode::from(1));
                    }
                    files::export(&c, &dir, std::io::stdout().lock()).and_then(|mut w| w.flush())
                }
            };
            r.map_err(|e| miette!("exporting {}: {e}", c.name))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Commit {
            author,
            change,
            message,
            pause,
            container,
            reference,
        } => {
            let Some(mut c) = find(&store, &container) else {
                return Ok(ExitCode::from(1));
            };
            if let Some(m) = platform_manifest(&root, &c) {
                c.image_id = m;
            }
            let opts = CommitOptions {
                reference,
                changes: change,
                message,
                author,
            };
            // --- life: `--pause` (default): frozen while its changes are read.
            let made = kiln_worker::container::pause::frozen_during(&store, &c, pause, || {
                commit::commit(&root, &c, &store.dir_of(&c.id), &opts)
            });
            match made {
                Ok(id) => {
                    println!("{id}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("Error response from daemon: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Import {
            change,
            message,
            platform,
            file,
            reference,
        } => {
            let platform = match platform {
                Some(p) => kiln_cache::image::parse_platform(&p).map_err(|e| miette!("{e}"))?,
                None => kiln_cache::image::Platform::host(),
            };
            let opts = CommitOptions {
                reference,
                changes: change,
                message,
                author: None,
            };
            let input: Box<dyn std::io::Read> = if file == "-" {
                Box::new(std::io::stdin().lock())
            } else if file.starts_with("http://") || file.starts_with("https://") {
                // --- life: docker's daemon downloads the URL.
                return Ok(imported(commit::import_url(&root, &file, &platform, &opts)));
            } else {
                match std::fs::File::open(&file) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        eprintln!("open {file}: {e}");
                        return Ok(ExitCode::from(1));
                    }
                }
            };
            Ok(imported(commit::import(&root, input, &platform, &opts)))
        }
        Cmd::Cp {
            archive,
            follow_link,
            quiet: _,
            src,
            dest,
        } => Ok(match cp(&store, &src, &dest, archive, follow_link) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("{msg}");
                ExitCode::from(1)
            }
        }),
    }
}

/// The manifest of this host's platform when the container's image is an
/// index (a multi-platform image): what a commit adds its layer to.
fn platform_manifest(root: &Root, c: &Container) -> Option<String> {
    let d: kiln_cache::Digest = c.image_id.parse().ok()?;
    let bytes = root.blobs().read(&d).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("manifests")?;
    let mt = v
        .get("mediaType")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(kiln_cache::media::OCI_INDEX);
    let desc = kiln_cache::image::descriptor(mt, &d, bytes.len() as u64);
    let r = kiln_cache::image::resolve(root.blobs(), &desc, None, &c.image).ok()?;
    Some(r.descriptor.digest().to_string())
}

fn find(store: &Store, key: &str) -> Option<Container> {
    match store.find(key) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("Error response from daemon: {e}");
            None
        }
    }
}

/// `CONTAINER:PATH` splits; a path with `/` before any `:` (or starting
/// with `.` or `/`) is local, as docker's `splitCpArg`.
fn split_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') || arg.starts_with('.') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.contains('/') => (Some(c), p),
        _ => (None, arg),
    }
}

fn cp(store: &Store, src: &str, dest: &str, archive: bool, follow: bool) -> Result<(), String> {
    match (split_arg(src), split_arg(dest)) {
        ((Some(_), _), (Some(_), _)) => Err("copying between containers is not supported".into()),
        ((None, _), (None, _)) => Err("must specify at least one container source".into()),
        ((Some(key), path), (None, local)) => {
            let c = store
                .find(key)
                .map_err(|e| format!("Error response from daemon: {e}"))?;
            let fs = ContainerFs::of(&c, &store.dir_of(&c.id));
            copy_from(&fs, path, local, follow)
        }
        ((None, local), (Some(key), path)) => {
            let c = store
                .find(key)
                .map_err(|e| format!("Error response from daemon: {e}"))?;
            let fs = ContainerFs::of(&c, &store.dir_of(&c.id));
            copy_to(&fs, local, path, archive, follow)
        }
    }
}

fn rel_of(path: &str) -> Result<PathBuf, String> {
    let abs = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    kiln_worker::snapshot::rel_components(&abs).ok_or_else(|| format!("invalid path {path:?}"))
}

/// Follows symlinks of the container path (`-L`, and every component
/// but the last) inside the container's root.
fn resolve(
    fs: &ContainerFs,
    path: &str,
    follow_last: bool,
) -> Result<(PathBuf, Option<Found>), String> {
    let mut rel = rel_of(path)?;
    for _ in 0..40 {
        let mut cur = PathBuf::new();
        let comps: Vec<_> = rel.iter().map(|c| c.to_os_string()).collect();
        let mut changed = false;
        for (i, comp) in comps.iter().enumerate() {
            cur.push(comp);
            let last = i + 1 == comps.len();
            if last && !follow_last {
                break;
            }
            let Some(f) = fs.find(&cur) else {
                break;
            };
            let Ok(md) = std::fs::symlink_metadata(f.host()) else {
                break;
            };
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(f.host()).map_err(|e| e.to_string())?;
                let base = if target.is_absolute() {
                    PathBuf::from("/")
                } else {
                    Path::new("/").join(cur.parent().unwrap_or(Path::new("")))
                };
                let mut next = base.join(target);
                for rest in &comps[i + 1..] {
                    next.push(rest);
                }
                rel = normalize(&next);
                changed = true;
                break;
            }
        }
        if !changed {
            let found = fs.find(&rel);
            return Ok((rel, found));
        }
    }
    Err(format!("too many levels of symbolic links: {path}"))
}

/// `..` and `.` taken out, never above `/`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// CONTAINER:SRC → host DEST (or `-`: a tar on stdout).
fn copy_from(fs: &ContainerFs, path: &str, local: &str, follow: bool) -> Result<(), String> {
    let (rel, found) = resolve(fs, path, follow)?;
    let Some(found) = found else {
        return Err(format!(
            "Error response from daemon: Could not find the file {path} in container"
        ));
    };
    let md = std::fs::symlink_metadata(found.host()).map_err(|e| e.to_string())?;
    let contents_only = path.ends_with("/.") && md.is_dir();
    if !md.is_dir() && (path.ends_with('/') || path.ends_with("/.")) {
        return Err(format!(
            "Error response from daemon: not a directory: {path}"
        ));
    }
    let base = rel
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if local == "-" {
        let mut tar = tar::Builder::new(std::io::stdout().lock());
        let name = if contents_only {
            PathBuf::from(".")
        } else {
            base
        };
        files::append_tree(fs, &found, &name, &mut tar).map_err(|e| e.to_string())?;
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let dest = Path::new(local);
    let dest_md = std::fs::metadata(dest).ok();
    let target = match (&dest_md, md.is_dir()) {
        (Some(d), _) if d.is_dir() => {
            if contents_only {
                dest.to_path_buf()
            } else {
                dest.join(&base)
            }
        }
        (Some(_), true) => return Err("cannot copy a directory to a file".into()),
        (Some(_), false) => dest.to_path_buf(),
        (None, _) => {
            if local.ends_with('/') && !md.is_dir() {
                return Err(format!("destination directory {local} does not exist"));
            }
            if !dest
                .parent()
                .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir())
            {
                return Err(format!(
                    "no such directory: {}",
                    dest.parent().unwrap_or(dest).display()
                ));
            }
            dest.to_path_buf()
        }
    };
    // Through a tar, so one code path keeps modes, times and links.
    let mut buf = Vec::new();
    {
        let mut tar = tar::Builder::new(&mut buf);
        files::append_tree(fs, &found, Path::new("x"), &mut tar).map_err(|e| e.to_string())?;
        tar.finish().map_err(|e| e.to_string())?;
    }
    // docker cp does not chown on the host (the caller owns the files).
    extract(&buf, &target, false)
}

/// Unpacks `tar` (whose top entry is `x`) so that `x` becomes `target`.
fn extract(tar_bytes: &[u8], target: &Path, keep_owner: bool) -> Result<(), String> {
    let mut a = tar::Archive::new(tar_bytes);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    a.set_unpack_xattrs(false);
    for e in a.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let p = e.path().map_err(|e| e.to_string())?.into_owned();
        let rest = p.strip_prefix("x").unwrap_or(&p).to_path_buf();
        let out = if rest.as_os_str().is_empty() {
            target.to_path_buf()
        } else {
            target.join(rest)
        };
        if e.header().entry_type().is_dir() && out.is_dir() {
            let mode = e.header().mode().unwrap_or(0o755);
            let _ =
                std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(mode));
        } else {
            if let Ok(m) = std::fs::symlink_metadata(&out) {
                if !m.is_dir() {
                    let _ = std::fs::remove_file(&out);
                }
            }
            e.unpack(&out)
                .map_err(|err| format!("{}: {err}", out.display()))?;
        }
        let (uid, gid) = if keep_owner {
            (
                e.header().uid().unwrap_or(0) as u32,
                e.header().gid().unwrap_or(0) as u32,
            )
        } else {
            (0, 0)
        };
        let _ = std::os::unix::fs::lchown(&out, Some(uid), Some(gid));
    }
    Ok(())
}

/// Host SRC (or `-`: a tar on stdin) → CONTAINER:DEST.
fn copy_to(
    fs: &ContainerFs,
    local: &str,
    path: &str,
    archive: bool,
    follow: bool,
) -> Result<(), String> {
    let (rel, found) = resolve(fs, path, true)?;
    let dest_is_dir = found
        .as_ref()
        .and_then(|f| std::fs::metadata(f.host()).ok())
        .is_some_and(|m| m.is_dir());
    let mut buf = Vec::new();
    let target_rel: PathBuf;
    if local == "-" {
        if !dest_is_dir {
            return Err(format!(
                "Error response from daemon: Could not find the file {path} in container"
            ));
        }
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)
            .map_err(|e| e.to_string())?;
        // Prefix every entry with `x/` so extract puts them in the dir.
        let mut re = Vec::new();
        {
            let mut out = tar::Builder::new(&mut re);
            let mut a = tar::Archive::new(buf.as_slice());
            for e in a.entries().map_err(|e| e.to_string())? {
                let mut e = e.map_err(|e| e.to_string())?;
                let p = e.path().map_err(|e| e.to_string())?.into_owned();
                let mut h = e.header().clone();
                let name = Path::new("x").join(p);
                if h.entry_type().is_symlink() || h.entry_type().is_hard_link() {
                    let l = e
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.into_owned())
                        .unwrap_or_default();
                    out.append_link(&mut h, &name, l)
                        .map_err(|e| e.to_string())?;
                } else {
                    out.append_data(&mut h, &name, &mut e)
                        .map_err(|e| e.to_string())?;
                }
            }
            out.finish().map_err(|e| e.to_string())?;
        }
        buf = re;
        target_rel = rel;
    } else {
        let src = Path::new(local);
        let md = if follow {
            std::fs::metadata(src)
        } else {
            std::fs::symlink_metadata(src)
        }
        .map_err(|_| format!("lstat {local}: no such file or directory"))?;
        let contents_only = local.ends_with("/.") && md.is_dir();
        let base = src
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        target_rel = match (found.is_some(), dest_is_dir, md.is_dir()) {
            (true, true, _) if contents_only => rel.clone(),
            (true, true, _) => rel.join(&base),
            (true, false, true) => return Err("cannot copy a directory to a file".into()),
            (true, false, false) => rel.clone(),
            (false, _, false) if path.ends_with('/') => {
                return Err(format!("destination directory {path} does not exist"))
            }
            (false, _, _) => rel.clone(),
        };
        let host = PathBuf::from(local);
        let plain = ContainerFs::of_plain();
        let f = Found::Plain(if follow {
            std::fs::canonicalize(&host).unwrap_or(host)
        } else {
            host
        });
        let mut tar = tar::Builder::new(&mut buf);
        files::append_tree(&plain, &f, Path::new("x"), &mut tar).map_err(|e| e.to_string())?;
        tar.finish().map_err(|e| e.to_string())?;
    }
    let out = files::writable_path(fs, &target_rel, local == "-").map_err(|e| e.to_string())?;
    extract(&buf, &out, archive)
}

/// `kiln import`'s answer: the image ID, or docker's error (exit 1).
fn imported(r: Result<kiln_cache::Digest, commit::CommitError>) -> ExitCode {
    match r {
        Ok(id) => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error response from daemon: {e}");
            ExitCode::from(1)
        }
    }
}

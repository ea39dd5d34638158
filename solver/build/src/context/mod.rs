//! Where the build context and the Dockerfile come from, as buildx reads
//! `docker buildx build [-f FILE] CONTEXT`: a folder; `-` for stdin (a
//! tar, plain or compressed, or a bare Dockerfile and no context); a git
//! URL; an HTTP URL of a tarball or of a Dockerfile. `-f -` reads the
//! Dockerfile from stdin. Every form ends as a folder on disk and a
//! Dockerfile path, so the rest of the pipeline sees one kind of context.

pub mod named;
mod remote;
mod stdin;

use std::path::{Path, PathBuf};

use kiln_cache::Root;
use kiln_worker::git_source::{GitError, GitRef};
use kiln_worker::http_source::HttpError;

use crate::{BuildError, BuildOptions};

/// Where the build context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// A folder.
    Dir(PathBuf),
    /// Stdin: a tar (plain, gzip, bzip2, xz or zstd, recognised by its
    /// magic) unpacked into the store's temporary space, or else a bare
    /// Dockerfile with an empty context.
    StdinTar,
    /// A git repository (`https://…/r.git#ref:dir`, `git@host:r.git`,
    /// `git://…`, `ssh://…`, `github.com/x/y`).
    Git(String),
    /// An HTTP(S) URL of a tarball (the context) or of a Dockerfile (no
    /// context).
    Url(String),
}

impl Context {
    /// The positional argument as buildx classifies it: `-`, then an
    /// existing folder, then a URL or git reference; anything else is a
    /// folder that will be reported missing.
    pub fn parse(arg: &str) -> Context {
        if arg == "-" {
            return Context::StdinTar;
        }
        if Path::new(arg).is_dir() {
            return Context::Dir(PathBuf::from(arg));
        }
        if GitRef::parse(arg).is_some() {
            return Context::Git(arg.to_string());
        }
        if arg.starts_with("http://") || arg.starts_with("https://") {
            return Context::Url(arg.to_string());
        }
        Context::Dir(PathBuf::from(arg))
    }
}

/// Why the context or the Dockerfile could not be had; the messages are
/// buildx's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("invalid argument: can't use stdin for both build context and dockerfile")]
    StdinConflict,
    #[error("ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles")]
    DockerfileConflict,
    #[error("Dockerfile from stdin is not supported with remote contexts")]
    RemoteStdinDockerfile,
    #[error("unable to prepare context: path {0:?} not found")]
    NotFound(String),
    #[error("unable to prepare context: {0} is not a git repository URL")]
    NotGit(String),
    #[error("failed to read context from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("failed to unpack the context archive: {0}")]
    Unpack(#[source] std::io::Error),
    #[error("failed to read dockerfile from stdin: {0}")]
    StdinDockerfile(#[source] std::io::Error),
    #[error("failed to load git context: {0}")]
    Git(#[from] GitError),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// The context on disk and the Dockerfile to read; the temporary folders
/// behind them live as long as this.
pub(crate) struct Prepared {
    pub dir: PathBuf,
    pub dockerfile: PathBuf,
    _guards: Vec<tempfile::TempDir>,
}

impl Prepared {
    /// The Dockerfile's text, as the build and `kiln check` both read it.
    pub fn read_dockerfile(&self) -> Result<String, BuildError> {
        std::fs::File::open(&self.dockerfile)
            .and_then(kiln_frontend::parser::read_source)
            .map_err(BuildError::context(format!(
                "failed to read dockerfile {}",
                self.dockerfile.display()
            )))
    }
}

/// A scratch folder in the store's temporary space, removed on drop.
pub(crate) fn scratch(root: &Root, prefix: &str) -> Result<tempfile::TempDir, BuildError> {
    std::fs::create_dir_all(root.tmp_dir())?;
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root.tmp_dir())?)
}

/// Brings the context and the Dockerfile of `opts` onto disk.
pub(crate) fn prepare(
    opts: &BuildOptions,
    root: &Root,
    rt: &tokio::runtime::Runtime,
) -> Result<Prepared, BuildError> {
    let df_stdin = opts.dockerfile.as_deref() == Some(Path::new("-"));
    let mut guards = Vec::new();
    // A Dockerfile given with the context: relative to the working folder
    // for a local folder, inside the context for the others.
    let (dir, dockerfile) = match &opts.context {
        Context::Dir(p) => {
            if !p.is_dir() {
                return Err(InputError::NotFound(p.display().to_string()).into());
            }
            (p.clone(), opts.dockerfile.clone().filter(|_| !df_stdin))
        }
        Context::StdinTar => {
            if df_stdin {
                return Err(InputError::StdinConflict.into());
            }
            match stdin::read(root)? {
                stdin::Stdin::Context(tmp) => {
                    let dir = tmp.path().to_path_buf();
                    guards.push(tmp);
                    let df = opts.dockerfile.as_deref().map(|f| inside(&dir, f));
                    (dir, df)
                }
                stdin::Stdin::Dockerfile(text) => {
                    if opts.dockerfile.is_some() {
                        return Err(InputError::DockerfileConflict.into());
                    }
                    let (tmp, df) = dockerfile_only(root, &text)?;
                    let dir = tmp.path().join("context");
                    guards.push(tmp);
                    (dir, Some(df))
                }
            }
        }
        Context::Git(spec) => {
            if df_stdin {
                return Err(InputError::RemoteStdinDockerfile.into());
            }
            let (tmp, dir) = remote::git(spec, opts, root)?;
            guards.push(tmp);
            let df = opts.dockerfile.as_deref().map(|f| inside(&dir, f));
            (dir, df)
        }
        Context::Url(url) => {
            if df_stdin {
                return Err(InputError::RemoteStdinDockerfile.into());
            }
            let (tmp, dir, df) = remote::url(url, root, rt)?;
            guards.push(tmp);
            let df = df.or_else(|| opts.dockerfile.as_deref().map(|f| inside(&dir, f)));
            (dir, df)
        }
    };
    let dockerfile = if df_stdin {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut text)
            .map_err(InputError::StdinDockerfile)?;
        let (tmp, df) = dockerfile_only(root, &text)?;
        guards.push(tmp);
        df
    } else {
        default_name(dockerfile.unwrap_or_else(|| dir.join("Dockerfile")))
    };
    Ok(Prepared {
        dir,
        dockerfile,
        _guards: guards,
    })
}

/// `f` below the context `dir` (a leading `/` is the context's top).
fn inside(dir: &Path, f: &Path) -> PathBuf {
    dir.join(f.strip_prefix("/").unwrap_or(f))
}

/// BuildKit reads `dockerfile` when `Dockerfile` is missing (moby#10858).
fn default_name(df: PathBuf) -> PathBuf {
    if df.file_name().is_some_and(|n| n == "Dockerfile") && !df.exists() {
        let lower = df.with_file_name("dockerfile");
        if lower.is_file() {
            return lower;
        }
    }
    df
}

/// A scratch folder holding `Dockerfile` (the text given) and an empty
/// `context` folder.
fn dockerfile_only(root: &Root, text: &[u8]) -> Result<(tempfile::TempDir, PathBuf), BuildError> {
    let tmp = scratch(root, "dockerfile-")?;
    std::fs::create_dir(tmp.path().join("context"))?;
    let df = tmp.path().join("Dockerfile");
    std::fs::write(&df, text)?;
    Ok((tmp, df))
}

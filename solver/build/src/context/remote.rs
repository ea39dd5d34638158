//! Remote contexts: a git repository checked out with the system `git`,
//! or an HTTP URL whose body is a tarball (the context) or a Dockerfile
//! (no context), as BuildKit's dockerui reads them.

use std::io::Read;
use std::path::PathBuf;

use kiln_cache::Root;
use kiln_worker::git_source::{self, Access, Checkout, GitRef};
use kiln_worker::http_source::{Downloads, HttpError};

use super::{scratch, stdin, InputError};
use crate::{BuildError, BuildOptions};

/// The build argument that keeps `.git` in a git context.
pub const KEEP_GIT_DIR_ARG: &str = "BUILDKIT_CONTEXT_KEEP_GIT_DIR";

/// Checks `spec` out; returns the scratch folder and the context folder
/// inside it (the reference's subdirectory).
pub(super) fn git(
    spec: &str,
    opts: &BuildOptions,
    root: &Root,
) -> Result<(tempfile::TempDir, PathBuf), BuildError> {
    let r = GitRef::parse_checked(spec)
        .map_err(InputError::Git)?
        .ok_or_else(|| InputError::NotGit(spec.to_string()))?;
    let keep_git_dir = opts
        .build_args
        .get(KEEP_GIT_DIR_ARG)
        .is_some_and(|v| truthy(v));
    let access = Access::of(&r, &opts.secrets).map_err(InputError::Git)?;
    let tmp = scratch(root, "git-context-")?;
    let repo = tmp.path().join("repo");
    git_source::checkout(
        &r,
        &repo,
        &Checkout {
            keep_git_dir,
            access,
            checksum: None,
        },
    )
    .map_err(InputError::Git)?;
    let dir = git_source::subdir(&r, &repo).map_err(InputError::Git)?;
    Ok((tmp, dir))
}

/// Go's `strconv.ParseBool` truths, as BuildKit reads the argument.
fn truthy(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Fetches `url` into a new scratch folder of the store (named from
/// `prefix`); returns the folder (removed on drop) and the body's path.
pub(super) fn download(
    url: &str,
    root: &Root,
    rt: &tokio::runtime::Runtime,
    prefix: &str,
) -> Result<(tempfile::TempDir, PathBuf), BuildError> {
    let tmp = scratch(root, prefix)?;
    let dl_dir = tmp.path().join("download");
    let downloads = Downloads::new();
    let dl = rt
        .block_on(downloads.fetch(url, None, || {
            std::fs::create_dir_all(&dl_dir).map_err(|source| HttpError::Io {
                what: "creating",
                path: dl_dir.clone(),
                source,
            })?;
            Ok(dl_dir.clone())
        }))
        .map_err(InputError::Http)?;
    Ok((tmp, dl.path.clone()))
}

/// Downloads `url`; returns the scratch folder, the context folder and,
/// when the body is not an archive, the Dockerfile it is.
pub(super) fn url(
    url: &str,
    root: &Root,
    rt: &tokio::runtime::Runtime,
) -> Result<(tempfile::TempDir, PathBuf, Option<PathBuf>), BuildError> {
    let (tmp, downloaded) = download(url, root, rt, "url-context-")?;
    let dir = tmp.path().join("context");
    std::fs::create_dir(&dir)?;
    let mut head = Vec::new();
    std::fs::File::open(&downloaded)?
        .take(1024)
        .read_to_end(&mut head)?;
    if stdin::is_archive(&head) {
        stdin::unpack(std::fs::File::open(&downloaded)?, &dir)?;
        return Ok((tmp, dir, None));
    }
    let df = tmp.path().join("Dockerfile");
    std::fs::rename(&downloaded, &df)?;
    Ok((tmp, dir, Some(df)))
}

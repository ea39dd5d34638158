//! Git sources: a git context (`kiln build https://host/repo.git#ref:dir`)
//! and `ADD <git URL> /dst` both check a repository out into a folder.
//!
//! The references are read as BuildKit's `gitutil.ParseGitRef` reads them,
//! so the same strings work: `https://…/repo.git#ref:subdir`,
//! `git@host:repo.git`, `git://…`, `ssh://…` and `github.com/x/y`. The
//! fetch itself is the system `git` binary's (shallow fetch of the one ref,
//! submodules), as BuildKit also runs `git`.
//!
//! SSH remotes (`ssh://…`, `git@host:repo.git`) are fetched through the
//! agent the client forwards as ssh id `default` (`kiln build --ssh
//! default`), as BuildKit's `llb.Git` asks for it: without one the fetch
//! fails with BuildKit's "no SSH key \"default\" forwarded from the
//! client". ssh itself runs as BuildKit runs it (`ssh -F /dev/null -o
//! StrictHostKeyChecking=no`): no user or system ssh configuration, none of
//! the host's keys, no `known_hosts` read or written, never a prompt; the
//! client's `GIT_SSH_COMMAND` and `SSH_AUTH_SOCK` do not reach it (BuildKit's
//! daemon never sees them either).
//!
//! Credentials for HTTP remotes come from the build's secrets
//! (`GIT_AUTH_TOKEN[.host]`, `GIT_AUTH_HEADER[.host]`) and reach git through
//! `GIT_CONFIG_*` variables, never its command line, so `ps` cannot show
//! them; they are sent to the remote's own URL only (BuildKit's
//! `tokenScope`), never to a submodule's host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::secrets::Secrets;

/// Why a git source could not be checked out.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` could not be started (not installed?).
    #[error("failed to run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// A git command failed; `stderr` is what git said.
    #[error("failed to {what} {remote}: {stderr}")]
    Command {
        what: &'static str,
        remote: String,
        stderr: String,
    },
    /// The checkout folder could not be prepared.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A secret for the remote could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// `--checksum` named another commit than the ref resolved to.
    #[error("expected checksum to match {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    /// The URL's query (`?ref=…&subdir=…`) is not one BuildKit accepts;
    /// BuildKit's words.
    #[error("{0}")]
    Query(String),
    /// The subdirectory of the reference is not in the repository.
    #[error("subdirectory {subdir:?} not found in {remote}")]
    NoSubdir { remote: String, subdir: String },
}

/// A git reference as BuildKit's `ParseGitRef` reads one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// What `git fetch` is given: the URL without its fragment
    /// (`https://github.com/x/y` for `github.com/x/y`).
    pub remote: String,
    /// The host, for per-host secrets (`GIT_AUTH_TOKEN.host`).
    pub host: String,
    /// Whether the remote speaks HTTP(S) (credentials apply only there).
    pub http: bool,
    /// Whether the remote is reached over SSH (`ssh://…`, `user@host:path`):
    /// such a fetch goes through the client's forwarded agent, as
    /// BuildKit's git source mounts the `default` ssh id for it.
    pub ssh: bool,
    /// The ref, tag, branch or commit after `#`; `None` means `HEAD`.
    pub commit: Option<String>,
    /// The folder of the repository after `#ref:`; `None` means its top.
    pub subdir: Option<String>,
    /// `?checksum=` (or `?commit=`): the commit the ref must resolve to.
    pub checksum: Option<String>,
    /// `?keep-git-dir=`: keep `.git` or not, over the build's choice.
    pub keep_git_dir: Option<bool>,
    /// `?submodules=`: `false` leaves submodules out.
    pub submodules: Option<bool>,
}

impl GitRef {
    /// Reads `s` as a git reference; `None` when it is not one (a local
    /// path, a plain HTTP URL without `.git`, an unknown scheme).
    pub fn parse(s: &str) -> Option<GitRef> {
        if s.starts_with("./") || s.starts_with("../") {
            return None;
        }
        let (base, fragment) = match s.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (s, None),
        };
        // The query is options, never part of the remote (gitutil's
        // `Remote` is the URL without query and fragment).
        let base = base.split_once('?').map_or(base, |(b, _)| b);
        let (remote, host, http, ssh) = if let Some(rest) = base.strip_prefix("github.com/") {
            (
                format!("https://github.com/{rest}"),
                "github.com".into(),
                true,
                false,
            )
        } else if let Some((scheme, rest)) = base.split_once("://") {
            if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            let scheme = scheme.to_ascii_lowercase();
            let authority = rest.split('/').next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            let host = host.to_string();
            let path = rest.get(authority.len()..).unwrap_or("");
            match scheme.as_str() {
                // An HTTP(S) URL is a git reference only with `.git`.
                "http" | "https" if path.ends_with(".git") => (base.to_string(), host, true, false),
                "ssh" => (base.to_string(), host, false, true),
                "git" => (base.to_string(), host, false, false),
                _ => return None,
            }
        } else {
            // scp-like: user@host:path
            let (user, rest) = base.split_once('@')?;
            let (host, path) = rest.split_once(':')?;
            let user_ok = !user.is_empty()
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !user_ok || !host_ok || path.is_empty() || path.contains(char::is_whitespace) {
                return None;
            }
            (base.to_string(), host.to_string(), false, true)
        };
        let (commit, subdir) = match fragment {
            Some(f) => {
                let (r, d) = match f.split_once(':') {
                    Some((r, d)) => (r, Some(d)),
                    None => (f, None),
                };
                (
                    Some(r).filter(|r| !r.is_empty()).map(str::to_string),
                    d.filter(|d| !d.is_empty()).map(str::to_string),
                )
            }
            None => (None, None),
        };
        Some(GitRef {
            remote,
            host,
            http,
            ssh,
            commit,
            subdir,
            checksum: None,
            keep_git_dir: None,
            submodules: None,
        })
    }

    /// Reads `s` as [`GitRef::parse`] does, and applies its query as
    /// BuildKit's `dfgitutil.ParseGitRef` (`?ref=`, `?tag=`, `?branch=`,
    /// `?subdir=`, `?checksum=`/`?commit=`, `?keep-git-dir=`,
    /// `?submodules=`, `?mtime=checkout`, `?fetch-by-commit=`); an unknown
    /// key, a repeated one or a conflict with the fragment is an error in
    /// BuildKit's words. `Ok(None)` when `s` is not a git reference.
    pub fn parse_checked(s: &str) -> Result<Option<GitRef>, GitError> {
        let Some(mut r) = GitRef::parse(s) else {
            return Ok(None);
        };
        let before_fragment = s.split_once('#').map_or(s, |(b, _)| b);
        if let Some((_, query)) = before_fragment.split_once('?') {
            r.load_query(query).map_err(GitError::Query)?;
        }
        Ok(Some(r))
    }

    fn load_query(&mut self, query: &str) -> Result<(), String> {
        let mut values: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            values
                .entry(percent_decode(k))
                .or_default()
                .push(percent_decode(v));
        }
        let flag = |k: &str, v: Option<&str>| -> Result<bool, String> {
            match v {
                None => Ok(true),
                Some(v) => parse_bool(v).ok_or_else(|| format!("invalid {k} value: {v:?}")),
            }
        };
        let (mut tag, mut branch) = (None, None);
        for (k, v) in &values {
            if v.len() > 1 {
                return Err(format!("query {k:?} has multiple values"));
            }
            let v = v.first().map(String::as_str).filter(|v| !v.is_empty());
            if v.is_none()
                && !matches!(
                    k.as_str(),
                    "submodules" | "keep-git-dir" | "fetch-by-commit"
                )
            {
                return Err(format!("query {k:?} has no value"));
            }
            let val = v.unwrap_or_default();
            match k.as_str() {
                "ref" => {
                    if let Some(r) = self.commit.as_deref().filter(|r| *r != val) {
                        return Err(format!("ref conflicts: {r:?} vs {val:?}"));
                    }
                    self.commit = Some(val.to_string());
                }
                "tag" => tag = Some(val.to_string()),
                "branch" => branch = Some(val.to_string()),
                "subdir" => {
                    if let Some(d) = self.subdir.as_deref().filter(|d| *d != val) {
                        return Err(format!("subdir conflicts: {d:?} vs {val:?}"));
                    }
                    self.subdir = Some(val.to_string());
                }
                "checksum" | "commit" => self.checksum = Some(val.to_string()),
                "keep-git-dir" => self.keep_git_dir = Some(flag(k, v)?),
                "submodules" => self.submodules = Some(flag(k, v)?),
                "fetch-by-commit" => {
                    flag(k, v)?;
                }
                "mtime" => match val {
                    "checkout" => {}
                    // BuildKit sets each file's time to the commit's; kiln
                    // does not yet, and says so rather than differ.
                    "commit" => return Err("mtime=commit is not supported by kiln".into()),
                    other => {
                        return Err(format!(
                            "invalid mtime value: {other:?} (must be \"checkout\" or \"commit\")"
                        ))
                    }
                },
                other => return Err(format!("unexpected query {other:?}")),
            }
        }
        let mut set_ref = |full: String| -> Result<(), String> {
            if let Some(r) = self.commit.as_deref().filter(|r| *r != full) {
                return Err(format!("ref conflicts: {r:?} vs {full:?}"));
            }
            self.commit = Some(full);
            Ok(())
        };
        if let Some(t) = &tag {
            let full = if t.starts_with("refs/tags/") {
                t.clone()
            } else {
                format!("refs/tags/{t}")
            };
            set_ref(full)?;
        }
        if let Some(b) = branch {
            if tag.is_some() {
                return Err("branch conflicts with tag".into());
            }
            let full = if b.starts_with("refs/heads/") {
                b
            } else {
                format!("refs/heads/{b}")
            };
            set_ref(full)?;
        }
        Ok(())
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A query component decoded as Go's `url.QueryUnescape` (`+` is a space,
/// `%XX` a byte; a malformed escape is kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Authorization` header value for `git`'s HTTP requests to `r`, from
/// the secrets BuildKit reads, most specific first: `GIT_AUTH_HEADER.host`,
/// `GIT_AUTH_TOKEN.host`, `GIT_AUTH_HEADER`, `GIT_AUTH_TOKEN`. A token
/// becomes `basic base64(x-access-token:TOKEN)`, as GitHub expects.
pub fn auth_header(r: &GitRef, secrets: &Secrets) -> Result<Option<String>, GitError> {
    if !r.http {
        return Ok(None);
    }
    let names = [
        (format!("GIT_AUTH_HEADER.{}", r.host), false),
        (format!("GIT_AUTH_TOKEN.{}", r.host), true),
        ("GIT_AUTH_HEADER".to_string(), false),
        ("GIT_AUTH_TOKEN".to_string(), true),
    ];
    for (name, token) in names {
        if let Some(v) = secrets.value(&name)? {
            let v = String::from_utf8_lossy(&v).trim().to_string();
            return Ok(Some(if token {
                let b =
                    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{v}"));
                format!("basic {b}")
            } else {
                v
            }));
        }
    }
    Ok(None)
}

/// The ssh id whose agent fetches SSH remotes: BuildKit's `llb.Git`
/// mounts `default` for them, and neither `ADD` nor `--build-context`
/// name another.
pub const SSH_ID: &str = "default";

/// The agent socket through which `r` is fetched: `None` for remotes that
/// are not SSH; an error when the client forwarded no agent as
/// [`SSH_ID`] (BuildKit's words, plus the flag that fixes it).
pub fn ssh_agent(r: &GitRef, secrets: &Secrets) -> Result<Option<PathBuf>, GitError> {
    if !r.ssh {
        return Ok(None);
    }
    match secrets.ssh_socket(SSH_ID)? {
        Some(p) => Ok(Some(p)),
        None => Err(crate::secrets::SecretError::NoSsh(SSH_ID.to_string()).into()),
    }
}

/// How to reach the remote: the credentials of [`auth_header`] and
/// [`ssh_agent`].
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The `Authorization` header value for HTTP remotes.
    pub auth: Option<String>,
    /// The URL prefix the header is sent to (git's `http.<url>.*`):
    /// only the remote itself, so submodules and other hosts never see
    /// the token; BuildKit's `tokenScope` (all of github.com for a
    /// github.com remote). Empty: every URL.
    pub auth_scope: String,
    /// The agent socket for SSH remotes.
    pub ssh_agent: Option<PathBuf>,
}

impl Access {
    /// What `r` needs from the build's secrets.
    pub fn of(r: &GitRef, secrets: &Secrets) -> Result<Access, GitError> {
        Ok(Access {
            auth: auth_header(r, secrets)?,
            auth_scope: token_scope(&r.remote).to_string(),
            ssh_agent: ssh_agent(r, secrets)?,
        })
    }
}

/// BuildKit's `tokenScope`: the remote, or all of github.com for a
/// github.com remote (as actions/checkout reuses its token).
fn token_scope(remote: &str) -> &str {
    for pfx in ["https://github.com/", "https://www.github.com/"] {
        if remote.starts_with(pfx) {
            return pfx;
        }
    }
    remote
}

/// How to check a repository out.
#[derive(Debug, Clone, Default)]
pub struct Checkout {
    /// Keep the `.git` folder (`--keep-git-dir`,
    /// `BUILDKIT_CONTEXT_KEEP_GIT_DIR=1`).
    pub keep_git_dir: bool,
    /// The credentials for the remote.
    pub access: Access,
    /// The commit the ref must resolve to (`ADD --checksum`).
    pub checksum: Option<String>,
}

/// Resolves the ref of `r` to a commit without fetching content
/// (`git ls-remote`); `None` when the ref is not advertised (a commit ID
/// is returned as it is).
pub fn resolve(r: &GitRef, access: &Access) -> Result<Option<String>, GitError> {
    let want = r.commit.as_deref().unwrap_or("HEAD");
    if is_commit_id(want) {
        return Ok(Some(want.to_ascii_lowercase()));
    }
    let out = git(None, access)
        .args(["ls-remote", "--", &r.remote, want])
        .output()
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(command_err("resolve", &r.remote, &out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    // Prefer an exact name, then a branch, then a tag (its peeled commit).
    let exact = [
        format!("{want}^{{}}"),
        want.to_string(),
        format!("refs/heads/{want}"),
        format!("refs/tags/{want}^{{}}"),
        format!("refs/tags/{want}"),
    ];
    for name in &exact {
        if let Some((id, _)) = lines.iter().find(|(_, n)| n == name) {
            return Ok(Some((*id).to_string()));
        }
    }
    Ok(lines.first().map(|(id, _)| (*id).to_string()))
}

/// A full or abbreviated commit ID (hex, 7 to 64 characters).
fn is_commit_id(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Checks `r` out into `dest` (created; must not exist): a shallow fetch of
/// the ref (a full one when the server refuses a commit by ID), its
/// submodules, `.git` removed unless kept. Returns the commit.
pub fn checkout(r: &GitRef, dest: &Path, how: &Checkout) -> Result<String, GitError> {
    let io = |what| {
        move |source| GitError::Io {
            what,
            path: dest.to_path_buf(),
            source,
        }
    };
    std::fs::create_dir_all(dest).map_err(io("creating"))?;
    let run = |what: &'static str, args: &[&str]| -> Result<Vec<u8>, GitError> {
        let out = git(Some(dest), &how.access)
            .args(args)
            .output()
            .map_err(GitError::Spawn)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(command_err(what, &r.remote, &out.stderr))
        }
    };
    run("initialize a repository for", &["init", "-q"])?;
    run("add remote", &["remote", "add", "origin", &r.remote])?;
    let want = r.commit.as_deref().unwrap_or("HEAD");
    let shallow = run(
        "fetch",
        &["fetch", "-q", "--depth=1", "--no-tags", "origin", want],
    );
    let target = match shallow {
        Ok(_) => "FETCH_HEAD".to_string(),
        Err(e) => {
            if !is_commit_id(want) {
                return Err(e);
            }
            // The server does not serve commits by ID: fetch it all.
            run("fetch", &["fetch", "-q", "--tags", "origin"])?;
            want.to_string()
        }
    };
    run("checkout", &["checkout", "-q", "--detach", &target])?;
    let commit = String::from_utf8_lossy(&run("resolve HEAD of", &["rev-parse", "HEAD"])?)
        .trim()
        .to_string();
    if let Some(expected) = how.checksum.as_ref().or(r.checksum.as_ref()) {
        if !commit.starts_with(&expected.to_ascii_lowercase()) || expected.len() < 7 {
            return Err(GitError::Checksum {
                expected: expected.clone(),
                actual: commit,
            });
        }
    }
    if dest.join(".gitmodules").is_file() && r.submodules != Some(false) {
        run(
            "update submodules of",
            &[
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ],
        )?;
    }
    if !r.keep_git_dir.unwrap_or(how.keep_git_dir) {
        remove_git_dirs(dest).map_err(io("removing .git from"))?;
    } else {
        // BuildKit keeps the ref's name as a branch for tools that read it.
        if let Some(name) = r.commit.as_deref().filter(|c| !is_commit_id(c)) {
            let name = name
                .strip_prefix("refs/heads/")
                .or_else(|| name.strip_prefix("refs/tags/"))
                .unwrap_or(name);
            let _ = run("name the branch of", &["checkout", "-q", "-B", name]);
        }
    }
    Ok(commit)
}

/// The folder of `r.subdir` inside the checkout at `dest` (which must stay
/// inside it).
pub fn subdir(r: &GitRef, dest: &Path) -> Result<PathBuf, GitError> {
    let Some(sub) = r.subdir.as_deref() else {
        return Ok(dest.to_path_buf());
    };
    let missing = || GitError::NoSubdir {
        remote: r.remote.clone(),
        subdir: sub.to_string(),
    };
    let p = dest.join(sub.trim_start_matches('/'));
    let real = p.canonicalize().map_err(|_| missing())?;
    let top = dest.canonicalize().map_err(|_| missing())?;
    if !real.starts_with(&top) || !real.is_dir() {
        return Err(missing());
    }
    Ok(real)
}

/// Removes every `.git` (the repository's and the submodules' pointers).
fn remove_git_dirs(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if e.file_name() == ".git" {
            if ft.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        } else if ft.is_dir() {
            remove_git_dirs(&e.path())?;
        }
    }
    Ok(())
}

/// ssh as BuildKit's git runs it (`-F /dev/null -o
/// StrictHostKeyChecking=no`), and more so on a host that is not a
/// throw-away daemon: the host's `known_hosts` are neither read nor
/// written, the host's own keys are not offered (`IdentityFile=none`: only
/// the forwarded agent's are), and it never prompts.
const GIT_SSH_COMMAND: &str = "ssh -F /dev/null -o StrictHostKeyChecking=no \
     -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null \
     -o IdentityFile=none -o BatchMode=yes -o LogLevel=ERROR";

/// A `git` command that never prompts, with the auth header and agent
/// socket (if any) passed through the environment.
fn git(dir: Option<&Path>, access: &Access) -> Command {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    c.stdin(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        // Submodules over git:// and ssh:// as the top repository's.
        .env("GIT_ALLOW_PROTOCOL", "git:http:https:ssh")
        .env("LC_ALL", "C");
    c.env("GIT_SSH_COMMAND", GIT_SSH_COMMAND)
        .env_remove("GIT_SSH")
        .env_remove("GIT_SSH_VARIANT")
        .env_remove("SSH_AUTH_SOCK");
    if let Some(sock) = &access.ssh_agent {
        c.env("SSH_AUTH_SOCK", sock);
    }
    if let Some(h) = &access.auth {
        let key = if access.auth_scope.is_empty() {
            "http.extraheader".to_string()
        } else {
            format!("http.{}.extraheader", access.auth_scope)
        };
        c.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", key)
            .env("GIT_CONFIG_VALUE_0", format!("Authorization: {h}"));
    }
    c
}

fn command_err(what: &'static str, remote: &str, stderr: &[u8]) -> GitError {
    GitError::Command {
        what,
        remote: remote.to_string(),
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::GitRef;

    #[test]
    fn forms_buildx_accepts() {
        let r = GitRef::parse("https://example.com/a/repo.git#v1:sub/dir").unwrap();
        assert_eq!(r.remote, "https://example.com/a/repo.git");
        assert_eq!(r.commit.as_deref(), Some("v1"));
        assert_eq!(r.subdir.as_deref(), Some("sub/dir"));
        assert!(r.http);
        let r = GitRef::parse("git@github.com:x/y.git#main").unwrap();
        assert_eq!(r.host, "github.com");
        assert_eq!(r.commit.as_deref(), Some("main"));
        assert!(GitRef::parse("git://127.0.0.1:9418/r").is_some());
        assert!(GitRef::parse("ssh://git@host/r.git").is_some());
        let r = GitRef::parse("github.com/x/y").unwrap();
        assert_eq!(r.remote, "https://github.com/x/y");
        assert!(GitRef::parse("https://example.com/ctx.tar.gz").is_none());
        assert!(GitRef::parse("./dir").is_none());
        assert!(GitRef::parse("dir").is_none());
        assert!(GitRef::parse("ftp://x/y.git").is_none());
        let r = GitRef::parse_checked("https://h/r.git?ref=v1&subdir=d")
            .unwrap()
            .unwrap();
        assert_eq!(r.remote, "https://h/r.git");
        assert_eq!(r.commit.as_deref(), Some("v1"));
        assert_eq!(r.subdir.as_deref(), Some("d"));
        let r = GitRef::parse_checked("https://h/r.git?tag=v1&checksum=abc1234&keep-git-dir")
            .unwrap()
            .unwrap();
        assert_eq!(r.commit.as_deref(), Some("refs/tags/v1"));
        assert_eq!(r.checksum.as_deref(), Some("abc1234"));
        assert_eq!(r.keep_git_dir, Some(true));
        let r = GitRef::parse_checked("git@h:r.git?branch=dev")
            .unwrap()
            .unwrap();
        assert_eq!(r.commit.as_deref(), Some("refs/heads/dev"));
        let err = |s: &str| GitRef::parse_checked(s).unwrap_err().to_string();
        assert_eq!(err("https://h/r.git?foo=1"), "unexpected query \"foo\"");
        assert_eq!(
            err("https://h/r.git?ref=a&ref=b"),
            "query \"ref\" has multiple values"
        );
        assert_eq!(err("https://h/r.git?ref="), "query \"ref\" has no value");
        assert_eq!(
            err("https://h/r.git?ref=a#b"),
            "ref conflicts: \"b\" vs \"a\""
        );
        assert_eq!(
            err("https://h/r.git?tag=a&branch=b"),
            "branch conflicts with tag"
        );
        assert!(GitRef::parse_checked("https://h/x.tar.gz?ref=1")
            .unwrap()
            .is_none());
        let r = GitRef::parse("https://h/r.git#:only/dir").unwrap();
        assert_eq!(r.commit, None);
        assert_eq!(r.subdir.as_deref(), Some("only/dir"));
    }
}

//! kiln's build operations (BuildKit calls its equivalent LLB): what the
//! frontend lowers a Dockerfile into and the worker executes. Pure data, so
//! an op's canonical encoding (its JSON, whose field order is fixed and whose
//! maps are ordered) names it.
//!
//! Input conventions, by op:
//! - `Exec`: input 0 is the root filesystem; [`ExecMount::Bind`] and
//!   cache mounts seeded `from` refer to further inputs by index.
//! - `File`: input 0 is the filesystem the actions apply to (`Scratch` for
//!   an empty one); [`FileAction::Copy`] names its source input by index.
//! - `Merge`: the inputs' layers stacked in order (`COPY --link`).
//! - `Image`, `Context`, `Scratch`, `Http`: no inputs.

use serde::{Deserialize, Serialize};

pub use kiln_platform::Platform;

use crate::Op;

/// One operation of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildOp {
    /// An image's root filesystem for one platform. `manifest` is the
    /// platform manifest's digest, resolved before solving, so the op's
    /// identity (and every key after it) pins the image's content.
    Image {
        reference: String,
        platform: Platform,
        manifest: Option<String>,
    },
    /// A build context (`context` for the main one, or a named context): a
    /// host directory handed to the executor out of band, so the host path
    /// is not part of the identity; what it contains enters the cache keys
    /// of the ops that read it, through their content keys.
    Context { name: String, exclude: Vec<String> },
    /// The empty filesystem.
    Scratch,
    /// `ADD <http(s) url>`: the downloaded file alone at `/{filename}` of an
    /// otherwise empty filesystem, mode 0600, mtime from `Last-Modified`, as
    /// BuildKit's http source; a COPY action then places it. With
    /// `checksum` (`sha256:…`) the download is verified and the checksum
    /// names the content, so a cached result needs no download; without
    /// it the worker downloads on every build and the content's digest
    /// enters the cache key.
    Http {
        url: String,
        checksum: Option<String>,
        filename: String,
    },
    /// `ADD <git URL> /dst`: the repository's tree at the ref (and the
    /// subdirectory) of `url` (BuildKit's forms: `https://…/r.git#ref:dir`,
    /// `git@host:r.git`, `git://…`, `ssh://…`) on an empty filesystem, as
    /// BuildKit's git source; a COPY action then places it. The cache key
    /// is the commit the ref resolves to (`checksum` when given, which the
    /// checkout must then match), so a moved branch rebuilds and an
    /// unchanged one does not, whatever the URL says.
    Git {
        url: String,
        keep_git_dir: bool,
        checksum: Option<String>,
    },
    /// A RUN.
    Exec(Exec),
    /// COPY, ADD, WORKDIR's mkdir, heredoc files.
    File(FileOp),
    /// Inputs' layers stacked in order.
    Merge,
}

/// A command run in a sandbox on input 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub argv: Vec<String>,
    /// `KEY=value`, in the order they are set.
    pub env: Vec<String>,
    pub cwd: String,
    /// As USER wrote it (`name`, `uid`, `name:group`, `uid:gid`); resolved
    /// against the root filesystem's /etc/passwd and /etc/group when run.
    pub user: String,
    pub network: Network,
    /// `RUN --security=insecure`: every capability, no seccomp filter.
    /// Left out of the encoding when false, so sandboxed steps keep the
    /// cache keys they had.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    pub mounts: Vec<ExecMount>,
    pub platform: Platform,
    /// The build's `--add-host`, `--ulimit`, `--shm-size` and
    /// `--cgroup-parent`, part of the identity as in BuildKit's exec meta;
    /// left out of the encoding when unset, so steps of builds without
    /// them keep the cache keys they had.
    #[serde(default, skip_serializing_if = "ExecResources::is_empty")]
    pub resources: ExecResources,
    /// Human-readable step name, kept out of the identity (see [`Op`] impl).
    #[serde(skip)]
    pub display: String,
}

/// What a build sets for every one of its RUN steps (buildx's `--add-host`,
/// `--ulimit`, `--shm-size`, `--cgroup-parent`), as BuildKit's `Meta` of an
/// exec op carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecResources {
    /// Extra lines of /etc/hosts: (host name, IP address), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, String)>,
    /// Resource limits, each replacing the default for its resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Size of /dev/shm in bytes (64 MiB when absent, as docker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// The cgroup the step's process is placed under (a cgroup of its own
    /// beneath this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
}

impl ExecResources {
    /// Nothing set: every default applies.
    pub fn is_empty(&self) -> bool {
        *self == ExecResources::default()
    }
}

/// One `--ulimit NAME=SOFT[:HARD]`; `-1` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// docker's name of the resource (`nofile`, `nproc`, `core`, …).
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The build's choice (`--network`): a namespace of its own by
    /// default, as in BuildKit.
    #[default]
    Default,
    Host,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// An extra mount of a RUN. Never part of the resulting layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecMount {
    /// A path of input `input` (0 is not allowed: that is the rootfs).
    Bind {
        input: usize,
        source: String,
        target: String,
        readonly: bool,
    },
    /// A persistent cache directory, kept across builds. Its identity is
    /// `id` and, when `owned`, `uid`/`gid`/`mode` too: BuildKit keys a
    /// cache by its id and the ref it starts from, which is nothing (an
    /// empty folder of root's, 0755) unless ownership options were given,
    /// and then a folder made with them; so the same id with other
    /// ownership options is another cache.
    Cache {
        id: String,
        target: String,
        sharing: Sharing,
        readonly: bool,
        uid: u32,
        gid: u32,
        mode: u32,
        /// Whether `uid`, `gid` or `mode` was written (even as the
        /// defaults: `uid=0` is a cache of its own, as with BuildKit).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        owned: bool,
        /// Seed the cache from this input's path on first use.
        from: Option<(usize, String)>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// A build secret (`--secret` of the build) as a read-only file at
    /// `target` and/or an environment variable; its value is never part of
    /// the op (so never of the cache key) nor of any layer.
    Secret {
        id: String,
        /// Empty when the secret is exposed only as `env`.
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        /// `env=VAR`: the variable the step gets the secret's value in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
    },
    Ssh {
        id: String,
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A file with fixed content (a heredoc script), read-only.
    File {
        target: String,
        data: String,
        mode: u32,
    },
}

/// File actions applied in order to input 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    pub actions: Vec<FileAction>,
    /// Human-readable step name, kept out of the identity.
    #[serde(skip)]
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileAction {
    /// COPY / ADD from input `source`.
    Copy {
        source: usize,
        /// Source paths or wildcards, relative to the source's root.
        paths: Vec<String>,
        /// Absolute destination (WORKDIR already applied); a trailing `/`
        /// means a directory.
        dest: String,
        /// `--chown` as written; names resolve in the destination.
        chown: Option<String>,
        /// `--chmod`, octal.
        chmod: Option<u32>,
        /// `--chmod` in chmod(1)'s symbolic form (`u=rwX,go=rX`), applied to
        /// each entry's own mode; BuildKit's `ModeStr`. Left out of the
        /// encoding when absent, so copies without it keep their digests.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chmod_symbolic: Option<String>,
        parents: bool,
        exclude: Vec<String>,
        /// ADD: extract local archives.
        unpack: bool,
    },
    Mkdir {
        path: String,
        mode: u32,
        parents: bool,
        chown: Option<String>,
        /// Seconds since the epoch for the times of what is created
        /// (`SOURCE_DATE_EPOCH`); `None`: now. Left out of the encoding
        /// when absent, so mkdirs without it keep their digests.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<i64>,
    },
    Mkfile {
        path: String,
        data: Vec<u8>,
        mode: u32,
        chown: Option<String>,
    },
    Rm {
        path: String,
        allow_not_found: bool,
    },
}

impl Op for BuildOp {
    fn encode(&self) -> Vec<u8> {
        // Serialising plain structs, enums, vectors and options cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn name(&self) -> String {
        match self {
            BuildOp::Image {
                reference,
                platform,
                ..
            } => format!("FROM {reference} ({platform})"),
            BuildOp::Context { name, .. } => format!("load build context {name}"),
            BuildOp::Scratch => "scratch".into(),
            BuildOp::Http { url, .. } => format!("download {url}"),
            BuildOp::Git { url, .. } => format!("git {url}"),
            BuildOp::Exec(e) if !e.display.is_empty() => e.display.clone(),
            BuildOp::Exec(e) => format!("RUN {}", e.argv.join(" ")),
            BuildOp::File(f) if !f.display.is_empty() => f.display.clone(),
            BuildOp::File(_) => "file operation".into(),
            BuildOp::Merge => "merge".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_do_not_change_identity() {
        let p = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let mk = |display: &str| {
            BuildOp::Exec(Exec {
                argv: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec![],
                cwd: "/".into(),
                user: String::new(),
                network: Network::Default,
                insecure: false,
                mounts: vec![],
                platform: p.clone(),
                resources: ExecResources::default(),
                display: display.into(),
            })
        };
        assert_eq!(mk("[1/2] RUN true").encode(), mk("[2/2] RUN true").encode());
        assert_eq!(mk("[1/2] RUN true").name(), "[1/2] RUN true");
    }
}

//! Which snapshotter writable snapshots use: kernel overlayfs, kiln's own
//! overlay over FUSE ([`crate::fuse_overlay`]), or full copies.
//!
//! `auto` (the default) takes the first that works here, in that order:
//! kernel overlay is the fastest, FUSE keeps layers cheap where overlay
//! cannot be mounted (an unprivileged container with `/dev/fuse`), and a
//! copy works everywhere. `--snapshotter` on `kiln build` and `kiln run`,
//! or `"snapshotter"` in `$KILN_ROOT/config.json`, pins one; `kiln info`
//! says which is in use and why.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A snapshotter, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Snapshotter {
    /// Kernel overlay, else FUSE, else copies.
    #[default]
    Auto,
    /// Kernel overlayfs only.
    Overlay,
    /// kiln's overlay over FUSE only.
    Fuse,
    /// Full copies of the layers.
    Copy,
}

impl Snapshotter {
    /// The names `--snapshotter` accepts.
    pub const NAMES: [&'static str; 4] = ["auto", "overlay", "fuse", "copy"];

    /// Its name on the command line and in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Snapshotter::Auto => "auto",
            Snapshotter::Overlay => "overlay",
            Snapshotter::Fuse => "fuse",
            Snapshotter::Copy => "copy",
        }
    }
}

impl fmt::Display for Snapshotter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown snapshotter name.
#[derive(Debug, thiserror::Error)]
#[error("unknown snapshotter {0:?}: expected one of auto, overlay, fuse, copy")]
pub struct UnknownSnapshotter(pub String);

impl FromStr for Snapshotter {
    type Err = UnknownSnapshotter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Snapshotter::Auto),
            "overlay" => Ok(Snapshotter::Overlay),
            "fuse" => Ok(Snapshotter::Fuse),
            "copy" => Ok(Snapshotter::Copy),
            other => Err(UnknownSnapshotter(other.to_string())),
        }
    }
}

/// The snapshotter `$KILN_ROOT/config.json` names (`"snapshotter":
/// "fuse"`), if any; a missing or unreadable file names none.
pub fn from_config(root: &Path) -> Result<Option<Snapshotter>, UnknownSnapshotter> {
    #[derive(Deserialize)]
    struct Cfg {
        #[serde(default)]
        snapshotter: Option<String>,
    }
    let Ok(text) = std::fs::read_to_string(root.join("config.json")) else {
        return Ok(None);
    };
    let Ok(cfg) = serde_json::from_str::<Cfg>(&text) else {
        return Ok(None);
    };
    cfg.snapshotter.map(|s| s.parse()).transpose()
}

/// What a probe found: the snapshotter that will be used and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Overlay, Fuse or Copy (never Auto).
    pub used: Snapshotter,
    /// Why: what was asked and what did or did not work.
    pub reason: String,
}

/// Finds out which snapshotter `asked` resolves to on this machine, by
/// mounting a kernel overlay in `scratch` (an empty folder on the store's
/// filesystem) and checking `/dev/fuse`: what `kiln info` reports.
pub fn probe(asked: Snapshotter, scratch: &Path) -> Choice {
    let overlay = || -> Result<(), String> {
        let (l, u, w, m) = (
            scratch.join("lower"),
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("merged"),
        );
        for d in [&l, &u, &w, &m] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let r = crate::snapshot::mount_overlay(&[l.clone(), l], &u, &w, &m)
            .map_err(|e| e.to_string())
            .and_then(|mounted| mounted.unmount().map_err(|e| e.to_string()));
        let _ = std::fs::remove_dir_all(scratch);
        r
    };
    match asked {
        Snapshotter::Overlay => Choice {
            used: Snapshotter::Overlay,
            reason: match overlay() {
                Ok(()) => "asked for; kernel overlayfs mounts here".into(),
                Err(e) => format!("asked for, but overlayfs cannot be mounted here: {e}"),
            },
        },
        Snapshotter::Fuse => Choice {
            used: Snapshotter::Fuse,
            reason: match crate::fuse_overlay::usable() {
                Ok(()) => "asked for; /dev/fuse is usable".into(),
                Err(e) => format!("asked for, but FUSE is not usable here: {e}"),
            },
        },
        Snapshotter::Copy => Choice {
            used: Snapshotter::Copy,
            reason: "asked for".into(),
        },
        Snapshotter::Auto => match overlay() {
            Ok(()) => Choice {
                used: Snapshotter::Overlay,
                reason: "auto: kernel overlayfs mounts here".into(),
            },
            Err(oe) => match crate::fuse_overlay::usable() {
                Ok(()) => Choice {
                    used: Snapshotter::Fuse,
                    reason: format!(
                        "auto: overlayfs cannot be mounted ({oe}); /dev/fuse is usable"
                    ),
                },
                Err(fe) => Choice {
                    used: Snapshotter::Copy,
                    reason: format!(
                        "auto: overlayfs cannot be mounted ({oe}) and FUSE is not usable ({fe})"
                    ),
                },
            },
        },
    }
}

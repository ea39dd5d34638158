//! `--snapshotter auto|overlay|fuse|copy` (on `kiln build` and `kiln run`)
//! and `kiln info`, which says which snapshotter is in use here and why.

use std::process::ExitCode;

use kiln_cache::Root;
use kiln_worker::snapshotter::{self, Snapshotter};
use miette::{miette, IntoDiagnostic, Result};

/// The snapshotter to use: the flag, else `"snapshotter"` of
/// `$KILN_ROOT/config.json`, else `auto`.
pub fn resolve(flag: Option<&str>, root: &Root) -> Result<Snapshotter> {
    if let Some(f) = flag {
        return f.parse().map_err(|e| miette!("--snapshotter: {e}"));
    }
    snapshotter::from_config(root.path())
        .map(|s| s.unwrap_or_default())
        .map_err(|e| miette!("{}: {e}", root.path().join("config.json").display()))
}

/// `kiln info`: the store and the snapshotter in use, with the reason.
pub fn info(flag: Option<&str>) -> Result<ExitCode> {
    let root = Root::from_env().into_diagnostic()?;
    let asked = resolve(flag, &root)?;
    let scratch = root
        .tmp_dir()
        .join(format!("snapshotter-probe-{}", std::process::id()));
    let choice = snapshotter::probe(asked, &scratch);
    println!("Root: {}", root.path().display());
    println!("Snapshotter: {}", choice.used);
    println!("Snapshotter reason: {}", choice.reason);
    Ok(ExitCode::SUCCESS)
}

//! Entering rootless mode at the very start of `main`: a plain user's kiln
//! joins (or creates) its store's user namespace before any thread or
//! runtime exists; `kiln_worker::userns` does the work, this only decides
//! when and renders what it says.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_cache::root::ENV_ROOT;
use kiln_worker::userns;

/// Runs the pause process if this is one (never returns then).
pub fn pause_if_asked() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(userns::PAUSE_SUBCOMMAND))
    {
        userns::pause_main();
    }
}

/// For a non-root user, enters the store's user namespace so the command
/// runs as root inside it. The store is fixed first (`$KILN_ROOT`, else
/// `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`) and written back to
/// `$KILN_ROOT`: inside, kiln is uid 0 and would otherwise pick root's.
/// Returns the exit code to leave with when it cannot.
pub fn enter_if_needed() -> Result<(), ExitCode> {
    if userns::euid_is_root() {
        return Ok(());
    }
    let store = std::env::var_os(ENV_ROOT)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(userns::default_store);
    let store = std::path::absolute(&store).unwrap_or(store);
    // Single-threaded here, before anything reads the environment.
    std::env::set_var(ENV_ROOT, &store);
    match userns::enter(&store) {
        Ok(None) => Ok(()),
        Ok(Some(notice)) => {
            eprintln!("{notice}");
            Ok(())
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            Err(ExitCode::from(1))
        }
    }
}

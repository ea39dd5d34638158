//! `--chmod`: an octal mode (every copied file and directory gets exactly
//! it) or, since Dockerfile 1.14, chmod(1)'s symbolic form (`+x`,
//! `u=rwX,go=rX`, `g=u`), applied to each entry's own mode so `X` can tell
//! directories and executables apart.
//!
//! The parser and its semantics are the op vocabulary's (`kiln_llb::mode`,
//! shared with the frontend),
//! so a mode is applied exactly as the frontend checked it when it read the
//! Dockerfile; parsing again here still fails before anything is copied.

pub use kiln_solver::mode::{Chmod, ModeError};

/// The mode of directories the copy creates: the octal mode, or 0755 for a
/// symbolic one (as BuildKit, which only passes octal modes there).
pub fn created_dir_mode(chmod: &Chmod) -> u32 {
    match chmod {
        Chmod::Octal(m) => *m,
        Chmod::Symbolic(_) => 0o755,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap(), Chmod::Octal(0o755));
        assert!(Chmod::parse("10000")
            .unwrap_err()
            .to_string()
            .contains("between 0 and 07777"));
        let x = Chmod::parse("+x").unwrap();
        assert_eq!(x.apply(0o644, false), 0o755);
        assert_eq!(created_dir_mode(&x), 0o755);
        assert_eq!(created_dir_mode(&Chmod::Octal(0o700)), 0o700);
        let rx = Chmod::parse("u=rwX,go=rX").unwrap();
        assert_eq!(rx.apply(0o600, false), 0o644);
        assert_eq!(rx.apply(0o700, false), 0o755);
        assert_eq!(rx.apply(0o600, true), 0o755);
    }
}

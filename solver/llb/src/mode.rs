//! `--chmod` values, as BuildKit's Dockerfile frontend reads them: an octal
//! mode up to 07777, or (Dockerfile 1.14 and later) a symbolic mode in
//! chmod(1)'s syntax (`u=rwx,go=rx`, `go-w,u+x`, `a+X`, `+x`, `g=u-w`).
//!
//! The symbolic form follows the `dchapes-mode` package BuildKit uses (a Go
//! port of BSD's setmode(3)) rather than GNU chmod: no umask (BuildKit
//! parses with a umask of 0, so `+w` adds write for everyone), `X` looks at
//! the entry's mode before the whole `--chmod` is applied, `s` and `t` are
//! ignored for `o` alone. The same parsed [`ModeSet`] serves the frontend,
//! which refuses a bad mode with the line it is on, and the worker, which
//! applies it to each copied entry's own mode.

use std::fmt;

/// Set-user-id, set-group-id and sticky bits.
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
/// Every bit `a` stands for (the sticky bit is not among them).
const STANDARD: u32 = S_ISUID | S_ISGID | 0o777;

/// Why a `--chmod` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// Looks numeric but is not an octal mode up to 07777 (BuildKit's
    /// wording).
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    NotOctal(String),
    /// Not valid chmod(1) symbolic syntax (BuildKit says only "invalid
    /// syntax"; the value is named so the author sees which).
    #[error("invalid chmod parameter: '{0}': invalid syntax")]
    Syntax(String),
}

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// Every copied entry gets exactly these bits (permissions, setuid,
    /// setgid, sticky).
    Octal(u32),
    /// Changes applied to each copied entry's own mode.
    Symbolic(ModeSet),
}

/// An octal mode, already a number (what LLB's `Mode` holds).
impl From<u32> for Chmod {
    fn from(m: u32) -> Self {
        Chmod::Octal(m)
    }
}

impl Chmod {
    /// Parses as BuildKit's `dispatchCopy`: octal first, else symbolic.
    pub fn parse(s: &str) -> Result<Chmod, ModeError> {
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return match u32::from_str_radix(s, 8) {
                Ok(v) if v <= 0o7777 => Ok(Chmod::Octal(v)),
                _ => Err(ModeError::NotOctal(s.to_string())),
            };
        }
        // A leading digit means a number to the symbolic parser too; a
        // number that is not octal gets the octal message, as in BuildKit.
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(ModeError::NotOctal(s.to_string()));
        }
        ModeSet::parse(s).map(Chmod::Symbolic)
    }

    /// The mode (permission and special bits) an entry whose mode is `mode`
    /// gets; `is_dir` matters to `X`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => m & 0o7777,
            Chmod::Symbolic(set) => set.apply(mode, is_dir),
        }
    }

    /// True for the symbolic form.
    pub fn is_symbolic(&self) -> bool {
        matches!(self, Chmod::Symbolic(_))
    }
}

/// A permission class a clause can copy from or to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    User,
    Group,
    Other,
}

impl Class {
    /// Where its three bits sit in a mode.
    fn shift(self) -> u32 {
        match self {
            Class::User => 6,
            Class::Group => 3,
            Class::Other => 0,
        }
    }
}

/// One change of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Set these bits.
    Add(u32),
    /// Clear these bits.
    Clear(u32),
    /// Set these bits if the entry is a directory or was executable by
    /// anyone before the mode was applied (`X`).
    AddIfExec(u32),
    /// Copy one class's bits onto others (`g=u`, `o+g`, `u-o`).
    Copy {
        from: Class,
        /// Target classes, in user, group, other order.
        to: [bool; 3],
        set: bool,
        clear: bool,
    },
}

/// A symbolic mode, parsed: the changes of its clauses in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSet {
    text: String,
    steps: Vec<Step>,
}

impl fmt::Display for ModeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ModeSet {
    /// Parses chmod(1)'s symbolic syntax: comma-separated clauses of
    /// `[ugoa]*` then one or more `[+-=]` each followed by `[rwxXst]*` or
    /// one of `u`, `g`, `o`.
    pub fn parse(s: &str) -> Result<ModeSet, ModeError> {
        let bad = || ModeError::Syntax(s.to_string());
        let b = s.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        // Whether the current `=` has already emitted its clear-and-set.
        let mut equal_done = false;
        loop {
            let mut who = 0u32;
            loop {
                match b.get(i) {
                    None => return Err(bad()),
                    Some(b'a') => who |= STANDARD,
                    Some(b'u') => who |= S_ISUID | 0o700,
                    Some(b'g') => who |= S_ISGID | 0o070,
                    Some(b'o') => who |= 0o007,
                    Some(_) => break,
                }
                i += 1;
            }
            // One or more operations share the clause's `who`.
            loop {
                let op = b[i];
                i += 1;
                match op {
                    b'+' | b'-' => {}
                    b'=' => equal_done = false,
                    _ => return Err(bad()),
                }
                who &= !S_ISVTX;
                let (mut perm, mut perm_x) = (0u32, 0u32);
                loop {
                    match b.get(i).copied() {
                        Some(b'r') => perm |= 0o444,
                        Some(b'w') => perm |= 0o222,
                        Some(b'x') => perm |= 0o111,
                        Some(b'X') if op == b'-' => perm |= 0o111,
                        Some(b'X') => perm_x = 0o111,
                        // Set-id and sticky bits mean nothing for `o` alone.
                        Some(b's') if who == 0 || who & !0o007 != 0 => perm |= S_ISUID | S_ISGID,
                        Some(b't') if who == 0 || who & !0o007 != 0 => {
                            who |= S_ISVTX;
                            perm |= S_ISVTX;
                        }
                        Some(b's' | b't') => {}
                        Some(c @ (b'u' | b'g' | b'o')) => {
                            if perm != 0 {
                                push(&mut steps, op, who, perm);
                                perm = 0;
                            }
                            if op == b'=' {
                                equal_done = true;
                            }
                            if perm_x != 0 {
                                push(&mut steps, b'X', who, perm_x);
                                perm_x = 0;
                            }
                            let from = match c {
                                b'u' => Class::User,
                                b'g' => Class::Group,
                                _ => Class::Other,
                            };
                            steps.push(copy_step(from, who, op));
                        }
                        _ => {
                            if perm != 0 || (op == b'=' && !equal_done) {
                                if op == b'=' {
                                    equal_done = true;
                                }
                                push(&mut steps, op, who, perm);
                            }
                            if perm_x != 0 {
                                push(&mut steps, b'X', who, perm_x);
                            }
                            break;
                        }
                    }
                    i += 1;
                }
                match b.get(i) {
                    None => {
                        return Ok(ModeSet {
                            text: s.to_string(),
                            steps,
                        })
                    }
                    Some(b',') => {
                        i += 1;
                        break;
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// The permission and special bits of an entry whose mode is `mode`
    /// after the changes.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let old = mode & 0o7777;
        let mut m = old;
        for step in &self.steps {
            match *step {
                Step::Add(bits) => m |= bits,
                Step::Clear(bits) => m &= !bits,
                Step::AddIfExec(bits) => {
                    if is_dir || old & 0o111 != 0 {
                        m |= bits;
                    }
                }
                Step::Copy {
                    from,
                    to,
                    set,
                    clear,
                } => {
                    let value = (m >> from.shift()) & 0o7;
                    let targets = [Class::User, Class::Group, Class::Other];
                    if clear {
                        let clr = if set { 0o7 } else { value };
                        for (t, on) in targets.iter().zip(to) {
                            if on {
                                m &= !(clr << t.shift());
                            }
                        }
                    }
                    if set {
                        for (t, on) in targets.iter().zip(to) {
                            if on {
                                m |= value << t.shift();
                            }
                        }
                    }
                }
            }
        }
        m & 0o7777
    }
}

/// The steps of `op` (`+`, `-`, `=` or `X`) with `perm` for `who` (none
/// named: everyone, with no umask).
fn push(steps: &mut Vec<Step>, op: u8, who: u32, perm: u32) {
    let limit = |bits: u32| if who != 0 { who & bits } else { bits };
    match op {
        b'=' => {
            steps.push(Step::Clear(if who != 0 { who } else { STANDARD }));
            steps.push(Step::Add(limit(perm)));
        }
        b'+' => steps.push(Step::Add(limit(perm))),
        b'-' => steps.push(Step::Clear(limit(perm))),
        _ => steps.push(Step::AddIfExec(limit(perm))),
    }
}

/// The step copying `from`'s bits to the classes of `who` with `op`.
fn copy_step(from: Class, who: u32, op: u8) -> Step {
    let to = if who != 0 {
        [who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0]
    } else {
        [true; 3]
    };
    Step::Copy {
        from,
        to,
        set: op != b'-',
        clear: op != b'+',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .apply(mode, dir)
    }

    #[test]
    fn octal_modes_replace_every_bit() {
        assert_eq!(Chmod::parse("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(Chmod::parse("0"), Ok(Chmod::Octal(0)));
        assert_eq!(Chmod::parse("04755"), Ok(Chmod::Octal(0o4755)));
        assert_eq!(Chmod::parse("7777"), Ok(Chmod::Octal(0o7777)));
        for bad in ["10000", "8", "64a", "0x7", "99999999999999999999"] {
            assert_eq!(
                Chmod::parse(bad),
                Err(ModeError::NotOctal(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn symbolic_modes_follow_setmode() {
        assert_eq!(sym("u=rwx,g=rx,o=", 0o644, false), 0o750);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o4777, false), 0o750);
        assert_eq!(sym("go-w,u+x", 0o666, false), 0o744);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("a+X", 0o644, false), 0o644);
        assert_eq!(sym("a+X", 0o744, false), 0o755);
        assert_eq!(sym("a+X", 0o700, true), 0o711);
        // X looks at the mode before the whole --chmod.
        assert_eq!(sym("a-x,a+X", 0o744, false), 0o755);
        assert_eq!(sym("a-x,a+X", 0o644, false), 0o644);
        assert_eq!(sym("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(sym("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(sym("g=u", 0o640, false), 0o660);
        assert_eq!(sym("go=u-w", 0o750, false), 0o755);
        assert_eq!(sym("o+g", 0o750, false), 0o755);
        assert_eq!(sym("=r", 0o4755, false), 0o444);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("o+s", 0o755, false), 0o755);
        assert_eq!(sym("+t", 0o755, true), 0o1755);
        assert_eq!(sym("u-w+x", 0o644, false), 0o544);
        assert_eq!(sym("+", 0o644, false), 0o644);
    }

    #[test]
    fn bad_symbolic_modes_are_syntax_errors() {
        for bad in [
            "", "u", "u=rwq", "x", "u+x,", ",u+x", "u+x,,g+x", "z+x", "u+r g+w",
        ] {
            assert_eq!(
                Chmod::parse(bad),
                Err(ModeError::Syntax(bad.into())),
                "{bad:?}"
            );
        }
    }
}

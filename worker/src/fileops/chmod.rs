//! `--chmod`: an octal mode (every copied file and directory gets exactly
//! it) or, since Dockerfile 1.14, chmod(1)'s symbolic form (`+x`,
//! `u=rwX,go=rX`, `g=u`), applied to each entry's own mode so `X` can tell
//! directories and executables apart. Parsed here once, so a bad mode fails
//! before anything is copied.

use super::error::{FileOpsError, Result};

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// Octal: replaces permission and setuid/setgid/sticky bits.
    Octal(u32),
    /// Symbolic clauses, applied in order to each entry's mode.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause of a symbolic mode, e.g. `go=rX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Permission bits the clause may touch (`u` 0o700, `g` 0o070, `o` 0o007).
    who: u32,
    actions: Vec<(char, Perms)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perms {
    /// `rwxXst` letters.
    Letters(String),
    /// Copy of another class's bits (`u`, `g` or `o`).
    CopyOf(char),
}

impl From<u32> for Chmod {
    fn from(m: u32) -> Self {
        Chmod::Octal(m)
    }
}

impl Chmod {
    /// Parse as BuildKit does: octal first (at most 07777), else symbolic.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || FileOpsError::BadPattern {
            pattern: format!(
                "invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777"
            ),
        };
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let v = u32::from_str_radix(s, 8).map_err(|_| bad())?;
            if v > 0o7777 {
                return Err(bad());
            }
            return Ok(Chmod::Octal(v));
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad());
        }
        let sym_err = || FileOpsError::BadPattern {
            pattern: format!("invalid chmod parameter: '{s}'"),
        };
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let chars: Vec<char> = part.chars().collect();
            let mut i = 0;
            let mut who = 0u32;
            while i < chars.len() && "ugoa".contains(chars[i]) {
                who |= match chars[i] {
                    'u' => 0o700,
                    'g' => 0o070,
                    'o' => 0o007,
                    _ => 0o777,
                };
                i += 1;
            }
            if who == 0 {
                who = 0o777;
            }
            let mut actions = Vec::new();
            while i < chars.len() {
                let op = chars[i];
                if !"+-=".contains(op) {
                    return Err(sym_err());
                }
                i += 1;
                if i < chars.len() && "ugo".contains(chars[i]) {
                    actions.push((op, Perms::CopyOf(chars[i])));
                    i += 1;
                    continue;
                }
                let start = i;
                while i < chars.len() && "rwxXst".contains(chars[i]) {
                    i += 1;
                }
                actions.push((op, Perms::Letters(chars[start..i].iter().collect())));
            }
            if actions.is_empty() {
                return Err(sym_err());
            }
            clauses.push(Clause { who, actions });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode (permission and special bits) an entry whose current mode
    /// is `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => m & 0o7777,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    for (op, perms) in &c.actions {
                        let bits = match perms {
                            Perms::CopyOf(class) => {
                                let shift = match class {
                                    'u' => 6,
                                    'g' => 3,
                                    _ => 0,
                                };
                                let b = (m >> shift) & 7;
                                ((b << 6) | (b << 3) | b) & c.who
                            }
                            Perms::Letters(l) => letters(l, c.who, m, is_dir),
                        };
                        match op {
                            '+' => m |= bits,
                            '-' => m &= !bits,
                            _ => {
                                let mut clear = c.who;
                                if c.who & 0o700 != 0 {
                                    clear |= 0o4000;
                                }
                                if c.who & 0o070 != 0 {
                                    clear |= 0o2000;
                                }
                                if c.who & 0o007 != 0 {
                                    clear |= 0o1000;
                                }
                                m = (m & !clear) | bits;
                            }
                        }
                    }
                }
                m
            }
        }
    }

    /// The mode of directories the copy creates: the octal mode, or 0755
    /// for a symbolic one (as BuildKit, which only passes octal modes there).
    pub fn created_dir_mode(&self) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(_) => 0o755,
        }
    }
}

fn letters(l: &str, who: u32, current: u32, is_dir: bool) -> u32 {
    let mut bits = 0;
    for ch in l.chars() {
        bits |= match ch {
            'r' => 0o444 & who,
            'w' => 0o222 & who,
            'x' => 0o111 & who,
            'X' if is_dir || current & 0o111 != 0 => 0o111 & who,
            's' => {
                (if who & 0o700 != 0 { 0o4000 } else { 0 })
                    | (if who & 0o070 != 0 { 0o2000 } else { 0 })
            }
            't' if who & 0o007 != 0 => 0o1000,
            _ => 0,
        };
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(Chmod::parse("0").unwrap(), Chmod::Octal(0));
        assert!(Chmod::parse("10000")
            .unwrap_err()
            .to_string()
            .contains("between 0 and 07777"));
        assert!(Chmod::parse("64a").is_err());
        let x = Chmod::parse("+x").unwrap();
        assert_eq!(x.apply(0o644, false), 0o755);
        let rx = Chmod::parse("u=rwX,go=rX").unwrap();
        assert_eq!(rx.apply(0o600, false), 0o644);
        assert_eq!(rx.apply(0o700, false), 0o755);
        assert_eq!(rx.apply(0o700, true), 0o755);
        assert_eq!(rx.apply(0o600, true), 0o755);
        assert_eq!(Chmod::parse("g=u").unwrap().apply(0o640, false), 0o660);
        assert_eq!(Chmod::parse("o-r").unwrap().apply(0o644, false), 0o640);
        assert_eq!(Chmod::parse("u+s").unwrap().apply(0o755, false), 0o4755);
    }
}

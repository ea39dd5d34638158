//! Rules BuildKit raises while dispatching instructions, so only for the
//! stages a build dispatches (every stage in check mode).

use std::collections::{BTreeMap, BTreeSet};

use super::from::Globals;
use super::{lines, rules, suggest, written_keyword, Input, Linter, StageRef};
use crate::instructions::{Command, CommandLine, Instruction};
use crate::shell::Lexer;

/// BuildKit's `nonEnvArgs`: never reported undefined.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// PATH as BuildKit gives an image without one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a stage leaves to stages built on it.
#[derive(Clone, Default)]
struct Outcome {
    env: BTreeMap<String, String>,
    shell: bool,
}

struct State<'a> {
    lexer: Lexer,
    env: BTreeMap<String, String>,
    /// ARGs declared in the stage (value or not).
    declared: BTreeSet<String>,
    shell: bool,
    workdir_set: bool,
    cmd: Option<(usize, usize)>,
    entrypoint: Option<(usize, usize)>,
    healthcheck: Option<(usize, usize)>,
    input: &'a Input<'a>,
    globals: &'a Globals,
}

pub(crate) fn check(
    stages: &[StageRef],
    globals: &Globals,
    input: &Input,
    escape: char,
    l: &mut Linter,
) {
    let mut done: Vec<Option<Outcome>> = vec![None; stages.len()];
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for st in stages {
        let Command::From(f) = &st.from.command else {
            continue;
        };
        let lexer = Lexer::new(escape);
        let base_name = lexer
            .process_word(&f.image, &globals.env)
            .map(|e| e.value)
            .unwrap_or_default()
            .to_lowercase();
        let parent = names
            .get(&base_name)
            .and_then(|i| done.get(*i).cloned().flatten());
        if let Some(n) = &f.name {
            names.insert(n.clone(), st.index);
        }
        let wanted = input.stages.as_ref().is_none_or(|s| s.contains(&st.index));
        let outcome = match parent {
            Some(p) => p,
            None => {
                let mut env = BTreeMap::new();
                match input.base_env.get(&st.index) {
                    Some(vars) => {
                        for v in vars {
                            let (k, v) = v.split_once('=').unwrap_or((v, ""));
                            env.insert(k.to_string(), v.to_string());
                        }
                    }
                    None => {
                        env.insert("PATH".into(), DEFAULT_PATH.into());
                    }
                }
                Outcome { env, shell: false }
            }
        };
        let mut s = State {
            lexer,
            env: outcome.env,
            declared: BTreeSet::new(),
            shell: outcome.shell,
            workdir_set: false,
            cmd: None,
            entrypoint: None,
            healthcheck: None,
            input,
            globals,
        };
        // A stage not dispatched still gives its environment to stages on
        // it, but raises nothing.
        let mut quiet = Linter {
            config: l.config.clone(),
            warnings: Vec::new(),
        };
        let sink = if wanted { &mut *l } else { &mut quiet };
        for (i, node) in &st.commands {
            s.dispatch(i, written_keyword(node), sink);
        }
        done[st.index] = Some(Outcome {
            env: s.env,
            shell: s.shell,
        });
    }
}

impl State<'_> {
    /// Expands one word as the dispatcher does, reporting what it uses
    /// that is neither set nor a declared ARG.
    fn expand(&self, word: &str, at: &Instruction, l: &mut Linter) -> String {
        let Ok(e) = self.lexer.process_word(word, &self.env) else {
            return word.to_string();
        };
        self.unmatched(&e.used, at, l);
        e.value
    }

    fn unmatched(&self, used: &BTreeSet<String>, at: &Instruction, l: &mut Linter) {
        for name in used {
            if self.env.contains_key(name)
                || self.declared.contains(name)
                || NON_ENV_ARGS.contains(&name.as_str())
            {
                continue;
            }
            let mut msg = format!("Usage of undefined variable '${name}'");
            if let Some(s) = suggest(name, self.env.keys().map(String::as_str)) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            l.run(rules::UNDEFINED_VAR, lines(at), msg);
        }
    }

    fn used_once(
        slot: &mut Option<(usize, usize)>,
        keyword: &str,
        at: &Instruction,
        l: &mut Linter,
    ) {
        if let Some(prev) = *slot {
            l.run(
                rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                prev,
                format!(
                    "Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"
                ),
            );
        }
        *slot = Some(lines(at));
    }

    fn dispatch(&mut self, i: &Instruction, keyword: &str, l: &mut Linter) {
        match &i.command {
            Command::Env { pairs } => {
                let values: Vec<String> =
                    pairs.iter().map(|p| self.expand(&p.value, i, l)).collect();
                for (p, v) in pairs.iter().zip(values) {
                    if p.legacy {
                        legacy(keyword, i, l);
                    }
                    secret("ENV", &p.key, i, l);
                    self.env.insert(p.key.clone(), v);
                }
            }
            Command::Label { pairs } => {
                for p in pairs {
                    self.expand(&p.value, i, l);
                }
                for _ in pairs.iter().filter(|p| p.legacy) {
                    legacy(keyword, i, l);
                }
            }
            Command::Arg { args } => {
                for a in args {
                    secret("ARG", &a.key, i, l);
                    let value = if let Some(v) = self.input.build_args.get(&a.key) {
                        Some(v.clone())
                    } else if let Some(d) = &a.default {
                        Some(self.expand(d, i, l))
                    } else {
                        self.globals.env.get(&a.key).cloned()
                    };
                    if let Some(v) = value {
                        if !NON_ENV_ARGS.contains(&a.key.as_str()) {
                            self.env.insert(a.key.clone(), v);
                        }
                    }
                    self.declared.insert(a.key.clone());
                }
            }
            Command::Cmd(c) => {
                Self::used_once(&mut self.cmd, keyword, i, l);
                self.json_args(&c.cmd, keyword, i, l);
            }
            Command::Entrypoint(c) => {
                Self::used_once(&mut self.entrypoint, keyword, i, l);
                self.json_args(&c.cmd, keyword, i, l);
            }
            Command::Healthcheck(_) => Self::used_once(&mut self.healthcheck, keyword, i, l),
            Command::Shell { .. } => self.shell = true,
            Command::Workdir { path } => {
                let p = self.expand(path, i, l);
                if !self.workdir_set && !p.starts_with('/') {
                    l.run(
                        rules::WORKDIR_RELATIVE_PATH,
                        lines(i),
                        format!(
                            "Relative workdir {} can have unexpected results if the base image changes",
                            crate::parser::go_quote(&p)
                        ),
                    );
                }
                self.workdir_set = true;
            }
            Command::User { user } => {
                self.expand(user, i, l);
            }
            Command::Volume { paths } => {
                for p in paths {
                    self.expand(p, i, l);
                }
            }
            Command::StopSignal { signal } => {
                self.expand(signal, i, l);
            }
            Command::Expose { ports } => {
                for p in ports {
                    let Ok(words) = self.lexer.process_words(p, &self.env) else {
                        return;
                    };
                    for raw in words.value {
                        if !expose(&raw, i, l) {
                            return;
                        }
                    }
                }
            }
            Command::Copy(c) | Command::Add(c) => {
                let is_add = matches!(i.command, Command::Add(_));
                for w in [&c.chown, &c.chmod].into_iter().flatten() {
                    self.expand(w, i, l);
                }
                let sources: Vec<String> = c.sources.iter().map(|s| self.expand(s, i, l)).collect();
                self.expand(&c.dest, i, l);
                if c.from.is_none() {
                    if let Some(m) = self.input.ignore {
                        for src in sources.iter().filter(|s| !is_remote(s)) {
                            ignored(m, src, is_add, i, l);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn json_args(&self, cmd: &CommandLine, keyword: &str, i: &Instruction, l: &mut Linter) {
        if matches!(cmd, CommandLine::Shell(_)) && !self.shell {
            l.run(
                rules::JSON_ARGS_RECOMMENDED,
                lines(i),
                format!(
                    "JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"
                ),
            );
        }
    }
}

fn legacy(keyword: &str, i: &Instruction, l: &mut Linter) {
    l.run(
        rules::LEGACY_KEY_VALUE_FORMAT,
        lines(i),
        format!("\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"),
    );
}

/// SecretsUsedInArgOrEnv: a secret-looking word first, last or whole
/// (`_`-separated, any case), unless an allowed word is too.
fn secret(instruction: &str, key: &str, i: &Instruction, l: &mut Linter) {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let lower = key.to_lowercase();
    let words: Vec<&str> = lower.split('_').collect();
    // `(?:_|^)word(?:_|$)` matches any `_`-separated part.
    let has = |set: &[&str]| words.iter().any(|w| set.contains(w));
    if has(&DENY) && !has(&ALLOW) {
        l.run(
            rules::SECRETS_USED_IN_ARG_OR_ENV,
            lines(i),
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                crate::parser::go_quote(key)
            ),
        );
    }
}

/// EXPOSE's lint rules for one port spec; false when BuildKit would fail
/// parsing it (and so stop checking the instruction).
fn expose(raw: &str, i: &Instruction, l: &mut Linter) -> bool {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host, container) = match parts.len() {
        1 => ("".to_string(), "", parts[0]),
        2 => ("".to_string(), parts[0], parts[1]),
        n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() || !matches!(proto.to_lowercase().as_str(), "" | "tcp" | "udp" | "sctp") {
        return false;
    }
    if proto != proto.to_lowercase() {
        l.run(
            rules::EXPOSE_PROTO_CASING,
            lines(i),
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
        );
    }
    if !ip.is_empty() || !host.is_empty() {
        l.run(
            rules::EXPOSE_INVALID_FORMAT,
            lines(i),
            format!(
                "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
            ),
        );
    }
    true
}

fn is_remote(src: &str) -> bool {
    src.contains("://") || src.starts_with("git@")
}

/// CopyIgnoredFile, as BuildKit's `validateCopySourcePath`.
fn ignored(
    m: &kiln_patternmatcher::PatternMatcher,
    src: &str,
    is_add: bool,
    i: &Instruction,
    l: &mut Linter,
) {
    if m.exclusions() {
        return;
    }
    let src = crate::dockerignore::clean_path(src);
    if src == "." || src == "/" {
        let root = m
            .patterns()
            .iter()
            .any(|p| !p.is_exclusion() && matches!(p.as_str(), "*" | "**" | "**/*"));
        if !root {
            return;
        }
    }
    if m.matches_or_parent_matches(&src).unwrap_or(false) {
        let cmd = if is_add { "Add" } else { "Copy" };
        l.run(
            rules::COPY_IGNORED_FILE,
            lines(i),
            format!(
                "Attempting to {cmd} file {} that is excluded by .dockerignore",
                crate::parser::go_quote(&src)
            ),
        );
    }
}

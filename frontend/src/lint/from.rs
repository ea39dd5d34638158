//! FROM lines against the global scope, for every stage as BuildKit's
//! `validateBaseImagesWithDefaultArgs` and `buildDispatchStates` check them:
//! InvalidDefaultArgInFrom, UndefinedArgInFrom, RedundantTargetPlatform,
//! FromPlatformFlagConstDisallowed.

use std::collections::{BTreeMap, BTreeSet};

use super::{lines, reference, rules, suggest, Input, Linter, StageRef};
use crate::instructions::{Command, Instruction};
use crate::plan::Platform;
use crate::shell::Lexer;

/// The global scope the stages start from.
pub(crate) struct Globals {
    /// Predefined platform args and meta ARGs with a value.
    pub env: BTreeMap<String, String>,
}

fn predefined(input: &Input, target: &str) -> BTreeMap<String, String> {
    let tp = input
        .target_platform
        .clone()
        .unwrap_or_else(Platform::host)
        .normalize();
    let bp = input
        .build_platform
        .clone()
        .unwrap_or_else(Platform::host)
        .normalize();
    let mut env = BTreeMap::new();
    for (prefix, p) in [("BUILD", &bp), ("TARGET", &tp)] {
        env.insert(format!("{prefix}PLATFORM"), p.to_string());
        env.insert(format!("{prefix}OS"), p.os.clone());
        env.insert(format!("{prefix}ARCH"), p.architecture.clone());
        env.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    env.insert("TARGETSTAGE".into(), target.to_string());
    env
}

/// The meta ARGs applied over `env`: `build_args` win over defaults;
/// declarations without a value add nothing.
fn meta_args(
    meta: &[&Instruction],
    mut env: BTreeMap<String, String>,
    build_args: Option<&BTreeMap<String, String>>,
    lexer: &Lexer,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut declared = BTreeSet::new();
    for i in meta {
        let Command::Arg { args } = &i.command else {
            continue;
        };
        for a in args {
            declared.insert(a.key.clone());
            let given = build_args.and_then(|b| b.get(&a.key)).cloned();
            let value = given.or_else(|| {
                a.default.as_ref().map(|d| {
                    lexer
                        .process_word(d, &env)
                        .map(|e| e.value)
                        .unwrap_or_default()
                })
            });
            if let Some(v) = value {
                env.insert(a.key.clone(), v);
            }
        }
    }
    (env, declared)
}

pub(crate) fn check(
    meta: &[&Instruction],
    stages: &[StageRef],
    input: &Input,
    escape: char,
    l: &mut Linter,
) -> Globals {
    let lexer = Lexer::new(escape);
    let target = input
        .target
        .clone()
        .or_else(|| {
            stages.last().and_then(|s| match &s.from.command {
                Command::From(f) => f.name.clone(),
                _ => None,
            })
        })
        .unwrap_or_default();
    let base = predefined(input, &target);

    // Base names with the defaults only.
    let (defaults, _) = meta_args(meta, base.clone(), None, &lexer);
    for st in stages {
        let Command::From(f) = &st.from.command else {
            continue;
        };
        let Ok(name) = lexer.process_word(&f.image, &defaults) else {
            break;
        };
        if !reference::is_valid(&name.value) {
            l.run(
                rules::INVALID_DEFAULT_ARG_IN_FROM,
                lines(st.from),
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    f.image
                ),
            );
        }
    }

    let (env, declared) = meta_args(meta, base, Some(&input.build_args), &lexer);
    let mut keys: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
    keys.extend(env.keys().map(String::as_str));
    let undefined = |l: &mut Linter, used: &BTreeSet<String>, at: &Instruction| {
        for name in used.iter().filter(|n| !env.contains_key(*n)) {
            if keys.contains(name.as_str()) {
                continue;
            }
            let mut msg = format!("FROM argument '{name}' is not declared");
            if let Some(s) = suggest(name, keys.iter().copied()) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            l.run(rules::UNDEFINED_ARG_IN_FROM, lines(at), msg);
        }
    };
    for st in stages {
        let Command::From(f) = &st.from.command else {
            continue;
        };
        if let Ok(e) = lexer.process_word(&f.image, &env) {
            undefined(l, &e.used, st.from);
        }
        let Some(word) = &f.platform else { continue };
        let Ok(e) = lexer.process_word(word, &env) else {
            continue;
        };
        undefined(l, &e.used, st.from);
        let unmatched = e.used.iter().any(|n| !env.contains_key(n));
        if e.used.len() == 1
            && !unmatched
            && e.used.contains("TARGETPLATFORM")
            && env.get("TARGETPLATFORM") == Some(&e.value)
        {
            l.run(
                rules::REDUNDANT_TARGET_PLATFORM,
                lines(st.from),
                format!(
                    "Setting platform to predefined {word} in FROM is redundant as this is the default behavior"
                ),
            );
        }
        if e.used.is_empty() {
            if let Ok(p) = Platform::parse(&e.value) {
                let stage = f.name.as_deref().unwrap_or("");
                if !(stage.contains(&p.os) || stage.contains(&p.architecture)) {
                    l.run(
                        rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                        lines(st.from),
                        format!(
                            "FROM --platform flag should not use constant value {}",
                            crate::parser::go_quote(&e.value)
                        ),
                    );
                }
            }
        }
    }
    Globals { env }
}

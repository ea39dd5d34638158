//! InvalidDefinitionDescription (experimental): the comment right above a
//! named FROM or an ARG should start with the stage's or argument's name,
//! as BuildKit's `validateDefinitionDescription` reads the parser's
//! `PrevComment`.

use super::{lines, rules, Linter, StageRef};
use crate::instructions::{Command, Instructions};
use crate::parser::Dockerfile;

/// The comments BuildKit's parser attaches to each node: comment lines
/// since the previous instruction, an empty `#` clearing them, parser
/// directives left out.
fn prev_comments(source: &str, df: &Dockerfile) -> Vec<Vec<String>> {
    let lines: Vec<&str> = source.split('\n').collect();
    let mut out = Vec::with_capacity(df.nodes.len());
    let mut from = 1;
    for (n, node) in df.nodes.iter().enumerate() {
        let mut comments: Vec<String> = Vec::new();
        let mut directives = n == 0;
        for line in lines
            .iter()
            .take(node.span.start_line.saturating_sub(1))
            .skip(from - 1)
        {
            let t = line.trim_start();
            let Some(c) = t.strip_prefix('#') else {
                directives = false;
                continue;
            };
            let c = c.trim();
            if directives {
                let key = c.split_once('=').map(|(k, _)| k.trim().to_lowercase());
                if matches!(key.as_deref(), Some("syntax" | "escape" | "check")) {
                    continue;
                }
                directives = false;
            }
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c.to_string());
            }
        }
        out.push(comments);
        from = node.span.end_line.max(node.span.start_line) + 1;
    }
    out
}

pub(crate) fn check(
    source: &str,
    df: &Dockerfile,
    ins: &Instructions,
    _: &[StageRef],
    l: &mut Linter,
) {
    if !l.config.enabled(&rules::INVALID_DEFINITION_DESCRIPTION) {
        return;
    }
    let comments = prev_comments(source, df);
    for (i, prev) in ins.instructions.iter().zip(comments) {
        let (instruction, keys): (&str, Vec<&str>) = match &i.command {
            Command::From(f) => match &f.name {
                Some(n) => ("FROM", vec![n.as_str()]),
                None => continue,
            },
            Command::Arg { args } => ("ARG", args.iter().map(|a| a.key.as_str()).collect()),
            _ => continue,
        };
        let (Some(last), Some(first)) = (prev.last(), keys.first()) else {
            continue;
        };
        let word = last.split(' ').next().unwrap_or("");
        if keys.contains(&word) {
            continue;
        }
        let example = if keys.len() > 1 { "<arg_key>" } else { first };
        l.run(
            rules::INVALID_DEFINITION_DESCRIPTION,
            lines(i),
            format!(
                "Comment for {instruction} should follow the format: `# {example} <description>`"
            ),
        );
    }
}

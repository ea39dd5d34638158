//! Rules about how the file is written, checked over every stage as
//! BuildKit's parser and `validateStageNames`/`validateCommandCasing` do.

use super::{lines, rules, written_keyword, Linter, StageRef};
use crate::instructions::{Command, Instructions};
use crate::parser::Dockerfile;

const RESERVED_STAGE_NAMES: [&str; 2] = ["context", "scratch"];

pub(crate) fn check(df: &Dockerfile, ins: &Instructions, stages: &[StageRef], l: &mut Linter) {
    // The parser's empty-continuation warnings, at the instruction's last
    // line as BuildKit's parser reports them.
    for w in &df.warnings {
        if !w.message.starts_with("Empty continuation line") {
            continue;
        }
        let line = df
            .nodes
            .iter()
            .find(|n| {
                n.span.start_line <= w.span.start_line && w.span.start_line <= n.span.end_line
            })
            .map_or(w.span.start_line, |n| n.span.end_line);
        l.run(
            rules::NO_EMPTY_CONTINUATION,
            (line, line),
            "Empty continuation line".into(),
        );
    }

    for (i, node) in ins.instructions.iter().zip(&df.nodes) {
        match &i.command {
            Command::Maintainer { .. } => l.run(
                rules::MAINTAINER_DEPRECATED,
                lines(i),
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            Command::From(_) if node.args.len() == 3 => {
                let name = &node.args[2];
                if *name != name.to_lowercase() {
                    l.run(
                        rules::STAGE_NAME_CASING,
                        lines(i),
                        format!("Stage name '{name}' should be lowercase"),
                    );
                }
                let from = written_keyword(node);
                let as_ = &node.args[1];
                let lower = from == from.to_lowercase();
                let upper = from == from.to_uppercase();
                let mismatch = (lower && *as_ != as_.to_lowercase())
                    || (!lower && upper && *as_ != as_.to_uppercase());
                if mismatch {
                    l.run(
                        rules::FROM_AS_CASING,
                        lines(i),
                        format!("'{as_}' and '{from}' keywords' casing do not match"),
                    );
                }
            }
            _ => {}
        }
    }

    // Stage names.
    let mut seen = std::collections::BTreeSet::new();
    for st in stages {
        let Command::From(f) = &st.from.command else {
            continue;
        };
        let Some(name) = &f.name else { continue };
        if RESERVED_STAGE_NAMES.contains(&name.as_str()) {
            l.run(
                rules::RESERVED_STAGE_NAME,
                lines(st.from),
                format!(
                    "Stage name should not use the same name as reserved stage {}",
                    crate::parser::go_quote(name)
                ),
            );
        }
        if !seen.insert(name.clone()) {
            l.run(
                rules::DUPLICATE_STAGE_NAME,
                lines(st.from),
                format!(
                    "Duplicate stage name {}, stage names should be unique",
                    crate::parser::go_quote(name)
                ),
            );
        }
    }

    // Instruction casing: the majority of self-consistent keywords (stage
    // instructions only, as BuildKit counts them) sets the expected case.
    let consistent = |s: &str| s == s.to_lowercase() || s == s.to_uppercase();
    let (mut lower, mut upper) = (0usize, 0usize);
    let all = || {
        stages.iter().flat_map(|st| {
            std::iter::once((st.from, st.from_node)).chain(st.commands.iter().copied())
        })
    };
    for (_, node) in all() {
        let k = written_keyword(node);
        if consistent(k) {
            if k == k.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for (i, node) in all() {
        let k = written_keyword(node);
        let casing = if majority_lower && k.to_lowercase() != k {
            "lowercase"
        } else if !majority_lower && k.to_uppercase() != k {
            "uppercase"
        } else {
            continue;
        };
        l.run(
            rules::CONSISTENT_INSTRUCTION_CASING,
            lines(i),
            format!("Command '{k}' should match the case of the command majority ({casing})"),
        );
    }
}

//! The Dockerfile grammar and the generic parse tree.
//!
//! [`parse`] turns source text into one [`Node`] per instruction exactly as
//! BuildKit's parser would (its `dump` output is the conformance oracle), and
//! [`dump`] prints BuildKit's dump format. The work is split by concept:
//! - `scan`: physical lines, parser directives, continuations (stateful,
//!   because the escape character is chosen by a directive);
//! - `grammar` + `dockerfile.pest`: the structure of one logical instruction
//!   (keyword, flags, JSON arrays, words, key/value pairs, heredoc markers);
//! - `heredoc`: which words of a line are heredoc markers;
//! - `quote`: Go's quoting and case rules the dump format depends on.
//!
//! Nothing here panics or backtracks super-linearly on any input: every rule
//! of the grammar is a linear PEG, recursion (nested JSON, ONBUILD, `${…}`)
//! is bounded, and lines longer than BuildKit accepts are rejected.

mod grammar;
mod heredoc;
mod node;
mod quote;
mod scan;

pub use node::{Directives, Dockerfile, Heredoc, Node, Span, Warning};
pub use quote::go_quote;

use crate::{Error, ErrorKind, Location};
use quote::{go_lower, go_trim_space};
use scan::{is_comment, trim_continuation, trim_leading_ws, DirectiveParser, Lines};

/// How deep `ONBUILD ONBUILD …` may nest before the parser gives up; BuildKit
/// refuses any chaining later on, so this only bounds recursion.
const MAX_ONBUILD_DEPTH: usize = 16;

/// The longest instruction, in bytes, once continuation lines are joined.
/// BuildKit only limits physical lines (64 KiB), so its logical lines are
/// unbounded; 1 MiB is far beyond any real instruction and keeps every later
/// pass over a line (grammar, expansion, dump) cheap.
pub const MAX_LOGICAL_LINE: usize = 1 << 20;

/// The largest Dockerfile kiln reads, in bytes: heredocs can embed files, so
/// this is generous, but it bounds what a build holds for its Dockerfile.
pub const MAX_DOCKERFILE: u64 = 16 << 20;

/// Reads a Dockerfile, refusing (without reading it all) one larger than
/// [`MAX_DOCKERFILE`]; invalid UTF-8 is replaced, as BuildKit's scanner
/// tolerates it.
pub fn read_source(reader: impl std::io::Read) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    reader.take(MAX_DOCKERFILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCKERFILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "dockerfile greater than max allowed size of {} MiB",
                MAX_DOCKERFILE >> 20
            ),
        ));
    }
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// BuildKit's wording for a JSON array holding something other than strings.
pub const ERR_NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Parses a whole Dockerfile.
///
/// Errors carry BuildKit's message and the location of the instruction (or
/// line) at fault. Unknown instructions are not errors here: BuildKit's parser
/// keeps them (with a single empty argument) and the typed layer rejects them.
pub fn parse(source: &str) -> Result<Dockerfile, Error> {
    if source.len() as u64 > MAX_DOCKERFILE {
        return Err(Error::new(
            ErrorKind::LineTooLong,
            format!(
                "dockerfile greater than max allowed size of {} MiB",
                MAX_DOCKERFILE >> 20
            ),
        ));
    }
    let mut lines = Lines::new(source);
    let mut directive_parser = DirectiveParser::default();
    let mut directives = Directives::default();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut last_line = 0;

    while let Some(line) = lines.next() {
        last_line = line.number;
        let mut text = line.text();
        let mut offset = line.offset;
        if line.number == 1 {
            if let Some(t) = text.strip_prefix('\u{FEFF}') {
                text = t;
                offset += '\u{FEFF}'.len_utf8();
            }
        }
        let trimmed = trim_leading_ws(text);
        let column = text[..text.len() - trimmed.len()].chars().count() + 1;
        offset += text.len() - trimmed.len();
        let line_loc = Location {
            line: line.number,
            column,
            offset,
            len: trimmed.len(),
        };

        match directive_parser.parse_line(trimmed) {
            Err(e) => return Err(e.at(line_loc)),
            Ok(Some(d)) => match d.key.as_str() {
                "escape" => {
                    directives.escape = scan::escape_token(&d.value).map_err(|e| e.at(line_loc))?;
                }
                "syntax" => directives.syntax = Some(d.value),
                _ => directives.check = Some(d.value),
            },
            Ok(None) => {}
        }
        let escape = directives.escape;

        let body = if is_comment(trimmed) { "" } else { trimmed };
        let (first, mut end_of_line) = trim_continuation(body, escape);
        if end_of_line && first.is_empty() {
            continue;
        }

        let mut logical = first.to_string();
        let mut end_line = line.number;
        let mut end_offset = line.offset + line.text().len();
        let mut empty_line = None;
        while !end_of_line {
            let Some(next) = lines.next() else { break };
            end_line = next.number;
            end_offset = next.offset + next.text().len();
            let t = next.text();
            if is_comment(t) {
                continue;
            }
            if trim_leading_ws(t).is_empty() {
                empty_line.get_or_insert(next);
                continue;
            }
            let (part, eol) = trim_continuation(t, escape);
            end_of_line = eol;
            if logical.len() + part.len() > MAX_LOGICAL_LINE {
                return Err(Error::new(
                    ErrorKind::LineTooLong,
                    format!(
                        "dockerfile instruction greater than max allowed size of {MAX_LOGICAL_LINE} bytes (continuation lines joined)"
                    ),
                )
                .at(Location {
                    line: line.number,
                    column,
                    offset,
                    len: next.offset + t.len() - offset,
                }));
            }
            logical.push_str(part);
        }

        let mut span = Span {
            start_line: line.number,
            end_line,
            start_col: column,
            offset,
            len: end_offset - offset,
        };
        let at = |span: &Span| Location {
            line: span.start_line,
            column: span.start_col,
            offset: span.offset,
            len: span.len,
        };

        if let Some(empty) = empty_line {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {logical}"),
                span: Span {
                    start_line: empty.number,
                    end_line: empty.number,
                    start_col: 1,
                    offset: empty.offset,
                    len: empty.text().len(),
                },
            });
        }

        let mut node = node_from_line(&logical, escape)
            .map_err(|(kind, msg)| Error::new(kind, msg).at(at(&span)))?;

        if can_contain_heredoc(&node) && logical.contains("<<") {
            let markers = heredoc::markers(&logical)
                .map_err(|e| Error::new(ErrorKind::Syntax, e.to_string()).at(at(&span)))?;
            for m in markers {
                let mut content = String::new();
                let mut terminated = false;
                for body_line in lines.by_ref() {
                    span.end_line = body_line.number;
                    span.len = body_line.offset + body_line.text().len() - span.offset;
                    let mut candidate = body_line.text();
                    if m.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == m.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(body_line.raw);
                }
                if !terminated {
                    if let Some(e) = lines.too_long.take() {
                        return Err(e);
                    }
                    return Err(Error::new(ErrorKind::Syntax, "unterminated heredoc").at(at(&span)));
                }
                if m.chomp {
                    content = content
                        .split_inclusive('\n')
                        .map(|l| l.trim_start_matches('\t'))
                        .collect();
                }
                node.heredocs.push(Heredoc {
                    name: m.name,
                    content,
                    expand: m.expand,
                    chomp: m.chomp,
                    fd: m.fd,
                });
            }
            if let Some(next) = node.next.as_mut() {
                next.heredocs = node.heredocs.clone();
            }
        }

        set_span(&mut node, span);
        last_line = span.end_line;
        nodes.push(node);
    }

    if let Some(e) = lines.too_long.take() {
        return Err(e);
    }
    if nodes.is_empty() {
        return Err(
            Error::new(ErrorKind::Empty, "file with no instructions").at(Location {
                line: last_line.max(1),
                column: 1,
                offset: source.len(),
                len: 0,
            }),
        );
    }
    Ok(Dockerfile {
        directives,
        nodes,
        warnings,
    })
}

fn set_span(node: &mut Node, span: Span) {
    let mut n = Some(node);
    while let Some(cur) = n {
        cur.span = span;
        n = cur.next.as_deref_mut();
    }
}

/// RUN, COPY and ADD in shell form may carry heredocs, also behind ONBUILD.
fn can_contain_heredoc(node: &Node) -> bool {
    let target = match (node.keyword.as_str(), node.next.as_deref()) {
        ("onbuild", Some(inner)) => inner,
        _ => node,
    };
    matches!(target.keyword.as_str(), "add" | "copy" | "run") && !target.json
}

type NodeError = (ErrorKind, String);

/// Builds the node of one logical line. ONBUILD's nesting is unrolled into a
/// loop so that no input can recurse deeply.
fn node_from_line(line: &str, escape: char) -> Result<Node, NodeError> {
    let mut outer: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut text = line.to_string();
    loop {
        let (keyword, rest) = grammar::split_command(go_trim_space(&text));
        let (flags, args) = if rest.is_empty() {
            (Vec::new(), String::new())
        } else {
            let f = grammar::extract_flags(&rest, escape);
            (f.flags, go_trim_space(&f.rest).to_string())
        };
        let lower = go_lower(&keyword);
        if lower == "onbuild" && !args.is_empty() {
            if outer.len() >= MAX_ONBUILD_DEPTH {
                return Err((
                    ErrorKind::InvalidArgument,
                    "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                ));
            }
            outer.push((lower, flags, text));
            text = args;
            continue;
        }
        let (args, json) = split_args(&lower, &args, escape)?;
        let mut node = Node {
            keyword: lower,
            flags,
            args,
            json,
            heredocs: Vec::new(),
            next: None,
            original: text,
            span: Span::default(),
        };
        while let Some((keyword, flags, original)) = outer.pop() {
            node = Node {
                keyword,
                flags,
                args: Vec::new(),
                json: false,
                heredocs: Vec::new(),
                next: Some(Box::new(node)),
                original,
                span: Span::default(),
            };
        }
        return Ok(node);
    }
}

/// Splits an instruction's arguments the way BuildKit's per-instruction line
/// parser does; returns the arguments and whether they were a JSON array.
fn split_args(keyword: &str, args: &str, escape: char) -> Result<(Vec<String>, bool), NodeError> {
    Ok(match keyword {
        "add" | "copy" | "volume" => match grammar::json_array(args) {
            grammar::JsonArray::Strings(v) => (v, true),
            grammar::JsonArray::NotStrings => return Err(not_strings()),
            grammar::JsonArray::NotJson if args.is_empty() => (Vec::new(), false),
            grammar::JsonArray::NotJson => (grammar::whitespace_list(args), false),
        },
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(args)?,
        "healthcheck" => {
            if args.is_empty() {
                return Ok((Vec::new(), false));
            }
            let (typ, rest) = grammar::health(args);
            let (mut cmd, json) = maybe_json(&rest)?;
            cmd.insert(0, typ);
            (cmd, json)
        }
        "env" => (name_value(args, "ENV", escape)?, false),
        "label" => (name_value(args, "LABEL", escape)?, false),
        "arg" => (grammar::words(args, escape), false),
        "expose" | "from" if args.is_empty() => (Vec::new(), false),
        "expose" | "from" => (grammar::whitespace_list(args), false),
        "maintainer" | "stopsignal" | "user" | "workdir" if args.is_empty() => (Vec::new(), false),
        "maintainer" | "stopsignal" | "user" | "workdir" => (vec![args.to_string()], false),
        "onbuild" => (Vec::new(), false),
        _ => (vec![String::new()], false),
    })
}

fn not_strings() -> NodeError {
    (ErrorKind::Syntax, ERR_NOT_STRING_ARRAY.to_string())
}

/// RUN/CMD/ENTRYPOINT/SHELL: a JSON array of strings, or the text as one
/// argument (invalid JSON included).
fn maybe_json(args: &str) -> Result<(Vec<String>, bool), NodeError> {
    if args.is_empty() {
        return Ok((Vec::new(), false));
    }
    match grammar::json_array(args) {
        grammar::JsonArray::Strings(v) => Ok((v, true)),
        grammar::JsonArray::NotStrings => Err(not_strings()),
        grammar::JsonArray::NotJson => Ok((vec![args.to_string()], false)),
    }
}

/// ENV and LABEL: `(key, value, separator)` triples, in the legacy
/// `KEY value` form or the `k=v …` form.
fn name_value(args: &str, instruction: &str, escape: char) -> Result<Vec<String>, NodeError> {
    let words = grammar::words(args, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let (key, value) = grammar::legacy_name_value(args);
        let Some(value) = value else {
            return Err((
                ErrorKind::InvalidArgument,
                format!("{instruction} must have two arguments"),
            ));
        };
        return Ok(vec![key, value, String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err((
                ErrorKind::Syntax,
                format!(
                    "Syntax error - can't find = in {}. Must be of the form: name=value",
                    go_quote(w)
                ),
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// BuildKit's dump of a parsed file: one `(…)` line per instruction, without
/// a trailing newline (BuildKit's dumper adds one when printing).
pub fn dump(df: &Dockerfile) -> String {
    let mut out = String::new();
    for (i, n) in df.nodes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push('(');
        out.push_str(&dump_node(n));
        out.push(')');
    }
    out
}

/// The dump of one node, without the surrounding parentheses.
pub fn dump_node(node: &Node) -> String {
    let mut s = go_lower(&node.keyword);
    if !node.flags.is_empty() {
        s.push_str(" [");
        let quoted: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        s.push_str(&quoted.join(" "));
        s.push(']');
    }
    if let Some(next) = &node.next {
        s.push_str(" (");
        s.push_str(&dump_node(next));
        s.push(')');
    }
    for a in &node.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    go_trim_space(&s).to_string()
}

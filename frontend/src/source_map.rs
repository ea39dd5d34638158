//! Where each node of a lowered build came from in its Dockerfile, as
//! BuildKit's source map: a side table keyed by node, so a step that fails
//! while the graph runs can be shown with the lines it was written on, and
//! `--no-cache-filter` can ask which stage a node belongs to.
//!
//! It is kept apart from the ops on purpose: an op's identity (and so its
//! cache key) must not change when a line moves, which it would if the
//! location were part of the op.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use kiln_llb::NodeId;

/// A 1-based, inclusive range of physical lines (an instruction with its
/// continuations and heredoc bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    pub start: usize,
    pub end: usize,
}

impl LineRange {
    fn end(&self) -> usize {
        self.end.max(self.start)
    }

    fn contains(&self, line: usize) -> bool {
        self.start <= line && line <= self.end()
    }
}

/// One instruction a node was lowered from, and the stage it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The stage's position among all the stages of the file.
    pub stage_index: usize,
    /// The stage's `AS` name, if it has one.
    pub stage_name: Option<String>,
    /// The instruction's lines.
    pub lines: LineRange,
}

/// Node → the instructions it was lowered from. A node identical work in
/// several stages (or platforms) lowered to has several origins, in the
/// order they were met; the first is the one shown.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    origins: HashMap<NodeId, Vec<Origin>>,
    /// The Dockerfile's name as shown and its text, once the caller has
    /// attached them ([`SourceMap::set_file`]).
    file: Option<(String, String)>,
}

impl SourceMap {
    /// Attaches the Dockerfile the lines refer to: the name shown in the
    /// snippet's header (see [`display_name`]) and the text. Lowering
    /// works on a plan and never sees the file, so the caller adds it.
    pub fn set_file(&mut self, name: impl Into<String>, text: impl Into<String>) {
        self.file = Some((name.into(), text.into()));
    }

    /// Records that `node` was lowered from `origin` (once per origin).
    pub fn record(&mut self, node: NodeId, origin: Origin) {
        let list = self.origins.entry(node).or_default();
        if !list.contains(&origin) {
            list.push(origin);
        }
    }

    /// Every origin of `node`, first met first.
    pub fn origins(&self, node: NodeId) -> &[Origin] {
        self.origins.get(&node).map_or(&[], Vec::as_slice)
    }

    /// Whether `node` belongs to a stage named in `stages`, as BuildKit's
    /// `--no-cache-filter` matches them: by `AS` name, case-insensitively;
    /// an unnamed stage matches nothing.
    pub fn in_stages(&self, node: NodeId, stages: &[String]) -> bool {
        self.origins(node).iter().any(|o| {
            o.stage_name
                .as_deref()
                .is_some_and(|n| stages.iter().any(|s| s.eq_ignore_ascii_case(n)))
        })
    }

    /// The lines around `node`'s first origin in the attached file, as
    /// BuildKit prints them under a failed step (see [`render_snippet`]);
    /// `None` when the node has no origin, no file is attached or the
    /// file does not have the lines.
    pub fn snippet(&self, node: NodeId) -> Option<String> {
        let first = self.origins(node).first()?;
        let (name, text) = self.file.as_ref()?;
        render_snippet(name, text, &[first.lines])
    }
}

/// How a Dockerfile is named in a snippet's header: its file name without
/// the folders, as buildx sends it to BuildKit (`-f sub/x.df` shows `x.df`).
pub fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The Dockerfile lines of `ranges` with some context, each of their lines
/// marked `>>>`, under a `NAME:LINE` header naming the first line, as
/// BuildKit's `Source.Print` does:
///
/// ```text
/// Dockerfile:3
/// --------------------
///    1 |     FROM busybox
///    2 |     RUN echo ok
///    3 | >>> RUN false
///    4 |     COPY a /b
///    5 |
/// --------------------
/// ```
///
/// Context: two lines on each side of a one-line range, one of a longer
/// one, what is missing on one side not given to the other. The text is
/// split on `\n` only, so a file ending with a newline has an empty last
/// line, which is shown like any other.
pub fn render_snippet(file_name: &str, text: &str, ranges: &[LineRange]) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let first = ranges.iter().map(|r| r.start).min()?;
    let last = ranges.iter().map(LineRange::end).max()?;
    if first < 1 || first > lines.len() {
        return None;
    }
    let (mut start, mut end) = (first, last.min(lines.len()));
    let pad = if start == end { 2 } else { 1 };
    for _ in 0..pad {
        if start > 1 {
            start -= 1;
        }
        if end < lines.len() {
            end += 1;
        }
    }
    let rule = "--------------------\n";
    let mut out = format!("{file_name}:{first}\n{rule}");
    for (i, line) in lines.iter().enumerate().take(end).skip(start - 1) {
        let n = i + 1;
        let mark = if ranges.iter().any(|r| r.contains(n)) {
            ">>>"
        } else {
            "   "
        };
        let _ = writeln!(out, " {n:>3} | {mark} {line}");
    }
    out.push_str(rule);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(start: usize, end: usize) -> [LineRange; 1] {
        [LineRange { start, end }]
    }

    #[test]
    fn a_one_line_step_gets_two_lines_each_side() {
        let text = "FROM busybox\nRUN echo ok\nRUN false\nCOPY a /b\n";
        let got = render_snippet("Dockerfile", text, &one(3, 3)).unwrap();
        assert_eq!(
            got,
            "Dockerfile:3\n\
             --------------------\n\
             \x20  1 |     FROM busybox\n\
             \x20  2 |     RUN echo ok\n\
             \x20  3 | >>> RUN false\n\
             \x20  4 |     COPY a /b\n\
             \x20  5 |     \n\
             --------------------\n"
        );
    }

    #[test]
    fn a_continued_step_is_marked_on_every_line_with_one_line_around() {
        let text =
            "FROM b\nRUN echo ok\n# c\nRUN echo a && \\\n    echo b && \\\n    false\nRUN true\n";
        let got = render_snippet("Dockerfile", text, &one(4, 6)).unwrap();
        assert_eq!(
            got,
            "Dockerfile:4\n\
             --------------------\n\
             \x20  3 |     # c\n\
             \x20  4 | >>> RUN echo a && \\\n\
             \x20  5 | >>>     echo b && \\\n\
             \x20  6 | >>>     false\n\
             \x20  7 |     RUN true\n\
             --------------------\n"
        );
    }

    #[test]
    fn context_stops_at_the_ends_of_the_file() {
        let got = render_snippet("other.Dockerfile", "FROM b\nRUN false\n", &one(2, 2)).unwrap();
        assert_eq!(
            got,
            "other.Dockerfile:2\n\
             --------------------\n\
             \x20  1 |     FROM b\n\
             \x20  2 | >>> RUN false\n\
             \x20  3 |     \n\
             --------------------\n"
        );
        let got = render_snippet("D", "RUN x", &one(1, 1)).unwrap();
        assert_eq!(
            got,
            "D:1\n--------------------\n   1 | >>> RUN x\n--------------------\n"
        );
    }

    #[test]
    fn a_range_past_the_text_is_clipped_or_dropped() {
        assert_eq!(render_snippet("D", "a\nb", &one(5, 5)), None);
        assert_eq!(render_snippet("D", "a\nb", &one(0, 1)), None);
        assert_eq!(render_snippet("D", "a\nb", &[]), None);
        let got = render_snippet("D", "a\nb", &one(2, 9)).unwrap();
        assert!(
            got.ends_with("   2 | >>> b\n--------------------\n"),
            "{got}"
        );
    }

    #[test]
    fn wide_line_numbers_are_not_cut() {
        let text: String = (1..=1200).map(|i| format!("L{i}\n")).collect();
        let got = render_snippet("D", &text, &one(1000, 1000)).unwrap();
        assert!(got.contains(" 1000 | >>> L1000\n"), "{got}");
        assert!(got.contains(" 998 |     L998\n"), "{got}");
    }

    #[test]
    fn snippets_need_the_file_and_name_it_by_its_file_name() {
        let mut m = SourceMap::default();
        let mut g = kiln_llb::Graph::<kiln_llb::ops::BuildOp>::new();
        let n = g.add(kiln_llb::ops::BuildOp::Scratch, &[]);
        m.record(
            n,
            Origin {
                stage_index: 0,
                stage_name: None,
                lines: LineRange { start: 1, end: 1 },
            },
        );
        assert_eq!(m.snippet(n), None);
        m.set_file(display_name(Path::new("/ctx/sub/x.df")), "RUN false");
        assert!(m.snippet(n).unwrap().starts_with("x.df:1\n"));
    }

    #[test]
    fn stages_match_by_name_only() {
        let mut m = SourceMap::default();
        let mut g = kiln_llb::Graph::<kiln_llb::ops::BuildOp>::new();
        let n = g.add(kiln_llb::ops::BuildOp::Scratch, &[]);
        let origin = |name: Option<&str>| Origin {
            stage_index: 0,
            stage_name: name.map(String::from),
            lines: LineRange { start: 1, end: 1 },
        };
        m.record(n, origin(None));
        assert!(!m.in_stages(n, &["stage-0".into()]));
        m.record(n, origin(Some("build")));
        m.record(n, origin(Some("build")));
        assert_eq!(m.origins(n).len(), 2);
        assert!(m.in_stages(n, &["BUILD".into()]));
        assert!(!m.in_stages(n, &["other".into()]));
    }
}

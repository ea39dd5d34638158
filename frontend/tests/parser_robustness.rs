//! No input may make the parser panic, recurse without bound or take more
//! than linear time: random text, mutations of the conformance corpus, and
//! hand-picked pathological lines (long runs of quotes, escapes, brackets,
//! `${`, `<<`, nested ONBUILD).

use kiln_frontend::parser::{dump, parse, Dockerfile};
use kiln_testsupport::shared;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    for dir in [
        "conformance/buildkit-parser",
        "conformance/buildkit-parser-negative",
        "cases",
    ] {
        let Ok(entries) = std::fs::read_dir(shared().join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("Dockerfile")) {
                out.push(s);
            }
        }
    }
    out.sort();
    out
}

/// What must hold for every input: an error has a location inside the
/// source; a success has instructions whose spans are inside the source.
fn check(src: &str) {
    match parse(src) {
        Err(e) => {
            let loc = e.location.expect("every parse error is located");
            assert!(loc.line >= 1 && loc.column >= 1);
            assert!(
                loc.offset <= src.len() && loc.offset + loc.len <= src.len(),
                "{loc:?} in {} bytes",
                src.len()
            );
            assert!(!e.message.is_empty());
        }
        Ok(df) => check_ok(src, &df),
    }
}

fn check_ok(src: &str, df: &Dockerfile) {
    assert!(!df.nodes.is_empty());
    let mut prev_end = 0;
    for n in &df.nodes {
        let s = n.span;
        assert!(
            s.start_line >= 1 && s.start_line <= s.end_line && s.start_line > prev_end,
            "{s:?}"
        );
        prev_end = s.end_line;
        assert!(s.offset + s.len <= src.len(), "{s:?}");
        assert!(src.is_char_boundary(s.offset) && src.is_char_boundary(s.offset + s.len));
    }
    let d = dump(df);
    assert_eq!(
        d.lines().count(),
        df.nodes.len(),
        "one dump line per instruction"
    );
}

const ATOMS: &[&str] = &[
    "FROM ",
    "RUN ",
    "CMD ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "COPY ",
    "ADD ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "SHELL ",
    "\n",
    "\r\n",
    " ",
    "\t",
    "\\",
    "\\\n",
    "`",
    "`\n",
    "#",
    "# escape=`\n",
    "# escape=\\\n",
    "\"",
    "'",
    "[",
    "]",
    ",",
    "\"a\"",
    "=",
    "--",
    "--from=x ",
    "<<",
    "<<EOF",
    "<<-EOF",
    "EOF\n",
    "\tEOF\n",
    "<<'EOF'",
    "3<<EOF",
    "$",
    "${",
    "}",
    "${a:-b}",
    "1",
    "null",
    "{",
    "é",
    "\u{a0}",
    "\u{85}",
    "Å",
    "\u{2028}",
    "\u{feff}",
    "\0",
];

fn mutated(corpus: &'static [String]) -> impl Strategy<Value = String> {
    (
        0..corpus.len(),
        prop::collection::vec((any::<prop::sample::Index>(), 0..ATOMS.len(), 0u8..3), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut s: Vec<char> = corpus[i].chars().collect();
            for (at, atom, op) in edits {
                let pos = if s.is_empty() {
                    0
                } else {
                    at.index(s.len() + 1)
                };
                match op {
                    0 => {
                        for (k, c) in ATOMS[atom].chars().enumerate() {
                            s.insert(pos + k, c);
                        }
                    }
                    1 if pos < s.len() => {
                        s.remove(pos);
                    }
                    _ => {
                        let end = (pos + 1 + atom).min(s.len());
                        let chunk: Vec<char> = s[pos.min(end)..end].to_vec();
                        let to = at.index(s.len() + 1);
                        for (k, c) in chunk.into_iter().enumerate() {
                            s.insert(to + k, c);
                        }
                    }
                }
            }
            s.into_iter().collect()
        })
}

fn atoms() -> impl Strategy<Value = String> {
    prop::collection::vec(0..ATOMS.len(), 0..40)
        .prop_map(|v| v.into_iter().map(|i| ATOMS[i]).collect())
}

static CORPUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(src in any::<String>()) {
        check(&src);
    }

    #[test]
    fn dockerfile_atoms_never_panic(src in atoms()) {
        check(&src);
    }

    #[test]
    fn mutated_corpus_never_panics(src in mutated(CORPUS.get_or_init(corpus))) {
        check(&src);
    }
}

/// Parses `make(n)` for growing `n` and fails if time grows clearly faster
/// than the input: 8x the input is ~8x the time when linear and ~64x when
/// quadratic, so 32x tells them apart with room for a busy machine.
fn assert_linear(name: &str, make: impl Fn(usize) -> String) {
    // The fastest of a few runs, so a busy machine does not fake a blow-up.
    let time = |n: usize| {
        let src = make(n);
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let _ = parse(&src);
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let small = time(2_000).max(Duration::from_millis(2));
    let large = time(16_000);
    eprintln!("{name}: {small:?} for 2k units, {large:?} for 16k units");
    assert!(
        large < small * 32,
        "{name}: {small:?} for 2k units, {large:?} for 16k units (8x input)"
    );
    assert!(large < Duration::from_secs(5), "{name}: {large:?}");
}

#[test]
fn pathological_lines_parse_in_linear_time() {
    // Long physical lines stay under BuildKit's 64 KiB line limit by being
    // joined from continuation lines.
    let joined = |unit: &'static str, head: &'static str| {
        move |n: usize| {
            let mut s = String::from(head);
            for i in 0..n {
                s.push_str(unit);
                if i % 1000 == 999 {
                    s.push_str("\\\n");
                }
            }
            s.push('\n');
            s
        }
    };
    assert_linear("quotes", joined("\"", "RUN "));
    assert_linear("single quotes", joined("'", "ENV a="));
    assert_linear("escapes", joined("\\\\", "LABEL "));
    assert_linear("quote-escape", joined("\\\"", "ARG "));
    assert_linear("brackets", joined("[", "CMD "));
    assert_linear("json strings", joined("\"a\",", "CMD ["));
    assert_linear("nested json", joined("[", "RUN [\"a\","));
    assert_linear("dollar braces", joined("${", "RUN <<EOF "));
    assert_linear("heredoc arrows", joined("<<", "COPY "));
    assert_linear("flags", joined("--a\"b c\" ", "COPY "));
    assert_linear("env pairs", joined("a=\"b c\" ", "ENV "));
    assert_linear("many lines", |n| "RUN x \\\n\n# c\n".repeat(n) + "\n");
    assert_linear("many heredocs", |n| "RUN <<A <<B\na\nA\nb\nB\n".repeat(n));
    assert_linear("onbuild", joined("ONBUILD ", ""));
}

#[test]
fn deep_nesting_is_bounded() {
    // Valid JSON nested deeper than pest's stack allows still decides like Go:
    // a non-string element is an error…
    let deep = format!("CMD [\"a\", {}1{}]", "[".repeat(3000), "]".repeat(3000));
    assert!(parse(&deep).is_err());
    // …and beyond Go's depth limit it is not JSON at all (shell form).
    let deeper = format!("CMD [{}{}]", "[".repeat(10_001), "]".repeat(10_001));
    let df = parse(&deeper).expect("shell form");
    assert!(!df.nodes[0].json);
    // ONBUILD chains are refused rather than recursed into.
    let err = parse(&"ONBUILD ".repeat(1000)).expect_err("chained ONBUILD");
    assert!(err.message.contains("ONBUILD ONBUILD"));
    // `${` nested without end in a heredoc line: no heredocs, no crash.
    let df = parse(&format!("RUN {}<<EOF\n", "${a:-".repeat(5000))).expect("parses");
    assert!(df.nodes[0].heredocs.is_empty());
}

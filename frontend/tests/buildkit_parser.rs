//! BuildKit's own parser test data (shared/conformance) run through kiln's
//! parser: dumps must match byte for byte, negative cases must fail with
//! BuildKit's words, line numbers must agree.

use kiln_frontend::parser::{dump, parse};
use kiln_frontend::ErrorKind;
use kiln_testsupport::shared;
use std::fs;
use std::path::{Path, PathBuf};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn all_buildkit_parser_cases_dump_identically() {
    let dirs = case_dirs(&shared().join("conformance/buildkit-parser"));
    assert_eq!(dirs.len(), 33, "expected the 33 BuildKit parser cases");
    let mut failures = Vec::new();
    for dir in &dirs {
        let source = read(&dir.join("Dockerfile"));
        let expected = read(&dir.join("result"));
        match parse(&source) {
            Ok(df) => {
                let got = dump(&df) + "\n";
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: error {e:?}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail_with_buildkit_messages() {
    let dir = shared().join("conformance/buildkit-parser-negative");
    let expected = [
        (
            "empty_dockerfile",
            "file with no instructions",
            ErrorKind::Empty,
        ),
        (
            "only_comments",
            "file with no instructions",
            ErrorKind::Empty,
        ),
        (
            "env_no_value",
            "ENV must have two arguments",
            ErrorKind::InvalidArgument,
        ),
        (
            "shykes-nested-json",
            "when using JSON array syntax, arrays must be comprised of strings only",
            ErrorKind::Syntax,
        ),
    ];
    assert_eq!(case_dirs(&dir).len(), expected.len());
    for (name, message, kind) in expected {
        let source = read(&dir.join(name).join("Dockerfile"));
        let err = parse(&source).expect_err(name);
        assert_eq!(err.message, message, "{name}");
        assert_eq!(err.kind, kind, "{name}");
        assert!(err.location.is_some(), "{name}: error has no location");
    }
    // The located line of the instruction at fault.
    let err = parse(&read(&dir.join("env_no_value/Dockerfile"))).expect_err("env");
    let loc = err.location.expect("location");
    assert_eq!(
        (loc.line, loc.column, loc.offset),
        (3, 1, "FROM busybox\n\n".len())
    );
    assert_eq!(loc.len, "ENV PATH".len());
}

#[test]
fn line_numbers_match_buildkit() {
    let source = read(&shared().join("conformance/buildkit-parser-line-numbers.Dockerfile"));
    let df = parse(&source).expect("parses");
    let lines: Vec<(usize, usize)> = df
        .nodes
        .iter()
        .map(|n| (n.span.start_line, n.span.end_line))
        .collect();
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
    // Offsets and columns point at the keyword.
    for n in &df.nodes {
        let at = &source[n.span.offset..];
        assert!(
            at.to_ascii_lowercase().starts_with(&n.keyword),
            "{:?} at {}",
            n.keyword,
            n.span.offset
        );
        assert_eq!(n.span.start_col, 1);
    }
    let last = &df.nodes[2];
    assert!(source[last.span.offset..last.span.offset + last.span.len].ends_with("rm -rf $GOPATH"));
}

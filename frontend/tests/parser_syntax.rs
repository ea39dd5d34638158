//! The parts of the Dockerfile syntax BuildKit's conformance data does not
//! cover: heredocs, the escape directive, continuation warnings, limits, and
//! the located errors for bad input. Expected values come from BuildKit's
//! own parser tests and behaviour.

use kiln_frontend::parser::{dump, parse, Dockerfile, Heredoc, Node};
use kiln_frontend::ErrorKind;
use kiln_testsupport::shared;

fn ok(src: &str) -> Dockerfile {
    parse(src).unwrap_or_else(|e| panic!("parse failed: {e:?}\n{src}"))
}

fn hd(name: &str, content: &str, expand: bool, chomp: bool, fd: Option<u32>) -> Heredoc {
    Heredoc {
        name: name.into(),
        content: content.into(),
        expand,
        chomp,
        fd,
    }
}

fn node(df: &Dockerfile, i: usize) -> &Node {
    &df.nodes[i]
}

// BuildKit's parser_heredoc_test.go, TestParseExtractsHeredoc, as a table.
#[test]
fn heredocs_as_buildkit_extracts_them() {
    let src = "
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN \"<<NOHEREDOC\"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COMMENT
# internal comment
echo hello world
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<X <<Y /dest
Y
X
X
Y

RUN <<eo'f'
echo foo
eof

RUN <<eo\\'f
echo foo
eo'f

RUN <<'e'o\\'f
echo foo
eo'f

RUN <<'one two'
echo bar
one two

RUN <<$EOF
$EOF

RUN <<  EOF
EOF

RUN <<  EOF  > foo
EOF
\t";
    let df = ok(src);
    let expected: Vec<Vec<Heredoc>> = vec![
        vec![], // FROM
        vec![], // ENV
        vec![], // RUN ls
        vec![], // USER <<INVALID
        vec![], // INVALID (an unknown instruction)
        vec![hd("EMPTY", "", true, false, None)],
        vec![hd("EMPTY2", "", true, false, Some(3))],
        vec![], // RUN "<<NOHEREDOC"
        vec![hd("INDENT", "\tfoo\n\tbar\n", true, false, None)],
        vec![hd("UNINDENT", "baz\nquux\n", true, true, None)],
        vec![hd("UNINDENT2", "baz\nquux\n", true, true, None)],
        vec![hd("NOEXPAND", "don't expand $NAME\n", false, true, None)],
        vec![hd(
            "COMMENT",
            "# internal comment\necho hello world\n",
            true,
            false,
            None,
        )],
        vec![hd("MOUNT", "echo hello\n", true, false, None)],
        vec![
            hd("FILE1", "content 1\n", true, false, None),
            hd("FILE2", "content 2\n", true, false, None),
        ],
        vec![
            hd("X", "Y\n", true, false, None),
            hd("Y", "X\n", true, false, None),
        ],
        vec![hd("eof", "echo foo\n", false, false, None)],
        vec![hd("eo'f", "echo foo\n", true, false, None)],
        vec![hd("eo'f", "echo foo\n", false, false, None)],
        vec![hd("one two", "echo bar\n", false, false, None)],
        vec![hd("$EOF", "", true, false, None)],
        vec![hd("EOF", "", true, false, None)],
        vec![hd("EOF", "", true, false, None)],
    ];
    assert_eq!(df.nodes.len(), expected.len(), "{}", dump(&df));
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(
            &node(&df, i).heredocs,
            want,
            "instruction {i}: {}",
            node(&df, i).original
        );
    }
    // Heredoc bodies print nothing in the dump; the arguments keep the markers.
    assert_eq!(
        kiln_frontend::parser::dump_node(node(&df, 14)),
        r#"copy "<<FILE1" "<<FILE2" "/dest""#
    );
    assert_eq!(
        kiln_frontend::parser::dump_node(node(&df, 13)),
        r#"run ["--mount=type=cache,target=/foo"] "<<MOUNT""#
    );
    // The span of an instruction covers its bodies.
    let n = node(&df, 14);
    assert_eq!(n.span.end_line - n.span.start_line, 4);
}

#[test]
fn json_forms_never_take_heredocs() {
    let df = ok("FROM alpine\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n");
    assert!(df.nodes.iter().all(|n| n.heredocs.is_empty()));
    assert_eq!(df.nodes.len(), 4);
}

#[test]
fn heredoc_markers_inside_quotes_or_after_words() {
    let df = ok("FROM a\nRUN '<<EOF'\nRUN cat <<EOF > /x; cat <<-'B' | sh\nbody\nEOF\n\tb2\n\tB\nRUN 4<<EOF\nx\nEOF\n");
    assert!(node(&df, 1).heredocs.is_empty());
    assert_eq!(
        node(&df, 2).heredocs,
        vec![
            hd("EOF", "body\n", true, false, None),
            hd("B", "b2\n", false, true, None)
        ]
    );
    assert_eq!(
        node(&df, 3).heredocs,
        vec![hd("EOF", "x\n", true, false, Some(4))]
    );
    assert_eq!(node(&df, 3).span.start_line, 8);
    assert_eq!(node(&df, 3).span.end_line, 10);
}

#[test]
fn onbuild_heredoc_is_read_for_the_inner_instruction() {
    let df = ok("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN true\n");
    let ob = node(&df, 1);
    assert_eq!(ob.heredocs, vec![hd("EOF", "echo hi\n", true, false, None)]);
    assert_eq!(
        ob.next.as_ref().map(|n| n.heredocs.clone()),
        Some(ob.heredocs.clone())
    );
    assert_eq!(
        dump(&df),
        "(from \"a\")\n(onbuild (run \"<<EOF\"))\n(run \"true\")"
    );
}

#[test]
fn shared_heredoc_cases_parse() {
    let src =
        std::fs::read_to_string(shared().join("cases/m-heredoc-copy/Dockerfile")).expect("read");
    let df = ok(&src);
    let docs: Vec<(String, String, bool, bool)> = df
        .nodes
        .iter()
        .flat_map(|n| {
            n.heredocs
                .iter()
                .map(|h| (h.name.clone(), h.content.clone(), h.expand, h.chomp))
        })
        .collect();
    let s = |a: &str, b: &str, e: bool, c: bool| (a.to_string(), b.to_string(), e, c);
    assert_eq!(
        docs,
        vec![
            s("EOF", "single file\n", true, false),
            s("ONE", "first\n", true, false),
            s("TWO", "second\n", true, false),
            s("EOF", "#!/bin/sh\necho ok\n", true, false),
            s("EOF", "hello ${WHO}\n", true, false),
            s("EOF", "hello ${WHO} \\$\n", false, false),
            s("EOF", "indented\n", true, true),
        ]
    );
    assert_eq!(df.nodes[4].flags, vec!["--chmod=0755".to_string()]);

    let src =
        std::fs::read_to_string(shared().join("cases/m-heredoc-run/Dockerfile")).expect("read");
    let df = ok(&src);
    let last = df.nodes.last().expect("nodes");
    assert_eq!(
        last.heredocs,
        vec![
            hd("UP", "shout\n", true, false, None),
            hd("LOW", "WHISPER\n", true, false, None)
        ]
    );
    assert_eq!(
        last.args,
        vec!["cat <<UP | tr a-z A-Z > /run5; cat <<LOW | tr A-Z a-z > /run6".to_string()]
    );
    assert_eq!(
        df.nodes[3].heredocs[0].content,
        "#!/usr/bin/awk -f\nBEGIN { print \"from awk\" > \"/run2\" }\n"
    );
}

#[test]
fn every_shared_case_dockerfile_parses() {
    let mut count = 0;
    for entry in std::fs::read_dir(shared().join("cases")).expect("cases") {
        let dir = entry.expect("entry").path();
        let file = dir.join("Dockerfile");
        if !file.exists() {
            continue;
        }
        let src = std::fs::read_to_string(&file).expect("read");
        let df = parse(&src).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        assert!(!df.nodes.is_empty());
        if dir.ends_with("error-unknown-instruction") {
            // Kept for the typed layer to reject, printed as BuildKit does.
            assert!(
                dump(&df).lines().any(|l| l.ends_with(" \"\")")),
                "{}",
                dump(&df)
            );
        }
        count += 1;
    }
    assert!(count >= 30, "only {count} cases");
}

#[test]
fn unterminated_heredoc_is_a_located_error() {
    let err = parse("FROM a\nRUN <<EOF\necho hi\n").expect_err("unterminated");
    assert_eq!(err.message, "unterminated heredoc");
    assert_eq!(err.kind, ErrorKind::Syntax);
    let loc = err.location.expect("location");
    assert_eq!((loc.line, loc.column, loc.offset), (2, 1, 7));

    // The second of two heredocs missing its terminator.
    let err = parse("FROM a\nCOPY <<A <<B /x\na\nA\nb\n").expect_err("unterminated");
    assert_eq!(err.message, "unterminated heredoc");
}

#[test]
fn escape_directive_backtick() {
    let src = "# escape=`\nFROM windows\nRUN dir `\n  c:\\ `\n  /s\nCOPY a\\b c:\\x\\\n";
    let df = ok(src);
    assert_eq!(df.directives.escape, '`');
    assert_eq!(
        dump(&df),
        "(from \"windows\")\n(run \"dir   c:\\\\   /s\")\n(copy \"a\\\\b\" \"c:\\\\x\\\\\")"
    );
    // With the backtick, a trailing backslash is an ordinary character.
    assert_eq!(df.nodes[2].span.end_line, 6);

    let df = ok("# syntax=docker/dockerfile:1\n# check=skip=all\n#ESCAPE = `\n\nFROM a\n");
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.directives.check.as_deref(), Some("skip=all"));
    assert_eq!(df.directives.escape, '`');
}

#[test]
fn directives_only_at_the_top() {
    // After an instruction, a directive is just a comment.
    let df = ok("FROM a\n# escape=`\nRUN a \\\n b\n");
    assert_eq!(df.directives.escape, '\\');
    assert_eq!(dump(&df), "(from \"a\")\n(run \"a  b\")");
    // After a plain comment too.
    let df = ok("# hello\n# escape=`\nFROM a\n");
    assert_eq!(df.directives.escape, '\\');
}

#[test]
fn bad_escape_directive_is_an_error() {
    let err = parse("# escape=x\nFROM a\n").expect_err("bad escape");
    assert_eq!(
        err.message,
        "invalid escape token 'x' does not match ` or \\"
    );
    assert_eq!(err.kind, ErrorKind::Syntax);
    assert_eq!(err.location.map(|l| l.line), Some(1));

    let err = parse("# escape=\\\n# escape=`\nFROM a\n").expect_err("twice");
    assert_eq!(err.message, "only one escape parser directive can be used");
    assert_eq!(err.location.map(|l| l.line), Some(2));
}

#[test]
fn empty_continuation_lines_warn() {
    // BuildKit's TestParseWarnsOnEmptyContinutationLine.
    let src = "
FROM alpine:3.6

RUN valid \\
    continuation

RUN something \\

    following \\

    more

RUN another \\

    thing

RUN non-indented \\
# this is a comment
   after-comment

RUN indented \\
    # this is an indented comment
    comment
\t";
    let df = ok(src);
    assert_eq!(df.warnings.len(), 2);
    assert!(df.warnings[0]
        .message
        .starts_with("Empty continuation line found in"));
    assert!(df.warnings[0]
        .message
        .contains("RUN something     following     more"));
    assert!(df.warnings[1].message.contains("RUN another     thing"));
    assert_eq!(df.warnings[0].span.start_line, 8);
    assert_eq!(df.warnings[1].span.start_line, 14);
    assert_eq!(
        dump(&df),
        "(from \"alpine:3.6\")\n(run \"valid     continuation\")\n(run \"something     following     more\")\n\
         (run \"another     thing\")\n(run \"non-indented    after-comment\")\n(run \"indented     comment\")"
    );
}

#[test]
fn line_too_long_is_rejected_with_buildkit_message() {
    let long = "a".repeat(65536);
    let src = format!("\n\t\tFROM image\n\t\tLABEL test={long}\n");
    let err = parse(&src).expect_err("too long");
    assert_eq!(
        err.message,
        "dockerfile line greater than max allowed size of 65535"
    );
    assert_eq!(err.kind, ErrorKind::LineTooLong);
    assert_eq!(err.location.map(|l| l.line), Some(3));

    // One byte less is fine.
    let ok_src = format!("FROM image\nLABEL a={}\n", "b".repeat(65535 - 8));
    let df = ok(&ok_src);
    assert_eq!(df.nodes[1].args[1].len(), 65535 - 8);
}

#[test]
fn keywords_are_case_insensitive_and_unknown_kept() {
    let df = ok("from a AS b\nRuN echo\nbar baz\nONBUILD --x Frob y\n");
    assert_eq!(
        dump(&df),
        "(from \"a\" \"AS\" \"b\")\n(run \"echo\")\n(bar \"\")\n(onbuild [\"--x\"] (frob \"\"))"
    );
    assert_eq!(df.nodes[2].keyword, "bar");
}

#[test]
fn flags_as_buildkit_extracts_them() {
    let df = ok(concat!(
        "COPY --from=\"a b\" --chown='x' --chmod=7\\55 -- --not-a-flag /d\n",
        "RUN --mount=type=secret,id=x\\\n",
        "  --network=none echo\n",
        "COPY --link\n",
        "COPY --x --\n",
    ));
    assert_eq!(
        dump(&df),
        concat!(
            "(copy [\"--from=a b\" \"--chown=x\" \"--chmod=755\"] \"--not-a-flag\" \"/d\")\n",
            "(run [\"--mount=type=secret,id=x\" \"--network=none\"] \"echo\")\n",
            "(copy [\"--link\"])\n",
            "(copy [\"--x\"])"
        )
    );
}

#[test]
fn json_and_shell_forms() {
    let df = ok(concat!(
        "CMD [\"a\", \"\\u00e9\\ud83d\\ude00\", \"\\ud800x\"]\n",
        "CMD [\"a\", 1e400]\n",
        "ENTRYPOINT [\"a\"] trailing\n",
        "SHELL [\"/bin/sh\", \"-c\"]\n",
        "VOLUME [\"/a\", \"/b c\"]\n",
        "RUN [ ]\n",
    ));
    assert_eq!(df.nodes[0].args, vec!["a", "é😀", "\u{FFFD}x"]);
    assert!(df.nodes[0].json);
    // Go's decoder rejects an out-of-range number, so BuildKit falls back to shell form.
    assert_eq!(df.nodes[1].args, vec!["[\"a\", 1e400]"]);
    assert!(!df.nodes[1].json);
    assert_eq!(df.nodes[2].args, vec!["[\"a\"] trailing"]);
    assert_eq!(df.nodes[4].args, vec!["/a", "/b c"]);
    assert!(df.nodes[5].json && df.nodes[5].args.is_empty());

    for bad in [
        "CMD [1]",
        "RUN [\"a\", {\"b\": [1, null]}]",
        "COPY [\"a\", true]",
        "HEALTHCHECK CMD [null]",
    ] {
        let err = parse(bad).expect_err(bad);
        assert_eq!(
            err.message, "when using JSON array syntax, arrays must be comprised of strings only",
            "{bad}"
        );
    }
}

#[test]
fn env_label_arg_forms() {
    let df = ok("ENV a b c\nLABEL \"k\"=\"v w\" x=y\nARG a b=c \"d e\"\nENV\n");
    assert_eq!(
        dump(&df),
        "(env \"a\" \"b c\" \"\")\n(label \"\\\"k\\\"\" \"\\\"v w\\\"\" \"=\" \"x\" \"y\" \"=\")\n(arg \"a\" \"b=c\" \"\\\"d e\\\"\")\n(env)"
    );
    let err = parse("ENV a=b c\n").expect_err("missing =");
    assert_eq!(
        err.message,
        "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
    let err = parse("LABEL x\n").expect_err("label");
    assert_eq!(err.message, "LABEL must have two arguments");
}

#[test]
fn dump_quotes_as_go_does() {
    let df = ok("RUN a\u{7}\u{1b}\u{a0}\u{ad}é\u{1F600}\u{E000}\"\\x\n");
    assert_eq!(
        dump(&df),
        "(run \"a\\a\\x1b\\u00a0\\u00adé😀\\ue000\\\"\\\\x\")"
    );
}

#[test]
fn spans_columns_and_offsets() {
    let src = "\u{FEFF}FROM a\n  \tRUN x \\\n  y\n";
    let df = ok(src);
    assert_eq!(df.nodes[0].span.offset, 3);
    let run = &df.nodes[1].span;
    assert_eq!((run.start_line, run.end_line, run.start_col), (2, 3, 4));
    assert_eq!(&src[run.offset..run.offset + run.len], "RUN x \\\n  y");
    assert_eq!(df.nodes[1].original, "RUN x   y");
}

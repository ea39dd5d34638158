//! Word expansion against BuildKit's own tables (../shared/conformance/shell),
//! plus robustness: random words must never panic or take super-linear time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln_frontend::shell::{env_from_assignments, Lexer, ShellError};
use kiln_testsupport::shared;
use proptest::prelude::*;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = shared()
        .join("conformance/shell")
        .join(name)
        .display()
        .to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn str_field<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("case without string {key}: {case}"))
}

/// The rows of a table file that apply on Unix, so the JSON cases can be
/// checked for completeness against the file as BuildKit ships it.
fn unix_rows_in_env_var_table() -> usize {
    let text =
        std::fs::read_to_string(shared().join("conformance/shell/envVarTest")).expect("envVarTest");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| l.starts_with("A|") || l.starts_with("U|"))
        .count()
}

#[test]
fn env_var_table() {
    let table = load("envVarTest.cases.json");
    let env: BTreeMap<String, String> = table["env"]
        .as_object()
        .expect("env object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("env value").to_string()))
        .collect();
    let lexer = Lexer::new('\\');
    let mut total = 0;
    let mut failures = Vec::new();
    for case in table["cases"].as_array().expect("cases") {
        let platform = str_field(case, "platform");
        if platform != "A" && platform != "U" {
            continue;
        }
        total += 1;
        let input = str_field(case, "input");
        let line = &case["line"];
        let got = lexer.process_word(input, &env);
        if case["expect_error"].as_bool() == Some(true) {
            match got {
                Err(e) => assert!(
                    e.to_string().starts_with("failed to process "),
                    "line {line}: error not worded as BuildKit's: {e}"
                ),
                Ok(v) => failures.push(format!(
                    "line {line}: {input:?} should fail, gave {:?}",
                    v.value
                )),
            }
        } else {
            let expected = str_field(case, "expected");
            match got {
                Ok(v) if v.value == expected => {}
                other => failures.push(format!(
                    "line {line}: {input:?} expected {expected:?}, got {other:?}"
                )),
            }
        }
    }
    assert_eq!(
        total,
        unix_rows_in_env_var_table(),
        "JSON cases and table rows disagree"
    );
    println!("envVarTest: {}/{total} passing", total - failures.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn words_table() {
    let table = load("wordsTest.cases.json");
    let lexer = Lexer::new('\\');
    let mut total = 0;
    let mut failures = Vec::new();
    for case in table["cases"].as_array().expect("cases") {
        total += 1;
        let input = str_field(case, "input");
        let line = &case["line"];
        let assignments: Vec<&str> = case["env"]
            .as_array()
            .expect("env list")
            .iter()
            .map(|v| v.as_str().expect("env entry"))
            .collect();
        let env = env_from_assignments(&assignments);
        let got = lexer.process_words(input, &env);
        if case["expect_error"].as_bool() == Some(true) {
            if let Ok(v) = got {
                failures.push(format!(
                    "line {line}: {input:?} should fail, gave {:?}",
                    v.value
                ));
            }
            continue;
        }
        let expected: Vec<&str> = case["expected_words"]
            .as_array()
            .expect("expected_words")
            .iter()
            .map(|v| v.as_str().expect("word"))
            .collect();
        match got {
            Ok(v) if v.value == expected => {}
            other => failures.push(format!(
                "line {line}: {input:?} expected {expected:?}, got {other:?}"
            )),
        }
    }
    let rows = std::fs::read_to_string(shared().join("conformance/shell/wordsTest"))
        .expect("wordsTest")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("ENV ") && l.contains('|'))
        .count();
    assert_eq!(total, rows, "JSON cases and table rows disagree");
    println!("wordsTest: {}/{total} passing", total - failures.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The error of `${V?}` names the word, the variable and the reason exactly
/// as BuildKit prints them, since users search for these messages.
#[test]
fn error_wording() {
    let env = env_from_assignments(&["NULL="]);
    let lexer = Lexer::new('\\');
    let cases = [
        ("he${XXX?}", "failed to process \"he${XXX?}\": XXX: is not allowed to be unset"),
        ("${NULL:?}", "failed to process \"${NULL:?}\": NULL: is not allowed to be empty"),
        ("${XXX:?need it}", "failed to process \"${XXX:?need it}\": XXX: need it"),
        ("he'llo", "failed to process \"he'llo\": unexpected end of statement while looking for matching single-quote"),
        ("\"hello", "failed to process \"\\\"hello\": unexpected end of statement while looking for matching double-quote"),
        ("${}", "failed to process \"${}\": syntax error: bad substitution"),
        ("${aaa", "failed to process \"${aaa\": unsupported modifier (\u{FFFD}) in substitution"),
        ("${aaa:-bbb", "failed to process \"${aaa:-bbb\": syntax error: missing '}'"),
        ("${a:-${b:?}", "failed to process \"${a:-${b:?}\": syntax error: missing '}'"),
        ("${a:-${b:?}}", "failed to process \"${a:-${b:?}}\": b: is not allowed to be unset"),
        ("${a/b", "failed to process \"${a/b\": syntax error: missing '/' in ${}"),
        ("${PWD:=000}", "failed to process \"${PWD:=000}\": unsupported modifier (:=) in substitution"),
        ("${.}", "failed to process \"${.}\": unsupported modifier (.) in substitution"),
        ("${a#\\x}", "failed to process \"${a#\\\\x}\": invalid pattern (\\x) in substitution: invalid escape '\\x'"),
        ("tab\t${", "failed to process \"tab\\t${\": syntax error: missing '}'"),
    ];
    for (input, expected) in cases {
        let err: ShellError = lexer.process_word(input, &env).expect_err(input);
        assert_eq!(err.to_string(), expected, "input {input:?}");
        assert_eq!(err.word(), input);
    }
}

/// A backtick escape (`# escape=\``) escapes like `\` does, and `\` becomes
/// an ordinary character, as on Windows-style Dockerfiles.
#[test]
fn backtick_escape() {
    let env = env_from_assignments(&["PWD=/home"]);
    let lexer = Lexer::new('`');
    let word = |s: &str| lexer.process_word(s, &env).map(|e| e.value);
    assert_eq!(word("c:\\dir\\$PWD").unwrap(), "c:\\dir\\/home");
    assert_eq!(word("a`$PWD").unwrap(), "a$PWD");
    assert_eq!(word("\"a`\"b\"").unwrap(), "a\"b");
    assert_eq!(word("\"a`xb\"").unwrap(), "a`xb");
    assert_eq!(word("a``b").unwrap(), "a`b");
    assert_eq!(word("ab`").unwrap(), "ab");
    assert_eq!(
        lexer.process_words("a` b c", &env).unwrap().value,
        vec!["a b".to_string(), "c".to_string()]
    );
}

fn lexers() -> Vec<Lexer> {
    let mut all = Vec::new();
    for escape in ['\\', '`'] {
        for bits in 0..16u8 {
            all.push(
                Lexer::new(escape)
                    .with_raw_quotes(bits & 1 != 0)
                    .with_raw_escapes(bits & 2 != 0)
                    .with_skip_process_quotes(bits & 4 != 0)
                    .with_skip_unset_env(bits & 8 != 0),
            );
        }
    }
    all
}

fn word_strategy() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "//", "\\", "`", "'", "\"", "*", " ",
        "\t", "\n", "a", "B", "_", "1", "é", "한", "\u{FEFF}", "${", "${A", "${A:-", "${A#",
        "${A%%", "${A//", "$A", "$@", "\\}", "\\/", "\\*", "$0", "${0}", "$$", "x",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any word in any lexer mode expands or fails with a worded error.
    #[test]
    fn random_words_never_panic(word in word_strategy(), which in 0usize..32) {
        let env = env_from_assignments(&["A=a*b/c d", "B=", "C=x\\y$0", "PWD=/home"]);
        let lexer = lexers()[which];
        for result in [
            lexer.process_word(&word, &env).map(|_| ()),
            lexer.process_words(&word, &env).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert!(e.to_string().starts_with("failed to process "));
            }
        }
    }

    /// Arbitrary Unicode, not just the lexer's alphabet.
    #[test]
    fn arbitrary_text_never_panics(word in "\\PC{0,60}") {
        let env = env_from_assignments(&["A=**", "B="]);
        for lexer in [Lexer::new('\\'), Lexer::new('`')] {
            let _ = lexer.process_word(&word, &env);
            let _ = lexer.process_words(&word, &env);
        }
    }
}

fn timed<T>(what: &str, limit: Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < limit, "{what} took {took:?}");
    out
}

/// Inputs that make naive implementations recurse deeply or backtrack
/// exponentially finish quickly, with bounded stack.
#[test]
fn adversarial_inputs_are_fast() {
    let lexer = Lexer::new('\\');
    let depth = 20_000;
    let nested = format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
    let empty = env_from_assignments::<&str>(&[]);
    let out = timed("deep nesting", Duration::from_secs(5), || {
        lexer.process_word(&nested, &empty)
    });
    assert_eq!(out.unwrap().value, "x");

    let unclosed = "${A:-\"".repeat(depth);
    let err = timed("deep unclosed nesting", Duration::from_secs(5), || {
        lexer.process_word(&unclosed, &empty)
    });
    assert!(err
        .unwrap_err()
        .to_string()
        .ends_with("syntax error: missing '}'"));

    // Many stars against a long value with no match: exponential for a
    // backtracker, (pattern × value) here.
    let value = "a".repeat(5_000);
    let env = env_from_assignments(&[format!("V={value}")]);
    for op in ["#", "##", "%", "%%", "/", "//"] {
        let tail = if op.starts_with('/') { "/r}" } else { "}" };
        let word = format!("${{V{op}{}b{tail}", "*a".repeat(200));
        let out = timed(op, Duration::from_secs(5), || {
            lexer.process_word(&word, &env)
        });
        assert_eq!(out.unwrap().value, value, "{op}");
    }

    // A 1 MB word of mixed text is linear work.
    let big = "ab${A} \"c$A\" 'd' \\e ".repeat(50_000);
    let env = env_from_assignments(&["A=value"]);
    let out = timed("1 MB word", Duration::from_secs(5), || {
        lexer.process_words(&big, &env)
    });
    assert_eq!(out.unwrap().value.len(), 200_000);
}

//! Property test: random and mutated Dockerfiles never make the frontend
//! panic. Every input goes through parsing, typing, word expansion and
//! planning; each must return Ok or a proper located error. The corpus is
//! BuildKit's parser test files and the shared build cases; mutations are
//! byte flips, line splices, inserted quotes, escapes, `${`, heredoc markers
//! and flags, and truncations. Seeded, so a failure reproduces.

use std::collections::BTreeMap;

use kiln_frontend::plan::{plan, PlanOptions};
use kiln_testsupport::shared;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in [
        "conformance/buildkit-parser",
        "conformance/buildkit-parser-negative",
        "cases",
    ] {
        let dir = shared().join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("Dockerfile")))
            .collect();
        paths.sort();
        for p in paths {
            if let Ok(b) = std::fs::read(&p) {
                out.push(b);
            }
        }
    }
    if let Ok(b) =
        std::fs::read(shared().join("conformance/buildkit-parser-line-numbers.Dockerfile"))
    {
        out.push(b);
    }
    assert!(out.len() > 60, "corpus too small: {}", out.len());
    out
}

const TOKENS: &[&str] = &[
    "\"",
    "'",
    "\\",
    "\\\n",
    "`",
    "${",
    "}",
    "$",
    "${A:-",
    "${A:+x}",
    "${A#*}",
    "${A%%x}",
    "${A/a/b}",
    "${A:?e}",
    "<<EOF\n",
    "<<-EOF\n",
    "<<\"EOF\"\n",
    "3<<IN\n",
    "\nEOF\n",
    "\n\tEOF\n",
    "EOF",
    "[",
    "]",
    "[\"a\", \"b\"]",
    "[1]",
    "--mount=",
    "--mount=type=cache,target=/c",
    "--from=",
    "--from=0",
    "--chown=$U",
    "--platform=$TARGETPLATFORM",
    "--",
    "=",
    "\n",
    "\r\n",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "ONBUILD ",
    "FROM ",
    "FROM scratch AS a\n",
    "ARG ",
    "ENV ",
    "COPY ",
    "RUN ",
    "WORKDIR ",
    "HEALTHCHECK ",
    "CMD ",
    "SHELL ",
    "EXPOSE ",
    "LABEL ",
    "USER ",
    "VOLUME ",
    "\t",
    " ",
    ",",
    "\0",
    "é",
    "\u{feff}",
    "\\\\",
    "\"\\\"",
    "AS",
    "1-2/udp",
    "$$",
    "${A:-${B:-${C}}}",
];

fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    match rng.gen_range(0..8) {
        0 if !input.is_empty() => {
            let i = rng.gen_range(0..input.len());
            input[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if !input.is_empty() => {
            let i = rng.gen_range(0..input.len());
            input[i] = rng.gen_range(0x20..0x7f);
        }
        2 => {
            // Splice a line from another file.
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let lines: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
            let line = lines[rng.gen_range(0..lines.len())];
            let at = line_start(rng, input);
            let mut ins = line.to_vec();
            ins.push(b'\n');
            input.splice(at..at, ins);
        }
        3 if !input.is_empty() => {
            let cut = rng.gen_range(0..=input.len());
            input.truncate(cut);
        }
        4 if !input.is_empty() => {
            // Delete a range.
            let a = rng.gen_range(0..input.len());
            let b = (a + rng.gen_range(0..32)).min(input.len());
            input.drain(a..b);
        }
        5 if input.len() > 2 => {
            // Duplicate a chunk.
            let a = rng.gen_range(0..input.len());
            let b = (a + rng.gen_range(0..64)).min(input.len());
            let chunk = input[a..b].to_vec();
            let at = rng.gen_range(0..=input.len());
            input.splice(at..at, chunk);
        }
        _ => {
            let tok = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
            let at = if rng.gen_bool(0.3) {
                line_start(rng, input)
            } else {
                rng.gen_range(0..=input.len())
            };
            input.splice(at..at, tok.iter().copied());
        }
    }
}

fn line_start(rng: &mut StdRng, input: &[u8]) -> usize {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            input
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    starts[rng.gen_range(0..starts.len())]
}

fn random_file(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(0..12) {
        for _ in 0..rng.gen_range(1..6) {
            if rng.gen_bool(0.7) {
                out.extend_from_slice(TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes());
            } else {
                let n = rng.gen_range(0..8);
                out.extend((0..n).map(|_| rng.gen_range(0x20u8..0x7f)));
            }
        }
        out.push(b'\n');
    }
    out
}

/// Runs one input through every stage; panics only if the frontend did.
fn check(src: &str, opts: &PlanOptions) -> bool {
    let lines = src.split('\n').count() + 1;
    let check_err = |e: &kiln_frontend::Error| {
        assert!(!e.message.is_empty(), "empty error message for {src:?}");
        if let Some(l) = e.location {
            assert!(
                l.line >= 1 && l.line <= lines,
                "line {} out of range for {src:?}: {e:?}",
                l.line
            );
            assert!(l.offset <= src.len() + 1, "offset out of range: {e:?}");
        }
    };
    let df = match kiln_frontend::parser::parse(src) {
        Ok(df) => df,
        Err(e) => {
            check_err(&e);
            return false;
        }
    };
    let _ = kiln_frontend::parser::dump(&df);
    match kiln_frontend::instructions::from_dockerfile(&df) {
        Ok(ins) => {
            // Expansion of every word as written, in both modes.
            let lexer = kiln_frontend::shell::Lexer::new(ins.escape);
            let env: BTreeMap<String, String> = [("A".to_string(), "a b".to_string())].into();
            for i in &ins.instructions {
                for w in i.original.split_whitespace().take(8) {
                    let _ = lexer.process_word(w, &env);
                    let _ = lexer.process_words(w, &env);
                }
            }
        }
        Err(e) => check_err(&e),
    }
    match plan(&df, opts) {
        Ok(p) => {
            let _ = serde_json::to_string(&p).expect("plans serialise");
            true
        }
        Err(e) => {
            check_err(&e);
            false
        }
    }
}

#[test]
fn random_and_mutated_dockerfiles_never_panic() {
    let corpus = corpus();
    let mut rng = StdRng::seed_from_u64(0x6b696c6e);
    let iterations: usize = std::env::var("KILN_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut planned = 0usize;
    let opts_variants = [
        PlanOptions::default(),
        PlanOptions {
            build_args: [("A".to_string(), "x".to_string())].into(),
            ..Default::default()
        },
        PlanOptions {
            target: Some("a".into()),
            ..Default::default()
        },
    ];
    for n in 0..iterations {
        let bytes = if n % 10 == 0 {
            random_file(&mut rng)
        } else {
            let mut b = corpus[rng.gen_range(0..corpus.len())].clone();
            for _ in 0..rng.gen_range(1..6) {
                mutate(&mut rng, &corpus, &mut b);
            }
            b
        };
        let src = String::from_utf8_lossy(&bytes);
        let opts = &opts_variants[n % opts_variants.len()];
        let result = std::panic::catch_unwind(|| check(&src, opts));
        match result {
            Ok(true) => planned += 1,
            Ok(false) => {}
            Err(_) => panic!("frontend panicked on input #{n}: {src:?}"),
        }
    }
    // The mutations must leave many inputs valid, or the test would only
    // exercise the parser's error paths.
    assert!(
        planned * 10 > iterations,
        "only {planned} of {iterations} inputs planned"
    );
}

#[test]
fn pathological_megabyte_inputs_complete() {
    let mut inputs: Vec<String> = Vec::new();
    // One logical line of a megabyte through continuations.
    inputs.push(format!(
        "FROM scratch\nRUN {}true\n",
        "echo a \\\n".repeat(110_000)
    ));
    // Deeply nested expansions.
    let depth = 60_000;
    let mut nested = String::from("FROM scratch\nWORKDIR ");
    for i in 0..depth {
        nested.push_str("${A:-");
        if i % 1000 == 999 {
            nested.push_str("\\\n");
        }
    }
    nested.push('x');
    for i in 0..depth {
        nested.push('}');
        if i % 1000 == 999 {
            nested.push_str("\\\n");
        }
    }
    nested.push('\n');
    inputs.push(nested);
    // A megabyte of quotes and escapes in one logical line.
    inputs.push(format!(
        "FROM scratch\nENV A=\"{}\"\n",
        "\\\"'\\\\ x\\\n".repeat(100_000)
    ));
    inputs.push(format!(
        "FROM scratch\n{}",
        "LABEL a=\"b\\\" c\" d='e'\n".repeat(40_000)
    ));
    // Many heredocs, one unterminated.
    inputs.push(format!(
        "FROM scratch\nRUN {} true\n{}",
        "<<E ".repeat(2000),
        "E\n".repeat(1999)
    ));
    // A line over BuildKit's limit.
    inputs.push(format!("FROM scratch\nRUN {}\n", "a".repeat(1 << 20)));
    // Many stages depending on each other.
    let mut stages = String::from("FROM scratch AS s0\n");
    for i in 1..20_000 {
        stages.push_str(&format!(
            "FROM s{} AS s{i}\nCOPY --from=s{} /a /a\n",
            i - 1,
            i / 2
        ));
    }
    inputs.push(stages);
    for src in &inputs {
        let _ = check(src, &PlanOptions::default());
    }
}

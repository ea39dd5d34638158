//! Throughput of the frontend on a large Dockerfile: BuildKit's parser corpus
//! concatenated to several megabytes, with a final stage that copies from
//! every other stage so planning visits all of them. Run with
//! `cargo bench -p kiln-frontend --bench parse`; divan prints bytes per second.

use std::sync::LazyLock;

use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use kiln_frontend::plan::{plan, PlanOptions};
use kiln_testsupport::shared;

/// The size the corpus is repeated up to.
const TARGET_BYTES: usize = 4 << 20;

/// Corpus files that stand alone when concatenated: they plan by
/// themselves, start a stage, and do not swallow the next file (a trailing
/// continuation or an open heredoc would).
fn usable(src: &str) -> bool {
    let Ok(df) = kiln_frontend::parser::parse(src) else {
        return false;
    };
    if df.directives.escape != '\\' || df.nodes.first().map(|n| n.keyword.as_str()) != Some("from")
    {
        return false;
    }
    if plan(&df, &PlanOptions::default()).is_err() {
        return false;
    }
    match kiln_frontend::parser::parse(&format!("{src}\nFROM scratch AS sentinel\n")) {
        Ok(joined) => joined.nodes.len() == df.nodes.len() + 1,
        Err(_) => false,
    }
}

static INPUT: LazyLock<String> = LazyLock::new(|| {
    let dir = shared().join("conformance/buildkit-parser");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("shared conformance corpus")
        .filter_map(|e| e.ok().map(|e| e.path().join("Dockerfile")))
        .collect();
    paths.sort();
    let files: Vec<String> = paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|s| usable(s))
        .map(|s| format!("{}\n", s.trim_end()))
        .collect();
    assert!(!files.is_empty());
    let mut out = String::with_capacity(TARGET_BYTES + (1 << 20));
    let mut stages = 0usize;
    'fill: loop {
        for f in &files {
            if out.len() >= TARGET_BYTES {
                break 'fill;
            }
            stages += f
                .lines()
                .filter(|l| l.trim_start().to_ascii_lowercase().starts_with("from "))
                .count();
            out.push_str(f);
        }
    }
    out.push_str("FROM scratch AS all\n");
    for i in 0..stages {
        out.push_str(&format!("COPY --from={i} /x /x{i}\n"));
    }
    let df = kiln_frontend::parser::parse(&out).expect("the concatenation parses");
    let p = plan(&df, &PlanOptions::default()).expect("the concatenation plans");
    eprintln!(
        "input: {:.1} MiB, {} instructions, {} stages planned",
        out.len() as f64 / (1 << 20) as f64,
        df.nodes.len(),
        p.stages.len()
    );
    out
});

fn main() {
    LazyLock::force(&INPUT);
    divan::main();
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn parse(bencher: Bencher) {
    let src = INPUT.as_str();
    bencher
        .counter(BytesCount::new(src.len()))
        .bench(|| kiln_frontend::parser::parse(black_box(src)).map(|d| d.nodes.len()));
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn parse_and_type(bencher: Bencher) {
    let src = INPUT.as_str();
    bencher.counter(BytesCount::new(src.len())).bench(|| {
        let df = kiln_frontend::parser::parse(black_box(src)).expect("parses");
        kiln_frontend::instructions::from_dockerfile(&df).map(|i| i.instructions.len())
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn parse_and_plan(bencher: Bencher) {
    let src = INPUT.as_str();
    bencher.counter(BytesCount::new(src.len())).bench(|| {
        let df = kiln_frontend::parser::parse(black_box(src)).expect("parses");
        plan(&df, &PlanOptions::default()).map(|p| p.stages.len())
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn plan_only(bencher: Bencher) {
    let src = INPUT.as_str();
    let df = kiln_frontend::parser::parse(src).expect("parses");
    bencher
        .counter(BytesCount::new(src.len()))
        .bench(|| plan(black_box(&df), &PlanOptions::default()).map(|p| p.stages.len()));
}

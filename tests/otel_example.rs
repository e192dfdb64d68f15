//! `examples/otel.rs` exports coercion's spans to OpenTelemetry (on stdout): one trace per
//! plan, each span under its parent — plan, block, sequence, action.
//!
//! Runs the example's binary, which `scripts/test.sh` builds first (`cargo build --example
//! otel --features otel`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

#[test]
fn the_otel_example_exports_one_trace_per_plan() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join("otel");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --example otel --features otel` (scripts/test.sh does)",
        bin.display()
    );
    let out = Command::new(&bin).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Completed"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();

    // name, trace, span, parent of each exported span.
    let field = |line: &str, key: &str| {
        let rest = line.trim().strip_prefix(key)?.trim_start();
        Some(rest.strip_prefix(':')?.trim().trim_matches('"').to_owned())
    };
    let mut spans: Vec<[String; 4]> = Vec::new();
    let mut current: [String; 4] = Default::default();
    for line in stdout.lines() {
        for (i, key) in ["Name", "TraceId", "SpanId", "ParentSpanId"]
            .iter()
            .enumerate()
        {
            if let Some(v) = field(line, key) {
                current[i] = v;
                if i == 3 {
                    spans.push(std::mem::take(&mut current));
                }
            }
        }
    }
    let traces: BTreeSet<&str> = spans.iter().map(|s| s[1].as_str()).collect();
    assert_eq!(traces.len(), 1, "one plan, one trace:\n{stdout}");
    let names: HashMap<&str, &str> = spans
        .iter()
        .map(|s| (s[2].as_str(), s[0].as_str()))
        .collect();
    let count = |name: &str| spans.iter().filter(|s| s[0] == name).count();
    assert_eq!(
        (
            count("plan"),
            count("block"),
            count("sequence"),
            count("action")
        ),
        (1, 1, 2, 4),
        "{stdout}"
    );
    for [name, _, _, parent] in &spans {
        let expected = match name.as_str() {
            "plan" => {
                assert!(!names.contains_key(parent.as_str()), "the plan is the root");
                continue;
            }
            "block" => "plan",
            "sequence" => "block",
            "action" => "sequence",
            other => panic!("unexpected span {other}"),
        };
        assert_eq!(
            names.get(parent.as_str()).copied(),
            Some(expected),
            "the parent of a {name} is a {expected}:\n{stdout}"
        );
    }
}

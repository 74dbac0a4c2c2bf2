//! The redactor's cost on a 10 MB test log: what every test run pays before its output
//! is parsed, cached and written (`Redactor::redact_prose`), and the code-safe pass
//! every run file and printed line gets (`Redactor::redact`).
//!
//! `cargo bench --bench redact_log` (release build; not run in CI).

use std::time::Instant;

use autotriage::redact::Redactor;

const RUNS: usize = 15;
const TARGET_BYTES: usize = 10 * 1024 * 1024;

/// A pytest-style log: passing and failing tests, tracebacks with paths and line
/// numbers, git SHAs, hashes, base64 data, and (once per ~1 MB) a planted secret.
fn log() -> (String, Vec<&'static str>) {
    let planted = vec![
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "AKIAIOSFODNN7EXAMPLE",
    ];
    let mut out = String::with_capacity(TARGET_BYTES + 4096);
    let mut i: u64 = 0;
    while out.len() < TARGET_BYTES {
        i += 1;
        let sha = format!("{:040x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        out.push_str(&format!(
            "tests/test_module_{}.py::test_case_{i} PASSED [{:>3}%]\n",
            i % 97,
            i % 100
        ));
        if i.is_multiple_of(7) {
            out.push_str(&format!(
                "    def test_case_{i}(self):\n>       assert parse(\"{i}d\") == {}\nE       AssertionError: assert 2880 == {}\nsrc/widgets/parse.py:{}: AssertionError\n",
                i * 1440,
                i * 1440,
                i % 400
            ));
        }
        if i.is_multiple_of(11) {
            out.push_str(&format!(
                "DEBUG commit {sha} data=SGVsbG8gd29ybGQhIFRoaXMgaXMgdGVzdCBkYXRh{}==\n",
                i % 10
            ));
        }
        if i.is_multiple_of(20_000) {
            let s = planted[(i / 20_000) as usize % planted.len()];
            out.push_str(&format!("env dump: SECRET {s} end\n"));
        }
    }
    (out, planted)
}

fn median(label: &str, bytes: usize, f: &dyn Fn() -> usize) {
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let m = ms[ms.len() / 2];
    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{label:<44} median {m:8.1} ms  p90 {:8.1} ms  {:6.1} MB/s  ({RUNS} runs, {mb:.1} MB)",
        ms[ms.len() * 9 / 10],
        mb / (m / 1000.0)
    );
}

fn main() {
    let (text, planted) = log();
    let r = Redactor::default();
    let prose = r.redact_prose(&text);
    for s in &planted {
        assert!(!prose.contains(s), "{s} survived");
    }
    let kept = text.matches("SGVsbG8gd29ybGQh").count();
    assert_eq!(
        prose.matches("SGVsbG8gd29ybGQh").count(),
        kept,
        "base64 data kept"
    );
    println!(
        "10 MB test log: {} lines, {} planted secrets removed, {kept} base64 strings and {} SHAs kept",
        text.lines().count(),
        prose.matches("[REDACTED:").count(),
        prose.matches("DEBUG commit ").count()
    );
    median(
        "redact_prose (test output, issue text)",
        text.len(),
        &|| r.redact_prose(&text).len(),
    );
    median(
        "redact (code, run files, printed lines)",
        text.len(),
        &|| r.redact(&text).len(),
    );
}

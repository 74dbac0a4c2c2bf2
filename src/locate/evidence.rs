//! Clues an issue gives about where the code is: stack frames, paths, dotted names,
//! identifiers and error messages.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::tokens::is_stopword;

/// A frame of a stack trace or a panic location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The path as printed.
    pub path: String,
    /// The line, when printed.
    pub line: Option<u32>,
    /// The function, when printed.
    pub function: Option<String>,
    /// `python traceback`, `rust panic`, `rust backtrace`, `javascript stack`,
    /// `java stack`, `go stack`.
    pub source: &'static str,
}

/// A path the text names outside a stack trace, with the line when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathMention {
    /// The path as written.
    pub path: String,
    /// `path:line`.
    pub line: Option<u32>,
}

/// What an issue says about where its code is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Clues {
    /// Frames, innermost (where it failed) first.
    pub frames: Vec<Frame>,
    /// Other paths named.
    pub paths: Vec<PathMention>,
    /// Dotted and `::` names (`requests.models.Response`, `crate::io::read`).
    pub qualified: Vec<String>,
    /// Identifiers that look like code, with a weight (code spans and frames weigh more).
    pub identifiers: Vec<(String, f32)>,
    /// Error messages, to match against string literals.
    pub messages: Vec<String>,
    /// The identifiers the issue marks as code (not only words of a fenced block).
    pub marked: Vec<String>,
}

fn re(p: &str) -> Regex {
    // The patterns are constants checked by the tests below.
    #[allow(clippy::expect_used)]
    Regex::new(p).expect("valid pattern")
}

static PY_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    re(r#"File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>[\w<>.]+))?"#)
});
static RUST_PANIC: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"panicked at (?:'(?P<msg>[^'\n]*)', |"(?P<msg2>[^"\n]*)", )?(?P<path>[\w./\\-]+\.rs):(?P<line>\d+)(?::\d+)?(?P<colon>:)?"#,
    )
});
static RUST_AT: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\s*at (?P<path>[\w./\\-]+\.rs):(?P<line>\d+)(?::\d+)?\s*$"));
static RUST_FN: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^\s*\d+:\s+(?:0x[0-9a-f]+ - )?(?P<func>[A-Za-z_][\w:<>]*?)(?:::h[0-9a-f]{16})?\s*$")
});
static JS_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^\s*at (?:(?P<func>[^\s()]+(?: \[as \w+\])?) \()?(?:file://|webpack:///)?(?P<path>[^\s()]+\.(?:js|mjs|cjs|jsx|ts|tsx|vue)):(?P<line>\d+)(?::\d+)?\)?\s*$",
    )
});
static JAVA_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^\s*at (?P<class>[\w$.]+)\.(?P<func>[\w$<>]+)\((?P<file>[\w$]+\.(?:java|kt|scala|groovy)):(?P<line>\d+)\)",
    )
});
static GO_FRAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\s*(?P<path>\S+\.go):(?P<line>\d+)(?: \+0x[0-9a-f]+)?\s*$"));
static GO_FUNC: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?P<func>[\w./*()-]+\.[\w*()]+)\(.*\)\s*$"));
static BLOB_URL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"https?://[^\s/]+/[^\s/]+/[^\s/]+/(?:blob|tree)/[^\s/]+/(?P<path>[^\s#?)\]]+)(?:#L(?P<line>\d+))?",
    )
});
static URL: LazyLock<Regex> = LazyLock::new(|| re(r"(?:https?|file)://\S+"));
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:^|[\s`'(\[<:=,])(?P<path>(?:[\w.@+-]+/)*[\w@+-][\w.+-]*\.(?:py|pyx|pyi|rs|js|mjs|cjs|jsx|ts|tsx|go|java|kt|scala|rb|php|c|h|cc|cpp|hpp|cs|swift|m|vue|toml|cfg|ini|yaml|yml|json|sql|sh))(?::(?P<line>\d+))?\b",
    )
});
static QUALIFIED: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b[A-Za-z_]\w*(?:(?:\.|::)[A-Za-z_]\w*)+\b"));
static CODE_SPAN: LazyLock<Regex> = LazyLock::new(|| re(r"`([^`\n]+)`"));
static WORD: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z_][A-Za-z0-9_]*"));
static EXCEPTION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:E\s+)?(?:[\w.]+\.)?(?P<exc>[A-Z]\w*(?:Error|Exception|Warning|Exit|Failure|Interrupt))(?::\s*(?P<msg>.+))?\s*$",
    )
});
static ERROR_LINE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^\s*(?:error|fatal|warning)(?:\[\w+\])?:\s*(?P<msg>.{8,})$"));

/// Read an issue's title and body for clues.
pub fn extract(title: &str, body: &str) -> Clues {
    let text = format!("{title}\n{body}");
    let mut clues = Clues::default();
    let mut idents: HashMap<String, f32> = HashMap::new();
    let add_ident = |m: &mut HashMap<String, f32>, w: &str, weight: f32| {
        let w = w.trim_matches('_');
        if w.len() < 3 || is_stopword(&w.to_ascii_lowercase()) || KEYWORDS.contains(&w) {
            return;
        }
        let e = m.entry(w.to_string()).or_insert(0.0);
        *e = e.max(weight);
    };

    let lines: Vec<&str> = text.lines().collect();
    // Python tracebacks print the failing frame last; others print it first.
    let mut py_frames: Vec<Frame> = Vec::new();
    let mut go_func: Option<String> = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = PY_FRAME.captures(line) {
            let function = c.name("func").map(|m| m.as_str().to_string());
            if let Some(f) = &function {
                add_ident(&mut idents, f, 2.0);
            }
            py_frames.push(Frame {
                path: c["path"].to_string(),
                line: c["line"].parse().ok(),
                function,
                source: "python traceback",
            });
            continue;
        }
        if let Some(c) = RUST_PANIC.captures(line) {
            clues.frames.push(Frame {
                path: c["path"].to_string(),
                line: c["line"].parse().ok(),
                function: None,
                source: "rust panic",
            });
            if let Some(m) = c.name("msg").or_else(|| c.name("msg2")) {
                clues.messages.push(m.as_str().to_string());
            } else if c.name("colon").is_some()
                && let Some(next) = lines.get(i + 1)
            {
                // Rust 1.73+: the message follows on the next line.
                clues.messages.push(next.trim().to_string());
            }
            continue;
        }
        if let Some(c) = RUST_AT.captures(line) {
            let function = i
                .checked_sub(1)
                .and_then(|p| RUST_FN.captures(lines[p]))
                .map(|f| f["func"].to_string());
            clues.frames.push(Frame {
                path: c["path"].to_string(),
                line: c["line"].parse().ok(),
                function,
                source: "rust backtrace",
            });
            continue;
        }
        if let Some(c) = JS_FRAME.captures(line) {
            let function = c.name("func").map(|m| m.as_str().to_string());
            if let Some(f) = &function {
                for w in f.split('.') {
                    add_ident(&mut idents, w, 2.0);
                }
            }
            clues.frames.push(Frame {
                path: c["path"].to_string(),
                line: c["line"].parse().ok(),
                function,
                source: "javascript stack",
            });
            continue;
        }
        if let Some(c) = JAVA_FRAME.captures(line) {
            let class = c["class"].split('$').next().unwrap_or("").to_string();
            let package: Vec<&str> = class.split('.').collect();
            let dir = package[..package.len().saturating_sub(1)].join("/");
            let file = &c["file"];
            let path = if dir.is_empty() {
                file.to_string()
            } else {
                format!("{dir}/{file}")
            };
            add_ident(&mut idents, &c["func"], 2.0);
            clues.frames.push(Frame {
                path,
                line: c["line"].parse().ok(),
                function: Some(c["func"].to_string()),
                source: "java stack",
            });
            continue;
        }
        if let Some(c) = GO_FUNC.captures(line) {
            go_func = Some(c["func"].to_string());
            continue;
        }
        if let Some(c) = GO_FRAME.captures(line) {
            let function = go_func.take();
            if let Some(f) = &function
                && let Some(name) = f.rsplit('.').next()
            {
                add_ident(&mut idents, name, 2.0);
            }
            clues.frames.push(Frame {
                path: c["path"].to_string(),
                line: c["line"].parse().ok(),
                function,
                source: "go stack",
            });
            continue;
        }
        let trimmed = line.trim();
        if let Some(c) = EXCEPTION.captures(trimmed) {
            add_ident(&mut idents, &c["exc"], 1.0);
            if let Some(m) = c.name("msg") {
                clues.messages.push(m.as_str().to_string());
            }
        } else if let Some(c) = ERROR_LINE.captures(trimmed) {
            clues.messages.push(c["msg"].to_string());
        }
    }
    py_frames.reverse();
    clues.frames.splice(0..0, py_frames);

    // Paths: repository links first, then paths in the text with URLs removed.
    for c in BLOB_URL.captures_iter(&text) {
        clues.paths.push(PathMention {
            path: c["path"].to_string(),
            line: c.name("line").and_then(|l| l.as_str().parse().ok()),
        });
    }
    let without_urls = URL.replace_all(&text, " ");
    let frame_lines: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|l| {
            PY_FRAME.is_match(l)
                || RUST_AT.is_match(l)
                || JS_FRAME.is_match(l)
                || JAVA_FRAME.is_match(l)
                || GO_FRAME.is_match(l)
        })
        .copied()
        .collect();
    for line in without_urls.lines() {
        if frame_lines.contains(line) {
            continue;
        }
        for c in PATH.captures_iter(line) {
            let path = c["path"].trim_start_matches("./").to_string();
            let m = PathMention {
                path,
                line: c.name("line").and_then(|l| l.as_str().parse().ok()),
            };
            if !clues.paths.contains(&m) {
                clues.paths.push(m);
            }
        }
    }

    // Code spans and fenced blocks: their identifiers count double.
    let mut in_fence = false;
    let mut fenced: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut marked: std::collections::HashSet<String> = std::collections::HashSet::new();
    for line in without_urls.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            // Fenced blocks mix code with output and prose: their words weigh in the
            // text search but do not, alone, mark a name as code.
            for w in WORD.find_iter(line) {
                add_ident(&mut idents, w.as_str(), 1.0);
                fenced.insert(w.as_str().trim_matches('_').to_string());
            }
        } else {
            for c in CODE_SPAN.captures_iter(line) {
                for w in WORD.find_iter(&c[1]) {
                    add_ident(&mut idents, w.as_str(), 1.5);
                    marked.insert(w.as_str().trim_matches('_').to_string());
                }
            }
            // Prose words that look like code: snake_case, camelCase, or called.
            for w in WORD.find_iter(line) {
                let s = w.as_str();
                let called = line[w.end()..].starts_with('(');
                let inner_cap = s.chars().skip(1).any(|c| c.is_uppercase())
                    && s.chars().any(|c| c.is_lowercase());
                if s.contains('_') || inner_cap || called {
                    add_ident(&mut idents, s, 1.0);
                    marked.insert(s.trim_matches('_').to_string());
                }
            }
        }
    }
    for m in QUALIFIED.find_iter(&without_urls) {
        let q = m.as_str();
        let first = q.split(['.', ':']).next().unwrap_or("");
        if matches!(
            first,
            "self" | "cls" | "this" | "e" | "i" | "eg" | "ie" | "etc" | "www"
        ) || PATH.is_match(&format!(" {q}"))
            || q.split(['.', ':'])
                .all(|p| p.is_empty() || p.chars().all(|c| c.is_ascii_digit()))
        {
            continue;
        }
        for part in q.split(['.', ':']).filter(|p| !p.is_empty()) {
            add_ident(&mut idents, part, 1.0);
        }
        if !clues.qualified.iter().any(|x| x == q) {
            clues.qualified.push(q.to_string());
        }
    }
    // Names seen only in fenced blocks are not marked as code unless they look like
    // code themselves (snake_case, camelCase) or came from frames and dotted names.
    let mut ids: Vec<(String, f32)> = idents.into_iter().collect();
    clues.marked = ids
        .iter()
        .filter(|(w, weight)| {
            marked.contains(w)
                || !fenced.contains(w)
                || *weight > 1.0
                || w.contains('_')
                || (w.chars().skip(1).any(char::is_uppercase) && w.chars().any(char::is_lowercase))
        })
        .map(|(w, _)| w.clone())
        .collect();
    clues.marked.sort();
    ids.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    clues.identifiers = ids;
    clues.messages.retain(|m| {
        m.split_whitespace()
            .filter(|w| w.chars().any(char::is_alphabetic))
            .count()
            >= 2
    });
    clues.messages.dedup();
    clues
}

/// Words of many languages that name no particular code.
const KEYWORDS: &[&str] = &[
    "and",
    "assert",
    "async",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "def",
    "del",
    "elif",
    "else",
    "enum",
    "except",
    "export",
    "extends",
    "final",
    "finally",
    "for",
    "from",
    "func",
    "function",
    "global",
    "impl",
    "import",
    "lambda",
    "let",
    "match",
    "mut",
    "nonlocal",
    "not",
    "package",
    "private",
    "protected",
    "public",
    "raise",
    "static",
    "struct",
    "super",
    "switch",
    "throw",
    "trait",
    "try",
    "type",
    "var",
    "void",
    "while",
    "with",
    "yield",
    "True",
    "False",
    "None",
    "null",
    "undefined",
    "Traceback",
    "most",
    "recent",
    "call",
    "last",
    "line",
    "File",
    "str",
    "int",
    "list",
    "dict",
    "bool",
    "float",
    "tuple",
    "set",
    "len",
    "print",
    "range",
    "String",
    "Vec",
    "Option",
    "Result",
    "Some",
    "Ok",
    "Err",
    "unwrap",
    "python",
    "pip",
    "install",
    "version",
    "pytest",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_traceback_innermost_first() {
        let c = extract(
            "crash",
            "Traceback (most recent call last):\n  File \"/venv/site-packages/pkg/cli.py\", line 10, in main\n    run()\n  File \"/venv/site-packages/pkg/core.py\", line 42, in run_job\n    x.go()\nValueError: job id must be positive\n",
        );
        assert_eq!(c.frames[0].path, "/venv/site-packages/pkg/core.py");
        assert_eq!(c.frames[0].line, Some(42));
        assert_eq!(c.frames[1].path, "/venv/site-packages/pkg/cli.py");
        assert_eq!(c.messages, ["job id must be positive"]);
        assert!(c.identifiers.iter().any(|(w, _)| w == "run_job"));
    }

    #[test]
    fn rust_panics_old_and_new() {
        let c = extract(
            "",
            "thread 'main' panicked at 'index out of bounds', src/x.rs:12:5",
        );
        assert_eq!(c.frames[0].path, "src/x.rs");
        assert_eq!(c.messages, ["index out of bounds"]);
        let c = extract(
            "",
            "thread 'main' panicked at src/lib/parse.rs:7:9:\nunexpected end of input\n",
        );
        assert_eq!(c.frames[0].path, "src/lib/parse.rs");
        assert_eq!(c.frames[0].line, Some(7));
        assert_eq!(c.messages, ["unexpected end of input"]);
    }

    #[test]
    fn js_java_go_frames() {
        let c = extract(
            "",
            "TypeError: cannot read x\n    at parseArgs (/app/src/cli/args.js:31:7)\n    at com.acme.util.Parser$Inner.parse(Parser.java:88)\nmain.(*Server).Serve(0xc000)\n\t/home/u/proj/server/serve.go:120 +0x1d\n",
        );
        let paths: Vec<&str> = c.frames.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/app/src/cli/args.js",
                "com/acme/util/Parser.java",
                "/home/u/proj/server/serve.go"
            ]
        );
        assert_eq!(
            c.frames[2].function.as_deref(),
            Some("main.(*Server).Serve")
        );
    }

    #[test]
    fn paths_dotted_names_and_code() {
        let c = extract(
            "`Session.send` ignores timeout",
            "See https://github.com/o/r/blob/main/lib/net/session.py#L40 and lib/util.py:12.\nCalling `requests.adapters.HTTPAdapter` via crate::io::read_all, e.g. here.",
        );
        assert_eq!(c.paths[0].path, "lib/net/session.py");
        assert_eq!(c.paths[0].line, Some(40));
        assert!(
            c.paths
                .iter()
                .any(|p| p.path == "lib/util.py" && p.line == Some(12))
        );
        assert!(
            c.qualified
                .contains(&"requests.adapters.HTTPAdapter".to_string())
        );
        assert!(c.qualified.contains(&"crate::io::read_all".to_string()));
        assert!(!c.qualified.iter().any(|q| q.starts_with("e.g")));
        assert!(c.identifiers.iter().any(|(w, _)| w == "HTTPAdapter"));
    }
}

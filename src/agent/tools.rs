//! The agent's tools and the workspace they act on: the base commit with the agent's
//! edits laid over it, in memory. Reads and edits never touch a checkout; `run_tests`
//! writes the state into a throwaway worktree and runs the repository's test command
//! there, in the sandbox. Every path is checked by the one [`PathGuard`] the applier
//! uses, and every result is capped.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::locate::index::{CodeIndex, SearchField};
use crate::model::ToolDef;
use crate::repair::PathGuard;
use crate::repair::apply::EditReport;

/// Characters of one tool result sent back (about 2,000 tokens).
pub const RESULT_CHARS: usize = 8_000;

/// Test ids one `run_tests` call may name.
const MAX_TEST_IDS: usize = 20;

/// The tools offered, by name.
pub fn definitions() -> Vec<ToolDef> {
    let def = |name: &str, description: &str, schema: Value| ToolDef {
        name: name.into(),
        description: description.into(),
        input_schema: schema,
    };
    let props = |p: Value, required: &[&str]| json!({"type": "object", "properties": p, "required": required, "additionalProperties": false});
    vec![
        def(
            "search_code",
            "Search the repository's code index for words (identifiers, messages). Returns the best files with their matching lines.",
            props(json!({"query": {"type": "string"}}), &["query"]),
        ),
        def(
            "find_symbol",
            "Find where a function, class or method is defined. Returns path, lines and signature.",
            props(json!({"name": {"type": "string"}}), &["name"]),
        ),
        def(
            "read_file",
            "Read lines of a file (1-based, inclusive), with your edits applied. Lines are numbered for reference; never copy the numbers.",
            props(
                json!({"path": {"type": "string"}, "start": {"type": "integer", "minimum": 1}, "end": {"type": "integer", "minimum": 1}}),
                &["path"],
            ),
        ),
        def(
            "list_dir",
            "List the files and folders in a folder of the repository ('' or '.' for the top).",
            props(json!({"path": {"type": "string"}}), &["path"]),
        ),
        def(
            "edit_file",
            "Replace the lines `search` (copied exactly, with two or three unchanged lines around the change; it must match one place) with `replace`. An empty `search` creates a new file.",
            props(
                json!({"path": {"type": "string"}, "search": {"type": "string"}, "replace": {"type": "string"}}),
                &["path", "search", "replace"],
            ),
        ),
        def(
            "run_tests",
            "Run the repository's test command on your edited code, narrowed to these tests: test files, or `file::name` ids, that exist in the repository.",
            props(
                json!({"tests": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_TEST_IDS}}),
                &["tests"],
            ),
        ),
        def(
            "submit",
            "Finish: your edits are the fix. Say in one or two sentences what was wrong and how the edits fix it.",
            props(json!({"explanation": {"type": "string"}}), &["explanation"]),
        ),
    ]
}

/// The result of one tool call, as the model will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The text (capped).
    pub content: String,
    /// The call failed: bad arguments, a refused path, an edit that does not apply.
    pub is_error: bool,
}

impl ToolOutput {
    fn ok(text: impl Into<String>) -> Self {
        Self {
            content: cap(&text.into()),
            is_error: false,
        }
    }

    fn error(text: impl Into<String>) -> Self {
        Self {
            content: cap(&text.into()),
            is_error: true,
        }
    }
}

/// Cut a result to [`RESULT_CHARS`], saying so.
pub fn cap(text: &str) -> String {
    if text.len() <= RESULT_CHARS {
        return text.to_string();
    }
    let cut = crate::triage::text::floor_char_boundary(text, RESULT_CHARS);
    format!(
        "{}\n[… cut: {} more characters; narrow the request]",
        &text[..cut],
        text.len() - cut
    )
}

/// The base commit's files with the agent's edits over them.
pub struct Workspace<'a> {
    /// A file's text at the base.
    pub read_base: &'a dyn Fn(&str) -> Option<String>,
    /// Every path at the base.
    pub base_paths: &'a [String],
    /// Paths that may not be read or edited.
    pub guard: &'a PathGuard,
    /// The locate index of the base, for `search_code` and `find_symbol`.
    pub index: Option<&'a CodeIndex>,
    /// Files the agent changed: new text, or `None` when deleted.
    pub changed: BTreeMap<String, Option<String>>,
    /// How each edit applied.
    pub reports: Vec<EditReport>,
    /// Files no edit may change (a frozen reproduction test).
    pub frozen: Vec<String>,
}

impl Workspace<'_> {
    /// A file's current text.
    pub fn read(&self, path: &str) -> Option<String> {
        match self.changed.get(path) {
            Some(t) => t.clone(),
            None => (self.read_base)(path),
        }
    }

    /// Every current path.
    pub fn paths(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .base_paths
            .iter()
            .filter(|p| !matches!(self.changed.get(*p), Some(None)))
            .cloned()
            .collect();
        all.extend(
            self.changed
                .iter()
                .filter(|(p, t)| t.is_some() && !self.base_paths.contains(p))
                .map(|(p, _)| p.clone()),
        );
        all.sort();
        all
    }

    /// Why a path given by the model is refused, if it is.
    pub fn refuse(&self, path: &str) -> Option<String> {
        let path = path.trim_start_matches("./");
        if path.is_empty() {
            return Some("an empty path".into());
        }
        // One spelling per file: `a/./b`, `a//b` or `a/.` would slip past the checks
        // made on the plain path (the frozen test, the protected globs).
        if path.split('/').any(|c| c.is_empty() || c == ".") {
            return Some(format!(
                "refused: {path}: write the path plainly (no `.` or empty parts)"
            ));
        }
        self.guard
            .check(path)
            .map(|why| format!("refused: {path}: {why}"))
    }

    /// Run a read-only or editing tool (not `run_tests` or `submit`, which the loop
    /// handles).
    pub fn call(&mut self, name: &str, input: &Value) -> ToolOutput {
        let text = |k: &str| input.get(k).and_then(Value::as_str);
        match name {
            "search_code" => match text("query") {
                Some(q) if !q.trim().is_empty() => self.search_code(q),
                _ => ToolOutput::error("search_code needs `query`, a non-empty string"),
            },
            "find_symbol" => match text("name") {
                Some(n) if !n.trim().is_empty() => self.find_symbol(n.trim()),
                _ => ToolOutput::error("find_symbol needs `name`, a non-empty string"),
            },
            "read_file" => {
                let Some(path) = text("path") else {
                    return ToolOutput::error("read_file needs `path`, a string");
                };
                let num = |k: &str| -> Result<Option<usize>, String> {
                    match input.get(k) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => v
                            .as_u64()
                            .filter(|n| *n >= 1)
                            .map(|n| Some(n as usize))
                            .ok_or_else(|| format!("`{k}` must be a whole number of at least 1")),
                    }
                };
                match (num("start"), num("end")) {
                    (Ok(s), Ok(e)) => self.read_file(path, s, e),
                    (Err(e), _) | (_, Err(e)) => ToolOutput::error(e),
                }
            }
            "list_dir" => self.list_dir(text("path").unwrap_or("")),
            "edit_file" => match (text("path"), text("search"), text("replace")) {
                (Some(p), Some(s), Some(r)) => self.edit_file(p, s, r),
                _ => {
                    ToolOutput::error("edit_file needs `path`, `search` and `replace`, all strings")
                }
            },
            other => ToolOutput::error(format!(
                "there is no tool `{other}`; the tools are search_code, find_symbol, read_file, list_dir, edit_file, run_tests and submit"
            )),
        }
    }

    fn search_code(&self, query: &str) -> ToolOutput {
        let words: Vec<String> = crate::locate::tokens::token_list(query)
            .into_iter()
            .filter(|w| !crate::locate::tokens::is_stopword(w))
            .collect();
        if words.is_empty() {
            return ToolOutput::error("the query has no searchable word");
        }
        let files: Vec<String> = match self.index {
            Some(index) => {
                let terms: Vec<(String, f32)> = words.iter().map(|w| (w.clone(), 1.0)).collect();
                index
                    .search(SearchField::Body, &terms, 10, 1)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect()
            }
            None => self.paths(),
        };
        let needles: Vec<String> = query
            .split_whitespace()
            .map(str::to_lowercase)
            .filter(|w| w.len() > 1)
            .collect();
        let mut out = String::new();
        let mut shown = 0;
        for path in files {
            if self.refuse(&path).is_some() {
                continue;
            }
            let Some(text) = self.read(&path) else {
                continue;
            };
            let hits: Vec<String> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| {
                    let l = l.to_lowercase();
                    needles.iter().any(|n| l.contains(n.as_str()))
                })
                .take(8)
                .map(|(i, l)| format!("  {}: {}", i + 1, l.trim_end()))
                .collect();
            if hits.is_empty() && self.index.is_none() {
                continue;
            }
            out.push_str(&format!("{path}\n{}\n", hits.join("\n")));
            shown += 1;
            if shown >= 10 {
                break;
            }
        }
        if out.is_empty() {
            ToolOutput::ok(format!("no file matches {query:?}"))
        } else {
            ToolOutput::ok(out)
        }
    }

    fn find_symbol(&self, name: &str) -> ToolOutput {
        let last = name.rsplit(['.', ':']).next().unwrap_or(name);
        let files: Vec<String> = match self.index {
            Some(index) => index
                .search(SearchField::Defs, &[(last.to_lowercase(), 1.0)], 20, 1)
                .into_iter()
                .map(|(p, _)| p)
                .collect(),
            None => self.paths(),
        };
        let mut out = String::new();
        for path in files {
            if self.refuse(&path).is_some() {
                continue;
            }
            let Some(text) = self.read(&path) else {
                continue;
            };
            let Some(symbols) = crate::locate::symbols::symbols(&path, &text) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            for s in symbols.iter().filter(|s| s.name == last) {
                let signature: Vec<&str> = lines
                    .iter()
                    .skip(s.start_line as usize - 1)
                    .take((s.signature_end - s.start_line + 1).min(4) as usize)
                    .copied()
                    .collect();
                out.push_str(&format!(
                    "{path}:{}-{} {} {}{}\n{}\n",
                    s.start_line,
                    s.end_line,
                    s.kind,
                    s.name,
                    s.parent
                        .as_deref()
                        .map(|p| format!(" (in {p})"))
                        .unwrap_or_default(),
                    signature.join("\n")
                ));
            }
        }
        if out.is_empty() {
            ToolOutput::ok(format!("no definition of `{name}` found"))
        } else {
            ToolOutput::ok(out)
        }
    }

    fn read_file(&self, path: &str, start: Option<usize>, end: Option<usize>) -> ToolOutput {
        if let Some(why) = self.refuse(path) {
            return ToolOutput::error(why);
        }
        let path = path.trim_start_matches("./");
        let Some(text) = self.read(path) else {
            return ToolOutput::error(format!("{path} does not exist (list_dir shows what does)"));
        };
        let lines: Vec<&str> = text.lines().collect();
        let start = start.unwrap_or(1);
        let end = end.unwrap_or(lines.len()).min(lines.len());
        if start > end.max(1) || (start > lines.len() && !lines.is_empty()) {
            return ToolOutput::error(format!(
                "{path} has {} lines; ask for lines within 1..{}",
                lines.len(),
                lines.len()
            ));
        }
        let body: String = lines
            .iter()
            .enumerate()
            .skip(start - 1)
            .take(end + 1 - start)
            .map(|(i, l)| format!("{:>5} {l}\n", i + 1))
            .collect();
        ToolOutput::ok(format!(
            "{path} lines {start}-{end} of {}\n{body}",
            lines.len()
        ))
    }

    fn list_dir(&self, path: &str) -> ToolOutput {
        let dir = path.trim_start_matches("./").trim_end_matches('/');
        let dir = if dir == "." { "" } else { dir };
        if !dir.is_empty()
            && let Some(why) = self.refuse(dir)
        {
            return ToolOutput::error(why);
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        // Protected files are not shown, nor folders that hold only them.
        let mut entries: Vec<String> = self
            .paths()
            .iter()
            .filter(|p| self.refuse(p).is_none())
            .filter_map(|p| p.strip_prefix(&prefix))
            .map(|rest| match rest.split_once('/') {
                Some((d, _)) => format!("{d}/"),
                None => rest.to_string(),
            })
            .collect();
        entries.dedup();
        if entries.is_empty() {
            return ToolOutput::error(format!("no folder {dir:?} in the repository"));
        }
        ToolOutput::ok(entries.join("\n"))
    }

    fn edit_file(&mut self, path: &str, search: &str, replace: &str) -> ToolOutput {
        if let Some(why) = self.refuse(path) {
            return ToolOutput::error(why);
        }
        let path = path.trim_start_matches("./").to_string();
        if self.frozen.contains(&path) {
            return ToolOutput::error(format!(
                "refused: {path} is the reproduction test, which no fix may change"
            ));
        }
        let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
        let edit = crate::repair::edits::from_sides(
            Some(path.clone()),
            "edit_file".into(),
            &lines(search),
            &lines(replace),
        );
        let applied = {
            let read = |p: &str| self.read(p);
            crate::repair::apply(&[edit], &read, &[], self.guard)
        };
        match applied {
            Ok(a) => {
                let mut said = Vec::new();
                for (p, text) in a.files {
                    said.push(p.clone());
                    let back_to_base = (self.read_base)(&p) == text;
                    if back_to_base {
                        self.changed.remove(&p);
                    } else {
                        self.changed.insert(p, text);
                    }
                }
                let how: Vec<String> = a
                    .reports
                    .iter()
                    .map(|r| format!("{:?}", r.method).to_lowercase())
                    .collect();
                self.reports.extend(a.reports);
                ToolOutput::ok(format!("edited {} ({})", said.join(", "), how.join(", ")))
            }
            Err(e) => ToolOutput::error(format!("the edit was not applied: {e}")),
        }
    }

    /// The test ids of a `run_tests` call, checked: strings naming a file of the
    /// repository (optionally `::name` parts of word characters), never an option or a
    /// path outside it. The ids reach the command as quoted arguments only.
    pub fn test_ids(&self, input: &Value) -> Result<Vec<String>, String> {
        let Some(list) = input.get("tests").and_then(Value::as_array) else {
            return Err("run_tests needs `tests`, a list of test ids".into());
        };
        if list.is_empty() || list.len() > MAX_TEST_IDS {
            return Err(format!("name 1 to {MAX_TEST_IDS} tests"));
        }
        let paths = self.paths();
        let mut out = Vec::new();
        for v in list {
            let Some(id) = v.as_str() else {
                return Err(format!("{v} is not a string"));
            };
            let (file, rest) = id.split_once("::").unwrap_or((id, ""));
            let file = file.trim_start_matches("./");
            let bad_part = |p: &str| {
                p.is_empty()
                    || !p
                        .chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '[' | ']' | '-' | '.'))
            };
            if id.starts_with('-')
                || file.is_empty()
                || !file
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                || (!rest.is_empty() && rest.split("::").any(bad_part))
            {
                return Err(format!(
                    "{id:?} is not a test id: give a test file of the repository, or `file::name`"
                ));
            }
            if let Some(why) = self.refuse(file) {
                return Err(why);
            }
            if !paths.iter().any(|p| p == file) {
                return Err(format!("{file} is not a file of the repository"));
            }
            out.push(if rest.is_empty() {
                file.to_string()
            } else {
                format!("{file}::{rest}")
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<T>(f: impl FnOnce(&mut Workspace<'_>) -> T) -> T {
        let base: BTreeMap<&str, &str> = [
            ("calc/ops.py", "def add(a, b):\n    return a - b\n"),
            ("tests/test_ops.py", "def test_add():\n    pass\n"),
            (".github/workflows/ci.yml", "on: push\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &str| base.get(p).map(|s| s.to_string());
        let paths: Vec<String> = base.keys().map(|p| p.to_string()).collect();
        let guard = PathGuard::new(&[".github/**".to_string()]).unwrap();
        let mut ws = Workspace {
            read_base: &read,
            base_paths: &paths,
            guard: &guard,
            index: None,
            changed: BTreeMap::new(),
            reports: vec![],
            frozen: vec!["tests/test_ops.py".into()],
        };
        f(&mut ws)
    }

    #[test]
    fn edits_apply_through_the_applier_and_refusals_go_back() {
        with(|ws| {
            let bad = ws.call(
                "edit_file",
                &json!({"path": "calc/ops.py", "search": "return a * b", "replace": "x"}),
            );
            assert!(bad.is_error, "{bad:?}");
            assert!(ws.changed.is_empty());
            let ok = ws.call(
                "edit_file",
                &json!({"path": "calc/ops.py", "search": "    return a - b\n", "replace": "    return a + b\n"}),
            );
            assert!(!ok.is_error, "{ok:?}");
            assert_eq!(
                ws.read("calc/ops.py").unwrap(),
                "def add(a, b):\n    return a + b\n"
            );
            let frozen = ws.call(
                "edit_file",
                &json!({"path": "tests/test_ops.py", "search": "    pass\n", "replace": "    assert 0\n"}),
            );
            assert!(frozen.is_error && frozen.content.contains("reproduction test"));
            let sideways = ws.call(
                "edit_file",
                &json!({"path": "tests/./test_ops.py", "search": "    pass\n", "replace": "    assert 0\n"}),
            );
            assert!(sideways.is_error, "{sideways:?}");
            assert_eq!(
                ws.read("tests/test_ops.py").unwrap(),
                "def test_add():\n    pass\n"
            );
        });
    }

    #[test]
    fn paths_outside_protected_or_in_git_are_refused() {
        with(|ws| {
            for path in [
                "../etc/passwd",
                "/etc/passwd",
                ".git/config",
                ".github/workflows/ci.yml",
                ".github/./workflows/ci.yml",
                "calc//ops.py",
            ] {
                let r = ws.call("read_file", &json!({"path": path}));
                assert!(
                    r.is_error && r.content.starts_with("refused"),
                    "{path}: {r:?}"
                );
                let e = ws.call(
                    "edit_file",
                    &json!({"path": path, "search": "", "replace": "x"}),
                );
                assert!(e.is_error, "{path}: {e:?}");
            }
            let top = ws.call("list_dir", &json!({"path": "."}));
            assert_eq!(top.content, "calc/\ntests/");
            let bad = ws.call("read_file", &json!({"path": 7}));
            assert!(bad.is_error && bad.content.contains("needs `path`"));
        });
    }

    #[test]
    fn run_tests_takes_only_test_ids_of_existing_files() {
        with(|ws| {
            assert_eq!(
                ws.test_ids(&json!({"tests": ["tests/test_ops.py::test_add"]})),
                Ok(vec!["tests/test_ops.py::test_add".to_string()])
            );
            for bad in [
                json!({"tests": ["--co"]}),
                json!({"tests": ["tests/test_ops.py; rm -rf /"]}),
                json!({"tests": ["$(id)"]}),
                json!({"tests": ["tests/missing.py"]}),
                json!({"tests": ["../x.py"]}),
                json!({"tests": ["tests/test_ops.py::a b"]}),
                json!({"tests": []}),
                json!({"tests": "tests/test_ops.py"}),
            ] {
                assert!(ws.test_ids(&bad).is_err(), "{bad}");
            }
        });
    }

    #[test]
    fn a_long_result_is_cut_and_says_so() {
        let long = "x".repeat(RESULT_CHARS + 10);
        let c = cap(&long);
        assert!(c.len() < RESULT_CHARS + 100 && c.contains("10 more characters"));
    }
}

//! Edits as a model writes them: SEARCH/REPLACE blocks or unified diffs (with or without
//! their headers). Line numbers and hunk counts are read but never trusted.

use serde::Serialize;

/// One edit: lines to find and what they become.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edit {
    /// The file, when the edit names one.
    pub path: Option<String>,
    /// Where the edit came from, for messages: `block 2`, `hunk 1 of src/a.py`.
    pub origin: String,
    /// The lines as they are now, each tagged: `Keep` (context) or `Remove`.
    pub old: Vec<(Tag, String)>,
    /// Lines to insert, each placed after the `old` line with that index (`None`: before
    /// the first).
    pub insert: Vec<(Option<usize>, String)>,
    /// The file does not exist yet (`--- /dev/null`, or an empty SEARCH).
    pub creates: bool,
    /// The edit deletes the file (`+++ /dev/null`).
    pub deletes: bool,
    /// The 1-based lines a diff's `@@ -a +b @@` header names: used only to choose between
    /// places that match equally well, never to place an edit on their own.
    pub stated_lines: Vec<usize>,
}

impl Edit {
    /// The new side: kept old lines with the inserted ones in place.
    pub fn new_lines(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .insert
            .iter()
            .filter(|(a, _)| a.is_none())
            .map(|(_, l)| l.as_str())
            .collect();
        for (k, (tag, line)) in self.old.iter().enumerate() {
            if *tag == Tag::Keep {
                out.push(line);
            }
            out.extend(
                self.insert
                    .iter()
                    .filter(|(a, _)| *a == Some(k))
                    .map(|(_, l)| l.as_str()),
            );
        }
        out
    }

    /// The edit as a SEARCH/REPLACE block with its path line.
    pub fn to_block(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.path {
            s.push_str(p);
            s.push('\n');
        }
        s.push_str(SEARCH);
        s.push('\n');
        for (_, l) in &self.old {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(DIVIDER);
        s.push('\n');
        for l in self.new_lines() {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(REPLACE);
        s.push('\n');
        s
    }
}

/// What an old line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tag {
    /// Context: must be there, stays.
    Keep,
    /// Must be there, goes.
    Remove,
}

/// Text that holds no edit the parser can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

const SEARCH: &str = "<<<<<<< SEARCH";
const DIVIDER: &str = "=======";
const REPLACE: &str = ">>>>>>> REPLACE";

/// Read every edit in `text`: SEARCH/REPLACE blocks, else unified-diff hunks.
pub fn parse(text: &str) -> Result<Vec<Edit>, ParseError> {
    let text = text.replace("\r\n", "\n");
    if text.lines().any(|l| l.trim_end() == SEARCH) {
        return parse_blocks(&text);
    }
    if text.lines().any(|l| l.starts_with("@@")) {
        return parse_diff(&text);
    }
    Err(ParseError(
        "no edit found: write SEARCH/REPLACE blocks (a path line, `<<<<<<< SEARCH`, the exact current lines, `=======`, the new lines, `>>>>>>> REPLACE`) or a unified diff".into(),
    ))
}

/// The path a line before a block names: `src/a.py`, `` `src/a.py` ``, `### src/a.py`.
fn path_line(line: &str) -> Option<String> {
    let t = line
        .trim()
        .trim_start_matches('#')
        .trim()
        .trim_matches(|c| c == '`' || c == '*' || c == ':')
        .trim();
    let t = t.strip_prefix("File:").map_or(t, str::trim);
    (!t.is_empty()
        && !t.contains(char::is_whitespace)
        && !t.starts_with("```")
        && (t.contains('.') || t.contains('/')))
    .then(|| t.to_string())
}

fn parse_blocks(text: &str) -> Result<Vec<Edit>, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut path: Option<String> = None;
    let mut i = 0usize;
    while i < lines.len() {
        let line = lines[i];
        if line.trim_end() != SEARCH {
            if !line.trim_start().starts_with("```")
                && let Some(p) = path_line(line)
            {
                path = Some(p);
            }
            i += 1;
            continue;
        }
        let n = out.len() + 1;
        let origin = match &path {
            Some(p) => format!("block {n} ({p})"),
            None => format!("block {n}"),
        };
        let mut search = Vec::new();
        let mut replace = Vec::new();
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim_end() != DIVIDER {
            if lines[j].trim_end() == SEARCH || lines[j].trim_end() == REPLACE {
                return Err(ParseError(format!(
                    "{origin}: `{SEARCH}` without `{DIVIDER}`"
                )));
            }
            search.push(lines[j].to_string());
            j += 1;
        }
        if j >= lines.len() {
            return Err(ParseError(format!(
                "{origin}: `{SEARCH}` without `{DIVIDER}`"
            )));
        }
        j += 1;
        while j < lines.len() && lines[j].trim_end() != REPLACE {
            if lines[j].trim_end() == SEARCH {
                return Err(ParseError(format!("{origin}: no `{REPLACE}` line")));
            }
            // A second divider: which one splits the block is unclear (a `=======`
            // heading underline in the code, say), so the block is refused.
            if lines[j].trim_end() == DIVIDER {
                return Err(ParseError(format!(
                    "{origin}: two `{DIVIDER}` lines; a block has one divider (to change a line that is `{DIVIDER}`, use a unified diff)"
                )));
            }
            replace.push(lines[j].to_string());
            j += 1;
        }
        if j >= lines.len() {
            return Err(ParseError(format!("{origin}: no `{REPLACE}` line")));
        }
        out.push(from_sides(path.clone(), origin, &search, &replace));
        i = j + 1;
    }
    Ok(out)
}

/// The start lines an `@@ -a,b +c,d @@` header names (`a` and `c`), when it has them.
fn stated_lines(header: &str) -> Vec<usize> {
    let Some(body) = header.strip_prefix("@@") else {
        return Vec::new();
    };
    let body = body.split("@@").next().unwrap_or("");
    body.split_whitespace()
        .filter_map(|part| {
            let n = part.strip_prefix(['-', '+'])?;
            n.split(',').next()?.parse::<usize>().ok()
        })
        .filter(|n| *n > 0)
        .collect()
}

/// An edit from the two sides of a block: the line diff says which lines stay.
pub fn from_sides(
    path: Option<String>,
    origin: String,
    search: &[String],
    replace: &[String],
) -> Edit {
    let creates = search.iter().all(|l| l.trim().is_empty());
    let mut old: Vec<(Tag, String)> = Vec::new();
    let mut insert: Vec<(Option<usize>, String)> = Vec::new();
    if creates {
        insert.extend(replace.iter().map(|l| (None, l.clone())));
        return Edit {
            path,
            origin,
            old,
            insert,
            creates: true,
            deletes: false,
            stated_lines: Vec::new(),
        };
    }
    let a: Vec<&str> = search.iter().map(String::as_str).collect();
    let b: Vec<&str> = replace.iter().map(String::as_str).collect();
    let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &a, &b);
    for op in ops {
        for change in op.iter_changes(&a, &b) {
            match change.tag() {
                similar::ChangeTag::Equal => old.push((Tag::Keep, change.value().to_string())),
                similar::ChangeTag::Delete => old.push((Tag::Remove, change.value().to_string())),
                similar::ChangeTag::Insert => {
                    insert.push((old.len().checked_sub(1), change.value().to_string()))
                }
            }
        }
    }
    Edit {
        path,
        origin,
        old,
        insert,
        creates: false,
        deletes: false,
        stated_lines: Vec::new(),
    }
}

fn strip_prefix_path(p: &str) -> Option<String> {
    let p = p.split('\t').next().unwrap_or(p).trim();
    if p == "/dev/null" {
        return None;
    }
    Some(
        p.strip_prefix("a/")
            .or_else(|| p.strip_prefix("b/"))
            .unwrap_or(p)
            .to_string(),
    )
}

fn parse_diff(text: &str) -> Result<Vec<Edit>, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut path: Option<String> = None;
    let mut creates = false;
    let mut deletes = false;
    let mut hunk_no = 0usize;
    let mut i = 0usize;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.strip_prefix("diff --git ") {
            path = rest.split_once(" b/").map(|(_, b)| b.trim().to_string());
            creates = false;
            deletes = false;
            hunk_no = 0;
            i += 1;
            continue;
        }
        if line.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")) {
            let old = strip_prefix_path(&line[4..]);
            let new = strip_prefix_path(&lines[i + 1][4..]);
            creates = old.is_none();
            deletes = new.is_none();
            path = new.or(old);
            hunk_no = 0;
            i += 2;
            continue;
        }
        if !line.starts_with("@@") {
            // Prose outside a diff may name the file the next header-less hunk is for.
            if !line.trim_start().starts_with("```")
                && !line.starts_with("index ")
                && !line.starts_with("new file mode")
                && !line.starts_with("deleted file mode")
                && let Some(p) = path_line(line)
            {
                path = Some(
                    p.trim_start_matches("a/")
                        .trim_start_matches("b/")
                        .to_string(),
                );
            }
            i += 1;
            continue;
        }
        hunk_no += 1;
        let origin = match &path {
            Some(p) => format!("hunk {hunk_no} of {p}"),
            None => format!("hunk {hunk_no}"),
        };
        // The body runs until the next header; counts in `@@` are ignored.
        let mut old: Vec<(Tag, String)> = Vec::new();
        let mut insert: Vec<(Option<usize>, String)> = Vec::new();
        let mut j = i + 1;
        while j < lines.len() {
            let l = lines[j];
            if l.starts_with("@@")
                || l.starts_with("diff --git ")
                || (l.starts_with("--- ")
                    && lines.get(j + 1).is_some_and(|n| n.starts_with("+++ ")))
                // A fence closes the hunk only at column 0: an indented one is content.
                || l.starts_with("```")
            {
                break;
            }
            if let Some(rest) = l.strip_prefix('+') {
                insert.push((old.len().checked_sub(1), rest.to_string()));
            } else if let Some(rest) = l.strip_prefix('-') {
                old.push((Tag::Remove, rest.to_string()));
            } else if let Some(rest) = l.strip_prefix(' ') {
                old.push((Tag::Keep, rest.to_string()));
            } else if l.is_empty() {
                // Editors strip the space of empty context lines; a trailing empty line
                // is the end of the hunk, not context.
                let more = lines[j + 1..]
                    .iter()
                    .take_while(|n| !n.starts_with("@@") && !n.starts_with("diff --git "))
                    .any(|n| n.starts_with([' ', '+', '-']) && !n.starts_with("--- "));
                if !more {
                    break;
                }
                old.push((Tag::Keep, String::new()));
            } else if l.starts_with('\\') {
                // "\ No newline at end of file"
            } else {
                // A line without a prefix ends the hunk only if no change follows it
                // before the next header; else the hunk is malformed, and applying the
                // part before it would apply half a change.
                let changes_follow = lines[j + 1..]
                    .iter()
                    .take_while(|n| {
                        !n.starts_with("@@")
                            && !n.starts_with("diff --git ")
                            && !n.starts_with("```")
                    })
                    .any(|n| {
                        (n.starts_with('+') && !n.starts_with("+++ "))
                            || (n.starts_with('-') && !n.starts_with("--- "))
                    });
                if changes_follow {
                    return Err(ParseError(format!(
                        "{origin}: line {:?} has no ' ', '+' or '-' prefix; every line of a hunk needs one",
                        l.chars().take(60).collect::<String>()
                    )));
                }
                break;
            }
            j += 1;
        }
        if old.is_empty() && insert.is_empty() {
            return Err(ParseError(format!("{origin}: an empty hunk")));
        }
        out.push(Edit {
            path: path.clone(),
            origin,
            creates: creates && old.is_empty(),
            deletes: deletes && insert.is_empty(),
            old,
            insert,
            stated_lines: stated_lines(line),
        });
        i = j;
    }
    if out.is_empty() {
        return Err(ParseError("no hunk found in the diff".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_with_paths() {
        let e = parse(
            "Change the check.\n\nsrc/a.py\n```python\n<<<<<<< SEARCH\n    if x < 0:\n        return\n=======\n    if x <= 0:\n        return\n>>>>>>> REPLACE\n```\n",
        )
        .unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path.as_deref(), Some("src/a.py"));
        assert_eq!(
            e[0].old,
            [
                (Tag::Remove, "    if x < 0:".into()),
                (Tag::Keep, "        return".into())
            ]
        );
        assert_eq!(e[0].insert, [(Some(0), "    if x <= 0:".into())]);
    }

    #[test]
    fn diffs_ignore_counts_and_keep_paths() {
        let e = parse("--- a/src/a.py\n+++ b/src/a.py\n@@ -10,2 +10,9 @@\n def f():\n-    return 1\n+    return 2\n").unwrap_or_default();
        assert_eq!(e[0].path.as_deref(), Some("src/a.py"));
        assert_eq!(e[0].old.len(), 2);
        assert_eq!(e[0].insert, [(Some(1), "    return 2".into())]);
        let e = parse("@@ -1 +1 @@\n-a\n+b\n").unwrap_or_default();
        assert_eq!(e[0].path, None);
        assert!(parse("just prose").is_err());
        // A prefix-less line inside a hunk is an error, not the end of it.
        assert!(parse("@@ -1,3 +1,3 @@\n a\nb\n-c\n+d\n").is_err());
        // An indented fence is content.
        let e =
            parse("--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n     ```python\n-    f()\n+    g()\n")
                .unwrap_or_default();
        assert_eq!(e[0].old.len(), 2);
        // Two dividers in a block.
        assert!(
            parse("x.rst\n<<<<<<< SEARCH\nTitle\n=======\n=======\nT\n>>>>>>> REPLACE\n").is_err()
        );
        assert!(parse("a.py\n<<<<<<< SEARCH\nx\n").is_err());
    }
}

//! Symbol definitions from tree-sitter, for the files that rank: names, kinds, line
//! ranges and signatures, used to pick whole functions and skeletons for the context.

use serde::Serialize;
use tree_sitter::{Language, Node, Parser};

/// A definition in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symbol {
    /// Its name (`Type::method`-style names are not built; `parent` says where it is).
    pub name: String,
    /// `function`, `method`, `class`, `struct`, `enum`, `trait`, `impl`, `interface`,
    /// `type`, `module`.
    pub kind: &'static str,
    /// The enclosing definition's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
    /// Last line of the signature (before the body), inclusive.
    pub signature_end: u32,
    /// How deep it is nested in other definitions (0 = top level).
    pub depth: u32,
}

/// The grammar for a path's extension, when there is one.
pub fn language_for(path: &str) -> Option<Language> {
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "py" | "pyi" => tree_sitter_python::LANGUAGE.into(),
        "rs" => tree_sitter_rust::LANGUAGE.into(),
        "js" | "mjs" | "cjs" | "jsx" => tree_sitter_javascript::LANGUAGE.into(),
        "ts" | "mts" | "cts" => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
        "tsx" => tree_sitter_typescript::LANGUAGE_TSX.into(),
        "go" => tree_sitter_go::LANGUAGE.into(),
        "java" => tree_sitter_java::LANGUAGE.into(),
        _ => return None,
    })
}

fn kind_of(node_kind: &str) -> Option<&'static str> {
    Some(match node_kind {
        "function_definition"
        | "function_item"
        | "function_signature_item"
        | "function_declaration"
        | "generator_function_declaration" => "function",
        "method_definition" | "method_declaration" | "constructor_declaration" => "method",
        "class_definition" | "class_declaration" | "abstract_class_declaration" => "class",
        "struct_item" => "struct",
        "enum_item" | "enum_declaration" => "enum",
        "trait_item" => "trait",
        "impl_item" => "impl",
        "interface_declaration" => "interface",
        "type_alias_declaration" | "type_spec" | "record_declaration" => "type",
        "mod_item" => "module",
        "macro_definition" => "macro",
        _ => return None,
    })
}

/// The definitions of a file, in source order, or `None` without a grammar for it.
pub fn symbols(path: &str, text: &str) -> Option<Vec<Symbol>> {
    let language = language_for(path)?;
    let mut parser = Parser::new();
    parser.set_language(&language).ok()?;
    let tree = parser.parse(text, None)?;
    let mut out = Vec::new();
    walk(tree.root_node(), text, None, 0, &mut out);
    Some(out)
}

fn walk(node: Node<'_>, text: &str, parent: Option<&str>, depth: u32, out: &mut Vec<Symbol>) {
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        let kind = kind_of(child.kind()).or_else(|| arrow_function(child));
        let Some(kind) = kind else {
            walk(child, text, parent, depth, out);
            continue;
        };
        let name_node = child
            .child_by_field_name("name")
            .or_else(|| child.child_by_field_name("type"));
        let name = name_node
            .and_then(|n| n.utf8_text(text.as_bytes()).ok())
            .unwrap_or("")
            .to_string();
        let kind =
            if kind == "function" && parent.is_some() && child.kind() == "function_definition" {
                "method"
            } else {
                kind
            };
        let body_start = child
            .child_by_field_name("body")
            .or_else(|| child.child_by_field_name("value"))
            .map_or(child.start_position().row, |b| b.start_position().row);
        let start = child.start_position().row as u32 + 1;
        let sym = Symbol {
            name: name.clone(),
            kind,
            parent: parent.map(str::to_string),
            start_line: start,
            end_line: child.end_position().row as u32 + 1,
            // The line before the body (the body's row, 0-based, is that line 1-based).
            signature_end: (body_start as u32).max(start).min(start + 4),
            depth,
        };
        out.push(sym);
        walk(child, text, Some(name.as_str()), depth + 1, out);
    }
}

/// `const f = () => …` and `let f = function …` in JavaScript and TypeScript.
fn arrow_function(node: Node<'_>) -> Option<&'static str> {
    if node.kind() != "variable_declarator" {
        return None;
    }
    let value = node.child_by_field_name("value")?;
    matches!(
        value.kind(),
        "arrow_function" | "function_expression" | "function"
    )
    .then_some("function")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &str, text: &str) -> Vec<(String, &'static str, u32, u32)> {
        symbols(path, text)
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.name, s.kind, s.start_line, s.end_line))
            .collect()
    }

    #[test]
    fn python_classes_and_methods() {
        let src = "import os\n\nclass Job:\n    def run(self):\n        return 1\n\ndef main():\n    Job().run()\n";
        assert_eq!(
            names("a.py", src),
            [
                ("Job".into(), "class", 3, 5),
                ("run".into(), "method", 4, 5),
                ("main".into(), "function", 7, 8)
            ]
        );
    }

    #[test]
    fn rust_go_java_js_ts() {
        assert_eq!(
            names("a.rs", "struct S;\nimpl S {\n    fn go(&self) {}\n}\n"),
            [
                ("S".into(), "struct", 1, 1),
                ("S".into(), "impl", 2, 4),
                ("go".into(), "function", 3, 3)
            ]
        );
        assert_eq!(
            names("a.go", "package p\n\nfunc (s *Srv) Serve() {\n}\n"),
            [("Serve".into(), "method", 3, 4)]
        );
        assert_eq!(
            names("A.java", "class A {\n  void run() {}\n}\n"),
            [("A".into(), "class", 1, 3), ("run".into(), "method", 2, 2)]
        );
        assert_eq!(
            names("a.js", "const parse = (x) => x;\nfunction main() {}\n"),
            [
                ("parse".into(), "function", 1, 1),
                ("main".into(), "function", 2, 2)
            ]
        );
        assert_eq!(
            names(
                "a.ts",
                "interface P { x: number }\nexport class Q { m(): void {} }\n"
            ),
            [
                ("P".into(), "interface", 1, 1),
                ("Q".into(), "class", 2, 2),
                ("m".into(), "method", 2, 2)
            ]
        );
        assert!(symbols("a.toml", "x = 1").is_none());
    }
}

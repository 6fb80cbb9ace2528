//! Just enough TOML for our own, well-formed manifests: sections, `key = value` entries
//! (values may span lines when they are arrays or inline tables), strings, string arrays and
//! inline tables. No dependency on a TOML crate, on purpose (xtask builds with std only).

/// One `key = value` entry of a section. The key is unquoted; the value is the raw text with
/// comments removed (and continuation lines joined with spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: String,
    /// 1-based line number of the key, for messages.
    pub(crate) line: usize,
}

/// The name of a `[table]` header line (`package.metadata.refsync`), or `[[test]]` → `[test]`.
pub(crate) fn header(line: &str) -> Option<String> {
    let t = strip_comment(line).trim().to_owned();
    if let Some(inner) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
        return Some(format!("[{}]", normalize_key(inner)));
    }
    let inner = t.strip_prefix('[')?.strip_suffix(']')?;
    Some(normalize_key(inner))
}

/// `a . "b" .c` → `a.b.c`.
fn normalize_key(key: &str) -> String {
    key.split('.')
        .map(|k| unquote(k.trim()))
        .collect::<Vec<_>>()
        .join(".")
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_owned();
        }
    }
    s.to_owned()
}

/// The line without its `#` comment (a `#` inside a string does not start a comment).
pub(crate) fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => return &line[..i],
                _ => {}
            },
        }
    }
    line
}

/// Splits `text` at `sep` characters that are outside strings, brackets and braces.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                c if c == sep && depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + c.len_utf8();
                }
                _ => {}
            },
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Bracket/brace depth change of a (comment-free) piece of TOML, ignoring strings.
fn depth_delta(text: &str) -> i32 {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth
}

/// The entries of every section named `name` (`package`, `workspace.dependencies`), in order;
/// `None` if there is no such section.
pub(crate) fn section(text: &str, name: &str) -> Option<Vec<Entry>> {
    let mut found = false;
    let mut entries = Vec::new();
    let mut current: Option<String> = None;
    let mut pending: Option<(Entry, i32)> = None;
    for (n, raw) in text.lines().enumerate() {
        if let Some((mut entry, depth)) = pending.take() {
            let piece = strip_comment(raw).trim();
            entry.value.push(' ');
            entry.value.push_str(piece);
            let depth = depth + depth_delta(piece);
            if depth > 0 {
                pending = Some((entry, depth));
            } else {
                entries.push(entry);
            }
            continue;
        }
        if let Some(h) = header(raw) {
            current = Some(h);
            found |= current.as_deref() == Some(name);
            continue;
        }
        if current.as_deref() != Some(name) {
            continue;
        }
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let parts = split_top_level(line, '=');
        if parts.len() < 2 {
            continue;
        }
        let key = normalize_key(parts[0]);
        let value = line[parts[0].len() + 1..].trim().to_owned();
        let entry = Entry {
            key,
            value: value.clone(),
            line: n + 1,
        };
        let depth = depth_delta(&value);
        if depth > 0 {
            pending = Some((entry, depth));
        } else {
            entries.push(entry);
        }
    }
    if let Some((entry, _)) = pending {
        entries.push(entry);
    }
    found.then_some(entries)
}

/// The raw value of `key` in section `name`.
pub(crate) fn raw(text: &str, name: &str, key: &str) -> Option<String> {
    section(text, name)?
        .into_iter()
        .find(|e| e.key == key)
        .map(|e| e.value)
}

/// A string value (`"..."` or `'...'`).
pub(crate) fn string(value: &str) -> Option<String> {
    let v = value.trim();
    let quoted =
        (v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\''));
    (quoted && v.len() >= 2).then(|| unquote(v))
}

/// The string `key` of section `name`.
pub(crate) fn get_str(text: &str, name: &str, key: &str) -> Option<String> {
    string(&raw(text, name, key)?)
}

/// An array of strings (`["a", "b"]`); `None` if it is not one.
pub(crate) fn string_array(value: &str) -> Option<Vec<String>> {
    let inner = value.trim().strip_prefix('[')?.strip_suffix(']')?;
    split_top_level(inner, ',')
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(string)
        .collect()
}

/// The string array `key` of section `name`.
pub(crate) fn get_array(text: &str, name: &str, key: &str) -> Option<Vec<String>> {
    string_array(&raw(text, name, key)?)
}

/// The `key = value` pairs of an inline table (`{ path = "x", optional = true }`).
pub(crate) fn inline_table(value: &str) -> Option<Vec<(String, String)>> {
    let inner = value.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    for item in split_top_level(inner, ',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let parts = split_top_level(item, '=');
        if parts.len() < 2 {
            return None;
        }
        out.push((
            normalize_key(parts[0]),
            item[parts[0].len() + 1..].trim().to_owned(),
        ));
    }
    Some(out)
}

/// Whether the manifest opts into the workspace lints (`[lints]` with `workspace = true`).
pub(crate) fn uses_workspace_lints(text: &str) -> bool {
    raw(text, "lints", "workspace").is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[package]
name = "refsync-acme" # trailing comment
version.workspace = true

[package.metadata.refsync]
kind = "connector"
connector = "acme"
capabilities = [
    "webhooks", # comment inside
    "push",
]

[dependencies]
a = { workspace = true, features = ["x", "y"] }
"quoted#key" = "1"

[[test]]
name = "conformance"
harness = false

[lints]
workspace = true
"#;

    #[test]
    fn reads_sections_strings_arrays_and_tables() {
        assert_eq!(
            get_str(TEXT, "package", "name").as_deref(),
            Some("refsync-acme")
        );
        assert_eq!(
            raw(TEXT, "package", "version.workspace").as_deref(),
            Some("true")
        );
        assert_eq!(
            get_str(TEXT, "package.metadata.refsync", "kind").as_deref(),
            Some("connector")
        );
        assert_eq!(
            get_array(TEXT, "package.metadata.refsync", "capabilities"),
            Some(vec!["webhooks".to_owned(), "push".to_owned()])
        );
        let deps = section(TEXT, "dependencies").unwrap();
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[1].key, "quoted#key");
        let t = inline_table(&deps[0].value).unwrap();
        assert_eq!(t[0], ("workspace".to_owned(), "true".to_owned()));
        assert_eq!(t[1].1, r#"["x", "y"]"#);
        assert_eq!(
            get_str(TEXT, "[test]", "name").as_deref(),
            Some("conformance")
        );
        assert!(uses_workspace_lints(TEXT));
        assert!(!uses_workspace_lints("[package]\nname = \"x\"\n"));
        assert!(section(TEXT, "features").is_none());
    }
}

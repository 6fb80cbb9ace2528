//! A small namespace-aware XML reader, enough to judge a receiver's SOAP answer (the
//! `notificationsResponse` acknowledgement): elements, attributes, namespaces (`xmlns`,
//! `xmlns:p`), text with the predefined and numeric entities, CDATA, comments and processing
//! instructions. Document type declarations are refused (SOAP forbids them).

use std::collections::HashMap;

/// The XML namespace every document knows (`xml:` prefix).
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// An element: namespace URI (`None` when unqualified), local name, its child elements and its
/// text (every text node directly inside it, concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Element {
    pub(super) ns: Option<String>,
    pub(super) name: String,
    pub(super) children: Vec<Element>,
    pub(super) text: String,
}

impl Element {
    /// The child elements named `name` in namespace `ns`.
    pub(super) fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children
            .iter()
            .filter(move |c| c.ns.as_deref() == Some(ns) && c.name == name)
    }

    /// Whether this element is `name` in namespace `ns`.
    pub(super) fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }
}

/// An element being read: the element, its qualified name as written, its namespace scope.
struct Open {
    element: Element,
    raw_name: String,
    scope: HashMap<String, String>,
}

fn is_name_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '/' | '>' | '=' | '<' | '"' | '\'')
}

/// Decodes the entities of `text`.
fn decode(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .find(';')
            .ok_or_else(|| "unterminated entity".to_owned())?;
        let entity = &after[..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits `p:name` into `(Some(p), name)`.
fn split_qname(raw: &str) -> (Option<&str>, &str) {
    match raw.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, raw),
    }
}

/// Reads one start tag at `input[pos..]` (just after `<`); returns the element, whether it is
/// empty (`/>`), and the position after the tag.
fn start_tag(
    input: &str,
    mut pos: usize,
    parent_scope: &HashMap<String, String>,
) -> Result<(Open, bool, usize), String> {
    let name_len = input[pos..]
        .find(|c: char| !is_name_char(c))
        .unwrap_or(input.len() - pos);
    if name_len == 0 {
        return Err(format!("element name expected at {pos}"));
    }
    let raw_name = input[pos..pos + name_len].to_owned();
    pos += name_len;
    let mut attributes: Vec<(String, String)> = Vec::new();
    let empty;
    loop {
        let ws = input[pos..]
            .find(|c: char| !c.is_whitespace())
            .ok_or_else(|| "unterminated start tag".to_owned())?;
        pos += ws;
        let rest = &input[pos..];
        if rest.starts_with("/>") {
            empty = true;
            pos += 2;
            break;
        }
        if rest.starts_with('>') {
            empty = false;
            pos += 1;
            break;
        }
        if ws == 0 && !attributes.is_empty() {
            return Err(format!("whitespace expected between attributes at {pos}"));
        }
        let len = rest
            .find(|c: char| !is_name_char(c))
            .ok_or_else(|| "unterminated attribute".to_owned())?;
        if len == 0 {
            return Err(format!("attribute name expected at {pos}"));
        }
        let name = rest[..len].to_owned();
        let after = rest[len..].trim_start();
        let after = after
            .strip_prefix('=')
            .ok_or_else(|| format!("'=' expected after attribute {name}"))?
            .trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|q| *q == '"' || *q == '\'')
            .ok_or_else(|| format!("quoted value expected for attribute {name}"))?;
        let value_start = &after[1..];
        let end = value_start
            .find(quote)
            .ok_or_else(|| format!("unterminated value of attribute {name}"))?;
        let raw_value = &value_start[..end];
        if raw_value.contains('<') {
            return Err(format!("'<' in the value of attribute {name}"));
        }
        if attributes.iter().any(|(n, _)| *n == name) {
            return Err(format!("duplicate attribute {name}"));
        }
        attributes.push((name, decode(raw_value)?));
        pos = input.len() - value_start.len() + end + 1;
    }
    let mut scope = parent_scope.clone();
    for (name, value) in &attributes {
        if name == "xmlns" {
            scope.insert(String::new(), value.clone());
        } else if let Some(prefix) = name.strip_prefix("xmlns:") {
            if value.is_empty() {
                return Err(format!("empty namespace for prefix {prefix}"));
            }
            scope.insert(prefix.to_owned(), value.clone());
        }
    }
    let (prefix, local) = split_qname(&raw_name);
    let ns = match prefix {
        Some("xml") => Some(XML_NS.to_owned()),
        Some(p) => Some(
            scope
                .get(p)
                .cloned()
                .ok_or_else(|| format!("undeclared namespace prefix {p}"))?,
        ),
        None => scope.get("").filter(|u| !u.is_empty()).cloned(),
    };
    for (name, _) in &attributes {
        if let (Some(p), _) = split_qname(name)
            && p != "xmlns"
            && p != "xml"
            && !scope.contains_key(p)
        {
            return Err(format!("undeclared namespace prefix {p}"));
        }
    }
    let open = Open {
        element: Element {
            ns,
            name: local.to_owned(),
            children: Vec::new(),
            text: String::new(),
        },
        raw_name,
        scope,
    };
    Ok((open, empty, pos))
}

/// Parses a whole document into its root element.
pub(super) fn parse(input: &str) -> Result<Element, String> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Element> = None;
    let empty_scope = HashMap::new();
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        if !rest.starts_with('<') {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..end];
            match stack.last_mut() {
                Some(open) => open.element.text.push_str(&decode(text)?),
                None if text.trim().is_empty() => {}
                None => return Err("text outside the root element".to_owned()),
            }
            pos += end;
            continue;
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after
                .find("-->")
                .ok_or_else(|| "unterminated comment".to_owned())?;
            pos += 4 + end + 3;
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after
                .find("]]>")
                .ok_or_else(|| "unterminated CDATA section".to_owned())?;
            let open = stack
                .last_mut()
                .ok_or_else(|| "CDATA outside the root element".to_owned())?;
            open.element.text.push_str(&after[..end]);
            pos += 9 + end + 3;
        } else if rest.starts_with("<?") {
            let end = rest
                .find("?>")
                .ok_or_else(|| "unterminated processing instruction".to_owned())?;
            pos += end + 2;
        } else if rest.starts_with("<!") {
            return Err("document type declarations are not allowed".to_owned());
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after
                .find('>')
                .ok_or_else(|| "unterminated end tag".to_owned())?;
            let name = after[..end].trim_end();
            let open = stack
                .pop()
                .ok_or_else(|| format!("unexpected end tag </{name}>"))?;
            if open.raw_name != name {
                return Err(format!(
                    "end tag </{name}> does not match <{}>",
                    open.raw_name
                ));
            }
            pos += 2 + end + 1;
            match stack.last_mut() {
                Some(parent) => parent.element.children.push(open.element),
                None => root = Some(open.element),
            }
        } else {
            if root.is_some() {
                return Err("more than one root element".to_owned());
            }
            let scope = stack.last().map_or(&empty_scope, |o| &o.scope);
            let (open, empty, next) = start_tag(input, pos + 1, scope)?;
            pos = next;
            if empty {
                match stack.last_mut() {
                    Some(parent) => parent.element.children.push(open.element),
                    None => root = Some(open.element),
                }
            } else {
                stack.push(open);
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("element <{}> is not closed", open.raw_name));
    }
    root.ok_or_else(|| "no root element".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespaces_text_and_entities() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<s:Envelope xmlns:s="urn:s" xmlns="urn:default"><s:Body a='1'>
  <x>one &amp; two &#65;&#x42;<![CDATA[<raw>]]></x><y xmlns=""/><p:z xmlns:p="urn:p"/></s:Body></s:Envelope>"#;
        let root = parse(doc).unwrap();
        assert!(root.is("urn:s", "Envelope"));
        let body = root.children_named("urn:s", "Body").next().unwrap();
        assert_eq!(body.children.len(), 3);
        assert!(body.children[0].is("urn:default", "x"));
        assert_eq!(body.children[0].text, "one & two AB<raw>");
        assert_eq!(body.children[1].ns, None);
        assert!(body.children[2].is("urn:p", "z"));
    }

    #[test]
    fn refuses_malformed_documents() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "text<a/>",
            "<p:a/>",
            "<a x=1/>",
            "<a x='1' x='2'/>",
            "<a>&bogus;</a>",
            "<!DOCTYPE a><a/>",
            "<a><!-- open</a>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! Connector names: validation and the derived spellings the templates use.

use crate::Result;

/// Names that are taken by workspace crates, cargo features or the facade.
pub(crate) const RESERVED: &[&str] = &[
    "core",
    "http",
    "testkit",
    "cli",
    "engine",
    "ledger",
    "referral-factory",
    "tests",
    "all",
    // a cargo feature of the facade would be called `default`
    "default",
    // `refsync::<module>` would shadow the core modules the facade re-exports
    "registry",
    "rules",
];

/// Rust keywords (strict, reserved and edition-2024 ones): a one-word connector name becomes a
/// module path (`refsync::<name>`), so it must not be a keyword.
const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "union", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Longest accepted name.
pub(crate) const MAX_LEN: usize = 40;

/// Checks `name` against `^[a-z][a-z0-9]*(-[a-z0-9]+)*$`, the length limit and the reserved list.
pub(crate) fn validate(name: &str) -> Result {
    let hint = "use lower-case kebab-case such as `acme-crm`";
    if name.is_empty() {
        return Err(format!("connector name is empty; {hint}"));
    }
    if name.len() > MAX_LEN {
        return Err(format!(
            "connector name {name:?} is {} characters long; the limit is {MAX_LEN}",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "connector name {name:?} must start with a lower-case letter; {hint}"
        ));
    }
    for segment in name.split('-') {
        if segment.is_empty() {
            return Err(format!(
                "connector name {name:?} has an empty segment (leading, trailing or doubled `-`); {hint}"
            ));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        {
            return Err(format!("connector name {name:?} contains {bad:?}; {hint}"));
        }
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "connector name {name:?} is reserved (taken by a workspace crate or feature: {})",
            RESERVED.join(", ")
        ));
    }
    if RUST_KEYWORDS.contains(&name) {
        return Err(format!(
            "connector name {name:?} is a Rust keyword and cannot be a module name (`refsync::{name}`)"
        ));
    }
    Ok(())
}

/// Every spelling of a (valid) connector name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// `acme-crm`: registry name, facade feature, docs page.
    pub(crate) name: String,
    /// `refsync-acme-crm`: package and folder.
    pub(crate) crate_name: String,
    /// `refsync_acme_crm`: the crate in Rust paths.
    pub(crate) snake: String,
    /// `acme_crm`: module name in the facade.
    pub(crate) module: String,
    /// `Acme Crm`: display name.
    pub(crate) display: String,
    /// `AcmeCrm`: prefix of type names (`AcmeCrmConnector`).
    pub(crate) type_prefix: String,
}

impl Names {
    /// Validates `name` and derives its spellings.
    pub(crate) fn new(name: &str) -> Result<Names> {
        validate(name)?;
        let module = name.replace('-', "_");
        let words: Vec<String> = name.split('-').map(capitalize).collect();
        Ok(Names {
            name: name.to_owned(),
            crate_name: format!("refsync-{name}"),
            snake: format!("refsync_{module}"),
            module,
            display: words.join(" "),
            type_prefix: words.concat(),
        })
    }

    /// The placeholders of the templates and their values.
    pub(crate) fn vars(&self) -> [(&'static str, &str); 6] {
        [
            ("{{name}}", &self.name),
            ("{{crate}}", &self.crate_name),
            ("{{snake}}", &self.snake),
            ("{{module}}", &self.module),
            ("{{Display}}", &self.display),
            ("{{Type}}", &self.type_prefix),
        ]
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_validation_table() {
        let long = "a".repeat(MAX_LEN);
        let too_long = "a".repeat(MAX_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("acme", true),
            ("acme-crm", true),
            ("ci-probe", true),
            ("zoho2", true),
            ("x", true),
            ("a1-b2-c3", true),
            ("web-2-lead", true),
            (&long, true),
            (&too_long, false),
            ("", false),
            ("Acme", false),
            ("acme_crm", false),
            ("acme--crm", false),
            ("-acme", false),
            ("acme-", false),
            ("1acme", false),
            ("acme crm", false),
            ("acmé", false),
            ("acme.crm", false),
            ("acme/crm", false),
            ("core", false),
            ("http", false),
            ("testkit", false),
            ("cli", false),
            ("engine", false),
            ("ledger", false),
            ("referral-factory", false),
            ("tests", false),
            ("all", false),
            ("default", false),
            ("rules", false),
            ("registry", false),
            ("type", false),
            ("match", false),
            ("self", false),
            // keywords are fine inside a longer name
            ("type-form", true),
            ("core-crm", true),
        ];
        for (name, ok) in cases {
            assert_eq!(
                validate(name).is_ok(),
                *ok,
                "{name:?}: {:?}",
                validate(name)
            );
        }
    }

    #[test]
    fn errors_say_why() {
        assert!(validate("core").unwrap_err().contains("reserved"));
        assert!(validate("Acme").unwrap_err().contains("lower-case"));
        assert!(validate("acme--crm").unwrap_err().contains("empty segment"));
        assert!(
            validate(&"a".repeat(41))
                .unwrap_err()
                .contains("limit is 40")
        );
    }

    #[test]
    fn spellings() {
        let n = Names::new("acme-crm").unwrap();
        assert_eq!(n.crate_name, "refsync-acme-crm");
        assert_eq!(n.snake, "refsync_acme_crm");
        assert_eq!(n.module, "acme_crm");
        assert_eq!(n.display, "Acme Crm");
        assert_eq!(n.type_prefix, "AcmeCrm");
        let n = Names::new("web-2-lead").unwrap();
        assert_eq!(n.display, "Web 2 Lead");
        assert_eq!(n.type_prefix, "Web2Lead");
    }
}

//! Field mapping (referral placeholders → CRM field keys), duplicate policy, push spec and outcome.
//!
//! A mapping is a table of CRM field key → value template. A template is text with
//! placeholders in braces: `{Referral Code}`, `Referred by {Referrer First Name}`, or a constant
//! (`"Referral"`). Rendering is pure and total: every template is checked when the mapping is
//! built, so a push never fails on an unknown placeholder.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::ReferredUser;
use crate::error::{Error, Result};
use crate::event::ObjectKind;

/// A value of the referred user that a template can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placeholder {
    /// `{First Name}`
    FirstName,
    /// `{Last Name}`
    LastName,
    /// `{Email}`
    Email,
    /// `{Referral Code}`
    ReferralCode,
    /// `{Referral Link}`
    ReferralLink,
    /// `{Referrer First Name}`
    ReferrerFirstName,
    /// `{Referrer Email}`
    ReferrerEmail,
    /// `{Referrer Code}`
    ReferrerCode,
    /// `{Campaign Name}` (falls back to the campaign id)
    CampaignName,
    /// `{Campaign Id}`
    CampaignId,
    /// `{Source}`
    Source,
    /// `{Coupon}`
    Coupon,
    /// `{Form: <name>}` or `{Meta: <name>}`: a form or meta field captured at sign-up.
    Meta(String),
}

impl Placeholder {
    /// Every fixed placeholder with its template name, in documentation order.
    pub const FIXED: &'static [(&'static str, Placeholder)] = &[
        ("First Name", Placeholder::FirstName),
        ("Last Name", Placeholder::LastName),
        ("Email", Placeholder::Email),
        ("Referral Code", Placeholder::ReferralCode),
        ("Referral Link", Placeholder::ReferralLink),
        ("Referrer First Name", Placeholder::ReferrerFirstName),
        ("Referrer Email", Placeholder::ReferrerEmail),
        ("Referrer Code", Placeholder::ReferrerCode),
        ("Campaign Name", Placeholder::CampaignName),
        ("Campaign Id", Placeholder::CampaignId),
        ("Source", Placeholder::Source),
        ("Coupon", Placeholder::Coupon),
    ];

    /// Parses the text between braces (`Referral Code`, `Form: Company`). Case and surrounding
    /// spaces are ignored. `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Placeholder> {
        let name = name.trim();
        for prefix in ["form:", "meta:"] {
            let head = name.get(..prefix.len());
            if head.is_some_and(|h| h.eq_ignore_ascii_case(prefix)) {
                let field = name.get(prefix.len()..).unwrap_or("").trim();
                return (!field.is_empty()).then(|| Placeholder::Meta(field.to_owned()));
            }
        }
        Self::FIXED
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| p.clone())
    }

    /// The value of this placeholder for `user`, if the user has it.
    pub fn value<'a>(&self, user: &'a ReferredUser) -> Option<&'a str> {
        let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
        match self {
            Placeholder::FirstName => non_empty(&user.first_name),
            Placeholder::LastName => user.last_name.as_deref(),
            Placeholder::Email => non_empty(&user.email),
            Placeholder::ReferralCode => non_empty(&user.referral_code),
            Placeholder::ReferralLink => user.referral_link.as_deref(),
            Placeholder::ReferrerFirstName => {
                user.referrer.as_ref().and_then(|r| r.first_name.as_deref())
            }
            Placeholder::ReferrerEmail => user.referrer.as_ref().and_then(|r| r.email.as_deref()),
            Placeholder::ReferrerCode => user.referrer.as_ref().and_then(|r| r.code.as_deref()),
            Placeholder::CampaignName => user
                .campaign
                .name
                .as_deref()
                .or_else(|| non_empty(&user.campaign.id)),
            Placeholder::CampaignId => non_empty(&user.campaign.id),
            Placeholder::Source => user.source.as_deref(),
            Placeholder::Coupon => user.coupon.as_deref(),
            Placeholder::Meta(name) => user.meta.get(name).map(String::as_str),
        }
        .filter(|s| !s.is_empty())
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placeholder::Meta(name) => write!(f, "{{Form: {name}}}"),
            other => {
                let name = Self::FIXED
                    .iter()
                    .find(|(_, p)| p == other)
                    .map(|(n, _)| *n)
                    .unwrap_or("?");
                write!(f, "{{{name}}}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A parsed value template: constant text and placeholders. `{{` and `}}` write literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; an unknown placeholder or an unclosed brace is a config error that
    /// names it.
    pub fn parse(source: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(Error::config(format!(
                            "template {source:?}: unclosed '{{' (write '{{{{' for a literal brace)"
                        )));
                    };
                    let name = &rest[..end];
                    let Some(p) = Placeholder::parse(name) else {
                        let known: Vec<String> = Placeholder::FIXED
                            .iter()
                            .map(|(n, _)| format!("{{{n}}}"))
                            .collect();
                        return Err(Error::config(format!(
                            "template {source:?}: unknown placeholder {{{name}}}; known: {}, {{Form: <field>}}",
                            known.join(", ")
                        )));
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Value(p));
                    // skip the placeholder's characters
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(Error::config(format!(
                        "template {source:?}: unmatched '}}' (write '}}}}' for a literal brace)"
                    )));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholders the template names.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Value(p) => Some(p),
            Part::Text(_) => None,
        })
    }

    /// Renders the template for `user`. A template that names only placeholders the user lacks
    /// renders to `None` (the CRM field is left alone); constant text alone always renders.
    pub fn render(&self, user: &ReferredUser) -> Option<String> {
        let mut out = String::new();
        let mut any_value = false;
        let mut any_placeholder = false;
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value(p) => {
                    any_placeholder = true;
                    if let Some(v) = p.value(user) {
                        any_value = true;
                        out.push_str(v);
                    }
                }
            }
        }
        (any_value || !any_placeholder).then_some(out)
    }
}

impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

/// CRM field key (or label, where the connector resolves labels) → value template.
///
/// In TOML: `[push.fields]` then `"Referral Code" = "{Referral Code}"`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldMapping(pub BTreeMap<String, Template>);

impl FieldMapping {
    /// Builds a mapping from `(field, template)` pairs, checking every template.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        pairs
            .into_iter()
            .map(|(k, v)| Ok((k.to_owned(), Template::parse(v)?)))
            .collect::<Result<BTreeMap<_, _>>>()
            .map(FieldMapping)
    }

    /// Checks that every required placeholder is mapped to some field; the error names each
    /// missing one, e.g. `missing required mapping: {Referral Code}`.
    pub fn check_required(&self, required: &[Placeholder]) -> Result<()> {
        let missing: Vec<String> = required
            .iter()
            .filter(|r| !self.0.values().any(|t| t.placeholders().any(|p| p == *r)))
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::validation(format!(
                "missing required mapping: {} (map each to a CRM field under [push.fields])",
                missing.join(", ")
            )))
        }
    }

    /// The CRM field that receives `placeholder` alone (e.g. the field that holds the
    /// referral code), if any.
    pub fn field_for(&self, placeholder: &Placeholder) -> Option<&str> {
        self.0.iter().find_map(|(field, t)| {
            matches!(t.parts.as_slice(), [Part::Value(p)] if p == placeholder)
                .then_some(field.as_str())
        })
    }

    /// Renders every field for `user`; fields whose placeholders the user lacks are left out.
    pub fn render(&self, user: &ReferredUser) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(k, t)| t.render(user).map(|v| (k.clone(), v)))
            .collect()
    }
}

/// What to do when the referred person already exists in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// Update the existing record: mapped fields are overwritten.
    #[default]
    UpdateExisting,
    /// Leave the existing record as it is, but link it to the referral so it can still qualify
    /// (Referral Factory's own "do nothing" setting means such people never qualify).
    LinkExisting,
    /// Always create a new record, even if one exists.
    AlwaysCreate,
}

/// What to push and how: target object, field mapping, duplicate policy and default values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSpec {
    /// The CRM object to create (`lead`, `deal`, `contact`, `person`, `order`...); each connector
    /// documents which it supports.
    pub object: ObjectKind,
    /// CRM field → template.
    pub fields: FieldMapping,
    /// What to do with an existing record.
    #[serde(default)]
    pub duplicates: DuplicatePolicy,
    /// Constant values set on create (owner, pipeline, stage, labels, visibility...), as JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, serde_json::Value>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushAction {
    /// A new record was created.
    Created,
    /// An existing record was updated.
    Updated,
    /// An existing record was left unchanged and linked to the referral.
    LinkedExisting,
    /// The request was delivered to a receiver that decides by itself (generic webhook).
    Delivered,
}

/// A CRM object: kind and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CrmObjectRef {
    /// Kind of object.
    pub kind: ObjectKind,
    /// The CRM's id, as a string.
    pub id: String,
}

/// The result of [`crate::Connector::push_referral`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOutcome {
    /// What happened.
    pub action: PushAction,
    /// The CRM objects now linked to the referral (person and lead, contact and deal, ...).
    pub links: Vec<CrmObjectRef>,
    /// Things the operator should know that did not stop the push.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CampaignRef, Referrer};

    fn user() -> ReferredUser {
        ReferredUser {
            first_name: "Ann".into(),
            email: "ann@example.com".into(),
            referral_code: "ABC123".into(),
            campaign: CampaignRef {
                id: "42".into(),
                name: Some("Spring".into()),
            },
            referrer: Some(Referrer {
                first_name: Some("Bob".into()),
                ..Referrer::default()
            }),
            meta: [("Company".to_owned(), "Acme".to_owned())].into(),
            ..ReferredUser::default()
        }
    }

    #[test]
    fn renders_placeholders_text_and_meta() {
        let t =
            Template::parse("Referred by {Referrer First Name} ({form: Company}) {{x}}").unwrap();
        assert_eq!(t.render(&user()).unwrap(), "Referred by Bob (Acme) {x}");
        assert_eq!(
            Template::parse("const").unwrap().render(&user()).unwrap(),
            "const"
        );
        assert_eq!(
            Template::parse("{Referral Link}").unwrap().render(&user()),
            None
        );
        assert_eq!(
            Template::parse("{campaign name}")
                .unwrap()
                .render(&user())
                .unwrap(),
            "Spring"
        );
    }

    #[test]
    fn unknown_placeholder_is_named() {
        let e = Template::parse("{Referal Code}").unwrap_err();
        assert!(e.message().contains("{Referal Code}"), "{e}");
        assert!(Template::parse("{Email").is_err());
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn required_mapping_names_what_is_missing() {
        let m = FieldMapping::from_pairs([("name", "{First Name}"), ("email", "{Email}")]).unwrap();
        let e = m
            .check_required(&[Placeholder::Email, Placeholder::ReferralCode])
            .unwrap_err();
        assert_eq!(e.kind(), &crate::ErrorKind::Validation);
        assert!(e.message().contains("{Referral Code}"), "{e}");
        assert!(!e.message().contains("{Email}"), "{e}");
    }

    #[test]
    fn field_for_finds_the_field_holding_a_placeholder() {
        let m =
            FieldMapping::from_pairs([("cf_1", "{Referral Code}"), ("t", "x {Email}")]).unwrap();
        assert_eq!(m.field_for(&Placeholder::ReferralCode), Some("cf_1"));
        assert_eq!(m.field_for(&Placeholder::Email), None);
    }

    #[test]
    fn duplicate_policy_names() {
        let p: DuplicatePolicy = serde_json::from_str("\"link_existing\"").unwrap();
        assert_eq!(p, DuplicatePolicy::LinkExisting);
    }

    proptest::proptest! {
        #[test]
        fn template_parse_and_render_never_panic(s in "\\PC*") {
            if let Ok(t) = Template::parse(&s) {
                let _ = t.render(&user());
            }
        }
    }
}

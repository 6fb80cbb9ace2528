//! Coupon issuance, pure parts: the code pattern with its keyed random part, and the body of
//! `POST /coupons`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use refsync_core::{Error, ReferredUser, Result, Template};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::NAME;
use crate::config::CouponConfig;
use crate::events::normalize_coupon_code;

/// The meta key refsync writes the referral code to on the coupons it issues; a coupon that
/// already exists with another referral code there is never handed to a second friend.
pub(crate) const REFERRAL_META_KEY: &str = "refsync_referral_code";
/// The meta key with the campaign id of an issued coupon.
pub(crate) const CAMPAIGN_META_KEY: &str = "refsync_campaign";

/// Letters and digits without the look-alikes (0/o, 1/l/i): codes are read and typed by people.
/// Lower-case, since WooCommerce lower-cases coupon codes anyway.
const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(Template),
    Random(usize),
}

/// A parsed `coupon.code` pattern: text and placeholders, and `{random}` / `{random:N}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CodePattern {
    parts: Vec<Part>,
}

impl CodePattern {
    /// Parses a pattern. It must make each friend's code unique: it needs `{random}` or
    /// `{Referral Code}`.
    pub(crate) fn parse(pattern: &str) -> Result<CodePattern> {
        let mut parts = Vec::new();
        let mut rest = pattern;
        while let Some(start) = rest.find("{random") {
            let after = &rest[start + "{random".len()..];
            let Some(end) = after.find('}') else {
                return Err(Error::config(format!(
                    "{NAME}: coupon.code {pattern:?}: unclosed {{random"
                )));
            };
            let n = match &after[..end] {
                "" => 8,
                spec => spec
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (4..=32).contains(n))
                    .ok_or_else(|| {
                        Error::config(format!(
                            "{NAME}: coupon.code {pattern:?}: write {{random}} or {{random:N}} with N from 4 to 32"
                        ))
                    })?,
            };
            if start > 0 {
                parts.push(Part::Text(Template::parse(&rest[..start]).map_err(
                    |e| Error::config(format!("{NAME}: coupon.code: {}", e.message())),
                )?));
            }
            parts.push(Part::Random(n));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(Template::parse(rest).map_err(|e| {
                Error::config(format!("{NAME}: coupon.code: {}", e.message()))
            })?));
        }
        let unique = parts.iter().any(|p| match p {
            Part::Random(_) => true,
            Part::Text(t) => t
                .placeholders()
                .any(|p| *p == refsync_core::Placeholder::ReferralCode),
        });
        if !unique {
            return Err(Error::config(format!(
                "{NAME}: coupon.code {pattern:?} would give every friend the same coupon: add {{random}} or {{Referral Code}}"
            )));
        }
        Ok(CodePattern { parts })
    }

    /// The code for `user`, in WooCommerce's normal form. The random part is an HMAC of the
    /// campaign and referral code keyed with `key`: unguessable without the key, and the same
    /// for the same referral, so a retried push finds the coupon it made.
    pub(crate) fn render(&self, user: &ReferredUser, key: &[u8]) -> Result<String> {
        let mut out = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Text(t) => out.push_str(&t.render(user).ok_or_else(|| {
                    Error::validation(format!(
                        "{NAME}: coupon.code {:?} names a value this referral lacks",
                        t.as_str()
                    ))
                })?),
                Part::Random(n) => out.push_str(&random_part(user, key, i, *n)),
            }
        }
        let code = normalize_coupon_code(&out);
        if code.is_empty() {
            return Err(Error::validation(format!(
                "{NAME}: coupon.code rendered an empty code for this referral"
            )));
        }
        Ok(code)
    }
}

fn random_part(user: &ReferredUser, key: &[u8], index: usize, n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut block = 0u32;
    while out.len() < n {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
        for piece in [
            b"refsync coupon".as_slice(),
            user.campaign.id.as_bytes(),
            user.referral_code.trim().as_bytes(),
            index.to_string().as_bytes(),
            block.to_string().as_bytes(),
        ] {
            mac.update(piece);
            mac.update(&[0]);
        }
        for pair in mac.finalize().into_bytes().chunks_exact(2) {
            if out.len() == n {
                break;
            }
            let v = usize::from(u16::from_be_bytes([pair[0], pair[1]]));
            out.push(char::from(ALPHABET[v % ALPHABET.len()]));
        }
        block += 1;
    }
    out
}

/// Parses the `coupon.description` template.
pub(crate) fn description_template(source: &str) -> Result<Template> {
    Template::parse(source)
        .map_err(|e| Error::config(format!("{NAME}: coupon.description: {}", e.message())))
}

/// The body of `POST /coupons` for `user`'s coupon `code`.
pub(crate) fn coupon_body(
    config: &CouponConfig,
    code: &str,
    user: &ReferredUser,
    now: DateTime<Utc>,
) -> Result<Value> {
    let description = description_template(&config.description)?
        .render(user)
        .unwrap_or_default();
    let mut body = json!({
        "code": code,
        "discount_type": config.discount_type,
        "amount": config.amount.trim(),
        "individual_use": config.individual_use,
        "usage_limit": config.usage_limit,
        "usage_limit_per_user": config.usage_limit_per_user,
        "free_shipping": config.free_shipping,
        "description": description,
        "meta_data": [
            {"key": REFERRAL_META_KEY, "value": user.referral_code.trim()},
            {"key": CAMPAIGN_META_KEY, "value": user.campaign.id},
        ],
    });
    if config.restrict_to_email {
        let email = user.email.trim();
        if email.is_empty() {
            return Err(Error::validation(format!(
                "{NAME}: coupon.restrict_to_email is on, but the referral has no email"
            )));
        }
        body["email_restrictions"] = json!([email]);
    }
    if let Some(days) = config.expires_after_days {
        let at = now + chrono::Duration::days(i64::from(days));
        body["date_expires_gmt"] = json!(at.format("%Y-%m-%dT%H:%M:%S").to_string());
    }
    if let Some(min) = &config.minimum_amount {
        body["minimum_amount"] = json!(min.trim());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use refsync_core::CampaignRef;

    fn user(code: &str) -> ReferredUser {
        ReferredUser {
            first_name: "Ann".into(),
            email: "Ann@Example.com".into(),
            referral_code: code.into(),
            campaign: CampaignRef {
                id: "42".into(),
                name: Some("Spring".into()),
            },
            ..ReferredUser::default()
        }
    }

    fn config() -> CouponConfig {
        serde_json::from_value(json!({"amount": "15"})).unwrap()
    }

    #[test]
    fn random_part_is_keyed_stable_and_distinct() {
        let p = CodePattern::parse("Friend-{random}").unwrap();
        let a = p.render(&user("ABC"), b"key-1").unwrap();
        assert!(a.starts_with("friend-"), "{a}");
        assert_eq!(a.len(), "friend-".len() + 8);
        assert!(a["friend-".len()..].bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(a, p.render(&user("ABC"), b"key-1").unwrap(), "stable");
        assert_ne!(a, p.render(&user("ABD"), b"key-1").unwrap(), "per referral");
        assert_ne!(a, p.render(&user("ABC"), b"key-2").unwrap(), "keyed");
        let mut other_campaign = user("ABC");
        other_campaign.campaign.id = "43".into();
        assert_ne!(
            a,
            p.render(&other_campaign, b"key-1").unwrap(),
            "per campaign"
        );
    }

    #[test]
    fn patterns_with_placeholders_and_lengths() {
        let p = CodePattern::parse("{Referral Code}-{random:4}-{random:32}").unwrap();
        let code = p.render(&user("AbC"), b"k").unwrap();
        let parts: Vec<&str> = code.split('-').collect();
        assert_eq!(parts[0], "abc");
        assert_eq!(parts[1].len(), 4);
        assert_eq!(parts[2].len(), 32);
        assert_ne!(parts[1], &parts[2][..4], "each {{random}} differs");
        assert_eq!(
            CodePattern::parse("WELCOME-{Referral Code}")
                .unwrap()
                .render(&user("x1"), b"k")
                .unwrap(),
            "welcome-x1"
        );
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        for bad in [
            "FRIEND10",
            "{First Name}-10",
            "x-{random:3}",
            "x-{random:33}",
            "x-{random:a}",
            "x-{random",
            "x-{Nope}-{random}",
        ] {
            let e = CodePattern::parse(bad).unwrap_err();
            assert_eq!(e.kind(), &refsync_core::ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn coupon_body_follows_the_config() {
        let mut c = config();
        c.expires_after_days = Some(30);
        c.minimum_amount = Some("50.00".into());
        let now = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let b = coupon_body(&c, "ref-abc", &user("ABC"), now).unwrap();
        assert_eq!(b["code"], "ref-abc");
        assert_eq!(b["discount_type"], "percent");
        assert_eq!(b["amount"], "15");
        assert_eq!(b["usage_limit"], 1);
        assert_eq!(b["usage_limit_per_user"], 1);
        assert_eq!(b["individual_use"], true);
        assert_eq!(b["email_restrictions"], json!(["Ann@Example.com"]));
        assert_eq!(b["date_expires_gmt"], "2026-12-21T10:00:00");
        assert_eq!(b["minimum_amount"], "50.00");
        assert_eq!(
            b["description"],
            "Referral coupon for Ann@Example.com (refsync)"
        );
        assert_eq!(
            b["meta_data"][0],
            json!({"key": REFERRAL_META_KEY, "value": "ABC"})
        );
        c.restrict_to_email = false;
        c.expires_after_days = None;
        let b = coupon_body(&c, "ref-abc", &user("ABC"), now).unwrap();
        assert!(b.get("email_restrictions").is_none() && b.get("date_expires_gmt").is_none());
    }

    #[test]
    fn config_validation() {
        let ok = config();
        ok.validate().unwrap();
        for patch in [
            json!({"amount": "0"}),
            json!({"amount": "abc"}),
            json!({"amount": "150"}),
            json!({"amount": "15", "discount_type": "bogus"}),
            json!({"amount": "15", "usage_limit": 0}),
            json!({"amount": "15", "expires_after_days": 0}),
            json!({"amount": "15", "code": "SAME"}),
        ] {
            let c: CouponConfig = serde_json::from_value(patch.clone()).unwrap();
            assert!(c.validate().is_err(), "{patch}");
        }
        let fixed: CouponConfig =
            serde_json::from_value(json!({"amount": "150", "discount_type": "fixed_cart"}))
                .unwrap();
        fixed.validate().unwrap();
    }
}

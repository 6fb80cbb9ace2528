//! Email normalization (for duplicate and self-referral checks), referral codes and coupon
//! codes.

use rand::Rng;

/// The referral code alphabet: digits and upper-case letters without the look-alikes
/// `0 O 1 I L`.
pub const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// Length of generated referral codes (31^8 ≈ 8.5e11 codes).
pub const CODE_LEN: usize = 8;

/// The form of an email address used to decide whether two addresses are one person:
/// trimmed, lower-cased, without a `+tag`, and for `gmail.com` / `googlemail.com` without
/// dots in the local part (and with the domain folded to `gmail.com`).
///
/// Returns `None` for something that is not an email address (`local@domain`, no spaces).
///
/// ```
/// use refsync_ledger::normalize_email;
/// assert_eq!(normalize_email(" Ann.Lee+promo@GoogleMail.com ").as_deref(), Some("annlee@gmail.com"));
/// assert_eq!(normalize_email("ann.lee+x@example.com").as_deref(), Some("ann.lee@example.com"));
/// assert_eq!(normalize_email("not an email"), None);
/// ```
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.rsplit_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || local.contains('@')
        || email.chars().any(char::is_whitespace)
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return None;
    }
    let local = local.split('+').next().unwrap_or_default();
    let (local, domain) = match domain {
        "gmail.com" | "googlemail.com" => (local.replace('.', ""), "gmail.com"),
        _ => (local.to_owned(), domain),
    };
    if local.is_empty() {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

/// A fresh random referral code from [`CODE_ALPHABET`], always with at least one letter so it
/// is never mistaken for a numeric user id.
pub(crate) fn new_code() -> String {
    let mut rng = rand::rng();
    loop {
        let code: String = (0..CODE_LEN)
            .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
            .collect();
        if code.bytes().any(|b| b.is_ascii_alphabetic()) {
            return code;
        }
    }
}

/// Referral codes are matched case-insensitively (they are generated upper-case).
pub(crate) fn normalize_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

/// Coupon codes are matched case-insensitively.
pub(crate) fn normalize_coupon(code: &str) -> String {
    code.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_dots_and_tags_fold() {
        for e in [
            "a.n.n@gmail.com",
            "ANN+x@gmail.com",
            "ann@googlemail.com",
            " a.nn+y+z@GMAIL.COM",
        ] {
            assert_eq!(normalize_email(e).as_deref(), Some("ann@gmail.com"), "{e}");
        }
        assert_eq!(
            normalize_email("a.nn@example.org").as_deref(),
            Some("a.nn@example.org")
        );
        for bad in ["", "@x.com", "ann@", "a b@x.com", "+tag@x.com", "ann@.x"] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        for _ in 0..200 {
            let c = new_code();
            assert_eq!(c.len(), CODE_LEN);
            assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{c}");
            assert!(c.parse::<i64>().is_err());
            assert!(!c.contains(['0', 'O', '1', 'I', 'L']));
        }
    }
}

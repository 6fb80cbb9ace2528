//! Referral-side domain types: the referred user, the referrer, the campaign and how a referral
//! is identified.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The campaign a referral belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CampaignRef {
    /// The referral platform's campaign id (Referral Factory `campaign_id`).
    pub id: String,
    /// The campaign's display name, used for `{Campaign Name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The person who referred (the "Person Referring").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Referrer {
    /// The platform's user id of the referrer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The referrer's own referral code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// First name, for `{Referrer First Name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Email, for `{Referrer Email}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A referred person (the "Person Invited") to push into a CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReferredUser {
    /// The platform's user id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// First name, for `{First Name}`.
    pub first_name: String,
    /// Last name, for `{Last Name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Email, for `{Email}`.
    pub email: String,
    /// The referral code that identifies this referral, for `{Referral Code}`.
    pub referral_code: String,
    /// The person's own sharing link, for `{Referral Link}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_link: Option<String>,
    /// The campaign, for `{Campaign Name}` / `{Campaign Id}`.
    pub campaign: CampaignRef,
    /// Who referred them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<Referrer>,
    /// Where the user came from (`Referred`, `Api`, `Widget`, ...), for `{Source}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Coupon issued to the user, for `{Coupon}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
    /// Form and meta fields captured at sign-up, for `{Form: <name>}` / `{Meta: <name>}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl ReferredUser {
    /// A last name for CRMs that require one (Zoho, Salesforce): the last name, else the first
    /// name, else the email's local part, else `Referral`.
    pub fn surname(&self) -> String {
        let email = self.email.trim();
        [
            self.last_name.as_deref().unwrap_or(""),
            self.first_name.as_str(),
            email.split('@').next().unwrap_or(""),
        ]
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or("Referral")
        .to_owned()
    }

    /// A deal's default name: `<campaign>: <first name>`, else `Referral <code>`.
    pub fn deal_title(&self) -> String {
        match self
            .campaign
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            Some(campaign) => format!("{campaign}: {}", self.first_name.trim()),
            None => format!("Referral {}", self.referral_code.trim()),
        }
    }
}

/// How a referral is identified on the referral platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReferralKey {
    /// The platform's user id.
    Id {
        /// The user id.
        id: String,
    },
    /// The referred user's referral code (the most reliable match).
    Code {
        /// The referral code.
        code: String,
    },
    /// Email within a campaign (the platform deduplicates by email per campaign).
    Email {
        /// The email address (compared case-insensitively).
        email: String,
        /// The campaign id.
        campaign: String,
    },
    /// A coupon issued to the referred user.
    Coupon {
        /// The coupon code (compared case-insensitively).
        coupon: String,
    },
}

impl ReferralKey {
    /// A canonical, stable text form used in idempotency keys and logs, e.g. `code:ABC123`.
    /// Emails and coupons are lower-cased so that case variants map to one referral.
    pub fn canonical(&self) -> String {
        match self {
            ReferralKey::Id { id } => format!("id:{id}"),
            ReferralKey::Code { code } => format!("code:{code}"),
            ReferralKey::Email { email, campaign } => {
                format!("email:{campaign}:{}", email.trim().to_lowercase())
            }
            ReferralKey::Coupon { coupon } => format!("coupon:{}", coupon.trim().to_lowercase()),
        }
    }
}

impl fmt::Display for ReferralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys_fold_case_where_the_platform_does() {
        let a = ReferralKey::Email {
            email: " Ann@Example.com".into(),
            campaign: "7".into(),
        };
        let b = ReferralKey::Email {
            email: "ann@example.com".into(),
            campaign: "7".into(),
        };
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            ReferralKey::Coupon {
                coupon: "SAVE-AbC".into()
            }
            .canonical(),
            "coupon:save-abc"
        );
        assert_eq!(
            ReferralKey::Code { code: "AbC".into() }.canonical(),
            "code:AbC"
        );
    }

    #[test]
    fn referral_key_json_form() {
        let k: ReferralKey = serde_json::from_str(r#"{"by":"code","code":"X1"}"#).unwrap();
        assert_eq!(k, ReferralKey::Code { code: "X1".into() });
    }
}

#[cfg(test)]
mod referred_user_tests {
    use super::*;

    fn bob() -> ReferredUser {
        ReferredUser {
            first_name: " Bob ".into(),
            email: "bob.smith@example.com".into(),
            referral_code: "BOB-7".into(),
            campaign: CampaignRef {
                id: "1".into(),
                name: Some("Spring".into()),
            },
            ..ReferredUser::default()
        }
    }

    #[test]
    fn surname_and_deal_title_fall_back_in_order() {
        let mut u = bob();
        assert_eq!(u.surname(), "Bob");
        assert_eq!(u.deal_title(), "Spring: Bob");
        u.last_name = Some("Smith".into());
        assert_eq!(u.surname(), "Smith");
        u.last_name = None;
        u.first_name = " ".into();
        assert_eq!(u.surname(), "bob.smith");
        u.email = String::new();
        assert_eq!(u.surname(), "Referral");
        u.campaign.name = Some("  ".into());
        assert_eq!(u.deal_title(), "Referral BOB-7");
    }
}

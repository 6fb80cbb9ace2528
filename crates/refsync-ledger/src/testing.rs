//! End-to-end test support (feature `testing`): a ledger on an SQLite file with one campaign and
//! two friends, Bob referred by Ann — the cast of every connector's end-to-end story.

use std::collections::BTreeMap;
use std::path::Path;

use refsync_core::{NewUser, ReferrerRef, Result};

use crate::{Ledger, NewCampaign, User};

/// A ledger with campaign `campaign`, Ann (`ann@example.com`) and Bob, referred by Ann.
#[derive(Debug, Clone)]
pub struct Friends {
    /// The ledger (`<dir>/ledger.db`).
    pub ledger: Ledger,
    /// The campaign id.
    pub campaign: i64,
    /// The referrer.
    pub ann: User,
    /// The referred friend.
    pub bob: User,
}

impl Friends {
    /// Creates the ledger file in `dir`, the campaign named `campaign` (with `coupons` as its
    /// coupon batch when not empty, so Bob gets one), Ann, and Bob with `bob_email`.
    ///
    /// # Errors
    /// Ledger errors.
    pub async fn open(
        dir: &Path,
        campaign: &str,
        coupons: &[String],
        bob_email: &str,
    ) -> Result<Friends> {
        let ledger = Ledger::open(&format!("sqlite://{}", dir.join("ledger.db").display())).await?;
        let campaign = ledger
            .create_campaign(&NewCampaign {
                name: campaign.into(),
                link_base_url: None,
            })
            .await?
            .id;
        if !coupons.is_empty() {
            ledger.add_coupons(campaign, coupons).await?;
        }
        let user = |name: &str, email: &str, referrer| NewUser {
            campaign_id: campaign.to_string(),
            first_name: name.into(),
            email: email.into(),
            referrer,
            meta: BTreeMap::new(),
            notify: false,
        };
        let ann = ledger
            .add_user(&user("Ann", "ann@example.com", None))
            .await?;
        let bob = ledger
            .add_user(&user(
                "Bob",
                bob_email,
                Some(ReferrerRef::Code(ann.code.clone())),
            ))
            .await?;
        Ok(Friends {
            ledger,
            campaign,
            ann,
            bob,
        })
    }
}

/// A campaign named `name` whose referrer (`ann@example.com`) earns an amount of 1000 per
/// qualified referral, and `n` users invited by her (`invited<i>@example.com`): the campaign id
/// and each invited user's (code, id). For load and reliability runs that qualify many
/// referrals.
///
/// # Errors
/// Ledger errors.
pub async fn invited_users(
    ledger: &Ledger,
    name: &str,
    n: usize,
) -> Result<(i64, Vec<(String, i64)>)> {
    use crate::{Metric, NewRewardRule, Recipient, Trigger};
    let campaign = ledger
        .create_campaign(&NewCampaign {
            name: name.into(),
            link_base_url: None,
        })
        .await?
        .id;
    ledger
        .add_reward_rule(
            campaign,
            &NewRewardRule {
                recipient: Recipient::Referrer,
                trigger: Trigger::WhenQualified,
                metric: Metric::Amount,
                value: "1000".into(),
                cap_per_referrer: None,
            },
        )
        .await?;
    let user = |first_name: String, referrer: Option<ReferrerRef>| NewUser {
        campaign_id: campaign.to_string(),
        email: format!("{first_name}@example.com"),
        first_name,
        referrer,
        meta: BTreeMap::new(),
        notify: false,
    };
    let referrer = ledger.add_user(&user("ann".into(), None)).await?;
    let mut invited = Vec::with_capacity(n);
    for i in 0..n {
        let u = ledger
            .add_user(&user(
                format!("invited{i}"),
                Some(ReferrerRef::Code(referrer.code.clone())),
            ))
            .await?;
        invited.push((u.code, u.id));
    }
    Ok((campaign, invited))
}

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

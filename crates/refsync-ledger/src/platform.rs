//! [`ReferralPlatform`] for [`Ledger`], and the `ledger` platform registration.

use std::sync::Arc;

use async_trait::async_trait;
use refsync_core::registry::parse_settings;
use refsync_core::{
    Error, NewUser, PlatformDescriptor, PlatformUser, QualifyCall, QualifyOutcome, ReferralKey,
    ReferralPlatform, Registry, Result, Reward, RewardStatus,
};

use crate::ledger::{Ledger, LedgerSettings, parse_id};
use crate::model::{ListQuery, RewardQuery};

/// The registry name of the ledger platform.
pub const NAME: &str = "ledger";

/// Registers the `ledger` platform; its settings are [`LedgerSettings`]
/// (`{"database_url": "...", "link_base_url": "..."}`, unknown fields rejected).
pub fn register(registry: &mut Registry) {
    registry.register_platform(PlatformDescriptor {
        name: NAME,
        build: |settings| {
            Box::pin(async move {
                let settings: LedgerSettings =
                    parse_settings(&settings).map_err(|e| e.with_connector(NAME))?;
                let ledger = Ledger::from_settings(&settings)
                    .await
                    .map_err(|e| e.with_connector(NAME))?;
                Ok(Arc::new(ledger) as Arc<dyn ReferralPlatform>)
            })
        },
    });
}

fn ctx(operation: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_connector(NAME).with_operation(operation)
}

/// `call.referral`, with `call.campaign` filling in an email key's empty campaign.
fn key_of(call: &QualifyCall) -> ReferralKey {
    match (&call.referral, &call.campaign) {
        (ReferralKey::Email { email, campaign }, Some(c)) if campaign.trim().is_empty() => {
            ReferralKey::Email {
                email: email.clone(),
                campaign: c.clone(),
            }
        }
        (k, _) => k.clone(),
    }
}

fn reward_id(id: &str) -> Result<i64> {
    parse_id(id).ok_or_else(|| {
        Error::new(
            refsync_core::ErrorKind::NotFound,
            format!("no reward {id:?} (reward ids are integers)"),
        )
    })
}

#[async_trait]
impl ReferralPlatform for Ledger {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_user(&self, user: &NewUser) -> Result<PlatformUser> {
        self.add_user(user)
            .await
            .map(|u| u.to_platform_user())
            .map_err(ctx("create_user"))
    }

    async fn get_user(&self, key: &ReferralKey) -> Result<Option<PlatformUser>> {
        self.user(key)
            .await
            .map(|u| u.map(|u| u.to_platform_user()))
            .map_err(ctx("get_user"))
    }

    async fn qualify(&self, call: &QualifyCall) -> Result<QualifyOutcome> {
        Ledger::qualify(self, &key_of(call))
            .await
            .map(|q| q.to_outcome())
            .map_err(ctx("qualify"))
    }

    async fn unqualify(&self, call: &QualifyCall) -> Result<QualifyOutcome> {
        Ledger::unqualify(self, &key_of(call))
            .await
            .map(|q| q.to_outcome())
            .map_err(ctx("unqualify"))
    }

    async fn rewards_due(&self) -> Result<Vec<Reward>> {
        let page = self
            .rewards(&RewardQuery {
                status: Some(RewardStatus::Due),
                list: ListQuery::default(),
                ..RewardQuery::default()
            })
            .await
            .map_err(ctx("rewards_due"))?;
        Ok(page.items.iter().map(|r| r.to_reward()).collect())
    }

    async fn issue_reward(&self, id: &str) -> Result<Reward> {
        self.issue_reward(reward_id(id).map_err(ctx("issue_reward"))?)
            .await
            .map(|r| r.to_reward())
            .map_err(ctx("issue_reward"))
    }

    async fn cancel_reward(&self, id: &str) -> Result<Reward> {
        self.cancel_reward(reward_id(id).map_err(ctx("cancel_reward"))?)
            .await
            .map(|r| r.to_reward())
            .map_err(ctx("cancel_reward"))
    }
}

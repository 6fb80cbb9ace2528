//! `impl ReferralPlatform for ReferralFactory` and registration.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use refsync_core::{
    NewUser, PlatformDescriptor, PlatformUser, QualifyCall, QualifyOutcome, ReferralKey,
    ReferralPlatform, Registry, Result, Reward, RewardStatus,
};

use crate::NAME;
use crate::client::ReferralFactory;
use crate::config::Config;
use crate::model::{RewardItem, RewardMetric};
use crate::ops::{CreateUser, platform_user};

/// Registers the `referral-factory` platform (settings: [`Config`]).
pub fn register(registry: &mut Registry) {
    registry.register_platform(PlatformDescriptor {
        name: NAME,
        build: build_platform,
    });
}

type BuildFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn ReferralPlatform>>> + Send>>;

fn build_platform(settings: serde_json::Value) -> BuildFuture {
    Box::pin(async move {
        let config: Config = refsync_core::registry::parse_settings(&settings)
            .map_err(|e| e.with_connector(NAME))?;
        let client = ReferralFactory::new(config)?;
        Ok(Arc::new(client) as Arc<dyn ReferralPlatform>)
    })
}

/// The key of a qualify call; an email key without a campaign takes the call's.
fn key_of(call: &QualifyCall) -> ReferralKey {
    match (&call.referral, &call.campaign) {
        (ReferralKey::Email { email, campaign }, Some(c)) if campaign.trim().is_empty() => {
            ReferralKey::Email {
                email: email.clone(),
                campaign: c.clone(),
            }
        }
        (key, _) => key.clone(),
    }
}

/// Reads Referral Factory's reward status (`due`, `issued`, `cancelled`/`canceled`).
pub(crate) fn reward_status(status: Option<&str>, default: RewardStatus) -> RewardStatus {
    match status.map(|s| s.trim().to_ascii_lowercase()) {
        Some(s) if s == "issued" || s == "paid" => RewardStatus::Issued,
        Some(s) if s.starts_with("cancel") => RewardStatus::Cancelled,
        Some(s) if s == "due" || s == "pending" => RewardStatus::Due,
        _ => default,
    }
}

/// Maps a reward. Amounts are passed through when whole (Referral Factory's and the ledger's
/// amounts are integers); a fractional amount is rounded to the nearest integer.
pub(crate) fn to_reward(
    item: RewardItem,
    metric: Option<RewardMetric>,
    default: RewardStatus,
) -> Reward {
    Reward {
        recipient_id: item.recipient_id.unwrap_or_default(),
        metric: item
            .metric
            .or_else(|| metric.map(|m| m.as_str().to_owned()))
            .unwrap_or_default(),
        status: reward_status(item.status.as_deref(), default),
        amount: item
            .amount
            .filter(|a| a.is_finite())
            .map(|a| a.round() as i64),
        coupon: item.coupon,
        id: item.id,
    }
}

#[async_trait]
impl ReferralPlatform for ReferralFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_user(&self, user: &NewUser) -> Result<PlatformUser> {
        self.add_user(&CreateUser::from(user))
            .await
            .map(platform_user)
    }

    async fn get_user(&self, key: &ReferralKey) -> Result<Option<PlatformUser>> {
        Ok(self.find_user(key).await?.map(platform_user))
    }

    async fn qualify(&self, call: &QualifyCall) -> Result<QualifyOutcome> {
        self.qualify_user(&key_of(call)).await
    }

    async fn unqualify(&self, call: &QualifyCall) -> Result<QualifyOutcome> {
        self.unqualify_user(&key_of(call)).await
    }

    async fn rewards_due(&self) -> Result<Vec<Reward>> {
        Ok(self
            .all_due_rewards()
            .await?
            .into_iter()
            .flat_map(|(metric, items)| {
                items
                    .into_iter()
                    .map(move |i| to_reward(i, Some(metric), RewardStatus::Due))
            })
            .collect())
    }

    async fn issue_reward(&self, id: &str) -> Result<Reward> {
        let item = self.issue_due_reward(id).await?;
        Ok(to_reward(item, None, RewardStatus::Issued))
    }

    async fn cancel_reward(&self, id: &str) -> Result<Reward> {
        let item = self.cancel_due_reward(id).await?;
        Ok(to_reward(item, None, RewardStatus::Cancelled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            reward_status(Some("Issued"), RewardStatus::Due),
            RewardStatus::Issued
        );
        assert_eq!(
            reward_status(Some("canceled"), RewardStatus::Due),
            RewardStatus::Cancelled
        );
        assert_eq!(
            reward_status(Some("cancelled"), RewardStatus::Due),
            RewardStatus::Cancelled
        );
        assert_eq!(
            reward_status(None, RewardStatus::Issued),
            RewardStatus::Issued
        );
    }

    #[tokio::test]
    async fn registers_and_builds_from_settings() {
        let mut r = Registry::new();
        register(&mut r);
        let d = r.platform(NAME).unwrap();
        let p = (d.build)(serde_json::json!({"token": "t0ken-123"}))
            .await
            .unwrap();
        assert_eq!(p.name(), NAME);
        assert!(!format!("{p:?}").contains("t0ken-123"));
        let e = (d.build)(serde_json::json!({"token": "t", "rate_limit_per_minute": 700}))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), &refsync_core::ErrorKind::Config);
        assert!(e.message().contains("600"));
        let e = (d.build)(serde_json::json!({"token": "t", "nope": 1}))
            .await
            .unwrap_err();
        assert_eq!(e.connector(), Some(NAME));
    }
}

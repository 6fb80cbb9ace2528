//! [`StoreTokenStore`]: OAuth tokens kept in the engine's [`Store`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use refsync_core::{Error, Result};
use refsync_http::{StoredToken, TokenStore};

use crate::store::Store;

/// A [`TokenStore`] over the engine's [`Store`]: the token of key `k` is kept under
/// `oauth:<k>` (see [`StoreTokenStore::store_key`]) as the JSON of a [`StoredToken`].
///
/// This is the one place tokens are written: `StoredToken` serializes its secrets' values.
/// `Debug` shows no token.
#[derive(Clone)]
pub struct StoreTokenStore {
    store: Arc<dyn Store>,
}

impl fmt::Debug for StoreTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreTokenStore")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl StoreTokenStore {
    /// The prefix of every token key in the store.
    pub const PREFIX: &'static str = "oauth:";

    /// Tokens in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreTokenStore { store }
    }

    /// The store key of the token of `key` (an instance name): `oauth:<key>`.
    pub fn store_key(key: &str) -> String {
        format!("{}{key}", Self::PREFIX)
    }
}

#[async_trait]
impl TokenStore for StoreTokenStore {
    async fn load(&self, key: &str) -> Result<Option<StoredToken>> {
        let Some(text) = self.store.get_token(&Self::store_key(key)).await? else {
            return Ok(None);
        };
        // serde_json's message never quotes the input, so no token leaks into the error.
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::unexpected(format!(
                "the stored OAuth token for '{key}' is not valid JSON: {e}; authorize again"
            ))
        })
    }

    async fn save(&self, key: &str, token: &StoredToken) -> Result<()> {
        let text = serde_json::to_string(token).map_err(|e| {
            Error::unexpected(format!(
                "could not serialize the OAuth token for '{key}': {e}"
            ))
        })?;
        self.store
            .put_token(&Self::store_key(key), &text, Utc::now())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_store;

    #[tokio::test]
    async fn tokens_round_trip_under_the_oauth_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = open_store(&url).await.unwrap();
        let tokens = StoreTokenStore::new(store.clone());
        assert!(tokens.load("crm").await.unwrap().is_none());

        let mut token = StoredToken::new("access-123");
        token.refresh_token = Some("refresh-456".into());
        tokens.save("crm", &token).await.unwrap();

        let raw = store.get_token("oauth:crm").await.unwrap().unwrap();
        assert!(raw.contains("access-123") && raw.contains("refresh-456"));
        let back = tokens.load("crm").await.unwrap().unwrap();
        assert_eq!(back.access_token.expose(), "access-123");
        assert_eq!(
            back.refresh_token.as_ref().map(|s| s.expose().to_owned()),
            Some("refresh-456".to_owned())
        );
        assert!(!format!("{tokens:?}").contains("access-123"));

        store
            .put_token("oauth:bad", "not json", Utc::now())
            .await
            .unwrap();
        let err = tokens.load("bad").await.unwrap_err();
        assert!(!err.to_string().contains("not json"));
        store.close().await;
    }
}

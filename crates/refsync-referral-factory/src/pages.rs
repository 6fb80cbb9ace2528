//! [`Pages`]: a list call as an async page iterator that follows `links.next`.

use std::fmt;
use std::marker::PhantomData;

use refsync_core::{Error, Result};
use refsync_http::ApiRequest;
use serde::de::DeserializeOwned;
use url::Url;

use crate::NAME;
use crate::client::{ReferralFactory, Target};
use crate::model::{Page, PageMeta};

/// Keeps an item (the client-side campaign filter of v1 mode).
pub(crate) type Keep<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// The pages of a list, fetched one call at a time with [`next_page`](Pages::next_page).
///
/// The first call uses the query it was made with; each next one follows the server's
/// `links.next`, absolute or relative (path and query, resolved against the URL just fetched,
/// as the ledger sends them). A `links.next` on another origin than the configured base URL is
/// never called with the token: its query is applied to the configured URL instead.
pub struct Pages<T> {
    client: ReferralFactory,
    operation: &'static str,
    /// The URL of the first request (path of every later one).
    origin: Url,
    next: Option<Url>,
    fetched: u32,
    keep: Option<Keep<T>>,
    _items: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pages")
            .field("operation", &self.operation)
            .field("pages_fetched", &self.fetched)
            .field("done", &self.next.is_none())
            .finish()
    }
}

impl<T: DeserializeOwned> Pages<T> {
    pub(crate) fn new(
        client: ReferralFactory,
        operation: &'static str,
        first: Url,
        keep: Option<Keep<T>>,
    ) -> Self {
        Pages {
            client,
            operation,
            origin: first.clone(),
            next: Some(first),
            fetched: 0,
            keep,
            _items: PhantomData,
        }
    }

    /// Pages fetched so far.
    pub fn pages_fetched(&self) -> u32 {
        self.fetched
    }

    /// Fetches the next page; `None` after the last one. A page may be empty in v1 mode (the
    /// client's campaign filter removed every item).
    pub async fn next_page(&mut self) -> Result<Option<Page<T>>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let response = self
            .client
            .execute(
                Target::Api,
                ApiRequest::get(url.as_str()).operation(self.operation),
                None,
            )
            .await?;
        self.fetched += 1;
        let value = response.json_value()?;
        let bad = |what: String| {
            Error::unexpected(format!(
                "could not read Referral Factory's {} answer: {what}",
                self.operation
            ))
            .with_connector(NAME)
            .with_operation(self.operation)
        };
        let (items, meta, next) = match value {
            serde_json::Value::Array(items) => (items, None, None),
            serde_json::Value::Object(mut map) => {
                let items = match map.remove("data") {
                    Some(serde_json::Value::Array(items)) => items,
                    Some(serde_json::Value::Null) | None => Vec::new(),
                    Some(_) => return Err(bad("`data` is not a list".to_owned())),
                };
                let meta = map
                    .remove("meta")
                    .filter(|m| m.is_object())
                    .map(serde_json::from_value::<PageMeta>)
                    .transpose()
                    .map_err(|e| bad(format!("meta: {e}")))?;
                let next = map
                    .remove("links")
                    .and_then(|l| l.get("next").cloned())
                    .and_then(|n| n.as_str().map(str::to_owned))
                    .filter(|n| !n.trim().is_empty());
                (items, meta, next)
            }
            _ => return Err(bad("not a list".to_owned())),
        };
        let mut decoded = Vec::with_capacity(items.len());
        for item in items {
            decoded.push(serde_json::from_value::<T>(item).map_err(|e| bad(e.to_string()))?);
        }
        if let Some(keep) = &self.keep {
            decoded.retain(|item| keep(item));
        }
        if let Some(next) = &next {
            let resolved = self.resolve_next(&url, next)?;
            if resolved == url {
                return Err(bad(format!(
                    "links.next points at the page just fetched (page {}); stopping",
                    self.fetched
                )));
            }
            self.next = Some(resolved);
        }
        Ok(Some(Page {
            items: decoded,
            meta,
            next,
        }))
    }

    /// Fetches every remaining page and returns their items.
    pub async fn collect_all(mut self) -> Result<Vec<T>> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page.items);
        }
        Ok(all)
    }

    /// The URL of `links.next`: an absolute one as is, a relative one (`/api/v2/users?page=2`,
    /// `?page=2`) resolved against the URL just fetched. One on another origin than the
    /// configured one (a protocol-relative `//host/…` included) is not called: its query is
    /// applied to our own URL, so the token never goes elsewhere.
    fn resolve_next(&self, fetched: &Url, next: &str) -> Result<Url> {
        let next = next.trim();
        let parsed = Url::parse(next)
            .or_else(|_| fetched.join(next))
            .map_err(|e| {
                Error::unexpected(format!("links.next is not a URL: {e}"))
                    .with_connector(NAME)
                    .with_operation(self.operation)
            })?;
        if parsed.origin() == self.origin.origin() {
            return Ok(parsed);
        }
        // Never send the token to another host: keep our URL, take the server's query.
        tracing::warn!(
            connector = NAME,
            operation = self.operation,
            "links.next points at another origin than base_url; following its query on base_url"
        );
        let mut own = self.origin.clone();
        own.set_query(parsed.query());
        Ok(own)
    }
}

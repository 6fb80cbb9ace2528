//! Calls to the Salesforce API through refsync-http's client: retries with backoff honouring
//! `Retry-After`, optional rate limiting, HTTP status → `ErrorKind`, secrets kept out of errors.

use std::collections::BTreeMap;

use refsync_core::{Error, PushOutcome, PushSpec, ReferredUser, Result};
use refsync_http::{Auth, HttpClient};

use crate::NAME;
use crate::config::Config;

/// The Salesforce API client.
#[derive(Debug)]
pub(crate) struct Client {
    http: HttpClient,
}

impl Client {
    /// A client for `config.base_url`, authenticated with `config.api_token`.
    pub(crate) fn new(config: &Config) -> Result<Client> {
        // TODO(salesforce): the auth scheme Salesforce documents (bearer, API key header, OAuth2),
        // its rate limit (`.rate_limit(RateLimit::per_minute(n))` below the vendor's) and any
        // API-version header (`.default_header(...)`).
        let http = HttpClient::builder(NAME)
            .base_url(config.base_url.clone())
            .auth(Auth::Bearer(config.api_token.clone()))
            .build()?;
        Ok(Client { http })
    }

    /// Creates or updates the person per `spec.duplicates`: look the email up, then create,
    /// update or link, and return the CRM objects now linked to the referral.
    pub(crate) async fn push_referral(
        &self,
        user: &ReferredUser,
        fields: &BTreeMap<String, serde_json::Value>,
        spec: &PushSpec,
    ) -> Result<PushOutcome> {
        // TODO(salesforce): `self.http.send(ApiRequest::get(...).operation("push_referral"))` to
        // find `user.email`, then `ApiRequest::post_json` / `patch_json` with `fields`.
        let _ = (user, fields, spec);
        Err(Error::unsupported(format!(
            "TODO(salesforce): push referred users to {} (lookup by email, then create, update or link)",
            self.http.base_url()
        )))
    }

    /// Calls a cheap authenticated endpoint: a 401 must come back as unauthorized.
    pub(crate) async fn health_check(&self) -> Result<()> {
        // TODO(salesforce): `self.http.send(ApiRequest::get("/...").operation("health_check")).await?`
        Err(Error::unsupported(format!(
            "TODO(salesforce): check connectivity and credentials against {}",
            self.http.base_url()
        )))
    }
}

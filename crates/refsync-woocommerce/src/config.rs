//! Settings of the WooCommerce connector: the `[settings]` table of an instance config.
//!
//! ```toml
//! [instances.settings]
//! store_url = "https://shop.example.com"            # the WordPress site address
//! consumer_key = "${env:WC_CONSUMER_KEY}"           # WooCommerce > Settings > Advanced > REST API
//! consumer_secret = "${env:WC_CONSUMER_SECRET}"
//! webhook_secret = "${env:WC_WEBHOOK_SECRET}"       # refsync creates the webhooks with it
//! paid_statuses = ["processing", "completed"]
//!
//! [instances.settings.coupon]                       # one coupon per invited friend
//! code = "FRIEND-{random}"
//! discount_type = "percent"
//! amount = "15"
//! expires_after_days = 60
//! ```

use refsync_core::{Error, Result, Secret};
use serde::{Deserialize, Serialize};

use crate::NAME;

/// Settings of the WooCommerce connector (read with `refsync_core::registry::parse_settings`).
///
/// Unknown keys are rejected so typos are caught; secrets are [`Secret`]s, which `Debug`,
/// logs and errors print as `[redacted]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The store's site address (`https://shop.example.com`, or with a path for WordPress in a
    /// sub-folder); the REST API is `<store_url>/wp-json/wc/v3`. Tests point it at the simulator.
    pub store_url: String,
    /// REST API consumer key (`ck_...`), with read/write permission.
    pub consumer_key: Secret,
    /// REST API consumer secret (`cs_...`).
    pub consumer_secret: Secret,
    /// How the consumer key and secret are sent. Default `auto`: HTTP Basic over HTTPS, OAuth
    /// 1.0a signatures over plain HTTP (the only scheme WooCommerce accepts there).
    #[serde(default)]
    pub auth: AuthMode,
    /// The secret WooCommerce signs webhook deliveries with (`X-WC-Webhook-Signature`).
    /// refsync creates its webhooks with it, so any long random value works; it is **not** the
    /// consumer secret.
    pub webhook_secret: Secret,
    /// Order statuses that count as paid (WooCommerce's own default: `processing`,
    /// `completed`; shipping plugins add statuses such as `shipped`).
    #[serde(default = "default_paid_statuses")]
    pub paid_statuses: Vec<String>,
    /// Only coupon codes starting with this prefix count as referral coupons (case-insensitive).
    /// Default: every coupon of an order is reported, and codes linked to no referral are left
    /// to the referral platform (the embedded ledger ignores unknown coupons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon_prefix: Option<String>,
    /// The `meta_data` key that holds a referral code on customers and orders (e.g. the key the
    /// push writes `{Referral Code}` to). Not read when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_code_meta_key: Option<String>,
    /// A coupon per invited friend: created by refsync, or the platform's coupon made sure of.
    /// Without this table the push issues no coupon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<CouponConfig>,
    /// Requests per second refsync allows itself against the store (WooCommerce core has no
    /// rate limit, but shared hosts and firewalls do). Default 5.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
}

/// How the REST API credentials are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// `basic` for `https://` stores, `oauth1` for `http://` ones.
    #[default]
    Auto,
    /// HTTP Basic (key as user, secret as password). WordPress accepts it only over HTTPS.
    Basic,
    /// `consumer_key` / `consumer_secret` query parameters, for HTTPS servers that drop the
    /// `Authorization` header (some Apache/FastCGI set-ups).
    Query,
    /// One-legged OAuth 1.0a with HMAC-SHA256, what WooCommerce requires over plain HTTP.
    Oauth1,
}

/// Where an invited friend's coupon comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponSource {
    /// refsync creates a unique coupon from `code`.
    #[default]
    Create,
    /// The referral platform's coupon for the user (a Referral Factory coupon, or one the
    /// embedded ledger assigned from a coupon batch): refsync links it, and creates it in the
    /// store with these settings when the store does not have it yet.
    Platform,
}

/// The coupon issued per invited friend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponConfig {
    /// `create` (default) or `platform`.
    #[serde(default)]
    pub source: CouponSource,
    /// The code pattern for `create`: text with `{random}` (8 characters) or `{random:N}`
    /// (4 to 32) and any push placeholder (`{Referral Code}`, `{First Name}`...). The random
    /// part is derived from the referral code with `webhook_secret` as key, so it cannot be
    /// guessed and a retried push finds the coupon it already made. Default `ref-{random}`.
    #[serde(default = "default_code")]
    pub code: String,
    /// `percent` (default), `fixed_cart` or `fixed_product`.
    #[serde(default = "default_discount_type")]
    pub discount_type: String,
    /// The discount, as WooCommerce takes it (`"15"`, `"5.50"`).
    pub amount: String,
    /// Times the coupon can be used in all (default 1).
    #[serde(default = "one")]
    pub usage_limit: u32,
    /// Times one customer can use it (default 1).
    #[serde(default = "one")]
    pub usage_limit_per_user: u32,
    /// Whether it cannot be combined with other coupons (default true).
    #[serde(default = "yes")]
    pub individual_use: bool,
    /// Whether only the invited friend's email may use it (checked by WooCommerce at checkout
    /// against the billing email). Default true.
    #[serde(default = "yes")]
    pub restrict_to_email: bool,
    /// Days until the coupon expires, counted from the push. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after_days: Option<u32>,
    /// Whether the coupon also grants free shipping (default false).
    #[serde(default)]
    pub free_shipping: bool,
    /// Minimum order amount, as WooCommerce takes it (`"50.00"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_amount: Option<String>,
    /// The coupon's description in the store (a template). Default
    /// `Referral coupon for {Email} (refsync)`.
    #[serde(default = "default_description")]
    pub description: String,
}

fn default_paid_statuses() -> Vec<String> {
    vec!["processing".into(), "completed".into()]
}

fn default_requests_per_second() -> u32 {
    5
}

fn default_code() -> String {
    "ref-{random}".into()
}

fn default_discount_type() -> String {
    "percent".into()
}

fn default_description() -> String {
    "Referral coupon for {Email} (refsync)".into()
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// The discount types WooCommerce knows.
pub const DISCOUNT_TYPES: [&str; 3] = ["percent", "fixed_cart", "fixed_product"];

impl Config {
    /// Checks what serde cannot; `store_url` and the auth mode are checked together by
    /// [`Config::effective_auth`].
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("consumer_key", &self.consumer_key),
            ("consumer_secret", &self.consumer_secret),
        ] {
            if value.is_empty() {
                return Err(Error::config(format!("{NAME}: {name} is empty")));
            }
        }
        if self.webhook_secret.expose().len() < 16 {
            return Err(Error::config(format!(
                "{NAME}: webhook_secret must be at least 16 characters (it is the only proof a delivery comes from the store)"
            )));
        }
        if self.paid_statuses.iter().all(|s| s.trim().is_empty()) {
            return Err(Error::config(format!(
                "{NAME}: paid_statuses must name at least one order status (WooCommerce's default: processing, completed)"
            )));
        }
        if self.requests_per_second == 0 {
            return Err(Error::config(format!(
                "{NAME}: requests_per_second must be at least 1"
            )));
        }
        if let Some(c) = &self.coupon {
            c.validate()?;
        }
        self.effective_auth()?;
        Ok(())
    }

    /// The auth mode to use for `store_url`, refusing credentials in clear text: Basic or query
    /// keys over plain HTTP are refused (WordPress ignores them there, and they would cross the
    /// network readable), except to a loopback host.
    pub fn effective_auth(&self) -> Result<AuthMode> {
        let url = url::Url::parse(&self.store_url).map_err(|e| {
            Error::config(format!(
                "{NAME}: store_url {:?} is not a URL: {e}",
                self.store_url
            ))
        })?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(Error::config(format!(
                    "{NAME}: store_url must start with https:// or http://, not {other}://"
                )));
            }
        };
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match (self.auth, https) {
            (AuthMode::Auto, true) => Ok(AuthMode::Basic),
            (AuthMode::Auto, false) => Ok(AuthMode::Oauth1),
            (AuthMode::Basic | AuthMode::Query, false) if !loopback => Err(Error::config(format!(
                "{NAME}: store_url is plain HTTP, where WooCommerce accepts the consumer key and secret only as OAuth 1.0a signatures (and Basic credentials would cross the network readable): use auth = \"oauth1\" (or \"auto\"), or serve the store over HTTPS"
            ))),
            (mode, _) => Ok(mode),
        }
    }

    /// What parse needs.
    pub(crate) fn parse_options(&self) -> crate::events::ParseOptions {
        crate::events::ParseOptions {
            paid_statuses: self
                .paid_statuses
                .iter()
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            coupon_prefix: self
                .coupon_prefix
                .as_deref()
                .map(crate::events::normalize_coupon_code)
                .filter(|p| !p.is_empty()),
            referral_code_meta_key: self
                .referral_code_meta_key
                .clone()
                .filter(|k| !k.trim().is_empty()),
        }
    }
}

impl CouponConfig {
    /// Checks the discount, limits and code pattern.
    pub fn validate(&self) -> Result<()> {
        if !DISCOUNT_TYPES.contains(&self.discount_type.as_str()) {
            return Err(Error::config(format!(
                "{NAME}: coupon.discount_type {:?} is not one of {}",
                self.discount_type,
                DISCOUNT_TYPES.join(", ")
            )));
        }
        let amount: f64 = self.amount.trim().parse().map_err(|_| {
            Error::config(format!(
                "{NAME}: coupon.amount {:?} is not a number (e.g. \"15\" or \"5.50\")",
                self.amount
            ))
        })?;
        if !amount.is_finite()
            || amount <= 0.0
            || (self.discount_type == "percent" && amount > 100.0)
        {
            return Err(Error::config(format!(
                "{NAME}: coupon.amount {:?} must be above 0{}",
                self.amount,
                if self.discount_type == "percent" {
                    " and at most 100 for a percent discount"
                } else {
                    ""
                }
            )));
        }
        if self.usage_limit == 0 || self.usage_limit_per_user == 0 {
            return Err(Error::config(format!(
                "{NAME}: coupon.usage_limit and usage_limit_per_user must be at least 1"
            )));
        }
        if self.expires_after_days == Some(0) {
            return Err(Error::config(format!(
                "{NAME}: coupon.expires_after_days must be at least 1 (leave it out for no expiry)"
            )));
        }
        crate::coupon::CodePattern::parse(&self.code)?;
        crate::coupon::description_template(&self.description)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: &serde_json::Value) -> Config {
        let mut v = json!({
            "store_url": "https://shop.example.com",
            "consumer_key": "ck_0123456789",
            "consumer_secret": "cs_0123456789",
            "webhook_secret": "a-webhook-secret-of-some-length",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn auth_follows_the_scheme_and_refuses_clear_text_credentials() {
        assert_eq!(
            config(&json!({})).effective_auth().unwrap(),
            AuthMode::Basic
        );
        let http = config(&json!({"store_url": "http://shop.example.com"}));
        assert_eq!(http.effective_auth().unwrap(), AuthMode::Oauth1);
        for mode in ["basic", "query"] {
            let c = config(&json!({"store_url": "http://shop.example.com", "auth": mode}));
            let e = c.validate().unwrap_err();
            assert!(e.message().contains("OAuth 1.0a"), "{}", e.message());
            // Loopback (a local store or the test simulator) stays allowed.
            let c = config(&json!({"store_url": "http://127.0.0.1:8080", "auth": mode}));
            c.validate().unwrap();
        }
        let c = config(&json!({"store_url": "https://shop.example.com", "auth": "oauth1"}));
        assert_eq!(c.effective_auth().unwrap(), AuthMode::Oauth1);
        for bad in ["ftp://shop.example.com", "shop.example.com"] {
            assert!(
                config(&json!({"store_url": bad})).validate().is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_names_the_problem() {
        config(&json!({})).validate().unwrap();
        for (patch, needle) in [
            (json!({"webhook_secret": "short"}), "webhook_secret"),
            (json!({"consumer_key": ""}), "consumer_key"),
            (json!({"paid_statuses": [" "]}), "paid_statuses"),
            (json!({"requests_per_second": 0}), "requests_per_second"),
            (json!({"coupon": {"amount": "-1"}}), "coupon.amount"),
        ] {
            let e = config(&patch).validate().unwrap_err();
            assert!(e.message().contains(needle), "{patch}: {}", e.message());
        }
        let unknown: std::result::Result<Config, _> = serde_json::from_value(json!({
            "store_url": "https://s.example", "consumer_key": "k", "consumer_secret": "s",
            "webhook_secret": "x", "paid_status": ["completed"],
        }));
        assert!(unknown.is_err(), "typos are caught");
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = config(&json!({}));
        let shown = format!("{c:?}");
        for s in [
            "ck_0123456789",
            "cs_0123456789",
            "a-webhook-secret-of-some-length",
        ] {
            assert!(!shown.contains(s), "{shown}");
        }
    }

    #[test]
    fn parse_options_are_normalised() {
        let c = config(&json!({
            "paid_statuses": ["Processing", " shipped ", ""],
            "coupon_prefix": "  REF-",
            "referral_code_meta_key": " ",
        }));
        let o = c.parse_options();
        assert_eq!(o.paid_statuses, ["processing", "shipped"]);
        assert_eq!(o.coupon_prefix.as_deref(), Some("ref-"));
        assert_eq!(o.referral_code_meta_key, None);
    }
}

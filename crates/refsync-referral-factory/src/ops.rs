//! The API operations: users, qualification, the inbound webhook, rewards, campaigns.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use refsync_core::{
    Error, ErrorKind, NewUser, PlatformUser, QualifyOutcome, ReferralKey, ReferrerRef, Result,
};
use refsync_http::{ApiRequest, ApiResponse};
use serde_json::{Value, json};

use crate::NAME;
use crate::client::{Flight, ReferralFactory, Target};
use crate::config::ApiVersion;
use crate::model::{Campaign, RewardItem, RewardMetric, RewardView, User};
use crate::pages::{Keep, Pages};
use crate::query::{FilterOp, ListQuery, MAX_PER_PAGE};

/// A user to create (`POST /users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateUser {
    /// Campaign id.
    pub campaign_id: String,
    /// First name.
    pub first_name: String,
    /// Email (one user per email per campaign).
    pub email: String,
    /// Who referred them; makes them a "Person Invited" credited to that referrer. Attribution
    /// is possible only at creation.
    pub referrer: Option<ReferrerRef>,
    /// Campaign custom fields, in order.
    pub meta: Vec<(String, String)>,
    /// Whether Referral Factory sends its welcome notification; `None` uses the config's
    /// `notify`.
    pub notify: Option<bool>,
}

impl CreateUser {
    /// A user with no referrer, no meta, and the config's `notify`.
    pub fn new(
        campaign_id: impl Into<String>,
        first_name: impl Into<String>,
        email: impl Into<String>,
    ) -> Self {
        CreateUser {
            campaign_id: campaign_id.into(),
            first_name: first_name.into(),
            email: email.into(),
            referrer: None,
            meta: Vec::new(),
            notify: None,
        }
    }
    /// Sets the referrer.
    #[must_use]
    pub fn referrer(mut self, referrer: ReferrerRef) -> Self {
        self.referrer = Some(referrer);
        self
    }
    /// Adds a custom field.
    #[must_use]
    pub fn meta(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.push((field.into(), value.into()));
        self
    }
    /// Sets `notify`.
    #[must_use]
    pub fn notify(mut self, notify: bool) -> Self {
        self.notify = Some(notify);
        self
    }
}

impl From<&NewUser> for CreateUser {
    /// `notify: true` is kept; `false` (the trait's default) falls back to the config's.
    fn from(u: &NewUser) -> Self {
        CreateUser {
            campaign_id: u.campaign_id.clone(),
            first_name: u.first_name.clone(),
            email: u.email.clone(),
            referrer: u.referrer.clone(),
            meta: u.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            notify: u.notify.then_some(true),
        }
    }
}

/// What the inbound webhook qualifies by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookKey {
    /// `code=<referral code>`.
    Code(String),
    /// `coupon=<coupon>`.
    Coupon(String),
}

/// Referral codes compare without case (the ledger upper-cases them).
fn same_code(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Integer-looking ids go out as JSON numbers (Referral Factory's ids are integers).
fn id_value(id: &str) -> Value {
    match id.trim().parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(id),
    }
}

fn describe(key: &ReferralKey) -> String {
    match key {
        ReferralKey::Id { id } => format!("id {id}"),
        ReferralKey::Code { code } => format!("code {code}"),
        ReferralKey::Email { email, campaign } => format!("email {email} in campaign {campaign}"),
        ReferralKey::Coupon { coupon } => format!("coupon {coupon}"),
    }
}

fn not_found(op: &'static str, key: &ReferralKey) -> Error {
    let extra = if matches!(key, ReferralKey::Coupon { .. }) {
        " (Referral Factory ignores coupons it did not issue)"
    } else {
        ""
    };
    Error::new(
        ErrorKind::NotFound,
        format!("Referral Factory has no user with {}{extra}", describe(key)),
    )
    .with_connector(NAME)
    .with_operation(op)
}

/// Maps a Referral Factory user to refsync's.
pub(crate) fn platform_user(u: User) -> PlatformUser {
    PlatformUser {
        id: u.id,
        campaign_id: u.campaign_id.unwrap_or_default(),
        code: u.code.unwrap_or_default(),
        url: u.url,
        first_name: u.first_name.unwrap_or_default(),
        email: u.email.unwrap_or_default(),
        referrer_id: u.referrer_id,
        qualified_at: u.qualified_at,
        coupon: u.coupon,
    }
}

/// How far behind the client's clock Referral Factory's may be: an answer without a message
/// whose `qualified_at` is older than the call's start by more than this was qualified before
/// the call (by someone else), and is reported as already qualified.
fn clock_skew() -> TimeDelta {
    TimeDelta::seconds(60)
}

/// A qualification call's answer.
struct Answer {
    user: User,
    /// The `message` beside `data` (the ledger says `qualified`, `already qualified`,
    /// `unqualified` or `not qualified`), lower-cased, without a trailing full stop.
    message: Option<String>,
    /// An earlier try of the call (5xx, timeout) may have been processed before this answer.
    repeated: bool,
}

/// The `message` of a JSON object answer.
fn answer_message(response: &ApiResponse) -> Option<String> {
    let value = response.json_value().ok()?;
    let message = value.get("message")?.as_str()?;
    let message = message.trim().trim_end_matches('.').trim().to_lowercase();
    (!message.is_empty()).then_some(message)
}

/// What a 200 to a qualify call means. The server's message decides when it has one: `already
/// …` → already qualified (unless an earlier try of ours may have done it: then our
/// `qualified_at` is recent), `qualified` → qualified. Without one (Referral Factory documents
/// none), a `qualified_at` older than the call's start (less [`clock_skew`]) → already qualified.
fn qualify_outcome(answer: Answer, started: DateTime<Utc>) -> QualifyOutcome {
    let at = answer.user.qualified_at;
    let since_call = |at: Option<DateTime<Utc>>| at.is_some_and(|t| t >= started - clock_skew());
    let already = match answer.message.as_deref() {
        Some(m) if m.contains("already") => !(answer.repeated && since_call(at)),
        Some("qualified") => false,
        _ => at.is_some() && !since_call(at),
    };
    if already {
        QualifyOutcome::AlreadyQualified { qualified_at: at }
    } else {
        QualifyOutcome::Qualified {
            user: Some(platform_user(answer.user)),
        }
    }
}

/// What a 200 to an unqualify call means: `not qualified` / `already …` → nothing changed
/// (unless an earlier try of ours may have done it), anything else → unqualified.
fn unqualify_outcome(answer: &Answer) -> QualifyOutcome {
    match answer.message.as_deref() {
        Some(m) if (m.contains("not qualified") || m.contains("already")) && !answer.repeated => {
            QualifyOutcome::NotQualified
        }
        _ => QualifyOutcome::Unqualified,
    }
}

/// The same result again, for the calls that joined a shared one. An error keeps its kind,
/// message, context, retryability and Referral Factory's raw answer (its source).
fn duplicate(result: &Result<QualifyOutcome>) -> Result<QualifyOutcome> {
    match result {
        Ok(outcome) => Ok(outcome.clone()),
        Err(e) => {
            let mut copy =
                Error::new(e.kind().clone(), e.message()).with_retryable(e.is_retryable());
            if let Some(c) = e.connector() {
                copy = copy.with_connector(c);
            }
            if let Some(op) = e.operation() {
                copy = copy.with_operation(op);
            }
            if let Some(raw) = refsync_http::error_response(e) {
                copy = copy.with_source(raw.clone());
            }
            Err(copy)
        }
    }
}

/// What a call that joined a shared qualify / unqualify gets: it changed nothing itself, so the
/// leader's `Qualified` is `AlreadyQualified` for it, and `Unqualified` is `NotQualified`.
fn joined_view(shared: &Result<QualifyOutcome>) -> Result<QualifyOutcome> {
    match shared {
        Ok(QualifyOutcome::Qualified { user }) => Ok(QualifyOutcome::AlreadyQualified {
            qualified_at: user.as_ref().and_then(|u| u.qualified_at),
        }),
        Ok(QualifyOutcome::Unqualified) => Ok(QualifyOutcome::NotQualified),
        other => duplicate(other),
    }
}

type Flights = Mutex<HashMap<(bool, ReferralKey), Flight>>;

/// The leader's side of a shared call. Dropped (done or cancelled), it first removes the call
/// from the in-flight table, then closes the channel: a waiting call that sees it closed
/// without a result finds the table free and starts over.
struct Landing<'a> {
    flights: &'a Flights,
    key: &'a (bool, ReferralKey),
    result: tokio::sync::watch::Sender<Option<Arc<Result<QualifyOutcome>>>>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.key);
        // `result` is dropped (closed) after this.
    }
}

impl ReferralFactory {
    // ---- users ------------------------------------------------------------------------------

    /// Creates a user (`POST /users`; v1: `referrer_code`). Not retried on 5xx or timeouts
    /// (it is not idempotent). A 422 "email already exists" is a
    /// [`Conflict`](ErrorKind::Conflict): Referral Factory keeps the first referrer.
    ///
    /// In v1 mode a referrer given by id or email is looked up first to send its code.
    pub async fn add_user(&self, user: &CreateUser) -> Result<User> {
        const OP: &str = "create_user";
        let notify = user.notify.unwrap_or(self.inner.config.notify);
        let mut body = json!({
            "campaign_id": id_value(&user.campaign_id),
            "first_name": user.first_name,
            "email": user.email,
            "notify": notify,
        });
        if !user.meta.is_empty() {
            body["meta"] = Value::Array(
                user.meta
                    .iter()
                    .map(|(f, v)| json!({"field": f, "value": v}))
                    .collect(),
            );
        }
        if let Some(referrer) = &user.referrer {
            match self.api_version() {
                ApiVersion::V2 => {
                    body["referrer"] = match referrer {
                        ReferrerRef::Id(id) => json!({"field": "id", "value": id_value(id)}),
                        ReferrerRef::Code(code) => json!({"field": "code", "value": code}),
                        ReferrerRef::Email(email) => json!({"field": "email", "value": email}),
                    };
                }
                ApiVersion::V1 => {
                    body["referrer_code"] = json!(self.referrer_code_v1(referrer, user).await?);
                }
            }
        }
        let response = self
            .execute(
                Target::Api,
                ApiRequest::post_json(self.url(&["users"]).as_str(), body).operation(OP),
                Some(&user.campaign_id),
            )
            .await?;
        self.decode_one(&response)
    }

    async fn referrer_code_v1(&self, referrer: &ReferrerRef, user: &CreateUser) -> Result<String> {
        let key = match referrer {
            ReferrerRef::Code(code) => return Ok(code.clone()),
            ReferrerRef::Id(id) => ReferralKey::Id { id: id.clone() },
            ReferrerRef::Email(email) => ReferralKey::Email {
                email: email.clone(),
                campaign: user.campaign_id.clone(),
            },
        };
        let found = self.find_user(&key).await?;
        found.and_then(|u| u.code).ok_or_else(|| {
            Error::validation(format!(
                "referrer with {} not found in Referral Factory (v1 attributes by referrer code)",
                describe(&key)
            ))
            .with_connector(NAME)
            .with_operation("create_user")
        })
    }

    /// Looks a user up: `GET /users/{id|code|email}` (`campaign_id` with an email). Coupons,
    /// and codes and emails in v1 mode, are found by listing users. `None` when there is no
    /// such user.
    pub async fn find_user(&self, key: &ReferralKey) -> Result<Option<User>> {
        match (self.api_version(), key) {
            (_, ReferralKey::Id { id }) => self.get_user_at(id, None).await,
            (ApiVersion::V2, ReferralKey::Code { code }) => {
                match self.get_user_at(code, None).await? {
                    // A numeric code may be read as an id: check, and search when it was.
                    Some(u) if u.code.as_deref().is_some_and(|c| !same_code(c, code)) => {
                        self.search(None, Some(("code", code)), |u| {
                            u.code.as_deref().is_some_and(|c| same_code(c, code))
                        })
                        .await
                    }
                    other => Ok(other),
                }
            }
            (ApiVersion::V2, ReferralKey::Email { email, campaign }) => {
                let same = |u: &User| {
                    u.email
                        .as_deref()
                        .is_none_or(|e| e.trim().eq_ignore_ascii_case(email.trim()))
                        && u.campaign_id.as_deref().is_none_or(|c| c == campaign)
                };
                match self.get_user_at(email, Some(campaign)).await? {
                    Some(u) if !same(&u) => {
                        self.search(Some(campaign), Some(("email", email)), |u| {
                            u.email
                                .as_deref()
                                .is_some_and(|e| e.trim().eq_ignore_ascii_case(email.trim()))
                                && u.campaign_id.as_deref().is_none_or(|c| c == campaign)
                        })
                        .await
                    }
                    other => Ok(other),
                }
            }
            (ApiVersion::V1, ReferralKey::Code { code }) => {
                self.search(None, Some(("code", code)), |u| {
                    u.code.as_deref().is_some_and(|c| same_code(c, code))
                })
                .await
            }
            (ApiVersion::V1, ReferralKey::Email { email, campaign }) => {
                self.search(Some(campaign), Some(("email", email)), |u| {
                    u.email
                        .as_deref()
                        .is_some_and(|e| e.trim().eq_ignore_ascii_case(email.trim()))
                })
                .await
            }
            (_, ReferralKey::Coupon { coupon }) => {
                self.search(None, Some(("coupon", coupon)), |u| {
                    u.coupon
                        .as_deref()
                        .is_some_and(|c| c.trim().eq_ignore_ascii_case(coupon.trim()))
                })
                .await
            }
        }
    }

    async fn get_user_at(&self, identifier: &str, campaign: Option<&str>) -> Result<Option<User>> {
        const OP: &str = "get_user";
        let mut req = ApiRequest::get(self.url(&["users", identifier]).as_str()).operation(OP);
        if let Some(c) = campaign {
            req = req.query("campaign_id", c);
        }
        match self.execute(Target::Api, req, campaign).await {
            Ok(response) => self.decode_one(&response).map(Some),
            Err(e) if e.kind() == &ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists users (filtered server-side, checked client-side by `matches`) until one matches.
    async fn search(
        &self,
        campaign: Option<&str>,
        filter: Option<(&str, &str)>,
        matches: impl Fn(&User) -> bool,
    ) -> Result<Option<User>> {
        let mut q = ListQuery::new().per_page(MAX_PER_PAGE);
        if let Some(c) = campaign {
            q = q.campaign(c);
        }
        if let Some((field, value)) = filter {
            q = q.filter(field, FilterOp::Equal, value);
        }
        let mut pages = self.list_users(&q)?;
        while let Some(page) = pages.next_page().await? {
            if let Some(u) = page.items.into_iter().find(|u| matches(u)) {
                return Ok(Some(u));
            }
        }
        Ok(None)
    }

    /// Lists users (`GET /users`) page by page, following `links.next`. `per_page` above 250
    /// is a [`Validation`](ErrorKind::Validation) error, before any call. In v1 mode the
    /// campaign filter is applied by the client (v1 ignores it).
    pub fn list_users(&self, query: &ListQuery) -> Result<Pages<User>> {
        let mut url = self.url(&["users"]);
        let params = query
            .to_query()
            .map_err(|e| e.with_operation("list_users"))?;
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(&params);
        }
        let keep: Option<Keep<User>> = match (self.api_version(), &query.campaign_id) {
            (ApiVersion::V1, Some(c)) => {
                let c = c.clone();
                Some(Box::new(move |u: &User| {
                    u.campaign_id.as_deref().is_none_or(|uc| uc == c)
                }))
            }
            _ => None,
        };
        Ok(Pages::new(self.clone(), "list_users", url, keep))
    }

    /// Lists campaigns (`GET /campaigns`), every page.
    pub async fn campaigns(&self) -> Result<Vec<Campaign>> {
        Pages::new(
            self.clone(),
            "list_campaigns",
            self.url(&["campaigns"]),
            None,
        )
        .collect_all()
        .await
    }

    // ---- qualification ----------------------------------------------------------------------

    /// Sets the qualification as is, without looking first: v2 `PUT /users/qualification`
    /// with `{qualified}` and the key (`id`, `code`, `email` + `campaign_id`, or `coupon`);
    /// v1 `PUT /users/{id}` with `{campaign_id, qualified}` (the user is looked up first for
    /// the id and campaign). Idempotent: retried on 5xx and timeouts.
    pub async fn set_qualification(&self, key: &ReferralKey, qualified: bool) -> Result<User> {
        let answer = match self.api_version() {
            ApiVersion::V2 => self.put_qualification_v2(key, qualified).await?,
            ApiVersion::V1 => {
                let op = if qualified { "qualify" } else { "unqualify" };
                let user = self
                    .find_user(key)
                    .await?
                    .ok_or_else(|| not_found(op, key))?;
                self.put_qualification_v1(&user, qualified).await?
            }
        };
        Ok(answer.user)
    }

    /// Decodes a qualification answer: the user, and the message beside it.
    fn answer(&self, response: &ApiResponse, repeated: bool) -> Result<Answer> {
        Ok(Answer {
            user: self.decode_one(response)?,
            message: answer_message(response),
            repeated,
        })
    }

    async fn put_qualification_v2(&self, key: &ReferralKey, qualified: bool) -> Result<Answer> {
        let op = if qualified { "qualify" } else { "unqualify" };
        let (mut body, campaign) = match key {
            ReferralKey::Id { id } => (json!({"id": id_value(id)}), None),
            ReferralKey::Code { code } => (json!({"code": code}), None),
            ReferralKey::Email { email, campaign } => (
                json!({"email": email, "campaign_id": id_value(campaign)}),
                Some(campaign.as_str()),
            ),
            ReferralKey::Coupon { coupon } => (json!({"coupon": coupon}), None),
        };
        body["qualified"] = json!(qualified);
        let req = ApiRequest::put_json(self.url(&["users", "qualification"]).as_str(), body)
            .operation(op);
        match self.execute_traced(Target::Api, req, campaign).await {
            Ok((response, repeated)) => self.answer(&response, repeated),
            Err(e) if e.kind() == &ErrorKind::NotFound => Err(not_found(op, key)),
            Err(e) => Err(e),
        }
    }

    async fn put_qualification_v1(&self, user: &User, qualified: bool) -> Result<Answer> {
        let op = if qualified { "qualify" } else { "unqualify" };
        let campaign = user.campaign_id.clone().ok_or_else(|| {
            Error::unexpected(format!(
                "Referral Factory's user {} has no campaign_id, which v1 qualification needs",
                user.id
            ))
            .with_connector(NAME)
            .with_operation(op)
        })?;
        let body = json!({"campaign_id": id_value(&campaign), "qualified": qualified});
        let req = ApiRequest::put_json(self.url(&["users", &user.id]).as_str(), body).operation(op);
        let (response, repeated) = self
            .execute_traced(Target::Api, req, Some(&campaign))
            .await?;
        self.answer(&response, repeated)
    }

    /// Qualifies a referral, idempotently. With API v2 it is one call (`PUT
    /// /users/qualification`), whose answer tells a new qualification from an old one; with v1
    /// it looks the user up first and, when `qualified_at` is set, reports
    /// [`AlreadyQualified`](QualifyOutcome::AlreadyQualified) without calling qualify. Without
    /// an API token (webhook-only accounts), codes and coupons go through the inbound webhook.
    ///
    /// [`Qualified`](QualifyOutcome::Qualified) means this call qualified it: when someone else
    /// did between the look-up and the call, the answer says so (its `message` is "already
    /// qualified", or, without a message, its `qualified_at` is older than the call) and the
    /// outcome is `AlreadyQualified`. Concurrent calls for the same key on one client (and its
    /// clones) share a single call: one of them gets its outcome, the others
    /// `AlreadyQualified`.
    ///
    /// An unknown id, code or email is a [`NotFound`](ErrorKind::NotFound) error; an unknown
    /// coupon is [`NotQualified`](QualifyOutcome::NotQualified) (nothing changed): Referral
    /// Factory ignores coupons it did not issue, and shops send every redeemed coupon.
    pub async fn qualify_user(&self, key: &ReferralKey) -> Result<QualifyOutcome> {
        self.change_qualification(key, true).await
    }

    /// Reverts a qualification (refunds); [`NotQualified`](QualifyOutcome::NotQualified) when
    /// the user is pending, without calling, or when the answer says it was not qualified.
    /// Concurrent calls for the same key share one, as for [`qualify_user`](Self::qualify_user).
    pub async fn unqualify_user(&self, key: &ReferralKey) -> Result<QualifyOutcome> {
        self.change_qualification(key, false).await
    }

    /// Single flight: the first call for `(qualify, key)` does the work; calls that come while
    /// it is in flight wait for its result (see [`joined_view`]). A cancelled first call lets
    /// the waiting ones start over.
    async fn change_qualification(
        &self,
        key: &ReferralKey,
        qualify: bool,
    ) -> Result<QualifyOutcome> {
        let flights = &self.inner.flights;
        let flight = (qualify, key.clone());
        loop {
            let joined = {
                let mut table = flights.lock().unwrap_or_else(PoisonError::into_inner);
                match table.get(&flight) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel(None);
                        table.insert(flight.clone(), rx);
                        Ok(tx)
                    }
                }
            };
            match joined {
                Ok(tx) => {
                    let landing = Landing {
                        flights,
                        key: &flight,
                        result: tx,
                    };
                    let result = self.change_qualification_once(key, qualify).await;
                    landing
                        .result
                        .send_replace(Some(Arc::new(duplicate(&result))));
                    return result;
                }
                Err(mut rx) => {
                    let shared = match rx.wait_for(Option::is_some).await {
                        Ok(value) => value.clone(),
                        // The call we joined was cancelled: start over.
                        Err(_) => continue,
                    };
                    if let Some(shared) = shared {
                        return joined_view(&shared);
                    }
                }
            }
        }
    }

    async fn change_qualification_once(
        &self,
        key: &ReferralKey,
        qualify: bool,
    ) -> Result<QualifyOutcome> {
        let op = if qualify { "qualify" } else { "unqualify" };
        if !self.has_api_access() {
            return match (qualify, key, self.has_inbound_webhook()) {
                (true, ReferralKey::Code { code }, true) => {
                    self.qualify_via_webhook(&WebhookKey::Code(code.clone())).await
                }
                (true, ReferralKey::Coupon { coupon }, true) => {
                    self.qualify_via_webhook(&WebhookKey::Coupon(coupon.clone())).await
                }
                _ => Err(Error::unsupported(format!(
                    "without an API token, Referral Factory can only qualify by code or coupon through the inbound webhook; cannot {op} by {}",
                    describe(key)
                ))
                .with_connector(NAME)
                .with_operation(op)),
            };
        }
        // v2 qualifies by id, code, email or coupon in one call, and its answer says whether
        // the referral was already qualified (the message, or a `qualified_at` older than the
        // call): no look-up first, one platform call per qualification. v1 needs the user's
        // id, and unqualifying keeps the look-up (a pending user is reported without a call).
        if qualify && self.api_version() == ApiVersion::V2 {
            return self.put_and_report(key, None, true).await;
        }
        let user = self.find_user(key).await?;
        let user = match user {
            Some(u) => u,
            // Coupons are found by listing, which may not know them: let the qualify call say.
            None if matches!(key, ReferralKey::Coupon { .. })
                && self.api_version() == ApiVersion::V2 =>
            {
                return self.put_and_report(key, None, qualify).await;
            }
            // A coupon nobody holds: Referral Factory ignores coupons it did not issue.
            None if matches!(key, ReferralKey::Coupon { .. }) => {
                return Ok(QualifyOutcome::NotQualified);
            }
            None => return Err(not_found(op, key)),
        };
        match (qualify, user.qualified_at) {
            (true, Some(at)) => {
                return Ok(QualifyOutcome::AlreadyQualified {
                    qualified_at: Some(at),
                });
            }
            (false, None) => return Ok(QualifyOutcome::NotQualified),
            _ => {}
        }
        self.put_and_report(key, Some(&user), qualify).await
    }

    async fn put_and_report(
        &self,
        key: &ReferralKey,
        user: Option<&User>,
        qualify: bool,
    ) -> Result<QualifyOutcome> {
        let started = Utc::now();
        let result = match (self.api_version(), user) {
            (ApiVersion::V1, Some(u)) => self.put_qualification_v1(u, qualify).await,
            _ => self.put_qualification_v2(key, qualify).await,
        };
        match result {
            Ok(answer) if qualify => Ok(qualify_outcome(answer, started)),
            Ok(answer) => Ok(unqualify_outcome(&answer)),
            // Referral Factory ignores coupons it did not issue: nothing changed.
            Err(e)
                if e.kind() == &ErrorKind::NotFound
                    && matches!(key, ReferralKey::Coupon { .. }) =>
            {
                Ok(QualifyOutcome::NotQualified)
            }
            // Someone qualified it between our look-up and our call.
            Err(e)
                if qualify
                    && e.kind() == &ErrorKind::Validation
                    && e.message().to_lowercase().contains("already qualified") =>
            {
                Ok(QualifyOutcome::AlreadyQualified { qualified_at: None })
            }
            Err(e) => Err(e),
        }
    }

    /// Qualifies through the inbound webhook (`POST …/webhook/{token}/qualify`, form `code=` or
    /// `coupon=`), for accounts without API access. Treated as idempotent (a referral qualifies
    /// once; a repeat answers "already qualified"), so 5xx and timeouts are retried.
    ///
    /// The answer's message decides the outcome: `already …` →
    /// [`AlreadyQualified`](QualifyOutcome::AlreadyQualified) (without a time), `ignored …` or
    /// a 404 for a coupon → [`NotQualified`](QualifyOutcome::NotQualified), anything else →
    /// [`Qualified`](QualifyOutcome::Qualified) (without the user: the webhook does not return
    /// it). A 404 for a code is a [`NotFound`](ErrorKind::NotFound) error.
    pub async fn qualify_via_webhook(&self, key: &WebhookKey) -> Result<QualifyOutcome> {
        const OP: &str = "qualify_webhook";
        let url = self.webhook_target().ok_or_else(|| {
            Error::config("inbound_webhook_url is not configured")
                .with_connector(NAME)
                .with_operation(OP)
        })?;
        let (name, value) = match key {
            WebhookKey::Code(c) => ("code", c.clone()),
            WebhookKey::Coupon(c) => ("coupon", c.clone()),
        };
        let req = ApiRequest::post_form(url.as_str(), [(name, value.clone())])
            .operation(OP)
            .idempotent(true);
        let response = match self.execute(Target::Webhook, req, None).await {
            Ok(r) => r,
            Err(e) if e.kind() == &ErrorKind::NotFound => {
                if matches!(key, WebhookKey::Coupon(_)) {
                    return Ok(QualifyOutcome::NotQualified);
                }
                let key = match key {
                    WebhookKey::Code(code) => ReferralKey::Code { code: code.clone() },
                    WebhookKey::Coupon(coupon) => ReferralKey::Coupon {
                        coupon: coupon.clone(),
                    },
                };
                return Err(not_found(OP, &key));
            }
            Err(e) => return Err(e),
        };
        let text = response.text();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| match v {
                Value::String(s) => Some(s),
                Value::Object(m) => m
                    .get("message")
                    .or_else(|| m.get("status"))
                    .and_then(|s| s.as_str())
                    .map(str::to_owned),
                _ => None,
            })
            .unwrap_or(text);
        let message = message.trim().to_lowercase();
        if message.starts_with("ignored") {
            // An unknown coupon: ignored by design, nothing changed.
            Ok(QualifyOutcome::NotQualified)
        } else if message.contains("already") {
            Ok(QualifyOutcome::AlreadyQualified { qualified_at: None })
        } else {
            Ok(QualifyOutcome::Qualified { user: None })
        }
    }

    // ---- rewards ----------------------------------------------------------------------------

    /// Lists rewards: `GET /rewards/{due|issued|dashboard}/{metric}`, page by page. v2 only
    /// (an [`Unsupported`](ErrorKind::Unsupported) error in v1 mode).
    pub fn list_rewards(
        &self,
        view: RewardView,
        metric: RewardMetric,
        query: &ListQuery,
    ) -> Result<Pages<RewardItem>> {
        self.rewards_need_v2("list_rewards")?;
        let mut url = self.url(&["rewards", view.as_str(), metric.as_str()]);
        let params = query
            .to_query()
            .map_err(|e| e.with_operation("list_rewards"))?;
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(&params);
        }
        Ok(Pages::new(self.clone(), "list_rewards", url, None))
    }

    /// Issues a due reward (`POST /rewards/issue/{id}`). Not retried on 5xx or timeouts.
    pub async fn issue_due_reward(&self, id: &str) -> Result<RewardItem> {
        self.reward_action("issue", "issue_reward", id).await
    }

    /// Cancels a due reward (`POST /rewards/cancel/{id}`). Not retried on 5xx or timeouts.
    pub async fn cancel_due_reward(&self, id: &str) -> Result<RewardItem> {
        self.reward_action("cancel", "cancel_reward", id).await
    }

    async fn reward_action(&self, action: &str, op: &'static str, id: &str) -> Result<RewardItem> {
        self.rewards_need_v2(op)?;
        let req = ApiRequest::post_json(
            self.url(&["rewards", action, id]).as_str(),
            Value::Object(serde_json::Map::new()),
        )
        .operation(op);
        match self.execute(Target::Api, req, None).await {
            Ok(response) => self.decode_one(&response),
            Err(e) if e.kind() == &ErrorKind::NotFound => Err(Error::new(
                ErrorKind::NotFound,
                format!("Referral Factory has no reward {id}"),
            )
            .with_connector(NAME)
            .with_operation(op)),
            Err(e) => Err(e),
        }
    }

    fn rewards_need_v2(&self, op: &'static str) -> Result<()> {
        match self.api_version() {
            ApiVersion::V2 => Ok(()),
            ApiVersion::V1 => Err(Error::unsupported(
                "the rewards endpoints are v2 only (Referral Factory's v1 API, as refsync knows it, has users only); set api_version = \"v2\"",
            )
            .with_connector(NAME)
            .with_operation(op)),
        }
    }

    /// Every due reward of every metric (an account without a metric answers 404 for it,
    /// which is skipped). v2 only.
    pub async fn all_due_rewards(&self) -> Result<BTreeMap<RewardMetric, Vec<RewardItem>>> {
        self.rewards_need_v2("rewards_due")?;
        let mut out = BTreeMap::new();
        for metric in RewardMetric::ALL {
            let pages = self.list_rewards(
                RewardView::Due,
                metric,
                &ListQuery::new().per_page(MAX_PER_PAGE),
            )?;
            match pages.collect_all().await {
                Ok(items) => {
                    out.insert(metric, items);
                }
                Err(e) if e.kind() == &ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

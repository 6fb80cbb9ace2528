//! A stateful, in-memory WooCommerce store (REST API v3 and webhooks) over real loopback HTTP,
//! built on the [`Simulator`] framework: the WooCommerce connector's conformance suite and
//! end-to-end tests talk to it as they would to `https://shop.example.com/wp-json/wc/v3`.
//!
//! ```no_run
//! use refsync_testkit::woocommerce::{NewOrder, WooSim, WooSimOptions};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let sim = WooSim::start(WooSimOptions::new("ck_test", "cs_test")).await?;
//! // point the connector at sim.base_url(); it registers webhooks, creates customers/coupons ...
//! let order = sim
//!     .place_order(NewOrder { coupon_codes: vec!["REF-ANNA".into()], ..NewOrder::new("bob@example.com") })
//!     .expect("coupon valid");
//! sim.set_order_status(order, "processing").unwrap();
//! for (delivery, answer) in sim.deliver().await {
//!     assert_eq!(answer?.0, 200, "webhook {} refused", delivery.webhook_id);
//! }
//! # Ok(()) }
//! ```
//!
//! # What is simulated
//!
//! - **Auth** (`WC_REST_Authentication`): with [`WooSimOptions::https`] (default) HTTP Basic
//!   `consumer_key:consumer_secret` or the `consumer_key`/`consumer_secret` query parameters;
//!   without it (a plain-HTTP store) only OAuth 1.0a one-legged signatures (HMAC-SHA1 or
//!   HMAC-SHA256, 15-minute timestamp window, nonces remembered per key for 15 minutes; the
//!   signature covers every query parameter, form-body parameters and `Authorization: OAuth`
//!   parameters, never a JSON body). Over HTTPS OAuth is accepted too, as the fallback
//!   WooCommerce has, signed with an `https://` base URL. Bad credentials are `401
//!   woocommerce_rest_authentication_error` on every path ("Consumer key is invalid.",
//!   "Consumer secret is invalid.", "Invalid signature - provided signature does not match.",
//!   "Invalid timestamp.", "Invalid nonce - nonce has already been used."); no credentials are
//!   `401 woocommerce_rest_cannot_view|create|edit|delete` from the route's permission check.
//! - **REST** under `/wp-json/wc/v3`, bodies encoded like `wp_json_encode` (`\/`, `\uXXXX`):
//!   customers (`GET ?email=&search=`, `POST`, `GET|PUT|DELETE /{id}`), coupons (`GET
//!   ?code=&search=`, `POST`, `GET|PUT|DELETE /{id}`, trash without `force`), orders (`GET
//!   ?status=&customer=&modified_after=&modified_before=&after=&before=&orderby=&order=`, `GET
//!   /{id}`; read-only), webhooks (`GET ?status=`, `POST`, `GET|PUT|DELETE /{id}`). Objects have
//!   exactly the keys of the REST docs' examples (tests/data/woocommerce). Lists paginate with
//!   `page`/`per_page` (≤ 100), `X-WP-Total`, `X-WP-TotalPages` and `Link` (`prev`/`next`).
//!   Errors are WordPress's `{"code","message","data":{"status"}}`.
//! - **Shop actions**: [`WooSim::place_order`] (checkout coupon checks, usage counting),
//!   [`WooSim::set_order_status`], [`WooSim::touch_order`], [`WooSim::delete_order`] (to the
//!   trash), [`WooSim::set_order_modified`].
//! - **Webhooks**: topics `{order,customer,coupon,product}.{created,updated,deleted,restored}`;
//!   a ping (`webhook_id=N`, form-encoded, unsigned) when a webhook is created active or set
//!   active; deliveries queued per (webhook, resource id) and merged while pending, bodies built
//!   when taken from the queue (the state at send time), signed with
//!   `base64(HMAC-SHA256(body, secret))`, failures counted and webhooks disabled as
//!   `WC_Webhook::failed_delivery` does. No retries.
//!
//! # What is not simulated
//!
//! Products, refunds, order notes as objects, taxes and shipping (totals are what
//! [`NewOrder::total`] says; a coupon's discount is computed on that total: `percent` of it, or
//! the fixed amount, and the line item's subtotal is total + discounts), coupon product/category
//! /minimum-amount rules, key permissions (every key is read_write), batch endpoints, the
//! `/wp-json` index, `_fields`/`context`, `action.*` topics, the delivery log, WP-Cron delays.
//! The site timezone is UTC, so `date_x` equals `date_x_gmt`. Pings are sent before the REST
//! answer on a multi-threaded Tokio runtime; on a current-thread runtime they run in the
//! background: await [`WooSim::wait_pings`] before reading [`WooSim::pings`].

mod api;
mod auth;
mod events;
mod model;
mod ops;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::sim::Simulator;
use model::State;

/// Where the REST API lives under the store URL.
pub const REST_PREFIX: &str = "/wp-json/wc/v3";

/// Settings of a [`WooSim`].
#[derive(Debug, Clone)]
pub struct WooSimOptions {
    /// The API consumer key (`ck_…`).
    pub consumer_key: String,
    /// The API consumer secret (`cs_…`).
    pub consumer_secret: String,
    /// true: the store is served over HTTPS (as seen by WordPress): it accepts HTTP Basic
    /// (key:secret) and the consumer_key/consumer_secret query parameters. false: like a
    /// plain-HTTP store, only OAuth 1.0a one-legged signatures.
    pub https: bool,
    /// Consecutive failed deliveries tolerated before a webhook is disabled (WooCommerce:
    /// `failures > 5` → disabled).
    pub max_delivery_failures: u32,
    /// Value of X-WC-Webhook-Source (site URL with trailing slash); default
    /// `"https://shop.example.com/"`.
    pub site_url: String,
}

impl WooSimOptions {
    /// These keys, HTTPS, 5 tolerated failures, site `https://shop.example.com/`.
    pub fn new(consumer_key: &str, consumer_secret: &str) -> Self {
        WooSimOptions {
            consumer_key: consumer_key.to_owned(),
            consumer_secret: consumer_secret.to_owned(),
            https: true,
            max_delivery_failures: 5,
            site_url: "https://shop.example.com/".to_owned(),
        }
    }
}

/// An order placed at checkout ([`WooSim::place_order`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The billing e-mail.
    pub email: String,
    /// The customer's user id; 0 = guest checkout.
    pub customer_id: u64,
    /// Coupon codes entered at checkout (any case; matched by WooCommerce's normal form).
    pub coupon_codes: Vec<String>,
    /// The status after checkout (default `pending`).
    pub status: String,
    /// The order total after discounts, e.g. `"29.35"`.
    pub total: String,
}

impl NewOrder {
    /// A pending guest order of 29.35 without coupons.
    pub fn new(email: &str) -> Self {
        NewOrder {
            email: email.to_owned(),
            customer_id: 0,
            coupon_codes: Vec::new(),
            status: "pending".to_owned(),
            total: "29.35".to_owned(),
        }
    }
}

/// A webhook delivery the store makes.
#[derive(Debug, Clone)]
pub struct OutgoingWebhook {
    /// The webhook's id (also in `X-WC-Webhook-ID`).
    pub webhook_id: u64,
    /// The webhook's `delivery_url`.
    pub url: String,
    /// The ready request: `POST`, `url` = the delivery URL, the `X-WC-Webhook-*` headers, the
    /// body.
    pub request: refsync_core::WebhookRequest,
    /// The body bytes exactly as sent and signed.
    pub body: Vec<u8>,
}

/// State shared by the HTTP handler and the [`WooSim`] handle.
#[derive(Debug)]
struct Inner {
    opts: WooSimOptions,
    base_url: OnceLock<String>,
    state: Mutex<State>,
    /// Pings still in flight.
    ping_tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn base_url(&self) -> String {
        self.base_url.get().cloned().unwrap_or_default()
    }

    /// Sends a ping and records the answer (0 = no answer). WooCommerce pings before the REST
    /// call answers; so does the simulator on a multi-threaded Tokio runtime (the handler
    /// blocks in place while the ping runs). On a current-thread runtime the handler cannot
    /// wait, so the ping runs in the background: see [`WooSim::wait_pings`].
    fn ping(self: &Arc<Self>, webhook_id: u64, url: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(self);
        let ping = async move {
            let request = events::ping_request(webhook_id, &url);
            let status = match crate::sim::send_webhook(&url, &request).await {
                Ok((status, _)) => status,
                Err(_) => 0,
            };
            inner.lock().pings.push((webhook_id, status));
        };
        if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| runtime.block_on(ping));
        } else {
            let task = runtime.spawn(ping);
            let mut tasks = lock(&self.ping_tasks);
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }
}

/// A running simulated WooCommerce store. Dropping it stops the server.
#[derive(Debug)]
pub struct WooSim {
    sim: Simulator,
    inner: Arc<Inner>,
}

impl WooSim {
    /// Starts the store on `127.0.0.1:<random port>` (inside a Tokio runtime).
    pub async fn start(opts: WooSimOptions) -> std::io::Result<WooSim> {
        let inner = Arc::new(Inner {
            opts,
            base_url: OnceLock::new(),
            state: Mutex::new(State::new()),
            ping_tasks: Mutex::new(Vec::new()),
        });
        let sim = Simulator::start(api::Handler::new(Arc::clone(&inner))).await?;
        let _ = inner.base_url.set(sim.base_url());
        Ok(WooSim { sim, inner })
    }

    /// `http://127.0.0.1:PORT`: the store URL (the REST API is under `/wp-json/wc/v3`).
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }

    /// The underlying simulator: request log and fault injection.
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// The underlying simulator alone (for harnesses that keep a [`Simulator`]); the store lives
    /// on in its handler and stays reachable through the API.
    pub fn into_simulator(self) -> Simulator {
        self.sim
    }

    /// The options the store runs with.
    pub fn options(&self) -> &WooSimOptions {
        &self.inner.opts
    }

    /// `{customers, coupons, orders, webhooks}` as REST JSON (trashed coupons left out, trashed
    /// orders included with status `trash`; webhooks as [`WooSim::webhooks`]).
    pub fn state(&self) -> Value {
        let base = self.base_url();
        let state = self.inner.lock();
        json!({
            "customers": state.customers.values().map(|c| c.to_json(&base)).collect::<Vec<_>>(),
            "coupons": state.coupons.values().filter(|c| !c.trashed).map(|c| c.to_json(&base)).collect::<Vec<_>>(),
            "orders": state.orders.values().map(|o| o.to_json(&base)).collect::<Vec<_>>(),
            "webhooks": state.webhooks.values().map(|w| w.to_json_with_secret(&base)).collect::<Vec<_>>(),
        })
    }

    /// Customers whose account e-mail is `email` (case-insensitive).
    pub fn customers_with_email(&self, email: &str) -> Vec<Value> {
        let base = self.base_url();
        let state = self.inner.lock();
        state
            .customers
            .values()
            .filter(|c| c.email.eq_ignore_ascii_case(email.trim()))
            .map(|c| c.to_json(&base))
            .collect()
    }

    /// The live coupon with this code (compared in WooCommerce's normal form: entities decoded,
    /// trimmed, lower-cased).
    pub fn coupon_by_code(&self, code: &str) -> Option<Value> {
        let base = self.base_url();
        let state = self.inner.lock();
        state
            .coupon_id_by_code(code)
            .and_then(|id| state.coupons.get(&id))
            .map(|c| c.to_json(&base))
    }

    /// Every live coupon.
    pub fn coupons(&self) -> Vec<Value> {
        let base = self.base_url();
        let state = self.inner.lock();
        state
            .coupons
            .values()
            .filter(|c| !c.trashed)
            .map(|c| c.to_json(&base))
            .collect()
    }

    /// Order `id` as `GET /orders/{id}` returns it (also when trashed).
    pub fn order(&self, id: u64) -> Option<Value> {
        let base = self.base_url();
        self.inner.lock().orders.get(&id).map(|o| o.to_json(&base))
    }

    /// Every webhook: the REST shape plus `secret`, `failure_count` and `api_version`.
    pub fn webhooks(&self) -> Vec<Value> {
        let base = self.base_url();
        let state = self.inner.lock();
        state
            .webhooks
            .values()
            .map(|w| w.to_json_with_secret(&base))
            .collect()
    }

    /// Checkout: validates the coupons (exist, not expired, usage limits, e-mail restrictions,
    /// individual use) with WooCommerce's messages, creates the order, counts coupon usage
    /// (statuses pending/processing/on-hold/completed) and queues `order.created`.
    /// `customer_id` must be 0 or an existing customer.
    pub fn place_order(&self, order: NewOrder) -> Result<u64, String> {
        ops::place_order(&mut self.inner.lock(), order)
    }

    /// An admin sets the status (also when unchanged: the order is saved): `date_modified`
    /// moves, `date_paid` is set the first time the order becomes processing or completed,
    /// `date_completed` when completed, coupon usage is released on `cancelled` and counted
    /// again on a later counted status; queues `order.updated`.
    pub fn set_order_status(&self, id: u64, status: &str) -> Result<(), String> {
        ops::set_order_status(&mut self.inner.lock(), id, status)
    }

    /// Saves the order without a status change (an order note, an address edit):
    /// `date_modified` moves; queues `order.updated`.
    pub fn touch_order(&self, id: u64) -> Result<(), String> {
        ops::touch_order(&mut self.inner.lock(), id)
    }

    /// Moves the order to the trash (status `trash`; `GET /orders/{id}` still returns it, lists
    /// without `status=trash` do not) and queues `order.deleted` (body `{"id":N}`). An order
    /// already in the trash is removed for good, without a webhook.
    pub fn delete_order(&self, id: u64) -> Result<(), String> {
        ops::delete_order(&mut self.inner.lock(), id)
    }

    /// Sets an order's `date_modified` (whole seconds) without a webhook, for reconciliation
    /// tests.
    pub fn set_order_modified(&self, id: u64, at: DateTime<Utc>) -> Result<(), String> {
        let mut state = self.inner.lock();
        let order = state
            .orders
            .get_mut(&id)
            .ok_or_else(|| format!("order {id} does not exist"))?;
        order.date_modified = model::truncate_secs(at);
        Ok(())
    }

    /// Sets a webhook's status to `disabled`, as WooCommerce does after failed deliveries.
    pub fn disable_webhook(&self, id: u64) {
        if let Some(hook) = self.inner.lock().webhooks.get_mut(&id) {
            hook.status = "disabled".to_owned();
            hook.date_modified = model::now_secs();
        }
    }

    /// Deletes a webhook as an admin does in WP Admin; its pending deliveries are dropped.
    pub fn delete_webhook_as_admin(&self, id: u64) {
        self.inner.lock().webhooks.remove(&id);
    }

    /// Takes every pending delivery off the queue, building each body from the object's state
    /// now, signing it and giving it a new `X-WC-Webhook-Delivery-ID`. Deliveries of deleted
    /// webhooks are dropped; a webhook disabled or paused after the delivery was queued still
    /// gets it (the scheduled action runs regardless, as in WooCommerce).
    pub fn take_outbox(&self) -> Vec<OutgoingWebhook> {
        let base = self.base_url();
        events::take_outbox(&mut self.inner.lock(), &self.inner.opts, &base)
    }

    /// Takes the outbox and POSTs each delivery (in queue order) exactly as built, recording
    /// each outcome as [`WooSim::send`] does.
    pub async fn deliver(&self) -> Vec<(OutgoingWebhook, std::io::Result<(u16, Vec<u8>)>)> {
        let outbox = self.take_outbox();
        let mut results = Vec::with_capacity(outbox.len());
        for delivery in outbox {
            let answer = self.send_exact(&delivery).await;
            results.push((delivery, answer));
        }
        results
    }

    /// (Re)sends one delivery with a fresh `X-WC-Webhook-Delivery-ID` (same body and
    /// signature) and records the outcome like `WC_Webhook::log_delivery`: 200–302 resets the
    /// webhook's failure count; anything else (or no answer) is a failure: when the count is
    /// already above [`WooSimOptions::max_delivery_failures`] the webhook becomes `disabled`,
    /// otherwise the count goes up by one. No retries.
    pub async fn send(&self, w: &OutgoingWebhook) -> std::io::Result<(u16, Vec<u8>)> {
        let fresh = events::with_new_delivery_id(&mut self.inner.lock(), w);
        self.send_exact(&fresh).await
    }

    async fn send_exact(&self, w: &OutgoingWebhook) -> std::io::Result<(u16, Vec<u8>)> {
        let answer = crate::sim::send_webhook(&w.url, &w.request).await;
        let status = answer.as_ref().ok().map(|(status, _)| *status);
        events::record_delivery(
            &mut self.inner.lock(),
            self.inner.opts.max_delivery_failures,
            w.webhook_id,
            status,
        );
        answer
    }

    /// `(webhook id, HTTP status)` of every ping answered so far (0 = no answer), in the order
    /// the answers came. On a multi-threaded runtime a ping is answered before the REST call
    /// that caused it returns; on a current-thread runtime await [`WooSim::wait_pings`] first.
    pub fn pings(&self) -> Vec<(u64, u16)> {
        self.inner.lock().pings.clone()
    }

    /// Waits for every ping still in flight (only on a current-thread runtime; each gives up
    /// after 60 seconds), then returns [`WooSim::pings`].
    pub async fn wait_pings(&self) -> Vec<(u64, u16)> {
        let tasks = std::mem::take(&mut *lock(&self.inner.ping_tasks));
        for task in tasks {
            let _ = task.await;
        }
        self.pings()
    }

    /// Deliveries waiting in the queue: `(webhook id, resource id)`.
    pub fn pending_deliveries(&self) -> Vec<(u64, u64)> {
        self.inner
            .lock()
            .queue
            .iter()
            .map(|p| (p.webhook_id, p.resource_id))
            .collect()
    }
}

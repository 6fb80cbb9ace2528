//! The simulator's in-memory records and their REST (wp_api_v3) shapes.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde_json::{Map, Value, json};

/// The statuses an order can have (`wc_get_order_statuses()` without the `wc-` prefix, plus
/// `trash` and the Checkout Block's `checkout-draft`).
pub(super) const ORDER_STATUSES: &[&str] = &[
    "pending",
    "processing",
    "on-hold",
    "completed",
    "cancelled",
    "refunded",
    "failed",
    "trash",
    "checkout-draft",
];

/// Statuses on which WooCommerce records coupon usage (`wc_update_coupon_usage_counts` hooks).
pub(super) const USAGE_STATUSES: &[&str] = &["pending", "processing", "on-hold", "completed"];

/// Webhook statuses (`wc_get_webhook_statuses()`).
pub(super) const WEBHOOK_STATUSES: &[&str] = &["active", "paused", "disabled"];

/// Keys of `billing` in the order and customer fixtures, in order.
pub(super) const BILLING_KEYS: &[&str] = &[
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "state",
    "postcode",
    "country",
    "email",
    "phone",
];

/// Keys of `shipping` in the order and customer fixtures.
pub(super) const SHIPPING_KEYS: &[&str] = &[
    "first_name",
    "last_name",
    "company",
    "address_1",
    "address_2",
    "city",
    "state",
    "postcode",
    "country",
];

/// The WooCommerce version the simulated store runs (order `version`, User-Agent).
pub(super) const WC_VERSION: &str = "9.4.2";
/// The WordPress version in the User-Agent.
pub(super) const WP_VERSION: &str = "6.7.1";

/// `2017-03-22T16:28:02`: how the REST API formats dates (site time and GMT alike; the simulated
/// site's timezone is UTC, so both are equal).
pub(super) fn wc_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn opt_time(t: Option<&DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(wc_time(t)))
}

/// Now, truncated to whole seconds (WordPress stores dates in seconds).
pub(super) fn now_secs() -> DateTime<Utc> {
    truncate_secs(Utc::now())
}

/// `t` without its sub-second part.
pub(super) fn truncate_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Parses a date the way `rest_parse_date` accepts it: `YYYY-MM-DDTHH:MM:SS` with optional
/// fraction and optional `Z` / `±HH:MM` offset (no offset = site time = UTC); a bare date is
/// midnight. Fractions are dropped.
pub(super) fn parse_wc_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(truncate_secs(t.with_timezone(&Utc)));
    }
    let s2 = s.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&s2) {
        return Some(truncate_secs(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&s2, format) {
            return Some(truncate_secs(t.and_utc()));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Formats cents as `wc_format_decimal($x, 2)` does: `"10.00"`, `"-3.50"`.
pub(super) fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parses a decimal amount given as a JSON string or number into cents (rounded half away from
/// zero). An empty string is zero.
pub(super) fn parse_money(v: &Value) -> Option<i64> {
    let text = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Null => return Some(0),
        _ => return None,
    };
    if text.is_empty() {
        return Some(0);
    }
    let x: f64 = text.parse().ok()?;
    if !x.is_finite() || x.abs() > 1e13 {
        return None;
    }
    // The float is only a parsing step; amounts are kept as integer cents.
    #[allow(clippy::cast_possible_truncation)]
    Some((x * 100.0).round() as i64)
}

/// Decodes the HTML entities `html_entity_decode` knows for coupon codes: `&amp;`, `&lt;`,
/// `&gt;`, `&quot;`, `&#039;`/`&apos;`, `&nbsp;` and numeric `&#NN;` / `&#xHH;` references.
pub(super) fn html_entity_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let decoded = tail.find(';').filter(|&end| end <= 12).and_then(|end| {
            let entity = &tail[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    if let Some(hex) = entity
                        .strip_prefix("#x")
                        .or_else(|| entity.strip_prefix("#X"))
                    {
                        u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                    } else if let Some(dec) = entity.strip_prefix('#') {
                        dec.parse::<u32>().ok().and_then(char::from_u32)
                    } else {
                        None
                    }
                }
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A coupon code in WooCommerce's normal form (the `woocommerce_coupon_code` filters:
/// `html_entity_decode`, `wc_sanitize_coupon_code` (tags stripped, trimmed), `wc_strtolower`).
pub(super) fn normal_code(code: &str) -> String {
    let decoded = html_entity_decode(code);
    let mut stripped = String::with_capacity(decoded.len());
    let mut in_tag = false;
    for c in decoded.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => stripped.push(c),
            _ => {}
        }
    }
    stripped.trim().to_lowercase()
}

/// `wp_specialchars_decode($s, ENT_QUOTES)`: how WooCommerce reads the webhook secret before
/// signing.
pub(super) fn specialchars_decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#039;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Random identifiers (delivery ids, order keys, secrets) without a random-number dependency:
/// every `RandomState` carries fresh random keys.
#[derive(Debug, Default)]
pub(super) struct Random {
    counter: u64,
}

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(self.counter);
        hasher.finish()
    }

    /// `n` lower-case hex characters.
    pub(super) fn hex(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n + 16);
        while out.len() < n {
            out.push_str(&format!("{:016x}", self.next_u64()));
        }
        out.truncate(n);
        out
    }

    /// `n` characters from `alphabet`.
    pub(super) fn chars(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n)
            .map(|_| {
                // The modulo keeps the index below the alphabet length.
                #[allow(clippy::cast_possible_truncation)]
                let i = (self.next_u64() % alphabet.len() as u64) as usize;
                char::from(alphabet[i])
            })
            .collect()
    }
}

/// One `meta_data` entry.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Meta {
    pub(super) id: u64,
    pub(super) key: String,
    pub(super) value: Value,
}

pub(super) fn meta_json(list: &[Meta]) -> Value {
    Value::Array(
        list.iter()
            .map(|m| json!({"id": m.id, "key": m.key, "value": m.value}))
            .collect(),
    )
}

/// Applies a REST `meta_data` array as `WC_Data::update_meta_data` does for each item, then drops
/// entries whose value is null (as `save_meta_data` deletes them):
/// - with an `id` that exists: that entry gets the item's key and value;
/// - with an unknown `id`: every entry with the key is removed and a new one added;
/// - without `id`: the first entry with the key gets the value, further ones are removed; when
///   there is none, a new entry is added.
pub(super) fn apply_meta(
    list: &mut Vec<Meta>,
    items: &Value,
    next_id: &mut u64,
) -> Result<(), String> {
    let Some(items) = items.as_array() else {
        return Err("meta_data is not of type array.".to_owned());
    };
    for (index, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(format!("meta_data[{index}] is not of type object."));
        };
        let Some(key) = obj.get("key").and_then(Value::as_str) else {
            return Err(format!("meta_data[{index}][key] is not of type string."));
        };
        let value = obj.get("value").cloned().unwrap_or(Value::Null);
        let id = obj.get("id").and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let by_id = id.and_then(|id| list.iter().position(|m| m.id == id));
        match (id, by_id) {
            (_, Some(pos)) => {
                list[pos].key = key.to_owned();
                list[pos].value = value;
            }
            (Some(_), None) => {
                list.retain(|m| m.key != key);
                list.push(Meta {
                    id: take_id(next_id),
                    key: key.to_owned(),
                    value,
                });
            }
            (None, None) => {
                let mut first = true;
                let mut found = false;
                for m in list.iter_mut().filter(|m| m.key == key) {
                    m.value = if first { value.clone() } else { Value::Null };
                    first = false;
                    found = true;
                }
                if !found {
                    list.push(Meta {
                        id: take_id(next_id),
                        key: key.to_owned(),
                        value,
                    });
                }
            }
        }
    }
    list.retain(|m| !m.value.is_null());
    Ok(())
}

fn take_id(next: &mut u64) -> u64 {
    let id = *next;
    *next += 1;
    id
}

/// A billing or shipping address: every key of the fixture, strings.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Address {
    fields: BTreeMap<&'static str, String>,
    keys: &'static [&'static str],
}

impl Address {
    pub(super) fn billing() -> Address {
        Address::empty(BILLING_KEYS)
    }

    pub(super) fn shipping() -> Address {
        Address::empty(SHIPPING_KEYS)
    }

    fn empty(keys: &'static [&'static str]) -> Address {
        Address {
            fields: keys.iter().map(|k| (*k, String::new())).collect(),
            keys,
        }
    }

    pub(super) fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }

    pub(super) fn set(&mut self, key: &str, value: &str) {
        if let Some(k) = self.keys.iter().find(|k| **k == key) {
            self.fields.insert(k, value.to_owned());
        }
    }

    /// Merges a REST `billing`/`shipping` object: known keys with string values (numbers are
    /// stringified); unknown keys are ignored.
    pub(super) fn merge(&mut self, v: &Value, name: &str) -> Result<(), String> {
        let Some(obj) = v.as_object() else {
            return Err(format!("{name} is not of type object."));
        };
        for (key, value) in obj {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                _ => return Err(format!("{name}[{key}] is not of type string.")),
            };
            self.set(key, &text);
        }
        Ok(())
    }

    pub(super) fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .keys
            .iter()
            .map(|k| ((*k).to_owned(), Value::String(self.get(k).to_owned())))
            .collect();
        Value::Object(map)
    }
}

fn links(base: &str, collection: &str, id: u64) -> Value {
    json!({
        "self": [{"href": format!("{base}/wp-json/wc/v3/{collection}/{id}")}],
        "collection": [{"href": format!("{base}/wp-json/wc/v3/{collection}")}],
    })
}

/// A registered customer (a WordPress user with role `customer`).
#[derive(Debug, Clone)]
pub(super) struct Customer {
    pub(super) id: u64,
    pub(super) email: String,
    pub(super) first_name: String,
    pub(super) last_name: String,
    pub(super) username: String,
    pub(super) billing: Address,
    pub(super) shipping: Address,
    pub(super) is_paying_customer: bool,
    pub(super) meta: Vec<Meta>,
    pub(super) date_created: DateTime<Utc>,
    pub(super) date_modified: DateTime<Utc>,
}

impl Customer {
    /// `GET /customers/{id}` (exactly the keys of the docs' example).
    pub(super) fn to_json(&self, base: &str) -> Value {
        json!({
            "id": self.id,
            "date_created": wc_time(&self.date_created),
            "date_created_gmt": wc_time(&self.date_created),
            "date_modified": wc_time(&self.date_modified),
            "date_modified_gmt": wc_time(&self.date_modified),
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "role": "customer",
            "username": self.username,
            "billing": self.billing.to_json(),
            "shipping": self.shipping.to_json(),
            "is_paying_customer": self.is_paying_customer,
            "avatar_url": "https://secure.gravatar.com/avatar/?s=96&d=mm&r=g",
            "meta_data": meta_json(&self.meta),
            "_links": links(base, "customers", self.id),
        })
    }
}

/// A coupon (post type `shop_coupon`).
#[derive(Debug, Clone)]
pub(super) struct Coupon {
    pub(super) id: u64,
    /// In normal form (see [`normal_code`]).
    pub(super) code: String,
    pub(super) amount: i64,
    pub(super) discount_type: String,
    pub(super) description: String,
    pub(super) date_expires: Option<DateTime<Utc>>,
    pub(super) usage_count: u64,
    pub(super) individual_use: bool,
    pub(super) product_ids: Vec<Value>,
    pub(super) excluded_product_ids: Vec<Value>,
    pub(super) usage_limit: Option<u64>,
    pub(super) usage_limit_per_user: Option<u64>,
    pub(super) limit_usage_to_x_items: Option<u64>,
    pub(super) free_shipping: bool,
    pub(super) product_categories: Vec<Value>,
    pub(super) excluded_product_categories: Vec<Value>,
    pub(super) exclude_sale_items: bool,
    pub(super) minimum_amount: i64,
    pub(super) maximum_amount: i64,
    /// Lower-cased.
    pub(super) email_restrictions: Vec<String>,
    /// User ids (as strings) of registered customers, billing e-mails of guests.
    pub(super) used_by: Vec<String>,
    pub(super) meta: Vec<Meta>,
    pub(super) date_created: DateTime<Utc>,
    pub(super) date_modified: DateTime<Utc>,
    /// Moved to the trash by `DELETE` without `force`: readable by id, invisible otherwise.
    pub(super) trashed: bool,
}

impl Coupon {
    /// `GET /coupons/{id}` (exactly the keys of the docs' example).
    pub(super) fn to_json(&self, base: &str) -> Value {
        json!({
            "id": self.id,
            "code": self.code,
            "amount": money(self.amount),
            "date_created": wc_time(&self.date_created),
            "date_created_gmt": wc_time(&self.date_created),
            "date_modified": wc_time(&self.date_modified),
            "date_modified_gmt": wc_time(&self.date_modified),
            "discount_type": self.discount_type,
            "description": self.description,
            "date_expires": opt_time(self.date_expires.as_ref()),
            "date_expires_gmt": opt_time(self.date_expires.as_ref()),
            "usage_count": self.usage_count,
            "individual_use": self.individual_use,
            "product_ids": self.product_ids,
            "excluded_product_ids": self.excluded_product_ids,
            "usage_limit": self.usage_limit,
            "usage_limit_per_user": self.usage_limit_per_user,
            "limit_usage_to_x_items": self.limit_usage_to_x_items,
            "free_shipping": self.free_shipping,
            "product_categories": self.product_categories,
            "excluded_product_categories": self.excluded_product_categories,
            "exclude_sale_items": self.exclude_sale_items,
            "minimum_amount": money(self.minimum_amount),
            "maximum_amount": money(self.maximum_amount),
            "email_restrictions": self.email_restrictions,
            "used_by": self.used_by,
            "meta_data": meta_json(&self.meta),
            "_links": links(base, "coupons", self.id),
        })
    }

    pub(super) fn is_expired(&self, now: &DateTime<Utc>) -> bool {
        self.date_expires.is_some_and(|t| *now > t)
    }

    /// Whether `email` passes `email_restrictions` (`*` wildcards as in `WC_Discounts`).
    pub(super) fn allows_email(&self, email: &str) -> bool {
        if self.email_restrictions.is_empty() {
            return true;
        }
        let email = email.trim().to_lowercase();
        self.email_restrictions
            .iter()
            .any(|pattern| wildcard_match(pattern, &email))
    }

    /// Uses recorded for this user id (as string) or e-mail.
    pub(super) fn uses_by(&self, user: Option<&str>, email: &str) -> u64 {
        self.used_by
            .iter()
            .filter(|u| user.is_some_and(|id| *u == id) || u.eq_ignore_ascii_case(email.trim()))
            .count() as u64
    }
}

/// `*` matches any run of characters; everything else literally.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

/// One `coupon_lines` item.
#[derive(Debug, Clone)]
pub(super) struct CouponLine {
    /// The order item id (not the coupon id).
    pub(super) item_id: u64,
    /// The code as stored on the coupon.
    pub(super) code: String,
    pub(super) discount: i64,
}

/// An order (placed through [`super::WooSim::place_order`]).
#[derive(Debug, Clone)]
pub(super) struct Order {
    pub(super) id: u64,
    pub(super) order_key: String,
    pub(super) cart_hash: String,
    pub(super) status: String,
    pub(super) customer_id: u64,
    pub(super) billing: Address,
    pub(super) shipping: Address,
    /// The order total (after discounts), cents.
    pub(super) total: i64,
    pub(super) line_item_id: u64,
    pub(super) coupon_lines: Vec<CouponLine>,
    pub(super) meta: Vec<Meta>,
    pub(super) date_created: DateTime<Utc>,
    pub(super) date_modified: DateTime<Utc>,
    pub(super) date_paid: Option<DateTime<Utc>>,
    pub(super) date_completed: Option<DateTime<Utc>>,
    /// Whether this order's coupon uses are counted (`_recorded_coupon_usage_counts`).
    pub(super) usage_recorded: bool,
}

impl Order {
    pub(super) fn discount_total(&self) -> i64 {
        self.coupon_lines.iter().map(|c| c.discount).sum()
    }

    /// `GET /orders/{id}` (exactly the keys of the docs' example).
    pub(super) fn to_json(&self, base: &str) -> Value {
        let subtotal = self.total + self.discount_total();
        // The line item `price` is a float in the API (`"price": 3`).
        #[allow(clippy::cast_precision_loss)]
        let price = subtotal as f64 / 100.0;
        let line_items = json!([{
            "id": self.line_item_id,
            "name": "Referral Test Product",
            "product_id": 93,
            "variation_id": 0,
            "quantity": 1,
            "tax_class": "",
            "subtotal": money(subtotal),
            "subtotal_tax": "0.00",
            "total": money(self.total),
            "total_tax": "0.00",
            "taxes": [],
            "meta_data": [],
            "sku": "",
            "price": price,
        }]);
        let coupon_lines: Vec<Value> = self
            .coupon_lines
            .iter()
            .map(|c| {
                json!({
                    "id": c.item_id,
                    "code": c.code,
                    "discount": money(c.discount),
                    "discount_tax": "0.00",
                    "meta_data": [],
                })
            })
            .collect::<Vec<_>>();
        let mut order = json!({
            "id": self.id,
            "parent_id": 0,
            "number": self.id.to_string(),
            "order_key": self.order_key,
            "created_via": "checkout",
            "version": WC_VERSION,
            "status": self.status,
            "currency": "USD",
            "date_created": wc_time(&self.date_created),
            "date_created_gmt": wc_time(&self.date_created),
            "date_modified": wc_time(&self.date_modified),
            "date_modified_gmt": wc_time(&self.date_modified),
            "discount_total": money(self.discount_total()),
            "discount_tax": "0.00",
            "shipping_total": "0.00",
            "shipping_tax": "0.00",
            "cart_tax": "0.00",
            "total": money(self.total),
            "total_tax": "0.00",
            "prices_include_tax": false,
            "customer_id": self.customer_id,
            "customer_ip_address": "127.0.0.1",
            "customer_user_agent": "Mozilla/5.0 (refsync WooCommerce simulator)",
            "customer_note": "",
            "billing": self.billing.to_json(),
            "shipping": self.shipping.to_json(),
            "payment_method": "bacs",
            "payment_method_title": "Direct bank transfer",
            "transaction_id": "",
            "date_paid": opt_time(self.date_paid.as_ref()),
            "date_paid_gmt": opt_time(self.date_paid.as_ref()),
            "date_completed": opt_time(self.date_completed.as_ref()),
            "date_completed_gmt": opt_time(self.date_completed.as_ref()),
            "cart_hash": self.cart_hash,
            "meta_data": meta_json(&self.meta),
        });
        let rest = json!({
            "line_items": line_items,
            "tax_lines": [],
            "shipping_lines": [],
            "fee_lines": [],
            "coupon_lines": coupon_lines,
            "refunds": [],
            "_links": links(base, "orders", self.id),
        });
        if let (Some(map), Value::Object(rest)) = (order.as_object_mut(), rest) {
            map.extend(rest);
        }
        order
    }
}

/// The WordPress hooks behind a topic (`WC_Webhook::get_topic_hooks`).
pub(super) fn topic_hooks(topic: &str) -> &'static [&'static str] {
    match topic {
        "coupon.created" => &[
            "woocommerce_process_shop_coupon_meta",
            "woocommerce_new_coupon",
        ],
        "coupon.updated" => &[
            "woocommerce_process_shop_coupon_meta",
            "woocommerce_update_coupon",
        ],
        "customer.created" => &[
            "user_register",
            "woocommerce_created_customer",
            "woocommerce_new_customer",
        ],
        "customer.updated" => &["profile_update", "woocommerce_update_customer"],
        "customer.deleted" => &["delete_user"],
        "order.created" => &["woocommerce_new_order"],
        "order.updated" => &["woocommerce_update_order", "woocommerce_order_refunded"],
        "product.created" => &[
            "woocommerce_process_product_meta",
            "woocommerce_new_product",
            "woocommerce_new_product_variation",
        ],
        "product.updated" => &[
            "woocommerce_process_product_meta",
            "woocommerce_update_product",
            "woocommerce_update_product_variation",
        ],
        "coupon.deleted" | "order.deleted" | "product.deleted" => &["wp_trash_post"],
        "coupon.restored" | "order.restored" | "product.restored" => &["untrashed_post"],
        _ => &[],
    }
}

/// Whether `topic` is one of `{coupon,customer,order,product}.{created,updated,deleted,restored}`.
pub(super) fn valid_topic(topic: &str) -> bool {
    match topic.split_once('.') {
        Some((resource, event)) => {
            matches!(resource, "coupon" | "customer" | "order" | "product")
                && matches!(event, "created" | "updated" | "deleted" | "restored")
        }
        None => false,
    }
}

/// A webhook (table `wc_webhooks`).
#[derive(Debug, Clone)]
pub(super) struct Webhook {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) status: String,
    pub(super) topic: String,
    pub(super) delivery_url: String,
    pub(super) secret: String,
    pub(super) api_version: String,
    pub(super) failure_count: u32,
    pub(super) date_created: DateTime<Utc>,
    pub(super) date_modified: DateTime<Utc>,
}

impl Webhook {
    pub(super) fn resource(&self) -> &str {
        self.topic.split_once('.').map_or("", |(r, _)| r)
    }

    pub(super) fn event(&self) -> &str {
        self.topic.split_once('.').map_or("", |(_, e)| e)
    }

    /// `GET /webhooks/{id}`: no secret, no failure count.
    pub(super) fn to_json(&self, base: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "topic": self.topic,
            "resource": self.resource(),
            "event": self.event(),
            "hooks": topic_hooks(&self.topic),
            "delivery_url": self.delivery_url,
            "date_created": wc_time(&self.date_created),
            "date_created_gmt": wc_time(&self.date_created),
            "date_modified": wc_time(&self.date_modified),
            "date_modified_gmt": wc_time(&self.date_modified),
            "_links": links(base, "webhooks", self.id),
        })
    }

    /// The REST shape plus what tests need: `secret`, `failure_count`, `api_version`.
    pub(super) fn to_json_with_secret(&self, base: &str) -> Value {
        let mut v = self.to_json(base);
        v["secret"] = json!(self.secret);
        v["failure_count"] = json!(self.failure_count);
        v["api_version"] = json!(self.api_version);
        v
    }
}

/// A queued delivery (an Action Scheduler `woocommerce_deliver_webhook_async` action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) webhook_id: u64,
    pub(super) resource_id: u64,
}

/// Everything the store holds.
#[derive(Debug)]
pub(super) struct State {
    /// WordPress user ids (1 is the admin who owns the API keys).
    pub(super) next_user_id: u64,
    /// Post ids, shared by coupons and orders as in `wp_posts`.
    pub(super) next_post_id: u64,
    pub(super) next_webhook_id: u64,
    pub(super) next_item_id: u64,
    pub(super) next_meta_id: u64,
    pub(super) customers: BTreeMap<u64, Customer>,
    pub(super) coupons: BTreeMap<u64, Coupon>,
    pub(super) orders: BTreeMap<u64, Order>,
    pub(super) webhooks: BTreeMap<u64, Webhook>,
    pub(super) queue: Vec<Pending>,
    /// OAuth nonces seen per consumer key, with their timestamps.
    pub(super) nonces: HashMap<String, Vec<(String, i64)>>,
    pub(super) pings: Vec<(u64, u16)>,
    /// Pings to send once the current request has released the state: `(webhook id, url)`.
    pub(super) ping_jobs: Vec<(u64, String)>,
    pub(super) random: Random,
}

impl State {
    pub(super) fn new() -> State {
        State {
            next_user_id: 2,
            next_post_id: 100,
            next_webhook_id: 1,
            next_item_id: 1,
            next_meta_id: 1,
            customers: BTreeMap::new(),
            coupons: BTreeMap::new(),
            orders: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            queue: Vec::new(),
            nonces: HashMap::new(),
            pings: Vec::new(),
            ping_jobs: Vec::new(),
            random: Random::default(),
        }
    }

    pub(super) fn post_id(&mut self) -> u64 {
        take_id(&mut self.next_post_id)
    }

    pub(super) fn item_id(&mut self) -> u64 {
        take_id(&mut self.next_item_id)
    }

    /// The live (not trashed) coupon whose code has the normal form of `code`.
    pub(super) fn coupon_id_by_code(&self, code: &str) -> Option<u64> {
        let code = normal_code(code);
        self.coupons
            .values()
            .find(|c| !c.trashed && c.code == code)
            .map(|c| c.id)
    }

    pub(super) fn customer_id_by_email(&self, email: &str) -> Option<u64> {
        self.customers
            .values()
            .find(|c| c.email.eq_ignore_ascii_case(email.trim()))
            .map(|c| c.id)
    }

    /// Queues a delivery of `resource_id` to every active webhook with this topic, unless one
    /// for the same webhook and resource is already pending (WooCommerce checks
    /// `as_next_scheduled_action` before scheduling).
    pub(super) fn fire(&mut self, resource: &str, event: &str, resource_id: u64) {
        let hooks: Vec<u64> = self
            .webhooks
            .values()
            .filter(|w| w.status == "active" && w.resource() == resource && w.event() == event)
            .map(|w| w.id)
            .collect();
        for webhook_id in hooks {
            let pending = Pending {
                webhook_id,
                resource_id,
            };
            if !self.queue.contains(&pending) {
                self.queue.push(pending);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coupon_codes_are_normalised() {
        assert_eq!(normal_code("  Summer&amp;Sale10 "), "summer&sale10");
        assert_eq!(normal_code("<b>ABC</b>"), "abc");
        assert_eq!(normal_code("30&#36;OFF"), "30$off");
        assert_eq!(normal_code("ÉTÉ"), "été");
    }

    #[test]
    fn money_parses_and_formats() {
        assert_eq!(parse_money(&json!("10")), Some(1000));
        assert_eq!(parse_money(&json!(12.345)), Some(1235));
        assert_eq!(parse_money(&json!("")), Some(0));
        assert_eq!(parse_money(&json!("abc")), None);
        assert_eq!(money(1000), "10.00");
        assert_eq!(money(-5), "-0.05");
    }

    #[test]
    fn meta_semantics() {
        let mut next = 1;
        let mut list = Vec::new();
        apply_meta(&mut list, &json!([{"key": "a", "value": 1}]), &mut next).unwrap();
        apply_meta(&mut list, &json!([{"key": "a", "value": 2}]), &mut next).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].id, list[0].value.clone()), (1, json!(2)));
        apply_meta(
            &mut list,
            &json!([{"id": 1, "key": "b", "value": 3}, {"key": "c", "value": "x"}]),
            &mut next,
        )
        .unwrap();
        assert_eq!(list[0].key, "b");
        assert_eq!(list[1].id, 2);
        apply_meta(&mut list, &json!([{"key": "b", "value": null}]), &mut next).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].key, "c");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*@example.com", "a@example.com"));
        assert!(!wildcard_match("*@example.com", "a@example.org"));
        assert!(wildcard_match("a@b.c", "a@b.c"));
    }

    #[test]
    fn dates() {
        let t = parse_wc_date("2024-05-01T10:00:00").unwrap();
        assert_eq!(wc_time(&t), "2024-05-01T10:00:00");
        let t = parse_wc_date("2024-05-01T10:00:00+02:00").unwrap();
        assert_eq!(wc_time(&t), "2024-05-01T08:00:00");
        let t = parse_wc_date("2024-05-01T10:00:00.123Z").unwrap();
        assert_eq!(wc_time(&t), "2024-05-01T10:00:00");
        assert!(parse_wc_date("yesterday").is_none());
    }
}

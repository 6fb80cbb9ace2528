//! The HTTP side: authentication, routing, validation, pagination and the REST resources.

use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::auth::{Auth, authenticate, rawurlencode, wp_error, wp_error_with};
use super::events::php_json;
use super::model::{
    Address, Coupon, Customer, State, WEBHOOK_STATUSES, Webhook, apply_meta, normal_code, now_secs,
    parse_money, parse_wc_date, valid_topic,
};
use super::{Inner, REST_PREFIX};
use crate::sim::{RecordedRequest, SimHandler, SimResponse};

/// The simulator's [`SimHandler`].
pub(super) struct Handler {
    inner: Arc<Inner>,
}

impl Handler {
    pub(super) fn new(inner: Arc<Inner>) -> Handler {
        Handler { inner }
    }
}

impl SimHandler for Handler {
    fn handle(&self, req: &RecordedRequest) -> SimResponse {
        let base = self.inner.base_url();
        let mut state = self.inner.lock();
        let auth = authenticate(
            &self.inner.opts,
            &base,
            &mut state,
            req,
            Utc::now().timestamp(),
        );
        if let Auth::Failed(response) = auth {
            return response;
        }
        let Some(route) = Route::parse(req) else {
            return wp_error(
                404,
                "rest_no_route",
                "No route was found matching the URL and request method.",
            );
        };
        if matches!(auth, Auth::Anonymous) {
            return route.forbidden();
        }
        let ctx = Ctx { req, base: &base };
        let response = match Params::parse(req) {
            Ok(params) => route.dispatch(&ctx, &mut state, &params),
            Err(response) => response,
        };
        // Pings go out after the state is unlocked: the receiver may call the API meanwhile.
        let pings = std::mem::take(&mut state.ping_jobs);
        drop(state);
        for (webhook_id, url) in pings {
            self.inner.ping(webhook_id, url);
        }
        response
    }
}

/// What a handler needs besides the state.
struct Ctx<'a> {
    req: &'a RecordedRequest,
    base: &'a str,
}

// ----- responses -------------------------------------------------------------------------------

fn ok_json(status: u16, body: &Value) -> SimResponse {
    SimResponse {
        status,
        headers: vec![(
            "content-type".to_owned(),
            "application/json; charset=UTF-8".to_owned(),
        )],
        body: php_json(body).into_bytes(),
    }
}

/// `400 rest_invalid_param` as the WordPress schema validation answers.
fn invalid_param(name: &str, detail: &str) -> SimResponse {
    let mut params = Map::new();
    params.insert(name.to_owned(), Value::String(detail.to_owned()));
    wp_error_with(
        400,
        "rest_invalid_param",
        &format!("Invalid parameter(s): {name}"),
        json!({"status": 400, "params": params}),
    )
}

fn missing_params(names: &[&str]) -> SimResponse {
    wp_error_with(
        400,
        "rest_missing_callback_param",
        &format!("Missing parameter(s): {}", names.join(", ")),
        json!({"status": 400, "params": names}),
    )
}

// ----- routing ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Customers,
    Coupons,
    Orders,
    Webhooks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    List,
    Create,
    Get(u64),
    Update(u64),
    Delete(u64),
}

#[derive(Debug, Clone, Copy)]
struct Route {
    resource: Resource,
    op: Op,
}

impl Route {
    fn parse(req: &RecordedRequest) -> Option<Route> {
        let rest = req.path.strip_prefix(REST_PREFIX)?;
        let rest = rest.trim_end_matches('/');
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let resource = match segments.first().copied()? {
            "customers" => Resource::Customers,
            "coupons" => Resource::Coupons,
            "orders" => Resource::Orders,
            "webhooks" => Resource::Webhooks,
            _ => return None,
        };
        let method = req.method.as_str();
        let op = match (method, segments.len()) {
            ("GET", 1) => Op::List,
            ("POST", 1) => Op::Create,
            (_, 2) => {
                let id_text = segments[1];
                if id_text.is_empty() || !id_text.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let id = id_text.parse().unwrap_or(u64::MAX);
                match method {
                    "GET" => Op::Get(id),
                    "POST" | "PUT" | "PATCH" => Op::Update(id),
                    "DELETE" => Op::Delete(id),
                    _ => return None,
                }
            }
            _ => return None,
        };
        // Orders are read-only here: they are placed through `WooSim::place_order`.
        if resource == Resource::Orders && !matches!(op, Op::List | Op::Get(_)) {
            return None;
        }
        Some(Route { resource, op })
    }

    /// The permission check's answer to a request without credentials.
    fn forbidden(self) -> SimResponse {
        let (code, message) = match self.op {
            Op::List => (
                "woocommerce_rest_cannot_view",
                "Sorry, you cannot list resources.",
            ),
            Op::Get(_) => (
                "woocommerce_rest_cannot_view",
                "Sorry, you cannot view this resource.",
            ),
            Op::Create => (
                "woocommerce_rest_cannot_create",
                "Sorry, you are not allowed to create resources.",
            ),
            Op::Update(_) => (
                "woocommerce_rest_cannot_edit",
                "Sorry, you are not allowed to edit this resource.",
            ),
            Op::Delete(_) => (
                "woocommerce_rest_cannot_delete",
                "Sorry, you are not allowed to delete this resource.",
            ),
        };
        wp_error(401, code, message)
    }

    fn dispatch(self, ctx: &Ctx<'_>, state: &mut State, p: &Params) -> SimResponse {
        use Op::*;
        use Resource::*;
        match (self.resource, self.op) {
            (Customers, List) => list_customers(ctx, state, p),
            (Customers, Create) => create_customer(ctx, state, p),
            (Customers, Get(id)) => state
                .customers
                .get(&id)
                .map_or_else(customer_not_found, |c| ok_json(200, &c.to_json(ctx.base))),
            (Customers, Update(id)) => update_customer(ctx, state, p, id),
            (Customers, Delete(id)) => delete_customer(ctx, state, p, id),
            (Coupons, List) => list_coupons(ctx, state, p),
            (Coupons, Create) => create_coupon(ctx, state, p),
            (Coupons, Get(id)) => state.coupons.get(&id).map_or_else(
                || not_found("shop_coupon"),
                |c| ok_json(200, &c.to_json(ctx.base)),
            ),
            (Coupons, Update(id)) => update_coupon(ctx, state, p, id),
            (Coupons, Delete(id)) => delete_coupon(ctx, state, p, id),
            (Orders, List) => list_orders(ctx, state, p),
            (Orders, Get(id)) => state.orders.get(&id).map_or_else(
                || not_found("shop_order"),
                |o| ok_json(200, &o.to_json(ctx.base)),
            ),
            (Orders, _) => wp_error(
                404,
                "rest_no_route",
                "No route was found matching the URL and request method.",
            ),
            (Webhooks, List) => list_webhooks(ctx, state, p),
            (Webhooks, Create) => create_webhook(ctx, state, p),
            (Webhooks, Get(id)) => state.webhooks.get(&id).map_or_else(
                || {
                    wp_error(
                        400,
                        "woocommerce_rest_shop_webhook_invalid_id",
                        "ID is invalid.",
                    )
                },
                |w| ok_json(200, &w.to_json(ctx.base)),
            ),
            (Webhooks, Update(id)) => update_webhook(ctx, state, p, id),
            (Webhooks, Delete(id)) => delete_webhook(ctx, state, p, id),
        }
    }
}

fn not_found(post_type: &str) -> SimResponse {
    wp_error(
        404,
        &format!("woocommerce_rest_{post_type}_invalid_id"),
        "Invalid ID.",
    )
}

fn customer_not_found() -> SimResponse {
    wp_error(404, "woocommerce_rest_invalid_id", "Invalid resource ID.")
}

// ----- parameters ------------------------------------------------------------------------------

/// The request's parameters as `WP_REST_Request::get_param` sees them: the JSON body first,
/// then the query string.
struct Params {
    body: Map<String, Value>,
    query: Vec<(String, String)>,
}

impl Params {
    fn parse(req: &RecordedRequest) -> Result<Params, SimResponse> {
        let is_json = req
            .header("content-type")
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
        let body = if req.body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else if is_json || req.body.first() == Some(&b'{') {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(map)) => map,
                Ok(_) => Map::new(),
                Err(e) => {
                    return Err(wp_error_with(
                        400,
                        "rest_invalid_json",
                        "Invalid JSON body passed.",
                        json!({"status": 400, "json_error_code": 4, "json_error_message": e.to_string()}),
                    ));
                }
            }
        } else {
            req.form()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        };
        Ok(Params {
            body,
            query: req.query_pairs(),
        })
    }

    fn get(&self, name: &str) -> Option<Value> {
        if let Some(v) = self.body.get(name) {
            return Some(v.clone());
        }
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Value::String(v.clone()))
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn string(&self, name: &str) -> Result<Option<String>, SimResponse> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(invalid_param(
                name,
                &format!("{name} is not of type string."),
            )),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, SimResponse> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if matches!(s.as_str(), "true" | "1") => Ok(Some(true)),
            Some(Value::String(s)) if matches!(s.as_str(), "false" | "0" | "") => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
            Some(_) => Err(invalid_param(
                name,
                &format!("{name} is not of type boolean."),
            )),
        }
    }

    /// An integer parameter; `Ok(None)` when absent (or null when `nullable`).
    fn integer(&self, name: &str, nullable: bool) -> Result<Option<u64>, SimResponse> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Null) if nullable => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
                Ok(s.trim().parse::<u64>().ok())
            }
            Some(Value::String(s)) if nullable && s.is_empty() => Ok(None),
            Some(_) => Err(invalid_param(
                name,
                &format!("{name} is not of type integer."),
            )),
        }
    }

    fn force(&self) -> Result<bool, SimResponse> {
        Ok(self.boolean("force")?.unwrap_or(false))
    }
}

/// `page` and `per_page` with WordPress's validation.
struct Page {
    page: usize,
    per_page: usize,
}

impl Page {
    fn parse(p: &Params) -> Result<Page, SimResponse> {
        let number = |name: &str, default: usize| -> Result<i64, SimResponse> {
            match p.get(name) {
                None => Ok(default as i64),
                Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
                Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                    Ok(s.trim().parse().unwrap_or(0))
                }
                Some(_) => Err(invalid_param(
                    name,
                    &format!("{name} is not of type integer."),
                )),
            }
        };
        let page = number("page", 1)?;
        if page < 1 {
            return Err(invalid_param(
                "page",
                "page must be greater than or equal to 1",
            ));
        }
        let per_page = number("per_page", 10)?;
        if !(1..=100).contains(&per_page) {
            return Err(invalid_param(
                "per_page",
                "per_page must be between 1 (inclusive) and 100 (inclusive)",
            ));
        }
        Ok(Page {
            page: usize::try_from(page).unwrap_or(usize::MAX),
            per_page: usize::try_from(per_page).unwrap_or(100),
        })
    }
}

/// One page of `items` with `X-WP-Total`, `X-WP-TotalPages` and `Link` (`prev`/`next`).
fn paginate(ctx: &Ctx<'_>, collection: &str, page: &Page, items: Vec<Value>) -> SimResponse {
    let total = items.len();
    let pages = total.div_ceil(page.per_page);
    let start = (page.page - 1).saturating_mul(page.per_page);
    let slice: Vec<Value> = items.into_iter().skip(start).take(page.per_page).collect();
    let mut response = ok_json(200, &Value::Array(slice))
        .with_header("X-WP-Total", total.to_string())
        .with_header("X-WP-TotalPages", pages.to_string());
    let link_to = |n: usize| {
        let mut pairs: Vec<(String, String)> = ctx
            .req
            .query_pairs()
            .into_iter()
            .filter(|(k, _)| k != "page")
            .collect();
        pairs.push(("page".to_owned(), n.to_string()));
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", rawurlencode(k), rawurlencode(v)))
            .collect();
        format!("{}{REST_PREFIX}/{collection}?{}", ctx.base, query.join("&"))
    };
    let mut links = Vec::new();
    if page.page > 1 {
        links.push(format!(
            "<{}>; rel=\"prev\"",
            link_to((page.page - 1).min(pages.max(1)))
        ));
    }
    if pages > page.page {
        links.push(format!("<{}>; rel=\"next\"", link_to(page.page + 1)));
    }
    if !links.is_empty() {
        response = response.with_header("Link", links.join(", "));
    }
    response
}

/// `order` (`asc`/`desc`) with a default.
fn sort_order(p: &Params, default: &str) -> Result<bool, SimResponse> {
    match p.string("order")?.as_deref().unwrap_or(default) {
        "asc" => Ok(true),
        "desc" => Ok(false),
        _ => Err(invalid_param("order", "order is not one of asc, desc.")),
    }
}

fn directed(ord: Ordering, asc: bool) -> Ordering {
    if asc { ord } else { ord.reverse() }
}

fn date_param(p: &Params, name: &str) -> Result<Option<DateTime<Utc>>, SimResponse> {
    match p.string(name)? {
        None => Ok(None),
        Some(s) => parse_wc_date(&s)
            .map(Some)
            .ok_or_else(|| invalid_param(name, "Invalid date.")),
    }
}

// ----- customers -------------------------------------------------------------------------------

fn list_customers(ctx: &Ctx<'_>, state: &State, p: &Params) -> SimResponse {
    let page = match Page::parse(p) {
        Ok(page) => page,
        Err(e) => return e,
    };
    let result = (|| {
        let email = p.string("email")?;
        let search = p.string("search")?.map(|s| s.to_lowercase());
        let asc = sort_order(p, "asc")?;
        let orderby = p.string("orderby")?.unwrap_or_else(|| "name".to_owned());
        if !matches!(
            orderby.as_str(),
            "id" | "include" | "name" | "registered_date"
        ) {
            return Err(invalid_param(
                "orderby",
                "orderby is not one of id, include, name, and registered_date.",
            ));
        }
        let mut customers: Vec<&Customer> = state
            .customers
            .values()
            .filter(|c| {
                email
                    .as_deref()
                    .is_none_or(|e| c.email.eq_ignore_ascii_case(e.trim()))
            })
            .filter(|c| {
                search.as_deref().is_none_or(|s| {
                    [&c.email, &c.username, &c.first_name, &c.last_name]
                        .iter()
                        .any(|f| f.to_lowercase().contains(s))
                })
            })
            .collect();
        customers.sort_by(|a, b| {
            let ord = match orderby.as_str() {
                "name" => a.username.cmp(&b.username).then(a.id.cmp(&b.id)),
                "registered_date" => a.date_created.cmp(&b.date_created).then(a.id.cmp(&b.id)),
                _ => a.id.cmp(&b.id),
            };
            directed(ord, asc)
        });
        Ok(customers.iter().map(|c| c.to_json(ctx.base)).collect())
    })();
    match result {
        Ok(items) => paginate(ctx, "customers", &page, items),
        Err(e) => e,
    }
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
        && !domain.contains('@')
}

/// `sanitize_user($name, true)`: ASCII letters, digits and ` _.-@` only.
fn sanitize_user(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | '-' | '@'))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// `wc_create_new_customer_username` for a customer created with an e-mail only: the local part
/// (the domain for `sales@`, `hello@`, `mail@`, `contact@`, `info@`), sanitised and lower-cased,
/// with a `-NNNN` suffix when taken.
fn username_from_email(state: &mut State, email: &str) -> String {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let part = if matches!(local, "sales" | "hello" | "mail" | "contact" | "info") {
        domain
    } else {
        local
    };
    let mut base = sanitize_user(part).to_lowercase();
    if base.is_empty() {
        base = "customer".to_owned();
    }
    let mut candidate = base.clone();
    for _ in 0..100 {
        if !state.customers.values().any(|c| c.username == candidate) {
            break;
        }
        candidate = format!("{base}-{}", state.random.chars(4, b"0123456789"));
    }
    candidate
}

/// Applies the writable customer fields shared by create and update.
fn apply_customer_fields(
    state: &mut State,
    c: &mut Customer,
    p: &Params,
) -> Result<(), SimResponse> {
    if let Some(v) = p.string("first_name")? {
        c.first_name = v;
    }
    if let Some(v) = p.string("last_name")? {
        c.last_name = v;
    }
    if let Some(v) = p.get("billing") {
        c.billing
            .merge(&v, "billing")
            .map_err(|e| invalid_param("billing", &e))?;
    }
    if let Some(v) = p.get("shipping") {
        c.shipping
            .merge(&v, "shipping")
            .map_err(|e| invalid_param("shipping", &e))?;
    }
    if let Some(v) = p.get("meta_data") {
        apply_meta(&mut c.meta, &v, &mut state.next_meta_id)
            .map_err(|e| invalid_param("meta_data", &e))?;
    }
    Ok(())
}

fn create_customer(ctx: &Ctx<'_>, state: &mut State, p: &Params) -> SimResponse {
    let result = (|| {
        if p.has("id") {
            return Err(wp_error(
                400,
                "woocommerce_rest_customer_exists",
                "Cannot create existing resource.",
            ));
        }
        let Some(email) = p.string("email")? else {
            return Err(missing_params(&["email"]));
        };
        let email = email.trim().to_owned();
        if !valid_email(&email) {
            return Err(wp_error(
                400,
                "registration-error-invalid-email",
                "Please provide a valid email address.",
            ));
        }
        if state.customer_id_by_email(&email).is_some() {
            return Err(wp_error(
                400,
                "registration-error-email-exists",
                "An account is already registered with your email address. <a href=\"#\" class=\"showlogin\">Please log in.</a>",
            ));
        }
        let username = match p.string("username")? {
            Some(u) if !u.trim().is_empty() => {
                let u = sanitize_user(&u);
                if u.is_empty() {
                    return Err(wp_error(
                        400,
                        "registration-error-invalid-username",
                        "Please enter a valid account username.",
                    ));
                }
                if state
                    .customers
                    .values()
                    .any(|c| c.username.eq_ignore_ascii_case(&u))
                {
                    return Err(wp_error(
                        400,
                        "registration-error-username-exists",
                        "An account is already registered with that username. Please choose another.",
                    ));
                }
                u
            }
            _ => username_from_email(state, &email),
        };
        let now = now_secs();
        let id = state.next_user_id;
        let mut customer = Customer {
            id,
            email,
            first_name: String::new(),
            last_name: String::new(),
            username,
            billing: Address::billing(),
            shipping: Address::shipping(),
            is_paying_customer: false,
            meta: Vec::new(),
            date_created: now,
            date_modified: now,
        };
        apply_customer_fields(state, &mut customer, p)?;
        state.next_user_id += 1;
        let body = customer.to_json(ctx.base);
        state.customers.insert(id, customer);
        state.fire("customer", "created", id);
        Ok(ok_json(201, &body).with_header(
            "Location",
            format!("{}{REST_PREFIX}/customers/{id}", ctx.base),
        ))
    })();
    result.unwrap_or_else(|e| e)
}

fn update_customer(ctx: &Ctx<'_>, state: &mut State, p: &Params, id: u64) -> SimResponse {
    let result = (|| {
        let Some(mut customer) = state.customers.get(&id).cloned() else {
            return Err(customer_not_found());
        };
        if let Some(u) = p.string("username")? {
            if u != customer.username {
                return Err(wp_error(
                    400,
                    "woocommerce_rest_customer_invalid_argument",
                    "Username isn't editable.",
                ));
            }
        }
        if let Some(email) = p.string("email")? {
            let email = email.trim().to_owned();
            if !valid_email(&email) {
                return Err(wp_error(
                    400,
                    "woocommerce_rest_invalid_email",
                    "Invalid email address.",
                ));
            }
            if state
                .customer_id_by_email(&email)
                .is_some_and(|other| other != id)
            {
                return Err(wp_error(
                    400,
                    "existing_user_email",
                    "Sorry, that email address is already used!",
                ));
            }
            customer.email = email;
        }
        apply_customer_fields(state, &mut customer, p)?;
        customer.date_modified = now_secs();
        let body = customer.to_json(ctx.base);
        state.customers.insert(id, customer);
        state.fire("customer", "updated", id);
        Ok(ok_json(200, &body))
    })();
    result.unwrap_or_else(|e| e)
}

fn delete_customer(ctx: &Ctx<'_>, state: &mut State, p: &Params, id: u64) -> SimResponse {
    let force = match p.force() {
        Ok(f) => f,
        Err(e) => return e,
    };
    if !force {
        return wp_error(
            501,
            "woocommerce_rest_trash_not_supported",
            "Customers do not support trashing.",
        );
    }
    let Some(customer) = state.customers.remove(&id) else {
        return customer_not_found();
    };
    state.fire("customer", "deleted", id);
    ok_json(200, &customer.to_json(ctx.base))
}

// ----- coupons ---------------------------------------------------------------------------------

fn list_coupons(ctx: &Ctx<'_>, state: &State, p: &Params) -> SimResponse {
    let page = match Page::parse(p) {
        Ok(page) => page,
        Err(e) => return e,
    };
    let result = (|| {
        let code = p.string("code")?.map(|c| normal_code(&c));
        let search = p.string("search")?.map(|s| s.to_lowercase());
        let asc = sort_order(p, "desc")?;
        let orderby = p.string("orderby")?.unwrap_or_else(|| "date".to_owned());
        if !matches!(
            orderby.as_str(),
            "date" | "id" | "include" | "title" | "slug" | "modified"
        ) {
            return Err(invalid_param(
                "orderby",
                "orderby is not one of date, id, include, title, slug, and modified.",
            ));
        }
        let mut coupons: Vec<&Coupon> = state
            .coupons
            .values()
            .filter(|c| !c.trashed)
            .filter(|c| code.as_deref().is_none_or(|code| c.code == code))
            .filter(|c| {
                search
                    .as_deref()
                    .is_none_or(|s| c.code.contains(s) || c.description.to_lowercase().contains(s))
            })
            .collect();
        coupons.sort_by(|a, b| {
            let ord = match orderby.as_str() {
                "date" => a.date_created.cmp(&b.date_created),
                "modified" => a.date_modified.cmp(&b.date_modified),
                "title" | "slug" => a.code.cmp(&b.code),
                _ => Ordering::Equal,
            }
            .then(a.id.cmp(&b.id));
            directed(ord, asc)
        });
        Ok(coupons.iter().map(|c| c.to_json(ctx.base)).collect())
    })();
    match result {
        Ok(items) => paginate(ctx, "coupons", &page, items),
        Err(e) => e,
    }
}

fn id_list(p: &Params, name: &str) -> Result<Option<Vec<Value>>, SimResponse> {
    match p.get(name) {
        None => Ok(None),
        Some(Value::Array(items)) if items.iter().all(|v| v.as_u64().is_some()) => Ok(Some(items)),
        Some(_) => Err(invalid_param(
            name,
            &format!("{name}[0] is not of type integer."),
        )),
    }
}

fn money_param(p: &Params, name: &str) -> Result<Option<i64>, SimResponse> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => parse_money(&v)
            .map(Some)
            .ok_or_else(|| invalid_param(name, &format!("{name} is not of type string."))),
    }
}

/// Applies the writable coupon fields (everything but `code`).
fn apply_coupon_fields(state: &mut State, c: &mut Coupon, p: &Params) -> Result<(), SimResponse> {
    if let Some(t) = p.string("discount_type")? {
        if !matches!(t.as_str(), "percent" | "fixed_cart" | "fixed_product") {
            return Err(invalid_param(
                "discount_type",
                "discount_type is not one of percent, fixed_cart, and fixed_product.",
            ));
        }
        c.discount_type = t;
    }
    if let Some(v) = money_param(p, "amount")? {
        c.amount = v;
    }
    if let Some(v) = money_param(p, "minimum_amount")? {
        c.minimum_amount = v;
    }
    if let Some(v) = money_param(p, "maximum_amount")? {
        c.maximum_amount = v;
    }
    if let Some(v) = p.string("description")? {
        c.description = v;
    }
    for (name, field) in [
        ("individual_use", &mut c.individual_use),
        ("free_shipping", &mut c.free_shipping),
        ("exclude_sale_items", &mut c.exclude_sale_items),
    ] {
        if let Some(v) = p.boolean(name)? {
            *field = v;
        }
    }
    for (name, field) in [
        ("usage_limit", &mut c.usage_limit),
        ("usage_limit_per_user", &mut c.usage_limit_per_user),
        ("limit_usage_to_x_items", &mut c.limit_usage_to_x_items),
    ] {
        if p.has(name) {
            // 0 means "no limit" in WooCommerce and reads back as null.
            *field = p.integer(name, true)?.filter(|n| *n > 0);
        }
    }
    for (name, field) in [
        ("product_ids", &mut c.product_ids),
        ("excluded_product_ids", &mut c.excluded_product_ids),
        ("product_categories", &mut c.product_categories),
        (
            "excluded_product_categories",
            &mut c.excluded_product_categories,
        ),
    ] {
        if let Some(v) = id_list(p, name)? {
            *field = v;
        }
    }
    if let Some(v) = p.get("email_restrictions") {
        let Some(items) = v.as_array() else {
            return Err(invalid_param(
                "email_restrictions",
                "email_restrictions is not of type array.",
            ));
        };
        let mut emails = Vec::new();
        for item in items {
            let Some(s) = item.as_str() else {
                return Err(invalid_param(
                    "email_restrictions",
                    "email_restrictions[0] is not of type string.",
                ));
            };
            let s = s.trim().to_lowercase();
            if !s.is_empty() && !emails.contains(&s) {
                emails.push(s);
            }
        }
        c.email_restrictions = emails;
    }
    for name in ["date_expires", "date_expires_gmt"] {
        match p.get(name) {
            None => {}
            Some(Value::Null) => c.date_expires = None,
            Some(Value::String(s)) if s.is_empty() => c.date_expires = None,
            Some(Value::String(s)) => {
                c.date_expires =
                    Some(parse_wc_date(&s).ok_or_else(|| invalid_param(name, "Invalid date."))?);
            }
            Some(_) => {
                return Err(invalid_param(
                    name,
                    &format!("{name} is not of type string."),
                ));
            }
        }
    }
    if let Some(v) = p.get("meta_data") {
        apply_meta(&mut c.meta, &v, &mut state.next_meta_id)
            .map_err(|e| invalid_param("meta_data", &e))?;
    }
    Ok(())
}

fn code_exists_error() -> SimResponse {
    wp_error(
        400,
        "woocommerce_rest_coupon_code_already_exists",
        "The coupon code already exists",
    )
}

fn create_coupon(ctx: &Ctx<'_>, state: &mut State, p: &Params) -> SimResponse {
    let result = (|| {
        if p.has("id") {
            return Err(wp_error(
                400,
                "woocommerce_rest_shop_coupon_exists",
                "Cannot create existing shop_coupon.",
            ));
        }
        let Some(code) = p.string("code")? else {
            return Err(missing_params(&["code"]));
        };
        let code = normal_code(&code);
        if code.is_empty() {
            return Err(wp_error(
                400,
                "woocommerce_rest_empty_coupon_code",
                "The coupon code cannot be empty.",
            ));
        }
        if state.coupon_id_by_code(&code).is_some() {
            return Err(code_exists_error());
        }
        let now = now_secs();
        let mut coupon = Coupon {
            id: 0,
            code,
            amount: 0,
            discount_type: "fixed_cart".to_owned(),
            description: String::new(),
            date_expires: None,
            usage_count: 0,
            individual_use: false,
            product_ids: Vec::new(),
            excluded_product_ids: Vec::new(),
            usage_limit: None,
            usage_limit_per_user: None,
            limit_usage_to_x_items: None,
            free_shipping: false,
            product_categories: Vec::new(),
            excluded_product_categories: Vec::new(),
            exclude_sale_items: false,
            minimum_amount: 0,
            maximum_amount: 0,
            email_restrictions: Vec::new(),
            used_by: Vec::new(),
            meta: Vec::new(),
            date_created: now,
            date_modified: now,
            trashed: false,
        };
        apply_coupon_fields(state, &mut coupon, p)?;
        let id = state.post_id();
        coupon.id = id;
        let body = coupon.to_json(ctx.base);
        state.coupons.insert(id, coupon);
        state.fire("coupon", "created", id);
        Ok(ok_json(201, &body).with_header(
            "Location",
            format!("{}{REST_PREFIX}/coupons/{id}", ctx.base),
        ))
    })();
    result.unwrap_or_else(|e| e)
}

fn update_coupon(ctx: &Ctx<'_>, state: &mut State, p: &Params, id: u64) -> SimResponse {
    let result = (|| {
        let Some(mut coupon) = state.coupons.get(&id).cloned() else {
            return Err(not_found("shop_coupon"));
        };
        if let Some(code) = p.string("code")? {
            let code = normal_code(&code);
            if code.is_empty() {
                return Err(wp_error(
                    400,
                    "woocommerce_rest_empty_coupon_code",
                    "The coupon code cannot be empty.",
                ));
            }
            if state
                .coupon_id_by_code(&code)
                .is_some_and(|other| other != id)
            {
                return Err(code_exists_error());
            }
            coupon.code = code;
        }
        apply_coupon_fields(state, &mut coupon, p)?;
        coupon.date_modified = now_secs();
        let body = coupon.to_json(ctx.base);
        state.coupons.insert(id, coupon);
        state.fire("coupon", "updated", id);
        Ok(ok_json(200, &body))
    })();
    result.unwrap_or_else(|e| e)
}

fn delete_coupon(ctx: &Ctx<'_>, state: &mut State, p: &Params, id: u64) -> SimResponse {
    let force = match p.force() {
        Ok(f) => f,
        Err(e) => return e,
    };
    let Some(coupon) = state.coupons.get_mut(&id) else {
        return not_found("shop_coupon");
    };
    if force {
        let coupon = state.coupons.remove(&id).map(|c| c.to_json(ctx.base));
        state.fire("coupon", "deleted", id);
        return ok_json(200, &coupon.unwrap_or(Value::Null));
    }
    if coupon.trashed {
        return wp_error(
            410,
            "woocommerce_rest_already_trashed",
            &format!("The coupon with ID {id} has already been deleted."),
        );
    }
    coupon.trashed = true;
    coupon.date_modified = now_secs();
    let body = coupon.to_json(ctx.base);
    state.fire("coupon", "deleted", id);
    ok_json(200, &body)
}

// ----- orders ----------------------------------------------------------------------------------

fn list_orders(ctx: &Ctx<'_>, state: &State, p: &Params) -> SimResponse {
    let page = match Page::parse(p) {
        Ok(page) => page,
        Err(e) => return e,
    };
    let result = (|| {
        let statuses: Vec<String> = match p.get("status") {
            None => vec!["any".to_owned()],
            Some(Value::String(s)) => s.split(',').map(|s| s.trim().to_owned()).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(_) => return Err(invalid_param("status", "status is not of type array.")),
        };
        for s in &statuses {
            if s != "any" && !super::model::ORDER_STATUSES.contains(&s.as_str()) {
                return Err(invalid_param(
                    "status",
                    &format!(
                        "status[0] is not one of any, {}.",
                        super::model::ORDER_STATUSES.join(", ")
                    ),
                ));
            }
        }
        let customer = p.integer("customer", false)?;
        let modified_after = date_param(p, "modified_after")?;
        let modified_before = date_param(p, "modified_before")?;
        let after = date_param(p, "after")?;
        let before = date_param(p, "before")?;
        let asc = sort_order(p, "desc")?;
        let orderby = p.string("orderby")?.unwrap_or_else(|| "date".to_owned());
        if !matches!(
            orderby.as_str(),
            "date" | "id" | "include" | "title" | "slug" | "modified"
        ) {
            return Err(invalid_param(
                "orderby",
                "orderby is not one of date, id, include, title, slug, and modified.",
            ));
        }
        let mut orders: Vec<_> = state
            .orders
            .values()
            .filter(|o| {
                statuses.iter().any(|s| {
                    if s == "any" {
                        o.status != "trash"
                    } else {
                        *s == o.status
                    }
                })
            })
            .filter(|o| customer.is_none_or(|c| o.customer_id == c))
            .filter(|o| modified_after.is_none_or(|t| o.date_modified > t))
            .filter(|o| modified_before.is_none_or(|t| o.date_modified < t))
            .filter(|o| after.is_none_or(|t| o.date_created > t))
            .filter(|o| before.is_none_or(|t| o.date_created < t))
            .collect();
        orders.sort_by(|a, b| {
            let ord = match orderby.as_str() {
                "date" => a.date_created.cmp(&b.date_created),
                "modified" => a.date_modified.cmp(&b.date_modified),
                _ => Ordering::Equal,
            }
            .then(a.id.cmp(&b.id));
            directed(ord, asc)
        });
        Ok(orders.iter().map(|o| o.to_json(ctx.base)).collect())
    })();
    match result {
        Ok(items) => paginate(ctx, "orders", &page, items),
        Err(e) => e,
    }
}

// ----- webhooks --------------------------------------------------------------------------------

fn list_webhooks(ctx: &Ctx<'_>, state: &State, p: &Params) -> SimResponse {
    let page = match Page::parse(p) {
        Ok(page) => page,
        Err(e) => return e,
    };
    let result = (|| {
        let status = p.string("status")?.unwrap_or_else(|| "all".to_owned());
        if status != "all" && !WEBHOOK_STATUSES.contains(&status.as_str()) {
            return Err(invalid_param(
                "status",
                "status is not one of all, active, paused, and disabled.",
            ));
        }
        let asc = sort_order(p, "desc")?;
        let mut hooks: Vec<&Webhook> = state
            .webhooks
            .values()
            .filter(|w| status == "all" || w.status == status)
            .collect();
        hooks.sort_by(|a, b| {
            directed(
                a.date_created.cmp(&b.date_created).then(a.id.cmp(&b.id)),
                asc,
            )
        });
        Ok(hooks.iter().map(|w| w.to_json(ctx.base)).collect())
    })();
    match result {
        Ok(items) => paginate(ctx, "webhooks", &page, items),
        Err(e) => e,
    }
}

fn status_param(p: &Params) -> Result<Option<String>, SimResponse> {
    match p.string("status")? {
        None => Ok(None),
        Some(s) if WEBHOOK_STATUSES.contains(&s.as_str()) => Ok(Some(s)),
        Some(_) => Err(invalid_param(
            "status",
            "status is not one of active, paused, and disabled.",
        )),
    }
}

fn invalid_topic() -> SimResponse {
    invalid_param(
        "topic",
        "topic is not one of coupon|customer|order|product . created|updated|deleted|restored.",
    )
}

fn check_delivery_url(url: &str) -> Result<(), SimResponse> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    if rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
        Ok(())
    } else {
        Err(wp_error(
            400,
            "woocommerce_rest_shop_webhook_invalid_delivery_url",
            "Webhook delivery URL must be a valid URL starting with http:// or https://.",
        ))
    }
}

fn create_webhook(ctx: &Ctx<'_>, state: &mut State, p: &Params) -> SimResponse {
    let result = (|| {
        let missing: Vec<&str> = ["topic", "delivery_url"]
            .into_iter()
            .filter(|n| !p.has(n))
            .collect();
        if !missing.is_empty() {
            return Err(missing_params(&missing));
        }
        let status = status_param(p)?.unwrap_or_else(|| "active".to_owned());
        let topic = p.string("topic")?.unwrap_or_default().trim().to_lowercase();
        if !valid_topic(&topic) {
            return Err(invalid_topic());
        }
        let delivery_url = p
            .string("delivery_url")?
            .unwrap_or_default()
            .trim()
            .to_owned();
        check_delivery_url(&delivery_url)?;
        let api_version = p
            .string("api_version")?
            .unwrap_or_else(|| "wp_api_v3".to_owned());
        if !matches!(
            api_version.as_str(),
            "wp_api_v1" | "wp_api_v2" | "wp_api_v3" | "legacy_v3"
        ) {
            return Err(invalid_param(
                "api_version",
                "api_version is not one of wp_api_v1, wp_api_v2, wp_api_v3, and legacy_v3.",
            ));
        }
        let now = now_secs();
        let name = match p.string("name")? {
            Some(n) if !n.is_empty() => n,
            _ => format!("Webhook created on {}", now.format("%b %d, %Y @ %I:%M %p")),
        };
        let secret = match p.string("secret")? {
            Some(s) if !s.is_empty() => s,
            _ => state.random.chars(
                50,
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#$%^&*()-_ []{}<>~`+=,.;:/?|",
            ),
        };
        let id = state.next_webhook_id;
        state.next_webhook_id += 1;
        let hook = Webhook {
            id,
            name,
            status,
            topic,
            delivery_url,
            secret,
            api_version,
            failure_count: 0,
            date_created: now,
            date_modified: now,
        };
        let body = hook.to_json(ctx.base);
        let ping = (hook.status == "active").then(|| hook.delivery_url.clone());
        state.webhooks.insert(id, hook);
        if let Some(url) = ping {
            state.ping_jobs.push((id, url));
        }
        Ok(ok_json(201, &body).with_header(
            "Location",
            format!("{}{REST_PREFIX}/webhooks/{id}", ctx.base),
        ))
    })();
    result.unwrap_or_else(|e| e)
}

fn update_webhook(ctx: &Ctx<'_>, state: &mut State, p: &Params, id: u64) -> SimResponse {
    let result = (|| {
        let Some(mut hook) = state.webhooks.get(&id).cloned() else {
            return Err(wp_error(
                400,
                "woocommerce_rest_shop_webhook_invalid_id",
                "ID is invalid.",
            ));
        };
        let status = status_param(p)?;
        if let Some(topic) = p.string("topic")? {
            if !topic.is_empty() {
                let topic = topic.trim().to_lowercase();
                if !valid_topic(&topic) {
                    return Err(invalid_topic());
                }
                hook.topic = topic;
            }
        }
        if let Some(url) = p.string("delivery_url")? {
            if !url.is_empty() {
                check_delivery_url(url.trim())?;
                url.trim().clone_into(&mut hook.delivery_url);
            }
        }
        if let Some(secret) = p.string("secret")? {
            if !secret.is_empty() {
                hook.secret = secret;
            }
        }
        if let Some(name) = p.string("name")? {
            if !name.is_empty() {
                hook.name = name;
            }
        }
        let mut ping = None;
        if let Some(status) = status {
            if status == "active" {
                hook.failure_count = 0;
                if hook.status != "active" {
                    ping = Some(hook.delivery_url.clone());
                }
            }
            hook.status = status;
        }
        hook.date_modified = now_secs();
        let body = hook.to_json(ctx.base);
        state.webhooks.insert(id, hook);
        if let Some(url) = ping {
            state.ping_jobs.push((id, url));
        }
        Ok(ok_json(200, &body))
    })();
    result.unwrap_or_else(|e| e)
}

fn delete_webhook(ctx: &Ctx<'_>, state: &mut State, p: &Params, id: u64) -> SimResponse {
    let force = match p.force() {
        Ok(f) => f,
        Err(e) => return e,
    };
    if !force {
        return wp_error(
            501,
            "woocommerce_rest_trash_not_supported",
            "Webhooks do not support trashing.",
        );
    }
    match state.webhooks.remove(&id) {
        Some(hook) => ok_json(200, &hook.to_json(ctx.base)),
        None => wp_error(
            404,
            "woocommerce_rest_shop_webhook_invalid_id",
            "Invalid ID.",
        ),
    }
}

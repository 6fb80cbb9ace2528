//! Webhook deliveries and pings: payloads built at send time, PHP-style JSON, signatures.

use refsync_core::WebhookRequest;
use serde_json::{Value, json};

use super::model::{State, WC_VERSION, WP_VERSION, specialchars_decode};
use super::{OutgoingWebhook, WooSimOptions};

/// The `User-Agent` of every request the store makes.
pub(super) fn user_agent() -> String {
    format!("WooCommerce/{WC_VERSION} Hookshot (WordPress/{WP_VERSION})")
}

/// Serialises `v` as PHP's `wp_json_encode` (default `json_encode` flags) does: no spaces, `/`
/// escaped as `\/`, every non-ASCII character as a lower-case `\uXXXX` escape (UTF-16 surrogate
/// pairs beyond the BMP), control characters as `\b \f \n \r \t` or `\u00XX`.
pub(super) fn php_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_value(out, value);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The REST JSON of resource `resource` #`id` as `wc()->api->get_endpoint_data` returns it at
/// send time: the object, or the REST error the endpoint gives for a missing one.
fn endpoint_data(state: &State, base: &str, resource: &str, id: u64) -> Value {
    let found = match resource {
        "order" => state.orders.get(&id).map(|o| o.to_json(base)),
        "coupon" => state.coupons.get(&id).map(|c| c.to_json(base)),
        "customer" => state.customers.get(&id).map(|c| c.to_json(base)),
        _ => None,
    };
    found.unwrap_or_else(|| match resource {
        "customer" => json!({
            "code": "woocommerce_rest_invalid_id",
            "message": "Invalid resource ID.",
            "data": {"status": 404},
        }),
        other => json!({
            "code": format!("woocommerce_rest_shop_{other}_invalid_id"),
            "message": "Invalid ID.",
            "data": {"status": 404},
        }),
    })
}

/// Takes every pending delivery off the queue and builds it from the current state. Deliveries
/// of webhooks deleted since they were queued are dropped; webhooks disabled or paused since
/// still get them (the scheduled action runs regardless, as in WooCommerce).
pub(super) fn take_outbox(
    state: &mut State,
    opts: &WooSimOptions,
    base: &str,
) -> Vec<OutgoingWebhook> {
    let queue = std::mem::take(&mut state.queue);
    let mut out = Vec::with_capacity(queue.len());
    for pending in queue {
        let Some(hook) = state.webhooks.get(&pending.webhook_id).cloned() else {
            continue;
        };
        let resource = hook.resource().to_owned();
        let payload = if hook.event() == "deleted" {
            json!({"id": pending.resource_id})
        } else {
            let data = endpoint_data(state, base, &resource, pending.resource_id);
            if hook.api_version == "legacy_v3" {
                let mut wrapped = serde_json::Map::new();
                wrapped.insert(resource.clone(), data);
                Value::Object(wrapped)
            } else {
                data
            }
        };
        let body = php_json(&payload).trim().as_bytes().to_vec();
        let signature = refsync_http::signature::hmac_sha256_base64(
            specialchars_decode(&hook.secret).as_bytes(),
            &body,
        );
        let delivery_id = state.random.hex(32);
        let headers = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("User-Agent".to_owned(), user_agent()),
            ("X-WC-Webhook-Source".to_owned(), opts.site_url.clone()),
            ("X-WC-Webhook-Topic".to_owned(), hook.topic.clone()),
            ("X-WC-Webhook-Resource".to_owned(), resource),
            ("X-WC-Webhook-Event".to_owned(), hook.event().to_owned()),
            ("X-WC-Webhook-Signature".to_owned(), signature),
            ("X-WC-Webhook-ID".to_owned(), hook.id.to_string()),
            ("X-WC-Webhook-Delivery-ID".to_owned(), delivery_id),
        ];
        out.push(OutgoingWebhook {
            webhook_id: hook.id,
            url: hook.delivery_url.clone(),
            request: WebhookRequest {
                method: "POST".to_owned(),
                url: hook.delivery_url.clone(),
                headers,
                body: body.clone(),
            },
            body,
        });
    }
    out
}

/// `w` with a fresh `X-WC-Webhook-Delivery-ID`.
pub(super) fn with_new_delivery_id(state: &mut State, w: &OutgoingWebhook) -> OutgoingWebhook {
    let mut w = w.clone();
    let id = state.random.hex(32);
    for (name, value) in &mut w.request.headers {
        if name.eq_ignore_ascii_case("x-wc-webhook-delivery-id") {
            value.clone_from(&id);
        }
    }
    w
}

/// Records the outcome of a delivery as `WC_Webhook::log_delivery` does: 200..=302 resets the
/// failure count; anything else (or no answer) is a failure: `if failures > max { disabled }
/// else { failures += 1 }`.
pub(super) fn record_delivery(state: &mut State, max: u32, webhook_id: u64, status: Option<u16>) {
    let Some(hook) = state.webhooks.get_mut(&webhook_id) else {
        return;
    };
    if status.is_some_and(|s| (200..303).contains(&s)) {
        hook.failure_count = 0;
    } else if hook.failure_count > max {
        hook.status = "disabled".to_owned();
        hook.date_modified = super::model::now_secs();
    } else {
        hook.failure_count += 1;
    }
}

/// The ping `WC_Webhook::deliver_ping` sends: form body `webhook_id=<id>`, no signature.
pub(super) fn ping_request(webhook_id: u64, url: &str) -> WebhookRequest {
    WebhookRequest {
        method: "POST".to_owned(),
        url: url.to_owned(),
        headers: vec![
            (
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("User-Agent".to_owned(), user_agent()),
        ],
        body: format!("webhook_id={webhook_id}").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_json_escapes_like_wp_json_encode() {
        let v = json!({"href": "https://x.test/a/b", "name": "Café – ☃ 😀", "q": "a\"b\\c\n\u{1}"});
        assert_eq!(
            php_json(&v),
            r#"{"href":"https:\/\/x.test\/a\/b","name":"Caf\u00e9 \u2013 \u2603 \ud83d\ude00","q":"a\"b\\c\n\u0001"}"#
        );
        // Still JSON that parses to the same value.
        let back: Value = serde_json::from_str(&php_json(&v)).unwrap();
        assert_eq!(back, v);
        assert_eq!(php_json(&json!([1, 2.5, null, true])), "[1,2.5,null,true]");
    }
}

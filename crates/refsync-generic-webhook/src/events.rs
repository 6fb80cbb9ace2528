//! Verification and parsing of incoming webhooks: pure, synchronous, no I/O.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use refsync_core::{Change, CrmEvent, Error, ObjectKind, Result, Verification, WebhookRequest};
use refsync_http::{
    basic_auth_matches, check_timestamp, secrets_equal, standard_webhooks, verify_hmac_sha256,
};
use serde_json::Value;

use crate::NAME;
use crate::config::{
    BodyFormat, ChangeType, EventMapping, GenericWebhookConfig, InboundAuth, Source,
};

fn unauthorized(msg: impl Into<String>) -> Error {
    Error::unauthorized(msg)
        .with_connector(NAME)
        .with_operation("verify")
}

/// Checks the request's credentials per `config.auth`, at `now`.
pub fn verify(
    config: &GenericWebhookConfig,
    req: &WebhookRequest,
    now: DateTime<Utc>,
) -> Result<Verification> {
    match &config.auth {
        InboundAuth::Hmac {
            header,
            secret,
            encoding,
            prefix,
            timestamp_header,
            tolerance_secs,
        } => {
            let provided = req
                .header(header)
                .ok_or_else(|| unauthorized(format!("missing {header} header")))?;
            let provided = match prefix {
                Some(p) => provided
                    .strip_prefix(p.as_str())
                    .ok_or_else(|| unauthorized(format!("{header} does not start with {p:?}")))?,
                None => provided,
            };
            let signed: Vec<u8> = match timestamp_header {
                Some(th) => {
                    let ts = req
                        .header(th)
                        .ok_or_else(|| unauthorized(format!("missing {th} header")))?;
                    check_timestamp(ts, now, Duration::from_secs(*tolerance_secs))
                        .map_err(|e| unauthorized(e.message().to_owned()))?;
                    let mut m = format!("{ts}.").into_bytes();
                    m.extend_from_slice(&req.body);
                    m
                }
                None => req.body.clone(),
            };
            if verify_hmac_sha256(
                secret.expose().as_bytes(),
                &signed,
                provided.trim(),
                *encoding,
            ) {
                Ok(Verification::Verified {
                    scheme: "hmac-sha256".into(),
                })
            } else {
                Err(unauthorized(format!(
                    "{header} signature does not match the body"
                )))
            }
        }
        InboundAuth::StandardWebhooks {
            secret,
            tolerance_secs,
        } => {
            let get = |h: &str| {
                req.header(h)
                    .ok_or_else(|| unauthorized(format!("missing {h} header")))
            };
            let (id, ts, sig) = (
                get("webhook-id")?,
                get("webhook-timestamp")?,
                get("webhook-signature")?,
            );
            standard_webhooks::verify(
                secret.expose(),
                id,
                ts,
                &req.body,
                sig,
                now,
                Duration::from_secs(*tolerance_secs),
            )
            .map_err(|e| unauthorized(e.message().to_owned()))?;
            Ok(Verification::Verified {
                scheme: "standard-webhooks".into(),
            })
        }
        InboundAuth::Token {
            header,
            query,
            token,
        } => {
            let provided = match (header, query) {
                (Some(h), _) => {
                    let v = req
                        .header(h)
                        .ok_or_else(|| unauthorized(format!("missing {h} header")))?;
                    if h.eq_ignore_ascii_case("authorization") {
                        v.strip_prefix("Bearer ").unwrap_or(v)
                    } else {
                        v
                    }
                    .to_owned()
                }
                (None, Some(q)) => query_param(req, q)
                    .ok_or_else(|| unauthorized(format!("missing {q} query parameter")))?,
                (None, None) => {
                    return Err(unauthorized(
                        "token auth names neither a header nor a query parameter",
                    ));
                }
            };
            if secrets_equal(provided.trim().as_bytes(), token.expose().as_bytes()) {
                Ok(Verification::Verified {
                    scheme: "token".into(),
                })
            } else {
                Err(unauthorized("token does not match"))
            }
        }
        InboundAuth::Basic { user, password } => {
            if basic_auth_matches(req.header("authorization"), user, password.expose()) {
                Ok(Verification::Verified {
                    scheme: "basic".into(),
                })
            } else if req.header("authorization").is_none() {
                Err(unauthorized("missing Authorization header (basic auth)"))
            } else {
                Err(unauthorized("basic auth credentials do not match"))
            }
        }
        InboundAuth::None => Ok(Verification::Unverified {
            reason: "auth.type = \"none\" in the settings".into(),
        }),
    }
}

fn query_param(req: &WebhookRequest, name: &str) -> Option<String> {
    let q = req.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::validation(msg)
        .with_connector(NAME)
        .with_operation("parse")
}

/// The body as JSON: JSON bodies as they are, form bodies as a flat object of strings.
pub fn body_value(config: &GenericWebhookConfig, req: &WebhookRequest) -> Result<Value> {
    let is_form = match config.format {
        BodyFormat::Form => true,
        BodyFormat::Json => false,
        BodyFormat::Auto => req.header("content-type").is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        }),
    };
    if is_form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body)
            .map_err(|e| invalid(format!("body is not a valid form: {e}")))?;
        Ok(Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ))
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| invalid(format!("body is not valid JSON: {e}")))
    }
}

/// The text at `source` in `v`: strings as they are, numbers and booleans printed, empty strings,
/// nulls, arrays and objects as absent.
fn text(v: &Value, source: Option<&Source>) -> Option<String> {
    match source? {
        Source::Const { value } => Some(value.clone()),
        Source::Pointer(p) => match v.pointer(p)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        },
    }
}

fn timestamp(v: &Value, source: Option<&Source>) -> Option<DateTime<Utc>> {
    let t = text(v, source)?;
    if !t.is_empty() && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit()) {
        // Unix seconds, or milliseconds when larger than any date in seconds this century.
        let n: i64 = t.parse().ok()?;
        return if n > 100_000_000_000 {
            Utc.timestamp_millis_opt(n).single()
        } else {
            Utc.timestamp_opt(n, 0).single()
        };
    }
    DateTime::parse_from_rfc3339(&t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Turns a request into canonical events per `config.events`.
pub fn parse(config: &GenericWebhookConfig, req: &WebhookRequest) -> Result<Vec<CrmEvent>> {
    let Some(mapping) = &config.events else {
        return Err(invalid(
            "no [settings.events] mapping is configured: this instance does not receive webhooks",
        ));
    };
    let body = body_value(config, req)?;
    let items: Vec<&Value> = match &mapping.items {
        Some(p) => match body.pointer(p) {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(_) => return Err(invalid(format!("events.items {p}: not an array"))),
            None => return Err(invalid(format!("events.items {p}: not in the body"))),
        },
        None => vec![&body],
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let events = item_events(mapping, item).map_err(|e| {
            if mapping.items.is_some() {
                invalid(format!("item {i}: {}", e.message()))
            } else {
                e
            }
        })?;
        out.extend(events);
    }
    Ok(out)
}

/// A value that may have changed: `Some((from, to))` when it moved. With a `previous` pointer
/// configured and no previous value in the body, the value did not change, unless the object
/// is being created (vendors such as Pipedrive send only changed fields in `previous`).
fn moved(
    v: &Value,
    current: Option<String>,
    previous: Option<&Source>,
    creating: bool,
) -> Option<(Option<String>, String)> {
    let to = current?;
    let Some(previous) = previous else {
        return Some((None, to));
    };
    match text(v, Some(previous)) {
        Some(from) if from == to => None,
        Some(from) => Some((Some(from), to)),
        None if creating => Some((None, to)),
        None => None,
    }
}

fn item_events(m: &EventMapping, v: &Value) -> Result<Vec<CrmEvent>> {
    let need = |what: &str, s: &Source| {
        text(v, Some(s)).ok_or_else(|| {
            invalid(match s {
                Source::Pointer(p) => format!("events.{what}: nothing at {p} in the body"),
                Source::Const { .. } => format!("events.{what} is empty"),
            })
        })
    };
    let object_id = need("object_id", &m.object_id)?;
    let kind = ObjectKind::parse(&need("object_kind", &m.object_kind)?.to_ascii_lowercase());
    let get = |s: &Option<Source>| text(v, s.as_ref());
    // The vendor's event name, when mapped, decides the base change.
    let named = match &m.change {
        Some(src) => {
            let Some(name) = text(v, Some(src)) else {
                return Ok(Vec::new());
            };
            match m.change_types.get(&name) {
                Some(ChangeType::Ignore) => return Ok(Vec::new()),
                None if !m.change_types.is_empty() => return Ok(Vec::new()),
                other => other.copied(),
            }
        }
        None => None,
    };
    let missing = |what: &str| {
        invalid(format!(
            "this event needs events.{what}, and the body has none"
        ))
    };
    let stage_change = |creating: bool| {
        moved(v, get(&m.stage), m.previous_stage.as_ref(), creating).map(|(from, to)| {
            Change::StageChanged {
                pipeline: get(&m.pipeline),
                from,
                to,
            }
        })
    };
    let status_change = |creating: bool| {
        moved(
            v,
            get(&m.status).map(|s| s.to_ascii_lowercase()),
            m.previous_status.as_ref(),
            creating,
        )
        .map(|(from, to)| Change::StatusChanged {
            from: from.map(|f| f.to_ascii_lowercase()),
            to,
        })
    };
    let mut changes = Vec::new();
    match named {
        Some(ChangeType::Deleted) => changes.push(Change::Deleted),
        Some(ChangeType::StageChanged) => {
            changes.push(stage_change(true).ok_or_else(|| missing("stage"))?)
        }
        Some(ChangeType::StatusChanged) => {
            changes.push(status_change(true).ok_or_else(|| missing("status"))?)
        }
        Some(ChangeType::LeadConverted) => changes.push(Change::LeadConverted {
            lead_id: object_id.clone(),
            deal_id: get(&m.converted_deal_id),
        }),
        Some(ChangeType::CouponUsed) => changes.push(Change::CouponUsed {
            code: get(&m.coupon).ok_or_else(|| missing("coupon"))?,
            order_status: get(&m.status).map(|s| s.to_ascii_lowercase()),
        }),
        Some(ChangeType::Ignore) => return Ok(Vec::new()),
        base @ (None | Some(ChangeType::Created | ChangeType::Updated)) => {
            // The facts the body carries, each its own event; a create or update also reports
            // itself first.
            let creating = base == Some(ChangeType::Created);
            match base {
                Some(ChangeType::Created) => changes.push(Change::Created),
                Some(_) => changes.push(Change::Updated { fields: Vec::new() }),
                None => {}
            }
            if let Some(deal_id) = get(&m.converted_deal_id) {
                changes.push(Change::LeadConverted {
                    lead_id: object_id.clone(),
                    deal_id: Some(deal_id),
                });
            }
            if let Some(code) = get(&m.coupon) {
                changes.push(Change::CouponUsed {
                    code,
                    order_status: get(&m.status).map(|s| s.to_ascii_lowercase()),
                });
            }
            changes.extend(stage_change(creating));
            changes.extend(status_change(creating));
            if changes.is_empty() {
                changes.push(Change::Updated { fields: Vec::new() });
            }
        }
    }
    Ok(changes
        .into_iter()
        .map(|change| CrmEvent {
            delivery_id: get(&m.delivery_id),
            occurred_at: timestamp(v, m.occurred_at.as_ref()),
            referral_code: get(&m.referral_code),
            email: get(&m.email),
            account: get(&m.account),
            ..CrmEvent::new(NAME, kind.clone(), object_id.clone(), change)
        })
        .collect())
}

//! Verification and parsing of incoming webhooks: pure, synchronous, no I/O.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use refsync_core::{Change, CrmEvent, Error, ObjectKind, Result, Verification, WebhookRequest};
use refsync_http::{
    basic_auth_matches, check_timestamp, constant_time_eq, standard_webhooks, verify_hmac_sha256,
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
            if constant_time_eq(provided.trim().as_bytes(), token.expose().as_bytes()) {
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
    if let Some(Source::Pointer(p)) = source {
        if let Some(n) = v.pointer(p).and_then(Value::as_i64) {
            return if n > 100_000_000_000 {
                Utc.timestamp_millis_opt(n).single()
            } else {
                Utc.timestamp_opt(n, 0).single()
            };
        }
    }
    let t = text(v, source)?;
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
        if let Some(e) = event(mapping, item).map_err(|e| {
            if mapping.items.is_some() {
                invalid(format!("item {i}: {}", e.message()))
            } else {
                e
            }
        })? {
            out.push(e);
        }
    }
    Ok(out)
}

fn event(m: &EventMapping, v: &Value) -> Result<Option<CrmEvent>> {
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
    let change_type = match &m.change {
        Some(src) => {
            let Some(name) = text(v, Some(src)) else {
                return Ok(None);
            };
            match m.change_types.get(&name) {
                Some(ChangeType::Ignore) | None if !m.change_types.is_empty() => return Ok(None),
                Some(t) => Some(*t),
                None => None,
            }
        }
        None => None,
    };
    let derived = change_type.unwrap_or(if get(&m.coupon).is_some() {
        ChangeType::CouponUsed
    } else if get(&m.converted_deal_id).is_some() {
        ChangeType::LeadConverted
    } else if get(&m.stage).is_some() {
        ChangeType::StageChanged
    } else if get(&m.status).is_some() {
        ChangeType::StatusChanged
    } else {
        ChangeType::Updated
    });
    let missing = |what: &str| {
        invalid(format!(
            "a {derived:?} event needs events.{what}, and the body has none"
        ))
    };
    let change = match derived {
        ChangeType::Created => Change::Created,
        ChangeType::Updated => Change::Updated { fields: Vec::new() },
        ChangeType::Deleted => Change::Deleted,
        ChangeType::StageChanged => Change::StageChanged {
            pipeline: get(&m.pipeline),
            from: get(&m.previous_stage),
            to: get(&m.stage).ok_or_else(|| missing("stage"))?,
        },
        ChangeType::StatusChanged => Change::StatusChanged {
            from: get(&m.previous_status),
            to: get(&m.status)
                .ok_or_else(|| missing("status"))?
                .to_ascii_lowercase(),
        },
        ChangeType::LeadConverted => Change::LeadConverted {
            lead_id: object_id.clone(),
            deal_id: get(&m.converted_deal_id),
        },
        ChangeType::CouponUsed => Change::CouponUsed {
            code: get(&m.coupon).ok_or_else(|| missing("coupon"))?,
            order_status: get(&m.status).map(|s| s.to_ascii_lowercase()),
        },
        ChangeType::Ignore => return Ok(None),
    };
    Ok(Some(CrmEvent {
        delivery_id: get(&m.delivery_id),
        occurred_at: timestamp(v, m.occurred_at.as_ref()),
        referral_code: get(&m.referral_code),
        email: get(&m.email),
        account: get(&m.account),
        ..CrmEvent::new(NAME, kind, object_id, change)
    }))
}

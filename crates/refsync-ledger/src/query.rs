//! List queries: allow-listed filter fields, typed parameters, ordering and pagination, as
//! SQL that both backends run.

use refsync_core::Result;

use crate::db::{Arg, format_time};
use crate::model::{FilterOp, ListQuery, invalid};

/// How a field compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    Time,
}

/// A filterable, sortable field: its wire name, SQL expression and kind.
pub(crate) type Field = (&'static str, &'static str, Kind);

pub(crate) const USER_FIELDS: &[Field] = &[
    ("id", "u.id", Kind::Int),
    ("campaign_id", "u.campaign_id", Kind::Int),
    ("referrer_id", "u.referrer_id", Kind::Int),
    ("code", "u.code", Kind::Text),
    ("first_name", "u.first_name", Kind::Text),
    ("email", "u.email", Kind::Text),
    ("source", "u.source", Kind::Text),
    ("type", "u.user_type", Kind::Text),
    ("signed_up_at", "u.signed_up_at", Kind::Time),
    ("qualified_at", "u.qualified_at", Kind::Time),
    (
        "coupon",
        "(SELECT cp.code FROM coupons cp WHERE cp.user_id = u.id)",
        Kind::Text,
    ),
];

pub(crate) const REWARD_FIELDS: &[Field] = &[
    ("id", "r.id", Kind::Int),
    ("reward_id", "r.rule_id", Kind::Int),
    ("campaign_id", "r.campaign_id", Kind::Int),
    ("recipient_id", "r.recipient_id", Kind::Int),
    ("referral_id", "r.referral_id", Kind::Int),
    ("referrer_id", "r.referrer_id", Kind::Int),
    ("metric", "r.metric", Kind::Text),
    ("amount", "r.amount", Kind::Int),
    (
        "coupon",
        "(CASE WHEN r.metric = 'coupon' THEN r.value END)",
        Kind::Text,
    ),
    ("value", "r.value", Kind::Text),
    ("status", "r.status", Kind::Text),
    ("trigger", "r.trigger_event", Kind::Text),
    ("created_at", "r.created_at", Kind::Time),
    ("issued_at", "r.issued_at", Kind::Time),
    ("cancelled_at", "r.cancelled_at", Kind::Time),
];

/// The names of `fields`, for messages.
pub(crate) fn names(fields: &[Field]) -> String {
    fields.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
}

/// A `WHERE` clause being built, with its parameters.
pub(crate) struct Select {
    fields: &'static [Field],
    id_expr: &'static str,
    conditions: Vec<String>,
    pub(crate) args: Vec<Arg>,
}

impl Select {
    pub(crate) fn new(fields: &'static [Field], id_expr: &'static str) -> Self {
        Select {
            fields,
            id_expr,
            conditions: Vec::new(),
            args: Vec::new(),
        }
    }

    fn next_param(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Adds a condition; `{}` is replaced by the parameter placeholder.
    pub(crate) fn push_condition(&mut self, template: &str, arg: Arg) {
        let p = self.next_param(arg);
        self.conditions.push(template.replacen("{}", &p, 1));
    }

    /// Adds a condition with two placeholders taking the same value.
    pub(crate) fn push_condition2(&mut self, template: &str, arg: Arg) {
        let p1 = self.next_param(arg.clone());
        let p2 = self.next_param(arg);
        self.conditions
            .push(template.replacen("{}", &p1, 1).replacen("{}", &p2, 1));
    }

    /// Adds the filters of `list`; unknown fields, wrong operators and values are validation
    /// errors naming `filter[<field>][<op>]`.
    pub(crate) fn apply(&mut self, list: &ListQuery) -> Result<()> {
        check_order(self.fields, list)?;
        for f in &list.filters {
            let param = format!("filter[{}][{}]", f.field, f.op);
            let Some(&(_, expr, kind)) = self.fields.iter().find(|x| x.0 == f.field) else {
                return Err(invalid(
                    &param,
                    format!(
                        "cannot filter on {:?}; fields: {}",
                        f.field,
                        names(self.fields)
                    ),
                ));
            };
            if f.op == FilterOp::Equal && f.value.trim().eq_ignore_ascii_case("null") {
                self.conditions.push(format!("{expr} IS NULL"));
                continue;
            }
            let sql_op = match f.op {
                FilterOp::Equal => "=",
                FilterOp::Gt => ">",
                FilterOp::Lt => "<",
                FilterOp::Gte => ">=",
                FilterOp::Lte => "<=",
                FilterOp::Like => "LIKE",
            };
            match kind {
                Kind::Int => {
                    if f.op == FilterOp::Like {
                        return Err(invalid(&param, "like applies to text fields only"));
                    }
                    let v: i64 =
                        f.value.trim().parse().map_err(|_| {
                            invalid(&param, format!("{:?} is not an integer", f.value))
                        })?;
                    let p = self.next_param(Arg::Int(v));
                    self.conditions.push(format!("{expr} {sql_op} {p}"));
                }
                Kind::Time => {
                    let v = f.value.trim();
                    let v = match chrono::DateTime::parse_from_rfc3339(v) {
                        Ok(t) => format_time(t.with_timezone(&chrono::Utc)),
                        Err(_) => v.replace(' ', "T"),
                    };
                    let p = self.next_param(Arg::Text(v));
                    self.conditions.push(format!("{expr} {sql_op} {p}"));
                }
                Kind::Text => {
                    // Case-insensitive, like Referral Factory's MySQL collation; `equal` also
                    // ignores surrounding spaces (stored values are trimmed), so
                    // `filter[email][equal]` matches exactly as every other lookup by email.
                    let v = match f.op {
                        FilterOp::Equal => f.value.trim().to_owned(),
                        _ => f.value.clone(),
                    };
                    let p = self.next_param(Arg::Text(v));
                    self.conditions
                        .push(format!("LOWER({expr}) {sql_op} LOWER({p})"));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn where_sql(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }

    /// The full `SELECT` with order and page, and its parameters.
    pub(crate) fn select_sql(&self, head: &str, list: &ListQuery) -> (String, Vec<Arg>) {
        let dir = if list.descending { "DESC" } else { "ASC" };
        // Checked by `apply`; an unknown name falls back to the id.
        let expr = list
            .order_by
            .as_deref()
            .and_then(|o| self.fields.iter().find(|f| f.0 == o))
            .map_or(self.id_expr, |f| f.1);
        let mut sql = format!("{head}{}", self.where_sql());
        // NULLs last on both backends, then the id as a stable tie-breaker.
        sql.push_str(&format!(
            " ORDER BY CASE WHEN {expr} IS NULL THEN 1 ELSE 0 END, {expr} {dir}, {} {dir}",
            self.id_expr
        ));
        let mut args = self.args.clone();
        if let Some(p) = list.page {
            let p = p.clamped();
            let per = i64::from(p.per_page);
            let offset = i64::try_from(p.offset()).unwrap_or(i64::MAX);
            args.push(Arg::Int(per));
            let l = args.len();
            args.push(Arg::Int(offset));
            sql.push_str(&format!(" LIMIT ${l} OFFSET ${}", l + 1));
        }
        (sql, args)
    }
}

/// Checks that `order_by` names a sortable field.
fn check_order(fields: &[Field], list: &ListQuery) -> Result<()> {
    if let Some(o) = &list.order_by {
        if !fields.iter().any(|f| f.0 == o) {
            return Err(invalid(
                "order_by",
                format!("cannot order by {o:?}; fields: {}", names(fields)),
            ));
        }
    }
    Ok(())
}

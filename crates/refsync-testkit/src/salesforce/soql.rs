//! A minimal SOQL: `SELECT f1, f2 FROM Object [WHERE condition] [ORDER BY f [ASC|DESC]
//! [NULLS FIRST|LAST]] [LIMIT n]`. Conditions: `f = v`, `!=`, `<>`, `<`, `<=`, `>`, `>=`,
//! `f [NOT] IN (v, ...)`, `f LIKE 'pattern'` (`%`, `_`), `NOT`, parentheses, and `AND` / `OR`
//! (mixing both at one level without parentheses is an error, as in SOQL). Values: strings in
//! single quotes with backslash escapes (`\'`, `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, and
//! `\%` / `\_` in `LIKE`), numbers, `true` / `false`, `null`, date (`2024-05-01`) and date-time
//! (`2024-05-01T10:00:00Z`) literals. String comparisons ignore case (text fields are not
//! case-sensitive unique fields); ids compare in their 15- or 18-character forms. Values must
//! fit the field's type (quoted for text and ids, unquoted for booleans, numbers and dates).

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use super::model::{Kind, normalize_id};

/// A SOQL error: `errorCode` and `message` (Salesforce's text with the query line, a caret and
/// the row and column).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct QueryError {
    pub(super) code: &'static str,
    pub(super) message: String,
}

/// A table SOQL can read: its API name, fields and rows (values by canonical field name).
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) name: String,
    pub(super) fields: Vec<(String, Kind)>,
    pub(super) rows: Vec<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Number(String),
    Sym(&'static str),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
    text: String,
}

const KEYWORDS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "LIMIT", "ORDER", "BY", "ASC",
    "DESC", "NULLS", "FIRST", "LAST", "TRUE", "FALSE", "NULL",
];

/// An error at byte `pos` of `query`.
fn error_at(query: &str, pos: usize, code: &'static str, message: &str) -> QueryError {
    let pos = pos.min(query.len());
    let before = &query[..pos];
    let row = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = query[line_start..pos].chars().count() + 1;
    let line = query[line_start..].lines().next().unwrap_or("");
    QueryError {
        code,
        message: format!(
            "\n{line}\n{}^\nERROR at Row:{row}:Column:{column}\n{message}",
            " ".repeat(column - 1)
        ),
    }
}

fn tokenize(query: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<(usize, char)> = query.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(query.len(), |(p, _)| *p);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '\'' => {
                let mut value = String::new();
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    let c = chars[i].1;
                    if c == '\\' {
                        let Some(&(_, n)) = chars.get(i + 1) else {
                            break;
                        };
                        match n {
                            '\'' | '"' | '\\' => value.push(n),
                            'n' => value.push('\n'),
                            'r' => value.push('\r'),
                            't' => value.push('\t'),
                            'b' => value.push('\u{8}'),
                            'f' => value.push('\u{c}'),
                            // Kept escaped: only LIKE gives them a meaning.
                            '%' | '_' => {
                                value.push('\\');
                                value.push(n);
                            }
                            _ => {
                                return Err(error_at(
                                    query,
                                    pos,
                                    "MALFORMED_QUERY",
                                    &format!(
                                        "Invalid string literal '{}'. Illegal character sequence '\\{n}' in string literal.",
                                        &query[pos..end_of(i + 2)]
                                    ),
                                ));
                            }
                        }
                        i += 2;
                        continue;
                    }
                    if c == '\'' {
                        closed = true;
                        i += 1;
                        break;
                    }
                    value.push(c);
                    i += 1;
                }
                if !closed {
                    return Err(error_at(
                        query,
                        pos,
                        "MALFORMED_QUERY",
                        "unexpected token: '''",
                    ));
                }
                Tok::Str(value)
            }
            '(' | ')' | ',' | '=' => {
                i += 1;
                Tok::Sym(match c {
                    '(' => "(",
                    ')' => ")",
                    ',' => ",",
                    _ => "=",
                })
            }
            '!' if chars.get(i + 1).map(|x| x.1) == Some('=') => {
                i += 2;
                Tok::Sym("!=")
            }
            '<' | '>' => {
                let next = chars.get(i + 1).map(|x| x.1);
                let sym = match (c, next) {
                    ('<', Some('=')) => "<=",
                    ('<', Some('>')) => "<>",
                    ('>', Some('=')) => ">=",
                    ('<', _) => "<",
                    _ => ">",
                };
                i += sym.len();
                Tok::Sym(sym)
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|x| x.1.is_ascii_digit())) =>
            {
                i += 1;
                while i < chars.len()
                    && (chars[i].1.is_ascii_alphanumeric()
                        || matches!(chars[i].1, '.' | ':' | '-' | '+'))
                {
                    i += 1;
                }
                Tok::Number(query[pos..end_of(i)].to_owned())
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len()
                    && (chars[i].1.is_alphanumeric() || matches!(chars[i].1, '_' | '.'))
                {
                    i += 1;
                }
                Tok::Word(query[pos..end_of(i)].to_owned())
            }
            _ => {
                return Err(error_at(
                    query,
                    pos,
                    "MALFORMED_QUERY",
                    &format!("unexpected token: '{c}'"),
                ));
            }
        };
        tokens.push(Token {
            tok,
            pos,
            text: query[pos..end_of(i)].to_owned(),
        });
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: query.len(),
        text: String::new(),
    });
    Ok(tokens)
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    /// The text with `\%` / `\_` still escaped.
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Lit {
    /// A string literal as plain text (`\%` → `%`).
    fn plain(text: &str) -> String {
        text.replace("\\%", "%").replace("\\_", "_")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
struct FieldRef {
    name: String,
    pos: usize,
}

#[derive(Debug, Clone)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        field: FieldRef,
        op: Op,
        value: Lit,
        pos: usize,
    },
    In {
        field: FieldRef,
        negated: bool,
        values: Vec<(Lit, usize)>,
    },
    Like {
        field: FieldRef,
        pattern: String,
        pos: usize,
    },
}

#[derive(Debug, Clone)]
struct Query {
    fields: Vec<FieldRef>,
    object: FieldRef,
    filter: Option<Expr>,
    order: Option<(FieldRef, bool, bool)>,
    limit: Option<usize>,
}

struct Parser<'a> {
    query: &'a str,
    tokens: Vec<Token>,
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.i.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.tokens.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn unexpected(&self) -> QueryError {
        let t = self.peek();
        let shown = if t.tok == Tok::End {
            "<EOF>".to_owned()
        } else {
            format!("'{}'", t.text)
        };
        error_at(
            self.query,
            t.pos,
            "MALFORMED_QUERY",
            &format!("unexpected token: {shown}"),
        )
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.is_kw(kw) {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), QueryError> {
        if self.peek().tok == Tok::Sym(sym_static(sym)) {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// A name that is not a keyword.
    fn name(&mut self) -> Result<FieldRef, QueryError> {
        match &self.peek().tok {
            Tok::Word(w) if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w)) => {
                let t = self.next();
                Ok(FieldRef {
                    name: t.text,
                    pos: t.pos,
                })
            }
            _ => Err(self.unexpected()),
        }
    }

    fn literal(&mut self) -> Result<(Lit, usize), QueryError> {
        let t = self.peek().clone();
        let lit = match &t.tok {
            Tok::Str(s) => Lit::Str(s.clone()),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Lit::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Lit::Null,
            Tok::Number(n) => {
                if let Ok(d) = NaiveDate::parse_from_str(n, "%Y-%m-%d") {
                    Lit::Date(d)
                } else if let Ok(t) = DateTime::parse_from_rfc3339(n) {
                    Lit::DateTime(t.with_timezone(&Utc))
                } else if let Ok(v) = n.parse::<f64>() {
                    Lit::Num(v)
                } else {
                    return Err(self.unexpected());
                }
            }
            _ => return Err(self.unexpected()),
        };
        self.next();
        Ok((lit, t.pos))
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_kw("SELECT")?;
        let mut fields = vec![self.name()?];
        while self.peek().tok == Tok::Sym(",") {
            self.next();
            fields.push(self.name()?);
        }
        self.expect_kw("FROM")?;
        let object = self.name()?;
        let filter = if self.is_kw("WHERE") {
            self.next();
            Some(self.expr()?)
        } else {
            None
        };
        let order = if self.is_kw("ORDER") {
            self.next();
            self.expect_kw("BY")?;
            let field = self.name()?;
            let mut ascending = true;
            if self.is_kw("ASC") {
                self.next();
            } else if self.is_kw("DESC") {
                self.next();
                ascending = false;
            }
            let mut nulls_first = ascending;
            if self.is_kw("NULLS") {
                self.next();
                if self.is_kw("FIRST") {
                    nulls_first = true;
                } else if self.is_kw("LAST") {
                    nulls_first = false;
                } else {
                    return Err(self.unexpected());
                }
                self.next();
            }
            Some((field, ascending, nulls_first))
        } else {
            None
        };
        let limit = if self.is_kw("LIMIT") {
            self.next();
            match &self.peek().tok {
                Tok::Number(n) if n.parse::<usize>().is_ok() => {
                    let n = n.parse::<usize>().unwrap_or(0);
                    self.next();
                    Some(n)
                }
                _ => return Err(self.unexpected()),
            }
        } else {
            None
        };
        if self.peek().tok != Tok::End {
            return Err(self.unexpected());
        }
        Ok(Query {
            fields,
            object,
            filter,
            order,
            limit,
        })
    }

    fn expr(&mut self) -> Result<Expr, QueryError> {
        let first = self.unary()?;
        let mut items = vec![first];
        let mut conjunction: Option<bool> = None; // Some(true) = AND
        loop {
            let is_and = if self.is_kw("AND") {
                true
            } else if self.is_kw("OR") {
                false
            } else {
                break;
            };
            if conjunction.is_some_and(|c| c != is_and) {
                return Err(self.unexpected());
            }
            conjunction = Some(is_and);
            self.next();
            items.push(self.unary()?);
        }
        Ok(match conjunction {
            None => items.pop().unwrap_or(Expr::And(Vec::new())),
            Some(true) => Expr::And(items),
            Some(false) => Expr::Or(items),
        })
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.is_kw("NOT") {
            self.next();
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek().tok == Tok::Sym("(") {
            self.next();
            let inner = self.expr()?;
            self.expect_sym(")")?;
            return Ok(inner);
        }
        let field = self.name()?;
        let negated_in = self.is_kw("NOT");
        if negated_in {
            self.next();
            if !self.is_kw("IN") {
                return Err(self.unexpected());
            }
        }
        if self.is_kw("IN") {
            self.next();
            self.expect_sym("(")?;
            let mut values = vec![self.literal()?];
            while self.peek().tok == Tok::Sym(",") {
                self.next();
                values.push(self.literal()?);
            }
            self.expect_sym(")")?;
            return Ok(Expr::In {
                field,
                negated: negated_in,
                values,
            });
        }
        if self.is_kw("LIKE") {
            self.next();
            let t = self.peek().clone();
            let Tok::Str(pattern) = t.tok else {
                return Err(self.unexpected());
            };
            self.next();
            return Ok(Expr::Like {
                field,
                pattern,
                pos: t.pos,
            });
        }
        let op = match &self.peek().tok {
            Tok::Sym("=") => Op::Eq,
            Tok::Sym("!=") | Tok::Sym("<>") => Op::Ne,
            Tok::Sym("<") => Op::Lt,
            Tok::Sym("<=") => Op::Le,
            Tok::Sym(">") => Op::Gt,
            Tok::Sym(">=") => Op::Ge,
            _ => return Err(self.unexpected()),
        };
        self.next();
        let (value, pos) = self.literal()?;
        Ok(Expr::Cmp {
            field,
            op,
            value,
            pos,
        })
    }
}

fn sym_static(sym: &str) -> &'static str {
    match sym {
        "(" => "(",
        ")" => ")",
        "," => ",",
        _ => "=",
    }
}

/// Resolves field names against a table and checks values against field types.
struct Checker<'a> {
    query: &'a str,
    table: &'a Table,
}

impl Checker<'_> {
    fn field(&self, f: &FieldRef) -> Result<(String, Kind), QueryError> {
        self.table
            .fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&f.name))
            .cloned()
            .ok_or_else(|| {
                error_at(
                    self.query,
                    f.pos,
                    "INVALID_FIELD",
                    &format!(
                        "No such column '{}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                        f.name, self.table.name
                    ),
                )
            })
    }

    fn filterable(&self, f: &FieldRef) -> Result<(String, Kind), QueryError> {
        let (name, kind) = self.field(f)?;
        if matches!(kind, Kind::TextArea(_)) {
            return Err(error_at(
                self.query,
                f.pos,
                "INVALID_FIELD",
                &format!("field '{name}' can not be filtered in query call"),
            ));
        }
        Ok((name, kind))
    }

    fn value(&self, name: &str, kind: Kind, lit: &Lit, pos: usize) -> Result<(), QueryError> {
        let mismatch = |expected: &str, quoted: bool| {
            error_at(
                self.query,
                pos,
                "INVALID_QUERY_FILTER_OPERATOR",
                &format!(
                    "value of filter criterion for field '{name}' must be of type {expected} and should {}be enclosed in quotes",
                    if quoted { "" } else { "not " }
                ),
            )
        };
        match (kind, lit) {
            (_, Lit::Null) => Ok(()),
            (k, Lit::Str(s)) if k.is_id() => {
                if normalize_id(&Lit::plain(s)).is_some() {
                    Ok(())
                } else {
                    Err(error_at(
                        self.query,
                        pos,
                        "INVALID_QUERY_FILTER_OPERATOR",
                        &format!("invalid ID field: {}", Lit::plain(s)),
                    ))
                }
            }
            (k, _) if k.is_id() => Err(mismatch("id", true)),
            (k, Lit::Str(_)) if k.is_text() => Ok(()),
            (k, _) if k.is_text() => Err(mismatch("string", true)),
            (Kind::Boolean, Lit::Bool(_)) => Ok(()),
            (Kind::Boolean, _) => Err(mismatch("boolean", false)),
            (Kind::Date, Lit::Date(_)) => Ok(()),
            (Kind::Date, _) => Err(mismatch("date", false)),
            (Kind::DateTime, Lit::DateTime(_)) => Ok(()),
            (Kind::DateTime, _) => Err(mismatch("dateTime", false)),
            (Kind::Currency | Kind::Percent | Kind::Integer, Lit::Num(_)) => Ok(()),
            (_, _) => Err(mismatch("double", false)),
        }
    }

    /// Resolves every field of `expr` to its canonical name and checks the values.
    fn expr(&self, expr: &mut Expr) -> Result<(), QueryError> {
        match expr {
            Expr::And(items) | Expr::Or(items) => items.iter_mut().try_for_each(|e| self.expr(e)),
            Expr::Not(inner) => self.expr(inner),
            Expr::Cmp {
                field, value, pos, ..
            } => {
                let (name, kind) = self.filterable(field)?;
                self.value(&name, kind, value, *pos)?;
                field.name = name;
                Ok(())
            }
            Expr::In { field, values, .. } => {
                let (name, kind) = self.filterable(field)?;
                for (value, pos) in values.iter() {
                    self.value(&name, kind, value, *pos)?;
                }
                field.name = name;
                Ok(())
            }
            Expr::Like { field, pos, .. } => {
                let (name, kind) = self.filterable(field)?;
                if !kind.is_text() {
                    return Err(error_at(
                        self.query,
                        *pos,
                        "INVALID_QUERY_FILTER_OPERATOR",
                        &format!("invalid operator on {} field: LIKE", kind.json_type()),
                    ));
                }
                field.name = name;
                Ok(())
            }
        }
    }
}

/// The order of a field value and a literal of the same type (`None` when either is null).
fn compare(kind: Kind, value: &Value, lit: &Lit) -> Option<Ordering> {
    match (value, lit) {
        (Value::Null, _) | (_, Lit::Null) => None,
        (Value::String(v), Lit::Str(s)) if kind.is_id() => {
            let a = normalize_id(v).unwrap_or_else(|| v.clone());
            let b = normalize_id(&Lit::plain(s)).unwrap_or_else(|| Lit::plain(s));
            Some(a.cmp(&b))
        }
        (Value::String(v), Lit::Str(s)) => {
            Some(v.to_lowercase().cmp(&Lit::plain(s).to_lowercase()))
        }
        (Value::Bool(v), Lit::Bool(b)) => Some(v.cmp(b)),
        (Value::Number(v), Lit::Num(n)) => v.as_f64()?.partial_cmp(n),
        (Value::String(v), Lit::Date(d)) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .map(|x| x.cmp(d)),
        (Value::String(v), Lit::DateTime(t)) => {
            let parsed = DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.3f%z").ok()?;
            Some(parsed.with_timezone(&Utc).cmp(t))
        }
        _ => None,
    }
}

/// Whether `text` matches a LIKE `pattern` (`%` any run, `_` one character, `\%` / `\_`
/// literal; case-insensitive).
fn like(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Char(char),
    }
    let mut parts = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    parts.extend(n.to_lowercase().map(P::Char));
                }
            }
            '%' => parts.push(P::Any),
            '_' => parts.push(P::One),
            c => parts.extend(c.to_lowercase().map(P::Char)),
        }
    }
    let text: Vec<char> = text.to_lowercase().chars().collect();
    // dp[j]: whether text[..i] matches parts[..j].
    let mut dp = vec![false; parts.len() + 1];
    dp[0] = true;
    for j in 0..parts.len() {
        dp[j + 1] = dp[j] && parts[j] == P::Any;
    }
    for c in &text {
        let mut next = vec![false; parts.len() + 1];
        for j in 0..parts.len() {
            next[j + 1] = match parts[j] {
                P::Any => next[j] || dp[j + 1],
                P::One => dp[j],
                P::Char(p) => dp[j] && p == *c,
            };
        }
        dp = next;
    }
    dp[parts.len()]
}

fn kind_of(table: &Table, name: &str) -> Kind {
    table
        .fields
        .iter()
        .find(|(n, _)| n == name)
        .map_or(Kind::Text(255), |(_, k)| *k)
}

fn eval(table: &Table, row: &Map<String, Value>, expr: &Expr) -> bool {
    let value = |f: &FieldRef| row.get(&f.name).cloned().unwrap_or(Value::Null);
    match expr {
        Expr::And(items) => items.iter().all(|e| eval(table, row, e)),
        Expr::Or(items) => items.iter().any(|e| eval(table, row, e)),
        Expr::Not(inner) => !eval(table, row, inner),
        Expr::Cmp {
            field,
            op,
            value: lit,
            ..
        } => {
            let v = value(field);
            let kind = kind_of(table, &field.name);
            match (op, lit) {
                (Op::Eq, Lit::Null) => v.is_null(),
                (Op::Ne, Lit::Null) => !v.is_null(),
                (Op::Eq, _) => compare(kind, &v, lit) == Some(Ordering::Equal),
                (Op::Ne, _) => compare(kind, &v, lit) != Some(Ordering::Equal),
                (Op::Lt, _) => compare(kind, &v, lit) == Some(Ordering::Less),
                (Op::Le, _) => matches!(
                    compare(kind, &v, lit),
                    Some(Ordering::Less | Ordering::Equal)
                ),
                (Op::Gt, _) => compare(kind, &v, lit) == Some(Ordering::Greater),
                (Op::Ge, _) => matches!(
                    compare(kind, &v, lit),
                    Some(Ordering::Greater | Ordering::Equal)
                ),
            }
        }
        Expr::In {
            field,
            negated,
            values,
        } => {
            let v = value(field);
            let kind = kind_of(table, &field.name);
            let found = values.iter().any(|(lit, _)| match lit {
                Lit::Null => v.is_null(),
                _ => compare(kind, &v, lit) == Some(Ordering::Equal),
            });
            found != *negated
        }
        Expr::Like { field, pattern, .. } => match value(field) {
            Value::String(s) => like(&s, pattern),
            _ => false,
        },
    }
}

/// The order of two field values (nulls handled by the caller).
fn order_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Runs `query`: `table_of` gives the table of an object name (case-insensitive lookup is
/// its job).
pub(super) fn execute(
    query: &str,
    table_of: impl Fn(&str) -> Option<Table>,
) -> Result<Answer, QueryError> {
    if query.trim().is_empty() {
        return Err(QueryError {
            code: "MALFORMED_QUERY",
            message: "A query string has to be specified".to_owned(),
        });
    }
    let mut parser = Parser {
        query,
        tokens: tokenize(query)?,
        i: 0,
    };
    let mut parsed = parser.query()?;
    let table = table_of(&parsed.object.name).ok_or_else(|| {
        error_at(
            query,
            parsed.object.pos,
            "INVALID_TYPE",
            &format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                parsed.object.name
            ),
        )
    })?;
    let checker = Checker {
        query,
        table: &table,
    };
    let mut selected: Vec<String> = Vec::new();
    for f in &parsed.fields {
        let (name, _) = checker.field(f)?;
        if selected.contains(&name) {
            return Err(error_at(
                query,
                f.pos,
                "MALFORMED_QUERY",
                &format!("duplicate field selected: {name}"),
            ));
        }
        selected.push(name);
    }
    if let Some(filter) = parsed.filter.as_mut() {
        checker.expr(filter)?;
    }
    let order = match &parsed.order {
        Some((f, ascending, nulls_first)) => Some((checker.field(f)?.0, *ascending, *nulls_first)),
        None => None,
    };
    let mut rows: Vec<&Map<String, Value>> = table
        .rows
        .iter()
        .filter(|row| parsed.filter.as_ref().is_none_or(|e| eval(&table, row, e)))
        .collect();
    if let Some((name, ascending, nulls_first)) = &order {
        rows.sort_by(|a, b| {
            let x = a.get(name).unwrap_or(&Value::Null);
            let y = b.get(name).unwrap_or(&Value::Null);
            match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if *nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (false, true) => {
                    if *nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (false, false) if *ascending => order_values(x, y),
                (false, false) => order_values(y, x),
            }
        });
    }
    if let Some(limit) = parsed.limit {
        rows.truncate(limit);
    }
    let rows = rows.into_iter().cloned().collect();
    Ok(Answer {
        object: table.name.clone(),
        fields: selected,
        rows,
    })
}

/// What a query found: the object's API name, the selected fields (canonical names, in query
/// order) and the matching rows (whole, in order).
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub(super) object: String,
    pub(super) fields: Vec<String>,
    pub(super) rows: Vec<Map<String, Value>>,
}

impl Answer {
    /// `row` with the selected fields only.
    pub(super) fn projected(&self, row: &Map<String, Value>) -> Map<String, Value> {
        self.fields
            .iter()
            .map(|n| (n.clone(), row.get(n).cloned().unwrap_or(Value::Null)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(id15: &str) -> String {
        format!("{id15}{}", super::super::model::checksum(id15))
    }

    fn table() -> Table {
        let rows = [
            json!({"Id": id("00Q5w00000ABCDE"), "Email": "Ann@Example.com", "LastName": "O'Hara", "IsConverted": false, "Amount": 10.0, "Description": "x"}),
            json!({"Id": id("00Q5w00000ABCDF"), "Email": "bob@example.com", "LastName": "Smith", "IsConverted": true, "Amount": 20.0, "Description": "y"}),
            json!({"Id": id("00Q5w00000ABCDG"), "Email": null, "LastName": "100% Cotton_Co", "IsConverted": false, "Amount": null, "Description": null}),
        ];
        Table {
            name: "Lead".to_owned(),
            fields: vec![
                ("Id".to_owned(), Kind::Id),
                ("Email".to_owned(), Kind::Email),
                ("LastName".to_owned(), Kind::Text(80)),
                ("IsConverted".to_owned(), Kind::Boolean),
                ("Amount".to_owned(), Kind::Currency),
                ("Description".to_owned(), Kind::TextArea(32000)),
            ],
            rows: rows
                .iter()
                .map(|r| r.as_object().unwrap().clone())
                .collect(),
        }
    }

    fn run(q: &str) -> Result<Vec<Map<String, Value>>, QueryError> {
        execute(q, |name| name.eq_ignore_ascii_case("lead").then(table))
            .map(|answer| answer.rows.iter().map(|r| answer.projected(r)).collect())
    }

    fn names(q: &str) -> Vec<String> {
        run(q)
            .unwrap_or_else(|e| panic!("{q}: {e:?}"))
            .iter()
            .map(|r| r["LastName"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn filters() {
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE Email = 'ann@example.COM'"),
            ["O'Hara"]
        );
        assert_eq!(
            names("select lastname from lead where lastname = 'O\\'Hara'"),
            ["O'Hara"]
        );
        assert_eq!(
            names(
                "SELECT LastName FROM Lead WHERE Email IN ('x@y.z', 'BOB@example.com') AND IsConverted = true"
            ),
            ["Smith"]
        );
        assert_eq!(
            names(
                "SELECT LastName FROM Lead WHERE Email = 'ann@example.com' OR Email = 'bob@example.com'"
            ),
            ["O'Hara", "Smith"]
        );
        assert_eq!(
            names(
                "SELECT LastName FROM Lead WHERE (Email = 'ann@example.com' OR Email = null) AND IsConverted = false"
            ),
            ["O'Hara", "100% Cotton_Co"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE Email != null"),
            ["O'Hara", "Smith"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE NOT IsConverted = true"),
            ["O'Hara", "100% Cotton_Co"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE Email NOT IN ('bob@example.com')"),
            ["O'Hara", "100% Cotton_Co"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE Amount >= 15"),
            ["Smith"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE LastName LIKE '100\\% C%'"),
            ["100% Cotton_Co"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE LastName LIKE 's_ith'"),
            ["Smith"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead WHERE Id = '00Q5w00000ABCDF'"),
            ["Smith"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead ORDER BY Amount DESC NULLS LAST LIMIT 2"),
            ["Smith", "O'Hara"]
        );
        assert_eq!(
            names("SELECT LastName FROM Lead ORDER BY Amount"),
            ["100% Cotton_Co", "O'Hara", "Smith"]
        );
        let rows = run("SELECT Id, Email FROM Lead WHERE LastName = 'Smith'").unwrap();
        assert_eq!(rows[0].keys().collect::<Vec<_>>(), ["Email", "Id"]);
    }

    #[test]
    fn errors() {
        let code = |q: &str| run(q).unwrap_err().code;
        assert_eq!(code("SELECT Foo FROM Lead"), "INVALID_FIELD");
        assert_eq!(code("SELECT Id FROM Account"), "INVALID_TYPE");
        assert_eq!(
            code("SELECT Id FROM Lead WHERE Email = 'a' AND Email = 'b' OR Email = 'c'"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            code("SELECT Id FROM Lead WHERE Email = 'unterminated"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            code("SELECT Id FROM Lead WHERE Email = 'a\\qb'"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            code("SELECT Id FROM Lead WHERE IsConverted = 'false'"),
            "INVALID_QUERY_FILTER_OPERATOR"
        );
        assert_eq!(
            code("SELECT Id FROM Lead WHERE Email = 5"),
            "INVALID_QUERY_FILTER_OPERATOR"
        );
        assert_eq!(
            code("SELECT Id FROM Lead WHERE Id = 'nope'"),
            "INVALID_QUERY_FILTER_OPERATOR"
        );
        assert_eq!(
            code("SELECT Id FROM Lead WHERE Description = 'x'"),
            "INVALID_FIELD"
        );
        assert_eq!(code("SELECT Id, Id FROM Lead"), "MALFORMED_QUERY");
        assert_eq!(code("SELECT Id FROM Lead LIMIT"), "MALFORMED_QUERY");
        assert_eq!(code(""), "MALFORMED_QUERY");
        let e = run("SELECT Id, Foo FROM Lead").unwrap_err();
        assert!(e.message.starts_with("\nSELECT Id, Foo FROM Lead\n           ^\nERROR at Row:1:Column:12\nNo such column 'Foo' on entity 'Lead'."), "{}", e.message);
    }

    #[test]
    fn like_patterns() {
        assert!(like("Hello", "h%"));
        assert!(like("Hello", "%LL%"));
        assert!(like("Hello", "h_llo"));
        assert!(!like("Hello", "h_lo"));
        assert!(like("50%", "50\\%"));
        assert!(!like("500", "50\\%"));
        assert!(like("", "%"));
    }
}

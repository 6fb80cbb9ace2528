//! `GET /{Module}/search`: the `criteria` grammar (`((Field:operator:value)and(...))`, with
//! `\(`, `\)`, `\,`, `\\` escapes) and how records match it, including Zoho's quirk that
//! `equals` on a text field is a contains-match ("ABC" matches "ABC Inc").

use serde_json::{Value, json};

use super::model::{Kind, Module, Record, State};
use super::ops::ApiError;

/// Most conditions one criteria string may hold.
pub(super) const MAX_CONDITIONS: usize = 10;

/// A parsed criteria expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Criteria {
    Condition {
        field: String,
        operator: String,
        value: String,
    },
    And(Vec<Criteria>),
    Or(Vec<Criteria>),
}

const OPERATORS: &[&str] = &[
    "equals",
    "not_equal",
    "starts_with",
    "in",
    "greater_than",
    "greater_equal",
    "less_than",
    "less_equal",
];

fn query_error(reason: &str) -> ApiError {
    ApiError::new(
        400,
        "INVALID_QUERY",
        "invalid query formed",
        json!({"reason": reason}),
    )
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    conditions: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// expression := term (('and' | 'or') term)*  — one operator kind per level.
    fn expression(&mut self) -> Result<Criteria, ApiError> {
        let first = self.term()?;
        let mut items = vec![first];
        let mut operator: Option<&'static str> = None;
        loop {
            self.skip_spaces();
            let rest: String = self.chars[self.pos..].iter().take(3).collect();
            let found = if rest.to_ascii_lowercase().starts_with("and") {
                "and"
            } else if rest.to_ascii_lowercase().starts_with("or") {
                "or"
            } else {
                break;
            };
            if operator.is_some_and(|o| o != found) {
                return Err(query_error("mixing and/or at one level needs parentheses"));
            }
            operator = Some(found);
            self.pos += found.len();
            items.push(self.term()?);
        }
        Ok(match (operator, items.len()) {
            (_, 1) => items.remove(0),
            (Some("or"), _) => Criteria::Or(items),
            _ => Criteria::And(items),
        })
    }

    /// term := '(' expression ')' | '(' field ':' operator ':' value ')'
    fn term(&mut self) -> Result<Criteria, ApiError> {
        self.skip_spaces();
        if self.peek() != Some('(') {
            return Err(query_error("expected '('"));
        }
        self.pos += 1;
        self.skip_spaces();
        if self.peek() == Some('(') {
            let inner = self.expression()?;
            self.skip_spaces();
            if self.peek() != Some(')') {
                return Err(query_error("expected ')'"));
            }
            self.pos += 1;
            return Ok(inner);
        }
        // A condition: read up to the closing unescaped ')'.
        let mut raw = String::new();
        let mut escaped_positions = Vec::new();
        loop {
            match self.peek() {
                None => return Err(query_error("unbalanced parentheses")),
                Some('\\') => {
                    let next = self.chars.get(self.pos + 1).copied();
                    match next {
                        Some(c) => {
                            escaped_positions.push(raw.chars().count());
                            raw.push(c);
                            self.pos += 2;
                        }
                        None => return Err(query_error("dangling escape")),
                    }
                }
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                Some(c) => {
                    raw.push(c);
                    self.pos += 1;
                }
            }
        }
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(query_error("more than 10 conditions"));
        }
        // field:operator:value, colons in the value kept.
        let chars: Vec<char> = raw.chars().collect();
        let colons: Vec<usize> = chars
            .iter()
            .enumerate()
            .filter(|(i, c)| **c == ':' && !escaped_positions.contains(i))
            .map(|(i, _)| i)
            .take(2)
            .collect();
        if colons.len() < 2 {
            return Err(query_error("a condition is field:operator:value"));
        }
        let field: String = chars[..colons[0]].iter().collect();
        let operator: String = chars[colons[0] + 1..colons[1]].iter().collect();
        // The value keeps escaped commas marked for `in`: replace them with a private char.
        let value: String = chars[colons[1] + 1..]
            .iter()
            .enumerate()
            .map(|(offset, c)| {
                if *c == ',' && escaped_positions.contains(&(colons[1] + 1 + offset)) {
                    '\u{E000}'
                } else {
                    *c
                }
            })
            .collect();
        let field = field.trim().to_owned();
        let operator = operator.trim().to_ascii_lowercase();
        if !OPERATORS.contains(&operator.as_str()) {
            return Err(query_error(&format!("unsupported operator {operator}")));
        }
        Ok(Criteria::Condition {
            field,
            operator,
            value,
        })
    }
}

/// Parses a `criteria` parameter.
pub(super) fn parse(text: &str) -> Result<Criteria, ApiError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        conditions: 0,
    };
    let criteria = parser.expression()?;
    parser.skip_spaces();
    if parser.pos != parser.chars.len() {
        return Err(query_error("unexpected text after the criteria"));
    }
    Ok(criteria)
}

/// Checks every field of `criteria` exists in `module` and fits its operator.
pub(super) fn check_fields(
    state: &State,
    module: Module,
    criteria: &Criteria,
) -> Result<(), ApiError> {
    match criteria {
        Criteria::And(items) | Criteria::Or(items) => items
            .iter()
            .try_for_each(|c| check_fields(state, module, c)),
        Criteria::Condition {
            field, operator, ..
        } => {
            let kind =
                match field.as_str() {
                    "id" => Kind::Integer,
                    "Created_Time" | "Modified_Time" => Kind::DateTime,
                    _ => state
                        .field(module, field)
                        .ok_or_else(|| {
                            ApiError::new(
                                400,
                                "INVALID_QUERY",
                                "invalid query formed",
                                json!({"api_name": field, "reason": "the field does not exist"}),
                            )
                        })?
                        .kind,
                };
            let comparison =
                operator.contains("than") || operator.ends_with("equal") && operator != "not_equal";
            let ordered = matches!(
                kind,
                Kind::Currency | Kind::Integer | Kind::Date | Kind::DateTime
            );
            if comparison && !ordered {
                return Err(ApiError::new(
                    400,
                    "INVALID_QUERY",
                    "invalid query formed",
                    json!({"api_name": field, "operator": operator, "reason": "the operator does not fit the field"}),
                ));
            }
            Ok(())
        }
    }
}

/// The comparable text of a stored value: strings as they are, lookups by id, `Pipeline` by
/// name, numbers as text.
fn text_of(record: &Record, field: &str) -> Option<String> {
    let value = record.field_json(field);
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(map) => {
            let key = if field == "Pipeline" { "name" } else { "id" };
            map.get(key).and_then(Value::as_str).map(str::to_owned)
        }
        Value::Array(_) => None,
    }
}

fn compare_numbers(stored: &str, wanted: &str) -> Option<std::cmp::Ordering> {
    let a = stored.parse::<f64>().ok()?;
    let b = wanted.parse::<f64>().ok()?;
    a.partial_cmp(&b)
}

fn compare_ordered(kind: Kind, stored: &str, wanted: &str) -> Option<std::cmp::Ordering> {
    match kind {
        Kind::Currency | Kind::Integer => compare_numbers(stored, wanted),
        _ => Some(stored.cmp(wanted)),
    }
}

fn kind_of(state: &State, module: Module, field: &str) -> Kind {
    match field {
        "id" => Kind::Integer,
        "Created_Time" | "Modified_Time" => Kind::DateTime,
        _ => state
            .field(module, field)
            .map(|f| f.kind)
            .unwrap_or(Kind::Text),
    }
}

/// Whether `record` matches `criteria`. Text comparisons ignore case; `equals` on a text field
/// matches when the value *contains* the wanted text (Zoho's documented behaviour).
pub(super) fn matches(state: &State, record: &Record, criteria: &Criteria) -> bool {
    match criteria {
        Criteria::And(items) => items.iter().all(|c| matches(state, record, c)),
        Criteria::Or(items) => items.iter().any(|c| matches(state, record, c)),
        Criteria::Condition {
            field,
            operator,
            value,
        } => {
            let kind = kind_of(state, record.module, field);
            let stored = text_of(record, field);
            let wanted = value.replace('\u{E000}', ",");
            let equal = |stored: &str, wanted: &str| -> bool {
                if kind.is_text() {
                    stored.to_lowercase().contains(&wanted.to_lowercase())
                } else if matches!(kind, Kind::Currency | Kind::Integer) {
                    compare_numbers(stored, wanted) == Some(std::cmp::Ordering::Equal)
                } else {
                    stored.eq_ignore_ascii_case(wanted)
                }
            };
            match operator.as_str() {
                "equals" => stored.is_some_and(|s| equal(&s, &wanted)),
                "not_equal" => !stored.is_some_and(|s| equal(&s, &wanted)),
                "starts_with" => {
                    stored.is_some_and(|s| s.to_lowercase().starts_with(&wanted.to_lowercase()))
                }
                "in" => {
                    let options: Vec<String> = value
                        .split(',')
                        .map(|v| v.replace('\u{E000}', ",").trim().to_owned())
                        .collect();
                    stored.is_some_and(|s| options.iter().any(|o| equal(&s, o)))
                }
                other => {
                    let Some(ordering) = stored.and_then(|s| compare_ordered(kind, &s, &wanted))
                    else {
                        return false;
                    };
                    match other {
                        "greater_than" => ordering.is_gt(),
                        "greater_equal" => ordering.is_ge(),
                        "less_than" => ordering.is_lt(),
                        _ => ordering.is_le(),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(field: &str, operator: &str, value: &str) -> Criteria {
        Criteria::Condition {
            field: field.to_owned(),
            operator: operator.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn parses_nested_criteria_and_escapes() {
        assert_eq!(
            parse("(Email:equals:ann@x.io)").unwrap(),
            cond("Email", "equals", "ann@x.io")
        );
        assert_eq!(
            parse("((Email:equals:a@x.io)and(Referral_Code:equals:R\\(1\\)))").unwrap(),
            Criteria::And(vec![
                cond("Email", "equals", "a@x.io"),
                cond("Referral_Code", "equals", "R(1)"),
            ])
        );
        assert_eq!(
            parse("(A:equals:1)or(B:equals:x:y)").unwrap(),
            Criteria::Or(vec![cond("A", "equals", "1"), cond("B", "equals", "x:y")])
        );
        assert!(parse("(A:equals:1)and(B:equals:2)or(C:equals:3)").is_err());
        assert!(parse("(A:like:1)").is_err());
        assert!(parse("(A:equals:1").is_err());
        assert!(parse("A:equals:1").is_err());
        let many: String = (0..11)
            .map(|i| format!("(A:equals:{i})"))
            .collect::<Vec<_>>()
            .join("or");
        assert!(parse(&many).is_err());
    }
}

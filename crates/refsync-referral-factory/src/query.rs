//! [`ListQuery`]: filters, ordering, relations, field selection and page size of list calls.

use std::fmt;

use refsync_core::{Error, Result};

/// Largest `per_page` Referral Factory accepts.
pub const MAX_PER_PAGE: u32 = 250;

/// A filter operator: `filter[<field>][<op>]=<value>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterOp {
    /// Equal to.
    Equal,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater than or equal to.
    Gte,
    /// Less than or equal to.
    Lte,
    /// SQL `LIKE` (`%` wildcards).
    Like,
}

impl FilterOp {
    /// The operator's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterOp::Equal => "equal",
            FilterOp::Gt => "gt",
            FilterOp::Lt => "lt",
            FilterOp::Gte => "gte",
            FilterOp::Lte => "lte",
            FilterOp::Like => "like",
        }
    }
}

impl fmt::Display for FilterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

impl Direction {
    /// The direction's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Asc => "asc",
            Direction::Desc => "desc",
        }
    }
}

/// One filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The field (`email`, `qualified_at`, `created_at`, ...).
    pub field: String,
    /// The operator.
    pub op: FilterOp,
    /// The value (`like` takes `%` wildcards).
    pub value: String,
}

/// Parameters of a list call (users or rewards).
///
/// ```
/// # use refsync_referral_factory::{Direction, FilterOp, ListQuery};
/// let q = ListQuery::new()
///     .campaign("7")
///     .filter("email", FilterOp::Like, "%@example.com")
///     .order_by("signed_up_at", Direction::Desc)
///     .with("referrer")
///     .fields(["id", "email", "code"])
///     .per_page(250);
/// assert_eq!(q.to_query().unwrap()[0], ("campaign_id".to_owned(), "7".to_owned()));
/// assert!(ListQuery::new().per_page(251).to_query().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// `campaign_id` (applied by the client too in v1 mode, where the server ignores it).
    pub campaign_id: Option<String>,
    /// Filters, all of which must hold.
    pub filters: Vec<Filter>,
    /// `order_by` and `order_direction`.
    pub order: Option<(String, Direction)>,
    /// Relations to embed (`with=referrer,rewards`).
    pub with: Vec<String>,
    /// Fields to return (`fields=id,email`); empty means all.
    pub fields: Vec<String>,
    /// Page size, 1–250 (server default 25).
    pub per_page: Option<u32>,
    /// The first page to fetch (1-based; default 1).
    pub page: Option<u32>,
}

impl ListQuery {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Restricts to a campaign.
    #[must_use]
    pub fn campaign(mut self, campaign_id: impl Into<String>) -> Self {
        self.campaign_id = Some(campaign_id.into());
        self
    }
    /// Adds a filter.
    #[must_use]
    pub fn filter(
        mut self,
        field: impl Into<String>,
        op: FilterOp,
        value: impl Into<String>,
    ) -> Self {
        self.filters.push(Filter {
            field: field.into(),
            op,
            value: value.into(),
        });
        self
    }
    /// Sets the order.
    #[must_use]
    pub fn order_by(mut self, field: impl Into<String>, direction: Direction) -> Self {
        self.order = Some((field.into(), direction));
        self
    }
    /// Embeds a relation (`referrer`, `rewards`).
    #[must_use]
    pub fn with(mut self, relation: impl Into<String>) -> Self {
        self.with.push(relation.into());
        self
    }
    /// Selects fields.
    #[must_use]
    pub fn fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields.extend(fields.into_iter().map(Into::into));
        self
    }
    /// Sets the page size (1–250, checked by [`to_query`](Self::to_query)).
    #[must_use]
    pub fn per_page(mut self, n: u32) -> Self {
        self.per_page = Some(n);
        self
    }
    /// Starts at page `n` (1-based).
    #[must_use]
    pub fn page(mut self, n: u32) -> Self {
        self.page = Some(n);
        self
    }

    /// The query parameters, in a stable order; a [`Validation`](refsync_core::ErrorKind)
    /// error for a page size outside 1–250 or a page 0.
    pub fn to_query(&self) -> Result<Vec<(String, String)>> {
        let mut q = Vec::new();
        if let Some(c) = &self.campaign_id {
            q.push(("campaign_id".to_owned(), c.clone()));
        }
        for f in &self.filters {
            if f.field.trim().is_empty() {
                return Err(
                    Error::validation("a filter needs a field name").with_connector(crate::NAME)
                );
            }
            q.push((format!("filter[{}][{}]", f.field, f.op), f.value.clone()));
        }
        if let Some((field, dir)) = &self.order {
            q.push(("order_by".to_owned(), field.clone()));
            q.push(("order_direction".to_owned(), dir.as_str().to_owned()));
        }
        if !self.with.is_empty() {
            q.push(("with".to_owned(), self.with.join(",")));
        }
        if !self.fields.is_empty() {
            q.push(("fields".to_owned(), self.fields.join(",")));
        }
        if let Some(n) = self.per_page {
            if !(1..=MAX_PER_PAGE).contains(&n) {
                return Err(Error::validation(format!(
                    "per_page = {n}: Referral Factory returns 1 to {MAX_PER_PAGE} items per page"
                ))
                .with_connector(crate::NAME));
            }
            q.push(("per_page".to_owned(), n.to_string()));
        }
        if let Some(p) = self.page {
            if p == 0 {
                return Err(
                    Error::validation("page numbers start at 1").with_connector(crate::NAME)
                );
            }
            q.push(("page".to_owned(), p.to_string()));
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_form() {
        let q = ListQuery::new()
            .campaign("7")
            .filter("qualified_at", FilterOp::Gte, "2024-01-01")
            .filter("email", FilterOp::Like, "%@x.com")
            .order_by("id", Direction::Desc)
            .with("referrer")
            .with("rewards")
            .fields(["id", "email"])
            .per_page(50)
            .page(2)
            .to_query()
            .unwrap();
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("campaign_id", "7"),
                ("filter[qualified_at][gte]", "2024-01-01"),
                ("filter[email][like]", "%@x.com"),
                ("order_by", "id"),
                ("order_direction", "desc"),
                ("with", "referrer,rewards"),
                ("fields", "id,email"),
                ("per_page", "50"),
                ("page", "2"),
            ]
        );
    }

    #[test]
    fn per_page_is_checked() {
        for bad in [0, 251, 1000] {
            let e = ListQuery::new().per_page(bad).to_query().unwrap_err();
            assert_eq!(e.kind(), &refsync_core::ErrorKind::Validation);
            assert!(e.message().contains("250"));
        }
        ListQuery::new().per_page(250).to_query().unwrap();
        ListQuery::new().per_page(1).to_query().unwrap();
        assert!(ListQuery::new().page(0).to_query().is_err());
    }
}

//! The one error type of refsync: a classified [`ErrorKind`], a message people can act on,
//! the context it happened in, and the underlying cause.

use std::fmt;
use std::time::Duration;

/// What went wrong, as a class that decides what the caller does next (retry, fix config, give up).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid or incomplete. Not retryable: fix the config.
    Config,
    /// Credentials are missing or wrong (HTTP 401, bad webhook signature). Not retryable.
    Unauthorized,
    /// Credentials are valid but lack permission (HTTP 403). Not retryable.
    Forbidden,
    /// The object does not exist (HTTP 404). Not retryable.
    NotFound,
    /// The request or payload was rejected as invalid (HTTP 400/422, unparseable webhook).
    Validation,
    /// The object already exists or conflicts with current state (HTTP 409, "email already exists").
    Conflict,
    /// The upstream asked us to slow down (HTTP 429). Retryable after `retry_after` when given.
    RateLimited {
        /// How long the upstream asked us to wait, from `Retry-After` or a vendor header.
        retry_after: Option<Duration>,
    },
    /// The upstream is down, timed out or answered 5xx. Retryable.
    Unavailable,
    /// The connector or platform does not support this operation.
    Unsupported,
    /// Anything else: a bug or an answer we do not understand. Not retryable by default.
    Unexpected,
}

impl ErrorKind {
    /// Whether an operation failing with this kind may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorKind::RateLimited { .. } | ErrorKind::Unavailable)
    }

    /// A stable snake_case name, used in logs, metrics and JSON output.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Validation => "validation",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every refsync operation.
///
/// Messages never contain secret values: code that builds an error from a vendor response
/// must not copy credentials into it (the conformance suite checks this).
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    connector: Option<String>,
    operation: Option<&'static str>,
    retryable: Option<bool>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message people can act on.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            connector: None,
            operation: None,
            retryable: None,
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// Shorthand for [`ErrorKind::Unauthorized`].
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// Shorthand for [`ErrorKind::Validation`].
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }
    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// Shorthand for [`ErrorKind::Unexpected`].
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unexpected, message)
    }

    /// Records which connector (or platform) the error happened in.
    #[must_use]
    pub fn with_connector(mut self, connector: impl Into<String>) -> Self {
        self.connector = Some(connector.into());
        self
    }
    /// Records the operation (`verify`, `parse`, `push_referral`, `qualify`, ...).
    #[must_use]
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }
    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Overrides the retryability implied by the kind (e.g. a timeout on a non-idempotent call).
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }

    /// The class of the error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
    /// The human-readable message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The connector or platform the error happened in, if recorded.
    pub fn connector(&self) -> Option<&str> {
        self.connector.as_deref()
    }
    /// The operation the error happened in, if recorded.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable.unwrap_or_else(|| self.kind.is_retryable())
    }
    /// The same error without its source (which cannot be cloned): for reporting one failure
    /// as the failure of each item of a batch.
    #[must_use]
    pub fn detached(&self) -> Error {
        Error {
            kind: self.kind.clone(),
            message: self.message.clone(),
            connector: self.connector.clone(),
            operation: self.operation,
            retryable: self.retryable,
            source: None,
        }
    }

    /// How long the upstream asked us to wait, for [`ErrorKind::RateLimited`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (&self.connector, self.operation) {
            (Some(c), Some(o)) => write!(f, " ({c}, {o})")?,
            (Some(c), None) => write!(f, " ({c})")?,
            (None, Some(o)) => write!(f, " ({o})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)?;
        if let ErrorKind::RateLimited {
            retry_after: Some(d),
        } = self.kind
        {
            write!(f, " (retry after {} s)", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(c) = &self.connector {
            d.field("connector", c);
        }
        if let Some(o) = self.operation {
            d.field("operation", &o);
        }
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

/// `Result` with refsync's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_follows_kind_unless_overridden() {
        assert!(Error::new(ErrorKind::Unavailable, "down").is_retryable());
        assert!(
            Error::new(
                ErrorKind::RateLimited {
                    retry_after: Some(Duration::from_secs(3))
                },
                "slow down"
            )
            .is_retryable()
        );
        assert!(!Error::unauthorized("bad token").is_retryable());
        assert!(
            !Error::new(ErrorKind::Unavailable, "timeout")
                .with_retryable(false)
                .is_retryable()
        );
    }

    #[test]
    fn display_carries_context_and_retry_after() {
        let e = Error::new(
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            },
            "429 from upstream",
        )
        .with_connector("pipedrive")
        .with_operation("push_referral");
        assert_eq!(
            e.to_string(),
            "rate_limited (pipedrive, push_referral): 429 from upstream (retry after 2 s)"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }
}

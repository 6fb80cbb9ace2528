//! [`Secret`]: a string that never shows up in `Debug`, `Display`, logs or error messages.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret configuration value (API token, webhook secret, password).
///
/// `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose`], and the memory is zeroed on drop (via `secrecy`). `Serialize` writes the
/// real value so a config can round-trip to a file; never serialize a config into a log.
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }
    /// The secret value. Call only where the value is used (signing, an auth header).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret::new(self.expose().to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2-very-secret");
        let json = serde_json::to_string(&s).unwrap();
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "hunter2-very-secret");
    }
}

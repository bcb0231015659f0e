//! [`Secret`]: a configured secret (a token, a signing key) that never shows
//! in a `Debug` print, a log line or a config error.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::ValueError;

/// What `Debug` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// A non-empty secret string. `Debug` prints [`REDACTED`]; the value is
/// read with [`Secret::expose`] where it is used (a signing key, a token
/// comparison), nowhere else. The memory is wiped when it is dropped
/// (`secrecy`).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// A secret from code (the launcher, tests); configs get theirs by
    /// deserialization, which applies the same rule.
    pub fn new(value: impl Into<String>) -> Result<Self, ValueError> {
        let value = value.into();
        if value.is_empty() {
            return Err(ValueError::Empty);
        }
        Ok(Secret(SecretString::from(value)))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl FromStr for Secret {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::new(s)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serializes the secret itself, in the clear: the launcher
/// (`regions/launcher/src/local.rs`) and the tests build configs in Rust
/// and write them as TOML files (private, `0600`) for the processes they
/// start, and those files must hold the real value. Serialize a config
/// only to hand it to its process, never to log or show it.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SecretVisitor)
    }
}

/// Accepts a string; refuses anything else without ever echoing the value
/// (serde's default messages quote what they found, which for a number or
/// a boolean given as a secret would print it).
struct SecretVisitor;

impl SecretVisitor {
    fn not_a_string<E: de::Error>(found: &str) -> E {
        E::custom(format!(
            "a secret must be a string, not {found} (quote it; the value is not shown)"
        ))
    }
}

impl Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-empty secret string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Secret::new(v).map_err(E::custom)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Secret::new(v).map_err(E::custom)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(Self::not_a_string("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Secret, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Secret, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(Self::not_a_string("bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Holder {
        secret: Secret,
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2-but-longer").unwrap();
        assert_eq!(format!("{secret:?}"), REDACTED);
        let holder = Holder { secret };
        assert!(!format!("{holder:?}").contains("hunter2"));
        assert!(!format!("{holder:#?}").contains("hunter2"));
    }

    #[test]
    fn empty_is_refused_in_code_and_in_a_file() {
        assert_eq!(Secret::new("").unwrap_err(), ValueError::Empty);
        let error = toml::from_str::<Holder>("secret = \"\"").unwrap_err();
        assert!(error.to_string().contains("must not be empty"), "{error}");
    }

    #[test]
    fn a_number_is_refused_without_being_shown() {
        let error = toml::from_str::<Holder>("secret = 987654321").unwrap_err();
        let message = error.message();
        assert!(message.contains("must be a string"), "{message}");
        assert!(!message.contains("987654321"), "{message}");
    }

    proptest! {
        /// Any non-empty string is written as itself and read back equal.
        #[test]
        fn any_non_empty_string_round_trips(value in "\\PC{1,64}") {
            let holder = Holder { secret: Secret::new(value.clone()).unwrap() };
            let text = toml::to_string(&holder).unwrap();
            let back: Holder = toml::from_str(&text).unwrap();
            prop_assert_eq!(back.secret.expose(), value.as_str());
            prop_assert_eq!(back.secret, holder.secret);
        }
    }
}

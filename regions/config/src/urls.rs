//! Typed URLs, parsed (with the `url` crate) and their scheme checked when a
//! config is read: [`PostgresUrl`] and [`RedisUrl`] carry passwords, so
//! they are held like a [`Secret`](crate::Secret) and print redacted;
//! [`HttpUrl`] (a payment provider's API) is not secret.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::ValueError;

/// What `Debug` and `Display` print in place of a URL's password.
pub const REDACTED_PASSWORD: &str = "redacted";

/// Query parameters that carry a password (libpq's `password`).
const PASSWORD_PARAMS: [&str; 2] = ["password", "pass"];

/// A URL whose scheme is one of `schemes`, held secretly, with its
/// redacted form computed once.
#[derive(Clone)]
struct SecretUrl {
    full: SecretString,
    redacted: String,
}

impl SecretUrl {
    fn parse(text: &str, schemes: &'static [&'static str]) -> Result<Self, ValueError> {
        let url = parse_with_scheme(text, schemes)?;
        Ok(SecretUrl {
            full: SecretString::from(text),
            redacted: redact(url),
        })
    }
}

fn parse_with_scheme(text: &str, schemes: &'static [&'static str]) -> Result<Url, ValueError> {
    // `url`'s errors never quote the input, which may hold a password.
    let url = Url::parse(text).map_err(ValueError::Url)?;
    if !schemes.contains(&url.scheme()) {
        return Err(ValueError::Scheme {
            expected: schemes,
            found: url.scheme().to_string(),
        });
    }
    // `postgres:meridian` parses, as a path; `postgres:///meridian?host=/run`
    // (a Unix socket, no host) is fine.
    if url.cannot_be_a_base() {
        return Err(ValueError::NoAuthority);
    }
    Ok(url)
}

/// The URL with its password (in the user info or a `password` query
/// parameter) replaced by [`REDACTED_PASSWORD`].
fn redact(mut url: Url) -> String {
    if url.password().is_some() {
        // Fails only for a URL that cannot have a password (no host); the
        // password then stays out anyway.
        if url.set_password(Some(REDACTED_PASSWORD)).is_err() {
            return format!("{}://{REDACTED_PASSWORD}", url.scheme());
        }
    }
    let has_secret_param = url
        .query_pairs()
        .any(|(k, _)| PASSWORD_PARAMS.contains(&k.as_ref()));
    if has_secret_param {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if PASSWORD_PARAMS.contains(&k.as_ref()) {
                    REDACTED_PASSWORD.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

macro_rules! secret_url {
    ($(#[$doc:meta])* $name:ident, $schemes:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretUrl);

        impl $name {
            /// The schemes this URL may have.
            pub const SCHEMES: &'static [&'static str] = $schemes;

            /// Parses `text` and checks its scheme.
            pub fn parse(text: &str) -> Result<Self, ValueError> {
                SecretUrl::parse(text, Self::SCHEMES).map($name)
            }

            /// The whole URL, password included, as it was configured (for
            /// the client that connects with it).
            pub fn expose(&self) -> &str {
                self.0.full.expose_secret()
            }

            /// The URL with its password replaced (what `Display` and
            /// `Debug` print).
            pub fn redacted(&self) -> &str {
                &self.0.redacted
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.expose() == other.expose()
            }
        }

        impl Eq for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.redacted())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.redacted())
            }
        }

        /// Serializes the whole URL, password included, like
        /// [`Secret`](crate::Secret): the launcher and the tests write the
        /// configs they build as TOML files for the processes they start.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.expose())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(UrlVisitor($name::parse))
            }
        }
    };
}

secret_url!(
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    PostgresUrl,
    &["postgres", "postgresql"]
);

secret_url!(
    /// A Redis URL (`redis://`, or `rediss://` for TLS).
    RedisUrl,
    &["redis", "rediss"]
);

/// An `http://` or `https://` URL (not secret: shown as it is).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl {
    url: Url,
    /// As configured (`url` would add a `/` path to `http://host:1`).
    text: String,
}

impl HttpUrl {
    pub const SCHEMES: &'static [&'static str] = &["http", "https"];

    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let url = parse_with_scheme(text, Self::SCHEMES)?;
        Ok(HttpUrl {
            url,
            text: text.to_string(),
        })
    }

    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn as_url(&self) -> &Url {
        &self.url
    }
}

impl FromStr for HttpUrl {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HttpUrl::parse(s)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUrl({:?})", self.as_str())
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(UrlVisitor(HttpUrl::parse))
    }
}

/// Reads a string and parses it with the type's own `parse`; any error
/// message leaves the text out (it may hold a password).
struct UrlVisitor<T>(fn(&str) -> Result<T, ValueError>);

impl<T> Visitor<'_> for UrlVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a URL string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schemes_are_checked() {
        assert!(PostgresUrl::parse("postgres://u:p@db:5432/meridian").is_ok());
        assert!(PostgresUrl::parse("postgresql://u@db/meridian").is_ok());
        let error = PostgresUrl::parse("mysql://u:p@db/meridian").unwrap_err();
        assert_eq!(
            error.to_string(),
            "must be a `postgres://` or `postgresql://` URL, not `mysql://`"
        );
        assert!(RedisUrl::parse("redis://:pw@127.0.0.1:6379").is_ok());
        assert!(RedisUrl::parse("rediss://cache.example:6380/0").is_ok());
        assert!(RedisUrl::parse("http://cache.example").is_err());
        assert_eq!(
            HttpUrl::parse("http://127.0.0.1:9000").unwrap().to_string(),
            "http://127.0.0.1:9000"
        );
        assert!(HttpUrl::parse("ftp://psp.example").is_err());
        assert_eq!(
            HttpUrl::parse("not a url").unwrap_err().to_string(),
            "not a URL: relative URL without a base"
        );
        assert_eq!(
            PostgresUrl::parse("postgres:meridian").unwrap_err(),
            ValueError::NoAuthority
        );
        // A Unix socket: no host, but a URL libpq and sqlx take.
        assert!(PostgresUrl::parse("postgres:///meridian?host=/run/postgresql").is_ok());
    }

    #[test]
    fn passwords_are_redacted_in_debug_and_display_but_exposed_on_demand() {
        let text = "postgres://meridian:s3cr3t-pw@db.example:5432/meridian?sslmode=require";
        let url = PostgresUrl::parse(text).unwrap();
        assert_eq!(url.expose(), text);
        assert_eq!(
            url.to_string(),
            "postgres://meridian:redacted@db.example:5432/meridian?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cr3t"));
        let url = PostgresUrl::parse("postgres://u@db/m?password=s3cr3t&sslmode=disable").unwrap();
        assert!(!url.to_string().contains("s3cr3t"), "{url}");
        assert!(url.to_string().contains("sslmode=disable"), "{url}");
        let url = RedisUrl::parse("redis://:s3cr3t@127.0.0.1:6379").unwrap();
        assert_eq!(url.to_string(), "redis://:redacted@127.0.0.1:6379");
        // No password: nothing to hide.
        let url = PostgresUrl::parse("postgres://meridian@127.0.0.1:5432/meridian").unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://meridian@127.0.0.1:5432/meridian"
        );
    }

    #[test]
    fn a_bad_url_in_a_file_is_refused_without_quoting_it() {
        #[derive(Debug, Deserialize)]
        struct Holder {
            #[allow(dead_code)]
            url: PostgresUrl,
        }
        let error = toml::from_str::<Holder>("url = \"redis://:s3cr3t@db\"").unwrap_err();
        assert!(error.message().contains("postgres://"), "{error}");
        assert!(!error.message().contains("s3cr3t"), "{error}");
    }

    proptest! {
        /// Whatever the password, `Debug` and `Display` never contain it
        /// (raw or percent-encoded), and `expose` gives it back.
        #[test]
        fn debug_never_contains_the_password(password in "[!-~]{8,40}") {
            let mut url = Url::parse("postgres://meridian@db.example:5432/meridian").unwrap();
            url.set_password(Some(&password)).unwrap();
            let encoded = url.password().unwrap().to_string();
            let parsed = PostgresUrl::parse(url.as_str()).unwrap();
            for shown in [format!("{parsed:?}"), parsed.to_string()] {
                prop_assert!(!shown.contains(&password), "{}", shown);
                prop_assert!(!shown.contains(&encoded), "{}", shown);
            }
            let back = Url::parse(parsed.expose()).unwrap();
            prop_assert_eq!(back.password(), Some(encoded.as_str()));
        }
    }
}

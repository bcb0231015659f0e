//! `meridian-config`: the one way Meridian's processes read their
//! configuration (12-factor), shared by the edge (`EdgeConfig::load`), the
//! origin (`OriginConfig::load`) and `meridian origin|edge --check-config`.
//!
//! It owns:
//!
//! - **the layers** ([`load`]): a TOML file (or JSON, when it is named
//!   `*.json`: what the Helm chart renders), then environment variables
//!   that override it, each binary under its own prefix ([`EnvPrefix`]):
//!   `MERIDIAN_ORIGIN__<KEY>` and `MERIDIAN_EDGE__<KEY>`, nested keys
//!   joined by `__` (`MERIDIAN_ORIGIN__DATABASE__POOL_SIZE=32`). No other
//!   variable is read as configuration (`MERIDIAN_LOG`,
//!   `MERIDIAN_ADMIN_TOKEN` and the like belong to the CLI). Values are
//!   read as TOML-like literals: `32`, `true`, `[a, b]`; quote one to keep
//!   it a string (`"007"`).
//! - **secrets from files**: a key `<name>_file`, at any depth, in the file
//!   or the environment, means "the value of `<name>` is the contents of
//!   this file" (trailing newline trimmed): a Kubernetes Secret mounted as
//!   files. `<name>` and `<name>_file` both set is an error, so is an
//!   unreadable file (naming the key and the path, never the contents).
//!   Hence no config field may itself end in `_file`.
//! - **errors** ([`LoadError`]) that name the file or the environment
//!   variable a value came from and the field's path
//!   (`admin_tokens[0].token`), and never print a value that could be a
//!   secret.
//! - **the typed values** configs are built from: [`Secret`] (non-empty,
//!   redacted in `Debug`), [`PostgresUrl`] and [`RedisUrl`] (scheme checked
//!   at parse time, password redacted in `Debug`/`Display`), [`HttpUrl`].
//!
//! What a config *means* (its fields, defaults and cross-field rules, its
//! `validate()`) stays with the crate that uses it.
//!
//! Layout: `loader` (layers, `_file` rewrite, errors), `secret`, `urls`.

#![forbid(unsafe_code)]

mod loader;
mod secret;
mod urls;

pub use loader::{EnvPrefix, FILE_SUFFIX, Layer, LoadError, Loaded, Provenance, load};
pub use secret::{REDACTED, Secret};
pub use urls::{HttpUrl, PostgresUrl, REDACTED_PASSWORD, RedisUrl};

/// Why a value cannot be a [`Secret`] or one of the URL types. Never holds
/// the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("not a URL: {0}")]
    Url(url::ParseError),
    #[error("must be a {} URL, not `{found}://`", schemes(.expected))]
    Scheme {
        expected: &'static [&'static str],
        found: String,
    },
    #[error("must start with `scheme://`")]
    NoAuthority,
}

fn schemes(expected: &[&str]) -> String {
    expected
        .iter()
        .map(|s| format!("`{s}://`"))
        .collect::<Vec<_>>()
        .join(" or ")
}

//! The loader through its public API, in figment's `Jail` (a temporary
//! working folder and environment variables restored afterwards; jails run
//! one at a time).

// `Jail::expect_with` takes closures returning figment's (large) error type.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::path::Path;

use figment::Jail;
use meridian_config::{EnvPrefix, Layer, LoadError, Loaded, PostgresUrl, RedisUrl, Secret, load};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    region: String,
    #[serde(default)]
    redis_url: Option<RedisUrl>,
    database: Database,
    admin_tokens: Vec<Token>,
    shoppers: Shoppers,
    #[serde(default)]
    regions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Database {
    primary_url: PostgresUrl,
    #[serde(default = "sixteen")]
    pool_size: u32,
}

fn sixteen() -> u32 {
    16
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    name: String,
    token: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shoppers {
    guest_cookie_secret: Secret,
    #[serde(default)]
    hs256_secret: Option<Secret>,
}

const FILE: &str = r#"
region = "us-east"

[database]
primary_url = "postgres://meridian:db-password-42@db.example:5432/meridian"

[[admin_tokens]]
name = "ops"
token = "ops-token-0123456789"

[shoppers]
guest_cookie_secret = "guest-cookie-secret-0123456789"
"#;

fn origin(path: &str) -> Result<Loaded<Sample>, LoadError> {
    load(Path::new(path), EnvPrefix::ORIGIN)
}

fn error(jail: &mut Jail, text: &str) -> String {
    jail.create_file("origin.toml", text).unwrap();
    origin("origin.toml").unwrap_err().to_string()
}

#[test]
fn the_file_alone() {
    Jail::expect_with(|jail| {
        jail.create_file("origin.toml", FILE)?;
        let sample = origin("origin.toml").unwrap().config;
        assert_eq!(sample.region, "us-east");
        assert_eq!(sample.database.pool_size, 16);
        assert_eq!(
            sample.database.primary_url.expose(),
            "postgres://meridian:db-password-42@db.example:5432/meridian"
        );
        assert_eq!(sample.admin_tokens[0].name, "ops");
        assert_eq!(
            sample.admin_tokens[0].token.expose(),
            "ops-token-0123456789"
        );
        assert!(sample.redis_url.is_none());
        Ok(())
    });
}

#[test]
fn a_json_file_is_the_same_config_and_its_syntax_errors_show_no_value() {
    Jail::expect_with(|jail| {
        jail.create_file("secret-token", "ops-token-from-a-file\n")?;
        jail.create_file(
            "origin.json",
            r#"{"region": "eu-west",
                "database": {"primary_url": "postgres://db.example/meridian", "pool_size": 4},
                "admin_tokens": [{"name": "ops", "token_file": "secret-token"}],
                "shoppers": {"guest_cookie_secret": "guest-cookie-secret-0123456789"}}"#,
        )?;
        jail.set_env("MERIDIAN_ORIGIN__DATABASE__POOL_SIZE", "8");
        let sample = origin("origin.json").unwrap().config;
        assert_eq!(sample.region, "eu-west");
        assert_eq!(sample.database.pool_size, 8, "the environment still wins");
        assert_eq!(
            sample.admin_tokens[0].token.expose(),
            "ops-token-from-a-file"
        );

        jail.create_file(
            "broken.json",
            r#"{"region": "super-secret-value" "database": {}}"#,
        )?;
        let error = origin("broken.json").unwrap_err().to_string();
        assert!(
            error.contains("broken.json") && error.contains("line 1"),
            "{error}"
        );
        assert!(!error.contains("super-secret-value"), "{error}");
        Ok(())
    });
}

#[test]
fn the_environment_beats_the_file_with_nested_keys() {
    Jail::expect_with(|jail| {
        jail.create_file("origin.toml", FILE)?;
        jail.set_env("MERIDIAN_ORIGIN__REGION", "eu-west");
        jail.set_env("MERIDIAN_ORIGIN__DATABASE__POOL_SIZE", "32");
        jail.set_env(
            "MERIDIAN_ORIGIN__REDIS_URL",
            "redis://:pw@cache.example:6379",
        );
        jail.set_env("MERIDIAN_ORIGIN__REGIONS", "[us-east, eu-west]");
        let loaded = origin("origin.toml").unwrap();
        let sample = &loaded.config;
        assert_eq!(sample.region, "eu-west");
        assert_eq!(sample.database.pool_size, 32);
        // Untouched by the environment.
        assert_eq!(
            sample.shoppers.guest_cookie_secret.expose(),
            "guest-cookie-secret-0123456789"
        );
        assert_eq!(
            sample.redis_url.as_ref().unwrap().expose(),
            "redis://:pw@cache.example:6379"
        );
        assert_eq!(sample.regions, ["us-east", "eu-west"]);
        // Where each value came from.
        let provenance = &loaded.provenance;
        assert_eq!(
            provenance.layer_of("database.pool_size"),
            Layer::Env("MERIDIAN_ORIGIN__DATABASE__POOL_SIZE".into())
        );
        assert_eq!(
            provenance.layer_of("database.primary_url"),
            Layer::File("origin.toml".into())
        );
        assert_eq!(
            provenance.layer_of("regions[1]"),
            Layer::Env("MERIDIAN_ORIGIN__REGIONS".into())
        );
        Ok(())
    });
}

#[test]
fn only_the_binarys_own_prefix_is_read() {
    Jail::expect_with(|jail| {
        jail.create_file("origin.toml", FILE)?;
        // The edge's variables, the CLI's and unrelated ones: none is config
        // here (with `deny_unknown_fields`, any of them read would fail).
        jail.set_env("MERIDIAN_EDGE__REGION", "ap-southeast");
        jail.set_env("MERIDIAN_LOG", "debug");
        jail.set_env("MERIDIAN_ADMIN_TOKEN", "cli-admin-token-0123");
        jail.set_env("MERIDIAN_JWT_SECRET", "cli-jwt-secret");
        jail.set_env("MERIDIAN_DATABASE_URL", "postgres://x@y/z");
        jail.set_env("MERIDIAN_ORIGINREGION", "moon");
        jail.set_env("MERIDIAN_ORIGIN_REGION", "moon");
        let sample = origin("origin.toml").unwrap().config;
        assert_eq!(sample.region, "us-east");
        let edge: Result<Loaded<Sample>, _> = load(Path::new("origin.toml"), EnvPrefix::EDGE);
        assert_eq!(edge.unwrap().config.region, "ap-southeast");
        Ok(())
    });
}

#[test]
fn file_keys_are_read_at_any_depth_with_the_trailing_newline_trimmed() {
    Jail::expect_with(|jail| {
        let dir = jail.directory().to_path_buf();
        jail.create_file("guest", "guest-from-a-file-0123456789\n")?;
        jail.create_file("ops-token", "ops-token-from-a-file\r\n")?;
        jail.create_file("jwt", "jwt-secret-from-a-file-0123456789")?;
        jail.create_file(
            "db-url",
            "postgres://meridian:pw-from-file@db:5432/meridian\n",
        )?;
        let text = FILE
            .replace(
                "guest_cookie_secret = \"guest-cookie-secret-0123456789\"",
                "guest_cookie_secret_file = \"guest\"",
            )
            .replace(
                "token = \"ops-token-0123456789\"",
                &format!("token_file = \"{}\"", dir.join("ops-token").display()),
            )
            .replace(
                "primary_url = \"postgres://meridian:db-password-42@db.example:5432/meridian\"",
                "primary_url_file = \"db-url\"",
            );
        jail.create_file("origin.toml", &text)?;
        // From the environment too.
        jail.set_env("MERIDIAN_ORIGIN__SHOPPERS__HS256_SECRET_FILE", "jwt");
        let loaded = origin("origin.toml").unwrap();
        let sample = &loaded.config;
        assert_eq!(
            sample.shoppers.guest_cookie_secret.expose(),
            "guest-from-a-file-0123456789"
        );
        assert_eq!(
            sample.admin_tokens[0].token.expose(),
            "ops-token-from-a-file"
        );
        assert_eq!(
            sample.shoppers.hs256_secret.as_ref().unwrap().expose(),
            "jwt-secret-from-a-file-0123456789"
        );
        assert_eq!(
            sample.database.primary_url.expose(),
            "postgres://meridian:pw-from-file@db:5432/meridian"
        );
        // A secret read from a file named by a variable is that variable's.
        assert_eq!(
            loaded.provenance.layer_of("shoppers.hs256_secret"),
            Layer::Env("MERIDIAN_ORIGIN__SHOPPERS__HS256_SECRET_FILE".into())
        );
        Ok(())
    });
}

#[test]
fn a_value_and_its_file_both_set_are_refused_naming_both() {
    Jail::expect_with(|jail| {
        jail.create_file("guest", "guest-from-a-file-0123456789")?;
        let message = error(
            jail,
            &FILE.replace(
                "[shoppers]\n",
                "[shoppers]\nguest_cookie_secret_file = \"guest\"\n",
            ),
        );
        assert!(
            message.contains("`shoppers.guest_cookie_secret`"),
            "{message}"
        );
        assert!(
            message.contains("`shoppers.guest_cookie_secret_file`"),
            "{message}"
        );
        assert!(
            !message.contains("guest-cookie-secret-0123456789"),
            "{message}"
        );

        // One in the file, the other in the environment.
        jail.create_file("origin.toml", FILE)?;
        jail.set_env(
            "MERIDIAN_ORIGIN__SHOPPERS__GUEST_COOKIE_SECRET_FILE",
            "guest",
        );
        let message = origin("origin.toml").unwrap_err().to_string();
        assert!(
            message.contains(
                "environment variable MERIDIAN_ORIGIN__SHOPPERS__GUEST_COOKIE_SECRET_FILE"
            ),
            "{message}"
        );
        assert!(message.contains("(origin.toml)"), "{message}");

        // In an array of tables.
        let message = error(
            jail,
            &FILE.replace(
                "name = \"ops\"\n",
                "name = \"ops\"\ntoken_file = \"guest\"\n",
            ),
        );
        assert!(message.contains("`admin_tokens[0].token`"), "{message}");
        assert!(
            message.contains("`admin_tokens[0].token_file`"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn an_unreadable_secret_file_is_refused_naming_the_key_and_the_path() {
    Jail::expect_with(|jail| {
        let message = error(
            jail,
            &FILE.replace(
                "token = \"ops-token-0123456789\"",
                "token_file = \"/run/secrets/no-such-token\"",
            ),
        );
        assert!(message.starts_with("origin.toml: "), "{message}");
        assert!(
            message.contains("`admin_tokens[0].token_file`"),
            "{message}"
        );
        assert!(message.contains("/run/secrets/no-such-token"), "{message}");

        let message = error(jail, &format!("region_file = 7\n{FILE}"));
        assert!(message.contains("`region_file`"), "{message}");
        Ok(())
    });
}

#[test]
fn errors_name_the_layer_and_the_field() {
    Jail::expect_with(|jail| {
        // A wrong type in the file.
        let message = error(
            jail,
            &FILE.replace("[database]\n", "[database]\npool_size = \"lots\"\n"),
        );
        assert_eq!(
            message,
            "origin.toml: field `database.pool_size`: expected u32, found a string"
        );

        // A field missing.
        let message = error(jail, &FILE.replace("region = \"us-east\"\n", ""));
        assert_eq!(
            message,
            "origin.toml: field `region`: missing (no default: set it)"
        );

        // An unknown field.
        let message = error(jail, &format!("colour = \"blue\"\n{FILE}"));
        assert!(
            message.starts_with("origin.toml: field `colour`: unknown field"),
            "{message}"
        );

        // A URL of the wrong kind: named, not quoted.
        let message = error(
            jail,
            &FILE.replace(
                "postgres://meridian:db-password-42",
                "mysql://meridian:db-password-42",
            ),
        );
        assert!(
            message.contains("field `database.primary_url`"),
            "{message}"
        );
        assert!(
            message.contains("must be a `postgres://` or `postgresql://` URL"),
            "{message}"
        );
        assert!(!message.contains("db-password-42"), "{message}");

        // An empty secret.
        let message = error(
            jail,
            &FILE.replace("token = \"ops-token-0123456789\"", "token = \"\""),
        );
        assert_eq!(
            message,
            "origin.toml: field `admin_tokens[0].token`: must not be empty"
        );

        // Not TOML: position and message, not the line (it may be a secret).
        let message = error(
            jail,
            &FILE.replace(
                "token = \"ops-token-0123456789\"",
                "token = \"ops-token-0123456789",
            ),
        );
        assert!(
            message.starts_with("origin.toml: not valid TOML: line 9"),
            "{message}"
        );
        assert!(!message.contains("ops-token-0123456789"), "{message}");

        // From the environment: the variable is named.
        jail.create_file("origin.toml", FILE)?;
        jail.set_env("MERIDIAN_ORIGIN__DATABASE__POOL_SIZE", "lots");
        let message = origin("origin.toml").unwrap_err().to_string();
        assert_eq!(
            message,
            "environment variable MERIDIAN_ORIGIN__DATABASE__POOL_SIZE: field `database.pool_size`: expected u32, found a string"
        );
        jail.set_env("MERIDIAN_ORIGIN__DATABASE__POOL_SIZE", "8");
        jail.set_env("MERIDIAN_ORIGIN__DATABASE__COLOUR", "blue");
        let message = origin("origin.toml").unwrap_err().to_string();
        assert!(
            message.starts_with(
                "environment variable MERIDIAN_ORIGIN__DATABASE__COLOUR: field `database.colour`: unknown field"
            ),
            "{message}"
        );

        // A missing config file.
        let message = origin("nowhere.toml").unwrap_err().to_string();
        assert!(
            message.starts_with("nowhere.toml: cannot read"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn a_secret_never_shows_in_an_error_or_a_debug_print() {
    Jail::expect_with(|jail| {
        jail.create_file("secret", "super-secret-value-0123456789\n")?;
        // A secret file pointed at a field that is not a string: the type
        // error does not quote what the file held.
        let message = error(
            jail,
            &FILE.replace("[database]\n", "[database]\npool_size_file = \"secret\"\n"),
        );
        assert!(message.contains("`database.pool_size`"), "{message}");
        assert!(!message.contains("super-secret"), "{message}");

        // A number given as a secret (from the environment: values are
        // parsed) is refused without being shown.
        jail.create_file("origin.toml", FILE)?;
        jail.set_env(
            "MERIDIAN_ORIGIN__SHOPPERS__HS256_SECRET",
            "9876543210987654",
        );
        let message = origin("origin.toml").unwrap_err().to_string();
        assert!(message.contains("`shoppers.hs256_secret`"), "{message}");
        assert!(!message.contains("9876543210987654"), "{message}");
        // Quoted, it is a string.
        jail.set_env(
            "MERIDIAN_ORIGIN__SHOPPERS__HS256_SECRET",
            "\"9876543210987654\"",
        );
        let sample = origin("origin.toml").unwrap().config;
        assert_eq!(
            sample.shoppers.hs256_secret.as_ref().unwrap().expose(),
            "9876543210987654"
        );
        // Nor in a debug print of what was loaded (the values and where
        // they came from).

        let loaded = origin("origin.toml").unwrap();
        let printed = format!("{loaded:?}");
        for secret in [
            "9876543210987654",
            "ops-token-0123456789",
            "guest-cookie-secret-0123456789",
            "db-password-42",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("db.example"), "{printed}");
        Ok(())
    });
}

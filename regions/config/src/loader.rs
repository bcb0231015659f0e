//! The loader: the file (TOML, or JSON when it is named `*.json` — what a
//! Helm chart renders with `toJson`), then the binary's environment variables, then
//! the `*_file` rewrite over the merged tree, then extraction into the
//! typed config — each failure an error naming where the value came from.
//!
//! How the layers stay traceable: both layers are given to figment under a
//! private profile (`raw`); every value carries the tag of the layer that
//! set it. The merged `raw` tree is rewritten (`*_file` keys replaced by the
//! files' contents, which take the tag of their `_file` key) and given back
//! to the same figment as its default profile, which is what is extracted:
//! the tags, hence the layers, survive the rewrite.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind, OneOf};
use figment::providers::Env;
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

/// A key ending in this names the file that holds the value of the key
/// without it (`token_file` → `token`).
pub const FILE_SUFFIX: &str = "_file";

/// Which binary's environment variables override its file. Each binary has
/// its own prefix, so an edge never reads an origin's variables, nor either
/// of them the CLI's (`MERIDIAN_LOG`, `MERIDIAN_ADMIN_TOKEN`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvPrefix(&'static str);

impl EnvPrefix {
    /// `MERIDIAN_ORIGIN__DATABASE__POOL_SIZE=32`
    pub const ORIGIN: EnvPrefix = EnvPrefix("MERIDIAN_ORIGIN__");
    /// `MERIDIAN_EDGE__REDIS_URL=redis://…`
    pub const EDGE: EnvPrefix = EnvPrefix("MERIDIAN_EDGE__");

    /// Separates nested keys in a variable's name.
    pub const SEPARATOR: &'static str = "__";

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The variable that sets `field` (`database.pool_size` →
    /// `MERIDIAN_ORIGIN__DATABASE__POOL_SIZE`).
    pub fn variable(self, field: &str) -> String {
        self.variable_of(&segments(field))
    }

    fn variable_of<S: AsRef<str>>(self, keys: &[S]) -> String {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| k.as_ref().to_ascii_uppercase())
            .collect();
        format!("{}{}", self.0, keys.join(Self::SEPARATOR))
    }

    fn provider(self) -> Env {
        Env::prefixed(self.0)
            .split(Self::SEPARATOR)
            .profile(raw_profile())
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// The config file (also for values not set anywhere: a missing field).
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::File(path) => write!(f, "{}", path.display()),
            Layer::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// Why a config could not be loaded. Messages name the file or variable
/// and the field; they never contain a value that could be a secret (a
/// string found where something else was expected is shown as "a string").
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not TOML. Only the position and the parser's message are kept (the
    /// parser's excerpt of the line could show a secret).
    #[error("{}: not valid TOML: line {line}, column {column}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value that does not fit its field (wrong type, unknown field,
    /// missing field, a bad URL…).
    #[error("{layer}: field `{field}`: {problem}")]
    Field {
        layer: Layer,
        field: String,
        problem: String,
    },
    #[error(
        "`{field}` ({field_layer}) and `{file_field}` ({file_layer}) are both set: give the value or the file that holds it, not both"
    )]
    Ambiguous {
        field: String,
        field_layer: Layer,
        file_field: String,
        file_layer: Layer,
    },
    #[error("{layer}: field `{field}`: cannot read {}: {source}", path.display())]
    SecretFile {
        layer: Layer,
        field: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{layer}: field `{field}`: must be the path of a file (a string)")]
    NotAPath { layer: Layer, field: String },
    /// figment refused a layer (not expected: both layers are read above).
    #[error("config layers: {0}")]
    Layers(String),
}

/// A loaded config and where each of its values came from.
#[derive(Debug)]
pub struct Loaded<T> {
    pub config: T,
    pub provenance: Provenance,
}

/// Which layer set which field: lets a `validate()` error found after
/// loading name the file or the variable too. Its `Debug` shows the layers,
/// never the values (they include the secrets).
#[derive(Clone)]
pub struct Provenance {
    file: PathBuf,
    prefix: EnvPrefix,
    /// The environment provider's metadata name (how its tag is told from
    /// the file's).
    env_name: String,
    /// The keys the environment set, as path segments (lower case).
    env_keys: Vec<Vec<String>>,
    figment: Figment,
    root: Value,
}

impl fmt::Debug for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provenance")
            .field("file", &self.file)
            .field("prefix", &self.prefix)
            .field("env_keys", &self.env_keys)
            .finish_non_exhaustive()
    }
}

impl Provenance {
    /// The layer that set `field` (`database.pool_size`,
    /// `admin_tokens[0].token`; for a field nobody set, the nearest parent
    /// that was; the file when none was).
    pub fn layer_of(&self, field: &str) -> Layer {
        self.layer_of_segments(&segments(field))
    }

    fn layer_of_segments(&self, path: &[String]) -> Layer {
        let mut value = &self.root;
        let mut tag = Tag::Default;
        for key in path {
            let next = match value {
                Value::Dict(_, dict) => dict.get(key),
                Value::Array(_, items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            let Some(next) = next else { break };
            value = next;
            if !next.tag().is_default() {
                tag = next.tag();
            }
        }
        match self.figment.get_metadata(tag) {
            Some(metadata) if metadata.name == self.env_name => Layer::Env(self.variable_for(path)),
            _ => Layer::File(self.file.clone()),
        }
    }

    /// The environment variable that set `path` (or its `_file` form, or a
    /// parent of it): the longest key the environment set that leads there.
    fn variable_for(&self, path: &[String]) -> String {
        let leads_to = |key: &Vec<String>| {
            key.len() <= path.len()
                && key.iter().zip(path).enumerate().all(|(i, (k, p))| {
                    k == p || (i + 1 == key.len() && *k == format!("{p}{FILE_SUFFIX}"))
                })
        };
        match self
            .env_keys
            .iter()
            .filter(|k| leads_to(k))
            .max_by_key(|k| k.len())
        {
            Some(key) => self.prefix.variable_of(key),
            None => self.prefix.variable_of(path),
        }
    }

    fn field_error(&self, error: figment::Error) -> LoadError {
        let mut path = error.path;
        let problem = match error.kind {
            Kind::MissingField(name) => {
                path.push(name.into_owned());
                "missing (no default: set it)".to_string()
            }
            // The unknown key is already the last element of the path.
            Kind::UnknownField(_, expected) => {
                format!("unknown field (expected {})", OneOf(expected))
            }
            Kind::InvalidType(actual, expected) => {
                format!("expected {expected}, found {}", shown(&actual))
            }
            Kind::InvalidValue(actual, expected) => {
                format!("invalid value {}: expected {expected}", shown(&actual))
            }
            Kind::UnknownVariant(variant, expected) => {
                format!("unknown variant `{variant}`, expected {}", OneOf(expected))
            }
            Kind::Message(message) => message,
            other => other.to_string(),
        };
        LoadError::Field {
            layer: self.layer_of_segments(&path),
            field: display_path(&path),
            problem,
        }
    }
}

/// Loads `file`, overridden by the variables under `prefix`, with every
/// `<name>_file` key replaced by the contents of its file, into `T`.
/// Validation beyond types (lengths, cross-field rules) is the caller's
/// `validate()`; [`Loaded::provenance`] names the layer of a field it
/// refuses.
pub fn load<T: DeserializeOwned>(file: &Path, prefix: EnvPrefix) -> Result<Loaded<T>, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let dict: Dict = if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text).map_err(|error| LoadError::Syntax {
            file: file.to_path_buf(),
            line: error.line(),
            column: error.column(),
            // serde_json's message names no value, only what it expected.
            message: error
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string(),
        })?
    } else {
        toml::from_str(&text).map_err(|error| syntax_error(file, &text, &error))?
    };

    let env = prefix.provider();
    let env_name = env.metadata().name.into_owned();
    let env_keys = env
        .iter()
        .map(|(key, _)| key.as_str().split('.').map(str::to_string).collect())
        .collect();
    let layers = Figment::new()
        .merge(TomlFile {
            path: file.to_path_buf(),
            dict,
        })
        .merge(env);
    let mut merged = layers
        .data()
        .map_err(|error| LoadError::Layers(error.to_string()))?;
    let mut root = merged.remove(&raw_profile()).unwrap_or_default();

    let mut provenance = Provenance {
        file: file.to_path_buf(),
        prefix,
        env_name,
        env_keys,
        figment: layers.clone(),
        root: Value::Dict(Tag::Default, root.clone()),
    };
    resolve_files(&mut root, &mut Vec::new(), &provenance)?;

    let figment = layers
        .merge(Resolved(root.clone()))
        .select(Profile::Default);
    provenance.figment = figment.clone();
    provenance.root = Value::Dict(Tag::Default, root);
    let config = figment
        .extract::<T>()
        .map_err(|error| provenance.field_error(error))?;
    Ok(Loaded { config, provenance })
}

/// Replaces every `<name>_file` key of `dict`, and of the tables and
/// arrays of tables below it, by `<name>` holding the file's contents.
fn resolve_files(
    dict: &mut Dict,
    path: &mut Vec<String>,
    provenance: &Provenance,
) -> Result<(), LoadError> {
    let file_keys: Vec<String> = dict
        .keys()
        .filter(|k| k.len() > FILE_SUFFIX.len() && k.ends_with(FILE_SUFFIX))
        .cloned()
        .collect();
    for file_key in file_keys {
        let name = file_key[..file_key.len() - FILE_SUFFIX.len()].to_string();
        let at = |key: &str| {
            let mut full = path.clone();
            full.push(key.to_string());
            full
        };
        let (name_path, file_path) = (at(&name), at(&file_key));
        if dict.contains_key(&name) {
            return Err(LoadError::Ambiguous {
                field: display_path(&name_path),
                field_layer: provenance.layer_of_segments(&name_path),
                file_field: display_path(&file_path),
                file_layer: provenance.layer_of_segments(&file_path),
            });
        }
        let Some(Value::String(tag, secret_path)) = dict.remove(&file_key) else {
            return Err(LoadError::NotAPath {
                layer: provenance.layer_of_segments(&file_path),
                field: display_path(&file_path),
            });
        };
        let contents =
            std::fs::read_to_string(&secret_path).map_err(|source| LoadError::SecretFile {
                layer: provenance.layer_of_segments(&file_path),
                field: display_path(&file_path),
                path: PathBuf::from(&secret_path),
                source,
            })?;
        let value = contents.trim_end_matches(['\n', '\r']).to_string();
        dict.insert(name, Value::String(tag, value));
    }
    for (key, value) in dict.iter_mut() {
        path.push(key.clone());
        resolve_value(value, path, provenance)?;
        path.pop();
    }
    Ok(())
}

fn resolve_value(
    value: &mut Value,
    path: &mut Vec<String>,
    provenance: &Provenance,
) -> Result<(), LoadError> {
    match value {
        Value::Dict(_, dict) => resolve_files(dict, path, provenance),
        Value::Array(_, items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                resolve_value(item, path, provenance)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The layers' private profile (see the module doc).
fn raw_profile() -> Profile {
    Profile::const_new("meridian-layers")
}

/// The config file, read and parsed by `load` (so a missing or malformed
/// file is its own error, and a relative path is never looked up in parent
/// folders as figment's `Toml::file` would).
struct TomlFile {
    path: PathBuf,
    dict: Dict,
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("config file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(raw_profile().collect(self.dict.clone()))
    }
}

/// The merged layers after the `*_file` rewrite; its values keep their
/// layers' tags.
struct Resolved(Dict);

impl Provider for Resolved {
    fn metadata(&self) -> Metadata {
        Metadata::named("the config after `*_file` secrets were read")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

fn syntax_error(file: &Path, text: &str, error: &toml::de::Error) -> LoadError {
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    LoadError::Syntax {
        file: file.to_path_buf(),
        line,
        column,
        message: error.message().trim_end().to_string(),
    }
}

/// What was found, without showing a string (it could be a secret).
fn shown(actual: &Actual) -> String {
    match actual {
        Actual::Str(_) => "a string".into(),
        Actual::Char(_) => "a character".into(),
        Actual::Bytes(_) => "bytes".into(),
        other => other.to_string(),
    }
}

/// `admin_tokens.0.token` → `admin_tokens[0].token`.
fn display_path<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for key in path {
        let key = key.as_ref();
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{key}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
    }
    out
}

/// `admin_tokens[0].token` (or `admin_tokens.0.token`) → its segments.
fn segments(field: &str) -> Vec<String> {
    field
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

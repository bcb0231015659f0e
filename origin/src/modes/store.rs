//! The mode table and its audit log on the catalog primary. A change is
//! one transaction: the scope's row (locked), the audit entry and an
//! invalidation entry (`modes`) that carries the change to every region
//! with the replication stream.

use std::collections::BTreeMap;

use meridian_contracts::modes::{Feature, Mode, ModeTable, Setting};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::catalog::store::log_invalidation;
use crate::db::WriteTx;

/// The scope of the global default.
pub const GLOBAL: &str = "*";

/// The invalidation key a mode change writes.
pub const INVALIDATION_KEY: &str = "modes";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored value this code does not understand (a newer version
    /// wrote it, or someone edited the table by hand).
    #[error("unreadable mode setting for {scope}: {detail}")]
    Unreadable { scope: String, detail: String },
}

fn setting(
    scope: &str,
    mode: Option<String>,
    features: serde_json::Value,
) -> Result<Setting, StoreError> {
    let unreadable = |detail: String| StoreError::Unreadable {
        scope: scope.to_string(),
        detail,
    };
    let mode = match mode {
        Some(text) => Some(Mode::parse(&text).ok_or_else(|| unreadable(format!("mode {text}")))?),
        None => None,
    };
    let features: BTreeMap<Feature, bool> =
        serde_json::from_value(features).map_err(|e| unreadable(e.to_string()))?;
    Ok(Setting { mode, features })
}

/// One stored row.
#[derive(Debug, Clone)]
pub struct Row {
    pub scope: String,
    pub mode: Option<String>,
    pub features: serde_json::Value,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Every row of the table.
pub async fn rows(pool: &PgPool) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as!(
        Row,
        "select scope, mode, features, updated_at from mode_settings order by scope"
    )
    .fetch_all(pool)
    .await
}

/// The rows as the typed table.
pub fn table(rows: Vec<Row>) -> Result<ModeTable, StoreError> {
    let mut table = ModeTable::default();
    for row in rows {
        let setting = setting(&row.scope, row.mode, row.features)?;
        if row.scope == GLOBAL {
            table.global = setting;
        } else {
            table.regions.insert(row.scope, setting);
        }
    }
    Ok(table)
}

/// What a change asks for: a new mode (`None`: unchanged; for a region,
/// `Some(None)` drops its own mode and inherits the global one) and
/// feature switches (`None` in the map: back to inherited).
#[derive(Debug, Default)]
pub struct Change {
    pub mode: Option<Option<Mode>>,
    pub features: BTreeMap<Feature, Option<bool>>,
}

/// Applies `change` to `scope` for `actor`, with `reason`; returns the
/// setting before and after.
pub async fn apply(
    tx: &mut WriteTx,
    scope: &str,
    change: &Change,
    actor: &str,
    reason: &str,
) -> Result<(Setting, Setting), StoreError> {
    let current = sqlx::query!(
        "select mode, features from mode_settings where scope = $1 for update",
        scope
    )
    .fetch_optional(&mut **tx)
    .await?;
    let before = match current {
        Some(row) => setting(scope, row.mode, row.features)?,
        None => Setting::default(),
    };
    let mut after = before.clone();
    if let Some(mode) = change.mode {
        after.mode = mode;
    }
    for (feature, on) in &change.features {
        match on {
            Some(on) => after.features.insert(*feature, *on),
            None => after.features.remove(feature),
        };
    }
    sqlx::query!(
        r#"
        insert into mode_settings (scope, mode, features, updated_by)
        values ($1, $2, $3, $4)
        on conflict (scope) do update
            set mode = excluded.mode, features = excluded.features,
                updated_at = now(), updated_by = excluded.updated_by
        "#,
        scope,
        after.mode.map(Mode::as_str),
        Json(&after.features) as _,
        actor,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        r#"
        insert into mode_changes (actor, scope, old_mode, new_mode, old_features, new_features, reason)
        values ($1, $2, $3, $4, $5, $6, $7)
        "#,
        actor,
        scope,
        before.mode.map(Mode::as_str),
        after.mode.map(Mode::as_str),
        Json(&before.features) as _,
        Json(&after.features) as _,
        reason,
    )
    .execute(&mut **tx)
    .await?;
    log_invalidation(tx, &[INVALIDATION_KEY.to_string()]).await?;
    Ok((before, after))
}

/// One audit-log entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Recorded {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The admin token's name.
    pub actor: String,
    /// A region, or `global`.
    pub scope: String,
    pub old_mode: Option<String>,
    pub new_mode: Option<String>,
    /// Feature switches before the change (feature → on).
    #[schema(value_type = Object)]
    pub old_features: serde_json::Value,
    /// Feature switches after the change (feature → on).
    #[schema(value_type = Object)]
    pub new_features: serde_json::Value,
    pub reason: String,
}

/// The newest `limit` changes before id `before` (newest first), of
/// `scope` if given.
pub async fn history(
    pool: &PgPool,
    scope: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Recorded>, sqlx::Error> {
    sqlx::query_as!(
        Recorded,
        r#"
        select id, at, actor, scope, old_mode, new_mode, old_features, new_features, reason
        from mode_changes
        where ($1::text is null or scope = $1) and ($2::bigint is null or id < $2)
        order by id desc
        limit $3
        "#,
        scope,
        before,
        limit
    )
    .fetch_all(pool)
    .await
}

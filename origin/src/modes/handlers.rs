//! The admin API for operating modes:
//!
//! - `GET /v1/admin/modes`: the global default, every region's override
//!   and what each known region runs with;
//! - `GET /v1/admin/modes/{region}` (`global` for the default);
//! - `PUT /v1/admin/modes/{region}` `{"mode": "degraded", "features":
//!   {"recommendations": false}, "reason": "…"}`: `mode` absent keeps it,
//!   `null` (regions only) inherits the global one; a feature `null` goes
//!   back to inherited; `reason` is required. Recorded in the audit log
//!   with the admin token's name;
//! - `GET /v1/admin/modes/history?region=&before=&limit=`: the audit log,
//!   newest first;
//! - `GET /v1/modes` (public): what this origin applies for its region,
//!   from memory (the edges' polling backstop; a storefront may hide
//!   switched-off features with it).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use meridian_contracts::modes::{Effective, Feature, Mode, ModeTable, Setting};
use serde::{Deserialize, Deserializer, Serialize};

use super::ModesState;
use super::store::{self, Change, GLOBAL, Recorded, StoreError};
use crate::auth::{Admin, Ops};
use crate::problem::{ApiError, ApiJson, ApiPath};

/// Longest accepted reason.
pub const MAX_REASON: usize = 500;

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Db(error) => ApiError::from(error),
        unreadable @ StoreError::Unreadable { .. } => ApiError::internal(unreadable),
    }
}

/// `GET /v1/admin/modes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModesOverview {
    /// The global default.
    pub global: Setting,
    /// Each region's override (what it sets explicitly).
    pub regions: BTreeMap<String, Setting>,
    /// What each known region runs with.
    pub effective: BTreeMap<String, Effective>,
}

/// `GET /v1/admin/modes/{region}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScopeSetting {
    /// A region, or `global`.
    pub scope: String,
    pub setting: Setting,
    /// What the region runs with (absent for `global`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective: Option<Effective>,
}

/// `PUT /v1/admin/modes/{region}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModeChanged {
    /// A region, or `global`.
    pub scope: String,
    pub before: Setting,
    pub after: Setting,
    /// The admin token's name, as recorded in the audit log.
    pub changed_by: String,
    /// What the regions the change reaches now run with.
    pub effective: BTreeMap<String, Effective>,
}

/// `GET /v1/admin/modes/history`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModeHistory {
    /// Newest first.
    pub changes: Vec<Recorded>,
    /// `before` for the next page; null on the last one.
    pub next_before: Option<i64>,
}

fn private(body: impl Serialize) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        )],
        axum::Json(body),
    )
        .into_response()
}

/// `GET /v1/modes`: this origin's applied setting, no database read.
#[utoipa::path(get, path = "/v1/modes", tag = "modes",
    responses((status = 200, description = "The setting this origin applies for its region", body = meridian_contracts::modes::Announcement)))]
pub async fn applied(State(state): State<ModesState>) -> Response {
    let announcement = state.applied.current().announcement(&state.region);
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(announcement),
    )
        .into_response()
}

/// `global` → the default's scope; a region → itself, if known.
fn scope(state: &ModesState, raw: &str) -> Result<String, ApiError> {
    if raw == "global" {
        return Ok(GLOBAL.to_string());
    }
    let known = state.regions.is_empty() || state.regions.iter().any(|r| r == raw);
    if !meridian_topology::is_slug(raw) || !known {
        return Err(ApiError::NotFound(format!(
            "no region {raw:?} (use `global` for the default)"
        )));
    }
    Ok(raw.to_string())
}

/// The table as the primary has it now.
async fn load(state: &ModesState) -> Result<ModeTable, ApiError> {
    let (rows, _) = state
        .db
        .read_primary()
        .run(|conn| async move { store::rows(conn.pool()).await })
        .await?;
    store::table(rows).map_err(store_error)
}

fn label(scope: &str) -> &str {
    if scope == GLOBAL { "global" } else { scope }
}

fn effective_view(table: &ModeTable, regions: &[String]) -> BTreeMap<String, Effective> {
    regions
        .iter()
        .chain(table.regions.keys())
        .map(|region| (region.clone(), table.effective(region)))
        .collect()
}

#[utoipa::path(get, path = "/v1/admin/modes", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Global and regional settings, and what each region runs with", body = ModesOverview)))]
pub async fn list(
    State(state): State<ModesState>,
    _admin: Admin<Ops>,
) -> Result<Response, ApiError> {
    let table = load(&state).await?;
    let effective = effective_view(&table, &state.regions);
    Ok(private(ModesOverview {
        global: table.global,
        regions: table.regions,
        effective,
    }))
}

#[utoipa::path(get, path = "/v1/admin/modes/{region}", tag = "admin", security(("admin" = [])),
    params(("region" = String, Path, description = "A region, or `global`")),
    responses((status = 200, description = "One scope's setting", body = ScopeSetting)))]
pub async fn show(
    State(state): State<ModesState>,
    _admin: Admin<Ops>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let scope = scope(&state, &raw)?;
    let table = load(&state).await?;
    let setting = if scope == GLOBAL {
        table.global.clone()
    } else {
        table.regions.get(&scope).cloned().unwrap_or_default()
    };
    Ok(private(ScopeSetting {
        scope: label(&scope).to_string(),
        setting,
        effective: (scope != GLOBAL).then(|| table.effective(&scope)),
    }))
}

/// `Some(x)` when the field is present, even as `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeInput {
    /// A mode, or `null` to inherit (regions only); absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub mode: Option<Option<String>>,
    #[serde(default)]
    pub features: BTreeMap<String, Option<bool>>,
    pub reason: String,
}

fn change(scope: &str, input: &ChangeInput) -> Result<Change, ApiError> {
    let mode = match &input.mode {
        None => None,
        Some(None) if scope == GLOBAL => {
            return Err(ApiError::Unprocessable(
                "the global default needs a mode".into(),
            ));
        }
        Some(None) => Some(None),
        Some(Some(text)) => Some(Some(Mode::parse(text).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "unknown mode {text:?}; one of: {}",
                Mode::ALL.map(Mode::as_str).join(", ")
            ))
        })?)),
    };
    let mut features = BTreeMap::new();
    for (name, on) in &input.features {
        let feature = Feature::parse(name).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "unknown feature {name:?}; one of: {}",
                Feature::ALL.map(Feature::as_str).join(", ")
            ))
        })?;
        features.insert(feature, *on);
    }
    if mode.is_none() && features.is_empty() {
        return Err(ApiError::Unprocessable(
            "nothing to change: give `mode` and/or `features`".into(),
        ));
    }
    let reason = input.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApiError::Unprocessable(format!(
            "`reason` must be 1 to {MAX_REASON} characters"
        )));
    }
    Ok(Change { mode, features })
}

#[utoipa::path(put, path = "/v1/admin/modes/{region}", tag = "admin", security(("admin" = [])),
    params(("region" = String, Path, description = "A region, or `global`")), request_body = ChangeInput,
    responses((status = 200, description = "The setting after the change", body = ModeChanged)))]
pub async fn update(
    State(state): State<ModesState>,
    admin: Admin<Ops>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(input): ApiJson<ChangeInput>,
) -> Result<Response, ApiError> {
    let scope = scope(&state, &raw)?;
    let change = change(&scope, &input)?;
    let write = state.db.write();
    let mut tx = write.begin().await?;
    let (before, after): (Setting, Setting) =
        store::apply(&mut tx, &scope, &change, &admin.name, input.reason.trim())
            .await
            .map_err(store_error)?;
    write.commit(tx).await?;
    state.applied.reload();
    tracing::info!(
        admin = %admin.name,
        scope = label(&scope),
        before = ?before,
        after = ?after,
        reason = input.reason.trim(),
        "operating mode changed"
    );
    let table = load(&state).await?;
    let effective = if scope == GLOBAL {
        effective_view(&table, &state.regions)
    } else {
        BTreeMap::from([(scope.clone(), table.effective(&scope))])
    };
    Ok(private(ModeChanged {
        scope: label(&scope).to_string(),
        before,
        after,
        changed_by: admin.name,
        effective,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub region: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/admin/modes/history", tag = "admin", security(("admin" = [])), params(HistoryQuery),
    responses((status = 200, description = "The audit log, newest first", body = ModeHistory)))]
pub async fn history(
    State(state): State<ModesState>,
    _admin: Admin<Ops>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("`limit` must be 1 to 500".into()));
    }
    let scope = match &query.region {
        Some(raw) => Some(scope(&state, raw)?),
        None => None,
    };
    let (entries, _) = state
        .db
        .read_primary()
        .run(|conn| {
            let scope = scope.clone();
            async move { store::history(conn.pool(), scope.as_deref(), query.before, limit).await }
        })
        .await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let changes = entries
        .into_iter()
        .map(|mut e| {
            e.scope = label(&e.scope).to_string();
            e
        })
        .collect();
    Ok(private(ModeHistory {
        changes,
        next_before: next,
    }))
}

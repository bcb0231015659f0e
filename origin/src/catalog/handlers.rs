//! HTTP handlers of the catalog. Reads set `Cache-Control`, `ETag` (304 on
//! `If-None-Match`), `Surrogate-Key` and `X-Served-By-Region`; admin writes
//! return the read-your-writes token in `X-Meridian-Lsn`.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::model::{CurrencyCode, ProductId, ProductInput, ProductView, parse_slug};
use super::pricing::FxTable;
use super::{CatalogState, cursor, store};
use crate::auth::{Admin, Catalog};
use crate::cache::{CacheEntry, Loaded, Tier, etag_of, header_value};
use crate::db::{DbRouter, Lsn, ReadDb};
use crate::problem::{ApiError, ApiJson, ApiPath, ApiQuery};

/// Read-your-writes token: returned by writes, accepted by reads.
pub const LSN_HEADER: HeaderName = HeaderName::from_static("x-meridian-lsn");
pub const REGION_HEADER: HeaderName = HeaderName::from_static("x-served-by-region");
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// Which tier of the origin's cache answered (`l1`, `l2`, `origin`, `bypass`).
pub const TIER_HEADER: HeaderName = HeaderName::from_static("x-origin-cache");

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;
/// Cache key of the FX table.
const FX_KEY: &str = "fx:rates";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    currency: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    category: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    currency: Option<String>,
}

/// `GET /v1/categories`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryList {
    pub items: Vec<super::model::CategoryView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    pub items: Vec<super::model::ProductSummary>,
    pub next_cursor: Option<String>,
}

/// The request headers catalog reads look at (copied alone, not the whole
/// header map: this is on the L1-hit hot path).
pub struct ReadHeaders {
    if_none_match: Option<HeaderValue>,
    lsn: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for ReadHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ReadHeaders {
            if_none_match: parts.headers.get(header::IF_NONE_MATCH).cloned(),
            lsn: parts.headers.get(&LSN_HEADER).cloned(),
        })
    }
}

/// The read-your-writes token, if any: well formed, and a position the
/// primary has reached (else 400: no write returned it).
async fn read_token(db: &DbRouter, headers: &ReadHeaders) -> Result<Option<Lsn>, ApiError> {
    let Some(value) = &headers.lsn else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("`X-Meridian-Lsn` is not ASCII".into()))?;
    let lsn = text
        .parse::<Lsn>()
        .map_err(|e| ApiError::BadRequest(format!("`X-Meridian-Lsn`: {e}")))?;
    db.check_token(lsn).await.map_err(|e| {
        ApiError::BadRequest(format!("`X-Meridian-Lsn` {text} is no write's token: {e}"))
    })?;
    Ok(Some(lsn))
}

fn target_currency(raw: Option<&str>) -> Result<Option<CurrencyCode>, ApiError> {
    raw.map(|c| CurrencyCode::parse(c).map_err(|e| ApiError::BadRequest(e.to_string())))
        .transpose()
}

fn to_bytes<T: Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

/// True when `If-None-Match` names `etag` (or `*`); weak comparison.
fn not_modified(headers: &ReadHeaders, etag: &HeaderValue) -> bool {
    let Some(value) = headers.if_none_match.as_ref().and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let etag = etag.as_bytes();
    let etag = etag.strip_prefix(b"W/").unwrap_or(etag);
    value
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/").as_bytes() == etag)
}

/// A cacheable JSON answer with all catalog headers.
struct CatalogResponse<'a> {
    state: &'a CatalogState,
    body: Bytes,
    etag: HeaderValue,
    tags: HeaderValue,
    cache_control: HeaderValue,
    tier: &'static str,
}

impl CatalogResponse<'_> {
    /// Builds the response in place (no header-map merging on the hot path).
    fn into_response(self, request: &ReadHeaders) -> Response {
        let not_modified = not_modified(request, &self.etag);
        let mut response = if not_modified {
            let mut response = Response::new(axum::body::Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            Response::new(axum::body::Body::from(self.body))
        };
        let headers = response.headers_mut();
        headers.reserve(8);
        if !not_modified {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        headers.insert(header::CACHE_CONTROL, self.cache_control);
        headers.insert(header::ETAG, self.etag);
        headers.insert(SURROGATE_KEY, self.tags);
        headers.insert(REGION_HEADER, self.state.region.clone());
        if self.state.debug_headers {
            headers.insert(TIER_HEADER, HeaderValue::from_static(self.tier));
        }
        headers.insert(header::VARY, HeaderValue::from_static("x-meridian-lsn"));
        response
    }
}

fn not_found_response(state: &CatalogState, detail: String) -> Response {
    let mut response = ApiError::NotFound(detail).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, state.headers.not_found.clone());
    headers.insert(REGION_HEADER, state.region.clone());
    response
}

async fn load_product(read: ReadDb<'_>, id: i64) -> Result<Option<Loaded>, sqlx::Error> {
    let (product, _) = read
        .run(|conn| async move { store::product(&conn, id).await })
        .await?;
    Ok(product.map(|p| {
        let tags = format!("product:{} category:{}", p.id, p.category);
        let body = serde_json::to_vec(&p).map(Bytes::from).unwrap_or_default();
        Loaded { body, tags }
    }))
}

/// The FX table, through the tiered cache with its own TTL.
async fn fx_table(state: &CatalogState) -> Result<FxTable, ApiError> {
    let db = state.db.clone();
    let (entry, _) = state
        .cache
        .get_or_load(FX_KEY, Some(state.fx_ttl), || async move {
            let (rates, _) = db
                .read()
                .run(|conn| async move { store::fx_rates(&conn).await })
                .await?;
            let table = FxTable {
                per_usd_nanos: rates.into_iter().collect(),
            };
            let body = serde_json::to_vec(&table)
                .map(Bytes::from)
                .unwrap_or_default();
            Ok::<_, sqlx::Error>(Some(Loaded {
                body,
                tags: "fx".into(),
            }))
        })
        .await?;
    let body = entry.body().cloned().unwrap_or_default();
    serde_json::from_slice(&body).map_err(ApiError::internal)
}

/// `GET /v1/products/{id}`
#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog", params(crate::openapi::IdPath, ProductQuery),
    responses((status = 200, description = "The product", body = super::model::ProductView), (status = 304, description = "Not modified (If-None-Match)")))]
#[tracing::instrument(level = "debug", skip_all, fields(id = %raw_id))]
pub async fn get_product(
    State(state): State<CatalogState>,
    ApiPath(raw_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ProductQuery>,
    request: ReadHeaders,
) -> Result<Response, ApiError> {
    let id = ProductId::parse(&raw_id)?;
    let token = read_token(&state.db, &request).await?;
    let currency = target_currency(query.currency.as_deref())?;

    let (entry, tier) = match token {
        // A read after a write skips the cache: only a server that has
        // replayed the write may answer.
        Some(lsn) => {
            let loaded = Box::pin(load_product(state.db.read_after(Some(lsn)), id.get())).await?;
            let entry = match loaded {
                Some(l) => CacheEntry::found(l.body, l.tags),
                None => CacheEntry::not_found(),
            };
            (entry, None)
        }
        None => {
            let db = state.db.clone();
            let (entry, tier) = state
                .cache
                .get_or_load(&format!("product:{}", id.get()), None, || async move {
                    load_product(db.read(), id.get()).await
                })
                .await?;
            (entry, Some(tier))
        }
    };
    let Some(body) = entry.body() else {
        return Ok(not_found_response(
            &state,
            format!("product {} does not exist", id.get()),
        ));
    };
    let cache_control = if tier.is_some() {
        state.headers.found.clone()
    } else {
        HeaderValue::from_static("private, no-store")
    };
    let tier = tier.map_or("bypass", Tier::as_str);

    let (body, etag) = match currency {
        Some(to) => Box::pin(convert_product(&state, body, to)).await?,
        None => (body.clone(), entry.etag()),
    };
    Ok(CatalogResponse {
        state: &state,
        body,
        etag,
        tags: entry.tags(),
        cache_control,
        tier,
    }
    .into_response(&request))
}

/// A cached product body re-priced in another currency, with its ETag.
async fn convert_product(
    state: &CatalogState,
    body: &Bytes,
    to: CurrencyCode,
) -> Result<(Bytes, HeaderValue), ApiError> {
    let mut product: ProductView = serde_json::from_slice(body).map_err(ApiError::internal)?;
    if product.price.currency != to.code() {
        let fx = fx_table(state).await?;
        product.price = fx.convert_view(&product.price, to)?;
        for variant in &mut product.variants {
            variant.price = fx.convert_view(&variant.price, to)?;
        }
    }
    let body = to_bytes(&product)?;
    let etag = etag_of(&body);
    Ok((body, etag))
}

/// `GET /v1/products?category=&limit=&cursor=&currency=`
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(ListQuery),
    responses((status = 200, description = "A page of products", body = ProductPage), (status = 304, description = "Not modified")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_products(
    State(state): State<CatalogState>,
    ApiQuery(query): ApiQuery<ListQuery>,
    request: ReadHeaders,
) -> Result<Response, ApiError> {
    let token = read_token(&state.db, &request).await?;
    let category = query.category.as_deref().map(parse_slug).transpose()?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("`limit` must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let after = query
        .cursor
        .as_deref()
        .map(cursor::decode)
        .transpose()?
        .unwrap_or(0);
    let currency = target_currency(query.currency.as_deref())?;

    let read = state.db.read_after(token);
    let category_ref = category.clone();
    let (mut items, _) = read
        .run(|conn| {
            let category = category_ref.clone();
            async move { store::list_products(&conn, category.as_deref(), after, limit + 1).await }
        })
        .await?;
    if items.is_empty()
        && let Some(slug) = &category
    {
        let slug_ref = slug.clone();
        let (exists, _) = read
            .run(|conn| {
                let slug = slug_ref.clone();
                async move { store::category_exists(&conn, &slug).await }
            })
            .await?;
        if !exists {
            return Ok(not_found_response(
                &state,
                format!("category `{slug}` does not exist"),
            ));
        }
    }
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|p| cursor::encode(p.id))
    } else {
        None
    };
    if let Some(to) = currency {
        let fx = fx_table(&state).await?;
        for item in &mut items {
            item.price = fx.convert_view(&item.price, to)?;
        }
    }
    let body = to_bytes(&ProductPage { items, next_cursor })?;
    let etag = etag_of(&body);
    let tags = match &category {
        Some(slug) => format!("products category:{slug}"),
        None => "products".to_string(),
    };
    let cache_control = if token.is_some() {
        HeaderValue::from_static("private, no-store")
    } else {
        state.headers.list.clone()
    };
    Ok(CatalogResponse {
        state: &state,
        body,
        etag,
        tags: header_value(&tags),
        cache_control,
        tier: if token.is_some() { "bypass" } else { "origin" },
    }
    .into_response(&request))
}

/// `GET /v1/categories`
#[utoipa::path(get, path = "/v1/categories", tag = "catalog",
    responses((status = 200, description = "Every category", body = CategoryList), (status = 304, description = "Not modified")))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list_categories(
    State(state): State<CatalogState>,
    request: ReadHeaders,
) -> Result<Response, ApiError> {
    let db = state.db.clone();
    let (entry, tier) = state
        .cache
        .get_or_load("categories", None, || async move {
            let (categories, _) = db
                .read()
                .run(|conn| async move { store::categories(&conn).await })
                .await?;
            let body = serde_json::to_vec(&CategoryList { items: categories })
                .map(Bytes::from)
                .unwrap_or_default();
            Ok::<_, sqlx::Error>(Some(Loaded {
                body,
                tags: "categories".into(),
            }))
        })
        .await?;
    let body = entry.body().cloned().unwrap_or_default();
    Ok(CatalogResponse {
        state: &state,
        body,
        etag: entry.etag(),
        tags: entry.tags(),
        cache_control: state.headers.list.clone(),
        tier: tier.as_str(),
    }
    .into_response(&request))
}

/// Maps constraint violations of a product write to client errors.
fn write_error(error: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &error {
        match db.code().as_deref() {
            Some("23505") => {
                return ApiError::Conflict(
                    "a product or variant with this SKU already exists".into(),
                );
            }
            Some("23503") => {
                return ApiError::Unprocessable("the category does not exist".into());
            }
            Some("23514") => {
                return ApiError::Unprocessable(format!(
                    "a value is out of range ({})",
                    db.constraint().unwrap_or("check")
                ));
            }
            _ => {}
        }
    }
    ApiError::from(error)
}

fn write_response(
    state: &CatalogState,
    status: StatusCode,
    lsn: Lsn,
    product: Option<ProductView>,
    location: Option<String>,
) -> Result<Response, ApiError> {
    let body = to_bytes(&product)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(LSN_HEADER, header_value(&lsn.to_string()));
    headers.insert(REGION_HEADER, state.region.clone());
    if let Some(location) = location {
        headers.insert(header::LOCATION, header_value(&location));
    }
    Ok((status, headers, body).into_response())
}

/// Reads a product back after a write, from a server that has the write.
async fn read_back(
    state: &CatalogState,
    lsn: Lsn,
    id: i64,
) -> Result<Option<ProductView>, ApiError> {
    let (product, _) = state
        .db
        .read_after(Some(lsn))
        .run(|conn| async move { store::product(&conn, id).await })
        .await?;
    Ok(product)
}

/// `POST /v1/admin/products`
#[utoipa::path(post, path = "/v1/admin/products", tag = "admin", security(("admin" = [])),
    request_body = super::model::ProductInput,
    responses((status = 201, description = "Created", body = super::model::ProductView)))]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn create_product(
    State(state): State<CatalogState>,
    admin: Admin<Catalog>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Response, ApiError> {
    let product = input.validate()?;
    let write = state.db.write();
    let mut tx = write.begin().await?;
    let id = store::insert_product(&mut tx, &product)
        .await
        .map_err(write_error)?;
    let keys = vec![
        format!("product:{id}"),
        format!("category:{}", product.category),
        "products".to_string(),
    ];
    store::log_invalidation(&mut tx, &keys)
        .await
        .map_err(write_error)?;
    let lsn = write.commit(tx).await.map_err(write_error)?;
    tracing::info!(id, sku = product.sku.as_str(), "product created");
    let view = read_back(&state, lsn, id).await?;
    write_response(
        &state,
        StatusCode::CREATED,
        lsn,
        view,
        Some(format!("/v1/products/{id}")),
    )
}

/// The version a write must find, from `If-Match` (the `ETag` of `GET
/// /v1/products/{id}` in its own currency; `*`: any) and the body's
/// `version`; `None`: unconditional.
async fn expected_version(
    state: &CatalogState,
    id: i64,
    if_match: Option<&HeaderValue>,
    body_version: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let stale = |detail: String| {
        ApiError::detailed(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            detail,
            serde_json::Map::new(),
        )
    };
    let Some(if_match) = if_match else {
        return Ok(body_version);
    };
    let wanted = if_match
        .to_str()
        .map_err(|_| ApiError::BadRequest("`If-Match` is not ASCII".into()))?
        .trim();
    if wanted == "*" {
        return Ok(body_version);
    }
    let (current, _) = state
        .db
        .read_primary()
        .run(|conn| async move { store::product(&conn, id).await })
        .await?;
    let Some(current) = current else {
        return Err(stale(format!("product {id} does not exist")));
    };
    let etag = etag_of(&to_bytes(&Some(&current))?);
    let matches = wanted
        .split(',')
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate.as_bytes() == etag.as_bytes());
    if !matches {
        return Err(stale(format!(
            "product {id} changed since that representation (it is at version {}); read it again",
            current.version
        )));
    }
    if body_version.is_some_and(|v| v != current.version) {
        return Err(stale(format!(
            "`version` {} is not the version `If-Match` names ({})",
            body_version.unwrap_or_default(),
            current.version
        )));
    }
    Ok(Some(current.version))
}

/// `PUT /v1/admin/products/{id}`: accepts what `GET` returns; honours
/// `If-Match` and the body's `version` (412 for a lost update).
#[utoipa::path(put, path = "/v1/admin/products/{id}", tag = "admin", security(("admin" = [])), params(crate::openapi::IdPath,
        ("If-Match" = Option<String>, Header, description = "The ETag of GET /v1/products/{id}: a precondition")),
    request_body = super::model::ProductInput,
    responses((status = 200, description = "Updated", body = super::model::ProductView)))]
#[tracing::instrument(skip_all, fields(admin = %admin.name, id = %raw_id))]
pub async fn update_product(
    State(state): State<CatalogState>,
    admin: Admin<Catalog>,
    ApiPath(raw_id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Response, ApiError> {
    let id = ProductId::parse(&raw_id)?.get();
    if input.id.is_some_and(|given| given != id) {
        return Err(ApiError::Unprocessable(format!(
            "the body's `id` ({}) contradicts the path's ({id}); `id` is read-only",
            input.id.unwrap_or_default()
        )));
    }
    let body_version = input.version;
    let product = input.validate()?;
    let expected =
        expected_version(&state, id, headers.get(header::IF_MATCH), body_version).await?;
    let write = state.db.write();
    let mut tx = write.begin().await?;
    let previous_category = match store::update_product(&mut tx, id, &product, expected)
        .await
        .map_err(write_error)?
    {
        store::Updated::Written { previous_category } => previous_category,
        store::Updated::Missing => {
            return Err(ApiError::NotFound(format!("product {id} does not exist")));
        }
        store::Updated::Stale { current_version } => {
            let mut extensions = serde_json::Map::new();
            extensions.insert("current_version".into(), current_version.into());
            return Err(ApiError::detailed(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                format!(
                    "product {id} is at version {current_version}, not the one this write was based on; read it again"
                ),
                extensions,
            ));
        }
    };
    let mut keys = vec![
        format!("product:{id}"),
        format!("category:{}", product.category),
        "products".to_string(),
    ];
    if previous_category != product.category {
        keys.push(format!("category:{previous_category}"));
    }
    store::log_invalidation(&mut tx, &keys)
        .await
        .map_err(write_error)?;
    let lsn = write.commit(tx).await.map_err(write_error)?;
    tracing::info!(id, "product updated");
    let view = read_back(&state, lsn, id).await?;
    write_response(&state, StatusCode::OK, lsn, view, None)
}

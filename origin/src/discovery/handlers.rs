//! The discovery endpoints. Each checks its feature switch first: off, it
//! answers an empty result straight away (200, cacheable briefly,
//! `X-Meridian-Feature-Off: <feature>`); on, it reads a replica.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use meridian_contracts::modes::Feature;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DiscoveryState, store};
use crate::catalog::handlers::{REGION_HEADER, SURROGATE_KEY};
use crate::catalog::model::ProductId;
use crate::problem::{ApiError, ApiPath, ApiQuery};

/// Names the switched-off feature on its empty answer.
pub const FEATURE_OFF: HeaderName = HeaderName::from_static("x-meridian-feature-off");

const RECOMMENDATIONS: i64 = 8;
const SUGGESTIONS: i64 = 10;
const REVIEWS: i64 = 20;
/// Longest search prefix taken (characters).
const MAX_PREFIX: usize = 64;

/// Cache lifetime of a feature's answer: long enough to take load off the
/// origin, short enough to follow a switch (which also purges `modes`).
const FOUND_CACHE: &str =
    "public, max-age=60, s-maxage=60, stale-while-revalidate=30, stale-if-error=86400";
const OFF_CACHE: &str = "public, max-age=30, s-maxage=30";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuggestionQuery {
    q: Option<String>,
}

fn respond(state: &DiscoveryState, body: Value, tags: String, off: Option<Feature>) -> Response {
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    let cache = if off.is_some() {
        OFF_CACHE
    } else {
        FOUND_CACHE
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(tags) = HeaderValue::from_str(&tags) {
        headers.insert(SURROGATE_KEY, tags);
    }
    headers.insert(REGION_HEADER, state.region.clone());
    if let Some(feature) = off {
        headers.insert(FEATURE_OFF, HeaderValue::from_static(feature.as_str()));
    }
    response
}

/// `GET /v1/products/{id}/recommendations`: up to 8 products of the same
/// category, nearest in price.
#[utoipa::path(get, path = "/v1/products/{id}/recommendations", tag = "discovery", params(crate::openapi::IdPath),
    responses((status = 200, description = "Recommended products (empty while the feature is off)", body = serde_json::Value)))]
pub async fn recommendations(
    State(state): State<DiscoveryState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = ProductId::parse(&raw)?.get();
    let tags = format!("product:{id} modes");
    if !state.modes.enabled(Feature::Recommendations) {
        let body = json!({ "product_id": id, "items": [] });
        return Ok(respond(&state, body, tags, Some(Feature::Recommendations)));
    }
    let (found, _) = state
        .db
        .read()
        .run(|conn| async move {
            let Some(category) = store::category_of(&conn, id).await? else {
                return Ok(None);
            };
            let items = store::recommendations(&conn, id, &category, RECOMMENDATIONS).await?;
            Ok(Some((category, items)))
        })
        .await?;
    let Some((category, items)) = found else {
        return Err(ApiError::NotFound(format!("product {id} does not exist")));
    };
    let body = json!({ "product_id": id, "items": items });
    Ok(respond(
        &state,
        body,
        format!("{tags} category:{category}"),
        None,
    ))
}

/// `GET /v1/search/suggestions?q=<prefix>`: up to 10 product names that
/// start with the prefix.
#[utoipa::path(get, path = "/v1/search/suggestions", tag = "discovery", params(SuggestionQuery),
    responses((status = 200, description = "Name suggestions (empty while the feature is off)", body = serde_json::Value)))]
pub async fn suggestions(
    State(state): State<DiscoveryState>,
    ApiQuery(query): ApiQuery<SuggestionQuery>,
) -> Result<Response, ApiError> {
    let prefix = query.q.as_deref().map(str::trim).unwrap_or_default();
    if prefix.is_empty() || prefix.chars().count() > MAX_PREFIX {
        return Err(ApiError::Unprocessable(format!(
            "`q` must be 1 to {MAX_PREFIX} characters"
        )));
    }
    if prefix.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "`q` must not contain control characters".into(),
        ));
    }
    let tags = "products modes".to_string();
    if !state.modes.enabled(Feature::SearchSuggestions) {
        let body = json!({ "query": prefix, "items": [] });
        return Ok(respond(
            &state,
            body,
            tags,
            Some(Feature::SearchSuggestions),
        ));
    }
    let owned = prefix.to_string();
    let (items, _) = state
        .db
        .read()
        .run(|conn| {
            let prefix = owned.clone();
            async move { store::suggestions(&conn, &prefix, SUGGESTIONS).await }
        })
        .await?;
    let body = json!({ "query": prefix, "items": items });
    Ok(respond(&state, body, tags, None))
}

/// `GET /v1/products/{id}/reviews`: the count, average rating and newest
/// 20 reviews.
#[utoipa::path(get, path = "/v1/products/{id}/reviews", tag = "discovery", params(crate::openapi::IdPath),
    responses((status = 200, description = "Reviews (empty while the feature is off)", body = serde_json::Value)))]
pub async fn reviews(
    State(state): State<DiscoveryState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = ProductId::parse(&raw)?.get();
    let tags = format!("product:{id} reviews:{id} modes");
    if !state.modes.enabled(Feature::Reviews) {
        let body = json!({ "product_id": id, "count": 0, "average_rating": null, "items": [] });
        return Ok(respond(&state, body, tags, Some(Feature::Reviews)));
    }
    let (found, _) = state
        .db
        .read()
        .run(|conn| async move {
            if store::category_of(&conn, id).await?.is_none() {
                return Ok(None);
            }
            store::reviews(&conn, id, REVIEWS).await.map(Some)
        })
        .await?;
    let Some((count, average, items)) = found else {
        return Err(ApiError::NotFound(format!("product {id} does not exist")));
    };
    // One decimal is what a shop shows; the exact mean is not a contract.
    let average = average.map(|a| (a * 10.0).round() / 10.0);
    let body =
        json!({ "product_id": id, "count": count, "average_rating": average, "items": items });
    Ok(respond(&state, body, tags, None))
}

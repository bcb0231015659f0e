//! `POST /v1/notify-me` (a signed-in shopper, or a guest giving an e-mail
//! address) and the admin read of a SKU's requests.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::NotifyState;
use super::store::{Contact, NotifyStore};
use crate::auth::{Admin, Ops};
use crate::catalog::model::Sku;
use crate::catalog::store::sellables;
use crate::identity::Shopper;
use crate::problem::{ApiError, ApiJson, ApiPath};

/// Longest e-mail address accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    pub sku: String,
    /// Needed from a guest; a signed-in shopper is reached through their
    /// account.
    #[serde(default)]
    pub email: Option<String>,
}

fn store(state: &NotifyState) -> Result<&NotifyStore, ApiError> {
    state
        .store
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("notify-me needs this region's Redis".into()))
}

fn redis_error(error: fred::error::Error) -> ApiError {
    tracing::warn!(%error, "notify-me store failed");
    ApiError::Unavailable("the notify-me store is unreachable; retry shortly".into())
}

/// A plausible address, lower-cased: one `@`, a local part, a dotted
/// domain, no spaces or controls. Whether it reaches anyone is for the
/// mail that is sent later.
fn parse_email(raw: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::Unprocessable("`email` is not an e-mail address".into());
    let address = raw.trim();
    if address.is_empty() || address.len() > MAX_EMAIL {
        return Err(invalid());
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = address.split_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.')
        && !domain.contains('@')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63);
    if local.is_empty() || !domain_ok {
        return Err(invalid());
    }
    Ok(address.to_lowercase())
}

/// `POST /v1/notify-me {"sku": "…", "email": "…"}` → 202 (recorded) or
/// 200 (this contact had asked already); 422 for an unknown SKU or a guest
/// without an address.
#[utoipa::path(post, path = "/v1/notify-me", tag = "notify-me", security(("shopper" = []), ()), request_body = NotifyRequest,
    responses((status = 202, description = "Recorded", body = serde_json::Value), (status = 200, description = "Already recorded", body = serde_json::Value)))]
pub async fn request(
    State(state): State<NotifyState>,
    shopper: Shopper,
    ApiJson(input): ApiJson<NotifyRequest>,
) -> Result<Response, ApiError> {
    let sku = Sku::parse(&input.sku)?;
    let contact = match (&shopper, input.email.as_deref()) {
        (Shopper::User { id, .. }, _) => Contact::User(id.as_str().to_string()),
        (Shopper::Guest(_), Some(email)) => Contact::Email(parse_email(email)?),
        (Shopper::Guest(_), None) => {
            return Err(ApiError::Unprocessable(
                "sign in, or give an `email` to be told at".into(),
            ));
        }
    };
    let store = store(&state)?;
    let wanted = vec![sku.as_str().to_string()];
    let (found, _) = state
        .db
        .read()
        .run(|conn| {
            let wanted = wanted.clone();
            async move { sellables(conn.pool(), &wanted).await }
        })
        .await?;
    if found.is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "no sellable SKU {}",
            sku.as_str()
        )));
    }
    let recorded = store
        .record(sku.as_str(), &contact)
        .await
        .map_err(redis_error)?;
    let status = if recorded {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "sku": sku.as_str(),
            "recorded": true,
            "duplicate": !recorded,
        })),
    )
        .into_response())
}

/// `GET /v1/admin/notify-me/{sku}`: every request for the SKU, oldest
/// first.
#[utoipa::path(get, path = "/v1/admin/notify-me/{sku}", tag = "admin", security(("admin" = [])), params(crate::openapi::SkuPath),
    responses((status = 200, description = "Who asked to be told", body = serde_json::Value)))]
pub async fn list(
    State(state): State<NotifyState>,
    _admin: Admin<Ops>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sku = Sku::parse(&raw)?;
    let requests = store(&state)?
        .requests(sku.as_str())
        .await
        .map_err(redis_error)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "sku": sku.as_str(),
            "count": requests.len(),
            "requests": requests,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_lower_cased() {
        assert_eq!(
            parse_email(" Ann@Example.COM ").ok().as_deref(),
            Some("ann@example.com")
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@@example.com",
            "ann@example..com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}

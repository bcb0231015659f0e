//! Errors that become HTTP responses, rendered as RFC 9457
//! `application/problem+json`, and the extractors that turn axum's own
//! rejections (bad JSON, bad path, bad query, body too large) into them.
//!
//! Internal causes are logged and answered with a generic 500 body; they are
//! never shown to the caller.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

pub use meridian_contracts::problem::{CONTENT_TYPE as PROBLEM_JSON, Problem};

/// Every error an origin handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than this endpoint accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("this endpoint needs an admin bearer token")]
    Unauthorized,
    #[error("the admin token is not valid")]
    Forbidden,
    /// A personal route without a valid shopper token.
    #[error("{0}")]
    ShopperUnauthorized(String),
    /// The request belongs to another region (the shopper's home region).
    #[error("{0}")]
    Misdirected(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    /// A problem with its own type and extension members (RFC 9457 §3.2).
    #[error("{}", .0.detail)]
    Detailed(Box<DetailedProblem>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(error))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::ShopperUnauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Detailed(problem) => problem.status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type slug, appended to the problem type base URI.
    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unprocessable(_) => "validation-failed",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::ShopperUnauthorized(_) => "shopper-unauthorized",
            ApiError::Misdirected(_) => "wrong-region",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Detailed(problem) => problem.slug,
            ApiError::Internal(_) => "internal",
        }
    }
}

/// A database error: unreachable, timed out or shutting down → 503 with
/// `Retry-After` (the caller may retry); a statement or lock timeout
/// (57014, 55P03) → 503 too; anything else → 500 (logged, not shown).
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(std::sync::Arc::new(error))
    }
}

/// The same, for an error shared by several waiters (a single-flight load).
impl From<std::sync::Arc<sqlx::Error>> for ApiError {
    fn from(error: std::sync::Arc<sqlx::Error>) -> Self {
        let timed_out = matches!(&*error, sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("57014" | "55P03")));
        if crate::db::is_failover_error(&error) || timed_out {
            ApiError::Unavailable("the database is unreachable or busy; retry shortly".into())
        } else {
            ApiError::internal(error)
        }
    }
}

/// A problem of its own type, with extension members.
#[derive(Debug)]
pub struct DetailedProblem {
    pub status: StatusCode,
    /// The problem type slug (`price-changed`).
    pub slug: &'static str,
    pub detail: String,
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn detailed(
        status: StatusCode,
        slug: &'static str,
        detail: impl Into<String>,
        extensions: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        ApiError::Detailed(Box::new(DetailedProblem {
            status,
            slug,
            detail: detail.into(),
            extensions,
        }))
    }

    /// The RFC 9457 body of this error (internal causes are logged here
    /// and never shown).
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            ApiError::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                "the server could not complete the request".to_string()
            }
            other => other.to_string(),
        };
        let extensions = match self {
            ApiError::Detailed(problem) => problem.extensions.clone(),
            _ => serde_json::Map::new(),
        };
        Problem {
            extensions,
            ..Problem::typed(
                self.slug(),
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error"),
                detail,
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meridian-admin\""),
            );
        }
        if matches!(self, ApiError::ShopperUnauthorized(_)) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meridian\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a request body with `Content-Type: application/json`".into(),
            ),
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

/// `Json<T>` whose rejections are problem+json.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// `Path<T>` whose rejections are problem+json (400 for a malformed segment).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::BadRequest(e.body_text()))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// `Query<T>` whose rejections are problem+json.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::BadRequest(e.body_text()))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// Fallback for a known route with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

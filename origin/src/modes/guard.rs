//! What the operating mode refuses at the origin. [`Writable`] is taken by
//! every shopper write that `read-only` (and `maintenance`) pauses — cart
//! changes, checkout, flash-sale claims: extracting it is the check, so the
//! handler never runs. The refusal is a 503 with `Retry-After` and a
//! problem naming the mode and where to leave a notify-me request instead.
//!
//! Admin writes (catalog, stock, modes) are never refused: ops must be able
//! to repair a region and to switch the mode back.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meridian_contracts::modes::Mode;

use super::ModesState;
use crate::problem::ApiError;

/// Whether `mode` pauses shopper writes.
pub fn writes_paused(mode: Mode) -> bool {
    matches!(mode, Mode::ReadOnly | Mode::Maintenance)
}

/// Proof that the region takes shopper writes now.
#[derive(Debug, Clone, Copy)]
pub struct Writable;

impl<S> FromRequestParts<S> for Writable
where
    ModesState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let modes = ModesState::from_ref(state);
        let mode = modes.applied.mode();
        if !writes_paused(mode) {
            return Ok(Writable);
        }
        Err(refusal(&modes, mode))
    }
}

fn refusal(modes: &ModesState, mode: Mode) -> Response {
    let mut extensions = serde_json::Map::new();
    extensions.insert("mode".into(), mode.as_str().into());
    extensions.insert("region".into(), modes.region.as_str().into());
    extensions.insert("notify_me".into(), "/v1/notify-me".into());
    let problem = ApiError::detailed(
        StatusCode::SERVICE_UNAVAILABLE,
        mode.as_str(),
        format!(
            "region `{}` is in {mode} mode: browsing works, carts and checkout are paused; \
             POST /v1/notify-me to hear when a SKU can be bought again",
            modes.region
        ),
        extensions,
    );
    let mut response = problem.into_response();
    if let Ok(value) = HeaderValue::from_str(&modes.retry_after.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

//! Admin authentication: a bearer token checked in constant time against
//! the named tokens from config. No token → 401, a wrong one → 403; the
//! handler never runs, so nothing changes.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::config::AdminToken;
use crate::problem::ApiError;

#[derive(Clone)]
pub struct AdminTokens(Arc<Vec<AdminToken>>);

impl AdminTokens {
    pub fn new(tokens: Vec<AdminToken>) -> Self {
        AdminTokens(Arc::new(tokens))
    }

    /// The name of the token holder, if `presented` is a valid token.
    fn holder(&self, presented: &[u8]) -> Option<String> {
        let mut found = None;
        // Compare against every token so timing does not reveal which matched.
        for token in self.0.iter() {
            if bool::from(token.token.as_bytes().ct_eq(presented)) {
                found = Some(token.name.clone());
            }
        }
        found
    }
}

/// An authenticated admin; extracting it is the authorization check.
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub name: String,
}

impl<S> FromRequestParts<S> for AdminUser
where
    AdminTokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = AdminTokens::from_ref(state);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?;
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or(ApiError::Unauthorized)?;
        match tokens.holder(presented) {
            Some(name) => Ok(AdminUser { name }),
            None => {
                tracing::warn!("admin request with an invalid token");
                Err(ApiError::Forbidden)
            }
        }
    }
}

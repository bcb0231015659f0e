//! Admin authentication and authorization: a bearer token checked in
//! constant time against the named tokens from config, then its scopes
//! against what the handler needs ([`Admin<S>`], `S` one of [`Catalog`],
//! [`Ops`]). No token → 401, a wrong one → 403, a token without the scope
//! → 403 `insufficient-scope`; the handler never runs, so nothing changes.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use subtle::ConstantTimeEq;

use crate::config::{AdminScope, AdminToken};
use crate::problem::ApiError;

#[derive(Clone)]
pub struct AdminTokens(Arc<Vec<AdminToken>>);

impl AdminTokens {
    pub fn new(tokens: Vec<AdminToken>) -> Self {
        AdminTokens(Arc::new(tokens))
    }

    /// The token `presented` is, if any.
    fn holder(&self, presented: &[u8]) -> Option<&AdminToken> {
        let mut found = None;
        // Compare against every token so timing does not reveal which matched.
        for token in self.0.iter() {
            if bool::from(token.token.expose().as_bytes().ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }
}

/// A scope a handler needs, as a type.
pub trait Scope {
    const SCOPE: AdminScope;
}

/// Products, stock, flash sales.
pub struct Catalog;
impl Scope for Catalog {
    const SCOPE: AdminScope = AdminScope::Catalog;
}

/// Modes, feature switches, notify-me lists.
pub struct Ops;
impl Scope for Ops {
    const SCOPE: AdminScope = AdminScope::Ops;
}

/// An admin whose token carries scope `S`; extracting it is the check.
#[derive(Debug)]
pub struct Admin<S> {
    /// The token holder's name (audit logs).
    pub name: String,
    scope: PhantomData<S>,
}

impl<S, St> FromRequestParts<St> for Admin<S>
where
    S: Scope,
    AdminTokens: FromRef<St>,
    St: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let tokens = AdminTokens::from_ref(state);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?;
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or(ApiError::Unauthorized)?;
        let Some(token) = tokens.holder(presented) else {
            tracing::warn!("admin request with an invalid token");
            return Err(ApiError::Forbidden);
        };
        if !token.scopes.contains(&S::SCOPE) {
            tracing::warn!(holder = %token.name, scope = S::SCOPE.as_str(), "admin token without the scope");
            let mut extensions = serde_json::Map::new();
            extensions.insert("required_scope".into(), S::SCOPE.as_str().into());
            return Err(ApiError::detailed(
                StatusCode::FORBIDDEN,
                "insufficient-scope",
                format!("this token lacks the `{}` scope", S::SCOPE.as_str()),
                extensions,
            ));
        }
        Ok(Admin {
            name: token.name.clone(),
            scope: PhantomData,
        })
    }
}

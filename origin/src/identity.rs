//! Who is asking, for the personal routes (cart, checkout, orders):
//!
//! - a signed-in shopper presents a shopper token (JWT; claims limited to
//!   the user id, the home region and the expiry — the shared format in
//!   [`meridian_contracts::shopper_token`]) as `Authorization: Bearer …` or
//!   in the session cookie. The edge verified it to route the request to
//!   the home region; the origin verifies it again, because authorisation
//!   is its job. A token presented but not valid is a 401, never a silent
//!   downgrade to a guest.
//! - a guest carries a guest-cart cookie whose value is a random id signed
//!   with HMAC-SHA256 (the `cookie` crate's signed jar). A tampered cookie
//!   is a 400 that also clears it.
//!
//! A shopper whose home region is not this origin's region is sent away
//! with 421: their cart and orders live at home (data residency).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, CookieJar, Key, SameSite};
use meridian_contracts::shopper_token::{SESSION_COOKIE, TokenVerifier};

use crate::config::ShoppersConfig;
use crate::problem::ApiError;

/// The guest-cart cookie.
pub const GUEST_COOKIE: &str = "meridian_guest";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("shoppers.es256_public_key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("shoppers: {0}")]
    Key(#[from] meridian_contracts::shopper_token::ShopperTokenError),
    #[error("shoppers: set exactly one of hs256_secret and es256_public_key")]
    NoKey,
    #[error("shoppers.guest_cookie_secret must be at least 32 bytes")]
    ShortCookieSecret,
}

/// Verifies shopper tokens and signs guest cookies; shared by the personal
/// routes' state.
#[derive(Clone)]
pub struct ShopperAuth(Arc<AuthInner>);

struct AuthInner {
    verifier: TokenVerifier,
    guest_key: Key,
    region: String,
    guest_max_age: cookie::time::Duration,
}

impl ShopperAuth {
    pub fn new(
        config: &ShoppersConfig,
        region: &str,
        guest_lifetime: std::time::Duration,
    ) -> Result<Self, IdentityError> {
        let verifier = match (&config.hs256_secret, &config.es256_public_key) {
            (Some(secret), None) => TokenVerifier::hs256(secret.expose())?,
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| IdentityError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                TokenVerifier::es256(&pem)?
            }
            _ => return Err(IdentityError::NoKey),
        };
        let master = config.guest_cookie_secret.expose().as_bytes();
        // `Key::derive_from` panics below 32 bytes; refuse instead.
        if master.len() < 32 {
            return Err(IdentityError::ShortCookieSecret);
        }
        let seconds = i64::try_from(guest_lifetime.as_secs()).unwrap_or(i64::MAX);
        Ok(ShopperAuth(Arc::new(AuthInner {
            verifier,
            guest_key: Key::derive_from(master),
            region: region.to_string(),
            guest_max_age: cookie::time::Duration::seconds(seconds),
        })))
    }

    /// A `Set-Cookie` value carrying `guest`'s signed id.
    pub fn guest_cookie(&self, guest: &GuestId) -> Option<HeaderValue> {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.0.guest_key)
            .add(Cookie::new(GUEST_COOKIE, guest.0.clone()));
        let mut cookie = jar.get(GUEST_COOKIE)?.clone();
        finish_cookie(&mut cookie, self.0.guest_max_age);
        HeaderValue::from_str(&cookie.to_string()).ok()
    }

    fn guest_from(&self, parts: &Parts) -> Result<Option<GuestId>, ()> {
        let Some(raw) = request_cookie(parts, GUEST_COOKIE) else {
            return Ok(None);
        };
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(GUEST_COOKIE, raw.to_string()));
        let verified = jar.signed(&self.0.guest_key).get(GUEST_COOKIE).ok_or(())?;
        GuestId::parse(verified.value()).map(Some).ok_or(())
    }
}

/// A `Set-Cookie` value that removes the guest cookie.
pub fn clear_guest_cookie() -> HeaderValue {
    let mut cookie = Cookie::new(GUEST_COOKIE, "");
    finish_cookie(&mut cookie, cookie::time::Duration::ZERO);
    HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(
        "meridian_guest=; Path=/; Max-Age=0",
    ))
}

fn finish_cookie(cookie: &mut Cookie<'_>, max_age: cookie::time::Duration) {
    cookie.set_path("/");
    cookie.set_http_only(true);
    cookie.set_secure(true);
    cookie.set_same_site(SameSite::Lax);
    cookie.set_max_age(max_age);
}

/// A guest cart's id: 32 lowercase hex digits, random.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestId(String);

impl GuestId {
    pub fn random() -> Self {
        GuestId(format!("{:032x}", rand::random::<u128>()))
    }

    fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| GuestId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A signed-in shopper of this region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who sent a personal request.
#[derive(Debug, Clone)]
pub enum Shopper {
    /// A verified shopper token of this region; `guest` is a guest-cart
    /// cookie sent along (to be merged into the user's cart).
    User { id: UserId, guest: Option<GuestId> },
    /// A guest with a valid cookie, or none yet (`None`).
    Guest(Option<GuestId>),
}

impl Shopper {
    /// The signed-in user, or 401 for a guest (checkout and orders need
    /// one).
    pub fn user(&self) -> Result<&UserId, ApiError> {
        match self {
            Shopper::User { id, .. } => Ok(id),
            Shopper::Guest(_) => Err(ApiError::ShopperUnauthorized(
                "sign in: this needs a shopper token (`Authorization: Bearer …`)".into(),
            )),
        }
    }
}

impl<S> FromRequestParts<S> for Shopper
where
    ShopperAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = ShopperAuth::from_ref(state);
        let guest = match auth.guest_from(parts) {
            Ok(guest) => guest,
            Err(()) => {
                return Err((
                    [(header::SET_COOKIE, clear_guest_cookie())],
                    ApiError::BadRequest(
                        "the guest cart cookie is not valid (it has been cleared)".into(),
                    ),
                )
                    .into_response());
            }
        };
        let Some(token) = presented_token(parts) else {
            return Ok(Shopper::Guest(guest));
        };
        let claims = auth.0.verifier.verify(token).map_err(|error| {
            tracing::debug!(%error, "shopper token rejected");
            ApiError::ShopperUnauthorized("the shopper token is expired or not valid".into())
                .into_response()
        })?;
        if claims.region != auth.0.region {
            return Err(ApiError::Misdirected(format!(
                "this shopper's home region is `{}`; carts and orders are served there, not in `{}`",
                claims.region.chars().take(64).collect::<String>(),
                auth.0.region
            ))
            .into_response());
        }
        Ok(Shopper::User {
            id: UserId(claims.sub),
            guest,
        })
    }
}

/// The shopper token from `Authorization: Bearer` or the session cookie.
fn presented_token(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .map(|v| v.strip_prefix("Bearer ").unwrap_or("").trim())
            // `Authorization` without a bearer token is a bad token, not
            // anonymity: an empty string never verifies.
            .or(Some(""));
    }
    request_cookie(parts, SESSION_COOKIE)
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn request_cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth() -> ShopperAuth {
        ShopperAuth::new(
            &ShoppersConfig {
                hs256_secret: Some(Secret::new("a-test-secret-that-is-long-enough-000").unwrap()),
                es256_public_key: None,
                guest_cookie_secret: Secret::new("a-guest-cookie-secret-long-enough-0000").unwrap(),
            },
            "us-east",
            std::time::Duration::from_secs(3600),
        )
        .unwrap()
    }

    fn parts_with_cookie(cookie: &str) -> Parts {
        let (parts, ()) = axum::http::Request::builder()
            .header(header::COOKIE, cookie)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn guest_cookies_round_trip_and_reject_tampering() {
        let auth = auth();
        let guest = GuestId::random();
        let set = auth.guest_cookie(&guest).unwrap();
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("Max-Age=3600"),
            "{set}"
        );
        let pair = set.split(';').next().unwrap();
        assert_eq!(
            auth.guest_from(&parts_with_cookie(pair)).unwrap(),
            Some(guest.clone())
        );
        // Another guest's id with this signature, or a bare id: refused.
        let value = pair.split_once('=').unwrap().1;
        let forged = value.replace(guest.as_str(), GuestId::random().as_str());
        for bad in [
            format!("{GUEST_COOKIE}={forged}"),
            format!("{GUEST_COOKIE}={}", guest.as_str()),
            format!("{GUEST_COOKIE}=garbage"),
        ] {
            assert!(auth.guest_from(&parts_with_cookie(&bad)).is_err(), "{bad}");
        }
        assert_eq!(
            auth.guest_from(&parts_with_cookie("other=1")).unwrap(),
            None
        );
    }
}

//! The waiting room (Cloudflare Waiting Room's model) in front of the
//! protected routes — `POST /v1/checkout` (room `checkout`) and
//! `POST /v1/flash-sales/{id}/claim` (room `flash-<id>`). While it is on
//! (`waiting_room.always_on`, or the region's `checkout-queueing` feature,
//! which `degraded` mode turns on), at most `active_users` shoppers are in
//! at once and at most `new_users_per_minute` get in per minute; the rest
//! get a signed FIFO ticket ([`tickets`]) and a small queue answer (JSON or
//! HTML) with their position and `Retry-After`. Tickets are admitted in
//! the order issued across every edge of the region ([`store`], in its
//! Redis); an admitted shopper's session lasts `session_duration`. When a
//! flash sale answers sold out, its room says so at once to everyone
//! waiting.
//!
//! Without Redis (or when it fails), the room lets requests through: the
//! checkout budget still bounds the load.

pub mod store;
pub mod tickets;

use std::time::Duration;

use bytes::Bytes;
use meridian_contracts::problem::{self, Problem};
use pingora::Result;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::config::WaitingRoomConfig;
use crate::proxy::request_filters::cookie;
use crate::proxy::response_modifiers::{respond_local, wants_html};
use store::{Entry, Limits, RoomStore};
use tickets::{COOKIE, Invalid, Pass, Signer};

/// The response header with which an origin says a sale sold out.
pub const SOLD_OUT_HEADER: &str = "x-meridian-sold-out";

/// What the room decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Through, with a cookie to set on the response (a new admission).
    Pass {
        set_cookie: Option<String>,
    },
    Queued {
        position: u64,
        retry_after: u64,
        set_cookie: String,
    },
    SoldOut,
    /// A forged, replayed or lapsed cookie.
    Refused {
        detail: &'static str,
    },
}

impl Verdict {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass {
                set_cookie: Some(_),
            } => "admitted",
            Verdict::Pass { set_cookie: None } => "passed",
            Verdict::Queued { .. } => "queued",
            Verdict::SoldOut => "sold_out",
            Verdict::Refused { .. } => "refused",
        }
    }
}

pub struct WaitingRoom {
    config: WaitingRoomConfig,
    signer: Signer,
    store: Option<RoomStore>,
}

/// The room a request belongs to, if its route is protected.
pub fn room_of(method: &http::Method, path: &str) -> Option<String> {
    if method != http::Method::POST {
        return None;
    }
    if path == "/v1/checkout" {
        return Some("checkout".into());
    }
    let segment = path
        .strip_prefix("/v1/flash-sales/")?
        .strip_suffix("/claim")?;
    // Decoded as the origin's router decodes it, then the origin's own
    // parser: every spelling the origin takes for sale N is room N, and
    // one it refuses needs no room (the origin answers 400).
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    let id = meridian_contracts::ids::ResourceId::parse(&decoded).ok()?;
    Some(format!("flash-{id}"))
}

impl WaitingRoom {
    pub fn new(
        config: &WaitingRoomConfig,
        redis_url: Option<&str>,
    ) -> Result<Self, fred::error::Error> {
        let store = redis_url
            .map(|url| RoomStore::new(url, config.redis_timeout))
            .transpose()?;
        Ok(WaitingRoom {
            config: config.clone(),
            signer: Signer::new(config.secret.expose()),
            store,
        })
    }

    /// Starts the Redis connection (call from a runtime).
    pub fn connect(&self) {
        if let Some(store) = &self.store {
            store.connect();
        }
    }

    pub fn always_on(&self) -> bool {
        self.config.always_on
    }

    fn limits(&self) -> Limits {
        Limits {
            active_users: self.config.active_users,
            new_users_per_minute: self.config.new_users_per_minute,
            session: self.config.session_duration,
            grace: self.config.ticket_grace,
        }
    }

    fn set_cookie(&self, value: &str, max_age: Duration) -> String {
        format!(
            "{COOKIE}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            max_age.as_secs().max(1)
        )
    }

    /// How long a shopper at `position` should wait before asking again.
    fn retry_after(&self, position: u64) -> u64 {
        let per_second = (f64::from(self.config.new_users_per_minute) / 60.0).max(1.0 / 60.0);
        ((position as f64 / per_second).ceil() as u64).clamp(1, 30)
    }

    /// Decides for a request to `room`.
    /// Lets `user` (a signed-in shopper: anonymous checkouts never get
    /// here) into `room`, or queues them.
    pub async fn enter(&self, request: &RequestHeader, room: &str, user: &str) -> Verdict {
        let now_ms = now_ms();
        let ticket = match cookie(request, COOKIE).map(|v| self.signer.read(v, now_ms, user)) {
            None => 0,
            Some(Ok(Pass::Session { room: of, .. })) if of == room => {
                return Verdict::Pass { set_cookie: None };
            }
            Some(Ok(Pass::Ticket { room: of, number })) if of == room => number,
            // Another room's cookie, or an admission that lapsed: start over.
            Some(Ok(_)) | Some(Err(Invalid::Expired)) => 0,
            Some(Err(Invalid::Forged)) => {
                return Verdict::Refused {
                    detail: "the waiting-room cookie is not one of ours",
                };
            }
            Some(Err(Invalid::NotYours)) => {
                return Verdict::Refused {
                    detail: "this waiting-room cookie was issued to another shopper",
                };
            }
        };
        let Some(store) = &self.store else {
            return Verdict::Pass { set_cookie: None };
        };
        let session = format!("{:032x}", rand::random::<u128>());
        match store.enter(room, self.limits(), ticket, &session).await {
            Ok(Entry::Admitted { now_ms }) => {
                let expires = now_ms + self.config.session_duration.as_millis() as u64;
                let value = self.signer.session(room, &session, expires, user);
                Verdict::Pass {
                    set_cookie: Some(self.set_cookie(&value, self.config.session_duration)),
                }
            }
            Ok(Entry::Queued {
                ticket,
                position,
                now_ms,
            }) => {
                let value = self.signer.ticket(room, ticket, now_ms, user);
                Verdict::Queued {
                    position,
                    retry_after: self.retry_after(position),
                    set_cookie: self.set_cookie(&value, Duration::from_secs(3600)),
                }
            }
            Ok(Entry::SoldOut) => Verdict::SoldOut,
            Ok(Entry::Spent) => Verdict::Refused {
                detail: "this waiting-room ticket was already used or its turn lapsed",
            },
            Err(error) => {
                tracing::warn!(%error, room, "waiting room unavailable; letting the request through");
                Verdict::Pass { set_cookie: None }
            }
        }
    }

    /// Records that `room`'s sale sold out.
    pub async fn sold_out(&self, room: &str) {
        if let Some(store) = &self.store
            && let Err(error) = store.sold_out(room, self.config.sold_out_for).await
        {
            tracing::warn!(%error, room, "could not mark the room sold out");
        }
    }

    /// Writes the queue (or sold-out, or refusal) answer; returns its
    /// status.
    pub async fn respond(&self, session: &mut Session, verdict: &Verdict) -> Result<u16> {
        let clear = format!("{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax");
        let (status, json, text, cookie, retry) = match verdict {
            Verdict::Pass { .. } => return Ok(0),
            Verdict::Queued {
                position,
                retry_after,
                set_cookie,
            } => (
                429,
                Problem::typed(
                    "waiting-room",
                    429,
                    "You are in the queue",
                    format!("you are number {position} in the queue; we will let you in in order"),
                )
                .with("position", *position)
                .with("retry_after", *retry_after)
                .with("sold_out", false),
                format!("You are number {position} in the queue. This page refreshes on its own."),
                set_cookie.clone(),
                Some(*retry_after),
            ),
            Verdict::SoldOut => (
                410,
                Problem::typed(
                    "sold-out",
                    410,
                    "Sold out",
                    "this sale sold out; there is nothing left to queue for",
                )
                .with("sold_out", true),
                "This sale sold out. There is nothing left to queue for.".to_string(),
                clear,
                None,
            ),
            Verdict::Refused { detail } => (
                403,
                Problem::typed(
                    "waiting-room-ticket",
                    403,
                    "Invalid waiting-room ticket",
                    detail.to_string(),
                ),
                format!("{detail}. Please join the queue again."),
                clear,
                None,
            ),
        };
        let (content_type, body) = if wants_html(session.req_header()) {
            let refresh = retry.map_or(String::new(), |r| {
                format!("<meta http-equiv=\"refresh\" content=\"{r}\">")
            });
            (
                "text/html; charset=utf-8",
                Bytes::from(format!(
                    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>Waiting room</title></head><body><p>{text}</p></body></html>\n"
                )),
            )
        } else {
            (problem::CONTENT_TYPE, Bytes::from(json.to_json()))
        };
        let mut headers = vec![("set-cookie", cookie)];
        if let Some(retry) = retry {
            headers.push(("retry-after", retry.to_string()));
        }
        respond_local(session, status, content_type, body, &headers).await?;
        Ok(status)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_routes_have_rooms() {
        let post = http::Method::POST;
        assert_eq!(room_of(&post, "/v1/checkout").as_deref(), Some("checkout"));
        assert_eq!(
            room_of(&post, "/v1/flash-sales/7/claim").as_deref(),
            Some("flash-7")
        );
        assert_eq!(room_of(&http::Method::GET, "/v1/checkout"), None);
        assert_eq!(room_of(&post, "/v1/flash-sales/x/claim"), None);
        // Spellings: the origin's decoding and parser decide.
        assert_eq!(
            room_of(&post, "/v1/flash-sales/%37/claim").as_deref(),
            Some("flash-7")
        );
        for other in ["+7", "07", "%2B7", "%30%37", "7%20", ""] {
            assert_eq!(
                room_of(&post, &format!("/v1/flash-sales/{other}/claim")),
                None,
                "{other}"
            );
        }
        assert_eq!(room_of(&post, "/v1/flash-sales/7/claims"), None);
        assert_eq!(room_of(&post, "/v1/cart/items"), None);
    }
}

//! The waiting room's cookies, signed with HMAC-SHA256 so they cannot be
//! made up or altered: a queue ticket (`t.<room>.<number>.<issued
//! ms>.<holder>`) and an admission (`s.<room>.<session>.<expires
//! ms>.<holder>`), each followed by `.<signature>`. Ticket numbers are
//! issued by Redis in order; the signature makes a ticket worth only the
//! number it was issued with, and Redis lets each admitted number in once.
//! `<holder>` names the shopper it was issued to (a keyed digest of the
//! user id): another shopper cannot use it.

use crate::signing;

/// The cookie both kinds travel in.
pub const COOKIE: &str = "meridian_queue";

/// What a valid cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    Ticket { room: String, number: u64 },
    Session { room: String, expires_ms: u64 },
}

/// Why a cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not a cookie of ours, or altered.
    Forged,
    /// Issued to another shopper.
    NotYours,
    /// An admission past its time.
    Expired,
}

pub struct Signer {
    secret: Vec<u8>,
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Signer {
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn signature(&self, payload: &str) -> String {
        signing::hmac_hex(&self.secret, &[payload.as_bytes()])
    }

    fn signed(&self, payload: String) -> String {
        let signature = self.signature(&payload);
        format!("{payload}.{signature}")
    }

    /// The digest of a shopper's user id that a cookie carries.
    fn holder(&self, user: &str) -> String {
        let mut digest = signing::hmac_hex(&self.secret, &[b"holder:", user.as_bytes()]);
        digest.truncate(16);
        digest
    }

    pub fn ticket(&self, room: &str, number: u64, issued_ms: u64, user: &str) -> String {
        let holder = self.holder(user);
        self.signed(format!("t.{room}.{number}.{issued_ms}.{holder}"))
    }

    pub fn session(&self, room: &str, session: &str, expires_ms: u64, user: &str) -> String {
        let holder = self.holder(user);
        self.signed(format!("s.{room}.{session}.{expires_ms}.{holder}"))
    }

    /// Reads a cookie value presented by `user`; `now_ms` decides whether
    /// an admission lapsed.
    pub fn read(&self, value: &str, now_ms: u64, user: &str) -> Result<Pass, Invalid> {
        let (payload, signature) = value.rsplit_once('.').ok_or(Invalid::Forged)?;
        let expected = self.signature(payload);
        if !signing::matches(&expected, signature) {
            return Err(Invalid::Forged);
        }
        let (payload, holder) = payload.rsplit_once('.').ok_or(Invalid::Forged)?;
        if !signing::matches(&self.holder(user), holder) {
            return Err(Invalid::NotYours);
        }
        let parts: Vec<&str> = payload.split('.').collect();
        match parts.as_slice() {
            ["t", room, number, _issued] => Ok(Pass::Ticket {
                room: (*room).to_string(),
                number: number.parse().map_err(|_| Invalid::Forged)?,
            }),
            ["s", room, _session, expires] => {
                let expires_ms: u64 = expires.parse().map_err(|_| Invalid::Forged)?;
                if expires_ms < now_ms {
                    return Err(Invalid::Expired);
                }
                Ok(Pass::Session {
                    room: (*room).to_string(),
                    expires_ms,
                })
            }
            _ => Err(Invalid::Forged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_round_trip_and_refuse_tampering() {
        let signer = Signer::new("a-waiting-room-secret-of-enough-length");
        let ticket = signer.ticket("checkout", 42, 1000, "u1");
        assert_eq!(
            signer.read(&ticket, 2000, "u1"),
            Ok(Pass::Ticket {
                room: "checkout".into(),
                number: 42
            })
        );
        // Issued to u1: worthless to anyone else.
        assert_eq!(signer.read(&ticket, 2000, "u2"), Err(Invalid::NotYours));
        let moved = ticket.replacen(".42.", ".1.", 1);
        assert_eq!(signer.read(&moved, 2000, "u1"), Err(Invalid::Forged));
        let other = Signer::new("another-secret-entirely-0123456789");
        assert_eq!(other.read(&ticket, 2000, "u1"), Err(Invalid::Forged));
        let session = signer.session("checkout", "abc", 5000, "u1");
        assert!(matches!(
            signer.read(&session, 4000, "u1"),
            Ok(Pass::Session { .. })
        ));
        assert_eq!(signer.read(&session, 4000, "u2"), Err(Invalid::NotYours));
        assert_eq!(signer.read(&session, 6000, "u1"), Err(Invalid::Expired));
        for junk in ["", "x", "t.checkout.1.2", "t.checkout.1.2.zz"] {
            assert_eq!(signer.read(junk, 0, "u1"), Err(Invalid::Forged), "{junk:?}");
        }
    }
}

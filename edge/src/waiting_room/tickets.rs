//! The waiting room's cookies, signed with HMAC-SHA256 so they cannot be
//! made up or altered: a queue ticket (`t.<room>.<number>.<issued ms>`)
//! and an admission (`s.<room>.<session>.<expires ms>`), each followed by
//! `.<signature>`. Ticket numbers are issued by Redis in order; the
//! signature makes a ticket worth only the number it was issued with, and
//! Redis lets each admitted number in once.

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

    pub fn ticket(&self, room: &str, number: u64, issued_ms: u64) -> String {
        self.signed(format!("t.{room}.{number}.{issued_ms}"))
    }

    pub fn session(&self, room: &str, session: &str, expires_ms: u64) -> String {
        self.signed(format!("s.{room}.{session}.{expires_ms}"))
    }

    /// Reads a cookie value; `now_ms` decides whether an admission lapsed.
    pub fn read(&self, value: &str, now_ms: u64) -> Result<Pass, Invalid> {
        let (payload, signature) = value.rsplit_once('.').ok_or(Invalid::Forged)?;
        let expected = self.signature(payload);
        if !signing::matches(&expected, signature) {
            return Err(Invalid::Forged);
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
        let ticket = signer.ticket("checkout", 42, 1000);
        assert_eq!(
            signer.read(&ticket, 2000),
            Ok(Pass::Ticket {
                room: "checkout".into(),
                number: 42
            })
        );
        let moved = ticket.replacen(".42.", ".1.", 1);
        assert_eq!(signer.read(&moved, 2000), Err(Invalid::Forged));
        let other = Signer::new("another-secret-entirely-0123456789");
        assert_eq!(other.read(&ticket, 2000), Err(Invalid::Forged));
        let session = signer.session("checkout", "abc", 5000);
        assert!(matches!(
            signer.read(&session, 4000),
            Ok(Pass::Session { .. })
        ));
        assert_eq!(signer.read(&session, 6000), Err(Invalid::Expired));
        for junk in ["", "x", "t.checkout.1.2", "t.checkout.1.2.zz"] {
            assert_eq!(signer.read(junk, 0), Err(Invalid::Forged), "{junk:?}");
        }
    }
}

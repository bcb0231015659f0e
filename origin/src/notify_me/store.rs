//! Notify-me requests in Redis: one hash per SKU,
//! `meridian:notify:v1:<sku>`, field = the contact (`user:<id>` or
//! `email:<address>`), value = when it was first asked (RFC 3339). `HSETNX`
//! makes a repeat a no-op that keeps the first time. No TTL: these are
//! data, kept until someone acts on them.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::{Client, ClientLike, HashesInterface};

use crate::cache::l2::{L2Error, build_client};

/// Prefix of every notify-me key.
pub const KEY_PREFIX: &str = "meridian:notify:v1:";

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    User(String),
    Email(String),
}

impl Contact {
    fn field(&self) -> String {
        match self {
            Contact::User(id) => format!("user:{id}"),
            Contact::Email(address) => format!("email:{address}"),
        }
    }
}

/// One stored request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    pub contact: String,
    pub requested_at: String,
}

pub struct NotifyStore {
    client: Client,
}

impl NotifyStore {
    /// Creates the client and connects in the background.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, L2Error> {
        let client = build_client(url, timeout)?;
        client.connect();
        Ok(NotifyStore { client })
    }

    /// Records the request; `false` if this contact had asked already.
    pub async fn record(&self, sku: &str, contact: &Contact) -> Result<bool, fred::error::Error> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let added: i64 = self
            .client
            .hsetnx(format!("{KEY_PREFIX}{sku}"), contact.field(), now)
            .await?;
        Ok(added == 1)
    }

    /// Every request for `sku`, oldest first.
    pub async fn requests(&self, sku: &str) -> Result<Vec<Request>, fred::error::Error> {
        let fields: HashMap<String, String> =
            self.client.hgetall(format!("{KEY_PREFIX}{sku}")).await?;
        let mut requests: Vec<Request> = fields
            .into_iter()
            .map(|(contact, requested_at)| Request {
                contact,
                requested_at,
            })
            .collect();
        requests.sort_by(|a, b| (&a.requested_at, &a.contact).cmp(&(&b.requested_at, &b.contact)));
        Ok(requests)
    }
}

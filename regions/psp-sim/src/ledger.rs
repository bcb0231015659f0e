//! The simulator's books: payment intents with their events, and the
//! idempotency records (key → request fingerprint → first response).

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    Authorized,
    Declined,
    Captured,
    Voided,
    Refunded,
}

/// One payment intent and everything that happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct Intent {
    pub id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: IntentStatus,
    /// The key it was created with.
    pub idempotency_key: String,
    pub metadata: serde_json::Map<String, Value>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `authorized`, `declined`, `captured`, `voided`, `refunded`.
    pub kind: IntentStatus,
    pub at_unix_ms: u128,
}

/// What a request asks for.
#[derive(Debug)]
pub enum Action {
    Create {
        amount_minor: i64,
        currency: String,
        declined: bool,
        metadata: serde_json::Map<String, Value>,
    },
    Capture(String),
    Void(String),
    Refund(String),
}

/// Why a keyed request is not processed now.
pub enum Outcome {
    /// Done before: the first response.
    Replay(StatusCode, Value),
    /// The key was used for another request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

struct KeyRecord {
    fingerprint: String,
    response: Option<(StatusCode, Value)>,
}

#[derive(Default)]
pub struct Ledger {
    intents: BTreeMap<String, Intent>,
    keys: HashMap<String, KeyRecord>,
    created_by_key: HashMap<String, String>,
    next_id: u64,
}

impl Ledger {
    /// Claims `key` for a request with `fingerprint`, or says why not.
    pub fn begin(&mut self, key: &str, fingerprint: &str) -> Result<(), Outcome> {
        match self.keys.get(key) {
            Some(record) if record.fingerprint != fingerprint => Err(Outcome::Mismatch),
            Some(KeyRecord {
                response: Some((status, body)),
                ..
            }) => Err(Outcome::Replay(*status, body.clone())),
            Some(_) => Err(Outcome::InFlight),
            None => {
                self.keys.insert(
                    key.to_string(),
                    KeyRecord {
                        fingerprint: fingerprint.to_string(),
                        response: None,
                    },
                );
                Ok(())
            }
        }
    }

    /// Releases `key` claimed by a request that did nothing.
    pub fn abandon(&mut self, key: &str) {
        if self.keys.get(key).is_some_and(|r| r.response.is_none()) {
            self.keys.remove(key);
        }
    }

    /// Records the response to replay for `key`.
    pub fn finish(&mut self, key: &str, status: StatusCode, body: Value) {
        if let Some(record) = self.keys.get_mut(key) {
            record.response = Some((status, body));
        }
    }

    /// Does `action`; the response status and body.
    pub fn apply(&mut self, action: Action, key: Option<&str>) -> (StatusCode, Value) {
        match action {
            Action::Create {
                amount_minor,
                currency,
                declined,
                metadata,
            } => {
                self.next_id += 1;
                let id = format!("pi_{:08}", self.next_id);
                let status = if declined {
                    IntentStatus::Declined
                } else {
                    IntentStatus::Authorized
                };
                let key = key.unwrap_or_default().to_string();
                let intent = Intent {
                    id: id.clone(),
                    amount_minor,
                    currency,
                    status,
                    idempotency_key: key.clone(),
                    metadata,
                    events: vec![event(status)],
                };
                let body = json!(intent);
                self.created_by_key.insert(key, id.clone());
                self.intents.insert(id, intent);
                let code = if declined {
                    StatusCode::PAYMENT_REQUIRED
                } else {
                    StatusCode::OK
                };
                (code, body)
            }
            Action::Capture(id) => {
                self.transition(&id, IntentStatus::Authorized, IntentStatus::Captured)
            }
            Action::Void(id) => {
                self.transition(&id, IntentStatus::Authorized, IntentStatus::Voided)
            }
            Action::Refund(id) => {
                self.transition(&id, IntentStatus::Captured, IntentStatus::Refunded)
            }
        }
    }

    fn transition(
        &mut self,
        id: &str,
        from: IntentStatus,
        to: IntentStatus,
    ) -> (StatusCode, Value) {
        let Some(intent) = self.intents.get_mut(id) else {
            return (
                StatusCode::NOT_FOUND,
                json!({ "error": { "type": "not_found", "message": format!("no payment intent {id}") } }),
            );
        };
        if intent.status == from {
            intent.status = to;
            intent.events.push(event(to));
        } else if intent.status != to {
            return (
                StatusCode::CONFLICT,
                json!({ "error": {
                    "type": "invalid_state",
                    "message": format!("payment intent {id} is {:?}, not {:?}", intent.status, from),
                    "status": intent.status,
                } }),
            );
        }
        // Already `to`: the same answer again (the transition happened once).
        (StatusCode::OK, json!(intent))
    }

    pub fn intent(&self, id: &str) -> Option<Intent> {
        self.intents.get(id).cloned()
    }

    pub fn intent_by_key(&self, key: &str) -> Option<Intent> {
        self.created_by_key
            .get(key)
            .and_then(|id| self.intents.get(id))
            .cloned()
    }

    pub fn intents(&self) -> Vec<Intent> {
        self.intents.values().cloned().collect()
    }
}

fn event(kind: IntentStatus) -> Event {
    Event {
        kind,
        at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    }
}

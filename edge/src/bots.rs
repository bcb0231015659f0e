//! Bot scoring: a score from the user agent (automation and headless
//! signatures, a crawler name from the wrong network), header anomalies (no
//! `Accept`, `Accept-Language`, `Accept-Encoding`) and request velocity on
//! hot routes (per-IP rate estimated with pingora-limits), turned into an
//! action by the configured thresholds: allow, throttle (a tighter rate
//! limit), challenge (a signed cookie round-trip that plain scripts fail),
//! block. Verified bots (user agent plus network) are always allowed.
//!
//! The challenge cookie is `<expiry>.<HMAC-SHA256(secret, expiry|ip|ua)>`:
//! bound to the client's address and user agent, and useless after expiry.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aho_corasick::AhoCorasick;
use pingora::http::RequestHeader;
use pingora_limits::rate::Rate;

use crate::config::BotsConfig;
use crate::proxy::request_filters::cookie;
use crate::signing;

/// The challenge cookie's name.
pub const CHALLENGE_COOKIE: &str = "meridian_challenge";

/// Automation libraries and headless browsers (substrings, matched without
/// regard to ASCII case, like the lists below).
const AUTOMATION: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "scrapy",
];
/// Generic HTTP clients: scripts more often than shoppers.
const HTTP_LIBRARIES: &[&str] = &[
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "httpclient",
    "node-fetch",
    "axios/",
];
/// Crawler names that must come from their owner's network.
const CRAWLERS: &[&str] = &["googlebot", "bingbot", "applebot", "duckduckbot"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotAction {
    Allow,
    /// A verified crawler: allowed, counted apart.
    Verified,
    Throttle,
    Challenge,
    /// The challenge was passed (valid cookie): allowed.
    Passed,
    Block,
}

impl BotAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Verified => "verified",
            Self::Throttle => "throttle",
            Self::Challenge => "challenge",
            Self::Passed => "challenge_passed",
            Self::Block => "block",
        }
    }
}

/// Kinds of user-agent signature, by the lists above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    Automation,
    HttpLibrary,
    Crawler,
}

pub struct BotScorer {
    config: BotsConfig,
    velocity: Rate,
    /// Every signature, matched case-insensitively in one pass over the
    /// user agent; pattern `i` is of kind `kinds[i]`.
    signatures: AhoCorasick,
    kinds: Vec<Signature>,
}

impl BotScorer {
    pub fn new(config: &BotsConfig) -> Result<Self, aho_corasick::BuildError> {
        let lists = [
            (AUTOMATION, Signature::Automation),
            (HTTP_LIBRARIES, Signature::HttpLibrary),
            (CRAWLERS, Signature::Crawler),
        ];
        let kinds = lists
            .iter()
            .flat_map(|(list, kind)| list.iter().map(|_| *kind))
            .collect();
        let signatures = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(lists.iter().flat_map(|(list, _)| list.iter()))?;
        Ok(Self {
            config: config.clone(),
            velocity: Rate::new(Duration::from_secs(1)),
            signatures,
            kinds,
        })
    }

    /// Which kinds of signature `user_agent` carries.
    fn signatures_in(&self, user_agent: &str) -> [bool; 3] {
        let mut found = [false; 3];
        for hit in self.signatures.find_overlapping_iter(user_agent) {
            if let Some(kind) = self.kinds.get(hit.pattern().as_usize()) {
                found[*kind as usize] = true;
            }
        }
        found
    }

    fn verified(&self, user_agent: &str, ip: Option<IpAddr>) -> bool {
        self.config.verified.iter().any(|bot| {
            user_agent.contains(&bot.user_agent)
                && ip.is_some_and(|ip| bot.ranges.iter().any(|net| net.contains(&ip)))
        })
    }

    /// The score of a request (0 = looks like a shopper; 100+ = a bot).
    pub fn score(&self, request: &RequestHeader, ip: Option<IpAddr>, hot_route: bool) -> u32 {
        let user_agent = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let found = self.signatures_in(user_agent);
        let mut score = 0;
        if user_agent.is_empty() {
            score += 50;
        } else if found[Signature::Automation as usize] {
            score += 60;
        } else if found[Signature::HttpLibrary as usize] {
            score += 30;
        } else if found[Signature::Crawler as usize] {
            // Claims to be a crawler but is not from its network.
            score += 60;
        }
        for (header, weight) in [
            (http::header::ACCEPT, 15),
            (http::header::ACCEPT_LANGUAGE, 10),
            (http::header::ACCEPT_ENCODING, 10),
        ] {
            if !request.headers.contains_key(header) {
                score += weight;
            }
        }
        if hot_route && let Some(ip) = ip {
            let seen = self.velocity.observe(&ip, 1);
            if seen > isize::try_from(self.config.hot_route_per_second).unwrap_or(isize::MAX) {
                score += 40;
            }
        }
        score
    }

    /// Whether `path` is one of the hot routes (velocity is watched there).
    pub fn hot(&self, path: &str) -> bool {
        self.config.hot_routes.iter().any(|p| path.starts_with(p))
    }

    /// The action for a request.
    pub fn decide(&self, request: &RequestHeader, ip: Option<IpAddr>, path: &str) -> BotAction {
        let user_agent = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if self.verified(user_agent, ip) {
            return BotAction::Verified;
        }
        let score = self.score(request, ip, self.hot(path));
        if score >= self.config.block_at {
            BotAction::Block
        } else if score >= self.config.challenge_at {
            if self.cookie_valid(request, ip, user_agent) {
                BotAction::Passed
            } else {
                BotAction::Challenge
            }
        } else if score >= self.config.throttle_at {
            BotAction::Throttle
        } else {
            BotAction::Allow
        }
    }

    fn signature(&self, expiry: u64, ip: Option<IpAddr>, user_agent: &str) -> String {
        let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
        signing::hmac_hex(
            self.config.challenge_secret.expose().as_bytes(),
            &[
                expiry.to_string().as_bytes(),
                b"|",
                ip.as_bytes(),
                b"|",
                user_agent.as_bytes(),
            ],
        )
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// A fresh challenge cookie value for this client.
    pub fn challenge_cookie(&self, ip: Option<IpAddr>, request: &RequestHeader) -> String {
        let user_agent = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let expiry = Self::now() + self.config.challenge_ttl.as_secs();
        format!("{expiry}.{}", self.signature(expiry, ip, user_agent))
    }

    /// The `Set-Cookie` header value for a challenge.
    pub fn set_cookie(&self, value: &str) -> String {
        format!(
            "{CHALLENGE_COOKIE}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            self.config.challenge_ttl.as_secs()
        )
    }

    fn cookie_valid(&self, request: &RequestHeader, ip: Option<IpAddr>, user_agent: &str) -> bool {
        let Some(value) = cookie(request, CHALLENGE_COOKIE) else {
            return false;
        };
        let Some((expiry, signature)) = value.split_once('.') else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return false;
        };
        let expected = self.signature(expiry, ip, user_agent);
        expiry >= Self::now() && signing::matches(&expected, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VerifiedBot;

    fn scorer() -> BotScorer {
        BotScorer::new(&BotsConfig {
            hot_route_per_second: 5,
            verified: vec![VerifiedBot {
                name: "googlebot".into(),
                user_agent: "Googlebot".into(),
                ranges: vec!["66.249.64.0/19".parse().unwrap()],
            }],
            ..BotsConfig::with_secret("a-challenge-secret-of-enough-length".parse().unwrap())
        })
        .unwrap()
    }

    fn browser(extra: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/v1/products/1", None).unwrap();
        for (n, v) in [
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
            ),
            ("accept", "text/html"),
            ("accept-language", "en"),
            ("accept-encoding", "gzip, br"),
        ]
        .iter()
        .chain(extra)
        {
            r.insert_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn bare(user_agent: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/v1/products/1", None).unwrap();
        if !user_agent.is_empty() {
            r.insert_header("user-agent", user_agent).unwrap();
        }
        r
    }

    #[test]
    fn scores_map_to_actions() {
        let s = scorer();
        let ip = Some("192.0.2.1".parse().unwrap());
        assert_eq!(s.decide(&browser(&[]), ip, "/x"), BotAction::Allow);
        assert_eq!(
            s.decide(&bare("curl/8.5.0"), ip, "/x"),
            BotAction::Challenge
        );
        assert_eq!(s.decide(&bare(""), ip, "/x"), BotAction::Block);
        assert_eq!(
            s.decide(&bare("Mozilla/5.0 HeadlessChrome/120"), ip, "/x"),
            BotAction::Block
        );
        let sloppy = browser(&[("user-agent", "python-requests/2.31")]);
        assert_eq!(s.decide(&sloppy, ip, "/x"), BotAction::Throttle);
    }

    #[test]
    fn crawlers_are_verified_by_network() {
        let s = scorer();
        let google = browser(&[("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1)")]);
        assert_eq!(
            s.decide(&google, Some("66.249.66.1".parse().unwrap()), "/x"),
            BotAction::Verified
        );
        assert_ne!(
            s.decide(&google, Some("192.0.2.1".parse().unwrap()), "/x"),
            BotAction::Verified
        );
    }

    #[test]
    fn velocity_on_hot_routes_raises_the_score() {
        let s = scorer();
        let ip = Some("192.0.2.7".parse().unwrap());
        let request = browser(&[]);
        let scores: Vec<u32> = (0..10).map(|_| s.score(&request, ip, true)).collect();
        assert_eq!(scores[0], 0);
        assert_eq!(scores[9], 40);
        assert_eq!(s.score(&request, ip, false), 0, "not on a hot route");
    }

    #[test]
    fn challenge_cookie_round_trip() {
        let s = scorer();
        let ip = Some("192.0.2.1".parse().unwrap());
        let script = bare("curl/8.5.0");
        let cookie = s.challenge_cookie(ip, &script);
        let mut back = bare("curl/8.5.0");
        back.insert_header("cookie", format!("{CHALLENGE_COOKIE}={cookie}"))
            .unwrap();
        assert_eq!(s.decide(&back, ip, "/x"), BotAction::Passed);
        // Another address or a tampered value does not pass.
        assert_eq!(
            s.decide(&back, Some("192.0.2.2".parse().unwrap()), "/x"),
            BotAction::Challenge
        );
        let mut forged = bare("curl/8.5.0");
        forged
            .insert_header(
                "cookie",
                format!("{CHALLENGE_COOKIE}=9999999999.{}", "0".repeat(64)),
            )
            .unwrap();
        assert_eq!(s.decide(&forged, ip, "/x"), BotAction::Challenge);
    }
}

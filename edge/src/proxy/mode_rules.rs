//! What the operating mode changes on the request path:
//!
//! - `maintenance`: every request but `/v1/modes` gets a
//!   static 503 page (HTML for browsers, problem+json otherwise) with
//!   `Retry-After`; nothing reaches an origin.
//! - `degraded`: cached responses stay servable for
//!   `modes.degraded_serve_stale` past their freshness — served at once
//!   while revalidated in the background, and whenever the origins fail.
//!   Objects are stored with that longer window ([`ModeRules::extend`]);
//!   outside `degraded`, [`ModeRules::may_serve_stale`] holds them to the
//!   windows the origin gave (its `Cache-Control`, kept with the object).
//!
//! `read-only` needs nothing here: the origins refuse the writes, and
//! browsing is served as usual.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use meridian_contracts::modes::Mode;
use meridian_contracts::problem::{self, Problem};
use pingora::Result;
use pingora::cache::CacheMeta;
use pingora::cache::cache_control::CacheControl;
use pingora::proxy::Session;

use super::response_modifiers::{respond_local, wants_html};
use crate::config::ModesConfig;

const MAINTENANCE_HTML: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Down for maintenance</title></head><body>\
<h1>We'll be right back</h1><p>The shop is down for maintenance. Please try again in a few minutes.</p>\
</body></html>\n";

/// The mode-dependent behaviour, built once from the config.
pub struct ModeRules {
    degraded_stale_secs: u32,
    retry_after: String,
    html: Bytes,
    problem: Bytes,
}

impl ModeRules {
    pub fn new(config: &ModesConfig) -> Self {
        let retry = config.maintenance_retry_after.as_secs().max(1);
        let problem = Problem::typed(
            "maintenance",
            503,
            "Down for maintenance",
            format!("this region is down for maintenance; retry in {retry} s"),
        )
        .with("mode", Mode::Maintenance.as_str());
        Self {
            degraded_stale_secs: u32::try_from(config.degraded_serve_stale.as_secs())
                .unwrap_or(u32::MAX),
            retry_after: retry.to_string(),
            html: Bytes::from_static(MAINTENANCE_HTML.as_bytes()),
            problem: Bytes::from(problem.to_json()),
        }
    }

    /// Whether a request is still served in `maintenance`: the public
    /// modes endpoint (admin and health live on internal listeners, which
    /// the maintenance page never covers).
    pub fn maintenance_exempt(path: &str) -> bool {
        path == "/v1/modes"
    }

    /// Writes the maintenance page: HTML when the client accepts it,
    /// problem+json otherwise.
    pub async fn respond_maintenance(&self, session: &mut Session) -> Result<()> {
        let (content_type, body) = if wants_html(session.req_header()) {
            ("text/html; charset=utf-8", self.html.clone())
        } else {
            (problem::CONTENT_TYPE, self.problem.clone())
        };
        let headers = [
            ("retry-after", self.retry_after.clone()),
            ("x-meridian-mode", Mode::Maintenance.as_str().to_string()),
        ];
        respond_local(session, 503, content_type, body, &headers).await
    }

    /// `meta` with its stale windows widened to the degraded window,
    /// unless the origin forbids serving it stale (`must-revalidate`,
    /// `proxy-revalidate`, `no-cache`).
    pub fn extend(&self, meta: CacheMeta) -> CacheMeta {
        let forbidden = CacheControl::from_resp_headers(meta.response_header())
            .is_some_and(|cc| cc.must_revalidate() || cc.proxy_revalidate() || cc.no_cache());
        let swr = meta.stale_while_revalidate_sec();
        let sie = meta.stale_if_error_sec();
        if forbidden || (swr >= self.degraded_stale_secs && sie >= self.degraded_stale_secs) {
            return meta;
        }
        CacheMeta::new(
            meta.fresh_until(),
            meta.created(),
            swr.max(self.degraded_stale_secs),
            sie.max(self.degraded_stale_secs),
            meta.response_header_copy(),
        )
    }

    /// Whether a stale object may be served now: within the widened window
    /// in `degraded` (pingora checked it), within the origin's own
    /// `stale-while-revalidate` (no error) or `stale-if-error` (origin
    /// failed) otherwise.
    pub fn may_serve_stale(mode: Mode, meta: Option<&CacheMeta>, on_error: bool) -> bool {
        if mode == Mode::Degraded {
            return true;
        }
        let Some(meta) = meta else {
            return false;
        };
        let own = CacheControl::from_resp_headers(meta.response_header()).and_then(|cc| {
            let window = if on_error {
                cc.stale_if_error()
            } else {
                cc.stale_while_revalidate()
            };
            window.ok().flatten()
        });
        let Some(own) = own else {
            return false;
        };
        meta.fresh_until() + Duration::from_secs(u64::from(own)) >= SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;

    fn meta(cache_control: &str, expired_secs_ago: u64) -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header
            .insert_header("cache-control", cache_control)
            .unwrap();
        let now = SystemTime::now();
        let fresh_until = now - Duration::from_secs(expired_secs_ago);
        CacheMeta::new(fresh_until, fresh_until, 30, 60, header)
    }

    fn rules() -> ModeRules {
        ModeRules::new(&ModesConfig {
            degraded_serve_stale: Duration::from_secs(3600),
            ..ModesConfig::default()
        })
    }

    #[test]
    fn degraded_widens_the_windows_unless_the_origin_forbids_it() {
        let extended = rules().extend(meta("public, max-age=10, stale-while-revalidate=30", 0));
        assert_eq!(extended.stale_while_revalidate_sec(), 3600);
        assert_eq!(extended.stale_if_error_sec(), 3600);
        let strict = rules().extend(meta("public, max-age=10, must-revalidate", 0));
        assert_eq!(strict.stale_while_revalidate_sec(), 30);
    }

    #[test]
    fn outside_degraded_the_origins_own_windows_hold() {
        let cc = "public, max-age=10, stale-while-revalidate=30, stale-if-error=600";
        // 100 s past freshness: beyond SWR (30), within SIE (600).
        let old = meta(cc, 100);
        assert!(!ModeRules::may_serve_stale(Mode::Normal, Some(&old), false));
        assert!(ModeRules::may_serve_stale(Mode::Normal, Some(&old), true));
        assert!(ModeRules::may_serve_stale(
            Mode::Degraded,
            Some(&old),
            false
        ));
        let young = meta(cc, 5);
        assert!(ModeRules::may_serve_stale(
            Mode::ReadOnly,
            Some(&young),
            false
        ));
        let none = meta("public, max-age=10", 5);
        assert!(!ModeRules::may_serve_stale(Mode::Normal, Some(&none), true));
    }
}

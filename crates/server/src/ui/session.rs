//! The dashboard's login sessions: a browser that posted the right token to `/ui/login` gets a
//! random session id in an `HttpOnly`, `SameSite=Strict` cookie, so the token itself is never in
//! a URL, nor readable by the page's scripts.
//!
//! Sessions live in memory only (a restart logs everyone out), at most [`MAX_SESSIONS`] at once
//! (the oldest goes first) and each for [`SESSION_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "tiercache_ui";

/// Most sessions at once.
pub(crate) const MAX_SESSIONS: usize = 64;

/// How long a session lasts after its login.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The live sessions: id (64 hex digits) → when it ends.
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Starts a session; returns its id.
    pub(crate) fn start(&self) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, until| *until > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, until)| **until).map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), now + SESSION_TTL);
        id
    }

    /// Whether the request's cookie names a live session.
    pub(crate) fn is_live(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else { return false };
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        // A lookup by a secret id: the map's hashing leaks nothing usable about other ids.
        live.get(id).is_some_and(|until| *until > Instant::now())
    }

    /// Ends the request's session, if it has one.
    pub(crate) fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        }
    }
}

/// The session id in the request's `Cookie` headers, if one is well formed.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, id)| id)
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value that gives the browser session `id`.
pub(crate) fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs())
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_session_is_live_from_login_to_logout_and_bounded() {
        let s = Sessions::default();
        let id = s.start();
        assert!(s.is_live(&with_cookie(&format!("other=1; {COOKIE}={id}"))));
        assert!(!s.is_live(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64)))));
        assert!(!s.is_live(&with_cookie(&format!("{COOKIE}={id}x"))), "a malformed id");
        assert!(!s.is_live(&HeaderMap::new()));
        s.end(&with_cookie(&format!("{COOKIE}={id}")));
        assert!(!s.is_live(&with_cookie(&format!("{COOKIE}={id}"))));
        let ids: Vec<String> = (0..MAX_SESSIONS + 5).map(|_| s.start()).collect();
        assert_eq!(s.live.lock().unwrap().len(), MAX_SESSIONS);
        assert!(s.is_live(&with_cookie(&format!("{COOKIE}={}", ids.last().unwrap()))));
    }
}

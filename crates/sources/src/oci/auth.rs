//! How a registry source proves who it is: the challenge a registry answers 401 with
//! (`WWW-Authenticate: Bearer realm=…,service=…,scope=…` or `Basic`), the tokens a token endpoint
//! gives for a scope (kept until their `expires_in`, less a margin), and the basic credentials of
//! the namespace or of a docker `config.json`.
//!
//! This module parses, keeps and decides; `oci.rs` sends the requests. No credential or token is
//! ever put in a message, a URL or a `Debug` output.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// `expires_in` when a token endpoint does not say (the Distribution token spec's default).
pub(crate) const DEFAULT_TOKEN_SECONDS: u64 = 60;

/// Longest a token is kept, whatever its `expires_in` says.
const MAX_TOKEN_SECONDS: u64 = 24 * 3600;

/// Most bytes of a token endpoint's answer that are read.
pub(crate) const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;

/// Most bytes of a docker `config.json` that are read.
const MAX_DOCKER_CONFIG_BYTES: u64 = 1024 * 1024;

/// A user and password a registry source authenticates with: the namespace's `registry_user` and
/// `registry_password` options, or a docker `config.json`'s. Its `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegistryCredentials {
    /// The user name.
    pub user: String,
    /// The password (or an access token used as one).
    pub password: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials").field("user", &self.user).field("password", &"***").finish()
    }
}

impl RegistryCredentials {
    /// `Basic <base64(user:password)>`.
    pub(crate) fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// What a 401 asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// A token from `realm`, for `service` and `scope`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter, if given.
        service: Option<String>,
        /// The `scope` parameter, if given.
        scope: Option<String>,
    },
    /// Basic credentials.
    Basic,
}

/// The most useful challenge among `WWW-Authenticate` header values: Bearer with a realm, else
/// Basic; `None` if there is neither.
pub(crate) fn parse_challenges<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for v in values {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let params = auth_params(rest);
            if let Some(realm) = params.get("realm").filter(|r| !r.is_empty()) {
                return Some(Challenge::Bearer {
                    realm: realm.clone(),
                    service: params.get("service").cloned(),
                    scope: params.get("scope").cloned(),
                });
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// `key=value` and `key="quoted, value"` pairs separated by commas (RFC 9110 auth-params), keys in
/// lowercase.
fn auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_ascii_lowercase();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect::<String>().trim().to_owned();
        }
        out.insert(key, value);
    }
}

/// How long a token whose endpoint said `expires_in` may be used: that long less a margin (a
/// tenth, at most 30 s) for the requests under way; the default when not said, at most a day.
pub(crate) fn token_lifetime(expires_in: Option<u64>) -> Duration {
    let secs = expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_TOKEN_SECONDS).min(MAX_TOKEN_SECONDS);
    Duration::from_secs(secs - (secs / 10).min(30))
}

/// A token endpoint's answer: `token`, else `access_token`, and `expires_in`.
pub(crate) fn parse_token_answer(body: &[u8]) -> Result<(String, Option<u64>), String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| format!("its answer is not a token: {e}"))?;
    let token = a.token.or(a.access_token).filter(|t| !t.is_empty()).ok_or("its answer holds no token")?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("its token has characters a header cannot carry".into());
    }
    Ok((token, a.expires_in))
}

/// An `Authorization` header value kept for a repository, and until when.
#[derive(Clone)]
struct Kept {
    header: String,
    until: Option<Instant>,
}

/// The `Authorization` each repository's requests carry, learnt from its last challenge: a
/// token until it expires, or basic credentials.
#[derive(Default)]
pub(crate) struct AuthCache {
    by_name: std::sync::Mutex<HashMap<String, Kept>>,
}

impl fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthCache").finish_non_exhaustive()
    }
}

impl AuthCache {
    /// The header for `name` at `now`, if one is kept and has not expired.
    pub(crate) fn get(&self, name: &str, now: Instant) -> Option<String> {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some(k) if k.until.is_none_or(|u| now < u) => Some(k.header.clone()),
            Some(_) => {
                map.remove(name);
                None
            }
            None => None,
        }
    }

    /// Keeps `header` for `name` until `until` (for ever if `None`).
    pub(crate) fn put(&self, name: &str, header: String, until: Option<Instant>) {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a source serves few repositories, but names come from clients.
        if map.len() >= 10_000 {
            let now = Instant::now();
            map.retain(|_, k| k.until.is_none_or(|u| now < u));
            if map.len() >= 10_000 {
                map.clear();
            }
        }
        map.insert(name.to_owned(), Kept { header, until });
    }

    /// Forgets `name`'s header if it is still `header` (it was refused).
    pub(crate) fn drop_if(&self, name: &str, header: &str) {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(name).is_some_and(|k| k.header == header) {
            map.remove(name);
        }
    }
}

/// The credentials a docker `config.json` holds for `host` (`$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`): `auths.<host>.auth` (base64 of `user:password`) or its
/// `username` and `password`. Docker Hub's entry is `https://index.docker.io/v1/`. `None` if
/// there is no file, no entry, or it cannot be read (the source then goes without).
pub(crate) fn docker_config_credentials(host: &str, is_docker_hub: bool) -> Option<RegistryCredentials> {
    let path = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir).join("config.json"),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_DOCKER_CONFIG_BYTES {
        return None;
    }
    let text = std::fs::read(&path).ok()?;
    credentials_in_config(&text, host, is_docker_hub)
}

/// The credentials `config` (a docker `config.json`) holds for `host`.
pub(crate) fn credentials_in_config(config: &[u8], host: &str, is_docker_hub: bool) -> Option<RegistryCredentials> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let mut names =
        vec![host.to_owned(), format!("https://{host}"), format!("http://{host}"), format!("https://{host}/v1/")];
    if is_docker_hub {
        names.extend(["https://index.docker.io/v1/", "index.docker.io", "docker.io"].map(str::to_owned));
    }
    let entry = names.iter().find_map(|n| auths.get(n))?;
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
        let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return Some(RegistryCredentials { user: user.to_owned(), password: password.to_owned() });
    }
    let user = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    Some(RegistryCredentials { user: user.to_owned(), password: password.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas_and_prefer_bearer() {
        let v =
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#;
        assert_eq!(
            parse_challenges([v].into_iter()),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenges([r#"Basic realm="x""#, v].into_iter()).map(|c| matches!(c, Challenge::Bearer { .. })),
            Some(true)
        );
        assert_eq!(parse_challenges([r#"Basic realm="Registry Realm""#].into_iter()), Some(Challenge::Basic));
        assert_eq!(parse_challenges(["Bearer service=\"x\""].into_iter()), None, "no realm, no use");
        assert_eq!(parse_challenges(["Negotiate"].into_iter()), None);
        assert_eq!(parse_challenges(std::iter::empty()), None);
        let unquoted = parse_challenges(["bearer realm=http://t/token, service=s"].into_iter());
        assert_eq!(
            unquoted,
            Some(Challenge::Bearer { realm: "http://t/token".into(), service: Some("s".into()), scope: None })
        );
    }

    #[test]
    fn tokens_live_for_their_expiry_less_a_margin() {
        assert_eq!(token_lifetime(None), Duration::from_secs(54));
        assert_eq!(token_lifetime(Some(0)), Duration::from_secs(54));
        assert_eq!(token_lifetime(Some(300)), Duration::from_secs(270));
        assert_eq!(token_lifetime(Some(3600)), Duration::from_secs(3570));
        assert_eq!(token_lifetime(Some(5)), Duration::from_secs(5));
        assert_eq!(token_lifetime(Some(u64::MAX)), Duration::from_secs(24 * 3600 - 30));
    }

    #[test]
    fn a_kept_token_expires() {
        let cache = AuthCache::default();
        let t0 = Instant::now();
        cache.put("app", "Bearer a".into(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(cache.get("app", t0).as_deref(), Some("Bearer a"));
        assert_eq!(cache.get("other", t0), None);
        assert_eq!(cache.get("app", t0 + Duration::from_secs(10)), None, "expired");
        assert_eq!(cache.get("app", t0), None, "and forgotten");
        cache.put("app", "Basic b".into(), None);
        cache.drop_if("app", "Basic other");
        assert_eq!(cache.get("app", t0 + Duration::from_secs(1 << 20)).as_deref(), Some("Basic b"));
        cache.drop_if("app", "Basic b");
        assert_eq!(cache.get("app", t0), None);
    }

    #[test]
    fn token_answers_give_token_or_access_token() {
        assert_eq!(parse_token_answer(br#"{"token":"t","expires_in":300}"#).unwrap(), ("t".into(), Some(300)));
        assert_eq!(parse_token_answer(br#"{"access_token":"a"}"#).unwrap(), ("a".into(), None));
        assert!(parse_token_answer(br#"{"expires_in":300}"#).unwrap_err().contains("no token"));
        assert!(parse_token_answer(b"<html>").unwrap_err().contains("not a token"));
        assert!(parse_token_answer(br#"{"token":"a\r\nX: y"}"#).is_err());
    }

    #[test]
    fn docker_config_entries_are_found_by_host() {
        let config = br#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYTpzcw=="},
            "https://index.docker.io/v1/":{"username":"hub","password":"pw"}}}"#;
        let c = credentials_in_config(config, "127.0.0.1:5000", false).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("user", "pa:ss"));
        let hub = credentials_in_config(config, "registry-1.docker.io", true).unwrap();
        assert_eq!(hub.user, "hub");
        assert!(credentials_in_config(config, "other:5000", false).is_none());
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}

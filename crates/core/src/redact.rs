//! Hiding the credentials of a source URL (`scheme://user:pass@host/…`) wherever it is shown: logs,
//! error messages, `ns show` and the admin API's answers. The namespace definition file keeps the
//! URL as written; nothing here changes what is stored or fetched.

use std::borrow::Cow;

/// What replaces the user and the password of a URL.
pub const REDACTED: &str = "***";

/// `url` with the user and password of its authority replaced by [`REDACTED`]
/// (`http://***:***@host/…`, or `http://***@host/…` when there is no password); `url` itself when
/// it has none, or is not `scheme://…` at all (a `file://` URL has no credentials to hide).
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else { return Cow::Borrowed(url) };
    let auth_start = scheme_end + 3;
    let rest = &url[auth_start..];
    // The authority ends at the first `/`, `?` or `#` (RFC 3986 §3.2); its userinfo, at its last `@`.
    let auth_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..auth_len].rfind('@') else { return Cow::Borrowed(url) };
    let userinfo = if rest[..at].contains(':') { "***:***" } else { REDACTED };
    Cow::Owned(format!("{}{userinfo}{}", &url[..auth_start], &rest[at..]))
}

/// A secret kept in a namespace's options (an S3 secret key): stored and sent as it is, shown as
/// [`REDACTED`] by `Debug` and `Display`, so that printing the options never prints it.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_replaced_and_everything_else_kept() {
        let check = |url: &str, want: &str| assert_eq!(redact_url(url), want, "{url}");
        check("http://user:s3cret@host:8080/base/", "http://***:***@host:8080/base/");
        check("https://token@host/base", "https://***@host/base");
        check("http://u:p%40ss@w@host/x?q=a@b", "http://***:***@host/x?q=a@b");
        check("http://:pw@host/", "http://***:***@host/");
        check("http://host/a@b", "http://host/a@b");
        check("http://host:1/?a=b@c#d@e", "http://host:1/?a=b@c#d@e");
        check("file:///srv/data", "file:///srv/data");
        check("not a url", "not a url");
        check("http://user:pw@host", "http://***:***@host");
    }

    #[test]
    fn secrets_are_never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!((format!("{s:?}"), s.to_string(), s.expose()), ("***".into(), "***".into(), "hunter2"));
    }
}

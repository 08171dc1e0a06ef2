//! Who may do what: the server's tokens, each granting one [`Right`], and the rule of each kind of
//! request ([`Access`]).
//!
//! Three rights, each including the ones before it: read < write < admin. Reads are open unless a
//! read token is configured (then every read needs a token with read rights, except reads of a
//! namespace marked `public`, which the doors in `routes.rs` ask the engine about); every write
//! needs a write or admin token unless anonymous writes are allowed; `/admin` needs the admin
//! token. Tokens are checked when they are added (long enough, visible ASCII, one right each) and
//! compared in constant time.
//!
//! This module decides nothing about namespaces and chooses no status: a refusal is an
//! [`ApiError`] whose status `error.rs` chooses.

use http::{HeaderMap, HeaderValue, header};

use crate::ApiError;
use crate::error::AuthFailure;

/// What a token lets its holder do; each right includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Right {
    /// Read entries, blobs, listings and `/metrics`.
    Read,
    /// Also write: upload blobs, put and delete entries.
    Write,
    /// Also the admin endpoints (`/admin/…`).
    Admin,
}

impl Right {
    /// The right's name, as settings and messages say it (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }
}

/// The fewest characters a token may have.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token was refused when it was added to an [`Access`]. The messages never repeat the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Fewer than [`MIN_TOKEN_LEN`] characters.
    #[error("the {right} token has {len} characters; it needs at least {MIN_TOKEN_LEN}", right = .right.as_str())]
    TooShort {
        /// The right it was to grant.
        right: Right,
        /// Its length.
        len: usize,
    },
    /// A character other than visible ASCII (`!` to `~`): a space, a control character, or a
    /// non-ASCII one. Such a token cannot be sent, or not reliably, in an `Authorization` header.
    #[error(
        "the {right} token has a character that is not visible ASCII at position {position} (spaces, \
         control and non-ASCII characters cannot be sent in a bearer token)",
        right = .right.as_str()
    )]
    NotVisibleAscii {
        /// The right it was to grant.
        right: Right,
        /// The 1-based position of the first such character.
        position: usize,
    },
    /// The same token already grants another right: each right needs its own token.
    #[error("the {right} token is also given as the {other} token; each right needs its own token", right = .right.as_str(), other = .other.as_str())]
    Reused {
        /// The right it was to grant.
        right: Right,
        /// The right it already grants.
        other: Right,
    },
}

/// The server's access rules: its tokens and what each grants, whether reads need a token, and
/// whether anonymous writes are allowed.
///
/// The default has no token: reads are open, writes refused, the admin endpoints off.
#[derive(Clone, Default)]
pub struct Access {
    /// Every token with the right it grants. Invariant: each token valid, and in one pair only.
    tokens: Vec<(Box<[u8]>, Right)>,
    /// Whether some token grants exactly [`Right::Read`]: then reads need a token.
    reads_need_token: bool,
    /// Whether writes need no token (a trusted network).
    anonymous_writes: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves: a debug print may end up in a log.
        let count = |r: Right| self.tokens.iter().filter(|(_, right)| *right == r).count();
        f.debug_struct("Access")
            .field("n_read_tokens", &count(Right::Read))
            .field("n_write_tokens", &count(Right::Write))
            .field("n_admin_tokens", &count(Right::Admin))
            .field("anonymous_writes", &self.anonymous_writes)
            .finish()
    }
}

impl Access {
    /// No token: reads open, writes refused, admin endpoints off.
    pub fn new() -> Access {
        Access::default()
    }

    /// Open to everyone for reads and writes, admin endpoints off: for tests, and for a server
    /// behind its own authentication on a trusted network.
    pub fn open() -> Access {
        Access::new().allow_anonymous_writes(true)
    }

    /// Adds `token`, granting `right`. Refuses a token shorter than [`MIN_TOKEN_LEN`], one with a
    /// character that is not visible ASCII, and one that already grants another right (the same
    /// token twice for one right is kept once). Adding a read token makes every read need a token
    /// (but those of public namespaces).
    pub fn with_token(mut self, right: Right, token: &str) -> Result<Access, TokenError> {
        if let Some(i) = token.bytes().position(|b| !b.is_ascii_graphic()) {
            let position = token.char_indices().take_while(|(at, _)| *at < i).count() + 1;
            return Err(TokenError::NotVisibleAscii { right, position });
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { right, len: token.len() });
        }
        match self.tokens.iter().find(|(t, _)| **t == *token.as_bytes()) {
            Some((_, other)) if *other != right => return Err(TokenError::Reused { right, other: *other }),
            Some(_) => return Ok(self),
            None => {}
        }
        self.tokens.push((token.as_bytes().into(), right));
        self.reads_need_token |= right == Right::Read;
        Ok(self)
    }

    /// Lets writes through without a token when `allow` (a trusted network only).
    pub fn allow_anonymous_writes(mut self, allow: bool) -> Access {
        self.anonymous_writes = allow;
        self
    }

    /// Whether reads need a token (a read token is configured). When they do not, a read is let
    /// through without looking at its headers.
    #[inline]
    pub fn reads_need_token(&self) -> bool {
        self.reads_need_token
    }

    /// Whether writes need no token.
    pub fn allows_anonymous_writes(&self) -> bool {
        self.anonymous_writes
    }

    /// Whether an admin token is configured (the admin endpoints are on).
    pub fn has_admin_token(&self) -> bool {
        self.tokens.iter().any(|(_, r)| *r == Right::Admin)
    }

    /// Whether some token grants `right` or more (a write is possible with a token).
    fn has_token_for(&self, right: Right) -> bool {
        self.tokens.iter().any(|(_, r)| *r >= right)
    }

    /// Logs what the rules are, once at start: loudly if anonymous writes are allowed, or if no
    /// token can write.
    pub fn log(&self) {
        if self.anonymous_writes {
            tracing::warn!(
                "ANONYMOUS WRITES ARE ALLOWED: anyone who can reach this server may upload, overwrite and \
                 delete entries and blobs; use --allow-anonymous-writes only on a trusted network"
            );
        } else if !self.has_token_for(Right::Write) {
            tracing::warn!(
                "no write or admin token is set: every write is refused (set TIERCACHE_WRITE_TOKEN or write_token)"
            );
        }
        let reads = if self.reads_need_token { "need a token (but public namespaces)" } else { "open" };
        tracing::info!(reads, anonymous_writes = self.anonymous_writes, "access: {self:?}");
        if self.has_admin_token() {
            tracing::info!("admin endpoints on at /admin (bearer token)");
        }
    }

    /// The right the request's bearer token grants: `Err` if it has no `Authorization` header, a
    /// header that is not a bearer token, or a token that is none of ours. Every configured token
    /// is compared with the given one in full, so the time taken says nothing of where they
    /// differ, nor of which matched.
    pub(crate) fn right_of(&self, headers: &HeaderMap) -> Result<Right, AuthFailure> {
        let value = headers.get(header::AUTHORIZATION).ok_or(AuthFailure::Missing)?;
        self.right_of_value(value)
    }

    fn right_of_value(&self, value: &HeaderValue) -> Result<Right, AuthFailure> {
        let given = bearer(value.as_bytes())?;
        let mut found = None;
        for (token, right) in &self.tokens {
            // No early exit: every token is compared.
            if constant_time_eq(token, given) {
                found = Some(*right);
            }
        }
        found.ok_or(AuthFailure::Wrong)
    }

    /// Whether the request carries the admin token (then its error answers may carry every detail).
    pub(crate) fn is_admin(&self, auth: Option<&HeaderValue>) -> bool {
        auth.is_some_and(|v| self.right_of_value(v) == Ok(Right::Admin))
    }

    /// Lets a request that `needs` a right through, or says why not: without a usable token, 401
    /// ([`ApiError::Unauthorized`]); with a token whose right is less, 403
    /// ([`ApiError::Forbidden`]). A read when reads are open, and a write when anonymous writes are
    /// allowed, pass without a look at the headers.
    #[inline]
    pub(crate) fn check(&self, headers: &HeaderMap, needs: Right) -> Result<(), ApiError> {
        let open = match needs {
            Right::Read => !self.reads_need_token,
            Right::Write => self.anonymous_writes,
            Right::Admin => false,
        };
        if open {
            return Ok(());
        }
        match self.right_of(headers) {
            Ok(has) if has >= needs => Ok(()),
            Ok(has) => Err(ApiError::Forbidden { has, needs }),
            Err(why) => Err(ApiError::Unauthorized { why, needs }),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme is case-insensitive
/// (RFC 9110 §11.1); spaces around the token are ignored.
fn bearer(value: &[u8]) -> Result<&[u8], AuthFailure> {
    let (scheme, given) = value.split_at(value.len().min(7));
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Err(AuthFailure::NotBearer);
    }
    let given = given.trim_ascii();
    if given.is_empty() {
        return Err(AuthFailure::NotBearer);
    }
    Ok(given)
}

/// Whether `given` equals `secret` (which must not be empty), comparing every byte of `given`
/// whatever they hold: the time taken depends on the length of `given` (the client's own) and on
/// nothing about `secret` but whether the lengths differ, never on where the first difference is.
fn constant_time_eq(secret: &[u8], given: &[u8]) -> bool {
    debug_assert!(!secret.is_empty());
    let mut diff = secret.len() ^ given.len();
    for (i, &b) in given.iter().enumerate() {
        // Wrapping over `secret` keeps the loop the same whatever its length.
        diff |= usize::from(secret[i % secret.len()] ^ b);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "read-token-0123456789";
    const WRITE: &str = "write-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn access() -> Access {
        Access::new()
            .with_token(Right::Read, READ)
            .and_then(|a| a.with_token(Right::Write, WRITE))
            .and_then(|a| a.with_token(Right::Admin, ADMIN))
            .unwrap()
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn constant_time_eq_is_equality() {
        let secret = b"0123456789abcdef";
        assert!(constant_time_eq(secret, b"0123456789abcdef"));
        for given in [
            &b""[..],
            b"0123456789abcdeF",
            b"0123456789abcde",
            b"0123456789abcdef0",
            b"x",
            b"0123456789abcdef0123456789abcdef",
        ] {
            assert!(!constant_time_eq(secret, given), "{given:?}");
        }
        assert!(constant_time_eq(b"x", b"x"));
        assert!(!constant_time_eq(b"x", b"xx"), "a token repeated is not the token");
    }

    #[test]
    fn bearer_header_parsing() {
        let a = Access::new().with_token(Right::Admin, "s3cret-token-0001").unwrap();
        let check = |value: Option<&str>, expect: Result<Right, AuthFailure>| {
            assert_eq!(a.right_of(&headers(value)), expect, "{value:?}");
        };
        check(None, Err(AuthFailure::Missing));
        check(Some("Bearer s3cret-token-0001"), Ok(Right::Admin));
        check(Some("bearer s3cret-token-0001"), Ok(Right::Admin));
        check(Some("BEARER   s3cret-token-0001  "), Ok(Right::Admin));
        check(Some("Bearer s3cret-token-0002"), Err(AuthFailure::Wrong));
        check(Some("Bearer s3cret-token-00011"), Err(AuthFailure::Wrong));
        check(Some("Bearer "), Err(AuthFailure::NotBearer));
        check(Some("Bearer"), Err(AuthFailure::NotBearer));
        check(Some("Basic czNjcmV0LXRva2VuLTAwMDE="), Err(AuthFailure::NotBearer));
        check(Some("s3cret-token-0001"), Err(AuthFailure::NotBearer));
    }

    #[test]
    fn tokens_are_checked_when_added() {
        let add = |right, token: &str| Access::new().with_token(right, token).map(|_| ());
        assert_eq!(
            add(Right::Admin, &" ".repeat(16)),
            Err(TokenError::NotVisibleAscii { right: Right::Admin, position: 1 })
        );
        assert_eq!(
            add(Right::Write, "0123456789 abcdef"),
            Err(TokenError::NotVisibleAscii { right: Right::Write, position: 11 })
        );
        assert_eq!(
            add(Right::Read, "0123456789abcdé0"),
            Err(TokenError::NotVisibleAscii { right: Right::Read, position: 15 })
        );
        assert_eq!(
            add(Right::Read, "0123456789abcd\t0"),
            Err(TokenError::NotVisibleAscii { right: Right::Read, position: 15 })
        );
        assert_eq!(add(Right::Admin, "short"), Err(TokenError::TooShort { right: Right::Admin, len: 5 }));
        assert_eq!(add(Right::Admin, "0123456789abcdef"), Ok(()));
        let reused = Access::new().with_token(Right::Admin, ADMIN).unwrap().with_token(Right::Write, ADMIN);
        assert_eq!(reused.map(|_| ()), Err(TokenError::Reused { right: Right::Write, other: Right::Admin }));
        let twice = Access::new().with_token(Right::Write, WRITE).unwrap().with_token(Right::Write, WRITE).unwrap();
        assert_eq!(twice.tokens.len(), 1);
        let message = TokenError::NotVisibleAscii { right: Right::Admin, position: 1 }.to_string();
        assert!(message.starts_with("the admin token has a character that is not visible ASCII"), "{message}");
    }

    /// The rights table: who (no token, each token, a wrong one) may do what.
    #[test]
    fn rights() {
        let a = access();
        // (the Authorization header, the outcome of a read, a write and an admin request)
        type Who = (Option<String>, [Result<(), u16>; 3]);
        let who: [Who; 5] = [
            (None, [Err(401), Err(401), Err(401)]),
            (Some(format!("Bearer {READ}")), [Ok(()), Err(403), Err(403)]),
            (Some(format!("Bearer {WRITE}")), [Ok(()), Ok(()), Err(403)]),
            (Some(format!("Bearer {ADMIN}")), [Ok(()), Ok(()), Ok(())]),
            (Some("Bearer not-a-token-of-ours-0123".into()), [Err(401), Err(401), Err(401)]),
        ];
        for (auth, expect) in who {
            for (needs, want) in [Right::Read, Right::Write, Right::Admin].into_iter().zip(expect) {
                let got = a.check(&headers(auth.as_deref()), needs).map_err(|e| e.status().as_u16());
                assert_eq!(got, want, "{auth:?} {needs:?}");
            }
        }
        // Without a read token reads are open; anonymous writes only when allowed.
        let open_reads = Access::new().with_token(Right::Write, WRITE).unwrap();
        assert!(open_reads.check(&headers(None), Right::Read).is_ok());
        assert!(open_reads.check(&headers(None), Right::Write).is_err());
        let anonymous = open_reads.allow_anonymous_writes(true);
        assert!(anonymous.check(&headers(None), Right::Write).is_ok());
        assert!(anonymous.check(&headers(None), Right::Admin).is_err());
        assert!(access().is_admin(Some(&HeaderValue::from_str(&format!("Bearer {ADMIN}")).unwrap())));
        assert!(!access().is_admin(Some(&HeaderValue::from_str(&format!("Bearer {WRITE}")).unwrap())));
        assert!(!access().is_admin(None));
    }
}

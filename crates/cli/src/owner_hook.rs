//! The owner-liveness hook (`owner_hook` in the config file): the CLI's answer to the engine's
//! [`OwnerCheck`], by running a shell command or asking a URL.
//!
//! It owns parsing the hook and asking it about one owner. It does not decide when to ask, nor what
//! a gone owner means for its namespaces: that is the engine's pruner.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::future::BoxFuture;
use tiercache_engine::OwnerCheck;

/// The longest wait for one answer, command or URL; past it the answer is unknown.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How to ask whether an owner still exists.
#[derive(Debug, Clone)]
pub(crate) enum OwnerHook {
    /// A shell command, run with the owner as `$1` and in `TIERCACHE_OWNER`: exit 0 means alive,
    /// exit 1 gone, anything else unknown (the namespace is kept).
    Command(String),
    /// A URL, `{owner}` replaced by the percent-encoded owner (or appended as a last path
    /// segment): 2xx means alive, 404 or 410 gone, anything else unknown.
    Url {
        /// The URL as configured, `{owner}` not yet replaced.
        template: String,
        /// Built once with the hook, so that every probe reuses its connections.
        client: reqwest::Client,
    },
}

impl OwnerHook {
    /// `http://…` or `https://…` is a URL; anything else a command. Fails if `s` is blank.
    pub(crate) fn parse(s: &str) -> Result<OwnerHook> {
        let s = s.trim();
        if s.is_empty() {
            bail!("the owner-liveness hook is empty");
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let client = reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .context("cannot build the HTTP client of the owner-liveness hook")?;
            Ok(OwnerHook::Url { template: s.to_owned(), client })
        } else {
            Ok(OwnerHook::Command(s.to_owned()))
        }
    }
}

impl OwnerCheck for OwnerHook {
    fn is_alive<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move {
            match self {
                OwnerHook::Command(cmd) => ask_command(cmd, owner).await,
                OwnerHook::Url { template, client } => ask_url(client, &url_for(template, owner), owner).await,
            }
        })
    }
}

/// Runs `cmd` with `sh -c`, the owner as `$1` and in `TIERCACHE_OWNER`; a command still running
/// after [`TIMEOUT`] is killed (dropping the child kills it).
async fn ask_command(cmd: &str, owner: &str) -> Option<bool> {
    let child = tokio::process::Command::new("/bin/sh")
        .args(["-c", cmd, "tiercache-owner-hook", owner])
        .env("TIERCACHE_OWNER", owner)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(TIMEOUT, child).await {
        Ok(Ok(status)) => match status.code() {
            Some(0) => Some(true),
            Some(1) => Some(false),
            _ => None,
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot run the owner-liveness hook");
            None
        }
        Err(_) => {
            tracing::warn!(owner, "the owner-liveness hook timed out");
            None
        }
    }
}

/// The URL to ask about `owner`: `{owner}` in `template` replaced by the percent-encoded owner, or,
/// without `{owner}`, the encoded owner appended as a last path segment.
fn url_for(template: &str, owner: &str) -> String {
    let enc = percent_encoding::utf8_percent_encode(owner, percent_encoding::NON_ALPHANUMERIC).to_string();
    if template.contains("{owner}") {
        template.replace("{owner}", &enc)
    } else {
        format!("{}/{enc}", template.trim_end_matches('/'))
    }
}

/// GETs `url`: 2xx alive, 404 or 410 gone, anything else (or no answer) unknown.
async fn ask_url(client: &reqwest::Client, url: &str, owner: &str) -> Option<bool> {
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Some(true),
        Ok(r) if matches!(r.status().as_u16(), 404 | 410) => Some(false),
        Ok(r) => {
            tracing::warn!(owner, status = %r.status(), "owner-liveness hook answered neither alive nor gone");
            None
        }
        Err(e) => {
            tracing::warn!(owner, error = %e, "cannot reach the owner-liveness hook");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use tiercache_testkit::{Behavior, Source};

    use super::*;

    /// A command hook: job-1 is gone, `weird` cannot be told, others live.
    const HOOK: &str = r#"case "$1" in job-1) exit 1;; weird) exit 7;; *) exit 0;; esac"#;

    /// Asks `hook` about each owner in turn and compares the answers with `want`.
    async fn check(hook: &OwnerHook, want: &[(&str, Option<bool>)]) {
        for (owner, expected) in want {
            assert_eq!(hook.is_alive(owner).await, *expected, "{owner} with {hook:?}");
        }
    }

    #[test]
    fn parse_tells_urls_from_commands_and_refuses_blanks() {
        assert!(
            matches!(OwnerHook::parse(" http://o/{owner} ").unwrap(), OwnerHook::Url { template, .. } if template == "http://o/{owner}")
        );
        assert!(matches!(OwnerHook::parse("https://o").unwrap(), OwnerHook::Url { .. }));
        assert!(
            matches!(OwnerHook::parse("docker inspect \"$1\"").unwrap(), OwnerHook::Command(c) if c == "docker inspect \"$1\"")
        );
        let err = OwnerHook::parse("  ").unwrap_err();
        assert_eq!(err.to_string(), "the owner-liveness hook is empty");
    }

    #[test]
    fn the_owner_is_percent_encoded_into_the_url() {
        assert_eq!(url_for("http://o/owners/{owner}/state", "job 1/x"), "http://o/owners/job%201%2Fx/state");
        assert_eq!(url_for("http://o/owners/", "job-1"), "http://o/owners/job%2D1");
        assert_eq!(url_for("http://o/owners", "job2"), "http://o/owners/job2");
    }

    #[tokio::test]
    async fn a_command_hook_answers_by_its_exit_status() {
        let hook = OwnerHook::parse(HOOK).unwrap();
        check(&hook, &[("job-1", Some(false)), ("weird", None), ("job-2", Some(true))]).await;
        // The owner is in the environment too.
        let hook = OwnerHook::parse(r#"test "$TIERCACHE_OWNER" = "$1" && test "$1" = job-2"#).unwrap();
        check(&hook, &[("job-2", Some(true)), ("job-1", Some(false))]).await;
    }

    #[tokio::test]
    async fn a_url_hook_answers_alive_or_gone() {
        let src = Source::start().await;
        src.put("owners/job-2", b"here".to_vec());
        src.set_behavior("owners/weird", Behavior::Status(500));
        src.set_behavior("owners/old", Behavior::Status(410));
        let hook = OwnerHook::parse(&format!("{}owners/{{owner}}", src.url())).unwrap();
        check(&hook, &[("job-1", Some(false)), ("job-2", Some(true)), ("weird", None), ("old", Some(false))]).await;
        for owner in ["job-1", "job-2", "weird", "old"] {
            assert_eq!(src.counts(&format!("owners/{owner}")).full, 1, "{owner} asked once");
        }
        // Without `{owner}`, the owner is the last path segment.
        let hook = OwnerHook::parse(&format!("{}owners", src.url())).unwrap();
        check(&hook, &[("job-2", Some(true))]).await;
        assert_eq!(src.counts("owners/job-2").full, 2);
    }
}

//! `tiercache serve`'s access settings end to end: tokens checked at start (a clear error naming
//! the setting), writes refused without a write token, `--allow-anonymous-writes` said loudly,
//! and a read token with public namespaces from `ns create --public` and the config file.

use crate::common::{Server, WRITE_TOKEN, client, dirs, tcr};

const READ_TOKEN: &str = "cli-test-read-token-0123456789";

/// Bad tokens stop `serve` before it listens, exit 1, and the message names the setting.
#[test]
fn bad_tokens_are_refused_at_start() {
    let d = dirs();
    let valid = "valid-token-0123456789";
    let sixteen_spaces = " ".repeat(16);
    // (environment, flags, the setting named, what the message says)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("TIERCACHE_ADMIN_TOKEN", &sixteen_spaces)], vec![], "TIERCACHE_ADMIN_TOKEN", "not visible ASCII"),
        (vec![("TIERCACHE_WRITE_TOKEN", "short")], vec![], "TIERCACHE_WRITE_TOKEN", "at least 16"),
        (vec![], vec!["--read-token", "has a space 0123456789"], "--read-token", "not visible ASCII"),
        (
            vec![("TIERCACHE_ADMIN_TOKEN", valid), ("TIERCACHE_WRITE_TOKEN", valid)],
            vec![],
            "TIERCACHE_WRITE_TOKEN",
            "each right needs its own token",
        ),
    ];
    for (env, flags, setting, says) in cases {
        let mut cmd = crate::common::tc(&d.data);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(&flags).envs(env.iter().copied());
        let out = crate::common::run(&mut cmd);
        assert_eq!(out.code, 1, "{env:?} {flags:?}: {}", out.stderr);
        assert!(out.stderr.contains(setting) && out.stderr.contains(says), "{env:?} {flags:?}: {}", out.stderr);
        assert!(!out.stderr.contains(valid), "the token is not repeated: {}", out.stderr);
    }
    // In the config file too.
    let config = d.tmp.path().join("tokens.toml");
    std::fs::write(&config, "write_token = [\"cli-test-write-token-0123456789\", \"tiny\"]\n").unwrap();
    let out = tcr(&d.data, &["--config", config.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("write_token") && out.stderr.contains("at least 16"), "{}", out.stderr);
}

/// Without a token a write is 401 with a bearer challenge saying which token to send; with the
/// write token it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_write_token() {
    let d = dirs();
    tcr(&d.data, &["ns", "create", "up"]).ok();
    let server = Server::start(&d.data, &[]).await;
    let http = client();
    let url = server.url("/ns/up/k");
    let r = http.put(&url).body("anonymous").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"tiercache\"");
    assert!(r.text().await.unwrap().contains("Bearer <write_token>"));
    let r = http.put(&url).bearer_auth(WRITE_TOKEN).body("written").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(http.get(&url).send().await.unwrap().text().await.unwrap(), "written", "reads are open");
    assert!(server.log_text().contains("access:"), "{}", server.log_text());
}

/// `--allow-anonymous-writes` lets a write through without a token, and says so loudly at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_writes_when_allowed_are_said_loudly() {
    let d = dirs();
    tcr(&d.data, &["ns", "create", "up"]).ok();
    let server = Server::start(&d.data, &["--allow-anonymous-writes"]).await;
    let r = client().put(server.url("/ns/up/k")).body("anyone").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let log = server.log_text();
    assert!(log.contains("WARN") && log.contains("ANONYMOUS WRITES ARE ALLOWED"), "{log}");
}

/// With a read token every read needs a token, but those of namespaces made public by
/// `ns create --public` or the config file; `ns show` says which are public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_closes_reads_but_public_namespaces() {
    let d = dirs();
    tcr(&d.data, &["ns", "create", "private"]).ok();
    tcr(&d.data, &["ns", "create", "open", "--public"]).ok();
    let shown = tcr(&d.data, &["ns", "show", "open"]).ok().stdout;
    assert!(shown.contains("public: yes"), "{shown}");
    assert!(!tcr(&d.data, &["ns", "show", "private"]).ok().stdout.contains("public"));
    assert_eq!(tcr(&d.data, &["ns", "show", "open", "--json"]).ok().json()["public"], true);
    let config = d.tmp.path().join("config.toml");
    let second = "cli-test-write-token-second-0123";
    let text = format!("write_token = [\"{WRITE_TOKEN}\", \"{second}\"]\n\n[namespaces.fromfile]\npublic = true\n");
    std::fs::write(&config, text).unwrap();
    let server = Server::start_with_env(
        &d.data,
        &["--config", config.to_str().unwrap(), "--read-token", READ_TOKEN],
        // The file's list of write tokens, not the harness's variable.
        &[("TIERCACHE_WRITE_TOKEN", "")],
    )
    .await;
    let http = client();
    for (ns, token) in [("private", WRITE_TOKEN), ("open", second), ("fromfile", WRITE_TOKEN)] {
        let r = http.put(server.url(&format!("/ns/{ns}/k"))).bearer_auth(token).body(ns).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{ns}");
    }
    for (uri, anonymous) in
        [("/ns/private/k", 401), ("/ns/private/", 401), ("/metrics", 401), ("/ns/open/k", 200), ("/ns/fromfile/", 200)]
    {
        assert_eq!(http.get(server.url(uri)).send().await.unwrap().status().as_u16(), anonymous, "{uri}");
        let r = http.get(server.url(uri)).bearer_auth(READ_TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{uri} with the read token");
    }
    let r = http.put(server.url("/ns/open/k")).bearer_auth(READ_TOKEN).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "a read token cannot write");
    assert_eq!(http.get(server.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
}

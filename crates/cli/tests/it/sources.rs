//! HTTP sources through the binary: metadata addresses refused by `ns create` unless the config
//! allows them, the redirect policy from its flag and variable, and a source's credentials kept
//! out of `ns show` and the server's log (only the definition file keeps them).

use tiercache_testkit::{Behavior, Source};

use crate::common::*;

#[test]
fn ns_create_refuses_a_metadata_address_unless_the_config_allows_it() {
    let d = dirs();
    for url in ["http://169.254.169.254/latest/", "http://[fe80::1]/", "http://metadata.google.internal/"] {
        let out = tcr(&d.data, &["ns", "create", "meta", "--source", url]).expect_code(1);
        assert!(out.stderr.contains("--allow-source-address"), "{url}: {}", out.stderr);
        assert!(!d.data.join("namespaces/meta.json").exists(), "{url}: refused, yet defined");
    }
    let cfg = d.tmp.path().join("allow.toml");
    std::fs::write(&cfg, "allow_source_addresses = [\"169.254.169.254/32\"]\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let args = ["--config", cfg, "ns", "create", "meta", "--source", "http://169.254.169.254/latest/"];
    tcr(&d.data, &args).ok();
    std::fs::write(d.tmp.path().join("bad.toml"), "allow_source_addresses = [\"169.254.0.0/99\"]\n").unwrap();
    let bad = d.tmp.path().join("bad.toml");
    let out = tcr(&d.data, &["--config", bad.to_str().unwrap(), "ns", "list"]).expect_code(1);
    assert!(out.stderr.contains("169.254.0.0/99"), "{}", out.stderr);
}

/// `--source-redirects` and `TIERCACHE_SOURCE_REDIRECTS` reach the sources: `any` follows a
/// redirect to another origin, the default refuses it (502), and `none` refuses even one within
/// the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_policy_comes_from_its_flag_and_variable() {
    let (src, other) = (Source::start().await, Source::start().await);
    other.put("there", b"other origin".to_vec());
    src.put("here", b"same origin".to_vec());
    src.set_behavior("away", Behavior::Redirect(302, format!("{}there", other.url())));
    src.set_behavior("near", Behavior::Redirect(302, "/here".into()));
    let http = client();
    for (flags, env, away, near) in [
        (&[][..], &[][..], 502, 200),
        (&["--source-redirects", "any"][..], &[][..], 200, 200),
        (&[][..], &[("TIERCACHE_SOURCE_REDIRECTS", "none")][..], 502, 502),
    ] {
        let d = dirs();
        tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
        let mut args = vec!["--revalidate-after", "0s"];
        args.extend_from_slice(flags);
        let server = Server::start_with_env(&d.data, &args, env).await;
        let (status, _) = http_get(&http, &server.url("/ns/web/away")).await;
        assert_eq!(status, away, "{flags:?} {env:?}: a redirect to another origin");
        let (status, _) = http_get(&http, &server.url("/ns/web/near")).await;
        assert_eq!(status, near, "{flags:?} {env:?}: a redirect within the origin");
    }
    let out = tcr(&dirs().data, &["serve", "--source-redirects", "sometimes"]).expect_code(2);
    assert!(out.stderr.contains("same-origin, any or none"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_credentials_stay_out_of_ns_show_and_the_log() {
    let d = dirs();
    let src = Source::start().await;
    src.set_behavior("broken", Behavior::Status(500));
    let url = src.url().replace("http://", "http://reader:s3cret@");
    let out = tcr(&d.data, &["ns", "create", "sec", "--source", &url]).ok();
    assert!(!out.stdout.contains("s3cret") && out.stdout.contains("***:***@"), "{}", out.stdout);
    for args in
        [&["ns", "show", "sec"][..], &["ns", "show", "sec", "--json"], &["ns", "list"], &["ns", "list", "--json"]]
    {
        let out = tcr(&d.data, args).ok();
        assert!(!out.stdout.contains("s3cret") && out.stdout.contains("***:***@"), "{args:?}: {}", out.stdout);
    }
    let out = tcr(&d.data, &["ns", "create", "sec", "--source", "http://127.0.0.1:9/"]).expect_code(1);
    assert!(!out.stderr.contains("s3cret") && out.stderr.contains("already exists"), "{}", out.stderr);
    let def = std::fs::read_to_string(d.data.join("namespaces/sec.json")).unwrap();
    assert!(def.contains("reader:s3cret@"), "the definition file keeps the URL as written: {def}");

    let server = Server::start(&d.data, &[]).await;
    let (status, body) = http_get(&client(), &server.url("/ns/sec/broken")).await;
    assert_eq!(status, 502);
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("s3cret") && !body.contains("reader"), "{body}");
    wait_until("the failed fetch is logged", async || server.log_text().contains("source fetch failed")).await;
    let log = server.log_text();
    assert!(!log.contains("s3cret") && !log.contains("reader:"), "{log}");
    assert!(log.contains("***:***@"), "the log names the source, redacted: {log}");
}

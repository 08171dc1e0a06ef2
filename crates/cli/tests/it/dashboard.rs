//! The dashboard (`/ui/`) of a real `tiercache serve`: its doors over HTTP (401 without the
//! admin token, a session cookie from the login form, actions only from the page), and the page
//! itself in a real Chromium driven by Playwright (`tests/ui/dashboard.py`): it loads without a
//! console error, its hit-ratio chart shows the memory and disk tiers after a burst of reads, the
//! namespace table sorts, and a namespace deleted through it is gone from `ns list`. The run saves
//! a screenshot of the loaded page (`$CARGO_TARGET_DIR/dashboard.png`; `docs/dashboard.png` is a
//! copy of one).
//!
//! The browser test needs `python3` with `playwright` and Debian's `/usr/bin/chromium` (`bash
//! .ci/run` installs both); without them it skips, or fails under `TIERCACHE_REQUIRE_SERVERS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tiercache_testkit::servers;

use crate::common::{Dirs, Server, WRITE_TOKEN, client, dirs, http_put, tcr};

const ADMIN_TOKEN: &str = "dashboard-admin-token-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A server with an admin token, a disk quota, and three namespaces of different sizes: a
/// directory (`photos`), a store (`store`) and one to delete (`scratch`).
async fn started() -> (Dirs, Server) {
    let d = dirs();
    let photos = d.tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..5 {
        std::fs::write(photos.join(format!("img-{i}.jpg")), vec![i as u8; 10_000 + i * 1000]).unwrap();
    }
    tcr(&d.data, &["index", photos.to_str().unwrap(), "--ns", "photos"]).ok();
    tcr(&d.data, &["ns", "create", "store", "--quota", "64MiB"]).ok();
    tcr(&d.data, &["ns", "create", "scratch"]).ok();
    let env = [("TIERCACHE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let srv = Server::start_with_env(&d.data, &["--disk-quota", "1GiB"], &env).await;
    (d, srv)
}

/// Reads that each tier serves: the directory's files (read in place: the source tier), and the
/// store's entries, each read many times (the first from disk, then from memory).
async fn burst_of_reads(srv: &Server) {
    let c = client();
    for i in 0..3 {
        let put = http_put(&c, &srv.url(&format!("/ns/store/key-{i}"))).body(vec![b'x'; 50_000 * (i + 1)]);
        assert!(put.send().await.unwrap().status().is_success());
    }
    http_put(&c, &srv.url("/ns/scratch/only")).body("one").send().await.unwrap();
    // Over a few of the history's sampling intervals, so that the charts draw lines.
    for round in 0..4 {
        for _ in 0..10 {
            for i in 0..3 {
                let r = c.get(srv.url(&format!("/ns/store/key-{i}"))).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        }
        for i in 0..5 {
            let r = c.get(srv.url(&format!("/ns/photos/img-{i}.jpg"))).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        if round < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        }
    }
}

#[tokio::test]
async fn without_the_admin_token_the_page_and_its_json_answer_401() {
    // A server with no admin token has no dashboard: it would show every namespace, source and
    // directory root to whoever may read.
    let other = dirs();
    let tokenless = Server::start(&other.data, &[]).await;
    for path in ["/ui/", "/ui/api/status", "/ui/api/admin/namespaces", "/ui/login"] {
        let r = client().get(tokenless.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} without an admin token configured");
    }
    drop(tokenless);

    let (d, srv) = started().await;
    let c = client();
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/ui/", "/ui/api/status", "/ui/api/admin/namespaces"] {
        let r = c.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c.get(srv.url(path)).bearer_auth(WRITE_TOKEN).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 403), "{path} with the write token: {}", r.status());
    }
    let page = c.get(srv.url("/ui/")).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("name=\"token\""), "the login form");
    // The assets hold no data and are served to the login form too.
    assert_eq!(c.get(srv.url("/ui/app.js")).send().await.unwrap().status(), 200);

    // The header opens the JSON; the page's form opens a session cookie, never a URL token.
    let r = c.get(srv.url("/ui/api/status")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let names: Vec<&str> =
        status["namespaces"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["photos", "scratch", "store"]);
    let wrong = login_form(&no_redirects, &srv, WRITE_TOKEN).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    // A body larger than any token needs is refused unread, the right token after it or not.
    // The server answers and closes the connection with the rest unread, so the client, still
    // writing, sees either the 401 or the connection cut; never a session.
    let huge = format!("pad={}&token={ADMIN_TOKEN}", "x".repeat(64 * 1024));
    let sent = no_redirects
        .post(srv.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await;
    match sent {
        Ok(r) => {
            assert_eq!(r.status(), 401);
            assert!(r.headers().get("set-cookie").is_none());
            assert_eq!(r.headers()["connection"], "close", "the rest of the body is left unread");
        }
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "{e:?}"),
    }
    let login = login_form(&no_redirects, &srv, ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let r = c.get(srv.url("/ui/api/status")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An action with the cookie alone (what another site's form could send) is refused; the
    // page's own header lets it through.
    let url = srv.url("/ui/api/admin/namespaces/scratch");
    let r = c.delete(&url).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(tcr(&d.data, &["ns", "list"]).stdout.contains("scratch"));
    let r = c.delete(&url).header("cookie", &session).header("x-tiercache-ui", "1").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Logged out, the cookie opens nothing.
    let out = no_redirects.post(srv.url("/ui/logout")).header("cookie", &session).send().await.unwrap();
    assert_eq!(out.status(), 303);
    let r = c.get(srv.url("/ui/api/status")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// The login form's POST, as a browser sends it.
fn login_form(c: &reqwest::Client, srv: &Server, token: &str) -> reqwest::RequestBuilder {
    c.post(srv.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)))
}

/// Whether Playwright and Chromium are here.
fn browser_ready() -> Result<(), String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!("{CHROMIUM} not found (apt-get install chromium)"));
    }
    let ok = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .map_err(|e| format!("python3: {e}"))?
        .success();
    if ok { Ok(()) } else { Err("python3 cannot import playwright (pip install playwright)".into()) }
}

#[tokio::test]
async fn the_dashboard_in_a_real_browser() {
    let Some(()) = servers::or_skip("playwright with chromium", browser_ready()) else { return };
    let (d, srv) = started().await;
    burst_of_reads(&srv).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/dashboard.py");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let shot = target.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("python3")
        .arg(&script)
        .args(["--url", &srv.base, "--token", ADMIN_TOKEN, "--delete", "scratch"])
        .arg("--screenshot")
        .arg(&shot)
        .arg("--chromium")
        .arg(CHROMIUM)
        .output()
        .expect("run python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{stderr}\n{stdout}\nserver log:\n{}", srv.log_text());
    eprintln!("dashboard: {stdout}");
    let list = tcr(&d.data, &["ns", "list"]).ok().stdout;
    assert!(!list.contains("scratch"), "deleted through the page, still listed:\n{list}");
    assert!(list.contains("photos") && list.contains("store"), "{list}");
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real PNG");
    eprintln!("dashboard: screenshot saved to {}", shot.display());
    // Each request was logged once, with its request id.
    let log = srv.log_text();
    assert!(log.contains("tiercache::access") && log.contains("path=/ui/api/status "), "no access log:\n{log}");
}

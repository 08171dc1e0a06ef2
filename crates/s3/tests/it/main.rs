//! S3 front door tests: the real service on a real listener on 127.0.0.1, over a real cache,
//! driven by a real SigV4 client (OpenDAL's S3 service), and by hand-signed requests
//! (`tiercache_testkit::sigv4`) where OpenDAL cannot express the case.

use std::net::SocketAddr;

use opendal::Operator;
use sha2::{Digest as _, Sha256};
use tiercache_engine::{Cache, CacheConfig};
use tiercache_s3::{AccessKey, S3Settings};
use tiercache_testkit::sigv4::Signer;

mod auth;
mod bad_input;
mod buckets;
mod listing;
mod multipart;
mod objects;
mod source;

/// The access key of every harness (all buckets).
const AK: &str = "test-access-key";
const SK: &str = "test-secret-key-0123456789";
/// A key limited to bucket `only`.
const LIMITED_AK: &str = "limited-access-key";
const LIMITED_SK: &str = "limited-secret-key-0123456789";

struct Harness {
    dir: tempfile::TempDir,
    cache: Cache,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A front door with [`AK`] (every bucket) and [`LIMITED_AK`] (bucket `only`), and bucket `b`.
async fn harness() -> Harness {
    let settings = S3Settings {
        keys: vec![
            AccessKey { access_key: AK.into(), secret_key: SK.into(), buckets: None },
            AccessKey {
                access_key: LIMITED_AK.into(),
                secret_key: LIMITED_SK.into(),
                buckets: Some(vec!["only".into()]),
            },
        ],
        anonymous_read: vec!["open".into()],
        domain: None,
    };
    let h = harness_with(&settings).await;
    h.cache.create_namespace("b", None, &Default::default()).await.unwrap();
    h
}

async fn harness_with(settings: &S3Settings) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(CacheConfig::new(dir.path().join("data"))).await.unwrap();
    let front = tiercache_s3::service(cache.clone(), settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler = tiercache_server::ServiceHandler(front);
    tokio::spawn(tiercache_server::serve_handler(listener, handler, tiercache_server::Limits::default(), async {
        let _ = stopped.await;
    }));
    Harness { dir, cache, addr, _stop: stop }
}

/// A raw answer.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    /// The `<Code>` of an error body.
    fn code(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let start = text.find("<Code>").map(|i| i + 6).unwrap_or_else(|| panic!("no code in {text}"));
        let end = text[start..].find("</Code>").unwrap() + start;
        text[start..end].to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    /// OpenDAL's S3 service on bucket `bucket` with `ak` / `sk`.
    fn op_as(&self, bucket: &str, ak: &str, sk: &str) -> Operator {
        opendal::install_default();
        let builder = opendal::services::S3::default()
            .bucket(bucket)
            .endpoint(&format!("http://{}", self.addr))
            .region("us-east-1")
            .access_key_id(ak)
            .secret_access_key(sk)
            .disable_config_load()
            .disable_ec2_metadata();
        Operator::new(builder).unwrap()
    }

    fn op(&self, bucket: &str) -> Operator {
        self.op_as(bucket, AK, SK)
    }

    /// A request signed by `signer` (the body's SHA-256 signed), sent with reqwest.
    async fn send_as(
        &self,
        signer: Signer<'_>,
        method: &str,
        path_and_query: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let host = self.addr.to_string();
        let hash = hex::encode(Sha256::digest(body));
        let headers = signer.headers(method, &host, path_and_query, extra, &hash);
        let url = format!("http://{host}{path_and_query}");
        let mut req = reqwest::Client::new().request(method.parse().unwrap(), url).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.unwrap().to_vec();
        Answer { status, headers, body }
    }

    async fn send(&self, method: &str, path_and_query: &str, extra: &[(&str, &str)], body: &[u8]) -> Answer {
        self.send_as(Signer { access_key: AK, secret_key: SK }, method, path_and_query, extra, body).await
    }

    /// A request written by hand on a TCP connection, signed by [`AK`] with an unsigned payload:
    /// `path` goes on the wire exactly as given (no normalisation of `..`), and `body` is sent
    /// as is after the headers (shorter than a `content-length` in `extra`, say: the connection's
    /// write side is then closed). Returns the status (0 if the server only closed the
    /// connection) and the body of the answer.
    async fn raw(&self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.addr.to_string();
        let signer = Signer { access_key: AK, secret_key: SK };
        let headers = signer.headers(method, &host, path, extra, tiercache_testkit::sigv4::UNSIGNED_PAYLOAD);
        let mut head = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
        let declared = extra.iter().find(|(k, _)| *k == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
        if declared.is_none() {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut conn = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body).await.unwrap();
        if declared.is_some_and(|n| n > body.len()) {
            // A body cut short: the client goes away (the server sees the end of the stream).
            conn.shutdown().await.unwrap();
        }
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    /// Whether the cache holds entry `key` of `bucket`.
    async fn holds(&self, bucket: &str, key: &str) -> bool {
        match self.cache.read_entry(bucket, key).await {
            Ok(_) => true,
            Err(tiercache_engine::Error::NoEntry { .. }) => false,
            Err(e) => panic!("reading {bucket}/{key}: {e}"),
        }
    }
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

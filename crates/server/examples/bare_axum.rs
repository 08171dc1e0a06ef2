//! The floor for `bench/hot.sh`: a bare axum handler answering `GET /ns/web/<key>` with the
//! bytes of `<dir>/<key>`, all loaded into a `HashMap` at start, with an ETag and a content type
//! and nothing else (no lookups, validation, conditional or range handling, metrics or logging).
//!
//! `cargo run --release -p tiercache-server --example bare_axum -- DIR 127.0.0.1:PORT`

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

type Files = Arc<HashMap<String, (Bytes, String)>>;

async fn get(State(files): State<Files>, Path(key): Path<String>) -> Response {
    match files.get(&key) {
        Some((bytes, etag)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream"), (header::ETAG, etag.as_str())], bytes.clone())
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_axum DIR ADDR");
        std::process::exit(2);
    };
    let mut files = HashMap::new();
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let bytes = Bytes::from(std::fs::read(e.path())?);
        let etag = format!("\"{:x}-{}\"", bytes.len(), e.file_name().to_string_lossy());
        files.insert(e.file_name().to_string_lossy().into_owned(), (bytes, etag));
    }
    let app = axum::Router::new().route("/ns/web/{key}", axum::routing::get(get)).with_state(Arc::new(files));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}

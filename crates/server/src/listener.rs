//! The listener: the accept loop, HTTP/1.1 connections (hyper), and the limits that keep them
//! bounded: at most [`Limits::max_connections`] connections, a time limit on reading a request's
//! head, on an idle keep-alive connection, on a request body that sends nothing and on an answer
//! the client does not read, and graceful shutdown. It answers no request itself (every request goes to its [`Handler`]: [`App`], or any tower service
//! through [`ServiceHandler`], such as the S3 front door) except the two answers
//! of the limits: 503 to a request beyond the limit, and 408 to a stalled body (both chosen in
//! `error.rs`).
//!
//! At the limit, in this order (the way nginx and Envoy degrade, so that a client gets an answer
//! instead of waiting in the kernel's backlog, and a health check keeps passing):
//! 1. Keep-alive connections idle for a second or more are closed, longest idle first, to make
//!    room (nginx closes its "reusable" connections when it runs short): a parked connection costs
//!    its client only a reconnect, and it is what a flood of idle connections is made of, while a
//!    client that sends its next request at once keeps its connection.
//! 2. Otherwise the connection is accepted into the reserve ([`Limits::reserve`]): it is
//!    served one request, without keep-alive: `/healthz` (and `/metrics`, so that monitoring sees
//!    the overload) is answered as usual, anything else a fast `503` with `Retry-After` and
//!    `Connection: close`. A load balancer's health check still sees a live server, and a client
//!    is told to come back rather than left hanging.
//! 3. Beyond the reserve too, the connection is closed as soon as it is accepted (the client sees
//!    the connection closed at once, not a hang).
//!
//! A socket is never left unaccepted: with the descriptors of the process exhausted (`EMFILE`), the
//! loop closes idle connections, backs off briefly and goes on.
//!
//! The time limits are enforced in the connection's own reads (like Go's read deadlines), not by
//! a task per connection: [`Guarded`] holds one timer per connection, moved lazily (a request on a
//! busy keep-alive connection costs a clock read, not a timer update). A request's body has its
//! own timer ([`IdleBody`]), armed only while the handler waits for the client.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, header};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use metrics::{Counter, Gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::request_log::{Ids, Record, X_REQUEST_ID};
use crate::{ApiError, App};

/// File descriptors the default connection limit leaves to everything but client sockets: the
/// index (a writer and a pool of readers, each with its WAL and shared-memory files), the
/// fetches' source sockets and temp files (two each, at the default 64 fetches), the shared
/// tier's connections, lock files, the directory watcher, logs and the runtime, with room to spare.
const FDS_KEPT: u64 = 512;
/// File descriptors a client connection may hold: its socket and the blob file it is served from.
const FDS_PER_CONNECTION: u64 = 2;
/// The default connection limit never exceeds this: each connection costs memory too (its
/// buffers, a task), and ten thousand is more than one cache node serves usefully at once.
const DEFAULT_MAX_CONNECTIONS_CAP: usize = 10_000;
/// Nor is it below this, however low the descriptor limit.
const DEFAULT_MAX_CONNECTIONS_FLOOR: usize = 16;
/// Idle connections closed at most per look for them, and at most closing at once.
const RECLAIM_BATCH: usize = 32;
/// A keep-alive connection is closed to make room only once it has been idle this long: a client
/// that sends its next request at once keeps its connection, one that parks it gives way.
const RECLAIM_MIN_IDLE: Duration = Duration::from_secs(1);
/// After a look for idle connections found none, the next look waits this long (a look reads
/// every connection's state, so it is not repeated for every connection accepted at the limit).
const RECLAIM_PAUSE: Duration = Duration::from_millis(100);
/// First and longest pause after an accept error that is not the client's (`EMFILE`, `ENFILE`,
/// `ENOBUFS`, `ENOMEM`): the pause doubles while errors go on.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// The limits of the listener. [`Limits::default`] is safe for a server on the open network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most client connections served at once (besides [`Limits::reserve`]). Default: derived
    /// from the process's open-file limit (`RLIMIT_NOFILE`) so that descriptors are never
    /// exhausted: 512 are left for the index, blob and temp files and source sockets, and each
    /// connection is counted as two (its socket and the file it is served from); seven eighths of
    /// what remains (the rest is the reserve's), at most 10 000.
    pub max_connections: usize,
    /// Longest time to receive a request's head (request line and headers), from the moment a
    /// connection is accepted or the first byte of a later request arrives; a client that trickles
    /// its headers (slowloris) is closed. Default 30 s: hyper's default, and within nginx's
    /// `client_header_timeout` (60 s); a real client sends its head in one packet.
    pub header_read_timeout: Duration,
    /// Longest time a keep-alive connection may wait idle for its next request. Default 75 s:
    /// nginx's `keepalive_timeout`, longer than the idle timeouts of common load balancers and
    /// connection pools (60 s), so that they close first and never race a request against the
    /// server's close. Idle connections are also the first closed at the connection limit.
    pub keep_alive_timeout: Duration,
    /// Longest time a request body may send nothing while its handler waits for it; the request
    /// is then answered 408 and the connection closed: an upload's temp file is deleted and its
    /// disk quota reservation released. Also the longest time an answer may wait for a client
    /// that reads none of it (the connection is then closed, and the blob file it held). Default
    /// 60 s: nginx's `client_body_timeout` and `send_timeout`.
    pub body_idle_timeout: Duration,
    /// Connections accepted beyond `max_connections`, each answering one request: `/healthz` or
    /// `/metrics` as usual, anything else a 503 (see the module's documentation). They do almost
    /// no work and live for one request, so descriptors bound them, not work: by default what the
    /// descriptor budget leaves beyond the default `max_connections` (an eighth of it), 8 to
    /// 1 024. While fewer clients than this are beyond the limit at once, every health check is
    /// answered however hard the others reconnect.
    pub reserve: usize,
    /// Log one line per request (target `tiercache::access`, at INFO): method, path, status,
    /// body bytes sent, the tier that served it, the time to the answer's last byte and the
    /// request id. Default on.
    pub access_log: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        let (max_connections, reserve) = connections_for(open_files_limit());
        Limits {
            max_connections,
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            body_idle_timeout: Duration::from_secs(60),
            reserve,
            access_log: true,
        }
    }
}

/// The process's current (soft) open-file limit.
fn open_files_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The default of [`Limits::max_connections`] under the process's current open-file limit.
pub fn default_max_connections() -> usize {
    connections_for(open_files_limit()).0
}

/// The default connection limit and reserve for an open-file limit of `nofile`: both fit in what
/// [`FDS_KEPT`] leaves, at [`FDS_PER_CONNECTION`] each; seven eighths to the limit, the rest to
/// the reserve.
fn connections_for(nofile: u64) -> (usize, usize) {
    let budget = usize::try_from(nofile.saturating_sub(FDS_KEPT) / FDS_PER_CONNECTION).unwrap_or(usize::MAX);
    let max = (budget / 8 * 7).clamp(DEFAULT_MAX_CONNECTIONS_FLOOR, DEFAULT_MAX_CONNECTIONS_CAP);
    (max, budget.saturating_sub(max).clamp(8, 1024))
}

/// Raises this process's soft open-file limit to its hard limit (as Go's runtime and many
/// servers do at start: the soft limit is often 1 024 for historical reasons, the hard one far
/// higher), and returns the limit now in force.
///
/// # Errors
/// If the limit cannot be changed; the old one then stays in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // Linux refuses more than `fs.nr_open` (1 Mi by default) even when the hard limit is unlimited.
    let want = maximum.unwrap_or(1 << 20).min(1 << 20);
    match current {
        Some(now) if now < want => {
            setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum })?;
            Ok(want)
        }
        now => Ok(now.unwrap_or(u64::MAX)),
    }
}

/// Serves `app` (any [`Handler`]) on `listener` within `limits` until `shutdown` resolves; then stops accepting,
/// lets every connection finish the request it is answering (idle ones close at once) and
/// returns when all are closed.
pub(crate) async fn run<H: Handler>(
    listener: TcpListener,
    app: H,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let shared = Arc::new(Shared::new(limits));
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut normal = hyper::server::conn::http1::Builder::new();
    // Timers are ours (`Guarded`, `IdleBody`): hyper's own header timer would also cut idle
    // keep-alive connections at the header limit.
    normal.header_read_timeout(None);
    let mut reserve = normal.clone();
    reserve.keep_alive(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: what is idle goes first, then a pause, so that
                // the loop neither spins nor stops.
                shared.metrics.accept_errors.increment(1);
                if backoff == ACCEPT_BACKOFF.0 {
                    tracing::warn!(error = %e, "cannot accept connections; closing idle ones and retrying");
                } else {
                    tracing::debug!(error = %e, pause = ?backoff, "cannot accept connections");
                }
                shared.reclaim_idle(true);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let Some(pool) = shared.admit() else {
            shared.metrics.refused_full.increment(1);
            tracing::debug!("connection refused: the connection limit and its reserve are full");
            drop(stream);
            continue;
        };
        // Small answers go out at once rather than waiting for an acknowledgement (Nagle).
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new(shared.epoch, stop.child_token()));
        if pool == Pool::Normal {
            shared.register(&conn);
        }
        let builder = if pool == Pool::Normal { normal.clone() } else { reserve.clone() };
        let shared = Arc::clone(&shared);
        let app = app.clone();
        tracker.spawn(async move {
            let _open = OpenGuard { shared: &shared, conn: &conn, pool };
            let io = TokioIo::new(Guarded::new(stream, Arc::clone(&conn), &shared));
            let service = ConnService { app, conn: Arc::clone(&conn), shared: Arc::clone(&shared), pool };
            let served = builder.serve_connection(io, service);
            let mut served = std::pin::pin!(served);
            let result = tokio::select! {
                result = served.as_mut() => result,
                () = conn.drain.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed");
            }
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Accept errors about one connection only, after which the next accept may succeed at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Which connections a connection is counted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// Within [`Limits::max_connections`]: served fully.
    Normal,
    /// Beyond it, within [`Limits::reserve`]: one request, `/healthz`, `/metrics` or a 503.
    Reserve,
}

/// The listener's state, shared with every connection.
struct Shared {
    limits: Limits,
    /// Connections of the normal pool open, including those closing to make room.
    open: AtomicUsize,
    /// Connections of the normal pool told to close to make room and not closed yet.
    draining: AtomicUsize,
    /// Connections of the reserve open.
    reserve_open: AtomicUsize,
    /// The normal pool's connections, by id, for finding idle ones at the limit.
    registry: Mutex<HashMap<u64, Arc<Conn>>>,
    /// The clock connections' idle times are measured from.
    epoch: Instant,
    /// When a look for idle connections last found none.
    fruitless_reclaim: Mutex<Option<Instant>>,
    metrics: Metrics,
    ids: Ids,
}

/// The listener's metrics, looked up once.
struct Metrics {
    open: Gauge,
    refused_full: Counter,
    refused_overloaded: Counter,
    reclaimed: Counter,
    accept_errors: Counter,
    timeout_header: Counter,
    timeout_keep_alive: Counter,
    timeout_body: Counter,
    timeout_send: Counter,
    /// Requests answered, by status class (`1xx` to `5xx`).
    requests: [Counter; 5],
    /// Response body bytes sent.
    sent_bytes: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        let refused =
            |reason: &'static str| metrics::counter!("tiercache_http_connections_refused_total", "reason" => reason);
        let timeout = |kind: &'static str| metrics::counter!("tiercache_http_timeouts_total", "kind" => kind);
        Metrics {
            open: metrics::gauge!("tiercache_http_connections"),
            refused_full: refused("full"),
            refused_overloaded: refused("overloaded"),
            reclaimed: metrics::counter!("tiercache_http_connections_reclaimed_total"),
            accept_errors: metrics::counter!("tiercache_http_accept_errors_total"),
            timeout_header: timeout("header"),
            timeout_keep_alive: timeout("keep_alive"),
            timeout_body: timeout("body"),
            timeout_send: timeout("send"),
            requests: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .map(|class| metrics::counter!("tiercache_http_requests_total", "class" => class)),
            sent_bytes: metrics::counter!("tiercache_http_sent_bytes_total"),
        }
    }
}

impl Shared {
    fn new(limits: Limits) -> Shared {
        Shared {
            limits,
            open: AtomicUsize::new(0),
            draining: AtomicUsize::new(0),
            reserve_open: AtomicUsize::new(0),
            registry: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            fruitless_reclaim: Mutex::new(None),
            metrics: Metrics::new(),
            ids: Ids::new(),
        }
    }

    /// The pool a new connection joins, counted in it; `None` if both are full. Only the accept
    /// loop calls this, so counts only fall between its check and its increment.
    fn admit(&self) -> Option<Pool> {
        let in_use = || self.open.load(Ordering::Acquire).saturating_sub(self.draining.load(Ordering::Acquire));
        if in_use() < self.limits.max_connections
            || (self.reclaim_idle(false) > 0 && in_use() < self.limits.max_connections)
        {
            self.open.fetch_add(1, Ordering::AcqRel);
            self.metrics.open.increment(1.0);
            return Some(Pool::Normal);
        }
        if self.reserve_open.load(Ordering::Acquire) < self.limits.reserve {
            self.reserve_open.fetch_add(1, Ordering::AcqRel);
            self.metrics.open.increment(1.0);
            tracing::debug!("connection limit reached: serving a connection from the reserve");
            return Some(Pool::Reserve);
        }
        None
    }

    fn register(&self, conn: &Arc<Conn>) {
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).insert(conn.id(), Arc::clone(conn));
    }

    /// Tells up to [`RECLAIM_BATCH`] keep-alive connections idle for [`RECLAIM_MIN_IDLE`] or
    /// more, longest idle first, to close, and returns how many. Looks at most once per
    /// [`RECLAIM_PAUSE`] after a fruitless look, unless `now` (descriptors ran out: then any idle
    /// connection goes), and never while a batch is still closing.
    fn reclaim_idle(&self, now: bool) -> usize {
        if self.draining.load(Ordering::Acquire) >= RECLAIM_BATCH {
            return 0;
        }
        let mut fruitless = self.fruitless_reclaim.lock().unwrap_or_else(|p| p.into_inner());
        if !now && fruitless.is_some_and(|t| t.elapsed() < RECLAIM_PAUSE) {
            return 0;
        }
        // Idle since at most this stamp (see `Conn::stamp`).
        let elapsed = self.epoch.elapsed().saturating_sub(if now { Duration::ZERO } else { RECLAIM_MIN_IDLE });
        let before = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX - 1) + 1;
        // Under the registry's lock throughout: a connection that is still registered has not
        // uncounted itself yet, so it will see its `draining` mark (`OpenGuard`).
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut idle: Vec<(u64, &Arc<Conn>)> = registry
            .values()
            .filter_map(|c| {
                let since = c.idle_since.load(Ordering::Acquire);
                let is_idle = since != 0 && since <= before && !c.draining.load(Ordering::Acquire);
                is_idle.then_some((since, c))
            })
            .collect();
        let n = idle.len().min(RECLAIM_BATCH.saturating_sub(self.draining.load(Ordering::Acquire)));
        if n == 0 {
            *fruitless = Some(Instant::now());
            return 0;
        }
        *fruitless = None;
        if n < idle.len() {
            idle.select_nth_unstable_by_key(n - 1, |(since, _)| *since);
        }
        for (_, conn) in &idle[..n] {
            conn.draining.store(true, Ordering::Release);
            self.draining.fetch_add(1, Ordering::AcqRel);
            conn.drain.cancel();
        }
        drop(idle);
        drop(registry);
        self.metrics.reclaimed.increment(n as u64);
        tracing::debug!(closed = n, "connection limit reached: closing idle keep-alive connections");
        n
    }
}

/// Uncounts a connection when its task ends, however it ends.
struct OpenGuard<'a> {
    shared: &'a Shared,
    conn: &'a Arc<Conn>,
    pool: Pool,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let s = self.shared;
        match self.pool {
            Pool::Normal => {
                let mut registry = s.registry.lock().unwrap_or_else(|p| p.into_inner());
                registry.remove(&self.conn.id());
                if self.conn.draining.load(Ordering::Acquire) {
                    s.draining.fetch_sub(1, Ordering::AcqRel);
                }
                s.open.fetch_sub(1, Ordering::AcqRel);
            }
            Pool::Reserve => {
                s.reserve_open.fetch_sub(1, Ordering::AcqRel);
            }
        }
        s.metrics.open.decrement(1.0);
    }
}

/// One connection's state, shared by its reads ([`Guarded`]), its service and its bodies.
struct Conn {
    /// The clock of [`Conn::idle_since`] (the listener's start).
    epoch: Instant,
    /// A request is being answered: from the service's call until its response body is dropped.
    busy: AtomicBool,
    /// Requests answered (response bodies dropped) on this connection.
    answered: AtomicU64,
    /// When the connection became idle between requests, in milliseconds since `epoch` plus one;
    /// 0 while it is not idle.
    idle_since: AtomicU64,
    /// The current request's body was cut by [`Limits::body_idle_timeout`].
    body_timed_out: AtomicBool,
    /// The current request's body has not been read to its end: answering now leaves the rest
    /// on the connection, which then closes.
    body_unread: AtomicBool,
    /// Told to close to make room (counted in [`Shared::draining`]).
    draining: AtomicBool,
    /// Cancelled to close the connection gracefully: at shutdown, or to make room.
    drain: CancellationToken,
}

impl Conn {
    fn new(epoch: Instant, drain: CancellationToken) -> Conn {
        Conn {
            epoch,
            busy: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            body_timed_out: AtomicBool::new(false),
            body_unread: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain,
        }
    }

    /// An id unique among open connections: the state's address.
    fn id(self: &Arc<Conn>) -> u64 {
        Arc::as_ptr(self) as usize as u64
    }

    /// `at` as an [`Conn::idle_since`] stamp.
    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// The instant of an [`Conn::idle_since`] stamp.
    fn instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_millis(stamp.saturating_sub(1))
    }
}

/// What a connection's reads are waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request's head: [`Limits::header_read_timeout`].
    Head,
    /// The first byte of another request: [`Limits::keep_alive_timeout`].
    Idle,
    /// Nothing with a time limit: a request is being answered (its body has its own timer).
    Busy,
}

/// A client socket whose reads time out by phase: a read waiting for a request's head fails
/// after [`Limits::header_read_timeout`], one waiting for another request on an idle keep-alive
/// connection after [`Limits::keep_alive_timeout`]; hyper then closes the connection.
///
/// Its timer is always armed at or before the moment the phase's time may be up, and only moved
/// when it fires early (or must come earlier): while a request is answered it fires at most once
/// per keep-alive timeout, so that the idle phase is looked at on time even though hyper does not
/// read again after an answer until the socket wakes it.
struct Guarded {
    io: TcpStream,
    conn: Arc<Conn>,
    header_read_timeout: Duration,
    keep_alive_timeout: Duration,
    phase: Phase,
    /// Requests answered when this last looked.
    seen_answered: u64,
    /// When the current phase's time is up (not used while [`Phase::Busy`]).
    deadline: Instant,
    /// Fires at or before `deadline`.
    timer: Pin<Box<Sleep>>,
    timeouts: (Counter, Counter),
    /// [`Limits::body_idle_timeout`], for writes that the client does not read.
    send_timeout: Duration,
    /// Armed while a write waits for the client (made on the first such wait).
    send_timer: Option<Pin<Box<Sleep>>>,
    /// A write went out since `send_timer` was last set.
    has_sent: bool,
    send_timeouts: Counter,
}

impl Guarded {
    fn new(io: TcpStream, conn: Arc<Conn>, shared: &Shared) -> Guarded {
        let deadline = Instant::now() + shared.limits.header_read_timeout;
        Guarded {
            io,
            conn,
            header_read_timeout: shared.limits.header_read_timeout,
            keep_alive_timeout: shared.limits.keep_alive_timeout,
            phase: Phase::Head,
            seen_answered: 0,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            timeouts: (shared.metrics.timeout_header.clone(), shared.metrics.timeout_keep_alive.clone()),
            send_timeout: shared.limits.body_idle_timeout,
            send_timer: None,
            has_sent: false,
            send_timeouts: shared.metrics.timeout_send.clone(),
        }
    }

    /// Moves to the phase the connection is in, before a read.
    fn update_phase(&mut self) {
        if self.conn.busy.load(Ordering::Acquire) {
            self.phase = Phase::Busy;
            return;
        }
        let answered = self.conn.answered.load(Ordering::Acquire);
        if answered != self.seen_answered {
            // An answer ended (at `idle_since`): idle until the next request's first byte.
            self.seen_answered = answered;
            self.phase = Phase::Idle;
            let since = self.conn.idle_since.load(Ordering::Acquire);
            let start = if since == 0 { Instant::now() } else { self.conn.instant(since) };
            self.deadline = start + self.keep_alive_timeout;
        }
    }

    /// A write that found the socket full: fails once the client has read nothing for the send
    /// timeout (the timer is reset only when a write went out since it was set).
    fn poll_send_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.send_timeout;
        let timer = self.send_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::mem::take(&mut self.has_sent) {
            timer.as_mut().reset(Instant::now() + timeout);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.send_timeouts.increment(1);
        tracing::debug!(timeout = ?timeout, "closing a connection: the client read nothing of its answer");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client read nothing within the send timeout")))
    }

    /// Whether the phase's time is up; if not, the timer will wake the task when it may be.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase == Phase::Busy {
            // No limit now; but the answer may end while hyper waits on the socket only: be
            // polled again within a keep-alive timeout, to start the idle phase's clock.
            let latest = Instant::now() + self.keep_alive_timeout;
            if self.timer.deadline() > latest {
                self.timer.as_mut().reset(latest);
            }
            while self.timer.as_mut().poll(cx).is_ready() {
                self.timer.as_mut().reset(Instant::now() + self.keep_alive_timeout);
            }
            return false;
        }
        if self.timer.deadline() > self.deadline {
            self.timer.as_mut().reset(self.deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.deadline {
                return true;
            }
            self.timer.as_mut().reset(self.deadline);
        }
        false
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.update_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    // The first byte of another request: its head has its own time.
                    this.phase = Phase::Head;
                    this.deadline = Instant::now() + this.header_read_timeout;
                    this.conn.idle_since.store(0, Ordering::Release);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !this.poll_expired(cx) {
                    return Poll::Pending;
                }
                let what = if this.phase == Phase::Head {
                    this.timeouts.0.increment(1);
                    "no complete request head within the header read timeout"
                } else {
                    this.timeouts.1.increment(1);
                    "no request within the keep-alive timeout"
                };
                tracing::debug!("closing a connection: {what}");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.has_sent = true;
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_send_stalled(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.has_sent = true;
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_send_stalled(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the listener serves: one request in, its answer out (never an error: a failure is an
/// answer). Implemented by [`App`], and by [`ServiceHandler`] for any other tower service.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers `req`.
    fn call(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response, Infallible>>;
}

impl Handler for App {
    fn call(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response, Infallible>> {
        tower::Service::call(&mut self.clone(), req)
    }
}

/// A tower service served by the listener: its response bodies become [`Body`], and a service
/// error a `500` (logged).
#[derive(Clone)]
pub struct ServiceHandler<S>(
    /// The service.
    pub S,
);

impl<S, B, E> Handler for ServiceHandler<S>
where
    S: tower::Service<Request<Body>, Response = http::Response<B>, Error = E> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: std::fmt::Display + Send + 'static,
{
    fn call(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response, Infallible>> {
        let fut = tower::Service::call(&mut self.0.clone(), req);
        Box::pin(async move {
            Ok(match fut.await {
                Ok(res) => res.map(Body::new),
                Err(e) => {
                    tracing::warn!(error = %e, "the service failed to answer");
                    http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            })
        })
    }
}

/// The service of one connection: marks the connection busy, hands the request to its
/// [`Handler`] with its body under [`IdleBody`], and answers the limits' own refusals.
#[derive(Clone)]
struct ConnService<H> {
    app: H,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    pool: Pool,
}

impl<H: Handler> hyper::service::Service<Request<Incoming>> for ConnService<H> {
    type Response = Response<Answered>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        self.conn.idle_since.store(0, Ordering::Release);
        self.conn.busy.store(true, Ordering::Release);
        let done = DoneGuard(Some(Arc::clone(&self.conn)));
        let record = Box::new(Record {
            started: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            id: self.shared.ids.of(req.headers()),
            status: http::StatusCode::OK,
            tier: None,
            sent_bytes: 0,
            is_logged: self.shared.limits.access_log,
        });
        let span = record.span();
        if self.pool == Pool::Reserve && !matches!(req.uri().path(), "/healthz" | "/metrics") {
            self.shared.metrics.refused_overloaded.increment(1);
            let inner = AnswerInner::Ready(Some(ApiError::Overloaded.into_response()));
            return Answer { inner, done, record: Some(record), span, shared: Arc::clone(&self.shared) };
        }
        let timeout = self.shared.limits.body_idle_timeout;
        self.conn.body_unread.store(!req.body().is_end_stream(), Ordering::Release);
        let req = req.map(|body| {
            if body.is_end_stream() {
                Body::empty()
            } else {
                let counter = self.shared.metrics.timeout_body.clone();
                Body::new(IdleBody {
                    inner: body,
                    timeout,
                    timer: None,
                    progressed: false,
                    conn: Arc::clone(&self.conn),
                    counter,
                    is_done: false,
                })
            }
        });
        let inner = span.in_scope(|| self.app.call(req));
        Answer { inner: AnswerInner::App(inner), done, record: Some(record), span, shared: Arc::clone(&self.shared) }
    }
}

/// Marks the request answered when dropped (with its response body, or earlier if the answer
/// never came).
struct DoneGuard(Option<Arc<Conn>>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // In this order: whoever sees the connection not busy sees the answer counted, and
            // when it ended.
            conn.idle_since.store(conn.stamp(Instant::now()), Ordering::Release);
            conn.answered.fetch_add(1, Ordering::AcqRel);
            conn.busy.store(false, Ordering::Release);
        }
    }
}

/// The future of one request's answer, polled in the request's span.
struct Answer {
    inner: AnswerInner,
    done: DoneGuard,
    record: Option<Box<Record>>,
    span: tracing::Span,
    shared: Arc<Shared>,
}

enum AnswerInner {
    App(BoxFuture<'static, Result<Response, Infallible>>),
    Ready(Option<Response>),
}

impl Future for Answer {
    type Output = Result<Response<Answered>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut res = match &mut this.inner {
            AnswerInner::App(f) => {
                let Ok(res) = ready!(this.span.in_scope(|| f.as_mut().poll(cx)));
                res
            }
            AnswerInner::Ready(r) => r.take().expect("an answer is polled after it is ready at most once"),
        };
        let conn = this.done.0.as_ref().expect("the guard is taken only here");
        if conn.body_timed_out.swap(false, Ordering::AcqRel) {
            // The handler saw its body fail; the client is told why, and the connection closes.
            res = ApiError::BodyTimeout.into_response();
        }
        // A body left unread ends the connection (hyper will not read past it), and the client
        // is told so rather than finding out on its next request.
        if conn.draining.load(Ordering::Acquire)
            || conn.drain.is_cancelled()
            || conn.body_unread.load(Ordering::Acquire)
        {
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let done = DoneGuard(this.done.0.take());
        let mut record = this.record.take().expect("the record is taken only here");
        record.status = res.status();
        record.tier = res.headers().get(crate::respond::X_TIERCACHE_TIER).cloned();
        res.headers_mut().insert(X_REQUEST_ID, record.id.clone());
        let sent = Sent { record, shared: Arc::clone(&this.shared) };
        Poll::Ready(Ok(res.map(|body| Answered { body, sent, _done: done })))
    }
}

/// A response body that marks its request answered when dropped (hyper drops it once written),
/// counting the bytes it sends.
struct Answered {
    body: Body,
    sent: Sent,
    _done: DoneGuard,
}

/// The request's record, finished (counted and logged) when its answer's body is dropped: once
/// written, or when the client went away.
struct Sent {
    record: Box<Record>,
    shared: Arc<Shared>,
}

impl Drop for Sent {
    fn drop(&mut self) {
        let m = &self.shared.metrics;
        self.record.finish(&m.requests, &m.sent_bytes);
    }
}

impl hyper::body::Body for Answered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent.record.sent_bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails when it sends nothing for [`Limits::body_idle_timeout`] while its
/// reader waits. The timer runs only while the handler is waiting for the client.
struct IdleBody {
    inner: Incoming,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last set.
    progressed: bool,
    conn: Arc<Conn>,
    counter: Counter,
    /// The body ended, or failed.
    is_done: bool,
}

/// Why a request body failed: it sent nothing for this long.
#[derive(Debug)]
struct BodyIdleTimeout(Duration);

impl std::fmt::Display for BodyIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body sent nothing for {:?}", self.0)
    }
}

impl std::error::Error for BodyIdleTimeout {}

impl hyper::body::Body for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.is_done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.progressed = true;
                if this.inner.is_end_stream() {
                    this.conn.body_unread.store(false, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.is_done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.is_done = true;
                this.conn.body_unread.store(false, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if std::mem::take(&mut this.progressed) {
                    timer.as_mut().reset(Instant::now() + timeout);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.is_done = true;
                this.counter.increment(1);
                this.conn.body_timed_out.store(true, Ordering::Release);
                tracing::debug!(timeout = ?timeout, "cutting a request body that sends nothing");
                Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default limit and reserve leave the kept descriptors, two per connection, within the
    /// open-file limit, between their floors and caps.
    #[test]
    fn default_connection_limits_fit_the_open_file_limit() {
        for nofile in [0, 256, 1024, 4096, 20_000, 65_536, 1 << 20, u64::MAX] {
            let (max, reserve) = connections_for(nofile);
            assert!((DEFAULT_MAX_CONNECTIONS_FLOOR..=DEFAULT_MAX_CONNECTIONS_CAP).contains(&max), "{nofile}: {max}");
            assert!((8..=1024).contains(&reserve), "{nofile}: {reserve}");
            let fds = FDS_KEPT + FDS_PER_CONNECTION * (max + reserve) as u64;
            if max > DEFAULT_MAX_CONNECTIONS_FLOOR {
                assert!(fds <= nofile, "{nofile}: {max} + {reserve} connections need {fds} descriptors");
            }
        }
        assert_eq!(connections_for(1024), (224, 32));
        assert_eq!(connections_for(20_000), (8526, 1024));
    }
}

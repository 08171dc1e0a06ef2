//! The server's log writer: access-log lines are gathered and written to standard error in
//! batches, as nginx's `access_log … buffer= flush=` does, so a hot hit does not pay a `write`
//! of its own for its line.
//!
//! - An access-log line (target `tiercache::access`) is appended to a buffer. The buffer is
//!   written out when it holds [`BATCH_BYTES`], by the thread whose line filled it, and otherwise
//!   every [`FLUSH_EVERY`] by a thread of its own, which sleeps in between (no wake-up per line).
//! - Any other line (a warning, a start-up line) writes the buffer and itself at once, so lines
//!   stay in the order they were logged and a warning is never held back.
//! - [`FlushGuard`], dropped at the end of `main`, writes what is left. A process killed with
//!   SIGKILL loses at most the last [`FLUSH_EVERY`] of access lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How many bytes of access lines are held before they are written.
const BATCH_BYTES: usize = 64 << 10;
/// How long an access line waits at most before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// The target of the access-log lines (`tiercache_server`'s request log).
const ACCESS_TARGET: &str = "tiercache::access";

/// Makes the writers of [`tracing_subscriber::fmt`]: see the module's comment.
#[derive(Clone)]
pub(crate) struct Batched {
    shared: Arc<Shared>,
    /// Whether access lines are held (the flushing thread runs).
    holds: bool,
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Where lines go (standard error), locked while a batch is taken and written, so batches
    /// arrive in order.
    out: Mutex<Box<dyn Write + Send>>,
    /// Set (and signalled) when the flushing thread is to write what is left and end.
    is_stopping: Mutex<bool>,
    stop: Condvar,
}

impl Shared {
    /// Writes the pending lines, then `line`.
    fn write_out(&self, line: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_empty() && line.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut *pending, Vec::with_capacity(BATCH_BYTES));
        drop(pending);
        // Nowhere to report a failed write to standard error: the lines are lost, as they would be.
        let _ = out.write_all(&batch);
        let _ = out.write_all(line);
    }
}

/// Writes what is left when dropped, and stops the flushing thread.
pub(crate) struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Batched {
    /// The writer to standard error, and the guard that writes what is left.
    pub(crate) fn start() -> (Batched, FlushGuard) {
        Batched::start_to(Box::new(std::io::stderr()))
    }

    /// [`Batched::start`], writing to `out`.
    fn start_to(out: Box<dyn Write + Send>) -> (Batched, FlushGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(BATCH_BYTES)),
            out: Mutex::new(out),
            is_stopping: Mutex::new(false),
            stop: Condvar::new(),
        });
        let flusher = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tiercache-log".into())
            .spawn(move || {
                let mut is_stopping = flusher.is_stopping.lock().unwrap_or_else(PoisonError::into_inner);
                while !*is_stopping {
                    is_stopping =
                        flusher.stop.wait_timeout(is_stopping, FLUSH_EVERY).unwrap_or_else(PoisonError::into_inner).0;
                    flusher.write_out(&[]);
                }
            })
            .ok();
        // Without its flushing thread (it could not be started), no line is held.
        let holds = thread.is_some();
        (Batched { shared: Arc::clone(&shared), holds }, FlushGuard { shared, thread })
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        *self.shared.is_stopping.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.stop.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.write_out(&[]);
    }
}

/// One formatted line's writer (the `fmt` layer writes a line with one `write_all`).
pub(crate) struct LineWriter {
    shared: Arc<Shared>,
    is_held: bool,
}

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.is_held {
            let mut pending = self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.extend_from_slice(line);
            if pending.len() < BATCH_BYTES {
                return Ok(line.len());
            }
            drop(pending);
            self.shared.write_out(&[]);
        } else {
            self.shared.write_out(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { shared: Arc::clone(&self.shared), is_held: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        LineWriter { shared: Arc::clone(&self.shared), is_held: self.holds && meta.target() == ACCESS_TARGET }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writer wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<u8>>>);

    impl Write for Seen {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn access_lines_wait_for_a_batch_and_any_other_line_writes_them_first() {
        let seen = Seen::default();
        let (batched, guard) = Batched::start_to(Box::new(seen.clone()));
        let access = tracing::Metadata::new(
            "event",
            ACCESS_TARGET,
            tracing::Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing_core_callsite()),
            tracing::metadata::Kind::EVENT,
        );
        let written = || seen.0.lock().unwrap().clone();
        batched.make_writer_for(&access).write_all(b"one\n").unwrap();
        assert_eq!(written(), b"", "an access line is held");
        batched.make_writer().write_all(b"warning\n").unwrap();
        assert_eq!(written(), b"one\nwarning\n", "held lines are written first, in order");
        let mut long = vec![b'x'; BATCH_BYTES - 1];
        long.push(b'\n');
        batched.make_writer_for(&access).write_all(&long).unwrap();
        assert_eq!(written().len(), 12 + BATCH_BYTES, "a full batch is written at once");
        batched.make_writer_for(&access).write_all(b"last\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !written().ends_with(b"last\n") {
            assert!(std::time::Instant::now() < deadline, "the flushing thread wrote nothing");
            std::thread::sleep(Duration::from_millis(10));
        }
        batched.make_writer_for(&access).write_all(b"after\n").unwrap();
        drop(guard);
        assert!(written().ends_with(b"last\nafter\n"), "the guard writes what is left");
    }

    fn tracing_core_callsite() -> tracing::callsite::Identifier {
        struct Site;
        impl tracing::callsite::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static SITE: Site = Site;
        tracing::callsite::Identifier(&SITE)
    }
}

//! The last [`CAPACITY`] warnings and errors this process logged, for the dashboard's "recent
//! errors" panel: a `tracing` layer ([`RecentWarnings`]) the binary adds to its subscriber, and a
//! process-wide ring it writes to.
//!
//! It formats an event's message and fields once, when it is logged at WARN or ERROR; it ignores
//! every other event at the cost of one level comparison.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Warnings kept.
pub(crate) const CAPACITY: usize = 100;

/// Longest message kept, in bytes; longer ones are cut (at a character boundary).
const MAX_MESSAGE_BYTES: usize = 2048;

/// One warning or error.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Warning {
    /// When, ms since the epoch.
    pub(crate) time_ms: i64,
    /// `WARN` or `ERROR`.
    pub(crate) level: &'static str,
    /// The module that logged it.
    pub(crate) target: String,
    /// The message, then its fields as `name=value`.
    pub(crate) message: String,
}

static RING: Mutex<VecDeque<Warning>> = Mutex::new(VecDeque::new());

/// The warnings kept, oldest first.
pub(crate) fn recent() -> Vec<Warning> {
    RING.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
}

fn keep(w: Warning) {
    let mut ring = RING.lock().unwrap_or_else(|p| p.into_inner());
    if ring.len() == CAPACITY {
        ring.pop_front();
    }
    ring.push_back(w);
}

/// A `tracing` layer keeping every WARN and ERROR event for the dashboard (`/ui/`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentWarnings;

impl<S: Subscriber> Layer<S> for RecentWarnings {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let mut message = text.message;
        if !text.fields.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&text.fields);
        }
        if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        keep(Warning {
            time_ms: super::history::now_ms(),
            level: if level == Level::ERROR { "ERROR" } else { "WARN" },
            target: event.metadata().target().to_owned(),
            message,
        });
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

impl Text {
    fn field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn warnings_and_errors_are_kept_with_their_fields_and_nothing_else() {
        let subscriber = tracing_subscriber::registry().with(RecentWarnings);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(namespace = "photos", n = 3, "a warning kept {}", "here");
            for i in 0..CAPACITY {
                tracing::error!(i, "error");
            }
        });
        let all = recent();
        assert_eq!(all.len(), CAPACITY, "the ring is bounded");
        assert!(all.iter().all(|w| w.message != "not kept"));
        assert_eq!(all.last().unwrap().message, format!("error i={}", CAPACITY - 1));
        assert_eq!(all.last().unwrap().level, "ERROR");
        // The warning was pushed out by the errors after it; log it again and look for it.
        tracing::subscriber::with_default(tracing_subscriber::registry().with(RecentWarnings), || {
            tracing::warn!(namespace = "photos", n = 3, "a warning kept {}", "here");
        });
        let w = recent().pop().unwrap();
        assert_eq!((w.level, w.message.as_str()), ("WARN", "a warning kept here namespace=photos n=3"));
    }
}

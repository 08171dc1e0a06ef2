//! The dashboard's history: every [`INTERVAL`] a sample of the counters behind its charts, kept
//! for the last hour in a ring ([`History`]), so that the page is useful without a Prometheus
//! server. A sample is read from the process's own Prometheus recorder (the text `/metrics`
//! renders), so each chart is the `rate()` of the same series a Prometheus server would scrape.
//!
//! It keeps no history across restarts and samples nothing but this process.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tiercache_engine::Cache;

/// Time between samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(2);

/// Samples kept: one hour's.
const CAPACITY: usize = 1800;

/// The tiers, in the order of [`Sample`]'s arrays and of the charts.
pub(crate) const TIERS: [&str; 4] = ["memory", "disk", "shared", "source"];

/// One sample: counters (totals since the process started) and a few gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sample {
    /// Milliseconds since the epoch.
    pub(crate) t_ms: i64,
    /// `tiercache_reads_total`, summed by `tier`.
    pub(crate) reads: [f64; 4],
    /// `tiercache_read_bytes_total`, by `tier`.
    pub(crate) read_bytes: [f64; 4],
    /// `tiercache_http_requests_total`, summed.
    pub(crate) requests: f64,
    /// `tiercache_http_sent_bytes_total`, summed.
    pub(crate) sent_bytes: f64,
    /// `tiercache_source_fetches_total`, summed over `result`.
    pub(crate) source_fetches: f64,
    /// `tiercache_source_fetches_total{result="error"}`.
    pub(crate) source_errors: f64,
    /// `tiercache_read_seconds_sum{tier="source"}` and `_count`: reads the source served, timed.
    pub(crate) source_seconds: (f64, f64),
    /// `tiercache_disk_evicted_blobs_total`.
    pub(crate) evictions: f64,
    /// Bytes of the disk tier in use (a gauge: the quota's accounting).
    pub(crate) disk_used_bytes: f64,
}

impl Sample {
    /// The sample of the counters in `text` (Prometheus text exposition), at `t_ms`.
    pub(crate) fn parse(text: &str, t_ms: i64) -> Sample {
        let mut s = Sample { t_ms, ..Sample::default() };
        for (name, labels, value) in text.lines().filter_map(series) {
            let tier = || TIERS.iter().position(|t| label(labels, "tier") == Some(t));
            match name {
                "tiercache_reads_total" => {
                    if let Some(i) = tier() {
                        s.reads[i] += value;
                    }
                }
                "tiercache_read_bytes_total" => {
                    if let Some(i) = tier() {
                        s.read_bytes[i] += value;
                    }
                }
                "tiercache_http_requests_total" => s.requests += value,
                "tiercache_http_sent_bytes_total" => s.sent_bytes += value,
                "tiercache_source_fetches_total" => {
                    s.source_fetches += value;
                    if label(labels, "result") == Some("error") {
                        s.source_errors += value;
                    }
                }
                "tiercache_read_seconds_sum" if label(labels, "tier") == Some("source") => s.source_seconds.0 += value,
                "tiercache_read_seconds_count" if label(labels, "tier") == Some("source") => {
                    s.source_seconds.1 += value
                }
                "tiercache_disk_evicted_blobs_total" => s.evictions += value,
                _ => {}
            }
        }
        s
    }
}

/// `name{labels} value` of one line of the text exposition format; `None` for comments, blank
/// lines and values that are not numbers.
fn series(line: &str) -> Option<(&str, &str, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        // Label values may hold spaces and `}` only escaped or quoted: the last `}` ends them.
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], &line[open + 1..close], &line[close + 1..])
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, "", rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The value of label `key` in `a="x",b="y"` (our labels hold no quotes or commas).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// The ring of samples, and what they are read from.
#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
    /// Held here, not by the sampling task: the task holds only a weak reference, so that
    /// dropping the dashboard drops its clone of the cache at once.
    source: Option<(Cache, PrometheusHandle)>,
}

impl History {
    /// Starts sampling `metrics` every [`INTERVAL`] for as long as the returned history is held.
    /// Must be called within a tokio runtime.
    pub(crate) fn spawn(cache: Cache, metrics: PrometheusHandle) -> Arc<History> {
        let history = Arc::new(History { source: Some((cache, metrics)), ..History::default() });
        let weak: Weak<History> = Arc::downgrade(&history);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(history) = weak.upgrade() else { return };
                history.sample();
            }
        });
        history
    }

    /// Takes one sample now.
    fn sample(&self) {
        let Some((cache, metrics)) = &self.source else { return };
        cache.publish_metrics();
        let mut sample = Sample::parse(&metrics.render(), now_ms());
        sample.disk_used_bytes = cache.quota_stats().used_bytes as f64;
        self.push(sample);
    }

    pub(crate) fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The rates between consecutive samples whose interval ends after `since_ms`.
    pub(crate) fn rates(&self, since_ms: i64) -> Rates {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = Rates { interval_seconds: INTERVAL.as_secs_f64(), ..Rates::default() };
        for (a, b) in samples.iter().zip(samples.iter().skip(1)).filter(|(_, b)| b.t_ms > since_ms) {
            let secs = ((b.t_ms - a.t_ms) as f64 / 1000.0).max(0.001);
            let rate = |x: f64, y: f64| ((y - x).max(0.0)) / secs;
            r.t_ms.push(b.t_ms);
            let reads: Vec<f64> = (0..4).map(|i| (b.reads[i] - a.reads[i]).max(0.0)).collect();
            let all: f64 = reads.iter().sum();
            for (i, n) in reads.iter().enumerate() {
                r.reads_per_second[i].push(n / secs);
                r.served_share[i].push((all > 0.0).then(|| n / all));
                r.bytes_per_second[i].push(rate(a.read_bytes[i], b.read_bytes[i]));
            }
            r.requests_per_second.push(rate(a.requests, b.requests));
            r.sent_bytes_per_second.push(rate(a.sent_bytes, b.sent_bytes));
            r.source_fetches_per_second.push(rate(a.source_fetches, b.source_fetches));
            r.source_errors_per_second.push(rate(a.source_errors, b.source_errors));
            let timed = b.source_seconds.1 - a.source_seconds.1;
            r.source_mean_ms.push((timed > 0.0).then(|| (b.source_seconds.0 - a.source_seconds.0) * 1000.0 / timed));
            r.evictions_per_second.push(rate(a.evictions, b.evictions));
            r.disk_used_bytes.push(b.disk_used_bytes);
        }
        r
    }
}

/// Per-interval rates, one value per interval, each array as long as `t_ms`; tier arrays in the
/// order of [`TIERS`].
#[derive(Debug, Default, Serialize)]
pub(crate) struct Rates {
    pub(crate) interval_seconds: f64,
    /// When each interval ended, ms since the epoch.
    pub(crate) t_ms: Vec<i64>,
    /// Reads served by each tier, per second.
    pub(crate) reads_per_second: [Vec<f64>; 4],
    /// Each tier's share of the reads served (memory, disk and shared are hits; `null`: no
    /// reads in the interval).
    pub(crate) served_share: [Vec<Option<f64>>; 4],
    /// Body bytes served from each tier, per second.
    pub(crate) bytes_per_second: [Vec<f64>; 4],
    pub(crate) requests_per_second: Vec<f64>,
    pub(crate) sent_bytes_per_second: Vec<f64>,
    pub(crate) source_fetches_per_second: Vec<f64>,
    pub(crate) source_errors_per_second: Vec<f64>,
    /// Mean time to a source-served read's first byte, in ms (`null`: none in the interval).
    pub(crate) source_mean_ms: Vec<Option<f64>>,
    pub(crate) evictions_per_second: Vec<f64>,
    pub(crate) disk_used_bytes: Vec<f64>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE tiercache_reads_total counter
tiercache_reads_total{tier="memory",outcome="hit"} 30
tiercache_reads_total{tier="disk",outcome="hit"} 10
tiercache_reads_total{tier="source",outcome="fetch"} 4
tiercache_reads_total{tier="source",outcome="in_place"} 1
tiercache_read_bytes_total{tier="disk"} 1024
tiercache_source_fetches_total{result="ok"} 4
tiercache_source_fetches_total{result="error"} 2
# TYPE tiercache_read_seconds summary
tiercache_read_seconds{tier="source",quantile="0.5"} 0.01
tiercache_read_seconds_sum{tier="source"} 0.5
tiercache_read_seconds_count{tier="source"} 5
tiercache_read_seconds_sum{tier="disk"} 9
tiercache_http_requests_total{class="2xx"} 50
tiercache_disk_evicted_blobs_total 3
"#;

    #[test]
    fn a_sample_sums_the_series_of_each_chart() {
        let s = Sample::parse(TEXT, 7);
        assert_eq!(s.reads, [30.0, 10.0, 0.0, 5.0]);
        assert_eq!(s.read_bytes, [0.0, 1024.0, 0.0, 0.0]);
        assert_eq!((s.source_fetches, s.source_errors), (6.0, 2.0));
        assert_eq!(s.source_seconds, (0.5, 5.0));
        assert_eq!((s.requests, s.evictions, s.t_ms), (50.0, 3.0, 7));
    }

    #[test]
    fn rates_are_per_second_between_samples_after_since() {
        let h = History::default();
        let at = |t_ms, memory, source, secs, n| Sample {
            t_ms,
            reads: [memory, 0.0, 0.0, source],
            source_seconds: (secs, n),
            ..Sample::default()
        };
        h.push(at(0, 0.0, 0.0, 0.0, 0.0));
        h.push(at(2000, 6.0, 2.0, 0.2, 2.0));
        h.push(at(4000, 6.0, 2.0, 0.2, 2.0));
        let r = h.rates(0);
        assert_eq!(r.t_ms, [2000, 4000]);
        assert_eq!(r.reads_per_second[0], [3.0, 0.0]);
        assert_eq!(r.served_share[0], [Some(0.75), None]);
        assert_eq!(r.served_share[3], [Some(0.25), None]);
        assert_eq!(r.source_mean_ms, [Some(100.0), None]);
        assert_eq!(h.rates(2000).t_ms, [4000]);
    }

    #[test]
    fn the_ring_keeps_one_hour() {
        let h = History::default();
        for t in 0..(CAPACITY as i64 + 10) {
            h.push(Sample { t_ms: t, ..Sample::default() });
        }
        let r = h.rates(i64::MIN);
        assert_eq!(r.t_ms.len(), CAPACITY - 1);
        assert_eq!(r.t_ms.last(), Some(&(CAPACITY as i64 + 9)));
    }
}

//! The memory-tier benchmark: hit throughput of [`MemoryTier::get`] against a raw
//! `moka::future::Cache<u64, Bytes>` with the same capacity and weigher, in the same run.
//!
//!     memory_bench [KEYS [OPS [REPS [TASKS...]]]]
//!
//! KEYS values of 4 KiB (default 10 000) are put into each cache, all fitting; then, for each
//! count of TASKS (default: the number of CPUs, and 64), that many tokio tasks share OPS random
//! hits (default 4 000 000), on a multi-threaded runtime with one worker per CPU. Each of REPS
//! repetitions (default 3) measures both caches in alternating slices of the gets, which one goes
//! first alternating between repetitions. Prints a table and the median ratio tiercache/moka per
//! task count; the goal is >= 0.8. The raw cache has no TTL: the cost of the tier's expiry (moka's
//! `time_to_live` and the tokio clock check) is part of what is measured.
//!
//! With MEMORY_BENCH_RECORDER=1 a `metrics` recorder is installed whose counters are plain shared
//! atomics, as the Prometheus exporter's are, so the tier's metric increments cost what they cost
//! in a server; otherwise they are no-ops. The tier's own hit and miss counts run either way.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tiercache_tiers::memory::weigh_bytes;
use tiercache_tiers::{MemoryConfig, MemoryTier};

const VALUE_BYTES: usize = 4096;
/// Each measurement of a pair is cut into this many slices, alternating between the two.
const SLICES: u64 = 10;

#[derive(Clone)]
enum Subject {
    Tier(MemoryTier<u64, Bytes>),
    Moka(moka::future::Cache<u64, Bytes>),
}

impl Subject {
    fn name(&self) -> &'static str {
        match self {
            Subject::Tier(_) => "tiercache",
            Subject::Moka(_) => "moka",
        }
    }

    /// One task's share: `ops` hits on random keys below `keys`; returns how many hit.
    async fn run(&self, keys: u64, ops: u64, seed: u64) -> u64 {
        let mut x = seed | 1;
        let mut hits = 0;
        for _ in 0..ops {
            // xorshift64: cheap, and the same sequence for both caches.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % keys;
            let got = match self {
                Subject::Tier(t) => t.get(&key).await,
                Subject::Moka(m) => m.get(&key).await,
            };
            hits += u64::from(black_box(got).is_some());
        }
        hits
    }
}

/// `tasks` tasks sharing `ops` hits on `subject`: the number done and the wall time they took.
async fn measure(subject: &Subject, keys: u64, ops: u64, tasks: u64, seed: u64) -> (u64, Duration) {
    let per_task = ops / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let s = subject.clone();
            let seed = seed ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tokio::spawn(async move { s.run(keys, per_task, seed).await })
        })
        .collect();
    let mut hits = 0;
    for h in handles {
        hits += h.await.expect("bench task panicked");
    }
    let elapsed = start.elapsed();
    assert_eq!(hits, per_task * tasks, "{}: every lookup must hit", subject.name());
    (hits, elapsed)
}

/// Ops per second of both subjects, measured in `SLICES` alternating slices of `ops / SLICES`,
/// `first` going first in even slices: load from elsewhere on the machine then falls on both alike.
async fn measure_pair(subjects: &[Subject; 2], first: usize, keys: u64, ops: u64, tasks: u64) -> [f64; 2] {
    let mut done = [(0u64, Duration::ZERO); 2];
    for slice in 0..SLICES {
        let order = if slice % 2 == 0 { [first, 1 - first] } else { [1 - first, first] };
        for i in order {
            let (n, t) = measure(&subjects[i], keys, ops / SLICES, tasks, slice).await;
            done[i].0 += n;
            done[i].1 += t;
        }
    }
    done.map(|(n, t)| n as f64 / t.max(Duration::from_nanos(1)).as_secs_f64())
}

/// A recorder whose counters are shared atomics, the hot path of a real exporter's counters.
struct AtomicRecorder;

impl metrics::Recorder for AtomicRecorder {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(AtomicU64::new(0)))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).map_or(Ok(default), |a| a.parse::<u64>());
    let keys = arg(0, 10_000)?.max(1);
    let ops = arg(1, 4_000_000)?;
    let reps = arg(2, 3)?.max(1);
    let task_counts: Vec<u64> = if args.len() > 3 {
        args[3..].iter().map(|a| a.parse::<u64>().map(|t| t.max(1))).collect::<Result<_, _>>()?
    } else {
        vec![cpus as u64, 64]
    };

    let has_recorder = std::env::var("MEMORY_BENCH_RECORDER").is_ok_and(|v| v == "1");
    if has_recorder {
        metrics::set_global_recorder(AtomicRecorder).map_err(|_| "a metrics recorder is already installed")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cpus).enable_all().build()?;
    runtime.block_on(async {
        let max_bytes = (keys * VALUE_BYTES as u64).next_power_of_two().max(64 << 20);
        let config = MemoryConfig { max_bytes, ..MemoryConfig::default() };
        let tier = MemoryTier::new("bench", &config, weigh_bytes);
        let moka = moka::future::Cache::builder().max_capacity(max_bytes).weigher(weigh_bytes).build();
        for key in 0..keys {
            let value = Bytes::from(vec![key as u8; VALUE_BYTES]);
            tier.put(key, value.clone()).await;
            moka.insert(key, value).await;
        }
        tier.run_pending_tasks().await;
        moka.run_pending_tasks().await;
        let subjects = [Subject::Tier(tier.clone()), Subject::Moka(moka.clone())];
        // Warm up both (allocator, CPU caches, moka's read buffers).
        measure_pair(&subjects, 0, keys, ops / 10, cpus as u64).await;

        println!(
            "memory tier hit throughput: {keys} keys of {VALUE_BYTES} B, capacity {} MiB, {ops} gets per run, {cpus} \
             CPUs, {cpus} tokio workers, metrics {}",
            max_bytes >> 20,
            if has_recorder { "recorded (shared atomic counters)" } else { "not recorded (no recorder)" }
        );
        println!("{:>6} {:>4} {:>16} {:>16} {:>6}  first", "tasks", "rep", "tiercache op/s", "moka op/s", "ratio");
        let mut summary = Vec::new();
        for &tasks in &task_counts {
            let mut ratios = Vec::new();
            let (mut tc_all, mut moka_all) = (Vec::new(), Vec::new());
            for rep in 0..reps {
                // Alternate which cache goes first, so neither always runs on a warmer machine.
                let first = (rep % 2) as usize;
                let result = measure_pair(&subjects, first, keys, ops, tasks).await;
                let ratio = result[0] / result[1];
                println!(
                    "{tasks:>6} {:>4} {:>16.0} {:>16.0} {ratio:>6.2}  {}",
                    rep + 1,
                    result[0],
                    result[1],
                    subjects[first].name()
                );
                tc_all.push(result[0]);
                moka_all.push(result[1]);
                ratios.push(ratio);
            }
            summary.push((tasks, median(tc_all), median(moka_all), median(ratios)));
        }
        println!("median of {reps} reps:");
        for (tasks, tc, mk, ratio) in summary {
            let verdict = if ratio >= 0.8 { "ok" } else { "BELOW GOAL" };
            println!(
                "{tasks:>6} tasks: tiercache {:.2} Mop/s, moka {:.2} Mop/s, ratio {ratio:.2}x (goal >= 0.8x) {verdict}",
                tc / 1e6,
                mk / 1e6
            );
        }
        let s = tier.stats();
        println!(
            "tier stats: {} entries, {} bytes, {} hits, {} misses, {} evictions",
            s.entries, s.bytes, s.hits, s.misses, s.evictions
        );
    });
    Ok(())
}

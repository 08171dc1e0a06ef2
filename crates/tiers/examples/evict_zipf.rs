//! Hit ratio of the disk tier's eviction policy on zipf workloads, against a plain LRU and moka
//! (0.12: TinyLFU, a count-min frequency sketch admitting into an LRU), on the same traces in the
//! same run (`bash bench/evict.sh` builds and runs it).
//!
//!     evict_zipf [--keys N] [--requests N] [--warmup N] [--seed N]
//!
//! For each zipf exponent (0.9, 1.0) one trace of `warmup + requests` keys is drawn from
//! `rand_distr::Zipf` over `keys` keys with a seeded `StdRng`, and replayed into each policy for
//! caches of 1%, 5% and 10% of the key space. Two object-size mixes: every object 1 unit (the
//! object hit ratio), and sizes log-uniform between 4 KiB and 4 MiB, fixed per key, with the cache
//! a share of the key space's total bytes (the byte hit ratio). Only the requests after the
//! warm-up count.
//!
//! The policies, driven as a disk tier drives them:
//! - tiercache: [`EvictionPolicy`]. On a miss, if the object does not fit, `victims(excess, no
//!   protection)` then `put`; on a hit, `touch`.
//! - LRU: a `HashMap` and a `BTreeMap` ordered by last access; on a miss, evict the least recently
//!   used until the object fits.
//! - moka: `moka::sync::Cache` with `max_capacity` and a weigher (sizes in KiB, exact: every size
//!   is a whole number of KiB); on a miss, `insert` (its admission may reject the newcomer: that
//!   is its policy); `run_pending_tasks` after every request, so its policy is applied as it goes.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::Zipf;
use tiercache_tiers::EvictionPolicy;

struct Args {
    keys: u64,
    requests: usize,
    warmup: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = Args { keys: 100_000, requests: 2_000_000, warmup: 500_000, seed: 42 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--keys" => args.keys = value.parse()?,
            "--requests" => args.requests = value.parse()?,
            "--warmup" => args.warmup = value.parse()?,
            "--seed" => args.seed = value.parse()?,
            _ => {
                return Err(
                    format!("unknown flag {flag}; usage: [--keys N] [--requests N] [--warmup N] [--seed N]").into()
                );
            }
        }
    }
    Ok(args)
}

/// Hits and requests after the warm-up, in objects and in bytes.
#[derive(Default)]
struct Ratio {
    hit_bytes: u64,
    total_bytes: u64,
}

impl Ratio {
    fn record(&mut self, counted: bool, hit: bool, size: u64) {
        if counted {
            self.total_bytes += size;
            if hit {
                self.hit_bytes += size;
            }
        }
    }

    fn get(&self) -> f64 {
        self.hit_bytes as f64 / self.total_bytes as f64
    }
}

fn run_tiercache(trace: &[u32], sizes: &[u64], capacity: u64, warmup: usize) -> f64 {
    let mut policy = EvictionPolicy::new(capacity);
    let mut ratio = Ratio::default();
    for (n, &key) in trace.iter().enumerate() {
        let size = sizes[key as usize];
        let hit = policy.contains(&key);
        if hit {
            policy.touch(&key);
        } else {
            if policy.bytes() + size > capacity {
                policy.victims(policy.bytes() + size - capacity, |_| false);
            }
            policy.put(key, size);
        }
        ratio.record(n >= warmup, hit, size);
    }
    ratio.get()
}

fn run_lru(trace: &[u32], sizes: &[u64], capacity: u64, warmup: usize) -> f64 {
    let mut last_use: HashMap<u32, u64> = HashMap::new();
    let mut by_use: BTreeMap<u64, u32> = BTreeMap::new();
    let mut bytes = 0u64;
    let mut ratio = Ratio::default();
    for (n, &key) in trace.iter().enumerate() {
        let size = sizes[key as usize];
        let now = n as u64;
        let hit = match last_use.insert(key, now) {
            Some(then) => {
                by_use.remove(&then);
                true
            }
            None => {
                while bytes + size > capacity {
                    let Some((_, old)) = by_use.pop_first() else { break };
                    last_use.remove(&old);
                    bytes -= sizes[old as usize];
                }
                bytes += size;
                false
            }
        };
        by_use.insert(now, key);
        ratio.record(n >= warmup, hit, size);
    }
    ratio.get()
}

fn run_moka(trace: &[u32], sizes: &[u64], capacity: u64, unit: u64, warmup: usize) -> f64 {
    let cache: moka::sync::Cache<u32, u32> =
        moka::sync::Cache::builder().max_capacity(capacity / unit).weigher(|_, weight: &u32| *weight).build();
    let mut ratio = Ratio::default();
    for (n, &key) in trace.iter().enumerate() {
        let size = sizes[key as usize];
        let hit = cache.get(&key).is_some();
        if !hit {
            cache.insert(key, u32::try_from(size / unit).expect("weight fits u32"));
        }
        cache.run_pending_tasks();
        ratio.record(n >= warmup, hit, size);
    }
    ratio.get()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    // Sizes fixed per key, log-uniform between 4 KiB and 4 MiB, whole KiB.
    let (lo, hi) = ((4u64 << 10) as f64, (4u64 << 20) as f64);
    let sized: Vec<u64> = (0..args.keys)
        .map(|_| {
            let size = (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp();
            (size as u64 / 1024).clamp(4, 4096) * 1024
        })
        .collect();
    let units = vec![1u64; args.keys as usize];
    let exponents = [0.9, 1.0];
    let traces: Vec<Vec<u32>> = exponents
        .iter()
        .map(|&s| {
            let zipf = Zipf::new(args.keys as f64, s).expect("valid zipf parameters");
            (0..args.warmup + args.requests).map(|_| rng.sample(zipf) as u32 - 1).collect()
        })
        .collect();

    println!(
        "evict_zipf: {} keys, {} requests after {} warm-up, seed {}\n",
        args.keys, args.requests, args.warmup, args.seed
    );
    let mut n_fail = 0;
    for (label, sizes, unit) in
        [("object hit ratio, 1 unit each", &units, 1), ("byte hit ratio, 4 KiB..4 MiB", &sized, 1024)]
    {
        let total: u64 = sizes.iter().sum();
        println!("{label}:\n");
        println!("| s | cache % | tiercache | LRU | moka | tiercache − LRU | ≥ LRU |");
        println!("|---|---|---|---|---|---|---|");
        for (&s, trace) in exponents.iter().zip(&traces) {
            for pct in [1u64, 5, 10] {
                let capacity = total * pct / 100;
                let t0 = Instant::now();
                let ours = run_tiercache(trace, sizes, capacity, args.warmup);
                let ours_secs = t0.elapsed().as_secs_f64();
                let lru = run_lru(trace, sizes, capacity, args.warmup);
                let moka = run_moka(trace, sizes, capacity, unit, args.warmup);
                let pass = ours >= lru;
                n_fail += usize::from(!pass);
                println!(
                    "| {s:.1} | {pct} | {:.2}% | {:.2}% | {:.2}% | {:+.2} pp | {} |",
                    ours * 100.0,
                    lru * 100.0,
                    moka * 100.0,
                    (ours - lru) * 100.0,
                    if pass { "pass" } else { "FAIL" }
                );
                eprintln!(
                    "  s={s} {pct}%: tiercache {:.0} ns/request",
                    ours_secs * 1e9 / (args.warmup + args.requests) as f64
                );
            }
        }
        println!();
    }
    println!("{}", if n_fail == 0 { "all pass".to_string() } else { format!("{n_fail} FAIL") });
    Ok(())
}

//! Durations and sizes as written (`tiercache_core::units`): any text is answered without a
//! panic and what is accepted is within bounds; `{n}{unit}` is `n × unit` exactly when that fits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiercache_core::units::{MAX_COUNT, MAX_DURATION, MAX_SIZE_BYTES, parse_count, parse_duration, parse_size};

const SIZE_UNITS: &[(&str, u128)] =
    &[("", 1), ("K", 1 << 10), ("MiB", 1 << 20), ("g", 1 << 30), ("TB", 1_000_000_000_000), ("EiB", 1 << 60)];
const DURATION_UNITS: &[(&str, u128)] =
    &[("ns", 1), ("ms", 1_000_000), ("s", 1_000_000_000), ("d", 86_400_000_000_000), ("y", 31_557_600_000_000_000)];

fuzz_target!(|input: (&str, u64, u8)| {
    let (text, n, unit) = input;
    if let Ok(b) = parse_size(text) {
        assert!(b <= MAX_SIZE_BYTES);
    }
    if let Ok(d) = parse_duration(text) {
        assert!(d <= MAX_DURATION);
    }
    if let Ok(c) = parse_count(text) {
        assert!(c <= MAX_COUNT);
    }
    let (u, per) = SIZE_UNITS[usize::from(unit) % SIZE_UNITS.len()];
    let want = u128::from(n) * per;
    let got = parse_size(&format!("{n}{u}"));
    assert_eq!(got.ok().map(u128::from), Some(want).filter(|&w| w <= u128::from(MAX_SIZE_BYTES)), "{n}{u}");
    let (u, per) = DURATION_UNITS[usize::from(unit) % DURATION_UNITS.len()];
    let want = u128::from(n) * per;
    let got = parse_duration(&format!("{n}{u}"));
    assert_eq!(got.ok().map(|d| d.as_nanos()), Some(want).filter(|&w| w <= MAX_DURATION.as_nanos()), "{n}{u}");
});

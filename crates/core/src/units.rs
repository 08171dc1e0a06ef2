//! Numbers from outside, parsed once and bounded: durations and sizes as people write them
//! (`90s`, `1h 30m`, `10GiB`, `1.5K`) for flags, environment variables, the config file and the
//! admin API alike, and the plain integers the admin API takes (`older_than_seconds`,
//! `quota_bytes`, `max_entries`, …), checked against the same limits.
//!
//! Every step is checked integer arithmetic (in `u128`, then converted with `try_from`): no
//! floating point, no cast that wraps or truncates. A decimal is exact (`1.5K` is 1 536 bytes); a
//! fraction of the smallest unit (a byte, a nanosecond) is rounded down. Also
//! [`cutoff_ms`], the one subtraction of an age from a clock reading, saturating.
//!
//! It does not know which setting or field a number is for beyond the name it is given for
//! messages, nor any default.

use std::fmt;
use std::time::Duration;

/// The longest duration anything accepts (100 years of 365 days): longer is a typo, not a wish.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The largest size anything accepts, in bytes (1 EiB).
pub const MAX_SIZE_BYTES: u64 = 1 << 60;

/// The largest count anything accepts (entries, say): what the index stores in a signed 64-bit
/// integer.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// Most digits after the decimal point: enough for any exact value, few enough that the
/// arithmetic stays within 128 bits.
const MAX_FRACTION_DIGITS: usize = 18;

/// Nanoseconds in one second.
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// What kind of number was being read, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quantity {
    /// A duration (`90s`, `7d`).
    Duration,
    /// A size in bytes (`10GiB`, `4096`).
    Size,
    /// A count (`max_entries`).
    Count,
}

impl Quantity {
    fn examples(self) -> &'static str {
        match self {
            Quantity::Duration => "90s, 10m, 7d or 1h 30m",
            Quantity::Size => "10GiB, 500MB, 1.5K or 4096",
            Quantity::Count => "1000",
        }
    }

    fn units(self) -> &'static str {
        match self {
            Quantity::Duration => "ns, us, ms, s, m, h, d, w, M (30.44 days), y (365.25 days)",
            Quantity::Size => "B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB, E/EiB, kB, MB, GB, TB, PB, EB",
            Quantity::Count => "none",
        }
    }

    /// The limit, in words.
    fn limit(self) -> &'static str {
        match self {
            Quantity::Duration => "longer than 100 years",
            Quantity::Size => "larger than 1 EiB",
            Quantity::Count => "too large",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Duration => "duration",
            Quantity::Size => "size",
            Quantity::Count => "count",
        })
    }
}

/// Why a number from outside was refused. The message quotes what was written (or names the
/// field) and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// A minus sign: durations, sizes and counts are 0 or more.
    #[error("{input:?} is negative; a {quantity} is 0 or more")]
    Negative {
        /// What was written.
        input: String,
        /// What it should have been.
        quantity: Quantity,
    },
    /// Not a number followed by a unit.
    #[error("{input:?} is not a {quantity} like {}", quantity.examples())]
    Malformed {
        /// What was written.
        input: String,
        /// What it should have been.
        quantity: Quantity,
    },
    /// A unit not in the list.
    #[error("{input:?}: unknown unit {unit:?} (use {})", quantity.units())]
    UnknownUnit {
        /// What was written.
        input: String,
        /// The unit as written.
        unit: String,
        /// What it should have been.
        quantity: Quantity,
    },
    /// More digits after the decimal point than any value needs.
    #[error("{input:?} has more than {MAX_FRACTION_DIGITS} digits after the decimal point")]
    TooPrecise {
        /// What was written.
        input: String,
    },
    /// Past the limit ([`MAX_DURATION`], [`MAX_SIZE_BYTES`]).
    #[error("{input:?} is {}", quantity.limit())]
    TooLarge {
        /// What was written.
        input: String,
        /// What it is.
        quantity: Quantity,
    },
    /// A plain integer field past its limit.
    #[error("{field} = {value} is {} (at most {max}{unit})", quantity.limit())]
    OutOfRange {
        /// The field's name (`older_than_seconds`).
        field: String,
        /// The value given.
        value: u64,
        /// The largest value accepted, in the field's unit.
        max: u64,
        /// The field's unit after a space (` seconds`, ` bytes`), or nothing for a count.
        unit: &'static str,
        /// What it is.
        quantity: Quantity,
    },
}

/// A duration like `90s`, `10m`, `7d`, `1h 30m` or `1.5h`: one or more parts, each a number and a
/// unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`, `w`, `M` = 30.44 days, `y` = 365.25 days, or
/// their long names: `sec`, `minutes`, `hours`, `days`, `weeks`, `months`, `years`, …), summed.
/// `0` alone is zero. At most [`MAX_DURATION`].
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let q = Quantity::Duration;
    let t = input.trim();
    if t.starts_with('-') {
        return Err(UnitError::Negative { input: input.to_owned(), quantity: q });
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let max = MAX_DURATION.as_nanos();
    let too_large = || UnitError::TooLarge { input: input.to_owned(), quantity: q };
    let mut rest = t;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(UnitError::Malformed { input: input.to_owned(), quantity: q });
    }
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        let after = after.trim_start();
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let number = Decimal::parse(number, input, q)?;
        if unit.is_empty() {
            return Err(UnitError::Malformed { input: input.to_owned(), quantity: q });
        }
        let per = duration_unit_nanos(unit).ok_or_else(|| UnitError::UnknownUnit {
            input: input.to_owned(),
            unit: unit.to_owned(),
            quantity: q,
        })?;
        let part = number.times(per).ok_or_else(too_large)?;
        total = total.checked_add(part).filter(|&n| n <= max).ok_or_else(too_large)?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_large())?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| too_large())?;
    Ok(Duration::new(secs, nanos))
}

/// A size like `10GiB`, `500MB`, `4k`, `1.5K`, or a number of bytes: binary units (`K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB`, `T`/`TiB`, `P`/`PiB`, `E`/`EiB`) are powers of 1024, decimal ones (`kB`,
/// `MB`, `GB`, `TB`, `PB`, `EB`) of 1000; units are case-insensitive. A fraction of a byte is
/// rounded down. At most [`MAX_SIZE_BYTES`].
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let q = Quantity::Size;
    let t = input.trim();
    if t.starts_with('-') {
        return Err(UnitError::Negative { input: input.to_owned(), quantity: q });
    }
    let (number, unit) = split_number(t);
    let number = Decimal::parse(number, input, q)?;
    let unit = unit.trim();
    let per = size_unit_bytes(unit).ok_or_else(|| UnitError::UnknownUnit {
        input: input.to_owned(),
        unit: unit.to_owned(),
        quantity: q,
    })?;
    let too_large = || UnitError::TooLarge { input: input.to_owned(), quantity: q };
    let bytes = number.times(per).filter(|&n| n <= u128::from(MAX_SIZE_BYTES)).ok_or_else(too_large)?;
    u64::try_from(bytes).map_err(|_| too_large())
}

/// A count written as text: digits only, at most [`MAX_COUNT`].
pub fn parse_count(input: &str) -> Result<u64, UnitError> {
    let q = Quantity::Count;
    let t = input.trim();
    if t.starts_with('-') {
        return Err(UnitError::Negative { input: input.to_owned(), quantity: q });
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::Malformed { input: input.to_owned(), quantity: q });
    }
    let too_large = || UnitError::TooLarge { input: input.to_owned(), quantity: q };
    let n: u64 = t.parse().map_err(|_| too_large())?;
    if n > MAX_COUNT { Err(too_large()) } else { Ok(n) }
}

/// `value` seconds of field `field` (an integer from a JSON body, say) as a duration, if at most
/// [`MAX_DURATION`].
pub fn seconds(field: &str, value: u64) -> Result<Duration, UnitError> {
    let max = MAX_DURATION.as_secs();
    if value > max {
        return Err(out_of_range(field, value, max, " seconds", Quantity::Duration));
    }
    Ok(Duration::from_secs(value))
}

/// `value` bytes of field `field`, if at most [`MAX_SIZE_BYTES`].
pub fn bytes(field: &str, value: u64) -> Result<u64, UnitError> {
    if value > MAX_SIZE_BYTES {
        return Err(out_of_range(field, value, MAX_SIZE_BYTES, " bytes", Quantity::Size));
    }
    Ok(value)
}

/// `value` of count field `field`, if at most [`MAX_COUNT`].
pub fn count(field: &str, value: u64) -> Result<u64, UnitError> {
    if value > MAX_COUNT {
        return Err(out_of_range(field, value, MAX_COUNT, "", Quantity::Count));
    }
    Ok(value)
}

/// A duration in whole milliseconds (rounded down), the index's time unit. Infallible for any
/// duration at most [`MAX_DURATION`]; longer ones saturate at `u64::MAX`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The instant `age` before `now_ms` (milliseconds since the epoch): what was last touched before
/// it is older than `age`. Saturates at `i64::MIN` (before anything), so that no age, however
/// large, wraps around to select everything.
pub fn cutoff_ms(now_ms: i64, age: Duration) -> i64 {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(age_ms)
}

fn out_of_range(field: &str, value: u64, max: u64, unit: &'static str, quantity: Quantity) -> UnitError {
    UnitError::OutOfRange { field: field.to_owned(), value, max, unit, quantity }
}

/// `s` split after its leading digits and dots.
fn split_number(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len()))
}

/// A non-negative decimal number as written: `whole.fraction`.
struct Decimal {
    whole: u128,
    /// The digits after the point, as an integer, and how many there were.
    fraction: u128,
    n_fraction_digits: u32,
}

impl Decimal {
    /// Digits with at most one point, at least one digit; `input` and `q` are for messages.
    fn parse(number: &str, input: &str, q: Quantity) -> Result<Decimal, UnitError> {
        let malformed = || UnitError::Malformed { input: input.to_owned(), quantity: q };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(malformed());
        }
        if fraction.len() > MAX_FRACTION_DIGITS {
            return Err(UnitError::TooPrecise { input: input.to_owned() });
        }
        let too_large = || UnitError::TooLarge { input: input.to_owned(), quantity: q };
        let digits = |s: &str| -> Result<u128, UnitError> {
            s.bytes().try_fold(0u128, |n, b| {
                if !b.is_ascii_digit() {
                    return Err(malformed());
                }
                n.checked_mul(10).and_then(|n| n.checked_add(u128::from(b - b'0'))).ok_or_else(too_large)
            })
        };
        let n_fraction_digits = u32::try_from(fraction.len()).map_err(|_| malformed())?;
        Ok(Decimal { whole: digits(whole)?, fraction: digits(fraction)?, n_fraction_digits })
    }

    /// `self × unit`, rounded down; `None` if it does not fit in 128 bits.
    fn times(&self, unit: u128) -> Option<u128> {
        let whole = self.whole.checked_mul(unit)?;
        // fraction < 10^18 and unit < 2^61 (1 EiB, or 100 years in nanoseconds): no overflow.
        let fraction = self.fraction.checked_mul(unit)? / 10u128.checked_pow(self.n_fraction_digits)?;
        whole.checked_add(fraction)
    }
}

/// Nanoseconds in one `unit` (case-sensitive: `m` is a minute, `M` a month).
fn duration_unit_nanos(unit: &str) -> Option<u128> {
    const S: u128 = NANOS_PER_SEC;
    Some(match unit {
        "ns" | "nsec" | "nanos" => 1,
        "us" | "µs" | "usec" | "micros" => 1_000,
        "ms" | "msec" | "millis" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => S,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * S,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * S,
        "d" | "day" | "days" => 86_400 * S,
        "w" | "week" | "weeks" => 7 * 86_400 * S,
        // As humantime counts them: a month is 30.44 days, a year 365.25 days.
        "M" | "month" | "months" => 2_630_016 * S,
        "y" | "year" | "years" => 31_557_600 * S,
        _ => return None,
    })
}

/// Bytes in one `unit` (case-insensitive; empty means bytes).
fn size_unit_bytes(unit: &str) -> Option<u128> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        "e" | "eib" => 1 << 60,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        "eb" => 1_000_000_000_000_000_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SIZE_UNITS: &[(&str, u128)] = &[
        ("", 1),
        ("B", 1),
        ("k", 1 << 10),
        ("KiB", 1 << 10),
        ("M", 1 << 20),
        ("MiB", 1 << 20),
        ("G", 1 << 30),
        ("gib", 1 << 30),
        ("T", 1 << 40),
        ("TiB", 1 << 40),
        ("P", 1 << 50),
        ("EiB", 1 << 60),
        ("kB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("PB", 1_000_000_000_000_000),
        ("EB", 1_000_000_000_000_000_000),
    ];

    const DURATION_UNITS: &[(&str, u128)] = &[
        ("ns", 1),
        ("us", 1_000),
        ("ms", 1_000_000),
        ("s", NANOS_PER_SEC),
        ("sec", NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("min", 60 * NANOS_PER_SEC),
        ("h", 3600 * NANOS_PER_SEC),
        ("d", 86_400 * NANOS_PER_SEC),
        ("days", 86_400 * NANOS_PER_SEC),
        ("w", 604_800 * NANOS_PER_SEC),
        ("M", 2_630_016 * NANOS_PER_SEC),
        ("y", 31_557_600 * NANOS_PER_SEC),
    ];

    #[test]
    fn sizes() {
        for (input, want) in [
            ("4096", 4096),
            ("10GiB", 10 << 30),
            ("10gib", 10 << 30),
            ("500MB", 500_000_000),
            ("1.5K", 1536),
            ("1.1K", 1126), // 1126.4 bytes, rounded down
            (".5k", 512),
            ("2.", 2),
            ("5 GiB", 5 << 30),
            (" 7 ", 7),
            ("0", 0),
            ("1EiB", 1 << 60),
            ("9007199254740993", 9_007_199_254_740_993), // 2^53 + 1: through f64 it was one byte off
            ("0.999999999999999999EiB", (1 << 60) - 2),  // exact: 1152921504606846974.85…
        ] {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
        for bad in [
            "-1GiB",
            "ten",
            "5 parsecs",
            "2000000EiB",
            "99999999999999999999999T",
            "",
            ".",
            "1.2.3",
            "1e9",
            "1.0000000000000000001K",
            "1152921504606846977",
            "340282366920938463463374607431768211456",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(parse_size("5 parsecs").unwrap_err().to_string().split(':').next(), Some("\"5 parsecs\""));
        assert_eq!(parse_size("2EiB").unwrap_err().to_string(), "\"2EiB\" is larger than 1 EiB");
    }

    #[test]
    fn durations() {
        let secs = Duration::from_secs;
        for (input, want) in [
            ("7d", secs(7 * 86400)),
            ("90s", secs(90)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1h 30m", secs(5400)),
            ("1h30m", secs(5400)),
            ("1.5h", secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("2 days", secs(2 * 86400)),
            ("1y", secs(31_557_600)),
        ] {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in ["-5s", "5 fortnights", "1000years", "", "5", "s", "1.5.h", "h5", "36500d 1s", "101y"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        // 100 years of 365.25 days are more than 100 of 365.
        assert!(parse_duration("100y").is_err());
        assert_eq!(parse_duration("1000years").unwrap_err().to_string(), "\"1000years\" is longer than 100 years");
    }

    #[test]
    fn plain_integers_are_bounded_and_name_their_field() {
        assert_eq!(seconds("older_than_seconds", 60), Ok(Duration::from_secs(60)));
        assert_eq!(seconds("s", MAX_DURATION.as_secs()), Ok(MAX_DURATION));
        let e = seconds("older_than_seconds", 18446744073709551).unwrap_err();
        assert!(e.to_string().starts_with("older_than_seconds = 18446744073709551 is longer than 100 years"), "{e}");
        assert_eq!(bytes("quota_bytes", MAX_SIZE_BYTES), Ok(MAX_SIZE_BYTES));
        assert!(bytes("quota_bytes", MAX_SIZE_BYTES + 1).unwrap_err().to_string().starts_with("quota_bytes = "));
        assert_eq!(count("max_entries", MAX_COUNT), Ok(MAX_COUNT));
        assert!(count("max_entries", u64::MAX).is_err());
        assert_eq!(parse_count("12"), Ok(12));
        for bad in ["", "-1", "1.5", "x", "9223372036854775808"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cutoffs_saturate() {
        let now = 1_700_000_000_000;
        assert_eq!(cutoff_ms(now, Duration::from_secs(1)), now - 1000);
        assert_eq!(cutoff_ms(now, Duration::MAX), now - i64::MAX);
        assert_eq!(cutoff_ms(i64::MIN, Duration::from_secs(1)), i64::MIN);
        assert_eq!(cutoff_ms(-1, Duration::MAX), i64::MIN);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(MAX_DURATION), MAX_DURATION.as_secs() * 1000);
    }

    /// Around each unit's limit: the last number that fits parses, the next one is refused.
    #[test]
    fn limits_are_exact_for_every_unit() {
        for &(unit, per) in SIZE_UNITS {
            let last = u128::from(MAX_SIZE_BYTES) / per;
            for n in [last.saturating_sub(1), last, last + 1] {
                let want = n * per;
                let got = parse_size(&format!("{n}{unit}"));
                assert_eq!(got.is_ok(), want <= u128::from(MAX_SIZE_BYTES), "{n}{unit}");
                assert!(got.is_err() || got.is_ok_and(|g| u128::from(g) == want), "{n}{unit}");
            }
        }
        for &(unit, per) in DURATION_UNITS {
            let last = MAX_DURATION.as_nanos() / per;
            for n in [last.saturating_sub(1), last, last + 1] {
                let got = parse_duration(&format!("{n}{unit}"));
                assert_eq!(got.map(|d| d.as_nanos()).ok(), Some(n * per).filter(|&w| w <= MAX_DURATION.as_nanos()));
            }
        }
    }

    /// Any u64, with small ones and ones near the limits as likely as large ones.
    fn any_number() -> impl Strategy<Value = u64> {
        prop_oneof![any::<u64>(), 0..1u64 << 32, (1u64 << 58)..(1u64 << 62), (3u64 << 59)..(1u64 << 63)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// `{n}{unit}` is n × unit exactly when that fits under 1 EiB, an error otherwise.
        #[test]
        fn every_u64_size_parses_exactly_or_is_refused(n in any_number(), u in 0..SIZE_UNITS.len(), space in any::<bool>()) {
            let (unit, per) = SIZE_UNITS[u];
            let text = if space { format!("{n} {unit}") } else { format!("{n}{unit}") };
            let want = u128::from(n) * per;
            match parse_size(&text) {
                Ok(got) => prop_assert!(want <= u128::from(MAX_SIZE_BYTES) && u128::from(got) == want, "{text} → {got}"),
                Err(e) => prop_assert!(want > u128::from(MAX_SIZE_BYTES), "{text} refused: {e}"),
            }
        }

        /// `{n}{unit}` is n × unit exactly when that is at most 100 years, an error otherwise.
        #[test]
        fn every_u64_duration_parses_exactly_or_is_refused(n in any_number(), u in 0..DURATION_UNITS.len()) {
            let (unit, per) = DURATION_UNITS[u];
            let text = format!("{n}{unit}");
            let want = u128::from(n) * per;
            match parse_duration(&text) {
                Ok(got) => prop_assert!(want <= MAX_DURATION.as_nanos() && got.as_nanos() == want, "{text} → {got:?}"),
                Err(e) => prop_assert!(want > MAX_DURATION.as_nanos(), "{text} refused: {e}"),
            }
        }

        /// Small numbers, too, where every unit fits: the same rule, and decimals are exact.
        #[test]
        fn decimals_are_exact(whole in 0u64..1 << 20, frac in 0u64..1000, u in 0..SIZE_UNITS.len()) {
            let (unit, per) = SIZE_UNITS[u];
            let text = format!("{whole}.{frac:03}{unit}");
            let want = u128::from(whole) * per + u128::from(frac) * per / 1000;
            match parse_size(&text) {
                Ok(got) => prop_assert_eq!(u128::from(got), want),
                Err(_) => prop_assert!(want > u128::from(MAX_SIZE_BYTES)),
            }
        }

        /// Whatever is written, the parsers answer without panicking, and what they accept is in bounds.
        #[test]
        fn any_text_is_answered(text in ".{0,40}", digits in "[0-9. ]{0,30}[a-zA-Zµ]{0,4}") {
            for t in [&text, &digits] {
                if let Ok(n) = parse_size(t) { prop_assert!(n <= MAX_SIZE_BYTES); }
                if let Ok(d) = parse_duration(t) { prop_assert!(d <= MAX_DURATION); }
                if let Ok(n) = parse_count(t) { prop_assert!(n <= MAX_COUNT); }
            }
        }

        /// Every u64 through the plain-integer checks: accepted exactly when in bounds.
        #[test]
        fn plain_integers_over_the_whole_range(n in any_number()) {
            prop_assert_eq!(seconds("f", n).is_ok(), n <= MAX_DURATION.as_secs());
            prop_assert_eq!(bytes("f", n).is_ok(), n <= MAX_SIZE_BYTES);
            prop_assert_eq!(count("f", n).is_ok(), n <= MAX_COUNT);
            prop_assert_eq!(parse_count(&n.to_string()).is_ok(), n <= MAX_COUNT);
        }
    }
}

//! The admin endpoints' JSON bodies (namespace definition, prune, migrate), deserialized and
//! checked as the handlers do: any body is answered without a panic, and every number accepted
//! is within `tiercache_core::units`' bounds; numbers within them are accepted exactly.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use tiercache_core::units::{MAX_COUNT, MAX_DURATION, MAX_SIZE_BYTES, millis};
use tiercache_server::fuzzing::{admin_definition, admin_move, admin_prune};

#[derive(Debug, Arbitrary)]
struct Input {
    raw: Vec<u8>,
    seconds: Option<u64>,
    bytes: Option<u64>,
    count: Option<u64>,
    text: Option<String>,
    dry_run: bool,
}

fn check_any(body: &[u8]) {
    if let Ok((_, options, _)) = admin_definition(body) {
        assert!(options.max_age_ms.is_none_or(|ms| ms <= millis(MAX_DURATION)), "{options:?}");
        assert!(options.quota_bytes.is_none_or(|b| b <= MAX_SIZE_BYTES), "{options:?}");
        assert!(options.max_entries.is_none_or(|n| n <= MAX_COUNT), "{options:?}");
    }
    if let Ok(opts) = admin_prune(body) {
        assert!(opts.older_than.is_none_or(|d| d <= MAX_DURATION), "{opts:?}");
        assert!(opts.max_size.is_none_or(|b| b <= MAX_SIZE_BYTES), "{opts:?}");
    }
    let _ = admin_move(body);
}

fuzz_target!(|input: Input| {
    check_any(&input.raw);
    let mut def = Map::new();
    let mut prune = Map::new();
    if let Some(s) = input.seconds {
        def.insert("max_age_seconds".into(), json!(s));
        prune.insert("older_than_seconds".into(), json!(s));
    }
    if let Some(b) = input.bytes {
        def.insert("quota_bytes".into(), json!(b));
        prune.insert("max_size_bytes".into(), json!(b));
    }
    if let Some(n) = input.count {
        def.insert("max_entries".into(), json!(n));
    }
    if let Some(t) = &input.text {
        def.insert("max_age".into(), json!(t));
        prune.insert("max_size".into(), json!(t));
    }
    prune.insert("dry_run".into(), json!(input.dry_run));
    let (def, prune) = (Value::Object(def).to_string(), Value::Object(prune).to_string());
    check_any(def.as_bytes());
    check_any(prune.as_bytes());
    // Numbers alone (no text beside them): accepted exactly when within bounds.
    if input.text.is_none() {
        let fits = input.seconds.is_none_or(|s| s <= MAX_DURATION.as_secs())
            && input.bytes.is_none_or(|b| b <= MAX_SIZE_BYTES)
            && input.count.is_none_or(|n| n <= MAX_COUNT);
        let got = admin_definition(def.as_bytes());
        assert_eq!(got.is_ok(), fits, "{def}: {got:?}");
        if let Ok((_, o, _)) = got {
            assert_eq!(o.max_age_ms, input.seconds.map(|s| s * 1000));
            assert_eq!((o.quota_bytes, o.max_entries), (input.bytes, input.count));
        }
        let fits = input.seconds.is_none_or(|s| s <= MAX_DURATION.as_secs())
            && input.bytes.is_none_or(|b| b <= MAX_SIZE_BYTES);
        let got = admin_prune(prune.as_bytes());
        assert_eq!(got.is_ok(), fits, "{prune}: {got:?}");
    }
});

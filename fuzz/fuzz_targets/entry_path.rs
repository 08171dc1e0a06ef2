//! The server's `/ns/<namespace>/<key>` decoding: any path is answered without a panic; a
//! namespace and key percent-encoded (every byte, or only what must be) decode back to exactly
//! themselves, once (a `%25` stays a `%` plus what follows, never a second escape).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_encode, utf8_percent_encode};
use tiercache_core::{Key, RelPath};
use tiercache_server::fuzzing::entry_path;

/// What a client must escape in a path: controls, space, `%`, `?`, `#`, and `/` in the namespace.
const PATH: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'?').add(b'#').add(b'"').add(b'<').add(b'>');
/// The same, and `/`: a namespace holds none.
const NAMESPACE: &AsciiSet = &PATH.add(b'/');

#[derive(Debug, Arbitrary)]
struct Input {
    raw: String,
    namespace: String,
    key: Vec<u8>,
    escape_all: bool,
}

fuzz_target!(|input: Input| {
    if let Ok((_, key)) = entry_path(&input.raw) {
        // Whatever the key decodes to, validating it never panics.
        let _ = RelPath::new(key.clone());
        if let Ok(text) = std::str::from_utf8(&key) {
            let _ = Key::new(text);
        }
    }
    let set = if input.escape_all { NON_ALPHANUMERIC } else { PATH };
    let ns = utf8_percent_encode(&input.namespace, NAMESPACE).to_string();
    let path = format!("{ns}/{}", percent_encode(&input.key, set));
    let (namespace, key) = entry_path(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_eq!(namespace, input.namespace, "{path:?}");
    assert_eq!(key, input.key, "{path:?}");
});

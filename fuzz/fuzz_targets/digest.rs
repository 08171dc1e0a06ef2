//! Digests (`tiercache_core::Digest`): parsing any text never panics, and what is accepted is
//! exactly its own canonical form (`sha256:` and 64 lowercase hex digits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiercache_core::Digest;

fuzz_target!(|text: &str| {
    if let Ok(d) = text.parse::<Digest>() {
        assert_eq!(d.to_string(), text);
        assert_eq!(Digest::from_hex(&d.hex()), Ok(d));
        assert_eq!(&d.prefixed_ascii()[..], text.as_bytes());
    }
    if let Ok(d) = Digest::from_hex(text) {
        assert_eq!(d.hex(), text);
    }
});

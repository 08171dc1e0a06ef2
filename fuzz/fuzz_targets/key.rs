//! Names that reach files and URLs (`tiercache_core::{Key, NamespaceName, RelPath}`): validation
//! never panics, and whatever is accepted keeps its bytes and has no segment that could climb
//! out of its root (`..`, `.`, empty), no leading `/`, no NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiercache_core::{Key, MAX_NAMESPACE_BYTES, NamespaceName, RelPath};

fn no_escape(segments: &mut dyn Iterator<Item = &[u8]>) {
    for s in segments {
        assert!(!s.is_empty() && s != b"." && s != b"..", "segment {s:?} accepted");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = RelPath::new(data.to_vec()) {
        assert_eq!(path.as_bytes(), data);
        assert!(!data.starts_with(b"/") && !data.contains(&0), "{data:?}");
        no_escape(&mut data.split(|&b| b == b'/'));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = Key::new(text) {
        assert_eq!(key.as_str(), text);
        assert!(!text.starts_with('/') && !text.contains('\\'), "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        no_escape(&mut key.segments().map(str::as_bytes));
        assert_eq!(Key::new(key.as_str()).map(|k| k.as_str().to_owned()), Ok(text.to_owned()));
    }
    if let Ok(name) = NamespaceName::new(text) {
        assert_eq!(name.as_str(), text);
        assert!(text.len() <= MAX_NAMESPACE_BYTES && !text.contains('/') && text != "." && text != "..");
    }
});

//! `Range` headers (`tiercache_core::RangeRequest`): parsing any text never panics, and a range
//! resolved against any size lies inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiercache_core::{RangeRequest, Resolved};

fuzz_target!(|input: (&str, u64)| {
    let (header, size) = input;
    let Ok(Some(request)) = RangeRequest::parse(header) else { return };
    if let Ok(Resolved::Partial(r)) = request.resolve(size) {
        assert!(r.start <= r.end, "{header:?} on {size}: {r:?} is reversed");
        assert!(r.end < size, "{header:?} on {size}: {r:?} ends past the blob");
        assert!(r.len() <= size, "{header:?} on {size}: {r:?} is longer than the blob");
        let _ = r.content_range(size);
    }
    // A single range's start and end, as given, resolve to a range starting there when it fits.
    if let Some((start, end)) = request.single_start()
        && let Ok(Resolved::Partial(r)) = request.resolve(size)
        && end.is_some_and(|e| e >= start)
    {
        assert_eq!(r.start, start, "{header:?} on {size}");
    }
});

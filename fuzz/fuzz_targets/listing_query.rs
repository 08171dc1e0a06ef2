//! The listing's query string (`GET /ns/<namespace>/?prefix=…`): any query is answered without a
//! panic; an accepted one names only known parameters, and values decode once.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, percent_encode};
use tiercache_server::fuzzing::listing_query;

#[derive(Debug, Arbitrary)]
struct Input {
    raw: String,
    prefix: Vec<u8>,
    after: Vec<u8>,
    limit: u64,
}

fuzz_target!(|input: Input| {
    if let Ok((req, _)) = listing_query(&input.raw) {
        assert!(req.delimiter.as_ref().is_none_or(|d| !d.is_empty()), "{:?}", input.raw);
        let known = ["prefix", "delimiter", "after", "limit", "encoding"];
        for pair in input.raw.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split_once('=').map_or(pair, |(k, _)| k);
            assert!(known.contains(&name), "{:?} accepted", input.raw);
        }
    }
    let query = format!(
        "prefix={}&after={}&limit={}&encoding=url",
        percent_encode(&input.prefix, NON_ALPHANUMERIC),
        percent_encode(&input.after, NON_ALPHANUMERIC),
        input.limit
    );
    match listing_query(&query) {
        Ok((req, url_encoded)) => {
            assert!(url_encoded);
            assert_eq!((req.prefix, req.after), (input.prefix, Some(input.after)));
            assert_eq!(u64::try_from(req.limit).ok(), Some(input.limit));
        }
        // Only a limit too large for this machine's `usize` is refused here.
        Err(e) => assert!(usize::try_from(input.limit).is_err(), "{query:?}: {e}"),
    }
});

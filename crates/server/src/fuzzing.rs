//! The server's pure parsers, exposed for the fuzz targets in `fuzz/` (and nothing else): the
//! entry path's split and percent-decoding, the listing's query string, and the admin endpoints'
//! request bodies, deserialized and checked. Each answers what the handler would act on, or the
//! message of the 4xx it would send.
//!
//! Not part of the API: hidden from the docs, and free to change with the handlers.

use bytes::Bytes;
use tiercache_engine::{ListRequest, NamespaceOptions, Place, PruneOptions};

use crate::ApiError;

fn message(e: ApiError) -> String {
    format!("{}: {e:?}", e.status())
}

/// `/ns/<rest>` split into the namespace (UTF-8) and the key (raw bytes), percent-decoded once.
pub fn entry_path(rest: &str) -> Result<(String, Vec<u8>), String> {
    crate::routes::entry_path(rest).map(|(ns, key)| (ns.into_owned(), key.into_owned())).map_err(message)
}

/// A listing's query string: the request, and whether keys go out percent-encoded.
pub fn listing_query(query: &str) -> Result<(ListRequest, bool), String> {
    crate::listing::parse_query(query).map_err(message)
}

/// The body of `PUT /admin/namespaces/{name}`: source, options and storage place.
pub fn admin_definition(body: &[u8]) -> Result<(Option<String>, NamespaceOptions, Option<Place>), String> {
    crate::admin::definition(&Bytes::copy_from_slice(body)).map_err(message)
}

/// The body of `POST /admin/prune`.
pub fn admin_prune(body: &[u8]) -> Result<PruneOptions, String> {
    crate::admin::prune_options(&Bytes::copy_from_slice(body)).map_err(message)
}

/// The body of `POST /admin/namespaces/{name}/migrate`.
pub fn admin_move(body: &[u8]) -> Result<Place, String> {
    crate::admin::move_target(&Bytes::copy_from_slice(body)).map_err(message)
}

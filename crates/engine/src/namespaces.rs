//! Namespaces (layer 2): looking them up (`lookup.rs`: the memory tier, then the index) and
//! defining them (`define.rs`: create, pins, delete with everything they own).
//!
//! It knows where a namespace's blobs are kept only through [`Stores`], and its source only as a
//! URL that [`Sources`] can build; it reads no entries and fetches nothing.

mod define;
mod lookup;

use std::sync::Arc;

pub(crate) use define::{Definition, read_definitions};

use crate::blocking::Ix;
use crate::memory::Memory;
use crate::sources::Sources;
use crate::store::Stores;

/// A namespace with its totals, as `ns list` and `ns show` print it.
pub type NamespaceInfo = tiercache_index::NamespaceStats;

/// The namespaces of one cache.
pub(crate) struct Namespaces {
    ix: Ix,
    memory: Memory,
    sources: Arc<Sources>,
    stores: Arc<Stores>,
}

impl Namespaces {
    pub(crate) fn new(ix: Ix, memory: Memory, sources: Arc<Sources>, stores: Arc<Stores>) -> Namespaces {
        Namespaces { ix, memory, sources, stores }
    }
}

//! Jobs (layer 4): work over the whole cache rather than one read or write: start-up recovery and
//! maintenance (`maintenance.rs`: rebuild, stats, cleanup, verify, vacuum), the pruner and its
//! background loop (`pruner.rs`, which also aborts abandoned multipart uploads), moving a namespace between storage places (`moves.rs`), and the
//! batched writes of access times and counters (`flush.rs`).
//!
//! Jobs use the layers below (stores, namespaces, directories, the memory tier); nothing below
//! uses them.

mod flush;
mod maintenance;
mod moves;
mod pruner;

use std::sync::{Arc, Mutex};

pub use maintenance::{StatsReport, VacuumReport, VerifyReport};
pub use moves::MoveReport;
pub use pruner::{PruneOptions, PruneReport, PrunedItem};

use crate::CacheConfig;
use crate::access::AccessLog;
use crate::blocking::Ix;
use crate::memory::Memory;
use crate::namespaces::Namespaces;
use crate::store::Stores;
use crate::tasks::Tasks;
use crate::uploads::Uploads;

/// The jobs of one cache.
pub(crate) struct Jobs {
    config: CacheConfig,
    ix: Ix,
    memory: Memory,
    access: Arc<AccessLog>,
    stores: Arc<Stores>,
    namespaces: Arc<Namespaces>,
    /// Multipart uploads: the pruner aborts abandoned ones and sweeps their files.
    uploads: Arc<Uploads>,
    tasks: Tasks,
    /// Held by each flush from drain to commit.
    flush_lock: tokio::sync::Mutex<()>,
    /// Shared-tier counters already added to the index (what the next flush adds is the rest).
    /// `None` before the first flush.
    shared_flushed: Mutex<Option<tiercache_tiers::shared::SharedStats>>,
}

impl Jobs {
    #[allow(clippy::too_many_arguments)] // One per part of the layers below; a struct would only rename them.
    pub(crate) fn new(
        config: CacheConfig,
        ix: Ix,
        memory: Memory,
        access: Arc<AccessLog>,
        stores: Arc<Stores>,
        namespaces: Arc<Namespaces>,
        uploads: Arc<Uploads>,
        tasks: Tasks,
    ) -> Jobs {
        Jobs {
            config,
            ix,
            memory,
            access,
            stores,
            namespaces,
            uploads,
            tasks,
            flush_lock: tokio::sync::Mutex::new(()),
            shared_flushed: Mutex::new(None),
        }
    }
}

//! The commands of the `tiercache` binary, one module per command or group of commands. Each takes
//! an open [`Cache`](tiercache_engine::Cache) and its parsed arguments, does its work through the
//! engine, prints what happened and returns the exit code; `completions`, `man` and `config`,
//! which need no cache, print what clap and the settings' declarations say.
//!
//! None of them parses the command line or opens the cache: `main.rs` does that once for all of
//! them.

mod cleanup;
mod completions;
mod config;
mod derive;
mod df;
mod directory;
mod get;
mod man;
mod mount;
mod ns;
mod prune;
mod serve;
mod stats;
mod verify;
mod warm;

pub(crate) use cleanup::cleanup;
pub(crate) use completions::completions;
pub(crate) use config::{check as config_check, example as config_example};
pub(crate) use derive::derive;
pub(crate) use df::df;
pub(crate) use directory::{index, migrate, update, watch};
pub(crate) use get::get;
pub(crate) use man::man;
pub(crate) use mount::mount;
pub(crate) use ns::ns;
pub(crate) use prune::prune;
pub(crate) use serve::serve;
pub(crate) use stats::{stats, vacuum};
pub(crate) use verify::verify;
pub(crate) use warm::warm;

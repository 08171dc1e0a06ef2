//! Integration tests of the tiers: the memory tier's tests (expiry on a paused tokio clock, the
//! byte bound, single flight, counters), and one behaviour suite for the shared tier, run against
//! every backend on real stores (a directory through OpenDAL's `fs`, a real S3-compatible server, a
//! real Redis), each started on 127.0.0.1 by the harness.

mod memory;
mod shared;

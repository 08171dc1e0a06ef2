//! Integration tests of the sources against real servers started by the test kit.

mod oci;

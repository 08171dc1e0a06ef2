//! Integration tests of the real `tiercache` binary, run as a user would run it.

mod common;

mod access;
mod cluster;
mod contain;
mod crash;
mod dashboard;
mod datadir;
mod derive;
mod dir;
mod get;
mod images;
mod lifecycle;
mod limits;
mod maint;
mod mount;
mod ns;
mod oci_mirror;
mod oci_runtimes;
mod packaging;
mod rebuild;
mod s3;
mod s3_clients;
mod s3_gateway;
mod s3_source;
mod shared_read;
mod sources;
mod verify;

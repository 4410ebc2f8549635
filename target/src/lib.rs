//! aisle storage target: keeps the bytes.
//!
//! A target owns the objects that HRW placement assigns to it, stores them durably on its
//! mountpaths (see [`store`]), and serves the intra-cluster object API that gateways call
//! (see [`server`]). It registers with the primary gateway at start.
//!
//! It does not speak S3 (no XML, no SigV4, no S3 validation rules: the gateway applies them) and
//! never serves a request without the cluster secret.

mod cold;
pub mod config;
mod etl;
mod etl_put;
mod files;
mod lifecycle;
mod local;
mod metrics;
mod rebalance;
mod replica;
mod scrub;
pub mod server;
mod shard_build;
mod shards;
pub mod store;

pub use config::TargetConfig;
pub use server::run;

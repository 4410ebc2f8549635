//! aisle gateway: the front door of the cluster.
//!
//! A gateway speaks S3 to clients (through `s3s`: SigV4, presigned URLs, aws-chunked, XML),
//! applies S3's rules, and streams every object body to or from the target that owns it by HRW
//! placement ([`proxy`]). The primary gateway also owns the versioned cluster metadata — the
//! cluster map and bucket map — persists it and pushes it to every target ([`meta`]).
//!
//! A gateway stores no object bytes and never buffers an object: bodies pass through in chunks.
//! The one exception is a bounded memory cache of small objects from targets on its own host,
//! used only while those targets' change tables show the key unchanged ([`hot`]). It never
//! transforms data either; transforms run on targets.

pub mod access;
pub mod admin;
pub mod batch;
pub mod config;
mod cors;
pub mod hot;
pub mod jobs;
pub mod lifecycle;
pub mod membership;
pub mod meta;
pub mod metrics;
pub mod proxy;
pub mod remote;
pub mod s3;
pub mod server;
pub mod ui;
pub mod users;

pub use config::GatewayConfig;
pub use server::run;

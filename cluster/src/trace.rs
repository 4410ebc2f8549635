//! The request id that follows one client request across nodes.
//!
//! The gateway gives every request an id (its `x-amz-request-id`) and runs the request's work
//! inside [`scope`]; every intra-cluster call made in that scope carries the id in
//! [`REQUEST_ID_HEADER`] ([`crate::client::NodeClient`] adds it), and the target that receives
//! it logs under the same id (and passes it on, to other targets and to transformers). So
//! `grep ID` over every node's log shows the request's whole journey.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use aisle_cluster::trace;
//! assert_eq!(trace::current(), None);
//! let seen = trace::scope("abc123".into(), async { trace::current() }).await;
//! assert_eq!(seen.as_deref(), Some("abc123"));
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;

/// Header carrying the request id on intra-cluster calls (and to transformers).
pub const REQUEST_ID_HEADER: &str = "x-aisle-request-id";

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Run `f` as part of the request `id`.
pub async fn scope<F: Future>(id: Arc<str>, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The id of the request this task works for, if any.
pub fn current() -> Option<Arc<str>> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// The request id a caller sent, if it is a plausible one (1–64 letters, digits, `-`).
pub fn from_headers(h: &http::HeaderMap) -> Option<Arc<str>> {
    let v = h.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok =
        !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| Arc::from(v))
}

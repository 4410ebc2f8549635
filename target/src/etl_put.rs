//! Offline ETL with direct put ([`proto::T_ETL_PUT`]): this target reads its copy of the source
//! through the pipeline — the same read as a transformed GET ([`crate::server::answer_read`]) —
//! and streams the output to the output's owner with the write plan the gateway made (its
//! stamp and copies). The bytes go target to target, never through the gateway; the owner
//! publishes and makes the copies as for any PUT. A transform that fails mid-stream ends the
//! upload without its commit trailer, so nothing is published.

use std::sync::Arc;

use aisle_cluster::client::ClientError;
use aisle_cluster::proto::{
    self, EtlPutRequest, META_HEADER, ObjectAttrs, ObjectMeta, ReadOptions,
};
use futures::TryStreamExt;
use http::Request;
use hyper::body::Incoming;

use crate::server::{ApiError, Resp, State, answer_read, api_err, json_resp, read_json_body};

pub(crate) async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let r: EtlPutRequest = read_json_body(req).await?;
    let opts = ReadOptions {
        etl: Some(r.etl.clone()),
        // The output is stored as an object right away; an ETL cache entry would be waste.
        uncached: true,
        ..Default::default()
    };
    let read = answer_read(state, &r.source, &opts, true, true)
        .await?
        .into_response()?;
    if !read.status().is_success() {
        // The source's own answer (a missing key, a failed transform) goes back as it is.
        return Ok(read);
    }
    let content_type = read
        .headers()
        .get(META_HEADER)
        .and_then(|v| proto::decode_header::<ObjectMeta>(v.as_bytes()).ok())
        .and_then(|m| m.attrs.content_type);
    let attrs = ObjectAttrs {
        content_type,
        ..Default::default()
    };
    let data = http_body_util::BodyDataStream::new(read.into_body()).map_err(std::io::Error::other);
    let written = state
        .client
        .put_object(&r.to, &r.output, &attrs, &r.write, data)
        .await
        .map_err(output_failed)?;
    state.metrics.etl_direct_puts.inc();
    Ok(json_resp(http::StatusCode::OK, &written))
}

fn output_failed(e: ClientError) -> ApiError {
    let status = match &e {
        ClientError::Status { status, .. } => status.as_u16(),
        _ => 502,
    };
    api_err(
        status,
        "OutputWriteFailed",
        format!("writing the output: {e}"),
    )
}

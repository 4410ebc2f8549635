//! Which shard members a read asks for (SPEC §5): `archpath` (query, or header
//! `x-ais-archpath`) for one member, `archregx` + `archmode` for many as one tar stream. The
//! owning target reads inside the shard; only the selected bytes cross the network.

use aisle_cluster::proto::ArchiveSelection;
use http::{HeaderMap, Uri};
use s3s::{S3ErrorCode, S3Result};

use super::error::s3_err;
use super::query::Query;

/// Header naming one member.
pub const ARCHPATH_HEADER: &str = "x-ais-archpath";

/// The archive selection of a request, if any.
pub fn selection(headers: &HeaderMap, query: &Query) -> S3Result<Option<ArchiveSelection>> {
    let q = |k: &str| query.first(k).map(str::to_string);
    let header_path = match headers.get(ARCHPATH_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    s3_err(
                        S3ErrorCode::InvalidArgument,
                        "x-ais-archpath is not valid text",
                    )
                })?
                .to_string(),
        ),
    };
    let path = match (q("archpath"), header_path) {
        (Some(a), Some(b)) if a != b => {
            return Err(s3_err(
                S3ErrorCode::InvalidRequest,
                "archpath and x-ais-archpath name different members",
            ));
        }
        (a, b) => a.or(b),
    };
    let regx = q("archregx");
    let mode = q("archmode");
    let in_query = q("archpath").is_some() || regx.is_some();
    if in_query && query.has("AWSAccessKeyId") {
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "a shard selection in the query needs a SigV4 presigned URL (SigV2 does not sign it)",
        ));
    }
    match (path, regx) {
        (Some(_), Some(_)) => Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "give archpath or archregx, not both",
        )),
        (Some(p), None) if p.is_empty() => {
            Err(s3_err(S3ErrorCode::InvalidArgument, "archpath is empty"))
        }
        (Some(p), None) => Ok(Some(ArchiveSelection::Path(p))),
        (None, Some(expr)) => Ok(Some(ArchiveSelection::Regex { expr, mode })),
        (None, None) if mode.is_some() => Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "archmode needs archregx",
        )),
        (None, None) => Ok(None),
    }
}

/// On a PUT: `Some(member)` for `?archpath=NAME&append=true` (or the `x-ais-archpath` header
/// with `append=true`), which appends a member to a shard instead of replacing the object.
pub fn append_request(headers: &HeaderMap, uri: &Uri) -> S3Result<Option<String>> {
    let query = Query::of(uri);
    let append = query.all(&["append"]).any(|v| v == "true");
    match selection(headers, &query)? {
        None if append => Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "append=true needs archpath",
        )),
        None => Ok(None),
        Some(ArchiveSelection::Path(p)) if append => Ok(Some(p)),
        Some(ArchiveSelection::Path(_)) => Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "PUT with archpath appends a member: add append=true",
        )),
        Some(ArchiveSelection::Regex { .. }) => Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "archregx selects members to read, not to write",
        )),
    }
}

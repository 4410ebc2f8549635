//! Turning failures into S3 errors, and the request checks every object operation shares.

use aisle_cluster::client::ClientError;
use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::proxy::NoTargets;

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Map a failed intra-cluster call to the S3 error the client sees.
pub fn from_client(e: ClientError) -> S3Error {
    match e {
        ClientError::Status { status, body, .. } => {
            let code =
                S3ErrorCode::from_bytes(body.code.as_bytes()).unwrap_or(S3ErrorCode::InternalError);
            let mut err = S3Error::with_message(code, body.message);
            if let Ok(s) = http::StatusCode::from_u16(status.as_u16()) {
                err.set_status_code(s);
            }
            if let Some(id) = body.delete_marker.as_deref() {
                err.set_headers(super::attrs::delete_marker_headers(id));
            }
            if status.as_u16() == 503 {
                // A transformer still starting, a copy that could not be made: come back soon.
                retry_after(&mut err);
            }
            err
        }
        ClientError::Transport { url, source } => {
            tracing::warn!(%url, error = %source, "target unreachable");
            slow_down("the storage target that holds this object is unreachable; retry shortly")
        }
        ClientError::Down { url } => {
            tracing::warn!(%url, "target down");
            slow_down("the storage target that holds this object is down; retry shortly")
        }
        ClientError::Body { url, message } => {
            tracing::error!(%url, %message, "bad answer from a target");
            S3Error::with_message(
                S3ErrorCode::InternalError,
                "a storage target gave a malformed answer",
            )
        }
    }
}

/// Map a failed call to a remote bucket's store to the S3 error the client sees: the
/// remote's refusal is 403 AccessDenied naming the remote, an unreachable or slow remote
/// 503 SlowDown with Retry-After.
pub fn from_remote(e: aisle_remote::RemoteError) -> S3Error {
    let (status, code) = e.s3_code();
    if status == 503 {
        tracing::warn!(error = %e, "remote unavailable");
        return slow_down(&e.to_string());
    }
    let mut err = S3Error::with_message(
        S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::InternalError),
        e.to_string(),
    );
    if let Ok(s) = http::StatusCode::from_u16(status) {
        err.set_status_code(s);
    }
    err
}

/// 503 SlowDown with Retry-After: S3 clients back off and retry.
fn slow_down(message: &str) -> S3Error {
    let mut err = S3Error::with_message(S3ErrorCode::SlowDown, message.to_string());
    err.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
    retry_after(&mut err);
    err
}

fn retry_after(err: &mut S3Error) {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    err.set_headers(h);
}

impl From<NoTargets> for S3Error {
    fn from(e: NoTargets) -> Self {
        slow_down(&e.to_string())
    }
}

/// Reject keys S3 would reject, and keys aisle does not store (documented in docs/s3.md).
pub fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "the key is empty",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::with_message(
            S3ErrorCode::KeyTooLongError,
            format!("the key is {} bytes; the limit is {MAX_KEY_LEN}", key.len()),
        ));
    }
    if key.contains('\0') {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "keys must not contain the NUL character",
        ));
    }
    Ok(())
}

/// Shorthand for an S3 error with a message.
pub fn s3_err(code: S3ErrorCode, msg: impl Into<String>) -> S3Error {
    S3Error::with_message(code, msg.into())
}

/// Put the request's id into an S3 error body (`<RequestId>` before `</Error>`), so the body
/// names the same request as the `x-amz-request-id` header, as S3's do. s3s renders errors
/// (its own, such as a bad signature, and ours) without it. Only a buffered XML error body is
/// touched; a streamed body or one that already has an id is left as it is.
pub(crate) fn stamp_request_id(resp: &mut http::Response<s3s::Body>, id: &str) {
    if resp.status().as_u16() < 400 {
        return;
    }
    let Some(body) = resp.body().bytes() else {
        return;
    };
    let Some(end) = find(&body, b"</Error>") else {
        return;
    };
    if find(&body, b"<RequestId>").is_some() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return;
    }
    let mut out = Vec::with_capacity(body.len() + id.len() + 23);
    out.extend_from_slice(&body[..end]);
    out.extend_from_slice(b"<RequestId>");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"</RequestId>");
    out.extend_from_slice(&body[end..]);
    if resp.headers().contains_key(http::header::CONTENT_LENGTH) {
        resp.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(out.len()),
        );
    }
    *resp.body_mut() = s3s::Body::from(bytes::Bytes::from(out));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod request_id_tests {
    use super::stamp_request_id;

    fn resp(status: u16, body: &'static str) -> http::Response<s3s::Body> {
        let mut r =
            http::Response::new(s3s::Body::from(bytes::Bytes::from_static(body.as_bytes())));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, body.len().into());
        r
    }

    #[test]
    fn an_error_body_gets_the_id_and_its_length() {
        let mut r = resp(
            404,
            "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>",
        );
        stamp_request_id(&mut r, "abc123");
        let body = r.body().bytes().unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.ends_with("<Code>NoSuchKey</Code><RequestId>abc123</RequestId></Error>"));
        assert_eq!(
            r.headers()[http::header::CONTENT_LENGTH],
            body.len().to_string().as_str()
        );
    }

    #[test]
    fn success_and_bodies_with_an_id_stay() {
        let mut ok = resp(200, "<Error>not an error</Error>");
        stamp_request_id(&mut ok, "abc");
        assert_eq!(
            &ok.body().bytes().unwrap()[..],
            b"<Error>not an error</Error>"
        );
        let mut has = resp(403, "<Error><RequestId>x</RequestId></Error>");
        stamp_request_id(&mut has, "abc");
        assert_eq!(
            &has.body().bytes().unwrap()[..],
            b"<Error><RequestId>x</RequestId></Error>"
        );
    }
}

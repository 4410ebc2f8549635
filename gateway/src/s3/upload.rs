//! The verified upload stream: every uploaded body passes through here on its way to a target.
//!
//! The stream counts bytes, computes the MD5 (the ETag) and the requested `x-amz-checksum-*`,
//! enforces the size limit, and at the end compares with what the client declared — the
//! Content-Length, Content-MD5, and the checksum from a header or from the aws-chunked trailer.
//! Only if everything matches does it send the commit trailer that lets the target publish the
//! object; otherwise it fails the stream, the target discards what it staged, and the client
//! gets the recorded S3 error (BadDigest, IncompleteBody, EntityTooLarge, …). Nothing is
//! buffered beyond the chunk in flight.

use std::sync::{Arc, Mutex};

use aisle_cluster::client::{BoxError, ReqBody};
use aisle_cluster::proto::{self, COMMIT_TRAILER, Checksums, Commit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt;
use http::HeaderMap;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode, S3Result, TrailingHeaders};

use super::error::s3_err;

/// Largest object a single PUT (or a part) may carry: 5 GiB, as S3.
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// A checksum algorithm S3 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// CRC32
    Crc32,
    /// CRC32C
    Crc32c,
    /// CRC64NVME
    Crc64nvme,
    /// SHA1
    Sha1,
    /// SHA256
    Sha256,
}

impl Algo {
    /// All of them.
    pub const ALL: [Algo; 5] = [
        Algo::Crc32,
        Algo::Crc32c,
        Algo::Crc64nvme,
        Algo::Sha1,
        Algo::Sha256,
    ];

    /// From an `x-amz-checksum-algorithm` / `x-amz-sdk-checksum-algorithm` value.
    pub fn from_name(s: &str) -> Option<Algo> {
        Some(match s.to_ascii_uppercase().as_str() {
            "CRC32" => Algo::Crc32,
            "CRC32C" => Algo::Crc32c,
            "CRC64NVME" => Algo::Crc64nvme,
            "SHA1" => Algo::Sha1,
            "SHA256" => Algo::Sha256,
            _ => return None,
        })
    }

    /// Its header name.
    pub fn header(self) -> &'static str {
        match self {
            Algo::Crc32 => "x-amz-checksum-crc32",
            Algo::Crc32c => "x-amz-checksum-crc32c",
            Algo::Crc64nvme => "x-amz-checksum-crc64nvme",
            Algo::Sha1 => "x-amz-checksum-sha1",
            Algo::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// A hasher computing just this algorithm.
    pub fn hasher(self) -> ChecksumHasher {
        use s3s::crypto::{Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
        let mut h = ChecksumHasher::default();
        match self {
            Algo::Crc32 => h.crc32 = Some(Crc32::new()),
            Algo::Crc32c => h.crc32c = Some(Crc32c::new()),
            Algo::Crc64nvme => h.crc64nvme = Some(Crc64Nvme::new()),
            Algo::Sha1 => h.sha1 = Some(Sha1::new()),
            Algo::Sha256 => h.sha256 = Some(Sha256::new()),
        }
        h
    }

    /// This algorithm's value in a record.
    pub fn get(self, c: &Checksums) -> Option<&String> {
        match self {
            Algo::Crc32 => c.crc32.as_ref(),
            Algo::Crc32c => c.crc32c.as_ref(),
            Algo::Crc64nvme => c.crc64nvme.as_ref(),
            Algo::Sha1 => c.sha1.as_ref(),
            Algo::Sha256 => c.sha256.as_ref(),
        }
    }

    /// Set this algorithm's value in a record.
    pub fn set(self, c: &mut Checksums, v: String) {
        let slot = match self {
            Algo::Crc32 => &mut c.crc32,
            Algo::Crc32c => &mut c.crc32c,
            Algo::Crc64nvme => &mut c.crc64nvme,
            Algo::Sha1 => &mut c.sha1,
            Algo::Sha256 => &mut c.sha256,
        };
        *slot = Some(v);
    }

    /// Digest `data` with this algorithm; base64 as S3 shows it.
    pub fn digest(self, data: &[u8]) -> String {
        let mut h = self.hasher();
        h.update(data);
        let mut c = Checksums::default();
        put_dto(&mut c, h.finalize());
        self.get(&c).cloned().unwrap_or_default()
    }
}

fn put_dto(c: &mut Checksums, d: s3s::dto::Checksum) {
    c.crc32 = d.checksum_crc32.or(c.crc32.take());
    c.crc32c = d.checksum_crc32c.or(c.crc32c.take());
    c.crc64nvme = d.checksum_crc64nvme.or(c.crc64nvme.take());
    c.sha1 = d.checksum_sha1.or(c.sha1.take());
    c.sha256 = d.checksum_sha256.or(c.sha256.take());
}

/// Where the expected checksum value comes from.
#[derive(Debug, Clone)]
pub enum ExpectedValue {
    /// A request header.
    Header(String),
    /// The aws-chunked trailer, readable once the body is drained.
    Trailer(TrailingHeaders),
    /// Nothing to compare with: compute and store (copies).
    ComputeOnly,
}

/// What the client declared about the body.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Declared (decoded) length.
    pub len: Option<u64>,
    /// Limit.
    pub max_len: u64,
    /// Decoded Content-MD5.
    pub content_md5: Option<[u8; 16]>,
    /// Checksum to verify (or compute).
    pub checksum: Option<(Algo, ExpectedValue)>,
}

/// Decode Content-MD5, InvalidDigest when malformed.
pub fn parse_content_md5(v: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    let Some(v) = v else { return Ok(None) };
    let raw = STANDARD.decode(v.trim()).map_err(|_| {
        s3_err(
            S3ErrorCode::InvalidDigest,
            "the Content-MD5 you specified is not valid base64",
        )
    })?;
    let arr: [u8; 16] = raw.try_into().map_err(|_| {
        s3_err(
            S3ErrorCode::InvalidDigest,
            "the Content-MD5 you specified is not 16 bytes",
        )
    })?;
    Ok(Some(arr))
}

/// Work out which checksum a request promises: a header value, a trailer, or none.
pub fn checksum_expectation(
    given: &Checksums,
    algorithm: Option<&str>,
    headers: &HeaderMap,
    trailers: Option<&TrailingHeaders>,
) -> S3Result<Option<(Algo, ExpectedValue)>> {
    let in_headers: Vec<(Algo, &String)> = Algo::ALL
        .iter()
        .filter_map(|a| a.get(given).map(|v| (*a, v)))
        .collect();
    if in_headers.len() > 1 {
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "expecting a single x-amz-checksum- header; multiple checksum types are not allowed",
        ));
    }
    if let Some((a, v)) = in_headers.first() {
        return Ok(Some((*a, ExpectedValue::Header((*v).clone()))));
    }
    if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        let name = t.trim().to_ascii_lowercase();
        if let Some(a) = Algo::ALL.iter().find(|a| a.header() == name) {
            let trailers = trailers.cloned().ok_or_else(|| {
                s3_err(
                    S3ErrorCode::InvalidRequest,
                    "x-amz-trailer needs a streaming (aws-chunked) body",
                )
            })?;
            return Ok(Some((*a, ExpectedValue::Trailer(trailers))));
        }
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            format!("unsupported x-amz-trailer: {t}"),
        ));
    }
    if let Some(name) = algorithm {
        let a = Algo::from_name(name).ok_or_else(|| {
            s3_err(
                S3ErrorCode::InvalidRequest,
                format!("unsupported checksum algorithm {name}"),
            )
        })?;
        return Ok(Some((a, ExpectedValue::ComputeOnly)));
    }
    Ok(None)
}

/// The error recorded when verification fails; read it after the target call failed.
#[derive(Clone, Default)]
pub struct FailureSlot(Arc<Mutex<Option<S3Error>>>);

impl FailureSlot {
    fn set(&self, e: S3Error) {
        *self.0.lock().expect("failure slot") = Some(e);
    }

    /// The recorded failure, if verification failed.
    pub fn take(&self) -> Option<S3Error> {
        self.0.lock().expect("failure slot").take()
    }
}

struct State<S> {
    src: S,
    md5: Md5,
    hasher: Option<ChecksumHasher>,
    len: u64,
    expect: Expect,
    slot: FailureSlot,
    done: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("upload verification failed")]
struct Rejected;

impl<S> State<S> {
    /// Record the failure and end the stream with an error, so the target never commits.
    fn fail(mut self, e: S3Error) -> Option<(Result<Frame<Bytes>, BoxError>, Self)> {
        self.slot.set(e);
        self.done = true;
        Some((Err(Box::new(Rejected)), self))
    }

    fn finish(&mut self) -> Result<Commit, S3Error> {
        if let Some(n) = self.expect.len
            && n != self.len
        {
            return Err(s3_err(
                S3ErrorCode::IncompleteBody,
                format!("declared {n} bytes, received {}", self.len),
            ));
        }
        let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
        if let Some(want) = self.expect.content_md5
            && want != md5
        {
            return Err(s3_err(
                S3ErrorCode::BadDigest,
                "the Content-MD5 you specified did not match what we received",
            ));
        }
        let mut checksums = Checksums::default();
        if let (Some(h), Some((algo, expected))) = (self.hasher.take(), &self.expect.checksum) {
            put_dto(&mut checksums, h.finalize());
            let computed = algo.get(&checksums).cloned().unwrap_or_default();
            let want = match expected {
                ExpectedValue::Header(v) => Some(v.clone()),
                ExpectedValue::Trailer(t) => {
                    let v = t
                        .read(|h| {
                            h.get(algo.header())
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        })
                        .flatten();
                    Some(v.ok_or_else(|| {
                        s3_err(
                            S3ErrorCode::InvalidRequest,
                            format!("the trailer {} was announced but not sent", algo.header()),
                        )
                    })?)
                }
                ExpectedValue::ComputeOnly => None,
            };
            if let Some(want) = want
                && want.trim() != computed
            {
                return Err(s3_err(
                    S3ErrorCode::BadDigest,
                    format!(
                        "the {} you specified did not match the calculated checksum",
                        algo.header()
                    ),
                ));
            }
            checksums.kind = Some("FULL_OBJECT".into());
        }
        Ok(Commit {
            size: self.len,
            md5: hex::encode(md5),
            checksums,
        })
    }
}

/// Wrap a client's body into the request body sent to the target.
pub fn verified_body(src: StreamingBlob, expect: Expect) -> (ReqBody, FailureSlot) {
    let slot = FailureSlot::default();
    let hasher = expect.checksum.as_ref().map(|(a, _)| a.hasher());
    let state = State {
        src,
        md5: Md5::new(),
        hasher,
        len: 0,
        expect,
        slot: slot.clone(),
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.src.next().await {
            Some(Ok(chunk)) => {
                st.len += chunk.len() as u64;
                if st.len > st.expect.max_len {
                    let max = st.expect.max_len;
                    return st.fail(s3_err(
                        S3ErrorCode::EntityTooLarge,
                        format!("the body exceeds the limit of {max} bytes"),
                    ));
                }
                st.md5.update(&chunk);
                if let Some(h) = st.hasher.as_mut() {
                    h.update(&chunk);
                }
                Some((Ok(Frame::data(chunk)), st))
            }
            Some(Err(e)) => {
                let err = match e.downcast::<S3Error>() {
                    Ok(s3) => *s3,
                    Err(other) => s3_err(
                        S3ErrorCode::IncompleteBody,
                        format!("reading the body failed: {other}"),
                    ),
                };
                st.fail(err)
            }
            None => match st.finish() {
                Ok(commit) => {
                    st.done = true;
                    let mut t = HeaderMap::new();
                    t.insert(COMMIT_TRAILER, proto::encode_header(&commit));
                    Some((Ok(Frame::trailers(t)), st))
                }
                Err(e) => st.fail(e),
            },
        }
    });
    (BodyExt::boxed_unsync(StreamBody::new(stream)), slot)
}

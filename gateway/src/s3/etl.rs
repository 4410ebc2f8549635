//! Which transform a read asks for: the `x-ais-etl` header, the same names as query parameters
//! (also AIStore's `etl_name` / `etl_pipeline` / `etl_args`), or an alias bucket. The first
//! source that names one wins; two sources that disagree are a 400. Gateways only select and
//! forward: the owning target runs the transform.

use aisle_cluster::proto::EtlSelection;
use aisle_etl_runtime::{MAX_ARGS_LEN, MAX_STAGES, valid_name};
use http::HeaderMap;
use s3s::{S3Error, S3ErrorCode, S3Result};

use super::error::s3_err;
use super::query::Query;

/// Header naming the pipeline.
pub const ETL_HEADER: &str = "x-ais-etl";
/// Header carrying the argument string.
pub const ETL_ARGS_HEADER: &str = "x-ais-etl-args";

fn invalid_etl(msg: impl Into<String>) -> S3Error {
    let mut e = s3_err(S3ErrorCode::Custom("InvalidEtl".into()), msg);
    e.set_status_code(http::StatusCode::BAD_REQUEST);
    e
}

fn contradiction(what: &str) -> S3Error {
    s3_err(
        S3ErrorCode::InvalidRequest,
        format!("the request names {what} in more than one way, and they disagree"),
    )
}

/// One value from several places that must agree.
fn agree(values: Vec<String>, what: &str) -> S3Result<Option<String>> {
    let mut it = values.into_iter();
    let first = it.next();
    if let Some(f) = &first
        && it.any(|v| &v != f)
    {
        return Err(contradiction(what));
    }
    Ok(first)
}

/// Parse `a,b,c` into validated stage names.
pub fn parse_pipeline(s: &str) -> S3Result<Vec<String>> {
    let names: Vec<String> = s.split(',').map(|n| n.trim().to_string()).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(invalid_etl("the pipeline has an empty stage name"));
    }
    if names.len() > MAX_STAGES {
        return Err(invalid_etl(format!(
            "a pipeline has at most {MAX_STAGES} stages"
        )));
    }
    if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
        return Err(invalid_etl(format!(
            "{bad:?} is not a valid transform name ([a-z0-9][a-z0-9-]{{1,31}})"
        )));
    }
    Ok(names)
}

/// The transform selected by headers and query parameters, if any.
pub fn selection(headers: &HeaderMap, query: &Query) -> S3Result<Option<EtlSelection>> {
    let header = |n: &str| -> S3Result<Option<String>> {
        match headers.get(n) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.to_string()))
                .map_err(|_| invalid_etl(format!("{n} is not valid text"))),
        }
    };
    let q = |names: &[&str]| -> Vec<String> { query.all(names).map(str::to_string).collect() };
    let mut names = q(&["x-ais-etl", "etl_pipeline", "etl_name"]);
    let mut args = q(&["x-ais-etl-args", "etl_args"]);
    // A SigV2 presigned URL does not sign ordinary query parameters: a holder could change or
    // drop the transform. Only SigV4 URLs may carry one.
    if (!names.is_empty() || !args.is_empty()) && query.has("AWSAccessKeyId") {
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "a transform in the query needs a SigV4 presigned URL (SigV2 does not sign it); \
             with boto3 use Config(signature_version='s3v4')",
        ));
    }
    names.extend(header(ETL_HEADER)?);
    args.extend(header(ETL_ARGS_HEADER)?);
    let names = agree(names, "a transform pipeline")?;
    let args = agree(args, "transform arguments")?;
    let Some(names) = names else {
        if args.is_some() {
            return Err(invalid_etl("x-ais-etl-args without x-ais-etl"));
        }
        return Ok(None);
    };
    if args.as_ref().is_some_and(|a| a.len() > MAX_ARGS_LEN) {
        return Err(invalid_etl(format!(
            "x-ais-etl-args is longer than {MAX_ARGS_LEN} bytes"
        )));
    }
    Ok(Some(EtlSelection {
        pipeline: parse_pipeline(&names)?,
        args,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(h: &[(&str, &str)], uri: &str) -> S3Result<Option<EtlSelection>> {
        let mut headers = HeaderMap::new();
        for (k, v) in h {
            headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        selection(&headers, &Query::of(&uri.parse().unwrap()))
    }

    #[test]
    fn header_query_and_aistore_names() {
        let a = sel(
            &[("x-ais-etl", "resize, jpeg"), ("x-ais-etl-args", "{}")],
            "/b/k",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.pipeline, ["resize", "jpeg"]);
        let b = sel(&[], "/b/k?x-ais-etl=md5").unwrap().unwrap();
        assert_eq!(b.pipeline, ["md5"]);
        let c = sel(&[], "/b/k?etl_name=md5&etl_args=x").unwrap().unwrap();
        assert_eq!(c.args.as_deref(), Some("x"));
        assert!(sel(&[], "/b/k").unwrap().is_none());
    }

    #[test]
    fn contradictions_and_bad_names() {
        assert!(sel(&[("x-ais-etl", "md5")], "/b/k?x-ais-etl=sha256").is_err());
        assert!(sel(&[("x-ais-etl", "md5")], "/b/k?x-ais-etl=md5").is_ok());
        assert!(sel(&[("x-ais-etl", "Bad_Name")], "/b/k").is_err());
        assert!(sel(&[("x-ais-etl", "a1,,b2")], "/b/k").is_err());
        assert!(sel(&[("x-ais-etl", "a1,a2,a3,a4,a5,a6,a7,a8,a9")], "/b/k").is_err());
        assert!(sel(&[("x-ais-etl-args", "{}")], "/b/k").is_err());
        assert!(
            sel(
                &[],
                "/b/k?x-ais-etl=md5&AWSAccessKeyId=AK&Signature=x&Expires=1"
            )
            .is_err()
        );
    }
}

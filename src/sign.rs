//! Signing what aisle sends (admin calls, the benchmark's S3 requests) with SigV4, as S3
//! expects it: single percent-encoding, no path normalization, `x-amz-content-sha256` set.

use std::time::SystemTime;

use anyhow::Context;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;

/// Credentials and region to sign with.
#[derive(Clone)]
pub struct Signer {
    identity: aws_credential_types::Credentials,
    region: String,
}

impl Signer {
    /// A signer for these keys.
    pub fn new(access_key: &str, secret_key: &str, region: &str) -> Signer {
        Signer {
            identity: aws_credential_types::Credentials::new(
                access_key, secret_key, None, None, "aisle",
            ),
            region: region.to_string(),
        }
    }

    /// Add SigV4 headers to `req` (its URI must be absolute); `payload` describes the body.
    pub fn sign<B>(
        &self,
        req: &mut http::Request<B>,
        payload: SignableBody<'_>,
    ) -> anyhow::Result<()> {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity = self.identity.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .context("building signing parameters")?
            .into();
        let uri = req.uri().to_string();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            payload,
        )
        .context("preparing the request for signing")?;
        let (instructions, _) = sign(signable, &params).context("signing")?.into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

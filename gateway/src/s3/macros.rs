//! Macros over the S3 DTOs that share field names without sharing a type (PutObjectInput and
//! UploadPartInput; PutObjectOutput and UploadPartOutput).

/// The client-settable attributes of a PutObject, CreateMultipartUpload or CopyObject (REPLACE).
macro_rules! attrs_of {
    ($input:expr) => {
        super::attrs::object_attrs(
            $input.content_type.clone(),
            $input.content_encoding.clone(),
            $input.content_disposition.clone(),
            $input.content_language.clone(),
            $input.cache_control.clone(),
            $input.expires.as_ref(),
            $input.metadata.clone(),
            $input.tagging.as_deref(),
        )
    };
}

/// What an upload request declares about its body: `(Expect, checksum algorithm)`.
macro_rules! upload_expect {
    ($input:expr, $headers:expr, $trailers:expr, $declared:expr) => {{
        let input = &$input;
        let given = super::attrs::header_checksums(
            &input.checksum_crc32,
            &input.checksum_crc32c,
            &input.checksum_crc64nvme,
            &input.checksum_sha1,
            &input.checksum_sha256,
        );
        let checksum = super::upload::checksum_expectation(
            &given,
            input.checksum_algorithm.as_ref().map(|a| a.as_str()),
            &$headers,
            $trailers.as_ref(),
        )?;
        let algo = checksum.as_ref().map(|(a, _)| *a);
        let expect = super::upload::Expect {
            len: $declared,
            max_len: super::upload::MAX_PUT_SIZE,
            content_md5: super::upload::parse_content_md5(input.content_md5.as_ref())?,
            checksum,
        };
        (expect, algo)
    }};
}

/// Echo the checksum the client sent (and only that one) on an upload's response.
macro_rules! echo_checksums {
    ($out:expr, $stored:expr, $algo:expr) => {{
        use super::upload::Algo;
        let echo = |a: Algo| {
            $algo
                .filter(|x| *x == a)
                .and_then(|a| a.get(&$stored).cloned())
        };
        $out.checksum_crc32 = echo(Algo::Crc32);
        $out.checksum_crc32c = echo(Algo::Crc32c);
        $out.checksum_crc64nvme = echo(Algo::Crc64nvme);
        $out.checksum_sha1 = echo(Algo::Sha1);
        $out.checksum_sha256 = echo(Algo::Sha256);
    }};
}

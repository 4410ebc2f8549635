//! The stores behind aisle's remote buckets, reached through [`object_store`].
//!
//! A remote bucket is a cache in front of another store: an S3 bucket (AWS, MinIO, Ceph,
//! another aisle — `object_store`'s `AmazonS3`) or a directory (`LocalFileSystem`). This crate
//! turns a bucket's [`RemoteSpec`] into a [`Remote`] and offers what the cluster needs of it:
//! HEAD, a streamed GET, a streamed PUT (multipart for large objects), DELETE, and one page of
//! an S3-style listing (prefix, delimiter, resume point — the rules of
//! [`aisle_cluster::listing`]) — each bounded in time, each failure classified
//! ([`RemoteError`]) so the gateway can give S3 clients the right status.
//!
//! It is not for caching: which target fetches, how the copy is published and when it is
//! stale is the target's business (`aisle-target`'s `cold` module). It knows nothing of the
//! cluster map, and it never logs or prints a credential.

use std::sync::Arc;
use std::time::Duration;

use aisle_cluster::listing::{ListItem, ListPage, ObjectEntry, common_prefix};
use aisle_cluster::map::RemoteSpec;
use aisle_cluster::proto::{ListQuery, ObjectAttrs};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

/// Objects up to this size are written with one PUT; larger ones as a multipart upload in
/// parts of this size (at most two parts in memory at once).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// A remote call that failed, classified for the client.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The remote has no such object.
    #[error("{key}: no such object on {remote}")]
    NotFound {
        /// The remote.
        remote: String,
        /// The key (as the bucket names it).
        key: String,
    },
    /// The remote refused the credentials or the operation.
    #[error("{remote} refused the request (check the remote bucket's credentials): {message}")]
    Denied {
        /// The remote.
        remote: String,
        /// What it said.
        message: String,
    },
    /// No answer in time.
    #[error("{remote} did not answer within {secs} s")]
    Timeout {
        /// The remote.
        remote: String,
        /// The limit.
        secs: u64,
    },
    /// Unreachable, or failing on its side.
    #[error("{remote} is unavailable: {message}")]
    Unavailable {
        /// The remote.
        remote: String,
        /// What failed.
        message: String,
    },
    /// A key the remote cannot store unchanged through object_store.
    #[error("the key {key:?} cannot be stored on {remote} unchanged: {reason}")]
    BadKey {
        /// The remote.
        remote: String,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A bucket spec that cannot be used.
    #[error("remote bucket spec: {0}")]
    Spec(String),
}

impl RemoteError {
    /// HTTP status and S3 error code a client should see.
    pub fn s3_code(&self) -> (u16, &'static str) {
        match self {
            RemoteError::NotFound { .. } => (404, "NoSuchKey"),
            RemoteError::Denied { .. } => (403, "AccessDenied"),
            RemoteError::Timeout { .. } | RemoteError::Unavailable { .. } => (503, "SlowDown"),
            RemoteError::BadKey { .. } | RemoteError::Spec(_) => (400, "InvalidArgument"),
        }
    }

    /// The remote could not be reached or did not answer (not a refusal or a miss).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RemoteError::Timeout { .. } | RemoteError::Unavailable { .. }
        )
    }
}

/// What the remote says of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteObject {
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes (empty if the remote gave none).
    pub etag: String,
    /// Version id, where the remote keeps versions.
    pub version: Option<String>,
    /// Last modification, Unix milliseconds.
    pub mtime_ms: i64,
    /// Content type and user metadata (GET only; a HEAD through object_store has none).
    pub attrs: ObjectAttrs,
}

/// The remotes of a node's remote buckets, built once per bucket and rebuilt when the
/// bucket's spec changes.
#[derive(Default)]
pub struct Remotes {
    by_bucket: std::sync::Mutex<std::collections::HashMap<String, (RemoteSpec, Remote)>>,
}

impl Remotes {
    /// The remote of `bucket` as `spec` describes it.
    pub fn get(&self, bucket: &str, spec: &RemoteSpec) -> Result<Remote, RemoteError> {
        let mut m = self.by_bucket.lock().expect("remotes lock");
        if let Some((s, r)) = m.get(bucket)
            && s == spec
        {
            return Ok(r.clone());
        }
        let r = Remote::new(spec)?;
        m.insert(bucket.to_string(), (spec.clone(), r.clone()));
        Ok(r)
    }
}

/// A byte stream from the remote; each chunk arrives within the remote's timeout.
pub type RemoteStream = BoxStream<'static, Result<Bytes, RemoteError>>;

/// One remote store, ready to call.
///
/// ```
/// use aisle_cluster::map::RemoteSpec;
/// let dir = tempfile::tempdir().unwrap();
/// let spec: RemoteSpec = serde_json::from_value(serde_json::json!({
///     "url": format!("file://{}", dir.path().display()),
/// })).unwrap();
/// let remote = aisle_remote::Remote::new(&spec).unwrap();
/// assert!(remote.label().starts_with("file://"));
/// ```
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    /// Prefix every key gets on the remote (`""` or ending in `/`).
    prefix: String,
    label: String,
    timeout: Duration,
    /// Listings come back in key order (S3 does; a directory walk does not).
    sorted: bool,
    /// Attributes (content type, user metadata) can be written.
    attributes: bool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("label", &self.label)
            .finish()
    }
}

impl Remote {
    /// Build the client for `spec` (no call is made: see [`Remote::check`]).
    pub fn new(spec: &RemoteSpec) -> Result<Remote, RemoteError> {
        let timeout = Duration::from_secs(spec.timeout_secs.max(1));
        if let Some(rest) = spec.url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(RemoteError::Spec(format!("no bucket in {:?}", spec.url)));
            }
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&spec.region)
                .with_virtual_hosted_style_request(spec.virtual_hosted)
                // Bounded: a remote that does not answer turns into 503 SlowDown quickly.
                .with_retry(RetryConfig {
                    max_retries: 2,
                    retry_timeout: timeout,
                    ..Default::default()
                })
                // No whole-request timeout (a large body may take long); the connect is
                // bounded here, the first byte and every chunk by `Remote` itself.
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(true)
                        .with_timeout_disabled()
                        .with_connect_timeout(timeout),
                );
            if let Some(e) = &spec.endpoint {
                b = b.with_endpoint(e).with_allow_http(true);
            }
            match (&spec.access_key, &spec.secret_key) {
                (Some(a), Some(s)) => {
                    b = b.with_access_key_id(a).with_secret_access_key(s);
                    if let Some(t) = &spec.session_token {
                        b = b.with_token(t);
                    }
                }
                (None, None) => b = b.with_skip_signature(true),
                _ => {
                    return Err(RemoteError::Spec(
                        "give both the access key and the secret key, or neither".into(),
                    ));
                }
            }
            let store = b
                .build()
                .map_err(|e| RemoteError::Spec(format!("{}: {e}", spec.url)))?;
            let label = match &spec.endpoint {
                Some(e) => format!("{} at {e}", spec.url),
                None => spec.url.clone(),
            };
            Ok(Remote {
                store: Arc::new(store),
                prefix: dir_prefix(prefix),
                label,
                timeout,
                sorted: true,
                attributes: true,
            })
        } else if let Some(dir) = spec.url.strip_prefix("file://") {
            std::fs::create_dir_all(dir)
                .map_err(|e| RemoteError::Spec(format!("creating {dir}: {e}")))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| RemoteError::Spec(format!("{}: {e}", spec.url)))?;
            Ok(Remote {
                store: Arc::new(store),
                prefix: String::new(),
                label: spec.url.clone(),
                timeout,
                sorted: false,
                attributes: false,
            })
        } else {
            Err(RemoteError::Spec(format!(
                "unsupported remote {:?}: use s3://BUCKET[/PREFIX] or file:///DIR",
                spec.url
            )))
        }
    }

    /// Where the remote is, for messages (no credentials).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Make one cheap call (a listing of at most a page) to see that the remote answers and
    /// takes the credentials.
    pub async fn check(&self) -> Result<(), RemoteError> {
        let dir = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.trim_end_matches('/')));
        let mut s = self.store.list(dir.as_ref());
        match self.timed(async { s.next().await.transpose() }).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// The remote path of `key`: refused when object_store would store it under another name
    /// (empty segments as in `a//b`, `.` or `..` segments, a leading or trailing `/`, control
    /// characters).
    pub fn path(&self, key: &str) -> Result<Path, RemoteError> {
        let full = format!("{}{key}", self.prefix);
        let bad = |reason: String| RemoteError::BadKey {
            remote: self.label.clone(),
            key: key.to_string(),
            reason,
        };
        let p = Path::parse(&full).map_err(|e| bad(e.to_string()))?;
        if p.as_ref() != full {
            return Err(bad("a leading or trailing '/'".into()));
        }
        Ok(p)
    }

    fn key_of<'p>(&self, p: &'p Path) -> Option<&'p str> {
        p.as_ref().strip_prefix(self.prefix.as_str())
    }

    /// HEAD: size, ETag, version, modification time (no attributes).
    pub async fn head(&self, key: &str) -> Result<RemoteObject, RemoteError> {
        let path = self.path(key)?;
        let m = self
            .timed(self.store.head(&path))
            .await
            .map_err(|e| self.classify_key(e, key))?;
        Ok(object_of(&m, ObjectAttrs::default()))
    }

    /// GET: what the remote says of the object, and its bytes as a stream (the call returns
    /// once the remote answered; each chunk must then arrive within the timeout).
    pub async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteStream), RemoteError> {
        let path = self.path(key)?;
        let r = self
            .timed(self.store.get_opts(&path, GetOptions::default()))
            .await
            .map_err(|e| self.classify_key(e, key))?;
        let obj = object_of(&r.meta, attrs_of(&r.attributes));
        let this = self.clone();
        let key = key.to_string();
        let body = r.into_stream();
        let stream = futures::stream::unfold(Some(body), move |body| {
            let this = this.clone();
            let key = key.clone();
            async move {
                let mut body = body?;
                match tokio::time::timeout(this.timeout, body.next()).await {
                    Err(_) => Some((Err(this.timeout_error()), None)),
                    Ok(None) => None,
                    Ok(Some(Ok(b))) => Some((Ok(b), Some(body))),
                    Ok(Some(Err(e))) => Some((Err(this.classify_key(e, &key)), None)),
                }
            }
        });
        Ok((obj, stream.boxed()))
    }

    /// PUT `size` bytes from `body` as `key`: one PUT up to [`PART_SIZE`], else a multipart
    /// upload (aborted if anything fails). Returns what the remote says of the new object
    /// (its ETag and version; size and time as written).
    pub async fn put(
        &self,
        key: &str,
        size: u64,
        attrs: &ObjectAttrs,
        mut body: BoxStream<'static, std::io::Result<Bytes>>,
    ) -> Result<RemoteObject, RemoteError> {
        let path = self.path(key)?;
        let attributes = if self.attributes {
            attributes_of(attrs)
        } else {
            Attributes::new()
        };
        let read_err = |e: std::io::Error| RemoteError::Unavailable {
            remote: "local data".into(),
            message: format!("reading the staged object: {e}"),
        };
        let result = if size as usize <= PART_SIZE {
            let mut chunks = Vec::new();
            while let Some(c) = body.next().await {
                chunks.push(c.map_err(read_err)?);
            }
            let payload: PutPayload = chunks.into_iter().collect();
            let opts = PutOptions {
                attributes,
                ..Default::default()
            };
            self.timed(self.store.put_opts(&path, payload, opts))
                .await
                .map_err(|e| self.classify_key(e, key))?
        } else {
            let opts = PutMultipartOptions {
                attributes,
                ..Default::default()
            };
            let upload = self
                .timed(self.store.put_multipart_opts(&path, opts))
                .await
                .map_err(|e| self.classify_key(e, key))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let sent: Result<(), RemoteError> = async {
                while let Some(c) = body.next().await {
                    let c = c.map_err(read_err)?;
                    self.timed(w.wait_for_capacity(1))
                        .await
                        .map_err(|e| self.classify_key(e, key))?;
                    w.put(c);
                }
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => self
                    .timed(w.finish())
                    .await
                    .map_err(|e| self.classify_key(e, key))?,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(e);
                }
            }
        };
        Ok(RemoteObject {
            size,
            etag: unquoted(result.e_tag.as_deref()),
            version: result.version,
            mtime_ms: aisle_cluster::now_ms(),
            attrs: attrs.clone(),
        })
    }

    /// DELETE (a missing object is no error, as in S3).
    pub async fn delete(&self, key: &str) -> Result<(), RemoteError> {
        let path = self.path(key)?;
        match self.timed(self.store.delete(&path)).await {
            Ok(()) => Ok(()),
            Err(e) => match self.classify_key(e, key) {
                RemoteError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// One page of the remote's listing with S3's rules (`q.prefix`, `q.delimiter`, resume
    /// after `q.after`, at most `q.limit` items). A group rolled up into a common prefix is
    /// skipped with a new listing call that starts after it, so a delimited listing of a
    /// deep tree does not walk every key.
    pub async fn list_page(&self, q: &ListQuery) -> Result<ListPage, RemoteError> {
        let delim = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let mut items: Vec<ListItem> = Vec::new();
        // Strictly after this key (None: from the first key with the prefix); after a common
        // prefix, after every key it rolled up.
        let mut after: Option<String> = q.after.as_ref().map(|a| {
            if common_prefix(a, &q.prefix, delim) == Some(a.as_str()) {
                format!("{a}\u{10FFFF}")
            } else {
                a.clone()
            }
        });
        loop {
            let mut keys = self.scan(&q.prefix, after.as_deref()).await?;
            let mut restarted = false;
            // Every listing page must come within the timeout: a stalled remote is an error.
            while let Some(entry) = self.timed_next(&mut keys).await? {
                if items.len() == q.limit {
                    return Ok(ListPage {
                        items,
                        truncated: true,
                    });
                }
                if let Some(cp) = common_prefix(&entry.key, &q.prefix, delim) {
                    let cp = cp.to_string();
                    // Everything under it sorts before this: start after the whole group.
                    after = Some(format!("{cp}\u{10FFFF}"));
                    items.push(ListItem::Prefix(cp));
                    restarted = true;
                    break;
                }
                after = Some(entry.key.clone());
                items.push(ListItem::Object(entry));
            }
            if !restarted {
                return Ok(ListPage {
                    items,
                    truncated: false,
                });
            }
        }
    }

    /// Keys with `prefix` strictly after `after`, in byte order.
    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<BoxStream<'static, Result<ObjectEntry, RemoteError>>, RemoteError> {
        // object_store lists "directories": list the one holding the prefix and filter.
        let dir = match prefix.rfind('/') {
            Some(i) => format!("{}{}", self.prefix, &prefix[..i]),
            None => self.prefix.trim_end_matches('/').to_string(),
        };
        let dir = (!dir.is_empty()).then(|| Path::parse(&dir).unwrap_or_else(|_| Path::from(dir)));
        // Start close to the first key that can match (S3's start-after).
        let start = match after {
            Some(a) if a >= prefix => Some(a.to_string()),
            _ => {
                let mut p = prefix.to_string();
                p.pop();
                (!p.is_empty()).then_some(p)
            }
        };
        let raw = match start
            .as_deref()
            .map(|s| Path::parse(format!("{}{s}", self.prefix)))
        {
            Some(Ok(offset)) => self.store.list_with_offset(dir.as_ref(), &offset),
            _ => self.store.list(dir.as_ref()),
        };
        let raw = if self.sorted {
            // In key order: stop at the first key past the prefix.
            let full = format!("{}{prefix}", self.prefix);
            raw.take_while(move |r| {
                let go = match r {
                    Ok(m) => {
                        let k = m.location.as_ref();
                        k.starts_with(full.as_str()) || k < full.as_str()
                    }
                    Err(_) => true,
                };
                std::future::ready(go)
            })
            .boxed()
        } else {
            raw
        };
        let this = self.clone();
        let prefix = prefix.to_string();
        let after = after.map(str::to_string);
        let entries = raw.filter_map(move |r| {
            let this = this.clone();
            let prefix = prefix.clone();
            let after = after.clone();
            async move {
                match r {
                    Err(e) => Some(Err(this.classify(e))),
                    Ok(m) => {
                        let key = this.key_of(&m.location)?.to_string();
                        let wanted = key.starts_with(&prefix)
                            && after.as_deref().is_none_or(|a| key.as_str() > a);
                        wanted.then(|| {
                            Ok(ObjectEntry {
                                key,
                                size: m.size,
                                etag: unquoted(m.e_tag.as_deref()),
                                mtime_ms: m.last_modified.timestamp_millis(),
                                version: None,
                            })
                        })
                    }
                }
            }
        });
        if self.sorted {
            return Ok(entries.boxed());
        }
        // A directory walk comes unordered: sort the keys (names and sizes only in memory).
        let mut all: Vec<ObjectEntry> = Vec::new();
        let mut entries = entries.boxed();
        while let Some(e) = self.timed_next(&mut entries).await? {
            all.push(e);
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(futures::stream::iter(all.into_iter().map(Ok)).boxed())
    }

    async fn timed_next(
        &self,
        s: &mut BoxStream<'static, Result<ObjectEntry, RemoteError>>,
    ) -> Result<Option<ObjectEntry>, RemoteError> {
        match tokio::time::timeout(self.timeout, s.next()).await {
            Err(_) => Err(self.timeout_error()),
            Ok(None) => Ok(None),
            Ok(Some(r)) => r.map(Some),
        }
    }

    async fn timed<T>(
        &self,
        f: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, object_store::Error> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(object_store::Error::Generic {
                store: "remote",
                source: Box::new(Elapsed),
            }),
        }
    }

    fn timeout_error(&self) -> RemoteError {
        RemoteError::Timeout {
            remote: self.label.clone(),
            secs: self.timeout.as_secs(),
        }
    }

    fn classify_key(&self, e: object_store::Error, key: &str) -> RemoteError {
        match e {
            object_store::Error::NotFound { .. } => RemoteError::NotFound {
                remote: self.label.clone(),
                key: key.to_string(),
            },
            e => self.classify(e),
        }
    }

    fn classify(&self, e: object_store::Error) -> RemoteError {
        use object_store::Error as E;
        let remote = self.label.clone();
        match e {
            E::NotFound { path, .. } => RemoteError::NotFound { remote, key: path },
            E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
                RemoteError::Denied {
                    remote,
                    message: first_line(&source.to_string()),
                }
            }
            E::Generic { source, .. } if source.is::<Elapsed>() => self.timeout_error(),
            E::Generic { source, .. } => {
                let text = source.to_string();
                // object_store reports some refusals as generic client errors ("…status
                // code: 403 Forbidden: …"). The bare number is not enough: the remote's URL
                // may hold it (a port such as 40393).
                if text.contains("status code: 403") || text.contains("AccessDenied") {
                    RemoteError::Denied {
                        remote,
                        message: first_line(&text),
                    }
                } else if text.contains("status code: 404") && text.contains("NoSuchBucket") {
                    RemoteError::Spec(format!("{remote}: no such bucket"))
                } else {
                    RemoteError::Unavailable {
                        remote,
                        message: first_line(&text),
                    }
                }
            }
            other => RemoteError::Unavailable {
                remote,
                message: first_line(&other.to_string()),
            },
        }
    }
}

/// `prefix` as a directory prefix: `""` or ending in one `/`.
fn dir_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// An ETag without its quotes (empty when the remote gave none).
fn unquoted(etag: Option<&str>) -> String {
    etag.unwrap_or("").trim_matches('"').to_string()
}

fn first_line(s: &str) -> String {
    let s = s.lines().next().unwrap_or("").trim();
    s.chars().take(300).collect()
}

#[derive(Debug)]
struct Elapsed;
impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}
impl std::error::Error for Elapsed {}

fn object_of(m: &object_store::ObjectMeta, attrs: ObjectAttrs) -> RemoteObject {
    RemoteObject {
        size: m.size,
        etag: unquoted(m.e_tag.as_deref()),
        version: m.version.clone(),
        mtime_ms: m.last_modified.timestamp_millis(),
        attrs,
    }
}

fn attrs_of(a: &Attributes) -> ObjectAttrs {
    let mut out = ObjectAttrs::default();
    for (k, v) in a {
        let v = v.as_ref().to_string();
        match k {
            Attribute::ContentType => out.content_type = Some(v),
            Attribute::ContentEncoding => out.content_encoding = Some(v),
            Attribute::ContentDisposition => out.content_disposition = Some(v),
            Attribute::ContentLanguage => out.content_language = Some(v),
            Attribute::CacheControl => out.cache_control = Some(v),
            Attribute::Metadata(name) => {
                out.user.insert(name.to_lowercase(), v);
            }
            _ => {}
        }
    }
    out
}

fn attributes_of(a: &ObjectAttrs) -> Attributes {
    let mut out = Attributes::new();
    let mut set = |k: Attribute, v: &Option<String>| {
        if let Some(v) = v {
            out.insert(k, AttributeValue::from(v.clone()));
        }
    };
    set(Attribute::ContentType, &a.content_type);
    set(Attribute::ContentEncoding, &a.content_encoding);
    set(Attribute::ContentDisposition, &a.content_disposition);
    set(Attribute::ContentLanguage, &a.content_language);
    set(Attribute::CacheControl, &a.cache_control);
    for (k, v) in &a.user {
        out.insert(
            Attribute::Metadata(k.clone().into()),
            AttributeValue::from(v.clone()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_remote(dir: &std::path::Path) -> Remote {
        let spec: RemoteSpec = serde_json::from_value(serde_json::json!({
            "url": format!("file://{}", dir.display()),
        }))
        .unwrap();
        Remote::new(&spec).unwrap()
    }

    fn body(b: &'static [u8]) -> BoxStream<'static, std::io::Result<Bytes>> {
        futures::stream::iter([Ok(Bytes::from_static(b))]).boxed()
    }

    #[tokio::test]
    async fn put_get_head_delete_on_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir_remote(dir.path());
        r.put("a/b.txt", 5, &ObjectAttrs::default(), body(b"hello"))
            .await
            .unwrap();
        let (obj, mut s) = r.get("a/b.txt").await.unwrap();
        assert_eq!(obj.size, 5);
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"hello");
        assert_eq!(r.head("a/b.txt").await.unwrap().size, 5);
        r.delete("a/b.txt").await.unwrap();
        assert!(matches!(
            r.head("a/b.txt").await,
            Err(RemoteError::NotFound { .. })
        ));
        r.delete("a/b.txt").await.unwrap();
    }

    #[test]
    fn a_refusal_is_told_by_its_status_not_by_a_number_in_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir_remote(dir.path());
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let down = generic(
            "Error performing GET http://127.0.0.1:40393/src/cold in 2s: error sending request",
        );
        assert!(matches!(r.classify(down), RemoteError::Unavailable { .. }));
        let refused = generic(
            "Error performing GET http://127.0.0.1:9000/src/k: Server returned non-2xx status \
             code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>",
        );
        assert!(matches!(r.classify(refused), RemoteError::Denied { .. }));
    }

    #[test]
    fn keys_that_would_change_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir_remote(dir.path());
        assert!(r.path("a/b#c~d%e f").is_ok());
        for bad in ["a//b", "dir/", "/x", "a/./b", "a/../b", "a\u{1}b"] {
            assert!(
                matches!(r.path(bad), Err(RemoteError::BadKey { .. })),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn listing_follows_s3_rules() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir_remote(dir.path());
        for k in ["a/1", "a/2", "b", "c/x/1", "c/y", "ca"] {
            r.put(k, 1, &ObjectAttrs::default(), body(b"x"))
                .await
                .unwrap();
        }
        let names = |p: &ListPage| {
            p.items
                .iter()
                .map(|i| i.name().to_string())
                .collect::<Vec<_>>()
        };
        let q = |prefix: &str, delim: Option<&str>, after: Option<&str>, limit| ListQuery {
            versions: false,
            after_version: None,
            bucket: "b".into(),
            prefix: prefix.into(),
            delimiter: delim.map(str::to_string),
            after: after.map(str::to_string),
            limit,
        };
        let all = r.list_page(&q("", None, None, 100)).await.unwrap();
        assert_eq!(names(&all), ["a/1", "a/2", "b", "c/x/1", "c/y", "ca"]);
        assert!(!all.truncated);
        let top = r.list_page(&q("", Some("/"), None, 100)).await.unwrap();
        assert_eq!(names(&top), ["a/", "b", "c/", "ca"]);
        let c = r.list_page(&q("c", Some("/"), None, 100)).await.unwrap();
        assert_eq!(names(&c), ["c/", "ca"]);
        let cs = r.list_page(&q("c/", Some("/"), None, 100)).await.unwrap();
        assert_eq!(names(&cs), ["c/x/", "c/y"]);
        let p1 = r.list_page(&q("", Some("/"), None, 2)).await.unwrap();
        assert_eq!(names(&p1), ["a/", "b"]);
        assert!(p1.truncated);
        let p2 = r.list_page(&q("", Some("/"), Some("b"), 2)).await.unwrap();
        assert_eq!(names(&p2), ["c/", "ca"]);
        let after_group = r
            .list_page(&q("", Some("/"), Some("a/\u{10FFFF}"), 1))
            .await
            .unwrap();
        assert_eq!(names(&after_group), ["b"]);
    }
}

//! Cluster jobs run by the gateway, with progress and abort: building shards from many objects
//! (SPEC §5), and materializing an alias bucket's transformed objects (SPEC §4). Sources are a prefix, a list of keys, or a range template
//! (`img-{0000..9999}.jpg`); objects are packed, in key order, into tar shards of about the
//! target size, never splitting a WebDataset sample (same key up to the first dot) across two
//! shards. Each shard streams from the sources' owning targets into the shard's owning target;
//! nothing is held in memory beyond a chunk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aisle_cluster::listing::{ListItem, merge_pages};
use aisle_cluster::now_ms;
use aisle_cluster::proto::{EtlSelection, ListQuery, ObjectAttrs, ObjectQuery, ReadOptions};
use futures::StreamExt;
use s3s::dto::StreamingBlob;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::meta::MetaOwner;
use crate::proxy::{Targets, content_length};
use crate::s3::upload::{Expect, MAX_PUT_SIZE, verified_body};

/// Most objects one job may name.
pub const MAX_JOB_OBJECTS: usize = 10_000_000;

/// Which source objects a job works on: one bucket, and at most one of a prefix, a list of keys
/// or a range template (none: the whole bucket).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sources {
    /// Bucket of the source objects.
    pub source: String,
    /// Every object under this prefix …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// … or these keys …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<String>>,
    /// … or the keys of this range template, e.g. `img-{0000..9999}.jpg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl Sources {
    fn check(&self) -> Result<(), String> {
        let given = [
            self.prefix.is_some(),
            self.list.is_some(),
            self.template.is_some(),
        ];
        if given.iter().filter(|x| **x).count() > 1 {
            return Err("give at most one of prefix, list, template".into());
        }
        Ok(())
    }
}

/// `POST /_aisle/v1/jobs/shard`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardJobSpec {
    /// The objects to pack.
    #[serde(flatten)]
    pub sources: Sources,
    /// Bucket the shards go to.
    pub output_bucket: String,
    /// Shard names: `<output_prefix>000000.tar`, `…000001.tar`, ….
    pub output_prefix: String,
    /// Target shard size in bytes, tar overhead included (a shard closes at the first sample
    /// boundary past it).
    pub shard_size: u64,
}

/// `POST /_aisle/v1/jobs/etl`: transform objects into another bucket (offline ETL).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtlJobSpec {
    /// The objects to transform.
    #[serde(flatten)]
    pub sources: Sources,
    /// The pipeline and its arguments.
    pub etl: EtlSelection,
    /// Bucket the outputs go to (same keys).
    pub output_bucket: String,
    /// Transform and count, write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A job as `aisle job show` reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// What it does.
    pub kind: String,
    /// `running`, `done`, `aborted` or `failed`.
    pub status: String,
    /// Objects to pack (known once listed).
    pub total: u64,
    /// Objects packed.
    pub done: u64,
    /// Shards written.
    pub shards: Vec<String>,
    /// Bytes packed.
    pub bytes: u64,
    /// Per-object errors (the last 100).
    pub errors: Vec<String>,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// End, Unix milliseconds.
    pub finished_ms: Option<i64>,
}

struct Job {
    view: Mutex<JobView>,
    cancel: CancellationToken,
    /// Becomes `true` once the job has ended; [`Jobs::wait`] watches it.
    ended: tokio::sync::watch::Sender<bool>,
}

/// The gateway's jobs.
pub struct Jobs {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    targets: Targets,
    meta: Arc<MetaOwner>,
}

/// Expand a range template: `{a..b}` or `{a..b..step}`, zero-padded to the width of `a`
/// when `a` has leading zeros; several ranges multiply.
///
/// ```
/// use aisle_gateway::jobs::expand_template;
/// assert_eq!(expand_template("s-{08..10}.jpg", 100).unwrap(), ["s-08.jpg", "s-09.jpg", "s-10.jpg"]);
/// assert_eq!(expand_template("{0..4..2}/x", 100).unwrap(), ["0/x", "2/x", "4/x"]);
/// assert!(expand_template("{5..1}", 100).is_err());
/// ```
pub fn expand_template(t: &str, max: usize) -> Result<Vec<String>, String> {
    let Some(open) = t.find('{') else {
        return Ok(vec![t.to_string()]);
    };
    let close = t[open..].find('}').map(|c| open + c).ok_or("unclosed {")?;
    let inner = &t[open + 1..close];
    let parts: Vec<&str> = inner.split("..").collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(format!("{{{inner}}} is not a range like {{0000..9999}}"));
    }
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    let (a, b) = (num(parts[0])?, num(parts[1])?);
    let step = if parts.len() == 3 { num(parts[2])? } else { 1 };
    if b < a || step == 0 {
        return Err(format!("{{{inner}}} is an empty range"));
    }
    let width = if parts[0].starts_with('0') {
        parts[0].len()
    } else {
        0
    };
    let rest = expand_template(&t[close + 1..], max)?;
    let mut out = Vec::new();
    let mut i = a;
    while i <= b {
        for r in &rest {
            out.push(format!("{}{:0width$}{}", &t[..open], i, r, width = width));
            if out.len() > max {
                return Err(format!("the template names more than {max} objects"));
            }
        }
        i += step;
    }
    Ok(out)
}

impl Jobs {
    /// No jobs yet.
    pub fn new(targets: Targets, meta: Arc<MetaOwner>) -> Arc<Jobs> {
        Arc::new(Jobs {
            jobs: Mutex::new(BTreeMap::new()),
            targets,
            meta,
        })
    }

    /// Every job.
    pub fn list(&self) -> Vec<JobView> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .values()
            .map(|j| j.view.lock().expect("job lock").clone())
            .collect()
    }

    /// One job.
    pub fn get(&self, id: &str) -> Option<JobView> {
        let j = self.jobs.lock().expect("jobs lock").get(id).cloned()?;
        let v = j.view.lock().expect("job lock").clone();
        Some(v)
    }

    /// One job, once it has ended or `within` has passed, whichever comes first: a follower
    /// (`aisle etl run --wait`) learns of the end at once instead of at its next poll.
    pub async fn wait(&self, id: &str, within: std::time::Duration) -> Option<JobView> {
        let j = self.jobs.lock().expect("jobs lock").get(id).cloned()?;
        let mut ended = j.ended.subscribe();
        // Err only if the sender is gone, which the job itself holds.
        let _ = tokio::time::timeout(within, ended.wait_for(|e| *e)).await;
        let v = j.view.lock().expect("job lock").clone();
        Some(v)
    }

    /// Ask a job to stop; it ends `aborted` after the object in flight.
    pub fn abort(&self, id: &str) -> bool {
        match self.jobs.lock().expect("jobs lock").get(id) {
            Some(j) => {
                j.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Validate and start a shard-building job.
    pub fn start_shard(self: &Arc<Self>, spec: ShardJobSpec) -> Result<JobView, String> {
        let meta = self.meta.snapshot();
        for b in [&spec.sources.source, &spec.output_bucket] {
            if !meta.buckets.contains_key(b) {
                return Err(format!("no bucket {b}"));
            }
        }
        spec.sources.check()?;
        if spec.shard_size == 0 || spec.shard_size > MAX_PUT_SIZE {
            return Err(format!("shard_size must be 1..={MAX_PUT_SIZE}"));
        }
        Ok(self.launch("build-shards", move |me, job| async move {
            me.run_shard(&job, &spec).await
        }))
    }

    /// Register a job and run `work` in the background; its result sets the final status.
    fn launch<F, Fut>(self: &Arc<Self>, kind: &str, work: F) -> JobView
    where
        F: FnOnce(Arc<Jobs>, Arc<Job>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let id = format!(
            "{kind}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let job = Arc::new(Job {
            view: Mutex::new(JobView {
                id: id.clone(),
                kind: kind.into(),
                status: "running".into(),
                started_ms: now_ms(),
                ..Default::default()
            }),
            cancel: CancellationToken::new(),
            ended: tokio::sync::watch::Sender::new(false),
        });
        self.jobs
            .lock()
            .expect("jobs lock")
            .insert(id.clone(), job.clone());
        let me = self.clone();
        let kind_label = crate::metrics::Kind { kind: kind.into() };
        self.targets
            .metrics()
            .jobs_running
            .get_or_create(&kind_label)
            .inc();
        tokio::spawn(async move {
            let metrics = me.targets.clone();
            let result = work(me, job.clone()).await;
            metrics
                .metrics()
                .jobs_running
                .get_or_create(&kind_label)
                .dec();
            let mut v = job.view.lock().expect("job lock");
            v.finished_ms = Some(now_ms());
            v.status = match result {
                Ok(()) if job.cancel.is_cancelled() => "aborted".into(),
                Ok(()) => "done".into(),
                Err(e) => {
                    v.errors.push(e);
                    "failed".into()
                }
            };
            drop(v);
            job.ended.send_replace(true);
        });
        self.get(&id).expect("just inserted")
    }

    /// Offline ETL: every selected object, transformed on its owning target, written under the
    /// same key to the output bucket's owning target (or only counted, with `dry_run`).
    pub fn start_etl(self: &Arc<Self>, spec: EtlJobSpec) -> Result<JobView, String> {
        let meta = self.meta.snapshot();
        for b in [&spec.sources.source, &spec.output_bucket] {
            if !meta.buckets.contains_key(b) {
                return Err(format!("no bucket {b}"));
            }
        }
        if spec.sources.source == spec.output_bucket {
            return Err("the output bucket must differ from the source".into());
        }
        spec.sources.check()?;
        Ok(self.launch("etl", move |me, job| async move {
            let keys = me.keys(&spec.sources).await?;
            let each = |key: String| {
                let (me, spec) = (me.clone(), spec.clone());
                async move {
                    let r = me.transform_one(&spec, &key).await;
                    (key, r)
                }
            };
            me.for_each_key(&job, keys, 4, each).await;
            Ok(())
        }))
    }

    /// Prefetch: every selected object of a remote bucket fetched into the cache by the
    /// target that owns it (bytes go from the remote to that target, not through the gateway).
    pub fn start_prefetch(self: &Arc<Self>, spec: Sources) -> Result<JobView, String> {
        self.check_remote(&spec)?;
        Ok(self.launch("prefetch", move |me, job| async move {
            let keys = me.keys(&spec).await?;
            let each = |key: String| {
                let (me, bucket) = (me.clone(), spec.source.clone());
                async move {
                    let r = async {
                        let t = me
                            .targets
                            .fetcher(&bucket, &key)
                            .map_err(|e| e.to_string())?;
                        let st = me
                            .targets
                            .cache(&t, &bucket, &key, Some("prefetch"))
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(if st.fetched { st.size.unwrap_or(0) } else { 0 })
                    }
                    .await;
                    (key, r)
                }
            };
            me.for_each_key(&job, keys, 16, each).await;
            Ok(())
        }))
    }

    /// Evict: drop the cached copies of every selected object of a remote bucket (a prefix
    /// selects among what is cached); the remote is untouched.
    pub fn start_evict(self: &Arc<Self>, spec: Sources) -> Result<JobView, String> {
        self.check_remote(&spec)?;
        Ok(self.launch("evict", move |me, job| async move {
            let keys = match (&spec.list, &spec.template) {
                (None, None) => {
                    me.list_keys(&spec.source, spec.prefix.as_deref().unwrap_or(""), true)
                        .await?
                }
                _ => me.keys(&spec).await?,
            };
            let each = |key: String| {
                let (me, bucket) = (me.clone(), spec.source.clone());
                async move {
                    let r = match me.targets.listing_targets(&bucket) {
                        Ok(ts) => me
                            .targets
                            .evict(&ts, &bucket, &key)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    (key, r)
                }
            };
            me.for_each_key(&job, keys, 16, each).await;
            Ok(())
        }))
    }

    fn check_remote(&self, spec: &Sources) -> Result<(), String> {
        let meta = self.meta.snapshot();
        match meta.buckets.get(&spec.source) {
            None => Err(format!("no bucket {}", spec.source)),
            Some(b) if b.remote.is_none() => Err(format!(
                "{} is not a remote bucket: nothing to prefetch or evict",
                spec.source
            )),
            Some(_) => spec.check(),
        }
    }

    /// One object of an offline ETL job: only transformed bytes leave the source's target.
    async fn transform_one(&self, spec: &EtlJobSpec, key: &str) -> Result<u64, String> {
        if !spec.dry_run {
            return self.transform_direct(spec, key).await;
        }
        let opts = ReadOptions {
            etl: Some(spec.etl.clone()),
            ..Default::default()
        };
        let (mut resp, owner_url) = self
            .read_key(&spec.sources.source, key, &opts, false)
            .await?;
        if !resp.status().is_success() {
            let err =
                crate::s3::from_client(aisle_cluster::client::status_error(owner_url, resp).await);
            return Err(format!(
                "{}: {}",
                err.code().as_str(),
                err.message().unwrap_or("")
            ));
        }
        let meta = crate::proxy::Record::take(&mut resp);
        let body = aisle_cluster::client::data_stream(resp.into_body());
        if spec.dry_run {
            let mut n = 0u64;
            futures::pin_mut!(body);
            while let Some(c) = body.next().await {
                n += c.map_err(|e| e.to_string())?.len() as u64;
            }
            return Ok(n);
        }
        let (upload, failure) = verified_body(
            StreamingBlob::wrap(body),
            Expect {
                len: None,
                max_len: MAX_PUT_SIZE,
                content_md5: None,
                checksum: None,
            },
        );
        let attrs = ObjectAttrs {
            content_type: meta.and_then(|m| m.attrs.content_type),
            ..Default::default()
        };
        let out = self
            .targets
            .write_plan(&spec.output_bucket, key)
            .map_err(|e| e.to_string())?;
        let oq = ObjectQuery {
            version_id: None,
            bucket: spec.output_bucket.clone(),
            key: key.to_string(),
            part: None,
        };
        let written = self
            .targets
            .put_object(&out, &oq, &attrs, upload)
            .await
            .map_err(|e| {
                failure
                    .take()
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| e.to_string())
            })?;
        Ok(written.size)
    }

    /// One object of an offline ETL job, by direct put: the source's holder transforms it and
    /// writes the output to the output's owner; this gateway only plans the write.
    async fn transform_direct(&self, spec: &EtlJobSpec, key: &str) -> Result<u64, String> {
        let source = ObjectQuery {
            version_id: None,
            bucket: spec.sources.source.clone(),
            key: key.to_string(),
            part: None,
        };
        let output = ObjectQuery {
            version_id: None,
            bucket: spec.output_bucket.clone(),
            key: key.to_string(),
            part: None,
        };
        let plan = self
            .targets
            .write_plan(&spec.output_bucket, key)
            .map_err(|e| e.to_string())?;
        let written = self
            .targets
            .etl_put(&source, &spec.etl, &plan, &output)
            .await
            .map_err(|e| {
                let err = crate::s3::from_client(e);
                format!("{}: {}", err.code().as_str(), err.message().unwrap_or(""))
            })?;
        Ok(written.size)
    }

    /// Transform every object of an alias's source into the targets' caches up front
    /// (`aisle etl bind --materialize`), a bounded number at a time.
    pub fn start_materialize(self: &Arc<Self>, source: String, etl: EtlSelection) -> JobView {
        self.launch("materialize", move |me, job| async move {
            let keys = me.list_keys(&source, "", false).await?;
            let each = |key: String| {
                let (me, etl, source) = (me.clone(), etl.clone(), source.clone());
                async move {
                    let r = me.materialize_one(&source, etl, &key).await;
                    (key, r)
                }
            };
            me.for_each_key(&job, keys, 8, each).await;
            Ok(())
        })
    }

    /// Run `each` over `keys`, `concurrency` at a time, recording progress and per-key errors,
    /// until done or aborted.
    async fn for_each_key<F, Fut>(&self, job: &Job, keys: Vec<String>, concurrency: usize, each: F)
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = (String, Result<u64, String>)>,
    {
        Self::note(job, |v| v.total = keys.len() as u64);
        let work = futures::stream::iter(keys)
            .take_while(|_| futures::future::ready(!job.cancel.is_cancelled()))
            .map(each)
            .buffer_unordered(concurrency);
        futures::pin_mut!(work);
        let kind = crate::metrics::Kind {
            kind: job.view.lock().expect("job lock").kind.clone(),
        };
        let metrics = self.targets.metrics();
        while let Some((key, r)) = work.next().await {
            metrics.job_objects.get_or_create(&kind).inc();
            if r.is_err() {
                metrics.job_errors.get_or_create(&kind).inc();
            }
            Self::note(job, |v| {
                v.done += 1;
                match r {
                    Ok(n) => v.bytes += n,
                    Err(e) if v.errors.len() < 100 => v.errors.push(format!("{key}: {e}")),
                    Err(_) => {}
                }
            });
        }
    }

    /// GET or HEAD `bucket/key` from its owning target; any status comes back as is, with the
    /// owner's URL for error reports.
    async fn read_key(
        &self,
        bucket: &str,
        key: &str,
        opts: &ReadOptions,
        head: bool,
    ) -> Result<(http::Response<aisle_cluster::client::ReadBody>, String), String> {
        let q = ObjectQuery {
            version_id: None,
            bucket: bucket.to_string(),
            key: key.to_string(),
            part: None,
        };
        let (resp, owner) = self
            .targets
            .read(&q, opts, head)
            .await
            .map_err(|e| e.to_string())?;
        Ok((resp, owner.url))
    }

    /// Transform one object into its target's cache (a HEAD through the pipeline).
    async fn materialize_one(
        &self,
        source: &str,
        etl: EtlSelection,
        key: &str,
    ) -> Result<u64, String> {
        let opts = ReadOptions {
            etl: Some(etl),
            ..Default::default()
        };
        let (resp, _) = self.read_key(source, key, &opts, true).await?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        Ok(content_length(&resp).unwrap_or(0))
    }

    async fn keys(&self, spec: &Sources) -> Result<Vec<String>, String> {
        if let Some(l) = &spec.list {
            return Ok(l.clone());
        }
        if let Some(t) = &spec.template {
            return expand_template(t, MAX_JOB_OBJECTS);
        }
        self.list_keys(&spec.source, spec.prefix.as_deref().unwrap_or(""), false)
            .await
    }

    /// Every key of `bucket` under `prefix`, in order: of a remote bucket, what its remote
    /// holds — or, with `cached`, what the targets hold.
    async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        cached: bool,
    ) -> Result<Vec<String>, String> {
        let remote = match self.targets.remote(bucket) {
            Some(r) if !cached => Some(r.map_err(|e| e.to_string())?),
            _ => None,
        };
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let q = ListQuery {
                versions: false,
                after_version: None,
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                delimiter: None,
                after: after.clone(),
                limit: 1000,
            };
            let page = match &remote {
                Some(r) => r.list_page(&q).await.map_err(|e| e.to_string())?,
                None => {
                    let targets = self
                        .targets
                        .listing_targets(bucket)
                        .map_err(|e| e.to_string())?;
                    let pages = futures::future::try_join_all(
                        targets.iter().map(|t| self.targets.list(t, &q)),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    merge_pages(pages, 1000)
                }
            };
            for item in &page.items {
                if let ListItem::Object(o) = item {
                    keys.push(o.key.clone());
                }
            }
            if keys.len() > MAX_JOB_OBJECTS {
                return Err(format!("more than {MAX_JOB_OBJECTS} objects"));
            }
            if !page.truncated {
                return Ok(keys);
            }
            after = page.items.last().map(|i| i.name().to_string());
        }
    }

    fn note(job: &Job, f: impl FnOnce(&mut JobView)) {
        f(&mut job.view.lock().expect("job lock"));
    }

    async fn run_shard(&self, job: &Job, spec: &ShardJobSpec) -> Result<(), String> {
        let keys = self.keys(&spec.sources).await?;
        Self::note(job, |v| v.total = keys.len() as u64);
        let mut i = 0;
        let mut index = 0u32;
        while i < keys.len() && !job.cancel.is_cancelled() {
            let name = format!("{}{index:06}.tar", spec.output_prefix);
            i = self.one_shard(job, spec, &keys, i, &name).await?;
            index += 1;
        }
        Ok(())
    }

    /// Have the owner of shard `name` pack objects from `keys[start..]` into it, fetching each
    /// from a target holding it (`T_SHARD_BUILD`); returns the index of the next object.
    async fn one_shard(
        &self,
        job: &Job,
        spec: &ShardJobSpec,
        keys: &[String],
        start: usize,
        name: &str,
    ) -> Result<usize, String> {
        /// Candidates offered to one shard (it closes at `shard_size`, usually much sooner).
        const CANDIDATES: usize = 10_000;
        let plan = self
            .targets
            .write_plan(&spec.output_bucket, name)
            .map_err(|e| e.to_string())?;
        let request = aisle_cluster::proto::ShardBuildRequest {
            source_bucket: spec.sources.source.clone(),
            keys: keys[start..keys.len().min(start + CANDIDATES)].to_vec(),
            shard_size: spec.shard_size,
            output: ObjectQuery {
                version_id: None,
                bucket: spec.output_bucket.clone(),
                key: name.to_string(),
                part: None,
            },
            write: plan.opts.clone(),
        };
        let report = self
            .targets
            .build_shard(&plan, &request)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        Self::note(job, |v| {
            v.done += report.consumed as u64;
            v.bytes += report.bytes;
            for e in report.errors {
                if v.errors.len() < 100 {
                    v.errors.push(e);
                }
            }
            if report.packed > 0 {
                v.shards.push(name.to_string());
            }
        });
        Ok(start + report.consumed.max(1))
    }
}

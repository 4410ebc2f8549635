//! Pipelines: names resolved against a registry, arguments split per stage, stages chained.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::{ByteStream, EtlError, Source, Transformer};

/// Most stages in one pipeline.
pub const MAX_STAGES: usize = 8;
/// Longest argument string, in bytes.
pub const MAX_ARGS_LEN: usize = 4096;

/// Is `name` a valid transform name: `[a-z0-9][a-z0-9-]{1,31}`.
///
/// ```
/// use aisle_etl_runtime::valid_name;
/// assert!(valid_name("resize"));
/// assert!(valid_name("center-crop"));
/// assert!(!valid_name("Resize") && !valid_name("-x") && !valid_name("a"));
/// ```
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=32).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The arguments one stage sees.
///
/// The client's argument string is passed to every stage. By convention for built-ins it is a
/// JSON object; when that object has a key equal to the stage's name, the stage reads that
/// key's value, otherwise the whole object.
#[derive(Debug, Clone, Default)]
pub struct StageArgs {
    /// The client's string, verbatim.
    pub raw: Option<String>,
    /// The JSON value this stage reads, if the string is JSON.
    pub json: Option<Value>,
    /// The id of the client request this run serves, passed on to external transformers
    /// (`x-aisle-request-id`) so their work shows up under it. Not part of what is computed.
    pub request_id: Option<String>,
}

impl StageArgs {
    /// Split `raw` for `stage`.
    ///
    /// ```
    /// use aisle_etl_runtime::StageArgs;
    /// let a = StageArgs::for_stage("resize", Some(r#"{"resize":{"w":64},"jpeg":{"q":80}}"#));
    /// assert_eq!(a.json.unwrap()["w"], 64);
    /// let b = StageArgs::for_stage("resize", Some(r#"{"w":32}"#));
    /// assert_eq!(b.json.unwrap()["w"], 32);
    /// ```
    pub fn for_stage(stage: &str, raw: Option<&str>) -> StageArgs {
        let json = raw
            .and_then(|r| serde_json::from_str::<Value>(r).ok())
            .map(|v| match v {
                Value::Object(ref m) if m.contains_key(stage) => m[stage].clone(),
                other => other,
            });
        StageArgs {
            raw: raw.map(str::to_string),
            json,
            request_id: None,
        }
    }

    /// A numeric field of the JSON arguments.
    pub fn u64(&self, stage: &str, field: &str) -> Result<Option<u64>, EtlError> {
        match self.json.as_ref().and_then(|v| v.get(field)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| EtlError::BadArgs {
                stage: stage.into(),
                message: format!("{field} must be a non-negative integer"),
            }),
        }
    }

    /// A string field of the JSON arguments.
    pub fn str(&self, stage: &str, field: &str) -> Result<Option<String>, EtlError> {
        match self.json.as_ref().and_then(|v| v.get(field)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(EtlError::BadArgs {
                stage: stage.into(),
                message: format!("{field} must be a string"),
            }),
        }
    }
}

/// Transforms by name: the built-ins plus registered ones.
pub struct Registry {
    transforms: RwLock<BTreeMap<String, Arc<dyn Transformer>>>,
}

impl Registry {
    /// A registry holding every built-in.
    pub fn with_builtins() -> Registry {
        let map = crate::builtin::all()
            .into_iter()
            .map(|t| (t.name().to_string(), t))
            .collect();
        Registry {
            transforms: RwLock::new(map),
        }
    }

    /// Add or replace a transform.
    pub fn register(&self, t: Arc<dyn Transformer>) {
        self.transforms
            .write()
            .expect("registry lock")
            .insert(t.name().to_string(), t);
    }

    /// Remove a registered transform (built-ins cannot be removed).
    pub fn unregister(&self, name: &str) {
        if !crate::builtin::is_builtin(name) {
            self.transforms.write().expect("registry lock").remove(name);
        }
    }

    /// Names known.
    pub fn names(&self) -> Vec<String> {
        self.transforms
            .read()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Resolve a pipeline; checks names, length, and every stage's arguments.
    pub fn resolve(&self, names: &[String], args: Option<&str>) -> Result<Pipeline, EtlError> {
        if names.is_empty() {
            return Err(EtlError::BadPipeline("the pipeline is empty".into()));
        }
        if names.len() > MAX_STAGES {
            return Err(EtlError::BadPipeline(format!(
                "a pipeline has at most {MAX_STAGES} stages, got {}",
                names.len()
            )));
        }
        if args.is_some_and(|a| a.len() > MAX_ARGS_LEN) {
            return Err(EtlError::BadPipeline(format!(
                "x-ais-etl-args is longer than {MAX_ARGS_LEN} bytes"
            )));
        }
        let map = self.transforms.read().expect("registry lock");
        let mut stages = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            let t = map
                .get(n)
                .cloned()
                .ok_or_else(|| EtlError::Unknown(n.clone()))?;
            if i > 0 && t.needs_source() {
                return Err(EtlError::BadPipeline(format!(
                    "{n} reads the stored object itself, so it can only be a pipeline's first stage"
                )));
            }
            let a = StageArgs::for_stage(n, args);
            t.check_args(&a)?;
            stages.push((t, a));
        }
        Ok(Pipeline {
            stages,
            args: args.map(str::to_string),
        })
    }
}

/// A resolved pipeline.
pub struct Pipeline {
    stages: Vec<(Arc<dyn Transformer>, StageArgs)>,
    args: Option<String>,
}

impl Pipeline {
    /// Stage names, comma-separated (for `x-ais-etl-applied`).
    pub fn applied(&self) -> String {
        self.stages
            .iter()
            .map(|(t, _)| t.name())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when every stage is deterministic.
    pub fn deterministic(&self) -> bool {
        self.stages.iter().all(|(t, _)| t.deterministic())
    }

    /// Identifies the transformation: names, versions and arguments (for caches and ETags).
    pub fn fingerprint(&self) -> String {
        let mut s = String::new();
        for (t, _) in &self.stages {
            s.push_str(t.name());
            s.push('@');
            s.push_str(&t.version());
            s.push('|');
        }
        s.push_str(self.args.as_deref().unwrap_or(""));
        s
    }

    /// Output content type given the source's.
    pub fn content_type(&self, source: Option<&str>) -> Option<String> {
        let mut ct = source.map(str::to_string);
        for (t, _) in &self.stages {
            ct = t.content_type(ct.as_deref());
        }
        ct
    }

    /// Run for the client request `id` (see [`StageArgs::request_id`]).
    pub fn for_request(mut self, id: Option<&str>) -> Pipeline {
        for (_, a) in &mut self.stages {
            a.request_id = id.map(str::to_string);
        }
        self
    }

    /// Run every stage, in order, over the object at `path` (`bucket/key`).
    pub async fn run(&self, input: ByteStream, path: &str) -> Result<ByteStream, EtlError> {
        self.run_from(input, &Source::default(), path).await
    }

    /// [`Pipeline::run`], the first stage told what `source` its input is.
    pub async fn run_from(
        &self,
        input: ByteStream,
        source: &Source,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        let mut s = input;
        for (i, (t, a)) in self.stages.iter().enumerate() {
            s = if i == 0 {
                t.run_source(s, source, a, path).await?
            } else {
                t.run(s, a, path).await?
            };
        }
        Ok(s)
    }
}

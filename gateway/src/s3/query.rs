//! A request's query string, decoded once for the parameters aisle reads beyond s3s's own
//! (transform and shard selection, shard appends). Names and values are percent-decoded as
//! S3 does (`+` is a space); nothing is copied unless decoding changes it.

use std::borrow::Cow;

use http::Uri;

/// The decoded `name=value` pairs of a query string, in order.
///
/// ```
/// use aisle_gateway::s3::query::Query;
/// let uri: http::Uri = "/b/k?x-ais-etl=md5&archpath=a%2Fb.jpg&flag".parse().unwrap();
/// let q = Query::of(&uri);
/// assert_eq!(q.first("archpath"), Some("a/b.jpg"));
/// assert!(q.has("flag"));
/// assert_eq!(q.all(&["x-ais-etl", "etl_name"]).collect::<Vec<_>>(), ["md5"]);
/// ```
pub struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Query<'a> {
    /// The pairs of `uri`'s query (none without one).
    pub fn of(uri: &'a Uri) -> Self {
        Query(
            uri.query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default(),
        )
    }

    /// The value of the first parameter called `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| &**v)
    }

    /// The values of every parameter called one of `names`, in order.
    pub fn all<'s>(&'s self, names: &'s [&str]) -> impl Iterator<Item = &'s str> + 's {
        self.0
            .iter()
            .filter(|(k, _)| names.contains(&&**k))
            .map(|(_, v)| &**v)
    }

    /// Whether a parameter called `name` is there.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

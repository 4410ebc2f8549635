use regex::Regex;

use crate::ShardError;

/// How `archregx` matches member names (AIStore's `archmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    /// A regular expression anywhere in the name.
    Regexp,
    /// Name starts with the expression.
    Prefix,
    /// Name ends with it.
    Suffix,
    /// Name contains it.
    Substr,
    /// The WebDataset sample key (name up to the first `.` of its last component) equals it.
    Wdskey,
}

impl MatchMode {
    /// From the `archmode` parameter (default: regexp).
    pub fn parse(s: Option<&str>) -> Result<MatchMode, ShardError> {
        Ok(match s.unwrap_or("regexp") {
            "regexp" => MatchMode::Regexp,
            "prefix" => MatchMode::Prefix,
            "suffix" => MatchMode::Suffix,
            "substr" => MatchMode::Substr,
            "wdskey" => MatchMode::Wdskey,
            other => {
                return Err(ShardError::BadSelector(format!(
                    "archmode {other:?} is not one of regexp, prefix, suffix, substr, wdskey"
                )));
            }
        })
    }
}

/// Split a member name into WebDataset (key, extension).
///
/// ```
/// use aisle_shard::wds_split;
/// assert_eq!(wds_split("train/000123.seg.png"), ("train/000123", "seg.png"));
/// assert_eq!(wds_split("noext"), ("noext", ""));
/// ```
pub fn wds_split(name: &str) -> (&str, &str) {
    let base_start = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[base_start..].find('.') {
        Some(dot) => (&name[..base_start + dot], &name[base_start + dot + 1..]),
        None => (name, ""),
    }
}

/// A compiled `archregx` + `archmode`.
#[derive(Debug, Clone)]
pub struct Selector {
    expr: String,
    mode: MatchMode,
    re: Option<Regex>,
}

impl Selector {
    /// Compile; a regular expression is size-limited (and the regex crate matches in linear time).
    pub fn new(expr: &str, mode: MatchMode) -> Result<Selector, ShardError> {
        let re = match mode {
            MatchMode::Regexp => Some(
                regex::RegexBuilder::new(expr)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ShardError::BadSelector(e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Selector {
            expr: expr.to_string(),
            mode,
            re,
        })
    }

    /// Does `name` match?
    pub fn matches(&self, name: &str) -> bool {
        match self.mode {
            MatchMode::Regexp => self.re.as_ref().is_some_and(|r| r.is_match(name)),
            MatchMode::Prefix => name.starts_with(&self.expr),
            MatchMode::Suffix => name.ends_with(&self.expr),
            MatchMode::Substr => name.contains(&self.expr),
            MatchMode::Wdskey => wds_split(name).0 == self.expr,
        }
    }
}

//! Log lines, as text or JSON, each stamped with the id of the request it is about.
//!
//! The id comes from the request's task ([`aisle_cluster::trace`]), not from a tracing span:
//! a span per request costs a few percent of a small GET (span creation, field formatting,
//! enter/exit on every poll), a task-local costs next to nothing, and only lines actually
//! written look it up.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Install the global subscriber: `AISLE_LOG` filter (default `info`), `text` or `json`.
pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AISLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (its disk is full) is lost, not fatal: reporting
        // the failure would `eprintln!` to the same stderr, which panics — and under a fetch or
        // a write, a panic while unwinding aborts the node.
        .log_internal_errors(false);
    if format == "json" {
        builder.event_format(Json).init();
    } else {
        builder
            .event_format(WithRequestId(
                tracing_subscriber::fmt::format().with_target(false),
            ))
            .init();
    }
}

/// The default text format, with `request_id=…` after the level when there is one.
struct WithRequestId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if let Some(id) = aisle_cluster::trace::current() {
            write!(writer, "request_id={id} ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// One JSON object per line: `timestamp`, `level`, `message`, the event's fields,
/// `request_id` when the line is about a request, and `spans` (names and fields) if any.
struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut obj = serde_json::Map::new();
        let now = time::OffsetDateTime::now_utc();
        obj.insert(
            "timestamp".into(),
            now.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .into(),
        );
        obj.insert("level".into(), event.metadata().level().as_str().into());
        if let Some(id) = aisle_cluster::trace::current() {
            obj.insert("request_id".into(), id.as_ref().into());
        }
        event.record(&mut JsonFields(&mut obj));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<FormattedFields<N>>()
                        .map(|f| f.fields.as_str().to_string())
                        .unwrap_or_default();
                    serde_json::json!({"name": span.name(), "fields": fields})
                })
                .collect();
            if !spans.is_empty() {
                obj.insert("spans".into(), spans.into());
            }
        }
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

//! Log output of the binary: colour only on a terminal, the default filter, and
//! the line format of `local-cluster`, where every line names the node that
//! logged it.
//!
//! `local-cluster` runs each node's work on threads that stay in a span named
//! [`NODE_SPAN`] with the node's id (`crate::node` enters it on the node's HTTP
//! worker threads too); [`NodeTags`] keeps that id with the span, and
//! [`NodeLineFormat`] prints it on each line: `12:57:24.092  INFO node1  message`.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// The name of the span that a node's threads log in, in `local-cluster`.
pub const NODE_SPAN: &str = "node";

/// Colour on stderr only when it is a terminal and `NO_COLOR` is not set to
/// something (<https://no-color.org>): a file, a pipe or `docker logs` gets plain
/// text.
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `RUST_LOG` when set, else `level`. At the default level `info`, actix's own
/// start-up lines (workers started, runtime found, service started: six per
/// node) are left out: the node's own "node ready" line names its addresses.
pub fn filter(level: &str) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_env("RUST_LOG") {
        return filter;
    }
    if level == "info" {
        EnvFilter::new("info,actix_server=warn")
    } else {
        EnvFilter::new(level)
    }
}

/// The node id of a [`NODE_SPAN`] span, kept in the span's extensions.
struct NodeTag(String);

/// Keeps the `id` field of every [`NODE_SPAN`] span in the span's extensions.
pub struct NodeTags;

impl<S> Layer<S> for NodeTags
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != NODE_SPAN {
            return;
        }
        struct IdField(Option<String>);
        impl Visit for IdField {
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "id" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                if field.name() == "id" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut field = IdField(None);
        attrs.record(&mut field);
        if let (Some(tag), Some(span)) = (field.0, ctx.span(id)) {
            span.extensions_mut().insert(NodeTag(tag));
        }
    }
}

/// `HH:MM:SS.mmm LEVEL node message fields`: the time of day in UTC, the node
/// from the enclosing [`NODE_SPAN`] span (`-` for a line outside every node), and
/// the module for a library's line.
pub struct NodeLineFormat;

impl<S, N> FormatEvent<S, N> for NodeLineFormat
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
        let ansi = writer.has_ansi_escapes();
        let paint = |code: &str, text: &str| {
            if ansi {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_owned()
            }
        };
        // 2026-11-30T12:57:24.092Z → 12:57:24.092
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let time = now.get(11..23).unwrap_or(&now);
        let level = *event.metadata().level();
        let colour = match level {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        };
        let node = ctx
            .event_scope()
            .and_then(|scope| {
                scope
                    .from_root()
                    .find_map(|span| span.extensions().get::<NodeTag>().map(|t| t.0.clone()))
            })
            .unwrap_or_else(|| "-".to_owned());
        write!(
            writer,
            "{} {} {} ",
            paint("2", time),
            paint(colour, &format!("{level:>5}")),
            paint("1", &format!("{node:<6}")),
        )?;
        // Lines of the libraries (gossip, HTTP server) say whose they are.
        let target = event.metadata().target();
        if !target.starts_with("sessionmesh") {
            write!(writer, "{} ", paint("2", &format!("{target}:")))?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

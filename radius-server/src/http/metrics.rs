//! `GET /metrics`: Prometheus text exposition format 0.0.4, written by hand.
//!
//! | metric | labels |
//! | --- | --- |
//! | `portcullis_radius_received_total` | |
//! | `portcullis_radius_requests_total` | `client`, `code` (access_request, status_server), `result` (accept, reject, challenge) |
//! | `portcullis_radius_cached_replies_total` | |
//! | `portcullis_radius_accounting_responses_total` | |
//! | `portcullis_radius_dropped_total` | `reason` (every packet class, unknown_client, duplicate_in_progress, shed_overload; cache_evicted_source_limit and cache_evicted_cache_limit count response-cache entries evicted, not datagrams) |
//! | `portcullis_radius_in_flight` | |
//! | `portcullis_radius_held` | `client`: requests held now waiting for a push decision |
//! | `portcullis_radius_held_over_limit_total` | `client`: push waits not held (max_held reached) |
//! | `portcullis_radius_request_duration_seconds` | histogram |
//! | `portcullis_config_reloads_total` | `result` (ok, error) |

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::HttpState;
use crate::radius::metrics::{Answered, LATENCY_BUCKETS};
use crate::radius::server::RadiusContext;

/// The routes of this file.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state.radius),
    )
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn render(ctx: &RadiusContext) -> String {
    let m = &ctx.metrics;
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = write_all(&mut out, ctx, m);
    out
}

fn write_all(
    out: &mut String,
    ctx: &RadiusContext,
    m: &crate::radius::metrics::Metrics,
) -> std::fmt::Result {
    writeln!(
        out,
        "# HELP portcullis_radius_received_total RADIUS datagrams received."
    )?;
    writeln!(out, "# TYPE portcullis_radius_received_total counter")?;
    writeln!(
        out,
        "portcullis_radius_received_total {}",
        m.received.load(Relaxed)
    )?;

    writeln!(
        out,
        "# HELP portcullis_radius_requests_total RADIUS requests answered, by client, request code and result."
    )?;
    writeln!(out, "# TYPE portcullis_radius_requests_total counter")?;
    let table = ctx.clients();
    for c in table.clients() {
        let name = label(&c.config.name);
        for a in Answered::ALL {
            writeln!(
                out,
                "portcullis_radius_requests_total{{client=\"{name}\",code=\"access_request\",result=\"{}\"}} {}",
                a.as_str(),
                c.counters.access(a)
            )?;
        }
        writeln!(
            out,
            "portcullis_radius_requests_total{{client=\"{name}\",code=\"status_server\",result=\"accept\"}} {}",
            c.counters.status_server()
        )?;
    }

    writeln!(
        out,
        "# HELP portcullis_radius_held Requests held now waiting for a push decision, by client."
    )?;
    writeln!(out, "# TYPE portcullis_radius_held gauge")?;
    for c in table.clients() {
        let name = label(&c.config.name);
        writeln!(
            out,
            "portcullis_radius_held{{client=\"{name}\"}} {}",
            c.counters.held()
        )?;
    }
    writeln!(
        out,
        "# HELP portcullis_radius_held_over_limit_total Push waits answered with a challenge because the client's max_held requests were held."
    )?;
    writeln!(
        out,
        "# TYPE portcullis_radius_held_over_limit_total counter"
    )?;
    for c in table.clients() {
        let name = label(&c.config.name);
        writeln!(
            out,
            "portcullis_radius_held_over_limit_total{{client=\"{name}\"}} {}",
            c.counters.held_over_limit()
        )?;
    }

    writeln!(
        out,
        "# HELP portcullis_radius_cached_replies_total Retransmissions answered from the response cache."
    )?;
    writeln!(out, "# TYPE portcullis_radius_cached_replies_total counter")?;
    writeln!(
        out,
        "portcullis_radius_cached_replies_total {}",
        m.cached_replies.load(Relaxed)
    )?;

    writeln!(
        out,
        "# HELP portcullis_radius_accounting_responses_total Accounting-Requests acknowledged (nothing is recorded)."
    )?;
    writeln!(
        out,
        "# TYPE portcullis_radius_accounting_responses_total counter"
    )?;
    writeln!(
        out,
        "portcullis_radius_accounting_responses_total {}",
        m.accounting_responses.load(Relaxed)
    )?;

    writeln!(
        out,
        "# HELP portcullis_radius_dropped_total RADIUS datagrams dropped without an answer, by reason (cache_evicted_*: response-cache entries evicted at a bound)."
    )?;
    writeln!(out, "# TYPE portcullis_radius_dropped_total counter")?;
    for (reason, n) in m.drop_counts() {
        writeln!(
            out,
            "portcullis_radius_dropped_total{{reason=\"{reason}\"}} {n}"
        )?;
    }

    writeln!(
        out,
        "# HELP portcullis_radius_in_flight RADIUS requests being processed."
    )?;
    writeln!(out, "# TYPE portcullis_radius_in_flight gauge")?;
    writeln!(out, "portcullis_radius_in_flight {}", ctx.in_flight())?;

    if let Some(b) = ctx.batch_counts() {
        for (name, help, n) in [
            (
                "portcullis_login_batches_total",
                "Batches of code-only logins committed (one transaction each).",
                &b.batches,
            ),
            (
                "portcullis_login_batched_total",
                "Code-only logins decided in committed batches.",
                &b.decided,
            ),
            (
                "portcullis_login_batch_declined_total",
                "Code-only logins handed back by the batch: they needed the network or a password hash.",
                &b.declined,
            ),
            (
                "portcullis_login_batches_redone_total",
                "Batches decided a second time, each login undoable alone, because one of their logins failed or was handed back.",
                &b.redone,
            ),
        ] {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} counter")?;
            writeln!(out, "{name} {}", n.load(Relaxed))?;
        }
    }

    writeln!(
        out,
        "# HELP portcullis_radius_request_duration_seconds Time from receiving a request to sending its reply."
    )?;
    writeln!(
        out,
        "# TYPE portcullis_radius_request_duration_seconds histogram"
    )?;
    let (cumulative, count, sum) = m.latency.snapshot();
    for (bound, n) in LATENCY_BUCKETS.iter().zip(&cumulative) {
        writeln!(
            out,
            "portcullis_radius_request_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        )?;
    }
    writeln!(
        out,
        "portcullis_radius_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        cumulative.last().copied().unwrap_or(0)
    )?;
    writeln!(out, "portcullis_radius_request_duration_seconds_sum {sum}")?;
    writeln!(
        out,
        "portcullis_radius_request_duration_seconds_count {count}"
    )?;

    writeln!(
        out,
        "# HELP portcullis_config_reloads_total Config reloads on SIGHUP, by result (error: a part of it, the certificate or the file, was not applied)."
    )?;
    writeln!(out, "# TYPE portcullis_config_reloads_total counter")?;
    writeln!(
        out,
        "portcullis_config_reloads_total{{result=\"ok\"}} {}",
        m.reloads_ok.load(Relaxed)
    )?;
    writeln!(
        out,
        "portcullis_config_reloads_total{{result=\"error\"}} {}",
        m.reloads_failed.load(Relaxed)
    )?;
    Ok(())
}

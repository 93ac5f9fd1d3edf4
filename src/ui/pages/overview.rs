//! The overview: the busiest and the failing functions, calls, the queue and the browser
//! pool over the last hour or day, as charts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Html;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::function::FunctionName;
use crate::server::AppState;
use crate::store::CallPoint;
use crate::telemetry::samples::Sample;
use crate::ui::charts::{self, CallSeries, Range, Window, MAX_POINTS};
use crate::ui::{render, Session};

use super::Ui;

/// Functions listed as the busiest.
const BUSIEST: usize = 8;

#[derive(Deserialize, Default)]
pub struct RangeQuery {
    #[serde(default)]
    pub(super) range: Range,
}

/// The calls of `function` (or of all) in `window`, bucketed.
pub(super) async fn call_series(
    state: &AppState,
    function: Option<&FunctionName>,
    window: Window,
) -> Ui<(CallSeries, Vec<CallPoint>)> {
    let calls = state
        .registry
        .store
        .calls_since(function, window.start, MAX_POINTS)
        .await?;
    let mut series = CallSeries::new(window);
    for call in &calls {
        series.add(call);
    }
    Ok((series, calls))
}

/// Each function's calls in `window`, bucketed, by name.
pub(super) fn by_function(window: Window, calls: &[CallPoint]) -> BTreeMap<&str, CallSeries> {
    let mut each: BTreeMap<&str, CallSeries> = BTreeMap::new();
    for call in calls {
        each.entry(call.function.as_str())
            .or_insert_with(|| CallSeries::new(window))
            .add(call);
    }
    each
}

/// What a table row says of a function's calls in a window.
pub(super) fn call_summary(series: &CallSeries) -> Value {
    let calls = series.calls();
    let errors = series.errors();
    let ms = |p| {
        series
            .percentile(p)
            .map(|v| charts::Unit::Millis.format(v))
            .unwrap_or_default()
    };
    json!({
        "calls": calls,
        "errors": errors,
        "error_rate": if calls == 0 { String::new() } else { charts::Unit::Percent.format(100.0 * errors as f64 / calls as f64) },
        "p50": ms(50.0),
        "p95": ms(95.0),
        "spark": series.spark(),
    })
}

/// `GET /ui/overview`: what the gateway did over the last hour (or `?range=day`).
pub async fn overview(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<RangeQuery>,
) -> Ui<Html<String>> {
    let window = Window::new(query.range, Utc::now());
    let (all, calls) = call_series(&state, None, window).await?;
    let each = by_function(window, &calls);
    let mut busiest: Vec<(&str, &CallSeries)> = each.iter().map(|(n, s)| (*n, s)).collect();
    busiest.sort_by_key(|(name, s)| (std::cmp::Reverse(s.calls()), *name));
    let mut failing: Vec<(&str, &CallSeries)> = busiest
        .iter()
        .copied()
        .filter(|(_, s)| s.errors() > 0)
        .collect();
    failing.sort_by(|(an, a), (bn, b)| {
        let rate = |s: &CallSeries| s.errors() as f64 / s.calls() as f64;
        rate(b).total_cmp(&rate(a)).then(an.cmp(bn))
    });
    let row = |(name, series): &(&str, &CallSeries)| {
        let mut row = call_summary(series);
        row["name"] = (*name).into();
        row
    };

    let mut samples = state.samples.since(window.start);
    if let Some(now) = Sample::now(&state).await {
        samples.push(now);
    }
    let latest = samples.last().copied();
    let queue = charts::gauge_chart(
        "chart-queue",
        "Async queue",
        &window,
        &samples,
        &[
            ("waiting or running", "s-calls", |s| s.queue_depth as f64),
            ("dead letters", "s-bad", |s| s.dead_letters as f64),
        ],
    );
    let pool = state.browser.status();
    let browsers = charts::gauge_chart(
        "chart-browsers",
        "Browser pool",
        &window,
        &samples,
        &[
            ("in use", "s-calls", |s| s.browsers_in_use as f64),
            ("warm", "s-warm", |s| s.browsers_warm as f64),
            ("waiting", "s-bad", |s| s.browsers_queued as f64),
        ],
    );
    render(
        "overview.html",
        &session,
        json!({
            "nav": "overview",
            "range": query.range,
            "totals": call_summary(&all),
            "rate": all.rate_chart("chart-rate"),
            "latency": all.latency_chart("chart-latency"),
            "busiest": busiest.iter().take(BUSIEST).map(row).collect::<Vec<_>>(),
            "failing": failing.iter().map(row).collect::<Vec<_>>(),
            "queue": queue,
            "depth": latest.map(|s| s.queue_depth),
            "dead": latest.map(|s| s.dead_letters),
            "browsers": browsers,
            "pool": { "enabled": pool.enabled, "reason": pool.reason, "in_use": pool.in_use, "warm": pool.warm, "max": pool.max_sessions },
        }),
    )
}

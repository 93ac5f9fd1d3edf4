//! Recording on the hot paths: a function name, status code and duration, or a channel
//! request's outcome come in; counter and histogram updates go out. Handles are looked up
//! once per distinct label set and kept, so a call costs a short uncontended lock and a few
//! atomic adds, with no allocation after the first call of each (function, code).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::{
    CHANNEL_REQUESTS_TOTAL, GATEWAY_FUNCTIONS_SECONDS, GATEWAY_INVOCATION_STARTED,
    GATEWAY_INVOCATION_TOTAL, SCHEDULE_RUNS_TOTAL,
};
use crate::function::FunctionName;

/// The handles of one function.
struct Handles {
    started: Counter,
    /// By status code; a function answers with few distinct codes, so a short list.
    by_code: Vec<(u16, Counter, Histogram)>,
}

/// The OpenFaaS per-function metrics: calls started, calls by status code and durations.
#[derive(Default)]
pub struct FunctionMeters {
    handles: Mutex<HashMap<FunctionName, Handles>>,
}

impl FunctionMeters {
    fn with<R>(&self, name: &FunctionName, f: impl FnOnce(&mut Handles) -> R) -> R {
        let mut map = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handles) = map.get_mut(name) {
            return f(handles);
        }
        let handles = map.entry(name.clone()).or_insert_with(|| Handles {
            started: metrics::counter!(GATEWAY_INVOCATION_STARTED, "function_name" => name.to_string()),
            by_code: Vec::new(),
        });
        f(handles)
    }

    /// A call of `name` starts.
    pub fn started(&self, name: &FunctionName) {
        self.with(name, |h| h.started.increment(1));
    }

    /// A call of `name` ended with HTTP status `code` after `elapsed`.
    pub fn finished(&self, name: &FunctionName, code: u16, elapsed: Duration) {
        self.with(name, |h| {
            let entry = match h.by_code.iter().position(|(c, _, _)| *c == code) {
                Some(i) => &h.by_code[i],
                None => {
                    let code_label = code.to_string();
                    let function = name.to_string();
                    h.by_code.push((
                        code,
                        metrics::counter!(GATEWAY_INVOCATION_TOTAL, "function_name" => function.clone(), "code" => code_label.clone()),
                        metrics::histogram!(GATEWAY_FUNCTIONS_SECONDS, "function_name" => function, "code" => code_label),
                    ));
                    &h.by_code[h.by_code.len() - 1]
                }
            };
            entry.1.increment(1);
            entry.2.record(elapsed.as_secs_f64());
        });
    }
}

/// How a channel request ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelOutcome {
    /// Verified and handled.
    Accepted,
    /// Verified, but a delivery id seen before: acknowledged, nothing run.
    Duplicate,
    /// Refused (unknown route, bad signature, over a limit, ...).
    Refused,
}

impl ChannelOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ChannelOutcome::Accepted => "accepted",
            ChannelOutcome::Duplicate => "duplicate",
            ChannelOutcome::Refused => "refused",
        }
    }
}

type ChannelKey = (&'static str, ChannelOutcome, &'static str);

/// Counts one request to `channel` (`slack`, `github`, `hooks`, `alexa`). `reason` is a
/// stable name such as `signature_mismatch`, or `ok` for accepted requests.
pub fn channel_request(channel: &'static str, outcome: ChannelOutcome, reason: &'static str) {
    static HANDLES: OnceLock<Mutex<HashMap<ChannelKey, Counter>>> = OnceLock::new();
    let mut map = HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry((channel, outcome, reason))
        .or_insert_with(|| {
            metrics::counter!(CHANNEL_REQUESTS_TOTAL,
                "channel" => channel, "outcome" => outcome.as_str(), "reason" => reason)
        })
        .increment(1);
}

/// Counts one scheduled run of `function` that ended as `outcome` (`ok`, `failed`,
/// `skipped`, `cancelled`). Runs are at most one a minute per function, so no caching.
pub fn schedule_run(function: &str, outcome: &'static str) {
    metrics::counter!(SCHEDULE_RUNS_TOTAL, "function_name" => function.to_owned(), "outcome" => outcome)
        .increment(1);
}

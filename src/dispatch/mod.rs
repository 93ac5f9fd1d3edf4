//! Dispatch: a verified call for a named function comes in; it runs on the provider
//! within the function's time limit and its output goes out, with an activation record
//! and the function's invocation count updated on the way.

pub mod admission;
pub mod queue;
pub mod schedule;
pub mod story;
pub mod trigger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;

use crate::error::provider_status;
use crate::function::FunctionName;
use crate::provider::{Invocation, Output, Provider, ProviderError};
use crate::store::story::Later;
use crate::store::{Activation, Store};
use crate::telemetry::meters::FunctionMeters;

pub use story::Redactor;
pub use trigger::Trigger;

/// Runs calls and keeps their records.
pub struct Dispatcher {
    provider: Arc<dyn Provider>,
    store: Store,
    counts: Mutex<HashMap<FunctionName, u64>>,
    /// The browser pool, whose leases end with their call.
    browser: std::sync::OnceLock<crate::browser::BrowserPool>,
    /// The OpenFaaS `gateway_*` metrics of each function.
    meters: FunctionMeters,
    /// What each function's stories must not show: its secrets' values.
    redactors: Mutex<HashMap<FunctionName, Arc<Redactor>>>,
    /// The cap of each body kept in a story; 0 keeps no story.
    max_body: AtomicUsize,
    /// Which successful calls keep their story.
    story_rate: story::StoryRate,
}

impl Dispatcher {
    /// A dispatcher whose counts start from the activations already stored.
    pub async fn new(
        provider: Arc<dyn Provider>,
        store: Store,
    ) -> Result<Self, crate::store::StoreError> {
        let counts = store
            .activation_counts()
            .await?
            .into_iter()
            .filter_map(|(name, n)| name.parse().ok().map(|name| (name, n)))
            .collect();
        Ok(Dispatcher {
            provider,
            store,
            counts: Mutex::new(counts),
            browser: std::sync::OnceLock::new(),
            meters: FunctionMeters::default(),
            redactors: Mutex::new(HashMap::new()),
            max_body: AtomicUsize::new(story::DEFAULT_MAX_BODY),
            story_rate: story::StoryRate::default(),
        })
    }

    /// Keeps at most `max` bytes of each request and answer body in an activation's
    /// story; 0 keeps no story at all.
    pub fn set_max_body(&self, max: usize) {
        self.max_body.store(max, Ordering::Relaxed);
    }

    /// At most `per_second` successful calls of each function keep their story (`None`:
    /// every call); failed calls, replays and the UI's calls always do.
    pub fn set_story_rate(&self, per_second: Option<u32>) {
        self.story_rate.set(per_second);
    }

    /// The secret values `name` was deployed with, hidden from its stories.
    pub fn set_secrets(&self, name: &FunctionName, values: impl IntoIterator<Item = Vec<u8>>) {
        let mut redactors = self.redactors.lock().unwrap_or_else(|e| e.into_inner());
        let redactor = match redactors.get(name) {
            Some(before) => before.rotated(values),
            None => Redactor::new(values),
        };
        redactors.insert(name.clone(), Arc::new(redactor));
    }

    fn redactor(&self, name: &FunctionName) -> Arc<Redactor> {
        let redactors = self.redactors.lock().unwrap_or_else(|e| e.into_inner());
        redactors.get(name).cloned().unwrap_or_default()
    }

    /// Ends browser leases with their calls, and keeps the screenshot of a failed one.
    pub fn set_browser(&self, pool: crate::browser::BrowserPool) {
        let _ = self.browser.set(pool);
    }

    /// Runs one call synchronously, started by `trigger`.
    pub async fn invoke(
        &self,
        name: &FunctionName,
        trigger: Trigger,
        call: Invocation,
    ) -> Result<Output, ProviderError> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let call_id = call.call_id.clone();
        let max_body = self.max_body.load(Ordering::Relaxed);
        // What the story needs of the call, kept only when stories are.
        let told = (max_body > 0).then(|| (call.clone(), self.provider.logs().mark()));
        self.meters.started(name);
        let result = self.provider.invoke(name, call).await;
        let duration = clock.elapsed();
        let (status, error) = match &result {
            Ok(output) => (output.status.as_u16(), output.error.clone()),
            Err(ProviderError::NotFound(_)) => return result,
            Err(e) => (provider_status(e).as_u16(), Some(e.to_string())),
        };
        // The error holds the end of the function's stderr, which may hold its secrets.
        let error = error.map(|e| self.redactor(name).text(&e));
        if let Some(pool) = self.browser.get() {
            let failed = !(200..300).contains(&status) || error.is_some();
            if let Some(shot) = pool.finish_call(&call_id, failed).await {
                tracing::info!(call_id, function = %name, url = %shot.url, "kept the failed call's last page");
                if let Err(e) = self
                    .store
                    .put_screenshot(&call_id, &shot.url, shot.png)
                    .await
                {
                    tracing::error!(call_id, error = %e, "cannot keep the failed call's screenshot");
                }
            }
        }
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            match counts.get_mut(name) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(name.clone(), 1);
                }
            }
        }
        self.meters.finished(name, status, duration);
        tracing::info!(
            call_id,
            function = %name,
            trigger = trigger.as_str(),
            status,
            duration_ms = duration.as_secs_f64() * 1000.0,
            "invoked"
        );
        // Every failed call is told; of those that went well, a sample under load.
        let failed = status >= 400 || error.is_some();
        let told = told.filter(|_| {
            failed
                || matches!(trigger, Trigger::Replay | Trigger::Ui)
                || self.story_rate.allow(name, Instant::now())
        });
        let story = told.map(|(call, start)| {
            let redactor = self.redactor(name);
            let answer = result.as_ref().ok();
            let mut story = redactor.story(&call, answer, max_body);
            let hub = self.provider.logs().clone();
            let lines = story::CallLines {
                end: hub.mark(),
                hub,
                name: name.clone(),
                call_id: call.call_id,
                instance: answer.and_then(|a| a.instance.clone()),
                start,
                max_bytes: max_body,
            };
            if lines.complete() {
                lines.tell(&redactor, &mut story);
                (story, None)
            } else {
                let later = Later {
                    ready_at: Instant::now() + story::SETTLE,
                    finish: Box::new(move |story| lines.tell(&redactor, story)),
                };
                (story, Some(later))
            }
        });
        self.store.record(
            Activation {
                call_id,
                function: name.to_string(),
                trigger: trigger.as_str().to_owned(),
                status,
                duration_ms: duration.as_secs_f64() * 1000.0,
                started_at,
                error,
                replay_of: None,
            },
            story,
        );
        result
    }

    /// How many times `name` has been called.
    pub fn invocation_count(&self, name: &FunctionName) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(name).copied().unwrap_or(0)
    }
}

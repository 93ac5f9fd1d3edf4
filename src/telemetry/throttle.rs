//! Repeated warnings, rate-limited: the kind of a warning about to be logged comes in (a
//! key such as `outbound connection refused host=example.com`); whether to log it now
//! goes out, and, once a run of repeats is over, one line saying how many were held back.
//!
//! The first warning of a kind is always logged (tests and operators rely on it). Repeats
//! within [`REPEAT_INTERVAL`] are counted, not logged; when the interval since the last
//! line ends with repeats counted, one line `N more like this suppressed` names the kind
//! and the count, so a flood costs one line per kind per interval. The admission
//! controller logs its 429s the same way, with its own counter.
//!
//! Time is tokio's clock, so tests drive it with `tokio::time::pause`/`advance`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long repeats of one kind of warning are held back after a line of that kind.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(10);
/// The most kinds tracked at once; past it, new kinds share [`OVERFLOW_KIND`], so keys a
/// sender controls (host names, error texts) cannot grow memory or flood the log.
const MAX_KINDS: usize = 256;
/// The kind that kinds past [`MAX_KINDS`] share.
pub const OVERFLOW_KIND: &str = "other repeated warnings";

/// One kind's current interval.
#[derive(Debug)]
struct Window {
    /// When the last line of this kind (a warning or a summary) was logged.
    started: Instant,
    /// Repeats held back since then.
    suppressed: u64,
}

/// Rate-limits repeated warnings, per kind. Use one per call site (a `static`), through
/// [`warn_repeated!`](crate::warn_repeated).
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    kinds: Mutex<BTreeMap<String, Window>>,
}

impl Throttle {
    /// A throttle letting one line per kind through every `interval`.
    pub const fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            kinds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether a warning of kind `key` is logged now: `Some(n)` when it is, `n` being the
    /// repeats held back before it that no summary line reported yet (0 but for a
    /// summary that could not be scheduled); None when it is held back. The first
    /// repeat held back in an interval schedules the summary line at the interval's end
    /// (when a tokio runtime runs).
    pub fn check(&'static self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let key = if kinds.contains_key(key) || self.make_room(&mut kinds, now) {
            key
        } else {
            OVERFLOW_KIND
        };
        let Some(window) = kinds.get_mut(key) else {
            kinds.insert(
                key.to_owned(),
                Window {
                    started: now,
                    suppressed: 0,
                },
            );
            return Some(0);
        };
        if now >= window.started + self.interval {
            let held = std::mem::take(&mut window.suppressed);
            window.started = now;
            return Some(held);
        }
        window.suppressed += 1;
        if window.suppressed == 1 {
            self.schedule_summary(key.to_owned(), window.started);
        }
        None
    }

    /// Forgets kinds with nothing held back whose interval is over, when the table is
    /// full; whether a new kind fits.
    fn make_room(&self, kinds: &mut BTreeMap<String, Window>, now: Instant) -> bool {
        if kinds.len() >= MAX_KINDS {
            kinds.retain(|_, w| w.suppressed > 0 || now < w.started + self.interval);
        }
        kinds.len() < MAX_KINDS
    }

    /// At the end of the interval that began at `started`, logs how many warnings of kind
    /// `key` were held back, unless a line of that kind was logged meanwhile.
    fn schedule_summary(&'static self, key: String, started: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep_until(started + self.interval).await;
            if let Some(held) = self.take_held(&key, started) {
                tracing::warn!(kind = ?key, suppressed = held, interval_secs = self.interval.as_secs(), "{held} more like this suppressed");
            }
        });
    }

    /// The repeats held back in the interval that began at `started`, starting a new
    /// interval; None if a line of kind `key` was logged since.
    fn take_held(&self, key: &str, started: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let window = kinds.get_mut(key)?;
        if window.started != started || window.suppressed == 0 {
            return None;
        }
        window.started = Instant::now();
        Some(std::mem::take(&mut window.suppressed))
    }
}

/// `tracing::warn!` through a [`Throttle`]: logs the warning unless one of the same kind
/// was logged within the throttle's interval; repeats held back are counted and reported
/// in one line later. A line that reports earlier repeats itself carries `suppressed`.
///
/// ```ignore
/// static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);
/// warn_repeated!(REFUSED, &format!("refused host={host}"), host, "outbound connection refused");
/// ```
#[macro_export]
macro_rules! warn_repeated {
    ($throttle:expr, $key:expr, $($event:tt)+) => {
        match $throttle.check($key) {
            Some(0) => ::tracing::warn!($($event)+),
            Some(suppressed) => ::tracing::warn!(suppressed, $($event)+),
            None => {}
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    /// Captures the log lines written while `f` runs (formatted, without colours).
    struct Lines(Arc<StdMutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture() -> (tracing::subscriber::DefaultGuard, Arc<StdMutex<Vec<u8>>>) {
        let buffer = Arc::new(StdMutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Lines(writer.clone()))
            .finish();
        (tracing::subscriber::set_default(subscriber), buffer)
    }

    fn lines(buffer: &StdMutex<Vec<u8>>) -> Vec<String> {
        String::from_utf8_lossy(&buffer.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn leak(interval: Duration) -> &'static Throttle {
        Box::leak(Box::new(Throttle::new(interval)))
    }

    /// Lets spawned summary tasks run.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_line_of_each_kind_passes_and_repeats_are_counted_once_per_interval() {
        let (_guard, buffer) = capture();
        let throttle = leak(Duration::from_secs(10));
        for _ in 0..50 {
            warn_repeated!(
                throttle,
                "refused host=a",
                host = "a",
                "outbound connection refused"
            );
        }
        warn_repeated!(
            throttle,
            "refused host=b",
            host = "b",
            "outbound connection refused"
        );
        settle().await;
        let seen = lines(&buffer);
        assert_eq!(seen.len(), 2, "{seen:#?}");
        assert!(seen[0].contains("outbound connection refused") && seen[0].contains("host=\"a\""));
        assert!(!seen[0].contains("suppressed"), "{}", seen[0]);
        assert!(seen[1].contains("host=\"b\""), "{}", seen[1]);

        // The interval ends: one line counts the 49 held back, naming their kind.
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        let seen = lines(&buffer);
        assert_eq!(seen.len(), 3, "{seen:#?}");
        assert!(
            seen[2].contains("49 more like this suppressed")
                && seen[2].contains("kind=\"refused host=a\""),
            "{}",
            seen[2]
        );

        // A flood goes on: still one line per interval.
        for _ in 0..20 {
            warn_repeated!(throttle, "refused host=a", "outbound connection refused");
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        settle().await;
        let seen = lines(&buffer);
        assert_eq!(seen.len(), 3, "{seen:#?}");
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        let seen = lines(&buffer);
        assert_eq!(seen.len(), 4, "{seen:#?}");
        assert!(
            seen[3].contains("20 more like this suppressed"),
            "{}",
            seen[3]
        );

        // Quiet for an interval: the next one is logged in full again.
        tokio::time::advance(Duration::from_secs(11)).await;
        warn_repeated!(
            throttle,
            "refused host=a",
            host = "a",
            "outbound connection refused"
        );
        settle().await;
        let seen = lines(&buffer);
        assert_eq!(seen.len(), 5, "{seen:#?}");
        assert!(
            seen[4].contains("outbound connection refused"),
            "{}",
            seen[4]
        );
        assert!(!seen[4].contains("suppressed"), "{}", seen[4]);
    }

    #[test]
    fn without_a_runtime_the_next_line_carries_the_count() {
        let (_guard, buffer) = capture();
        let throttle = leak(Duration::ZERO);
        let _ = throttle.check("k");
        // With a zero interval nothing is held back.
        warn_repeated!(throttle, "k", "again");
        assert_eq!(lines(&buffer).len(), 1);
        let throttle = leak(Duration::from_secs(3600));
        assert_eq!(throttle.check("k"), Some(0));
        assert_eq!(throttle.check("k"), None);
        assert_eq!(throttle.check("k"), None);
        throttle.kinds.lock().unwrap().get_mut("k").unwrap().started -= Duration::from_secs(3600);
        assert_eq!(throttle.check("k"), Some(2));
        warn_repeated!(throttle, "k", "again");
        warn_repeated!(throttle, "other", "first of its kind");
        assert_eq!(lines(&buffer).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn kinds_past_the_limit_share_one_and_cannot_flood() {
        let throttle = leak(Duration::from_secs(10));
        let logged = (0..MAX_KINDS * 4)
            .filter(|n| throttle.check(&format!("host={n}")).is_some())
            .count();
        // Each tracked kind once, and the overflow kind once.
        assert_eq!(logged, MAX_KINDS + 1);
        assert!(throttle.kinds.lock().unwrap().len() <= MAX_KINDS + 1);
        // Once their intervals end, new kinds take the room of quiet ones.
        tokio::time::advance(Duration::from_secs(11)).await;
        settle().await;
        assert_eq!(throttle.check("host=new"), Some(0));
    }
}

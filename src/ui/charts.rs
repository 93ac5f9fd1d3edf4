//! The UI's charts, drawn on the server: activations ([`CallPoint`]s) or gauge
//! [`Sample`]s over a [`Window`] come in, bucketed by time; the geometry of an SVG chart
//! ([`Chart`], [`Spark`]) goes out, for the `charts.html` macros to draw. No script and
//! no inline style: the page's strict CSP stays, and colours come from the stylesheet, so
//! dark mode applies.

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::store::CallPoint;
use crate::telemetry::samples::Sample;

/// Most activations read for one chart (the newest, when a window holds more).
pub const MAX_POINTS: u32 = 200_000;

/// Which stretch of time the charts show (`?range=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    /// The last hour, by minute.
    #[default]
    Hour,
    /// The last day, by quarter hour.
    Day,
}

/// A stretch of time cut into equal buckets; the last one holds now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub step: TimeDelta,
    pub buckets: usize,
}

impl Window {
    /// The window of `range` that ends with the bucket holding `now`.
    pub fn new(range: Range, now: DateTime<Utc>) -> Window {
        let (step, buckets) = match range {
            Range::Hour => (TimeDelta::minutes(1), 60),
            Range::Day => (TimeDelta::minutes(15), 96),
        };
        let minute = now
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(now);
        let into_step = minute.minute() as i64 % step.num_minutes();
        let bucket_start = minute - TimeDelta::minutes(into_step);
        let start = bucket_start - step * (buckets as i32 - 1);
        Window {
            start,
            step,
            buckets,
        }
    }

    /// The bucket holding `t`, if the window does.
    pub fn bucket(&self, t: DateTime<Utc>) -> Option<usize> {
        let offset = (t - self.start).num_milliseconds();
        if offset < 0 {
            return None;
        }
        let i = (offset / self.step.num_milliseconds()) as usize;
        (i < self.buckets).then_some(i)
    }

    /// When bucket `i` starts.
    pub fn at(&self, i: usize) -> DateTime<Utc> {
        self.start + self.step * i as i32
    }

    /// The bucket's length in minutes.
    fn minutes(&self) -> f64 {
        self.step.num_seconds() as f64 / 60.0
    }
}

/// The calls of one bucket.
#[derive(Debug, Clone, Default)]
struct Bucket {
    calls: u32,
    errors: u32,
    durations: Vec<f64>,
}

/// Calls bucketed over a window: calls per minute, error rate and latency percentiles.
/// A call failed when its status is 400 or more (as the activations page's filter says).
#[derive(Debug, Clone)]
pub struct CallSeries {
    pub window: Window,
    buckets: Vec<Bucket>,
}

impl CallSeries {
    pub fn new(window: Window) -> CallSeries {
        CallSeries {
            window,
            buckets: vec![Bucket::default(); window.buckets],
        }
    }

    /// Counts a call (ignored outside the window).
    pub fn add(&mut self, call: &CallPoint) {
        if let Some(i) = self.window.bucket(call.started_at) {
            let bucket = &mut self.buckets[i];
            bucket.calls += 1;
            bucket.errors += u32::from(call.status >= 400);
            bucket.durations.push(call.duration_ms);
        }
    }

    /// Calls in the window.
    pub fn calls(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.calls)).sum()
    }

    /// Failed calls in the window.
    pub fn errors(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.errors)).sum()
    }

    /// The `p`th percentile (0–100) of the window's durations in ms, if it had calls.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let mut all: Vec<f64> = self
            .buckets
            .iter()
            .flat_map(|b| b.durations.iter().copied())
            .collect();
        percentile(&mut all, p)
    }

    fn calls_per_minute(&self) -> Vec<Option<f64>> {
        let minutes = self.window.minutes();
        self.buckets
            .iter()
            .map(|b| Some(f64::from(b.calls) / minutes))
            .collect()
    }

    fn error_percent(&self) -> Vec<Option<f64>> {
        self.buckets
            .iter()
            .map(|b| (b.calls > 0).then(|| 100.0 * f64::from(b.errors) / f64::from(b.calls)))
            .collect()
    }

    fn latency(&self, p: f64) -> Vec<Option<f64>> {
        self.buckets
            .iter()
            .map(|b| percentile(&mut b.durations.clone(), p))
            .collect()
    }

    fn counts(&self) -> Vec<u32> {
        self.buckets.iter().map(|b| b.calls).collect()
    }

    /// Calls per minute, with failed calls beside them.
    pub fn rate_chart(&self, id: &str) -> Chart {
        let minutes = self.window.minutes();
        // Drawn only where calls failed, so it does not hide the calls' line at zero.
        let errors = self
            .buckets
            .iter()
            .map(|b| (b.errors > 0).then(|| f64::from(b.errors) / minutes))
            .collect();
        Chart::draw(
            id,
            "Calls per minute",
            Unit::PerMinute,
            &self.window,
            &self.counts(),
            vec![
                Line::new("calls", "s-calls", self.calls_per_minute()),
                Line::new("failed", "s-bad", errors),
            ],
        )
    }

    /// The share of calls that failed.
    pub fn error_chart(&self, id: &str) -> Chart {
        Chart::draw(
            id,
            "Error rate",
            Unit::Percent,
            &self.window,
            &self.counts(),
            vec![Line::new("failed", "s-bad", self.error_percent())],
        )
    }

    /// The median and 95th percentile duration of each bucket's calls.
    pub fn latency_chart(&self, id: &str) -> Chart {
        Chart::draw(
            id,
            "Latency",
            Unit::Millis,
            &self.window,
            &self.counts(),
            vec![
                Line::new("p50", "s-calls", self.latency(50.0)),
                Line::new("p95", "s-slow", self.latency(95.0)),
            ],
        )
    }

    /// A small line of calls per bucket, failed ones marked.
    pub fn spark(&self) -> Spark {
        Spark::draw(
            &self.counts(),
            &self.buckets.iter().map(|b| b.errors).collect::<Vec<_>>(),
        )
    }
}

/// The nearest-rank `p`th percentile of `values` (sorted in place).
fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// One gauge of a [`Sample`] to draw: its label, its line's CSS class, how it is read.
pub type Gauge<'a> = (&'a str, &'static str, fn(&Sample) -> f64);

/// Gauge samples bucketed over a window: each bucket shows the highest value sampled in
/// it, and nothing where no sample was taken (before the gateway started).
pub fn gauge_chart(
    id: &str,
    title: &str,
    window: &Window,
    samples: &[Sample],
    gauges: &[Gauge<'_>],
) -> Chart {
    let lines = gauges
        .iter()
        .map(|(label, class, read)| {
            let mut values: Vec<Option<f64>> = vec![None; window.buckets];
            for sample in samples {
                if let Some(i) = window.bucket(sample.at) {
                    let v = read(sample);
                    values[i] = Some(values[i].map_or(v, |seen: f64| seen.max(v)));
                }
            }
            Line::new(label, class, values)
        })
        .collect();
    let counts = vec![0; window.buckets];
    Chart::draw(id, title, Unit::Count, window, &counts, lines)
}

/// How a chart's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    PerMinute,
    Percent,
    Millis,
}

impl Unit {
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Count => format!("{v:.0}"),
            Unit::PerMinute if v.fract() != 0.0 && v < 10.0 => format!("{v:.1}/min"),
            Unit::PerMinute => format!("{v:.0}/min"),
            Unit::Percent => format!("{v:.0}%"),
            Unit::Millis if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
            Unit::Millis if v == 0.0 => "0 ms".to_owned(),
            Unit::Millis if v < 10.0 => format!("{v:.1} ms"),
            Unit::Millis => format!("{v:.0} ms"),
        }
    }
}

/// One line of a chart: a value per bucket, `None` where there is none.
pub struct Line {
    label: String,
    class: &'static str,
    values: Vec<Option<f64>>,
}

impl Line {
    pub fn new(label: &str, class: &'static str, values: Vec<Option<f64>>) -> Line {
        Line {
            label: label.to_owned(),
            class,
            values,
        }
    }
}

// The drawing's size in SVG units; it scales to the page's width.
const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// A chart ready to draw: its lines as polylines (broken where a bucket has no value),
/// a marked point for each bucket with a value, axis labels, and a sentence that says
/// what it shows (for screen readers and as the SVG's title).
#[derive(Debug, Serialize)]
pub struct Chart {
    pub id: String,
    pub title: String,
    pub width: f64,
    pub height: f64,
    pub plot: Rect,
    pub lines: Vec<Plot>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub right: f64,
}

/// One drawn line.
#[derive(Debug, Serialize)]
pub struct Plot {
    pub label: String,
    pub class: &'static str,
    /// `points` attributes of the polylines, one per unbroken run of buckets.
    pub runs: Vec<String>,
    pub points: Vec<Point>,
}

/// A bucket's value on a line.
#[derive(Debug, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// Calls in the bucket (0 for gauges).
    pub n: u32,
    /// Whether it is drawn as a dot (a value above zero).
    pub mark: bool,
    /// `HH:MM · value`, shown on hover.
    pub text: String,
}

/// An axis label, and where its grid line goes.
#[derive(Debug, Serialize)]
pub struct Tick {
    pub x: f64,
    pub y: f64,
    pub grid: f64,
    pub text: String,
}

impl Chart {
    fn draw(
        id: &str,
        title: &str,
        unit: Unit,
        window: &Window,
        counts: &[u32],
        lines: Vec<Line>,
    ) -> Chart {
        let plot = Rect {
            x: LEFT,
            y: TOP,
            w: WIDTH - LEFT - RIGHT,
            h: HEIGHT - TOP - BOTTOM,
            right: WIDTH - RIGHT,
        };
        let peak = lines
            .iter()
            .flat_map(|l| l.values.iter().flatten().copied())
            .fold(0.0, f64::max);
        let top = match unit {
            Unit::Percent => 100.0,
            // Whole numbers: a top of 2 at least, so the middle line is 1, not 0.5.
            Unit::Count => nice_ceiling(peak).max(2.0),
            _ => nice_ceiling(peak),
        };
        let step = plot.w / (window.buckets.max(2) - 1) as f64;
        let x_of = |i: usize| round(plot.x + step * i as f64);
        let y_of = |v: f64| round(plot.y + plot.h - plot.h * (v / top).clamp(0.0, 1.0));
        let plots = lines
            .iter()
            .map(|line| {
                let mut runs = Vec::new();
                let mut run = String::new();
                let mut points = Vec::new();
                for (i, value) in line.values.iter().enumerate() {
                    match value {
                        Some(v) => {
                            let (x, y) = (x_of(i), y_of(*v));
                            if !run.is_empty() {
                                run.push(' ');
                            }
                            run.push_str(&format!("{x},{y}"));
                            points.push(Point {
                                x,
                                y,
                                n: counts.get(i).copied().unwrap_or(0),
                                mark: *v > 0.0,
                                text: format!(
                                    "{} · {} {}",
                                    window.at(i).format("%H:%M"),
                                    line.label,
                                    unit.format(*v)
                                ),
                            });
                        }
                        None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
                        None => {}
                    }
                }
                if !run.is_empty() {
                    runs.push(run);
                }
                Plot {
                    label: line.label.clone(),
                    class: line.class,
                    runs,
                    points,
                }
            })
            .collect();
        let y_ticks = [0.0, top / 2.0, top]
            .iter()
            .map(|v| Tick {
                x: LEFT - 6.0,
                y: round(y_of(*v) + 4.0),
                grid: y_of(*v),
                text: unit.format(*v),
            })
            .collect();
        let last = window.buckets - 1;
        let x_ticks = [0, last / 2, last]
            .iter()
            .map(|i| Tick {
                x: x_of(*i),
                y: HEIGHT - 6.0,
                grid: x_of(*i),
                text: window.at(*i).format("%H:%M").to_string(),
            })
            .collect();
        let peaks: Vec<String> = lines
            .iter()
            .map(|l| {
                let high = l
                    .values
                    .iter()
                    .flatten()
                    .copied()
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
                match high {
                    Some(v) => format!("{} at most {}", l.label, unit.format(v)),
                    None => format!("no {}", l.label),
                }
            })
            .collect();
        let summary = format!(
            "{title}, {} to {} UTC: {}.",
            window.start.format("%H:%M"),
            (window.at(last) + window.step).format("%H:%M"),
            peaks.join(", ")
        );
        Chart {
            id: id.to_owned(),
            title: title.to_owned(),
            width: WIDTH,
            height: HEIGHT,
            plot,
            lines: plots,
            y_ticks,
            x_ticks,
            summary,
        }
    }
}

/// A line small enough for a table row: calls per bucket, failed buckets marked.
#[derive(Debug, Serialize)]
pub struct Spark {
    pub width: f64,
    pub height: f64,
    pub points: String,
    /// How many buckets the line has.
    pub buckets: usize,
    pub failed: Vec<(f64, f64)>,
    pub summary: String,
}

impl Spark {
    fn draw(counts: &[u32], errors: &[u32]) -> Spark {
        const W: f64 = 120.0;
        const H: f64 = 24.0;
        let top = f64::from(counts.iter().copied().max().unwrap_or(0).max(1));
        let step = W / (counts.len().max(2) - 1) as f64;
        let at = |i: usize, v: u32| {
            (
                round(step * i as f64),
                round(H - 2.0 - (H - 4.0) * f64::from(v) / top),
            )
        };
        let points = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (x, y) = at(i, *c);
                format!("{x},{y}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        let failed = errors
            .iter()
            .enumerate()
            .filter(|(_, e)| **e > 0)
            .map(|(i, _)| at(i, counts[i]))
            .collect();
        let calls: u32 = counts.iter().sum();
        let errs: u32 = errors.iter().sum();
        Spark {
            width: W,
            height: H,
            points,
            buckets: counts.len(),
            failed,
            summary: format!("{calls} calls, {errs} failed"),
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `v` (and at least 1).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(t: DateTime<Utc>, ms: f64, status: u16) -> CallPoint {
        CallPoint {
            function: "f".into(),
            started_at: t,
            duration_ms: ms,
            status,
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn an_hour_is_sixty_minutes_ending_with_the_current_one_and_a_day_is_96_quarters() {
        let now = utc("2026-12-06T09:41:27Z");
        let hour = Window::new(Range::Hour, now);
        assert_eq!(hour.start, utc("2026-12-06T08:42:00Z"));
        assert_eq!(hour.bucket(now), Some(59));
        assert_eq!(hour.bucket(utc("2026-12-06T08:41:59Z")), None);
        assert_eq!(hour.bucket(utc("2026-12-06T08:42:00Z")), Some(0));
        let day = Window::new(Range::Day, now);
        assert_eq!(day.start, utc("2026-12-05T09:45:00Z"));
        assert_eq!(day.bucket(now), Some(95));
        assert_eq!(day.bucket(utc("2026-12-06T09:30:00Z")), Some(95));
        assert_eq!(day.bucket(utc("2026-12-06T09:29:59Z")), Some(94));
    }

    #[test]
    fn calls_are_counted_by_minute_with_their_error_rate_and_percentiles() {
        let now = utc("2026-12-06T09:41:27Z");
        let mut series = CallSeries::new(Window::new(Range::Hour, now));
        for ms in 1..=20 {
            series.add(&call(utc("2026-12-06T09:40:10Z"), f64::from(ms), 200));
        }
        series.add(&call(utc("2026-12-06T09:41:00Z"), 500.0, 502));
        series.add(&call(utc("2026-12-06T07:00:00Z"), 1.0, 200)); // outside
        assert_eq!((series.calls(), series.errors()), (21, 1));
        assert_eq!(series.percentile(50.0), Some(11.0));
        assert_eq!(series.percentile(95.0), Some(20.0));

        let rate = series.rate_chart("c");
        let calls = &rate.lines[0];
        assert_eq!(
            calls.runs.len(),
            1,
            "a rate of 0 is a value, so one unbroken line"
        );
        assert_eq!(calls.runs[0].split(' ').count(), 60);
        assert_eq!(calls.points.len(), 60);
        let marked: Vec<u32> = calls
            .points
            .iter()
            .filter(|p| p.mark)
            .map(|p| p.n)
            .collect();
        assert_eq!(marked, vec![20, 1], "a dot for each minute with calls");
        assert_eq!(calls.points[58].text, "09:40 · calls 20/min");
        assert_eq!(rate.y_ticks[2].text, "20/min");
        let failed: Vec<&str> = rate.lines[1]
            .points
            .iter()
            .map(|p| p.text.as_str())
            .collect();
        assert_eq!(
            failed,
            vec!["09:41 · failed 1/min"],
            "drawn where calls failed only"
        );

        let errors = series.error_chart("e");
        let failed = &errors.lines[0];
        assert_eq!(
            failed.points.len(),
            2,
            "only the minutes with calls have a rate"
        );
        assert_eq!(failed.points[1].text, "09:41 · failed 100%");
        assert!(
            errors.summary.contains("failed at most 100%"),
            "{}",
            errors.summary
        );

        let latency = series.latency_chart("l");
        assert_eq!(latency.lines[1].points[0].text, "09:40 · p95 19 ms");
        assert_eq!(latency.lines[1].points[1].text, "09:41 · p95 500 ms");
        assert_eq!(latency.y_ticks[2].text, "500 ms");
    }

    #[test]
    fn a_line_breaks_where_buckets_have_no_value() {
        let now = utc("2026-12-06T09:41:27Z");
        let window = Window::new(Range::Hour, now);
        let sample = |t: &str, depth| Sample {
            at: utc(t),
            queue_depth: depth,
            dead_letters: 0,
            browsers_in_use: 0,
            browsers_warm: 0,
            browsers_queued: 0,
        };
        let samples = [
            sample("2026-12-06T09:00:05Z", 3),
            sample("2026-12-06T09:00:15Z", 7),
            sample("2026-12-06T09:01:05Z", 2),
            sample("2026-12-06T09:30:00Z", 1),
        ];
        let chart = gauge_chart(
            "q",
            "Queue",
            &window,
            &samples,
            &[("depth", "s-calls", |s| s.queue_depth as f64)],
        );
        let line = &chart.lines[0];
        assert_eq!(line.runs.len(), 2);
        assert_eq!(line.points.len(), 3);
        assert_eq!(
            line.points[0].text, "09:00 · depth 7",
            "the bucket's highest"
        );
        assert_eq!(chart.y_ticks[2].text, "10");
    }

    #[test]
    fn a_spark_has_a_point_per_bucket_and_marks_the_failed_ones() {
        let spark = Spark::draw(&[0, 2, 4, 1], &[0, 0, 1, 0]);
        assert_eq!(spark.points.split(' ').count(), 4);
        assert_eq!(spark.failed, vec![(80.0, 2.0)]);
        assert_eq!(spark.summary, "7 calls, 1 failed");
    }

    #[test]
    fn axis_tops_are_round_numbers() {
        for (v, top) in [
            (0.0, 1.0),
            (1.5, 2.0),
            (3.0, 5.0),
            (7.0, 10.0),
            (10.0, 10.0),
            (11.0, 20.0),
            (480.0, 500.0),
        ] {
            assert_eq!(nice_ceiling(v), top, "{v}");
        }
    }
}

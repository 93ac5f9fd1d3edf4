//! The activation records' contract: what one gateway records, the other lists, reads
//! with its story, links as a replay, charts and counts; history is pruned to the
//! retention asked for, records by count and age, stories by bytes, oldest first.

use super::*;
use crate::store::story::{Body, Later, Request};
use crate::store::{Activation, CallPoint, Retention, Story};
use chrono::DateTime;

/// Now, to the second: what both stores give back as it went in.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

/// A call of `function` that answered 200 in 1.5 ms.
fn call(call_id: &str, function: &str, started_at: DateTime<Utc>) -> Activation {
    Activation {
        call_id: call_id.into(),
        function: function.into(),
        trigger: "http".into(),
        status: 200,
        duration_ms: 1.5,
        started_at,
        error: None,
        replay_of: None,
    }
}

/// A story whose request body is `text`.
fn told(text: &str) -> Story {
    Story {
        request: Request {
            method: "POST".into(),
            path: "/".into(),
            query: None,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Body {
                size: text.len(),
                text: Some(text.into()),
                ..Default::default()
            },
        },
        response: None,
        logs: vec![],
        logs_by: "process".into(),
    }
}

/// A story of about 1100 bytes, told by call `i`.
fn long_story(i: usize) -> Story {
    told(&format!("{i}{}", "x".repeat(999)))
}

contract! {
    /// Calls recorded through one gateway are listed through the other, newest first,
    /// as they were recorded; a function's list holds its own calls only.
    async fn activations_recorded_by_one_gateway_are_listed_by_the_other(a, b) {
        let t = now();
        let first = call("c1", "echo", t - Duration::seconds(30));
        let mut failed = call("c2", "wc", t - Duration::seconds(20));
        failed.status = 502;
        failed.trigger = "slack".into();
        failed.duration_ms = 1234.25;
        failed.error = Some("the function exited with status 1".into());
        let last = call("c3", "echo", t - Duration::seconds(10));
        // Recorded out of order: listed by when they started.
        for activation in [&first, &last, &failed] {
            a.record(activation.clone(), None);
        }
        a.flush().await;
        assert_eq!(
            b.activations(None, 10).await.unwrap(),
            [last.clone(), failed.clone(), first.clone()]
        );
        let echo: FunctionName = "echo".parse().unwrap();
        assert_eq!(b.activations(Some(&echo), 10).await.unwrap(), [last.clone(), first]);
        assert_eq!(b.activations(Some(&echo), 1).await.unwrap(), [last]);
        let other: FunctionName = "other".parse().unwrap();
        assert!(b.activations(Some(&other), 10).await.unwrap().is_empty());
    }

    /// A call's record is read through the other gateway with its story, the work left
    /// on the story done; a call recorded twice reads as the record written last.
    async fn a_calls_newest_record_is_read_with_its_story(a, b) {
        let t = now();
        a.record(call("c1", "echo", t - Duration::seconds(5)), Some((told("first try"), None)));
        // Recorded last though it started first.
        let mut again = call("c1", "echo", t - Duration::seconds(9));
        again.status = 500;
        let line = crate::provider::LogLine {
            name: "echo".into(),
            instance: "echo-1".into(),
            timestamp: t,
            text: "retrying".into(),
        };
        let later = Later {
            ready_at: std::time::Instant::now() + std::time::Duration::from_millis(30),
            finish: Box::new({
                let line = line.clone();
                move |story: &mut Story| story.logs.push(line)
            }),
        };
        a.record(again.clone(), Some((told("second try"), Some(later))));
        a.record(call("c2", "echo", t), None);
        a.flush().await;

        let (activation, story) = b.activation("c1").await.unwrap().expect("seen by the other");
        assert_eq!(activation, again);
        let mut expected = told("second try");
        expected.logs.push(line);
        assert_eq!(story, Some(expected));
        let (activation, story) = b.activation("c2").await.unwrap().unwrap();
        assert_eq!((activation.call_id.as_str(), story), ("c2", None));
        assert!(b.activation("never").await.unwrap().is_none());
    }

    /// A replay is linked to the call it replayed, through either gateway; only the
    /// newest record of the replaying call is marked.
    async fn a_replay_is_linked_to_its_original(a, b) {
        let t = now();
        a.record(call("orig", "echo", t - Duration::seconds(20)), None);
        a.record(call("replay", "echo", t - Duration::seconds(10)), None);
        // The gateway that recorded the replay writes it before linking it.
        a.link_replay("replay", "orig").await.unwrap();
        let (linked, _) = b.activation("replay").await.unwrap().unwrap();
        assert_eq!(linked.replay_of.as_deref(), Some("orig"));

        a.record(call("replay", "echo", t), None);
        a.flush().await;
        b.link_replay("replay", "orig-2").await.unwrap();
        // A call without a record links nothing.
        b.link_replay("never", "orig").await.unwrap();
        let links: Vec<(String, Option<String>)> = a
            .activations(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|x| (x.call_id, x.replay_of))
            .collect();
        let link = |call: &str, of: Option<&str>| (call.to_owned(), of.map(str::to_owned));
        assert_eq!(
            links,
            [link("replay", Some("orig-2")), link("replay", Some("orig")), link("orig", None)]
        );
    }

    /// The charts' points since a time, read through the other gateway: newest first,
    /// at most the limit, optionally of one function; older calls are left out.
    async fn calls_since_gives_the_charts_their_points(a, b) {
        let t = now();
        a.record(call("c1", "echo", t - Duration::hours(2)), None);
        a.record(call("c2", "echo", t - Duration::minutes(30)), None);
        let mut failed = call("c3", "wc", t - Duration::minutes(20));
        failed.status = 500;
        failed.duration_ms = 900.25;
        a.record(failed, None);
        a.record(call("c4", "echo", t - Duration::minutes(10)), None);
        a.flush().await;
        let point = |function: &str, minutes_ago: i64, duration_ms: f64, status: u16| CallPoint {
            function: function.into(),
            started_at: t - Duration::minutes(minutes_ago),
            duration_ms,
            status,
        };
        let expected = [
            point("echo", 10, 1.5, 200),
            point("wc", 20, 900.25, 500),
            point("echo", 30, 1.5, 200),
        ];
        let since = t - Duration::hours(1);
        assert_eq!(b.calls_since(None, since, 100).await.unwrap(), expected);
        assert_eq!(b.calls_since(None, since, 2).await.unwrap(), expected[..2]);
        let echo: FunctionName = "echo".parse().unwrap();
        assert_eq!(
            b.calls_since(Some(&echo), since, 100).await.unwrap(),
            [expected[0].clone(), expected[2].clone()]
        );
        assert!(b.calls_since(None, t + Duration::seconds(1), 100).await.unwrap().is_empty());
    }

    /// Each function's count of calls sums what every gateway recorded.
    async fn activation_counts_sum_every_gateways_calls(a, b) {
        assert!(a.activation_counts().await.unwrap().is_empty());
        for i in 0..3 {
            a.record(call(&format!("a{i}"), "echo", now()), None);
        }
        b.record(call("b1", "echo", now()), None);
        b.record(call("b2", "wc", now()), None);
        b.record(call("b3", "wc", now()), None);
        a.flush().await;
        b.flush().await;
        let expected = [("echo".to_owned(), 4), ("wc".to_owned(), 2)];
        let mut counts = a.activation_counts().await.unwrap();
        counts.sort();
        assert_eq!(counts, expected);
        let mut counts = b.activation_counts().await.unwrap();
        counts.sort();
        assert_eq!(counts, expected);
    }

    /// Records older than the age kept go whatever their number; past the count kept,
    /// the oldest go and the newest stay.
    async fn records_past_the_count_or_the_age_kept_are_deleted(a, b) {
        a.set_retention(Retention {
            max_records: 100_000,
            max_age: Some(std::time::Duration::from_secs(3600)),
            ..Retention::default()
        });
        for i in 0..5 {
            a.record(call(&format!("old-{i}"), "echo", Utc::now() - Duration::hours(2)), None);
        }
        // More than a batch: the writer prunes at least once.
        for i in 0..600 {
            a.record(call(&format!("new-{i}"), "echo", Utc::now()), None);
        }
        a.flush().await;
        let kept = b.activations(None, 1000).await.unwrap();
        assert_eq!(kept.len(), 600, "older than an hour: gone; the others stay");
        assert!(kept.iter().all(|x| x.call_id.starts_with("new-")));

        a.set_retention(Retention {
            max_records: 50,
            ..Retention::default()
        });
        for i in 0..600 {
            a.record(call(&format!("more-{i}"), "echo", Utc::now()), None);
        }
        a.flush().await;
        let kept = b.activations(None, 2000).await.unwrap();
        assert!(kept.len() < 600, "past 50 records, pruned: {} kept", kept.len());
        assert!(kept.iter().all(|x| x.call_id.starts_with("more-")), "an old record is kept");
        let newest: Vec<String> = (550..600).rev().map(|i| format!("more-{i}")).collect();
        let listed: Vec<&String> = kept.iter().take(50).map(|x| &x.call_id).collect();
        assert_eq!(listed, newest.iter().collect::<Vec<_>>(), "the newest 50 stay");
        assert!(b.activation("more-0").await.unwrap().is_none());
    }

    /// Past the bytes of stories kept, the oldest stories go first; their records stay.
    async fn the_oldest_stories_go_first_past_their_bytes(a, b) {
        a.set_retention(Retention {
            max_story_bytes: 4000,
            ..Retention::default()
        });
        for i in 0..10 {
            a.record(call(&format!("c{i}"), "echo", now()), Some((long_story(i), None)));
            a.flush().await;
        }
        // The bytes of each call's story when it is still kept, oldest call first.
        let mut bytes = Vec::new();
        for i in 0..10 {
            let (_, story) = b
                .activation(&format!("c{i}"))
                .await
                .unwrap()
                .expect("every record stays");
            bytes.push(story.map(|s| serde_json::to_string(&s).unwrap().len()));
        }
        let first_kept = bytes.iter().position(Option::is_some).expect("no story is kept");
        assert!(first_kept > 0, "no story was dropped");
        assert!(
            bytes[first_kept..].iter().all(Option::is_some),
            "a newer story went first: {bytes:?}"
        );
        let kept: usize = bytes.iter().flatten().sum();
        assert!(kept <= 4000 + 1200, "{kept} bytes of stories kept");
        let (_, newest) = b.activation("c9").await.unwrap().unwrap();
        assert_eq!(newest, Some(long_story(9)));
        assert_eq!(b.activations(None, 100).await.unwrap().len(), 10);
    }

    /// Records that go by count take their stories' bytes with them: the records kept
    /// keep their stories while these hold less than the bytes kept.
    async fn records_deleted_by_count_free_their_stories_bytes(a, b) {
        a.set_retention(Retention {
            max_records: 5,
            max_story_bytes: 6000,
            ..Retention::default()
        });
        for i in 0..40 {
            a.record(call(&format!("c{i}"), "echo", now()), Some((long_story(i), None)));
            a.flush().await;
        }
        let kept = b.activations(None, 100).await.unwrap();
        assert!((5..=6).contains(&kept.len()), "{} records kept", kept.len());
        for x in &kept {
            let (_, story) = b.activation(&x.call_id).await.unwrap().unwrap();
            assert!(story.is_some(), "{} lost its story", x.call_id);
        }
    }
}

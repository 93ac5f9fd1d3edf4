//! The durable queue's contract, on both stores: calls queued through one gateway and
//! claimed, finished, retried, cancelled or re-queued through the other, as the
//! dispatcher and `GET /system/queue` see them.

use super::*;
use crate::store::queue::FINISHED_KEPT;
use crate::store::{CallState, Finish, QueuedCall};

/// A call of `function` with a query, headers (one not ASCII) and a body.
fn call(id: &str, function: &str) -> QueuedCall {
    QueuedCall {
        call_id: id.into(),
        function: function.into(),
        method: "POST".into(),
        path: "/hook".into(),
        query: Some("a=1".into()),
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("x-note".into(), "café".into()),
        ],
        body: format!("body of {id}").into_bytes(),
        ..QueuedCall::default()
    }
}

/// `call` carrying delivery `id` of the route `slack/a`.
fn delivered(call_id: &str, id: &str) -> QueuedCall {
    QueuedCall {
        delivery: Some(("slack/a".into(), id.into())),
        ..call(call_id, "f")
    }
}

/// The final outcome of a call after one attempt.
fn finish(call_id: &str, state: CallState, result: Option<&[u8]>) -> Finish {
    Finish {
        call_id: call_id.into(),
        state,
        attempts: 1,
        status: if state == CallState::Done { 200 } else { 500 },
        error: (state == CallState::Dead).then(|| "boom".to_owned()),
        duration_ms: 12.5,
        result: result.map(<[u8]>::to_vec),
        answered: false,
        at: Utc::now(),
    }
}

/// A lease five minutes long, from now.
fn lease() -> chrono::DateTime<Utc> {
    Utc::now() + Duration::minutes(5)
}

/// Every function has room for any number of calls.
fn any_room(_: &str) -> usize {
    usize::MAX
}

fn ids(calls: &[QueuedCall]) -> Vec<String> {
    let mut ids: Vec<String> = calls.iter().map(|c| c.call_id.clone()).collect();
    ids.sort();
    ids
}

contract! {
    /// A call queued through one gateway is claimed, whole, through the other, and then
    /// by neither again while it runs.
    async fn a_call_queued_through_one_gateway_is_claimed_through_the_other(a, b) {
        let queued = QueuedCall {
            callback_url: Some("https://example.com/cb".into()),
            trigger: Some("slack".into()),
            reply: Some(r#"{"slack":{"channel":"C1"}}"#.into()),
            ..call("c1", "echo")
        };
        assert!(a.enqueue(queued.clone()).await.unwrap());
        let (claimed, left) = b
            .claim_calls("gw-b", 10, Utc::now(), lease(), any_room)
            .await
            .unwrap();
        assert!(!left);
        assert_eq!(claimed.len(), 1);
        let got = &claimed[0];
        assert_eq!(
            (got.call_id.as_str(), got.function.as_str(), got.method.as_str(), got.path.as_str()),
            ("c1", "echo", "POST", "/hook")
        );
        assert_eq!(got.query, queued.query);
        assert_eq!(got.headers, queued.headers);
        assert_eq!(got.body, queued.body);
        assert_eq!(got.callback_url, queued.callback_url);
        assert_eq!(got.trigger, queued.trigger);
        assert_eq!(got.reply, queued.reply);
        assert_eq!(got.attempts, 0);

        let (again, _) = a.claim_calls("gw-a", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert!(again.is_empty(), "a running call was claimed again");
        let entries = a.queue_entries(None, None, 10).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].state, CallState::Running);
        assert_eq!(entries[0].trigger.as_deref(), Some("slack"));
        assert_eq!(entries[0].next_attempt_at, None);
        assert_eq!(a.queue_depth().await.unwrap(), 1);
    }

    /// A call is not due before its time: one claimed with a clock before it was queued
    /// is not taken.
    async fn a_call_is_claimed_once_it_is_due(a, b) {
        let before = Utc::now() - Duration::minutes(1);
        assert!(a.enqueue(call("c1", "f")).await.unwrap());
        let (early, left) = b.claim_calls("gw-b", 10, before, lease(), any_room).await.unwrap();
        assert!(early.is_empty() && !left);
        let (due, _) = b.claim_calls("gw-b", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(ids(&due), ["c1"]);
    }

    /// A delivery id queues its call once, whichever gateway it reaches and however many
    /// times; the delivery is remembered for the channels' own dedupe too.
    async fn a_delivery_id_queues_its_call_once_across_gateways(a, b) {
        assert!(a.enqueue(delivered("c1", "Ev1")).await.unwrap());
        assert!(!b.enqueue(delivered("c2", "Ev1")).await.unwrap());
        assert!(!a.enqueue(delivered("c3", "Ev1")).await.unwrap());
        assert!(!b.first_delivery("slack/a", "Ev1", Utc::now().timestamp()).await.unwrap());
        // The same id from another route is another delivery.
        let other = QueuedCall {
            delivery: Some(("github/triage".into(), "Ev1".into())),
            ..call("c4", "f")
        };
        assert!(b.enqueue(other).await.unwrap());

        let mut races = Vec::new();
        for i in 0..30 {
            let (a, b) = (a.clone(), b.clone());
            races.push(tokio::spawn(async move {
                let id = format!("Race{i}");
                let (x, y) = tokio::join!(
                    a.enqueue(delivered(&format!("a{i}"), &id)),
                    b.enqueue(delivered(&format!("b{i}"), &id))
                );
                u8::from(x.unwrap()) + u8::from(y.unwrap())
            }));
        }
        for race in races {
            assert_eq!(race.await.unwrap(), 1, "a delivery was queued other than once");
        }
        assert_eq!(a.queue_depth().await.unwrap(), 2 + 30);
    }

    /// A call id queued again (a client retrying its enqueue, through either gateway) is
    /// not queued twice, and the call first queued is left as it was.
    async fn the_same_call_id_is_queued_once(a, b) {
        assert!(a.enqueue(call("c1", "f")).await.unwrap());
        let changed = QueuedCall {
            body: b"another body".to_vec(),
            ..call("c1", "g")
        };
        assert!(!b.enqueue(changed).await.unwrap());

        let mut races = Vec::new();
        for i in 0..30 {
            let (a, b) = (a.clone(), b.clone());
            races.push(tokio::spawn(async move {
                let id = format!("r{i}");
                let (x, y) = tokio::join!(a.enqueue(call(&id, "f")), b.enqueue(call(&id, "f")));
                u8::from(x.unwrap()) + u8::from(y.unwrap())
            }));
        }
        for race in races {
            assert_eq!(race.await.unwrap(), 1, "a call id was queued other than once");
        }
        assert_eq!(b.queue_depth().await.unwrap(), 31);
        let (claimed, _) = b.claim_calls("gw-b", 100, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(claimed.len(), 31);
        let first = claimed.iter().find(|c| c.call_id == "c1").unwrap();
        assert_eq!((first.function.as_str(), first.body.as_slice()), ("f", &b"body of c1"[..]));
    }

    /// Calls claimed by both gateways at the same moment, a few at a time, are each
    /// claimed exactly once: none by both, none left behind.
    async fn concurrent_claims_take_each_call_once(a, b) {
        let mut enqueues = Vec::new();
        for i in 0..200 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            enqueues.push(tokio::spawn(async move {
                store.enqueue(call(&format!("c{i:03}"), "f")).await.unwrap()
            }));
        }
        for enqueue in enqueues {
            assert!(enqueue.await.unwrap());
        }
        assert_eq!(a.queue_depth().await.unwrap(), 200);

        let mut claimers = Vec::new();
        for (store, owner) in [(a.clone(), "gw-a1"), (b.clone(), "gw-b1"), (a.clone(), "gw-a2"), (b.clone(), "gw-b2")] {
            claimers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let (got, _) = store
                        .claim_calls(owner, 7, Utc::now(), lease(), any_room)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        break mine;
                    }
                    mine.extend(got);
                }
            }));
        }
        let mut all = Vec::new();
        for claimer in claimers {
            all.extend(claimer.await.unwrap());
        }
        let claimed = ids(&all);
        let mut once = claimed.clone();
        once.dedup();
        assert_eq!(once.len(), claimed.len(), "a call was claimed twice");
        let expected: Vec<String> = (0..200).map(|i| format!("c{i:03}")).collect();
        assert_eq!(once, expected);
        let running = b.queue_entries(Some(CallState::Running), None, 1000).await.unwrap();
        assert_eq!(running.len(), 200);
        assert_eq!(b.queue_depth().await.unwrap(), 200);
    }

    /// A claim takes no more calls of a function than it has room for, nor more than the
    /// limit, and says when due calls were left; the rest are taken later.
    async fn a_claim_respects_room_per_function_and_the_limit(a, b) {
        for i in 0..3 {
            a.enqueue(call(&format!("f{i}"), "f")).await.unwrap();
            a.enqueue(call(&format!("g{i}"), "g")).await.unwrap();
        }
        let room = |function: &str| if function == "f" { 1 } else { 2 };
        let (claimed, left) = b.claim_calls("gw-b", 10, Utc::now(), lease(), room).await.unwrap();
        assert!(left, "calls left for want of room were not reported");
        let mut functions: Vec<&str> = claimed.iter().map(|c| c.function.as_str()).collect();
        functions.sort();
        assert_eq!(functions, ["f", "g", "g"]);

        let (limited, left) = a.claim_calls("gw-a", 2, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(limited.len(), 2);
        assert!(left, "calls left past the limit were not reported");
        let (rest, left) = b.claim_calls("gw-b", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert!(!left);
        let mut all = ids(&claimed);
        all.extend(ids(&limited));
        all.extend(ids(&rest));
        all.sort();
        assert_eq!(all, ["f0", "f1", "f2", "g0", "g1", "g2"]);
    }

    /// A finished call's result waits for its callback, wherever the call ran; a failed
    /// delivery keeps it due, a delivered one ends it. A call without a callback, or
    /// answered on the spot, has nothing due.
    async fn a_result_is_kept_until_its_callback_is_delivered(a, b) {
        let with_callback = QueuedCall {
            callback_url: Some("https://example.com/cb".into()),
            ..call("cb", "f")
        };
        let answered = QueuedCall {
            reply: Some(r#"{"slack":{"channel":"C1"}}"#.into()),
            ..call("answered", "f")
        };
        a.enqueue(with_callback).await.unwrap();
        a.enqueue(answered).await.unwrap();
        a.enqueue(call("plain", "f")).await.unwrap();
        let (claimed, _) = b.claim_calls("gw-b", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(claimed.len(), 3);
        b.finish_call(finish("cb", CallState::Done, Some(b"hello"))).await.unwrap();
        b.finish_call(Finish { answered: true, ..finish("answered", CallState::Done, Some(b"x")) })
            .await
            .unwrap();
        b.finish_call(finish("plain", CallState::Done, Some(b"y"))).await.unwrap();
        assert_eq!(a.queue_depth().await.unwrap(), 0);

        let due = a.callbacks_due().await.unwrap();
        assert_eq!(due.len(), 1, "only the callback is due");
        let cb = &due[0];
        assert_eq!((cb.call_id.as_str(), cb.function.as_str()), ("cb", "f"));
        assert_eq!(cb.url.as_deref(), Some("https://example.com/cb"));
        assert_eq!((cb.status, cb.duration_ms, cb.body.as_slice()), (200, 12.5, &b"hello"[..]));
        assert_eq!((cb.error.as_deref(), cb.attempts), (None, 0));

        a.record_callback("cb", "pending", 1).await.unwrap();
        let due = b.callbacks_due().await.unwrap();
        assert_eq!((due.len(), due[0].attempts), (1, 1));
        assert_eq!(due[0].body, b"hello", "a failed delivery lost the result");
        b.record_callback("cb", "delivered", 2).await.unwrap();
        assert!(a.callbacks_due().await.unwrap().is_empty());

        let entries = a.queue_entries(Some(CallState::Done), None, 10).await.unwrap();
        let state_of = |id: &str| {
            entries.iter().find(|e| e.call_id == id).unwrap().callback_state.clone()
        };
        assert_eq!(state_of("cb").as_deref(), Some("delivered"));
        assert_eq!(state_of("answered").as_deref(), Some("answered"));
        assert_eq!(state_of("plain"), None);
        let done = entries.iter().find(|e| e.call_id == "plain").unwrap();
        assert_eq!((done.attempts, done.status), (1, Some(200)));
    }

    /// A failed call retried later is not claimed before its time, then is, with its
    /// attempts; meanwhile the queue shows why it failed and when it runs again.
    async fn a_failed_call_is_retried_later(a, b) {
        a.enqueue(call("c1", "f")).await.unwrap();
        let now = Utc::now();
        let (claimed, _) = a.claim_calls("gw-a", 1, now, lease(), any_room).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let at = chrono::DateTime::from_timestamp_millis((now + Duration::hours(1)).timestamp_millis()).unwrap();
        b.retry_call_later("c1", 1, 503, Some("busy".into()), at).await.unwrap();

        let entry = a.queue_entries(None, Some("f".into()), 10).await.unwrap().remove(0);
        assert_eq!(entry.state, CallState::Pending);
        assert_eq!((entry.attempts, entry.status, entry.error.as_deref()), (1, Some(503), Some("busy")));
        assert_eq!(entry.next_attempt_at, Some(at));
        assert_eq!(a.queue_depth().await.unwrap(), 1);
        // Only a running call is put back: retrying a pending call changes nothing.
        a.retry_call_later("c1", 5, 500, None, now).await.unwrap();
        let entry = b.queue_entries(None, None, 10).await.unwrap().remove(0);
        assert_eq!((entry.attempts, entry.next_attempt_at), (1, Some(at)));

        let (early, _) = b.claim_calls("gw-b", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert!(early.is_empty(), "a retry ran before its time");
        let later = now + Duration::hours(2);
        let (retried, _) = b
            .claim_calls("gw-b", 10, later, later + Duration::minutes(5), any_room)
            .await
            .unwrap();
        assert_eq!(ids(&retried), ["c1"]);
        assert_eq!(retried[0].attempts, 1);
    }

    /// A pending call cancelled through one gateway is never claimed through the other
    /// and lets go of its body; a running call is not cancelled; each answer says the
    /// state the call was in.
    async fn a_pending_call_is_cancelled(a, b) {
        a.enqueue(call("c1", "f")).await.unwrap();
        a.enqueue(call("c2", "f")).await.unwrap();
        let (running, _) = a.claim_calls("gw-a", 1, Utc::now(), lease(), any_room).await.unwrap();
        let (running, pending) = if running[0].call_id == "c1" { ("c1", "c2") } else { ("c2", "c1") };

        assert_eq!(b.cancel_call(pending).await.unwrap(), Some(CallState::Pending));
        assert_eq!(a.cancel_call(pending).await.unwrap(), Some(CallState::Cancelled));
        assert_eq!(a.cancel_call(running).await.unwrap(), Some(CallState::Running));
        assert_eq!(b.cancel_call("nothing").await.unwrap(), None);
        let (claimed, _) = a.claim_calls("gw-a", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert!(claimed.is_empty(), "a cancelled call was claimed");
        assert_eq!(b.queue_depth().await.unwrap(), 1);

        let headers = call(pending, "f").stored_bytes() - call(pending, "f").body.len() as u64;
        assert_eq!(b.call_bytes(pending).await.unwrap(), Some(("f".to_owned(), headers)));
        let cancelled = a.queue_entries(Some(CallState::Cancelled), None, 10).await.unwrap();
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].call_id, pending);
        let still = a.queue_entries(Some(CallState::Running), None, 10).await.unwrap();
        assert_eq!(still[0].call_id, running);
    }

    /// A call that used up its retries lies dead, counted as such, until it is re-queued
    /// through either gateway; then it runs again from its first attempt.
    async fn a_dead_call_is_requeued(a, b) {
        a.enqueue(call("c1", "f")).await.unwrap();
        a.enqueue(call("c2", "f")).await.unwrap();
        a.claim_calls("gw-a", 10, Utc::now(), lease(), any_room).await.unwrap();
        a.finish_call(finish("c1", CallState::Dead, None)).await.unwrap();
        let counts = b.queue_counts().await.unwrap();
        assert_eq!((counts.depth, counts.dead), (1, 1));
        let dead = b.queue_entries(Some(CallState::Dead), None, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].status, dead[0].error.as_deref()), (Some(500), Some("boom")));

        assert_eq!(b.requeue_dead("c2").await.unwrap(), Some(CallState::Running));
        assert_eq!(b.requeue_dead("nothing").await.unwrap(), None);
        assert_eq!(b.requeue_dead("c1").await.unwrap(), Some(CallState::Dead));
        assert_eq!(a.requeue_dead("c1").await.unwrap(), Some(CallState::Pending));
        let counts = a.queue_counts().await.unwrap();
        assert_eq!((counts.depth, counts.dead), (2, 0));
        let entry = a.queue_entries(Some(CallState::Pending), None, 10).await.unwrap().remove(0);
        assert_eq!((entry.call_id.as_str(), entry.attempts, entry.error), ("c1", 0, None));

        let (again, _) = b.claim_calls("gw-b", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(ids(&again), ["c1"]);
        assert_eq!(again[0].body, b"body of c1", "the dead call lost its body");
    }

    /// Depth, dead letters and bytes are the same through both gateways: pending, running
    /// and dead calls count their headers and body; a done call counts no more.
    async fn counts_depth_and_bytes_are_shared(a, b) {
        let calls = [
            call("f1", "f"),
            QueuedCall { body: vec![7; 1000], ..call("f2", "f") },
            call("g1", "g"),
            QueuedCall { headers: Vec::new(), body: Vec::new(), ..call("h1", "h") },
        ];
        for c in &calls {
            a.enqueue(c.clone()).await.unwrap();
        }
        let bytes_of = |function: &str| -> u64 {
            calls.iter().filter(|c| c.function == function).map(QueuedCall::stored_bytes).sum()
        };
        let mut bytes = b.queue_bytes().await.unwrap();
        bytes.sort();
        assert_eq!(
            bytes,
            [("f".to_owned(), bytes_of("f")), ("g".to_owned(), bytes_of("g")), ("h".to_owned(), bytes_of("h"))]
        );
        assert_eq!(b.call_bytes("f2").await.unwrap(), Some(("f".to_owned(), calls[1].stored_bytes())));
        assert_eq!(a.call_bytes("nothing").await.unwrap(), None);
        assert_eq!(b.queue_depth().await.unwrap(), 4);

        let (claimed, _) = b.claim_calls("gw-b", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(claimed.len(), 4);
        b.finish_call(finish("f2", CallState::Done, None)).await.unwrap();
        b.finish_call(finish("g1", CallState::Dead, None)).await.unwrap();
        let mut bytes = a.queue_bytes().await.unwrap();
        bytes.sort();
        assert_eq!(
            bytes,
            [("f".to_owned(), calls[0].stored_bytes()), ("g".to_owned(), bytes_of("g")), ("h".to_owned(), bytes_of("h"))]
        );
        let counts = a.queue_counts().await.unwrap();
        assert_eq!((counts.depth, counts.dead), (2, 1));
        assert_eq!(a.queue_depth().await.unwrap(), 2);
    }

    /// Running calls whose lease ran out, or whose owner is gone, go back to pending and
    /// are claimed again; reclaimed by both gateways at once, each is reclaimed once. A
    /// call queued already running (leased) is reclaimed like a claimed one.
    async fn calls_of_a_gone_gateway_are_reclaimed(a, b) {
        fn alive(owner: &str) -> bool {
            owner != "gw-gone"
        }
        for i in 0..20 {
            a.enqueue(call(&format!("c{i:02}"), "f")).await.unwrap();
        }
        let now = Utc::now();
        let short = now + Duration::minutes(1);
        let (claimed, _) = a.claim_calls("gw-a", 20, now, short, any_room).await.unwrap();
        assert_eq!(claimed.len(), 20);
        assert_eq!(b.reclaim_calls(alive, now).await.unwrap(), 0, "a live lease was reclaimed");

        let expired = now + Duration::minutes(2);
        let (x, y) = tokio::join!(a.reclaim_calls(alive, expired), b.reclaim_calls(alive, expired));
        assert_eq!(x.unwrap() + y.unwrap(), 20, "calls were reclaimed other than once");
        let (again, _) = b.claim_calls("gw-b", 100, expired, expired + Duration::minutes(5), any_room).await.unwrap();
        assert_eq!(again.len(), 20);

        let leased = QueuedCall {
            lease: Some(("gw-gone".into(), lease())),
            ..call("leased", "f")
        };
        assert!(a.enqueue(leased).await.unwrap());
        let (none, _) = a.claim_calls("gw-a", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert!(none.is_empty(), "a call queued running was claimed");
        let running = b.queue_entries(Some(CallState::Running), None, 100).await.unwrap();
        assert_eq!(running.len(), 21);
        // Its owner is gone although its lease runs: only it is reclaimed.
        assert_eq!(b.reclaim_calls(alive, Utc::now()).await.unwrap(), 1);
        let (back, _) = a.claim_calls("gw-a", 10, Utc::now(), lease(), any_room).await.unwrap();
        assert_eq!(ids(&back), ["leased"]);
    }

    /// A heartbeat moves the leases of the calls its gateway runs, and only those: they
    /// are not taken back when the first lease would have run out; the others are.
    async fn a_heartbeat_keeps_running_calls_from_being_taken_back(a, b) {
        fn alive(_: &str) -> bool {
            true
        }
        for i in 0..6 {
            a.enqueue(call(&format!("c{i}"), "f")).await.unwrap();
        }
        let now = Utc::now();
        let short = now + Duration::seconds(30);
        let (mine, _) = a.claim_calls("gw-a", 3, now, short, any_room).await.unwrap();
        let (theirs, _) = b.claim_calls("gw-b", 3, now, short, any_room).await.unwrap();
        assert_eq!((mine.len(), theirs.len()), (3, 3));
        assert_eq!(a.renew_leases("gw-a", now + Duration::minutes(5)).await.unwrap(), 3);
        // A minute on, only gw-b's calls, never renewed, go back to pending.
        let later = now + Duration::minutes(1);
        assert_eq!(b.reclaim_calls(alive, later).await.unwrap(), 3);
        let pending = b.queue_entries(Some(CallState::Pending), None, 10).await.unwrap();
        let mut back: Vec<String> = pending.into_iter().map(|e| e.call_id).collect();
        back.sort();
        let mut theirs = ids(&theirs);
        theirs.sort();
        assert_eq!(back, theirs);
        // A finished call has no lease left to renew.
        a.finish_call(finish(&mine[0].call_id, CallState::Done, None)).await.unwrap();
        assert_eq!(a.renew_leases("gw-a", later).await.unwrap(), 2);
    }
}

/// On PostgreSQL too, as calls finish, the finished calls older than the newest
/// [`FINISHED_KEPT`] are forgotten; dead letters and results still to deliver stay.
#[tokio::test]
async fn postgres_old_finished_calls_are_forgotten_but_dead_letters_and_undelivered_results_stay() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = PgStore::connect(&url, KeySource::File(dir.path().join("secret.key")))
        .await
        .unwrap();
    let kept = FINISHED_KEPT as usize;
    let total = kept + 2_000;
    let id = |i: usize| format!("c{i:05}");
    let all: Vec<usize> = (0..total).collect();
    // In rounds, so that the calls are queued (and finished) oldest first.
    for round in all.chunks(1_000) {
        let mut enqueues = Vec::new();
        for &i in round {
            let queued = QueuedCall {
                // The second call has a callback whose delivery is still to come.
                callback_url: (i == 1).then(|| "https://example.com/cb".to_owned()),
                ..call(&id(i), "f")
            };
            let store = store.clone();
            enqueues.push(tokio::spawn(async move { store.enqueue(queued).await }));
        }
        for enqueue in enqueues {
            assert!(enqueue.await.unwrap().unwrap());
        }
    }
    for round in all.chunks(1_000) {
        let mut finishes = Vec::new();
        for &i in round {
            let state = if i == 0 {
                CallState::Dead
            } else {
                CallState::Done
            };
            let finished = finish(&id(i), state, (i == 1).then_some(&b"ok"[..]));
            let store = store.clone();
            finishes.push(tokio::spawn(
                async move { store.finish_call(finished).await },
            ));
        }
        for finish in finishes {
            finish.await.unwrap().unwrap();
        }
    }
    let mut left: Vec<String> = store
        .queue_entries(None, None, total as u32)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.call_id)
        .collect();
    left.sort();
    let mut expected = vec![id(0), id(1)];
    expected.extend((total - kept..total).map(id));
    assert_eq!(
        left.len(),
        expected.len(),
        "{} of {total} calls left",
        left.len()
    );
    assert_eq!(left, expected);
    assert_eq!(store.callbacks_due().await.unwrap().len(), 1);
}

/// The heartbeat does not wait for a row another transaction holds (a batch of finishing
/// calls locks its rows in its own order; waiting could deadlock with it): it renews the
/// others and leaves that one to the next beat.
#[tokio::test]
async fn postgres_renewing_leases_passes_over_a_row_being_finished() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = PgStore::connect(&url, KeySource::File(dir.path().join("secret.key")))
        .await
        .unwrap();
    let lease = || Utc::now() + Duration::seconds(60);
    for id in ["held", "free"] {
        let queued = QueuedCall {
            lease: Some(("gw-a".into(), lease())),
            ..call(id, "f")
        };
        assert!(store.enqueue(queued).await.unwrap());
    }
    let (mut other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = other.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM queue WHERE call_id = 'held' FOR UPDATE", &[])
        .await
        .unwrap();
    let renewed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.renew_leases("gw-a", lease()),
    )
    .await
    .expect("the heartbeat waited for the held row")
    .unwrap();
    assert_eq!(renewed, 1);
    tx.rollback().await.unwrap();
    assert_eq!(store.renew_leases("gw-a", lease()).await.unwrap(), 2);
}

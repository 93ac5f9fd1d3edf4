//! One set of tests for both stores: each test written in a `contract!` block runs once
//! on SQLite and once on PostgreSQL (a throwaway cluster, see [`super::pg_cluster`]),
//! each time with two handles `a` and `b` on one database, as two gateways would hold
//! them (two `Store`s on one SQLite file; two `PgStore`s, each with its own pool, on one
//! PostgreSQL database). The state every gateway shares is here; the queue's and the
//! activation records' tests are in their own files.

use std::any::Any;

use chrono::{Duration, Utc};

use super::pg_cluster::cluster;
use super::postgres::PgStore;
use super::{Durability, KeyError, KeySource, Store, StoreError, TokenRecord, UiSession};
use crate::function::{FunctionDeployment, FunctionName};

/// Two SQLite handles on one file, with the key file beside it.
async fn sqlite_pair() -> (Box<dyn Any>, Store, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hark.db");
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    (Box::new(dir), a, b)
}

/// Two PostgreSQL handles on a new database, given the same key file; `None` when
/// PostgreSQL is not installed here (outside CI).
async fn postgres_pair() -> Option<(Box<dyn Any>, PgStore, PgStore)> {
    let url = cluster()?.database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = || KeySource::File(dir.path().join("secret.key"));
    let a = PgStore::connect(&url, key()).await.unwrap();
    let b = PgStore::connect(&url, key()).await.unwrap();
    Some((Box::new(dir), a, b))
}

macro_rules! contract {
    ($( $(#[$doc:meta])* async fn $name:ident($a:ident, $b:ident) $body:block )*) => {
        mod sqlite {
            use super::*;
            $(
                $(#[$doc])*
                #[tokio::test]
                async fn $name() {
                    let (_keep, $a, $b) = sqlite_pair().await;
                    $body
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                $(#[$doc])*
                #[tokio::test]
                async fn $name() {
                    let Some((_keep, $a, $b)) = postgres_pair().await else {
                        return;
                    };
                    $body
                }
            )*
        }
    };
}

fn deployment(name: &str, image: &str) -> FunctionDeployment {
    serde_json::from_value(serde_json::json!({ "service": name, "image": image })).unwrap()
}

fn token(jti: &str, admin_file: bool, issued_secs_ago: i64) -> TokenRecord {
    let issued = Utc::now() - Duration::seconds(issued_secs_ago);
    TokenRecord {
        id: jti.into(),
        subject: "ci".into(),
        scopes: vec!["functions:read".into(), "secrets:write".into()],
        kid: "k1".into(),
        issued_at: chrono::DateTime::from_timestamp(issued.timestamp(), 0).unwrap(),
        expires_at: None,
        revoked_at: None,
        admin_file,
    }
}

fn session(jti: Option<&str>, expires_in: i64) -> UiSession {
    let now = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    UiSession {
        jti: jti.map(str::to_owned),
        kid: Some("k1".into()),
        subject: "ada".into(),
        scopes: vec!["ui".into()],
        created_at: now,
        expires_at: now + Duration::seconds(expires_in),
    }
}

contract! {
    /// A function deployed through one gateway is seen, scaled and removed through the
    /// other; a redeploy keeps its creation time.
    async fn functions_are_shared(a, b) {
        let name: FunctionName = "echo".parse().unwrap();
        a.put_function(&deployment("echo", "v1"), 1).await.unwrap();
        a.put_function(&deployment("alpha", "v1"), 2).await.unwrap();
        let first = b.function(&name).await.unwrap().expect("seen by the other");
        assert_eq!(first.spec.image, "v1");
        assert_eq!(first.replicas, 1);
        b.put_function(&deployment("echo", "v2"), 3).await.unwrap();
        let again = a.function(&name).await.unwrap().unwrap();
        assert_eq!((again.spec.image.as_str(), again.replicas), ("v2", 3));
        assert_eq!(again.created_at, first.created_at);
        a.set_replicas(&name, 5).await.unwrap();
        let names: Vec<(String, u32)> = b
            .functions()
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.spec.service.to_string(), f.replicas))
            .collect();
        assert_eq!(names, [("alpha".to_owned(), 2), ("echo".to_owned(), 5)]);
        assert!(b.delete_function(&name).await.unwrap());
        assert!(!a.delete_function(&name).await.unwrap());
        assert!(a.function(&name).await.unwrap().is_none());
    }

    /// A secret set through one gateway is read (opened with the shared key) through the
    /// other; replacing says it existed; deleting removes it for both.
    async fn secrets_are_shared_and_sealed(a, b) {
        assert!(!a.put_secret("slack-token", b"xoxb-1".to_vec()).await.unwrap());
        assert_eq!(b.secret("slack-token").await.unwrap().as_deref(), Some(&b"xoxb-1"[..]));
        assert!(b.put_secret("slack-token", b"xoxb-2".to_vec()).await.unwrap());
        a.put_secret("github-key", vec![0, 255, 1]).await.unwrap();
        assert_eq!(a.secret("slack-token").await.unwrap().unwrap(), b"xoxb-2");
        assert_eq!(b.secret("github-key").await.unwrap().unwrap(), [0, 255, 1]);
        assert_eq!(b.secret_names().await.unwrap(), ["github-key", "slack-token"]);
        assert!(a.delete_secret("slack-token").await.unwrap());
        assert!(!b.delete_secret("slack-token").await.unwrap());
        assert!(b.secret("slack-token").await.unwrap().is_none());
        assert!(a.secret("nothing").await.unwrap().is_none());
    }

    /// A delivery id is new once, whichever gateway sees it first; the same ids sent to
    /// both gateways at the same moment are each taken by exactly one.
    async fn a_delivery_runs_once_across_gateways(a, b) {
        let now = Utc::now().timestamp();
        assert!(a.first_delivery("slack/a", "Ev1", now).await.unwrap());
        assert!(!b.first_delivery("slack/a", "Ev1", now).await.unwrap());
        // Another channel's id of the same text is another delivery.
        assert!(b.first_delivery("github/triage", "Ev1", now).await.unwrap());
        let mut races = Vec::new();
        for i in 0..50 {
            let (a, b) = (a.clone(), b.clone());
            let id = format!("Race{i}");
            races.push(tokio::spawn(async move {
                let (x, y) = tokio::join!(
                    a.first_delivery("slack/a", &id, now),
                    b.first_delivery("slack/a", &id, now)
                );
                u8::from(x.unwrap()) + u8::from(y.unwrap())
            }));
        }
        for race in races {
            assert_eq!(race.await.unwrap(), 1, "a delivery ran other than once");
        }
        // Past the kept window an id is forgotten: a week later it is new again.
        let later = now + crate::store::DELIVERY_IDS_KEPT_SECS + 1;
        assert!(b.first_delivery("slack/a", "Ev1", later).await.unwrap());
    }

    /// Tokens recorded through one gateway are listed by the other, newest first; a
    /// revocation through either is the standing on both and ends the token's sessions.
    async fn tokens_and_revocations_are_shared(a, b) {
        let old = token("old", false, 60);
        a.record_token(old.clone()).await.unwrap();
        b.record_token(token("new", false, 0)).await.unwrap();
        let listed: Vec<String> = a.tokens().await.unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(listed, ["new", "old"]);
        assert_eq!(b.token("old").await.unwrap(), Some(old));
        assert!(a.token("none").await.unwrap().is_none());

        let standing = b.token_standing(Some("old".into()), Some("k1".into())).await.unwrap();
        assert!(standing.known && !standing.revoked && !standing.key_retired);
        let kept = session(Some("old"), 3600);
        a.create_ui_session("h-old", kept.clone()).await.unwrap();
        assert_eq!(b.ui_session("h-old").await.unwrap(), Some(kept));

        assert!(a.revoke_token("old").await.unwrap());
        assert!(!a.revoke_token("none").await.unwrap());
        let standing = b.token_standing(Some("old".into()), None).await.unwrap();
        assert!(standing.known && standing.revoked);
        assert!(b.ui_session("h-old").await.unwrap().is_none(), "session outlived its token");
        assert!(b.token("old").await.unwrap().unwrap().revoked_at.is_some());
        let unknown = a.token_standing(Some("forged".into()), None).await.unwrap();
        assert!(!unknown.known && !unknown.revoked);
    }

    /// Retiring a signing key through one gateway refuses its tokens on the other.
    async fn a_retired_key_is_retired_everywhere(a, b) {
        assert!(!b.key_retired("k1").await.unwrap());
        a.retire_key("k1").await.unwrap();
        a.retire_key("k1").await.unwrap();
        assert!(b.key_retired("k1").await.unwrap());
        assert!(!b.key_retired("k2").await.unwrap());
        let standing = b.token_standing(Some("t".into()), Some("k1".into())).await.unwrap();
        assert!(standing.key_retired);
    }

    /// The first gateway's value is kept and the next one is held to it, until one sets
    /// another (the agreed signing key).
    async fn the_first_value_is_kept_until_replaced(a, b) {
        assert_eq!(a.first_meta("contract", b"k1".to_vec()).await.unwrap(), b"k1");
        assert_eq!(b.first_meta("contract", b"k2".to_vec()).await.unwrap(), b"k1");
        b.set_meta("contract", b"k2".to_vec()).await.unwrap();
        assert_eq!(a.first_meta("contract", b"k3".to_vec()).await.unwrap(), b"k2");
    }

    /// Rotating the admin token revokes the other admin tokens and their sessions, on
    /// both gateways; with legacy refusal, tokens without an id are refused too.
    async fn rotating_the_admin_token_is_shared(a, b) {
        a.record_token(token("admin-1", true, 10)).await.unwrap();
        a.record_token(token("admin-2", true, 5)).await.unwrap();
        a.record_token(token("minted", false, 5)).await.unwrap();
        b.create_ui_session("h1", session(Some("admin-1"), 3600)).await.unwrap();
        b.create_ui_session("h-legacy", session(None, 3600)).await.unwrap();
        assert!(!a.token_standing(None, None).await.unwrap().legacy_refused);

        let mut revoked = b.rotate_admin_token("admin-2", true).await.unwrap();
        revoked.sort();
        assert_eq!(revoked, ["admin-1"]);
        assert!(a.token_standing(Some("admin-1".into()), None).await.unwrap().revoked);
        assert!(!a.token_standing(Some("admin-2".into()), None).await.unwrap().revoked);
        assert!(!a.token_standing(Some("minted".into()), None).await.unwrap().revoked);
        assert!(a.ui_session("h1").await.unwrap().is_none());
        assert!(a.ui_session("h-legacy").await.unwrap().is_none());
        assert!(a.token_standing(None, None).await.unwrap().legacy_refused);
        // Only a token without an id is "legacy".
        assert!(!a.token_standing(Some("minted".into()), None).await.unwrap().legacy_refused);
    }

    /// A UI session is found through either gateway until it expires or is deleted.
    async fn ui_sessions_are_shared_until_they_end(a, b) {
        a.create_ui_session("live", session(Some("t"), 3600)).await.unwrap();
        a.create_ui_session("stale", session(Some("t"), -1)).await.unwrap();
        assert!(b.ui_session("live").await.unwrap().is_some());
        assert!(b.ui_session("stale").await.unwrap().is_none(), "an expired session was found");
        b.delete_ui_session("live").await.unwrap();
        assert!(a.ui_session("live").await.unwrap().is_none());
    }

    /// A schedule tick looked at by every gateway at the same moment is claimed by one;
    /// its outcome and the anchor are seen by all, and the anchor never goes back.
    async fn each_schedule_tick_is_claimed_once(a, b) {
        let start = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let mut races = Vec::new();
        for i in 0..30 {
            let (a, b) = (a.clone(), b.clone());
            let tick = start + Duration::seconds(i);
            races.push(tokio::spawn(async move {
                let (x, y) = tokio::join!(
                    a.claim_tick("nightly", tick, "gw-a", "running", Some(format!("a{i}"))),
                    b.claim_tick("nightly", tick, "gw-b", "running", Some(format!("b{i}")))
                );
                u8::from(x.unwrap()) + u8::from(y.unwrap())
            }));
        }
        for race in races {
            assert_eq!(race.await.unwrap(), 1, "a tick fired other than once");
        }
        // The same tick of another schedule is its own.
        assert!(b.claim_tick("hourly", start, "gw-b", "running", None).await.unwrap());
        a.finish_tick("nightly", start, "ok", Some(200), 12.5).await.unwrap();
        let runs = b.schedule_runs("nightly", 2).await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].tick, start + Duration::seconds(29));
        let first = b.schedule_runs("nightly", 100).await.unwrap().pop().unwrap();
        assert_eq!(first.tick, start);
        assert_eq!((first.outcome.as_str(), first.status, first.duration_ms), ("ok", Some(200), Some(12.5)));

        assert!(b.schedule_anchor("nightly").await.unwrap().is_none());
        a.set_schedule_anchor("nightly", start + Duration::seconds(60)).await.unwrap();
        b.set_schedule_anchor("nightly", start).await.unwrap();
        assert_eq!(
            a.schedule_anchor("nightly").await.unwrap(),
            Some(start + Duration::seconds(60))
        );
    }

    /// A late Alexa result kept by one gateway is spoken by the user's next request
    /// through the other, once, oldest first; attributes are per skill and user.
    async fn late_alexa_results_are_spoken_once_wherever_the_user_comes_back(a, b) {
        let mut attributes = serde_json::Map::new();
        attributes.insert("visits".into(), 3.into());
        a.put_alexa_user_attributes("holiday", "u1", &attributes).await.unwrap();
        assert_eq!(b.alexa_user_attributes("holiday", "u1").await.unwrap(), attributes);
        assert!(b.alexa_user_attributes("holiday", "u2").await.unwrap().is_empty());
        assert!(b.alexa_user_attributes("other", "u1").await.unwrap().is_empty());

        let created_at = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
        for i in 0..3 {
            let reply = crate::store::PendingReply {
                call_id: format!("c{i}"),
                intent: "BookIntent".into(),
                speech: format!("<speak>Booked {i}</speak>"),
                created_at,
            };
            a.push_alexa_pending("holiday", "u1", reply.clone()).await.unwrap();
            // The same call kept twice is spoken once.
            b.push_alexa_pending("holiday", "u1", reply).await.unwrap();
        }
        let (x, y) = tokio::join!(
            a.take_alexa_pending("holiday", "u1"),
            b.take_alexa_pending("holiday", "u1")
        );
        let mut spoken: Vec<String> = x.unwrap().into_iter().chain(y.unwrap()).map(|p| p.call_id).collect();
        spoken.sort();
        assert_eq!(spoken, ["c0", "c1", "c2"]);
        assert!(a.take_alexa_pending("holiday", "u1").await.unwrap().is_empty());

        a.push_alexa_pending("holiday", "u1", crate::store::PendingReply {
            call_id: "c9".into(),
            intent: "BookIntent".into(),
            speech: "<speak>Later</speak>".into(),
            created_at,
        }).await.unwrap();
        let taken = b.take_alexa_pending("holiday", "u1").await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].speech.as_str(), taken[0].created_at), ("<speak>Later</speak>", created_at));
    }

    /// A failed browser call's screenshot kept by one gateway is shown by the other; a
    /// second one of the same call replaces the first.
    async fn screenshots_are_shared(a, b) {
        a.put_screenshot("c1", "https://hr.example/step3", vec![137, 80, 78, 71]).await.unwrap();
        let shot = b.screenshot("c1").await.unwrap().expect("seen by the other");
        assert_eq!((shot.url.as_str(), shot.png.as_slice()), ("https://hr.example/step3", &[137, 80, 78, 71][..]));
        b.put_screenshot("c1", "https://hr.example/step4", vec![1]).await.unwrap();
        assert_eq!(a.screenshot("c1").await.unwrap().unwrap().url, "https://hr.example/step4");
        assert!(a.screenshot("c2").await.unwrap().is_none());
    }
}

/// Gateways starting together on a new database migrate it once, one after the other,
/// and all start.
#[tokio::test]
async fn postgres_gateways_starting_together_all_migrate() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    // One key for all, given as the variable would give it.
    let key = KeySource::Env("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned());
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let (url, key) = (url.clone(), key.clone());
            tokio::spawn(async move { PgStore::connect(&url, key).await })
        })
        .collect();
    for start in starts {
        let store = start.await.unwrap().expect("every gateway starts");
        assert_eq!(
            store.schema_version().await.unwrap(),
            super::postgres::SCHEMA_VERSION
        );
    }
}

/// A database a newer Hark migrated is refused before anything is changed, and a gateway
/// given another secrets key than the first one's is refused.
#[tokio::test]
async fn postgres_refuses_a_newer_schema_and_another_key() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let dir = tempfile::tempdir().unwrap();
    let first = PgStore::connect(&url, KeySource::File(dir.path().join("a.key")))
        .await
        .unwrap();
    first.put_secret("s", b"v".to_vec()).await.unwrap();
    // A well-formed key, but not the one the first gateway stored its check with.
    std::fs::write(
        dir.path().join("b.key"),
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
    )
    .unwrap();
    let other_key = PgStore::connect(&url, KeySource::File(dir.path().join("b.key"))).await;
    assert!(
        matches!(other_key, Err(StoreError::Key(KeyError::Wrong(_)))),
        "another key was accepted"
    );
    // No key file is made up for a database that already holds secrets.
    let no_key = PgStore::connect(&url, KeySource::File(dir.path().join("c.key"))).await;
    assert!(
        matches!(no_key, Err(StoreError::Key(KeyError::Missing(_)))),
        "a missing key was accepted"
    );
    assert!(
        !dir.path().join("c.key").exists(),
        "a key was made for a database with secrets"
    );

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("UPDATE hark_schema SET version = 99")
        .await
        .unwrap();
    let newer = PgStore::connect(&url, KeySource::File(dir.path().join("a.key"))).await;
    match newer {
        Err(e @ StoreError::NewerSchema { found: 99, .. }) => {
            assert!(e.to_string().contains("newer"), "{e}")
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
    let version: i64 = client
        .query_one("SELECT version FROM hark_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 99, "the refused database was changed");
    assert_eq!(first.secret("s").await.unwrap().unwrap(), b"v");
}

mod history;
mod queue;

/// `--durability normal` on PostgreSQL turns `synchronous_commit` off on that gateway's
/// connections only; `full` leaves the server's setting (on by default).
#[tokio::test]
async fn postgres_durability_is_each_gateways_own() {
    let Some(cluster) = cluster() else {
        return;
    };
    let url = cluster.database().await;
    let key = || KeySource::Env("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned());
    let normal = Store::connect(&url, key(), Durability::Normal)
        .await
        .unwrap();
    let full = Store::connect(&url, key(), Durability::Full).await.unwrap();
    assert_eq!(
        normal.committed_durability().await.unwrap(),
        Some(Durability::Normal)
    );
    assert_eq!(
        full.committed_durability().await.unwrap(),
        Some(Durability::Full)
    );
}

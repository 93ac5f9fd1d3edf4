//! The store's SQLite connection, owned by a thread of its own: work on it comes in as
//! closures, runs there one at a time in the order it arrived, and each result goes back
//! to the task that asked for it.
//!
//! One thread rather than the runtime's blocking pool around a mutex: under load the
//! pool grew a thread per waiting caller, all queued on the mutex, and every hand-over
//! between them cost a futex wake-up and a context switch.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle on the connection's thread. Cloning shares the thread; dropping the last
/// handle waits for the work queued so far, then closes the connection (so a stopped
/// gateway leaves its database checkpointed, without `-wal` and `-shm` files) before
/// it returns.
#[derive(Clone)]
pub(super) struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The thread ends once its queue is closed and empty.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Db {
    /// Moves `conn` to a thread of its own.
    pub(super) fn start(conn: Connection) -> Result<Db, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    // A panicking job loses its own answer (its caller sees the store
                    // as closed), not the thread.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                        tracing::error!("a store operation panicked");
                    }
                }
            })
            .map_err(|e| StoreError::Write(format!("cannot start the store's thread: {e}")))?;
        Ok(Db {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
        })
    }

    /// Runs `f` on the connection and waits for its result.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::Closed)?;
        jobs.send(Box::new(move |conn: &mut Connection| {
            let _ = answer.send(f(conn));
        }))
        .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)
    }
}

/// Adds to `table` each of `columns` (name, SQL type and default) it lacks: a table made
/// by an older Hark brought up to the current schema.
pub(super) fn add_missing_columns(
    conn: &Connection,
    table: &str,
    columns: &[(&str, &str)],
) -> Result<(), StoreError> {
    let existing: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let rows = stmt.query_map([table], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for (column, kind) in columns {
        if !existing.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_from_many_tasks_all_runs_and_a_panic_does_not_stop_the_thread() {
        let db = Db::start(Connection::open_in_memory().unwrap()).unwrap();
        db.run(|c| c.execute_batch("CREATE TABLE t (n INTEGER)").unwrap())
            .await
            .unwrap();
        let writes: Vec<_> = (0..50)
            .map(|n| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.run(move |c| c.execute("INSERT INTO t VALUES (?1)", [n]).unwrap())
                        .await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        let panicked = db.run(|_| -> u32 { panic!("on purpose") }).await;
        assert!(matches!(panicked, Err(StoreError::Closed)), "{panicked:?}");
        let count: i64 = db
            .run(|c| {
                c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                    .unwrap()
            })
            .await
            .unwrap();
        assert_eq!(count, 50);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_database_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER)")
            .unwrap();
        let db = Db::start(conn).unwrap();
        let other = db.clone();
        db.run(|c| c.execute("INSERT INTO t VALUES (1)", []).unwrap())
            .await
            .unwrap();
        drop(db);
        assert!(dir.path().join("t.db-wal").exists(), "closed too early");
        drop(other);
        // SQLite removes the write-ahead log when its last connection closes.
        assert!(!dir.path().join("t.db-wal").exists(), "not closed on drop");
    }
}

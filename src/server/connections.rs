//! The gateway's open connections, counted against `hark up --max-connections`. A client
//! keeps its connections open between requests (keep-alive), so at the cap most of them are
//! often idle: the connection idle longest is then asked to close to make room for a new
//! one, as nginx does when it runs out of connections. Without that, a client that had
//! opened many connections in a burst kept every newcomer waiting in the listen backlog
//! until an idle connection timed out, far longer than any client waits.
//!
//! Only a connection idle for [`MIN_IDLE`] is closed. A connection the client has just
//! sent a request on looks idle until the gateway reads it, and closing it then fails that
//! request; clients reuse their most recently used connection first, so one idle that
//! long is one the client is not about to use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Duration, Instant};

/// How long a connection must have been idle to be closed to make room.
pub(crate) const MIN_IDLE: Duration = Duration::from_secs(1);

use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// The open connections and the permits they hold.
pub(crate) struct Connections {
    permits: Arc<Semaphore>,
    max: u32,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// What idle stamps count from.
    epoch: Instant,
    /// Wakes a waiting newcomer when a connection falls idle.
    fell_idle: Notify,
}

/// One open connection, as the server sees it between requests.
pub(crate) struct Conn {
    /// Requests (HTTP/2 streams) being handled.
    busy: AtomicUsize,
    /// Whether bytes of a request head came in since the last answer: a header timeout then
    /// means a slow sender, else an idle keep-alive connection; and the connection is not
    /// idle.
    pub(crate) received: AtomicBool,
    /// When it last fell idle, in microseconds from [`Connections::epoch`].
    idle_since: AtomicU64,
    /// Whether it was asked to close.
    asked: AtomicBool,
    close: Notify,
}

/// A connection's place under the cap; given back when dropped.
pub(crate) struct Slot {
    pub(crate) conn: Arc<Conn>,
    id: u64,
    connections: Arc<Connections>,
    _permit: OwnedSemaphorePermit,
}

/// A request in progress on a connection (see [`Conn::start`]).
pub(crate) struct Busy {
    conn: Arc<Conn>,
    connections: Arc<Connections>,
}

impl Connections {
    /// Room for `max` connections (at least one).
    pub(crate) fn new(max: usize) -> Arc<Connections> {
        let max = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
        Arc::new(Connections {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            fell_idle: Notify::new(),
        })
    }

    /// A place for a connection just accepted: at once under the cap; at the cap, after
    /// the connection idle longest (for [`MIN_IDLE`] at least) closes, or when any
    /// connection closes.
    pub(crate) async fn slot(self: &Arc<Self>) -> Slot {
        let mut warned = false;
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return self.register(permit);
            }
            let idle = self.fell_idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            // Until the next connection is idle long enough; forever when none is idle.
            let wait = match self.close_idlest() {
                Idlest::Asked => {
                    tracing::debug!(
                        max_connections = self.max,
                        "connection cap reached; closing the connection idle longest"
                    );
                    None
                }
                Idlest::TooRecent(wait) => Some(wait),
                Idlest::None => {
                    if !warned {
                        warned = true;
                        static ALL_BUSY: Throttle = Throttle::new(REPEAT_INTERVAL);
                        crate::warn_repeated!(
                            ALL_BUSY,
                            "connection cap reached, every connection busy",
                            max_connections = self.max,
                            "connection cap reached and every connection is busy; a new connection waits until one closes or falls idle"
                        );
                    }
                    None
                }
            };
            let eligible = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => return self.register(permit),
                    Err(_) => unreachable!("the semaphore is never closed"),
                },
                () = idle => {}
                () = eligible => {}
            }
        }
    }

    /// Waits until every connection has closed.
    pub(crate) async fn all_closed(&self) {
        let _all = self.permits.acquire_many(self.max).await;
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            received: AtomicBool::new(false),
            idle_since: AtomicU64::new(self.now()),
            asked: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.open_conns().insert(id, conn.clone());
        Slot {
            conn,
            id,
            connections: self.clone(),
            _permit: permit,
        }
    }

    /// Asks the connection idle longest to close, if it has been idle for [`MIN_IDLE`].
    fn close_idlest(&self) -> Idlest {
        let open = self.open_conns();
        // Stamps can be equal: the connection opened first counts as idle longer.
        let idlest = open
            .iter()
            .filter(|(_, c)| c.is_idle() && !c.asked.load(Ordering::Relaxed))
            .min_by_key(|(id, c)| (c.idle_since.load(Ordering::Relaxed), **id))
            .map(|(_, c)| c);
        let Some(conn) = idlest else {
            return Idlest::None;
        };
        let idle_for = self
            .now()
            .saturating_sub(conn.idle_since.load(Ordering::Relaxed));
        let min = MIN_IDLE.as_micros() as u64;
        if idle_for < min {
            return Idlest::TooRecent(Duration::from_micros(min - idle_for));
        }
        conn.asked.store(true, Ordering::Relaxed);
        // Kept for the connection's task if it is not waiting at this moment.
        conn.close.notify_one();
        Idlest::Asked
    }

    /// Microseconds since [`Connections::epoch`].
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn open_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Connections::close_idlest`] found.
enum Idlest {
    /// The connection idle longest was asked to close.
    Asked,
    /// The connection idle longest will have been idle long enough after this wait.
    TooRecent(Duration),
    /// No connection is idle.
    None,
}

impl Conn {
    /// Notes a request being handled until the guard drops.
    pub(crate) fn start(self: &Arc<Self>, connections: &Arc<Connections>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy {
            conn: self.clone(),
            connections: connections.clone(),
        }
    }

    /// Completes when the connection is asked to close to make room.
    pub(crate) async fn asked_to_close(&self) {
        self.close.notified().await;
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 && !self.received.load(Ordering::Relaxed)
    }
}

impl Slot {
    /// The connections this slot counts among.
    pub(crate) fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.open_conns().remove(&self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // What arrives from here on belongs to the next request.
        self.conn.received.store(false, Ordering::Relaxed);
        if self.conn.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = self.connections.now();
            self.conn.idle_since.store(now, Ordering::Relaxed);
            self.connections.fell_idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_connection_idle_longest_is_asked_to_close() {
        let connections = Connections::new(2);
        let first = connections.slot().await;
        let second = connections.slot().await;
        // The first falls idle after the second.
        drop(second.conn.start(&connections));
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(first.conn.start(&connections));

        let third = tokio::spawn({
            let connections = connections.clone();
            async move { connections.slot().await }
        });
        // Not before it has been idle for MIN_IDLE.
        tokio::time::sleep(MIN_IDLE / 2).await;
        assert!(
            !second.conn.asked.load(Ordering::Relaxed),
            "idle too briefly"
        );
        tokio::time::timeout(MIN_IDLE, second.conn.asked_to_close())
            .await
            .expect("the connection idle longest is asked to close");
        assert!(!first.conn.asked.load(Ordering::Relaxed));
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the newcomer gets the place")
            .unwrap();
        assert_eq!(connections.open_conns().len(), 2);
        drop((first, third));
        connections.all_closed().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_left_alone_until_it_falls_idle() {
        let connections = Connections::new(1);
        let only = connections.slot().await;
        let request = only.conn.start(&connections);
        let newcomer = tokio::spawn({
            let connections = connections.clone();
            async move { connections.slot().await }
        });
        tokio::time::sleep(MIN_IDLE * 3).await;
        assert!(!only.conn.asked.load(Ordering::Relaxed), "busy: not asked");
        drop(request);
        tokio::time::timeout(MIN_IDLE * 2, only.conn.asked_to_close())
            .await
            .expect("asked once the request is answered and it was idle for MIN_IDLE");
        drop(only);
        tokio::time::timeout(Duration::from_secs(5), newcomer)
            .await
            .expect("the newcomer gets the place")
            .unwrap();
    }
}

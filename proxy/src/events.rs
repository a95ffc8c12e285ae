//! Typed events: every connection opened or closed, every failed dial, every toxic that acts on
//! a connection, every change made through the API.
//!
//! One [`EventBus::emit`] does three things, so logs, metrics and reports always agree: it logs
//! the event with `tracing`, counts it (per kind on the bus, per proxy in [`ProxyStats`]), and
//! sends it to `GET /events` subscribers over a bounded broadcast channel (a subscriber that
//! falls behind is told how many events it missed; the data plane never waits for it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::metrics::ProxyStats;
use crate::toxics::Direction;

/// How many events a slow `/events` subscriber may fall behind before it misses some.
const CHANNEL_CAPACITY: usize = 8192;

/// Something that happened on a proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Wall-clock time in microseconds since the Unix epoch.
    pub ts_us: u64,
    /// The proxy it happened on.
    pub proxy: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum CloseReason {
    /// Both sides closed their halves.
    Peers,
    /// A toxic closed it (timeout, limit_data, or a removed timeout that had swallowed bytes).
    Toxic {
        /// The toxic's name.
        toxic: String,
    },
    /// A toxic reset it (reset_peer).
    ToxicReset {
        /// The toxic's name.
        toxic: String,
    },
    /// The proxy was disabled, changed, deleted or shut down.
    Proxy,
    /// The bytes could not be framed as the proxy's protocol.
    Protocol {
        /// What the framing found.
        error: String,
    },
    /// A socket error on one side.
    Error {
        /// The side that failed: `client` or `upstream`.
        side: &'static str,
        /// The error text.
        error: String,
    },
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A client connected and its upstream connection is open.
    ConnectionOpened {
        /// Connection id, unique for the life of the process.
        connection: u64,
        /// The client's address.
        client: SocketAddr,
        /// The upstream address dialled.
        upstream: String,
    },
    /// A connection ended.
    ConnectionClosed {
        /// Connection id.
        connection: u64,
        /// The client's address.
        client: SocketAddr,
        /// Why it ended.
        reason: CloseReason,
        /// Bytes forwarded client -> server.
        bytes_upstream: u64,
        /// Bytes forwarded server -> client.
        bytes_downstream: u64,
    },
    /// The upstream could not be dialled; the client was reset at once.
    DialFailed {
        /// The client's address.
        client: SocketAddr,
        /// The upstream address.
        upstream: String,
        /// Why the dial failed.
        error: String,
    },
    /// A toxic started acting on a connection (its per-connection `toxicity` draw came up).
    ToxicActivated {
        /// Connection id.
        connection: u64,
        /// The client's address.
        client: SocketAddr,
        /// Toxic name.
        toxic: String,
        /// Toxic type.
        toxic_type: &'static str,
        /// The link it acts on.
        direction: Direction,
    },
    /// A message fault acted on a request.
    MessageFault {
        /// Connection id.
        connection: u64,
        /// The client's address.
        client: SocketAddr,
        /// Toxic name.
        toxic: String,
        /// Toxic type.
        toxic_type: &'static str,
        /// What it did: `delay 800ms`, `error 40001`, `lose_write`, `drop`, `blackhole`, ...
        action: String,
        /// The request: SQL (cut at 200 characters) or `COMMAND key`.
        request: String,
    },
    /// A toxic was added.
    ToxicAdded {
        /// The toxic as the API shows it.
        toxic: serde_json::Value,
    },
    /// A toxic was changed.
    ToxicUpdated {
        /// The toxic as the API shows it, after the change.
        toxic: serde_json::Value,
    },
    /// A toxic was removed.
    ToxicRemoved {
        /// Toxic name.
        toxic: String,
    },
    /// A proxy was created, changed, enabled or disabled.
    ProxyUpdated {
        /// The bound listen address.
        listen: String,
        /// The upstream address.
        upstream: String,
        /// Whether it accepts connections.
        enabled: bool,
    },
    /// A proxy was deleted.
    ProxyDeleted,
}

impl EventKind {
    /// Every kind's name, in the order of [`EventKind::index`].
    pub const NAMES: [&'static str; 10] = [
        "connection_opened",
        "connection_closed",
        "dial_failed",
        "toxic_activated",
        "message_fault",
        "toxic_added",
        "toxic_updated",
        "toxic_removed",
        "proxy_updated",
        "proxy_deleted",
    ];

    /// Position of this kind in [`EventKind::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            EventKind::ConnectionOpened { .. } => 0,
            EventKind::ConnectionClosed { .. } => 1,
            EventKind::DialFailed { .. } => 2,
            EventKind::ToxicActivated { .. } => 3,
            EventKind::MessageFault { .. } => 4,
            EventKind::ToxicAdded { .. } => 5,
            EventKind::ToxicUpdated { .. } => 6,
            EventKind::ToxicRemoved { .. } => 7,
            EventKind::ProxyUpdated { .. } => 8,
            EventKind::ProxyDeleted => 9,
        }
    }
}

/// Where events go: logs, counters and subscribers.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
    counts: [AtomicU64; EventKind::NAMES.len()],
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            counts: Default::default(),
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl EventBus {
    /// Logs, counts and publishes an event of `proxy`.
    pub fn emit(&self, proxy: &str, stats: &ProxyStats, kind: EventKind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        stats.count(&kind);
        let event = Event {
            ts_us: now_us(),
            proxy: proxy.to_owned(),
            kind,
        };
        match &event.kind {
            EventKind::ConnectionOpened { .. }
            | EventKind::ConnectionClosed { .. }
            | EventKind::ToxicActivated { .. } => {
                tracing::debug!(target: "chaos_proxy::events", event = %Json(&event));
            }
            EventKind::DialFailed { .. } => {
                tracing::warn!(target: "chaos_proxy::events", event = %Json(&event));
            }
            _ => tracing::info!(target: "chaos_proxy::events", event = %Json(&event)),
        }
        // No subscriber is fine: the event was logged and counted.
        let _ = self.sender.send(Arc::new(event));
    }

    /// A new subscriber that sees every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// How many events of each kind were emitted, as (kind name, count).
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EventKind::NAMES
            .iter()
            .zip(&self.counts)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
    }
}

/// Displays a value as JSON, only when the log line is actually written.
struct Json<'a, T>(&'a T);

impl<T: Serialize> std::fmt::Display for Json<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self.0).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

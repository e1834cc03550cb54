//! Active/standby: the active streams its table of established calls to the standby
//! over a TCP replication link; the standby takes the service address over when the
//! link goes quiet and carries the calls on.
//!
//! The link carries one JSON object per line ([`Message`]): on connection the active
//! sends `hello` and the whole `table`, then every `upsert` and `remove` as calls
//! change, and a `heartbeat` every heartbeat interval. The standby counts the active
//! dead when nothing has arrived for `dead_after` or the connection closes.
//!
//! Split brain: only the node that holds the service address serves, and an address can
//! be bound by one process only (in the lab the kernel refuses a second bind; in
//! production keepalived gives the address to one node and a node binds it only once it
//! is there). A standby that loses the link but cannot bind the address stays standby
//! and keeps trying the link: see docs/operations-sbc.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floorwire::sip::b2bua::{CallSnapshot, Change};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One line on the replication link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First line from the active: who it is.
    Hello { node: String },
    /// The whole table (after `hello`, or after the active dropped changes).
    Table { calls: Vec<CallSnapshot> },
    /// A call was answered or changed.
    Upsert { call: Box<CallSnapshot> },
    /// A call ended.
    Remove { call: u64 },
    /// The active is alive.
    Heartbeat,
}

impl From<Change> for Message {
    fn from(change: Change) -> Self {
        match change {
            Change::Upsert(call) => Self::Upsert { call },
            Change::Remove(call) => Self::Remove { call },
        }
    }
}

/// The replicated table of established calls (sans-IO: what either side keeps).
#[derive(Debug, Default, Clone)]
pub struct CallTable {
    calls: HashMap<u64, CallSnapshot>,
}

impl CallTable {
    /// Applies one message; heartbeats and hellos change nothing.
    pub fn apply(&mut self, message: Message) {
        match message {
            Message::Table { calls } => {
                self.calls = calls.into_iter().map(|c| (c.call, c)).collect();
            }
            Message::Upsert { call } => {
                self.calls.insert(call.call, *call);
            }
            Message::Remove { call } => {
                self.calls.remove(&call);
            }
            Message::Hello { .. } | Message::Heartbeat => {}
        }
    }

    /// Calls in the table.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no call is up.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Every call, for a new standby or for the takeover.
    pub fn snapshots(&self) -> Vec<CallSnapshot> {
        self.calls.values().cloned().collect()
    }
}

/// Link timing.
#[derive(Debug, Clone, Copy)]
pub struct LinkTiming {
    pub heartbeat: Duration,
    pub dead_after: Duration,
}

/// The whole table handed from the B2BUA to the publisher after an overflow, with the
/// number of the last change it includes.
type TableSlot = Arc<std::sync::Mutex<Option<(u64, Vec<CallSnapshot>)>>>;

/// The active's side of the link: a bounded queue of numbered changes from the
/// B2BUA. When the queue overflows, the change is lost to the queue, so the B2BUA is
/// asked for its whole table ([`ChangeSink::wants_table`]) and hands it over with
/// [`ChangeSink::table`]; the publisher sends that and skips older queued changes.
#[derive(Debug)]
pub struct ChangeSink {
    queue: mpsc::Sender<(u64, Change)>,
    resync: Arc<AtomicBool>,
    table: TableSlot,
    seq: u64,
}

impl ChangeSink {
    /// Queues a change without waiting; a full queue asks for the whole table.
    pub fn push(&mut self, change: Change) {
        self.seq += 1;
        if self.queue.try_send((self.seq, change)).is_err() {
            self.resync.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the publisher needs the whole table (a change could not be queued).
    pub fn wants_table(&self) -> bool {
        self.resync.load(Ordering::Relaxed)
    }

    /// Hands over the whole table as of now (every change pushed so far included).
    pub fn table(&mut self, calls: Vec<CallSnapshot>) {
        if let Ok(mut slot) = self.table.lock() {
            *slot = Some((self.seq, calls));
            self.resync.store(false, Ordering::Relaxed);
        }
    }
}

/// Starts the active's publisher on `listen`: keeps its own copy of the table from
/// the changes, and streams it to whichever standby connects. Returns the sink for the
/// B2BUA and the bound address.
pub async fn publish(
    listen: SocketAddr,
    node: String,
    initial: CallTable,
    timing: LinkTiming,
    shutdown: CancellationToken,
) -> std::io::Result<(ChangeSink, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let (queue, changes) = mpsc::channel(65_536);
    let table = Arc::new(std::sync::Mutex::new(None));
    let sink = ChangeSink {
        queue,
        resync: Arc::new(AtomicBool::new(false)),
        table: table.clone(),
        seq: 0,
    };
    tokio::spawn(run_publisher(
        listener, node, initial, changes, table, timing, shutdown,
    ));
    tracing::info!(%bound, "replication link listening");
    Ok((sink, bound))
}

async fn send(stream: &mut Option<TcpStream>, message: &Message, timing: LinkTiming) {
    let Some(s) = stream.as_mut() else {
        return;
    };
    let mut line = match serde_json::to_vec(message) {
        Ok(line) => line,
        Err(e) => {
            tracing::error!(error = %e, "replication message not serialisable");
            return;
        }
    };
    line.push(b'\n');
    // A standby that cannot keep up is dropped; it reconnects and gets the table.
    let written = tokio::time::timeout(timing.dead_after, s.write_all(&line)).await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::warn!("standby not keeping up or gone: link dropped");
        *stream = None;
    }
}

async fn run_publisher(
    listener: TcpListener,
    node: String,
    mut table: CallTable,
    mut changes: mpsc::Receiver<(u64, Change)>,
    resync: TableSlot,
    timing: LinkTiming,
    shutdown: CancellationToken,
) {
    let mut standby: Option<TcpStream> = None;
    let mut tick = tokio::time::interval(timing.heartbeat);
    // Changes up to this number are in the table already (after a resync).
    let mut applied = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tracing::info!(%peer, calls = table.len(), "standby connected: sending the table");
                standby = Some(stream);
                send(&mut standby, &Message::Hello { node: node.clone() }, timing).await;
                send(&mut standby, &Message::Table { calls: table.snapshots() }, timing).await;
            }
            change = changes.recv() => {
                let Some((seq, change)) = change else { return };
                if seq <= applied {
                    continue;
                }
                let message = Message::from(change);
                table.apply(message.clone());
                send(&mut standby, &message, timing).await;
            }
            _ = tick.tick() => {
                let whole = resync.lock().ok().and_then(|mut slot| slot.take());
                if let Some((seq, calls)) = whole {
                    tracing::warn!(calls = calls.len(), "replication queue overflowed: sending the whole table");
                    applied = seq;
                    table.apply(Message::Table { calls });
                    send(&mut standby, &Message::Table { calls: table.snapshots() }, timing).await;
                }
                send(&mut standby, &Message::Heartbeat, timing).await;
            }
        }
    }
}

/// Why following the active stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// Nobody answered at the peer's replication address.
    Unreachable,
    /// The connection closed or broke.
    Closed,
    /// Nothing arrived within `dead_after`.
    Silent,
    /// We are shutting down.
    Shutdown,
}

/// Connects to the active at `peer` and keeps `table` up to date until the link ends.
/// `on_message` sees every table change (for metrics).
pub async fn follow(
    peer: SocketAddr,
    table: &mut CallTable,
    timing: LinkTiming,
    shutdown: &CancellationToken,
    mut on_message: impl FnMut(&CallTable),
) -> LinkEnd {
    let connect = tokio::time::timeout(timing.dead_after, TcpStream::connect(peer)).await;
    let Ok(Ok(stream)) = connect else {
        return LinkEnd::Unreachable;
    };
    let mut lines = BufReader::new(stream).lines();
    let mut greeted = false;
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => return LinkEnd::Shutdown,
            line = tokio::time::timeout(timing.dead_after, lines.next_line()) => line,
        };
        let line = match line {
            Err(_) => return LinkEnd::Silent,
            Ok(Ok(Some(line))) => line,
            Ok(_) => return LinkEnd::Closed,
        };
        match serde_json::from_str::<Message>(&line) {
            Ok(message) => {
                if let Message::Hello { node } = &message
                    && !greeted
                {
                    greeted = true;
                    tracing::info!(%peer, active = %node, "following the active");
                }
                table.apply(message);
                on_message(table);
            }
            Err(e) => {
                // A line we cannot read would leave the table wrong: start over.
                tracing::warn!(error = %e, "unreadable replication message: reconnecting");
                return LinkEnd::Closed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floorwire::sip::dialog::{Dialog, DialogId, DialogState};
    use floorwire::sip::{CallId, Tag};

    fn snapshot(call: u64) -> CallSnapshot {
        let dialog = Dialog {
            id: DialogId {
                call_id: CallId::new(format!("c{call}")),
                local_tag: Tag::new("l"),
                remote_tag: Tag::new("r"),
            },
            state: DialogState::Confirmed,
            local_seq: 1,
            remote_seq: Some(1),
            local_party: "<sip:a@x>;tag=l".into(),
            remote_party: "<sip:b@y>;tag=r".into(),
            remote_target: "sip:b@127.0.0.1".into(),
            route_set: vec![],
            local_contact: "sip:sbc@127.0.0.1".into(),
        };
        CallSnapshot {
            call,
            a_dialog: dialog.clone(),
            b_dialog: dialog,
            a_peer: "127.0.0.1:5070".parse().expect("addr"),
            b_peer: "127.0.0.1:5080".parse().expect("addr"),
            media: None,
            label: "carrier".into(),
            answered_unix_ms: 1,
        }
    }

    #[test]
    fn the_table_follows_the_messages() {
        let mut table = CallTable::default();
        table.apply(Message::Table {
            calls: vec![snapshot(1), snapshot(2)],
        });
        table.apply(Message::Upsert {
            call: Box::new(snapshot(3)),
        });
        table.apply(Message::Remove { call: 1 });
        table.apply(Message::Heartbeat);
        let mut calls: Vec<u64> = table.snapshots().iter().map(|c| c.call).collect();
        calls.sort();
        assert_eq!(calls, vec![2, 3]);
        // Messages survive their JSON line.
        let line = serde_json::to_string(&Message::Upsert {
            call: Box::new(snapshot(9)),
        })
        .expect("json");
        assert!(line.starts_with("{\"type\":\"upsert\""), "{line}");
        let back: Message = serde_json::from_str(&line).expect("parse");
        assert_eq!(
            back,
            Message::Upsert {
                call: Box::new(snapshot(9))
            }
        );
    }

    #[tokio::test]
    async fn a_standby_gets_the_table_then_changes_and_notices_the_active_going() {
        let shutdown = CancellationToken::new();
        let timing = LinkTiming {
            heartbeat: Duration::from_millis(20),
            dead_after: Duration::from_millis(200),
        };
        let mut initial = CallTable::default();
        initial.apply(Message::Upsert {
            call: Box::new(snapshot(1)),
        });
        let active = shutdown.child_token();
        let (mut sink, bound) = publish(
            "127.0.0.1:0".parse().expect("addr"),
            "sbc-a".into(),
            initial,
            timing,
            active.clone(),
        )
        .await
        .expect("publish");
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let mut table = CallTable::default();
                let end = follow(bound, &mut table, timing, &shutdown, |t| {
                    let _ = seen_tx.send(t.len());
                })
                .await;
                (end, table)
            }
        });
        // The table arrives, then a change.
        while seen_rx.recv().await != Some(1) {}
        sink.push(Change::Upsert(Box::new(snapshot(2))));
        while seen_rx.recv().await != Some(2) {}
        sink.push(Change::Remove(1));
        while seen_rx.recv().await != Some(1) {}
        // The active stops: the standby sees the link end and keeps the table.
        active.cancel();
        let (end, table) = follower.await.expect("follower");
        assert!(matches!(end, LinkEnd::Closed | LinkEnd::Silent), "{end:?}");
        assert_eq!(table.snapshots()[0].call, 2);
        shutdown.cancel();
    }
}

//! The backplane: cross-instance L1 coherence over Redis pub/sub.
//!
//! Every instance sharing a Redis and a prefix subscribes to `{prefix}:bp`. `set`, `invalidate`,
//! `invalidate_tag` and the clears publish a message; the other instances drop their L1 copies on
//! receipt (and supersede their own loads of that key in flight). Each message carries the sender's
//! instance id so an instance ignores its own echoes.
//!
//! Pub/sub is fire-and-forget: messages sent while a subscription is down are lost. So:
//! - every instance publishes a heartbeat each second; a subscription that hears nothing (not even
//!   its own heartbeats) for [`SILENCE_LIMIT`] is presumed dead (a hung Redis keeps TCP open) and
//!   replaced;
//! - while not subscribed, new L1 entries live at most the "unsynced" L1 TTL (default 5 s);
//! - on every (re)subscription L1 is flushed, since invalidations may have been missed meanwhile;
//! - with Redis Sentinel, the subscription is on the master and moves with it: when the master
//!   moves to another node, the subscriber resubscribes there (flushing L1, as after any link
//!   loss). Messages published on the new master never reach a connection left on the old one
//!   (after `SENTINEL FAILOVER`, the old master stays up, and a master, for seconds).
//!
//! The staleness of an L1 copy is therefore bounded by the message latency while subscribed, and by
//! the time to notice and replace a broken subscription otherwise.
//!
//! The sending side can fail too: the publisher's own link may be cut right after its write reached
//! Redis, while every other instance stays subscribed and hears nothing wrong. A message that
//! drops copies (`Key`, `Tag`, `Clear`) and could not be published for an outage is therefore
//! kept and sent again, oldest first, as soon as Redis answers (the background task tries at each
//! tick while any is kept); a confirmation request is not sent while any is kept, since it would
//! vouch for them. Past [`MAX_UNSENT`] kept messages they collapse into one "clear everything"
//! message: the other instances then drop their whole L1 (misses, never an old value).

use futures::StreamExt;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;
use tracing::Instrument;

use crate::l2::{L2Error, PubSubNodes, L2};

/// Interval of heartbeats.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Silence after which a subscription is presumed dead.
pub(crate) const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// How many messages that could not be published are kept for a resend; past it they collapse into
/// one "clear everything" message.
pub(crate) const MAX_UNSENT: usize = 4096;

/// A message on the backplane.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// A key was overwritten or invalidated (its full Redis key).
    Key(&'a str),
    /// A tag was invalidated.
    Tag(&'a str),
    /// Entries whose full key starts with this prefix were cleared (empty: all).
    Clear(&'a str),
    /// A distributed-lock holder stored the key's value in L2 (its full Redis key): instances
    /// waiting for that lock read it now instead of at their next poll.
    Loaded(&'a str),
    /// Liveness only.
    Heartbeat,
    /// The sender waits for the others to acknowledge the messages it sent before this one
    /// (payload: the request id, hex).
    Confirm(&'a str),
    /// Acknowledges a `Confirm` (payload: `{requester:016x}:{request id:016x}`).
    Ack(&'a str),
}

impl Message<'_> {
    /// Wire form: `{type}\t{instance:016x}\t{payload}`.
    pub(crate) fn encode(&self, instance: u64) -> String {
        let (t, p) = match self {
            Message::Key(k) => ('k', *k),
            Message::Tag(t) => ('t', *t),
            Message::Clear(c) => ('c', *c),
            Message::Loaded(k) => ('l', *k),
            Message::Heartbeat => ('h', ""),
            Message::Confirm(id) => ('q', *id),
            Message::Ack(a) => ('a', *a),
        };
        format!("{t}\t{instance:016x}\t{p}")
    }

    /// Whether the message makes the others drop copies: lost, it would leave them serving an old
    /// value, so a failed publish keeps it for a resend.
    fn drops_copies(&self) -> bool {
        matches!(self, Message::Key(_) | Message::Tag(_) | Message::Clear(_))
    }

    /// Parses the wire form; `None` for anything malformed (ignored).
    pub(crate) fn decode(s: &str) -> Option<(u64, Message<'_>)> {
        let mut parts = s.splitn(3, '\t');
        let t = parts.next()?;
        let instance = u64::from_str_radix(parts.next()?, 16).ok()?;
        let p = parts.next()?;
        let m = match t {
            "k" => Message::Key(p),
            "t" => Message::Tag(p),
            "c" => Message::Clear(p),
            "l" => Message::Loaded(p),
            "h" => Message::Heartbeat,
            "q" => Message::Confirm(p),
            "a" => Message::Ack(p),
            _ => return None,
        };
        Some((instance, m))
    }
}

/// Backplane state and counters.
pub(crate) struct Backplane {
    pub(crate) channel: String,
    pub(crate) instance: u64,
    pub(crate) unsynced_l1_ttl: Duration,
    subscribed: AtomicBool,
    pub(crate) received: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    /// Messages whose publish failed for an outage, encoded, oldest first (see the module doc).
    unsent: Mutex<VecDeque<String>>,
    pub(crate) resent: AtomicU64,
}

impl Backplane {
    pub(crate) fn new(prefix: &str, unsynced_l1_ttl: Duration) -> Self {
        Self {
            channel: format!("{prefix}:bp"),
            instance: rand::random(),
            unsynced_l1_ttl,
            subscribed: AtomicBool::new(false),
            received: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            unsent: Mutex::new(VecDeque::new()),
            resent: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}

impl Backplane {
    /// Publishes `msg` through `l2` (breaker and deadline apply). Failures are counted, not
    /// returned; a message that drops copies is kept for a resend when the failure is an outage.
    pub(crate) async fn publish(&self, l2: &L2, msg: Message<'_>) {
        let payload = msg.encode(self.instance);
        match self.send(l2, &payload).await {
            Ok(()) => {}
            Err(e) if e.is_outage() && msg.drops_copies() => {
                tracing::debug!(error = %e, "backplane publish failed: kept, sent again when Redis answers");
                self.keep(payload);
            }
            Err(e) => tracing::debug!(error = %e, "backplane publish failed"),
        }
    }

    /// Publishes one encoded message, counting it.
    async fn send(&self, l2: &L2, payload: &str) -> Result<(), L2Error> {
        let res = l2
            .publish(&self.channel, payload)
            .instrument(tracing::debug_span!("l2.publish", channel = %self.channel))
            .await;
        match &res {
            Ok(()) => self.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.publish_failures.fetch_add(1, Ordering::Relaxed),
        };
        res
    }

    /// Keeps `payload` for [`resend`](Self::resend) (once: an equal message kept already
    /// covers it; the receivers' handling is idempotent).
    fn keep(&self, payload: String) {
        let mut q = self.unsent.lock().unwrap_or_else(|p| p.into_inner());
        if q.contains(&payload) {
            return;
        }
        if q.len() >= MAX_UNSENT {
            // Too many to keep one by one: one message that makes the others drop everything
            // stands for all of them (and for anything lost meanwhile).
            q.clear();
            q.push_back(Message::Clear("").encode(self.instance));
            tracing::warn!(
                max = MAX_UNSENT,
                "too many backplane messages could not be published: the other instances will be told to drop their whole L1"
            );
        } else {
            q.push_back(payload);
        }
    }

    /// How many messages wait for a resend.
    pub(crate) fn unsent(&self) -> usize {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Publishes the kept messages, oldest first, until one fails for an outage (it and the rest
    /// stay kept). A message Redis refuses (an ACL without `PUBLISH`...) is dropped: it would never go.
    pub(crate) async fn resend(&self, l2: &L2) {
        loop {
            let Some(payload) = self
                .unsent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .front()
                .cloned()
            else {
                return;
            };
            match self.send(l2, &payload).await {
                Err(e) if e.is_outage() => return,
                Err(e) => {
                    tracing::warn!(error = %e, "Redis refused a backplane message: dropped");
                }
                Ok(()) => {
                    self.resent.fetch_add(1, Ordering::Relaxed);
                }
            }
            let mut q = self.unsent.lock().unwrap_or_else(|p| p.into_inner());
            // Unless a collapse replaced it meanwhile.
            if q.front() == Some(&payload) {
                q.pop_front();
            }
        }
    }
}

/// What the subscriber tells: the component that drops what other instances invalidated.
pub(crate) trait Listener: Send + Sync + 'static {
    /// The backplane (state and counters) the subscriber serves; `None` ends the subscriber.
    fn backplane(&self) -> Option<&Backplane>;

    /// A message from another instance (`from`: its instance id).
    fn heard(&self, from: u64, msg: Message<'_>) -> impl Future<Output = ()> + Send;

    /// The subscription is up again after being down: invalidations may have been missed.
    fn resubscribed(&self);

    /// Redis refused `command` (the subscription) for lack of an ACL permission.
    fn refused(&self, command: &str, e: &redis::RedisError);
}

async fn handle(listener: &impl Listener, bp: &Backplane, payload: &str) {
    bp.received.fetch_add(1, Ordering::Relaxed);
    let Some((from, msg)) = Message::decode(payload) else {
        tracing::debug!("ignoring a malformed backplane message");
        return;
    };
    if from == bp.instance || msg == Message::Heartbeat {
        return;
    }
    listener.heard(from, msg).await;
}

/// After a (re)subscription: the listener flushes what may have missed an invalidation.
fn resync(listener: &impl Listener, bp: &Backplane) {
    listener.resubscribed();
    bp.resyncs.fetch_add(1, Ordering::Relaxed);
    bp.subscribed.store(true, Ordering::Release);
}

/// Opens a pub/sub connection subscribed to `channel`, within `deadline`. Fails with
/// `Err(Some(e))` when Redis refused it for lack of an ACL permission (`NOPERM`: the user lacks
/// the channel or `SUBSCRIBE`), which only a change of the ACL can fix, and with `Err(None)`
/// otherwise (logged at debug level: retrying later helps).
pub(crate) async fn subscribe(
    client: &redis::Client,
    channel: &str,
    deadline: Duration,
) -> Result<redis::aio::PubSub, Option<redis::RedisError>> {
    let sub = tokio::time::timeout(deadline, async {
        let mut ps = client.get_async_pubsub().await?;
        ps.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(ps)
    })
    .await;
    match sub {
        Ok(Ok(ps)) => Ok(ps),
        Ok(Err(e)) if e.code() == Some("NOPERM") => Err(Some(e)),
        Ok(Err(e)) => {
            tracing::debug!(error = %crate::l2::redacted_error(&e), "backplane subscription failed");
            Err(None)
        }
        Err(_) => Err(None),
    }
}

/// Subscribes through the first of `nodes` that answers (on a cluster, classic pub/sub messages
/// reach every node, so any node will do; with Sentinel, the master). Fails as [`subscribe`] does
/// (with a refusal if any node refused).
pub(crate) async fn subscribe_any(
    nodes: &PubSubNodes,
    channel: &str,
    deadline: Duration,
) -> Result<redis::aio::PubSub, Option<redis::RedisError>> {
    let mut refused = None;
    for c in nodes.clients(deadline).await {
        match subscribe(&c, channel, deadline).await {
            Ok(ps) => return Ok(ps),
            Err(e) => refused = refused.or(e),
        }
    }
    Err(refused)
}

/// Resolves when the Redis master moved since `seen` was taken (updating it); never without
/// Sentinel, nor once the master can no longer move (the L2 is gone).
async fn master_moved(switches: &mut Option<tokio::sync::watch::Receiver<u64>>, seen: &mut u64) {
    let Some(rx) = switches.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        if *rx.borrow_and_update() != *seen {
            *seen = *rx.borrow();
            return;
        }
        if rx.changed().await.is_err() {
            *switches = None;
            return std::future::pending().await;
        }
    }
}

/// Marks the backplane subscribed without flushing (at startup, before anything was cached).
pub(crate) fn mark_subscribed(bp: &Backplane) {
    bp.subscribed.store(true, Ordering::Release);
}

/// Spawns the subscriber task, starting with `initial` when `build()` already subscribed. It holds
/// a weak reference to its listener and ends with it.
pub(crate) fn spawn_subscriber<L: Listener>(
    weak: Weak<L>,
    nodes: PubSubNodes,
    connect_timeout: Duration,
    mut initial: Option<redis::aio::PubSub>,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut was_subscribed = initial.is_some();
        let mut switches = nodes.switches();
        let mut seen = switches.as_mut().map_or(0, |rx| *rx.borrow_and_update());
        loop {
            let Some(channel) = weak
                .upgrade()
                .and_then(|l| l.backplane().map(|bp| bp.channel.clone()))
            else {
                return;
            };
            // Where the master is now: a move from here on is a reason to resubscribe.
            if let Some(rx) = switches.as_mut() {
                seen = *rx.borrow_and_update();
            }
            let (ps, fresh_start) = match initial.take() {
                Some(ps) => (Some(ps), true),
                None => {
                    match subscribe_any(&nodes, &channel, connect_timeout.saturating_mul(4)).await {
                        Ok(ps) => (Some(ps), false),
                        Err(refused) => {
                            if let (Some(e), Some(listener)) = (refused, weak.upgrade()) {
                                listener.refused("SUBSCRIBE", &e);
                            }
                            (None, false)
                        }
                    }
                }
            };
            let Some(ps) = ps else {
                // A master that just moved is worth trying at once.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = master_moved(&mut switches, &mut seen) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            };
            backoff = Duration::from_millis(100);
            if !fresh_start {
                let Some(listener) = weak.upgrade() else {
                    return;
                };
                let Some(bp) = listener.backplane() else {
                    return;
                };
                resync(&*listener, bp);
                if was_subscribed {
                    tracing::info!(channel, "backplane resubscribed: L1 flushed");
                }
            }
            was_subscribed = true;
            let mut stream = ps.into_on_message();
            // Ends when the connection closes, after a silence (a hung Redis keeps it open), or
            // when the master moved (Sentinel).
            let mut moved = false;
            loop {
                let msg = tokio::select! {
                    next = tokio::time::timeout(SILENCE_LIMIT, stream.next()) => match next {
                        Ok(Some(msg)) => msg,
                        _ => break,
                    },
                    () = master_moved(&mut switches, &mut seen) => {
                        moved = true;
                        break;
                    }
                };
                let Some(listener) = weak.upgrade() else {
                    return;
                };
                let Some(bp) = listener.backplane() else {
                    return;
                };
                match msg.get_payload::<String>() {
                    Ok(p) => handle(&*listener, bp, &p).await,
                    Err(_) => tracing::debug!("ignoring a non-text backplane message"),
                }
            }
            drop(stream);
            let Some(listener) = weak.upgrade() else {
                return;
            };
            let Some(bp) = listener.backplane() else {
                return;
            };
            bp.subscribed.store(false, Ordering::Release);
            bp.disconnects.fetch_add(1, Ordering::Relaxed);
            if moved {
                tracing::info!(
                    channel,
                    "the Redis master moved: the backplane resubscribes on the new one"
                );
            } else {
                tracing::warn!(
                    channel,
                    "backplane subscription lost: L1 entries now live at most {:?} until resubscribed",
                    bp.unsynced_l1_ttl
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_messages_are_kept_once_and_collapse_into_one_clear_when_too_many() {
        let bp = Backplane::new("app", Duration::from_secs(5));
        let key = |i: usize| Message::Key(&format!("app:v1:k:{i}")).encode(bp.instance);
        bp.keep(key(0));
        bp.keep(key(0));
        assert_eq!(bp.unsent(), 1, "an equal message kept already covers it");
        for i in 1..MAX_UNSENT {
            bp.keep(key(i));
        }
        assert_eq!(bp.unsent(), MAX_UNSENT);
        bp.keep(key(MAX_UNSENT));
        assert_eq!(bp.unsent(), 1, "collapsed");
        let q = bp.unsent.lock().unwrap();
        let (from, msg) = Message::decode(&q[0]).expect("a message");
        assert_eq!((from, msg), (bp.instance, Message::Clear("")));
        assert!(
            Message::Clear("").drops_copies()
                && Message::Tag("t").drops_copies()
                && !Message::Heartbeat.drops_copies()
                && !Message::Loaded("k").drops_copies()
        );
    }

    #[test]
    fn messages_round_trip_and_garbage_is_ignored() {
        for m in [
            Message::Key("app:v1:k:a\tb"),
            Message::Tag("user:1"),
            Message::Clear(""),
            Message::Loaded("app:v1:k:a"),
            Message::Heartbeat,
            Message::Confirm("00000000000000ff"),
            Message::Ack("0000000000000abc:00000000000000ff"),
        ] {
            let wire = m.encode(0xabc);
            assert_eq!(Message::decode(&wire), Some((0xabc, m)));
        }
        assert_eq!(Message::decode("x\t1\ty"), None);
        assert_eq!(Message::decode("k\tnothex\ty"), None);
        assert_eq!(Message::decode(""), None);
    }
}

//! Events: what the cache does, one [`Event`] at a time, for the application that wants to see it
//! (a "served from cache" marker, an audit log, its own metrics).
//!
//! [`Cache::events`](crate::Cache::events) subscribes: the [`EventStream`] it returns receives
//! every event emitted from then on, until it is dropped.
//!
//! - **Never in the cache's way.** Events go through a bounded buffer
//!   ([`CacheBuilder::event_buffer`](crate::CacheBuilder::event_buffer), 1,024 by default) shared
//!   by the subscribers of the cache: sending never waits, and a subscriber that falls more than
//!   the buffer behind loses the oldest events it had not read. Each one lost is counted, in the
//!   subscriber's [`EventStream::dropped`], in [`Stats::events`](crate::Stats::events) and in the
//!   Prometheus counter `cache_events_dropped_total`.
//! - **Free without subscribers.** Before building an event the cache reads one counter (a relaxed
//!   atomic load); with no subscription open, nothing else happens: no allocation, no lock, no
//!   clock read. The buffer itself is allocated by the first subscription.
//! - **Keys, never values.** An event names the entry by its kind and key ([`EntryKey`]); values
//!   never leave the cache through events.
//!
//! The events follow the counters of [`Stats`](crate::Stats): each hit and each miss (with its
//! reason) counted there is an event here, and so is each stale value served and each breaker
//! transition; a loader call is one `Load` per key it was asked for. A lookup that misses L1 and finds its value in L2 emits a `Miss` (L1) then a `Hit`
//! (L2); one that goes on to the loader emits misses for the tiers it tried, then a `Load`. A cache
//! built disabled (`CACHE_ENABLED=false`) emits nothing.
//!
//! ```
//! use cache_core::events::{Event, Tier};
//! use cache_core::{Cache, Kind};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cache = Cache::builder().prefix("docs-events").build().await?;
//! let mut events = cache.events();
//! for _ in 0..2 {
//!     cache
//!         .get_or_load(Kind::API_RESPONSE, "weather:paris", || async {
//!             Ok::<_, std::io::Error>(21.5_f32)
//!         })
//!         .await
//!         .expect("loader failed");
//! }
//! // First call: a miss, then the loader. Second call: an L1 hit.
//! assert!(matches!(events.try_recv(), Some(Event::Miss { tier: Tier::L1, .. })));
//! assert!(matches!(events.try_recv(), Some(Event::Load { .. })));
//! match events.try_recv() {
//!     Some(Event::Hit { entry, tier, .. }) => {
//!         assert_eq!(tier, Tier::L1);
//!         assert!(entry.is(Kind::API_RESPONSE, "weather:paris"));
//!     }
//!     other => panic!("expected an L1 hit, got {other:?}"),
//! }
//! # Ok::<_, cache_core::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

use crate::breaker::BreakerState;
use crate::key::{self, LookupKey};
use crate::stats::MissReason;

/// The event buffer of a cache built without
/// [`CacheBuilder::event_buffer`](crate::CacheBuilder::event_buffer).
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// The largest event buffer: 2^20 events (about 100 MB).
pub const MAX_EVENT_BUFFER: usize = 1 << 20;

/// Something the cache did. Received from an [`EventStream`].
///
/// Variants and their fields may be added in later versions: match with `..` and a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A tier held a fresh value for a lookup, which is answered with it (warming, which reads
    /// L2 first too, then leaves the entry as it is).
    #[non_exhaustive]
    Hit {
        /// The entry.
        entry: EntryKey,
        /// Where the value was found; what [`Lookup::source`](crate::Lookup::source) reports.
        tier: Tier,
    },
    /// A tier could not serve a lookup.
    #[non_exhaustive]
    Miss {
        /// The entry.
        entry: EntryKey,
        /// The tier that missed.
        tier: Tier,
        /// Why.
        reason: MissReason,
    },
    /// A loader call ended (one per call and key: a batch loader asked for several keys reports
    /// each of them, with the call's duration).
    #[non_exhaustive]
    Load {
        /// The entry loaded.
        entry: EntryKey,
        /// How long the loader ran.
        took: Duration,
        /// What it returned.
        outcome: LoadOutcome,
        /// Why it ran.
        cause: LoadCause,
    },
    /// A value past its freshness was served instead of a loader's answer (fail-safe grace, or a
    /// loader past its soft timeout).
    #[non_exhaustive]
    StaleServed {
        /// The entry.
        entry: EntryKey,
        /// Why the stale value was served.
        cause: StaleCause,
    },
    /// The circuit breaker in front of Redis changed state.
    #[non_exhaustive]
    Breaker {
        /// The state it left.
        from: BreakerState,
        /// The state it entered.
        to: BreakerState,
    },
    /// This instance invalidated entries (`invalidate`, `invalidate_tag(s)`, `clear_kind`,
    /// `clear_all`, `#[cache_invalidate]`): dropped here, removed from L2 (or queued for replay
    /// while Redis is out) and announced to the other instances on the backplane.
    #[non_exhaustive]
    InvalidationSent {
        /// What was invalidated.
        target: Target,
    },
    /// Another instance's backplane message made this one drop local copies: an invalidation, a
    /// clear, or a `set` of the key there (a newer value this instance's L1 must not hide).
    #[non_exhaustive]
    InvalidationReceived {
        /// What was dropped.
        target: Target,
    },
}

impl Event {
    /// The entry the event is about (`None` for breaker transitions and for invalidations of a
    /// tag, a kind or everything).
    pub fn entry(&self) -> Option<&EntryKey> {
        match self {
            Event::Hit { entry, .. }
            | Event::Miss { entry, .. }
            | Event::Load { entry, .. }
            | Event::StaleServed { entry, .. } => Some(entry),
            Event::InvalidationSent {
                target: Target::Key(entry),
            }
            | Event::InvalidationReceived {
                target: Target::Key(entry),
            } => Some(entry),
            Event::InvalidationSent { .. }
            | Event::InvalidationReceived { .. }
            | Event::Breaker { .. } => None,
        }
    }
}

/// One line per event, for logs: `hit L1 api_response/weather:paris`,
/// `miss L2 api_response/weather:paris (expired)`, `load api_response/weather:paris loaded in
/// 12.1ms (miss)`, `breaker closed -> open`, `invalidation sent tag user:42`...
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Hit { entry, tier } => write!(f, "hit {tier} {entry}"),
            Event::Miss {
                entry,
                tier,
                reason,
            } => write!(f, "miss {tier} {entry} ({reason})"),
            Event::Load {
                entry,
                took,
                outcome,
                cause,
            } => write!(f, "load {entry} {outcome} in {took:.1?} ({cause})"),
            Event::StaleServed { entry, cause } => write!(f, "stale served {entry} ({cause})"),
            Event::Breaker { from, to } => {
                write!(f, "breaker {} -> {}", state_name(*from), state_name(*to))
            }
            Event::InvalidationSent { target } => write!(f, "invalidation sent {target}"),
            Event::InvalidationReceived { target } => write!(f, "invalidation received {target}"),
        }
    }
}

fn state_name(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// The two tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// This instance's memory.
    L1,
    /// Redis.
    L2,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::L1 => "L1",
            Tier::L2 => "L2",
        })
    }
}

/// What a loader call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadOutcome {
    /// A value, stored in the kind's tiers (unless an invalidation or a newer write of the key
    /// won meanwhile: then it is the answer of the waiting calls only).
    Loaded,
    /// An answer the cache does not keep: a `#[cached]` function's `None` or a value its `unless`
    /// refused, or a key a batch loader did not return.
    Uncached,
    /// An error (the callers get it, or a stale value: see [`Event::StaleServed`]).
    Failed,
    /// Abandoned at its hard timeout.
    TimedOut,
}

impl fmt::Display for LoadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadOutcome::Loaded => "loaded",
            LoadOutcome::Uncached => "uncached",
            LoadOutcome::Failed => "failed",
            LoadOutcome::TimedOut => "timed out",
        })
    }
}

/// Why a loader ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadCause {
    /// A caller (single or batch) found no fresh value in the tiers.
    Miss,
    /// An eager refresh ([`KindConfig::eager_refresh`](crate::KindConfig::eager_refresh), XFetch)
    /// in the background.
    Refresh,
    /// Warming ([`Cache::warm`](crate::Cache::warm)).
    Warm,
}

impl fmt::Display for LoadCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadCause::Miss => "miss",
            LoadCause::Refresh => "refresh",
            LoadCause::Warm => "warm",
        })
    }
}

/// Why a stale value was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StaleCause {
    /// The loader failed (fail-safe grace).
    LoaderFailed,
    /// The loader passed its hard timeout and was abandoned.
    HardTimeout,
    /// The loader passed its soft timeout: it goes on in the background.
    SoftTimeout,
}

impl fmt::Display for StaleCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StaleCause::LoaderFailed => "loader failed",
            StaleCause::HardTimeout => "hard timeout",
            StaleCause::SoftTimeout => "soft timeout",
        })
    }
}

/// What an invalidation covered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One entry.
    Key(EntryKey),
    /// Every entry carrying this tag.
    Tag(Arc<str>),
    /// Every entry of this kind.
    Kind(Arc<str>),
    /// Every entry of the cache.
    All,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Key(e) => write!(f, "key {e}"),
            Target::Tag(t) => write!(f, "tag {t}"),
            Target::Kind(k) => write!(f, "kind {k}"),
            Target::All => f.write_str("everything"),
        }
    }
}

/// The entry an event is about: its kind and its key, as they appear in the entry's Redis key
/// (`{prefix}:v1:{kind}:{key}`). That is the caller's key itself, except for keys the cache
/// hashes (longer than [`MAX_KEY_PART`](crate::MAX_KEY_PART), holding `{` or `}`, or starting
/// with `#`): for those it is `#` followed by the key's BLAKE3 hash, as for events that come from
/// another instance (which knows only the Redis key). [`EntryKey::is`] compares with a caller's
/// key either way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    kind: Arc<str>,
    key: Arc<str>,
}

impl EntryKey {
    fn new(kind: &str, key: &str) -> Self {
        Self {
            kind: kind.into(),
            key: key.into(),
        }
    }

    /// The kind's name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The key (hashed for long keys: see [`EntryKey`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this is the entry of `key` of `kind`, as a caller names them (hashing them as the
    /// cache does when needed).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cache_core::Cache::builder().prefix("docs-entry-is").build().await?;
    /// let mut events = cache.events();
    /// let question = "What does the contract say about renewals? ".repeat(8); // > 200 bytes
    /// cache.set("model_data", &question, "30 days' notice".to_string()).await;
    /// let _ = cache.get::<String>("model_data", &question).await;
    /// let hit = events.try_recv().expect("an L1 hit");
    /// let entry = hit.entry().expect("a keyed event");
    /// assert!(entry.key().starts_with('#'), "hashed: {}", entry.key());
    /// assert!(entry.is("model_data", &question));
    /// assert!(!entry.is("model_data", "another question"));
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn is(&self, kind: impl AsRef<str>, key: &str) -> bool {
        *self.kind == *key::stored_kind(kind.as_ref()) && *self.key == *key::stored_part(key)
    }
}

/// `kind/key`.
impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.key)
    }
}

/// A subscription to a cache's events, from [`Cache::events`](crate::Cache::events). Receives
/// every event emitted after it was created, in the order they were emitted, until it is dropped.
///
/// Read it promptly (a task of its own that does little more than receive is the usual shape): a
/// subscription that falls more than the event buffer behind loses the oldest events it had not
/// read, and [`dropped`](Self::dropped) says how many.
///
/// A task waiting in [`recv`](Self::recv) is woken by each event, and the thread that emits the
/// event pays for the wake-up (hundreds of nanoseconds when the waiting task is on another
/// thread). A subscriber that can take its events in batches (metrics, an audit log flushed every
/// few milliseconds) may instead call [`try_recv`](Self::try_recv) until it returns `None`, on an
/// interval, with a buffer sized for an interval's worth of events: no wake-ups at all.
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
    /// Weak: a subscription must not keep the bus (and its sender) alive, or `recv` would never
    /// end once the cache is gone.
    bus: Weak<EventBus>,
    /// The buffer's real size (the setting rounded up to a power of two).
    slots: usize,
    dropped: u64,
}

impl EventStream {
    /// The next event, waiting for one; `None` once the cache is gone (every handle dropped and
    /// its background work ended). Events lost to a full buffer are skipped and counted.
    ///
    /// Cancel safe: used in `tokio::select!`, an event is never lost by a branch that loses.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => self.lost(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting, without waiting (`None`: none is, or the cache is gone).
    /// Events lost to a full buffer are skipped and counted.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lost(n),
                Err(_) => return None,
            }
        }
    }

    /// Events this subscription lost because it fell more than the buffer behind (counted as it
    /// reads past them).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn lost(&mut self, n: u64) {
        self.dropped += n;
        if let Some(bus) = self.bus.upgrade() {
            bus.dropped.fetch_add(n, Relaxed);
        }
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("buffer", &self.slots)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // The events that were overwritten before this subscription could read them: unread
        // events beyond what the buffer holds.
        let behind = self.rx.len().saturating_sub(self.slots);
        if behind > 0 {
            self.lost(behind as u64);
        }
        if let Some(bus) = self.bus.upgrade() {
            bus.subscribers.fetch_sub(1, Relaxed);
        }
    }
}

// ---- The bus (crate-internal) -------------------------------------------------------------------

/// Where an entry is named on the read path: an L1 lookup key, a full Redis key, or a caller's
/// kind and key.
#[derive(Clone, Copy)]
pub(crate) enum At<'a> {
    Lookup(&'a LookupKey<'a>),
    Full(&'a str),
    User(&'a str, &'a str),
}

/// What an invalidation covered, as coherence names it.
pub(crate) enum Covered<'a> {
    /// A full Redis key.
    Key(&'a str),
    Tag(&'a str),
    /// A kind, by the name the caller gave.
    Kind(&'a str),
    /// A backplane `Clear` message's key prefix (`{prefix}:v1:{kind}:`; empty: everything).
    Cleared(&'a str),
    All,
}

/// The cache's event bus: emits events to the subscriptions, if any. Every emitting method first
/// checks that one is open (one relaxed load) and does nothing else otherwise.
pub(crate) struct EventBus {
    /// Subscriptions open (each decrements it when dropped).
    subscribers: AtomicUsize,
    /// Events lost by subscriptions (each adds what it lost).
    dropped: AtomicU64,
    /// Created by the first subscription.
    tx: OnceLock<broadcast::Sender<Event>>,
    capacity: usize,
    prefix: String,
}

impl EventBus {
    /// A bus for the cache under `prefix`, buffering `capacity` events (at least 1).
    pub(crate) fn new(prefix: &str, capacity: usize) -> Self {
        Self {
            subscribers: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            tx: OnceLock::new(),
            capacity: capacity.clamp(1, MAX_EVENT_BUFFER),
            prefix: prefix.to_owned(),
        }
    }

    /// A new subscription.
    pub(crate) fn subscribe(self: &Arc<Self>) -> EventStream {
        let tx = self.tx.get_or_init(|| broadcast::channel(self.capacity).0);
        let rx = tx.subscribe();
        self.subscribers.fetch_add(1, Relaxed);
        EventStream {
            rx,
            bus: Arc::downgrade(self),
            slots: self.capacity.next_power_of_two(),
            dropped: 0,
        }
    }

    /// Subscriptions open now.
    pub(crate) fn subscribers(&self) -> u64 {
        self.subscribers.load(Relaxed) as u64
    }

    /// Events lost by subscriptions so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Whether a subscription is open: the one check an event costs when none is.
    #[inline]
    pub(crate) fn listening(&self) -> bool {
        self.subscribers.load(Relaxed) != 0
    }

    #[cold]
    #[inline(never)]
    fn send(&self, event: Event) {
        if let Some(tx) = self.tx.get() {
            // Never waits; with no receiver left (the last one just dropped) it is an error, and
            // the event goes nowhere.
            let _ = tx.send(event);
        }
    }

    /// The entry named by `at`.
    fn entry(&self, at: At<'_>) -> EntryKey {
        match at {
            At::Lookup(LookupKey::Split(head, key)) => {
                let kind = head
                    .strip_prefix(self.prefix.as_str())
                    .and_then(|h| h.strip_prefix(":v1:"))
                    .and_then(|h| h.strip_suffix(':'))
                    .unwrap_or(head);
                EntryKey::new(kind, key)
            }
            At::Lookup(LookupKey::Built(full)) => self.entry(At::Full(full)),
            At::Full(full) => match key::split_entry_key(&self.prefix, full) {
                Some((kind, key)) => EntryKey::new(kind, key),
                // Not a key of this cache (the read path builds every key it uses): named whole,
                // under no kind.
                None => EntryKey::new("", full),
            },
            At::User(kind, key) => EntryKey::new(&key::stored_kind(kind), &key::stored_part(key)),
        }
    }

    /// The entry named by `at` if a subscription is open (for an event emitted later).
    #[inline]
    pub(crate) fn entry_if_listening(&self, at: At<'_>) -> Option<EntryKey> {
        if self.listening() {
            Some(self.entry(at))
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn hit(&self, at: At<'_>, tier: Tier) {
        if self.listening() {
            self.send_hit(at, tier);
        }
    }

    #[cold]
    #[inline(never)]
    fn send_hit(&self, at: At<'_>, tier: Tier) {
        let entry = self.entry(at);
        self.send(Event::Hit { entry, tier });
    }

    #[inline]
    pub(crate) fn miss(&self, at: At<'_>, tier: Tier, reason: MissReason) {
        if self.listening() {
            self.send_miss(at, tier, reason);
        }
    }

    #[cold]
    #[inline(never)]
    fn send_miss(&self, at: At<'_>, tier: Tier, reason: MissReason) {
        let entry = self.entry(at);
        self.send(Event::Miss {
            entry,
            tier,
            reason,
        });
    }

    /// A loader call of `at` that began at `started` ended now.
    #[inline]
    pub(crate) fn load(
        &self,
        at: At<'_>,
        started: Instant,
        outcome: LoadOutcome,
        cause: LoadCause,
    ) {
        if self.listening() {
            self.send_load(at, started.elapsed(), outcome, cause);
        }
    }

    /// [`load`](Self::load) of a call whose duration is known.
    #[inline]
    pub(crate) fn loaded(
        &self,
        at: At<'_>,
        took: Duration,
        outcome: LoadOutcome,
        cause: LoadCause,
    ) {
        if self.listening() {
            self.send_load(at, took, outcome, cause);
        }
    }

    #[cold]
    #[inline(never)]
    fn send_load(&self, at: At<'_>, took: Duration, outcome: LoadOutcome, cause: LoadCause) {
        let entry = self.entry(at);
        self.send(Event::Load {
            entry,
            took,
            outcome,
            cause,
        });
    }

    #[inline]
    pub(crate) fn stale_served(&self, at: At<'_>, cause: StaleCause) {
        if self.listening() {
            let entry = self.entry(at);
            self.send(Event::StaleServed { entry, cause });
        }
    }

    /// [`stale_served`](Self::stale_served) of an entry named earlier with
    /// [`entry_if_listening`](Self::entry_if_listening).
    #[inline]
    pub(crate) fn stale_served_entry(&self, entry: Option<EntryKey>, cause: StaleCause) {
        if let Some(entry) = entry.filter(|_| self.listening()) {
            self.send(Event::StaleServed { entry, cause });
        }
    }

    /// A breaker transition (the breaker's observer).
    pub(crate) fn breaker(&self, from: BreakerState, to: BreakerState) {
        if self.listening() {
            self.send(Event::Breaker { from, to });
        }
    }

    pub(crate) fn invalidation_sent(&self, covered: Covered<'_>) {
        if self.listening() {
            let target = self.target(covered);
            self.send(Event::InvalidationSent { target });
        }
    }

    pub(crate) fn invalidation_received(&self, covered: Covered<'_>) {
        if self.listening() {
            let target = self.target(covered);
            self.send(Event::InvalidationReceived { target });
        }
    }

    fn target(&self, covered: Covered<'_>) -> Target {
        match covered {
            Covered::Key(full) => Target::Key(self.entry(At::Full(full))),
            Covered::Tag(tag) => Target::Tag(tag.into()),
            Covered::Kind(kind) => Target::Kind(key::stored_kind(kind).into()),
            Covered::Cleared("") | Covered::All => Target::All,
            Covered::Cleared(key_prefix) => {
                let kind = key_prefix
                    .strip_prefix(self.prefix.as_str())
                    .and_then(|p| p.strip_prefix(":v1:"))
                    .map(|p| p.strip_suffix(':').unwrap_or(p));
                match kind {
                    Some(kind) => Target::Kind(kind.into()),
                    // Not one of this cache's kinds: the receiver dropped everything.
                    None => Target::All,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

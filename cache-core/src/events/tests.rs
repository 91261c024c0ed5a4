use super::*;
use crate::key::{full_key, kind_key_prefix, MAX_KEY_PART};

fn bus(capacity: usize) -> Arc<EventBus> {
    Arc::new(EventBus::new("app", capacity))
}

/// `n` distinct events (hits of keys `0..n`).
fn emit_hits(bus: &EventBus, n: usize) {
    for i in 0..n {
        bus.hit(At::Full(&full_key("app", "k", &i.to_string())), Tier::L1);
    }
}

fn hit_key(e: &Event) -> String {
    match e {
        Event::Hit { entry, .. } => entry.key().to_owned(),
        other => panic!("not a hit: {other:?}"),
    }
}

#[test]
fn with_no_subscriber_nothing_is_built_or_sent() {
    let b = bus(8);
    assert!(!b.listening());
    emit_hits(&b, 100);
    b.miss(At::Full("app:v1:k:1"), Tier::L2, MissReason::Absent);
    b.breaker(BreakerState::Closed, BreakerState::Open);
    b.invalidation_sent(Covered::All);
    assert!(
        b.entry_if_listening(At::Full("app:v1:k:1")).is_none(),
        "no entry is named for nobody"
    );
    // Not even the channel exists: the first subscription creates it.
    assert!(b.tx.get().is_none());
    assert_eq!((b.subscribers(), b.dropped()), (0, 0));
}

#[test]
fn a_subscription_receives_the_events_emitted_after_it_in_order() {
    let b = bus(16);
    emit_hits(&b, 3);
    let mut s = b.subscribe();
    assert!(b.listening());
    assert!(
        s.try_recv().is_none(),
        "nothing from before the subscription"
    );
    emit_hits(&b, 5);
    let got: Vec<String> = std::iter::from_fn(|| s.try_recv())
        .map(|e| hit_key(&e))
        .collect();
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
    assert_eq!(s.dropped(), 0);
}

#[test]
fn every_subscription_gets_every_event() {
    let b = bus(16);
    let (mut a, mut c) = (b.subscribe(), b.subscribe());
    assert_eq!(b.subscribers(), 2);
    emit_hits(&b, 2);
    for s in [&mut a, &mut c] {
        assert_eq!(hit_key(&s.try_recv().unwrap()), "0");
        assert_eq!(hit_key(&s.try_recv().unwrap()), "1");
        assert!(s.try_recv().is_none());
    }
}

#[test]
fn a_subscription_that_falls_behind_loses_the_oldest_events_and_they_are_counted() {
    // 5 is rounded up to 8 slots.
    let b = bus(5);
    let mut slow = b.subscribe();
    let mut fast = b.subscribe();
    for i in 0..20 {
        emit_hits(&b, 1);
        // The fast one keeps up (emit_hits names every event "0").
        assert!(fast.try_recv().is_some(), "event {i}");
    }
    // The slow one never read: 20 sent, the last 8 kept.
    let got: Vec<Event> = std::iter::from_fn(|| slow.try_recv()).collect();
    assert_eq!(got.len(), 8);
    assert_eq!(slow.dropped(), 12);
    assert_eq!(fast.dropped(), 0);
    assert_eq!(b.dropped(), 12, "counted for the cache too");
}

#[test]
fn events_a_dropped_subscription_never_read_are_counted_when_it_goes() {
    let b = bus(4);
    let s = b.subscribe();
    emit_hits(&b, 10);
    assert_eq!(
        b.dropped(),
        0,
        "not known until the subscription reads or goes"
    );
    drop(s);
    assert_eq!(b.dropped(), 6);
    assert_eq!(b.subscribers(), 0);
    assert!(!b.listening());
    // Sending with nobody left is harmless.
    emit_hits(&b, 10);
    assert_eq!(b.dropped(), 6);
}

#[test]
fn a_subscription_ends_when_the_bus_is_gone() {
    let b = bus(4);
    let mut s = b.subscribe();
    emit_hits(&b, 1);
    drop(b);
    assert!(s.try_recv().is_some(), "what was sent is still read");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(rt.block_on(s.recv()).is_none());
}

#[test]
fn an_entry_is_named_the_same_from_every_form_of_its_key() {
    let b = bus(4);
    let long = "q".repeat(MAX_KEY_PART + 1);
    for (kind, key) in [
        ("api_response", "u:1"),
        ("api_response", long.as_str()),
        ("api_response", "{user}:1"),
        ("not a valid kind", "x"),
    ] {
        let head = kind_key_prefix("app", kind);
        let full = full_key("app", kind, key);
        let forms = [
            b.entry(At::Lookup(&LookupKey::new(Some(&head), "app", kind, key))),
            b.entry(At::Lookup(&LookupKey::new(None, "app", kind, key))),
            b.entry(At::Full(&full)),
            b.entry(At::User(kind, key)),
        ];
        for e in &forms {
            assert_eq!(e, &forms[0], "{kind} {key}");
            assert!(e.is(kind, key), "{e} is {kind} {key}");
            assert!(!e.is(kind, "other"));
            assert!(!e.is("other_kind", key));
            assert_eq!(format!("app:v1:{}:{}", e.kind(), e.key()), full);
        }
    }
    let plain = b.entry(At::Full("app:v1:api_response:u:1"));
    assert_eq!((plain.kind(), plain.key()), ("api_response", "u:1"));
    // A key the cache could not have built is named whole.
    let foreign = b.entry(At::Full("other:v1:k:1"));
    assert_eq!((foreign.kind(), foreign.key()), ("", "other:v1:k:1"));
}

#[test]
fn invalidations_name_what_they_covered() {
    let b = bus(16);
    let mut s = b.subscribe();
    b.invalidation_sent(Covered::Key("app:v1:users:42"));
    b.invalidation_sent(Covered::Tag("user:42"));
    b.invalidation_sent(Covered::Kind("users"));
    b.invalidation_sent(Covered::All);
    b.invalidation_received(Covered::Cleared("app:v1:users:"));
    b.invalidation_received(Covered::Cleared(""));
    b.invalidation_received(Covered::Cleared("elsewhere:v1:users:"));
    let lines: Vec<String> = std::iter::from_fn(|| s.try_recv())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "invalidation sent key users/42",
            "invalidation sent tag user:42",
            "invalidation sent kind users",
            "invalidation sent everything",
            "invalidation received kind users",
            "invalidation received everything",
            "invalidation received everything",
        ]
    );
}

#[test]
fn events_read_as_one_line_each() {
    let b = bus(16);
    let mut s = b.subscribe();
    let full = "app:v1:api_response:weather:paris";
    b.hit(At::Full(full), Tier::L2);
    b.miss(At::Full(full), Tier::L1, MissReason::Expired);
    b.loaded(
        At::Full(full),
        Duration::from_micros(12_345),
        LoadOutcome::Loaded,
        LoadCause::Refresh,
    );
    b.stale_served(At::Full(full), StaleCause::HardTimeout);
    b.breaker(BreakerState::HalfOpen, BreakerState::Closed);
    let lines: Vec<String> = std::iter::from_fn(|| s.try_recv())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "hit L2 api_response/weather:paris",
            "miss L1 api_response/weather:paris (expired)",
            "load api_response/weather:paris loaded in 12.3ms (refresh)",
            "stale served api_response/weather:paris (hard timeout)",
            "breaker half_open -> closed",
        ]
    );
}

#[test]
fn a_stale_value_named_before_the_subscription_ended_is_not_sent_after() {
    let b = bus(4);
    let s = b.subscribe();
    let entry = b.entry_if_listening(At::Full("app:v1:k:1"));
    assert!(entry.is_some());
    drop(s);
    // No subscriber: nothing sent (and no channel receiver to send to).
    b.stale_served_entry(entry, StaleCause::LoaderFailed);
    let mut later = b.subscribe();
    assert!(later.try_recv().is_none());
}

#[test]
fn event_streams_can_move_between_tasks() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<EventStream>();
    send_sync::<Event>();
}

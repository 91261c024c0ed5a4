//! A user repository with cache-first reads: profiles and settings come from the cache, updates go
//! to the database and then invalidate, with one tag per user, everything cached about that user,
//! on every instance sharing the Redis.
//!
//! ```text
//! cargo run --example user_repository
//! ```
//!
//! Two instances of the app (`a` and `b`, two `Cache` handles on one Redis, as two processes would
//! be) read the same user; `a` updates it; `b` serves the new profile at once: the invalidation
//! travels through Redis (tag version) and the backplane (L1 eviction). Without Redis each instance
//! has only its own L1, and `b` keeps its copy until its TTL; the example says so.
//!
//! Profiles are cached until the end of the day, as in the user-repository report: the TTL is
//! computed per call from the clock (the time left until the next midnight, in UTC or in the fixed
//! offset `USERS_DAY_UTC_OFFSET`, e.g. `+02:00`). The clock is injected, so the tests below fix it
//! at a day boundary (`cargo test -p examples --example user_repository`).
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`).

use cache_core::{cached, Cache};
use examples::{connect, init_logging, peer, Timings};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where "now" comes from: the system clock in the app, a fixed instant in tests.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

const DAY_NANOS: i128 = 86_400 * 1_000_000_000;

/// "Until the end of the day" for cache entries: midnight in a fixed offset from UTC.
///
/// Hand-written rather than with a date crate: with a fixed offset, the next midnight is two lines
/// of arithmetic on the Unix time. A zone with daylight saving time (e.g. `Europe/Paris`) needs
/// the time zone database: use `jiff` or `chrono-tz` there, the rest stays the same.
#[derive(Clone)]
struct EndOfDay {
    /// Seconds east of UTC.
    utc_offset: i32,
    clock: Clock,
}

impl EndOfDay {
    fn new(utc_offset: i32, clock: Clock) -> Self {
        EndOfDay { utc_offset, clock }
    }

    /// On the system clock, in the offset of `USERS_DAY_UTC_OFFSET` (default UTC).
    fn from_env() -> Result<Self, String> {
        let offset = match std::env::var("USERS_DAY_UTC_OFFSET") {
            Ok(v) => parse_utc_offset(&v)?,
            Err(_) => 0,
        };
        Ok(EndOfDay::new(offset, Arc::new(SystemTime::now)))
    }

    /// The first midnight strictly after `now`: a whole day later when `now` is midnight itself.
    fn next_midnight(&self, now: SystemTime) -> SystemTime {
        let unix_nanos = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        };
        let local = unix_nanos + i128::from(self.utc_offset) * 1_000_000_000;
        let left = DAY_NANOS - local.rem_euclid(DAY_NANOS); // in (0, one day]
        now + Duration::from_nanos(left as u64)
    }

    /// The time left until the next midnight.
    fn ttl(&self) -> Duration {
        let now = (self.clock)();
        self.next_midnight(now)
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// A TTL function for `#[cached(ttl_fn = ...)]`: the end of the day is fixed when the call
    /// begins, the TTL is what is left of it when the value is stored. So an entry never outlives
    /// the midnight that followed the start of its load, even if the load ends after it (with
    /// `ttl = self.day.ttl()` it would outlive it by the load's duration). A load that straddles
    /// midnight gets a zero TTL: that row may be yesterday's.
    fn until_end_of_today<T>(&self) -> impl Fn(&T) -> Duration + Send + Sync + 'static {
        let clock = self.clock.clone();
        let end = self.next_midnight(clock());
        move |_: &T| end.duration_since(clock()).unwrap_or(Duration::ZERO)
    }
}

/// `+02:00`, `-05:30`, `+0530`, `Z` or `UTC`: seconds east of UTC (at most 14 hours either way).
fn parse_utc_offset(s: &str) -> Result<i32, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let bad = || format!("USERS_DAY_UTC_OFFSET={s:?}: expected +HH:MM or -HH:MM (or UTC)");
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) || rest.len() > 5 {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (
        digits[..2].parse().map_err(|_| bad())?,
        digits[2..].parse().map_err(|_| bad())?,
    );
    if m >= 60 || h * 60 + m > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Profile {
    id: u64,
    name: String,
    email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Settings {
    theme: String,
    newsletter: bool,
}

#[derive(Debug, Clone)]
enum DbError {
    NotFound(u64),
}

impl std::error::Error for DbError {}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::NotFound(id) => write!(f, "user {id} not found"),
        }
    }
}

/// The database: 25 ms per query.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, (Profile, Settings)>>,
    queries: AtomicU64,
}

impl Db {
    async fn query<T>(&self, f: impl FnOnce(&mut HashMap<u64, (Profile, Settings)>) -> T) -> T {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(25)).await;
        f(&mut self.rows.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One instance of the app's repository, with its own cache handle.
struct UserRepo {
    db: Arc<Db>,
    cache: Cache,
    /// When cached profiles expire.
    day: EndOfDay,
}

impl UserRepo {
    /// Cache-first read, kept until the end of the day; tagged `user:{id}` so an update can drop
    /// everything about the user before that.
    #[cached(
        kind = "database_query",
        key = "profile:{id}",
        tags = ["user:{id}"],
        ttl_fn = self.day.until_end_of_today(),
        cache = self.cache
    )]
    async fn profile(&self, id: u64) -> Result<Profile, DbError> {
        self.db
            .query(|rows| rows.get(&id).map(|r| r.0.clone()))
            .await
            .ok_or(DbError::NotFound(id))
    }

    #[cached(kind = "database_query", key = "settings:{id}", tags = ["user:{id}"], cache = self.cache)]
    async fn settings(&self, id: u64) -> Result<Settings, DbError> {
        self.db
            .query(|rows| rows.get(&id).map(|r| r.1.clone()))
            .await
            .ok_or(DbError::NotFound(id))
    }

    /// Write to the database first, then invalidate the user's tag: the next read anywhere loads
    /// the new row. (Invalidating before the write would let a concurrent read cache the old row.)
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        self.db
            .query(|rows| match rows.get_mut(&id) {
                Some(r) => {
                    r.0.name = name.to_string();
                    Ok(())
                }
                None => Err(DbError::NotFound(id)),
            })
            .await?;
        self.cache.invalidate_tag(&format!("user:{id}")).await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let db = Arc::new(Db::default());
    db.query(|rows| {
        for id in 1..=50 {
            rows.insert(
                id,
                (
                    Profile {
                        id,
                        name: format!("user {id}"),
                        email: format!("user{id}@example.com"),
                    },
                    Settings {
                        theme: if id % 2 == 0 { "dark" } else { "light" }.into(),
                        newsletter: id % 3 == 0,
                    },
                ),
            );
        }
    })
    .await;
    let day = EndOfDay::from_env()?;
    let a = UserRepo {
        db: db.clone(),
        cache: connect("users-example").await?,
        day: day.clone(),
    };
    let b = UserRepo {
        db: db.clone(),
        cache: peer("users-example").await?,
        day: day.clone(),
    };
    let (ttl, off) = (day.ttl().as_secs(), day.utc_offset.unsigned_abs());
    println!(
        "profiles are cached until midnight (UTC{}{:02}:{:02}): {}h{:02}m from now",
        if day.utc_offset < 0 { '-' } else { '+' },
        off / 3600,
        off % 3600 / 60,
        ttl / 3600,
        ttl % 3600 / 60
    );
    let shared = a.cache.ping_l2().await.is_ok();

    let mut timings = Timings::default();
    let mut read = async |repo: &UserRepo, id: u64| {
        let before = db.queries.load(Ordering::Relaxed);
        let started = Instant::now();
        let p = repo.profile(id).await;
        let _ = repo.settings(id).await;
        let origin = db.queries.load(Ordering::Relaxed) > before;
        timings.record(started.elapsed(), origin);
        p
    };

    println!("\n-- page views: 1,000 reads of profile + settings over 50 users, on both instances");
    let started = Instant::now();
    for i in 0..1_000u64 {
        let id = 1 + (i * 7919) % 50;
        let repo = if i % 3 == 0 { &b } else { &a };
        read(repo, id).await?;
    }
    println!(
        "took {:.1?}, database queries: {}",
        started.elapsed(),
        db.queries.load(Ordering::Relaxed)
    );

    println!("\n-- user 7 renames themself on instance a");
    println!("b before: {:?}", read(&b, 7).await?.name);
    a.rename(7, "Ada Lovelace").await?;
    tokio::time::sleep(Duration::from_millis(5)).await; // the backplane message is sub-millisecond
    let seen = read(&b, 7).await?.name;
    println!("b after:  {seen:?}");
    if seen == "Ada Lovelace" {
        println!("instance b saw the update: its L1 copy was evicted by the invalidation");
    } else if !shared {
        println!("instance b still serves its L1 copy: without Redis, invalidations cannot reach other instances (it expires with its TTL)");
    }
    println!("settings of user 7 on b: {:?}", b.settings(7).await?);
    match a.profile(999).await {
        Err(e) => println!("\nunknown user: {e} (errors are never cached)"),
        Ok(p) => println!("\nunexpected: {p:?}"),
    }

    println!(
        "\ndatabase queries in total: {}",
        db.queries.load(Ordering::Relaxed)
    );
    timings.summary(&a.cache);
    let sb = b.cache.stats();
    println!(
        "instance b: hit rate {:.1}%, L2 hits {}",
        sb.total.hit_rate * 100.0,
        sb.total.l2.hits
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24T00:00:00Z (20,781 days after the Unix epoch): a UTC midnight.
    const MIDNIGHT: u64 = 20_781 * 86_400;

    fn at(unix_ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(unix_ms)
    }

    fn fixed(t: SystemTime) -> Clock {
        Arc::new(move || t)
    }

    fn utc_at(unix_ms: u64) -> EndOfDay {
        EndOfDay::new(0, fixed(at(unix_ms)))
    }

    #[test]
    fn the_ttl_runs_to_the_next_midnight_at_a_day_boundary() {
        let midnight_ms = MIDNIGHT * 1000;
        // 23:59:59.500: half a second left.
        assert_eq!(utc_at(midnight_ms - 500).ttl(), Duration::from_millis(500));
        // 00:00:00.000: the day has just begun, a full day left.
        assert_eq!(utc_at(midnight_ms).ttl(), Duration::from_secs(86_400));
        // 00:00:00.001 and 12:00: the rest of the day.
        assert_eq!(
            utc_at(midnight_ms + 1).ttl(),
            Duration::from_millis(86_400_000 - 1)
        );
        assert_eq!(
            utc_at(midnight_ms + 43_200_000).ttl(),
            Duration::from_secs(43_200)
        );
        // Nanoseconds count: 23:59:59.999999999 has one left.
        let day = EndOfDay::new(
            0,
            fixed(UNIX_EPOCH + Duration::from_secs(MIDNIGHT) - Duration::from_nanos(1)),
        );
        assert_eq!(day.ttl(), Duration::from_nanos(1));
    }

    #[test]
    fn a_utc_offset_moves_the_end_of_the_day() {
        let midnight_ms = MIDNIGHT * 1000;
        // 21:59:59.500 UTC is 23:59:59.500 at +02:00.
        let paris_summer = EndOfDay::new(7_200, fixed(at(midnight_ms - 7_200_000 - 500)));
        assert_eq!(paris_summer.ttl(), Duration::from_millis(500));
        // 05:30:00 UTC is midnight at -05:30: a full day.
        let minus = EndOfDay::new(-19_800, fixed(at(midnight_ms + 19_800_000)));
        assert_eq!(minus.ttl(), Duration::from_secs(86_400));
        // The same instant in UTC is 05:30 into the day.
        assert_eq!(
            utc_at(midnight_ms + 19_800_000).ttl(),
            Duration::from_secs(86_400 - 19_800)
        );
        // Before 1970 too (the arithmetic is on signed time).
        let old = EndOfDay::new(0, fixed(UNIX_EPOCH - Duration::from_millis(500)));
        assert_eq!(old.ttl(), Duration::from_millis(500));
    }

    #[test]
    fn a_load_that_straddles_midnight_keeps_its_value_only_until_that_midnight() {
        let now = Arc::new(Mutex::new(at(MIDNIGHT * 1000 - 10)));
        let clock: Clock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap())
        };
        let day = EndOfDay::new(0, clock);
        // The call begins at 23:59:59.990...
        let ttl_of = day.until_end_of_today::<u32>();
        // ...stored 5 ms later: 5 ms left; stored after midnight: nothing left.
        *now.lock().unwrap() = at(MIDNIGHT * 1000 - 5);
        assert_eq!(ttl_of(&1), Duration::from_millis(5));
        *now.lock().unwrap() = at(MIDNIGHT * 1000 + 10);
        assert_eq!(ttl_of(&1), Duration::ZERO);
        // A call that begins at midnight keeps its value a whole day, minus the load's time.
        *now.lock().unwrap() = at(MIDNIGHT * 1000);
        let ttl_of = day.until_end_of_today::<u32>();
        *now.lock().unwrap() = at(MIDNIGHT * 1000 + 25);
        assert_eq!(ttl_of(&1), Duration::from_millis(86_400_000 - 25));
    }

    #[test]
    fn utc_offsets_are_read_as_written_and_nonsense_is_refused() {
        for (s, secs) in [
            ("+02:00", 7_200),
            ("-05:30", -19_800),
            ("+0545", 20_700),
            ("+14:00", 50_400),
            ("Z", 0),
            ("UTC", 0),
            ("", 0),
        ] {
            assert_eq!(parse_utc_offset(s), Ok(secs), "{s}");
        }
        for s in [
            "2", "+2", "+02", "+02:60", "+14:01", "-15:00", "+0a:00", "02:00", "+02::00",
        ] {
            assert!(parse_utc_offset(s).is_err(), "{s}");
        }
    }

    /// The repository on an L1-only cache, with the clock fixed at `now`.
    async fn repo(prefix: &str, db: &Arc<Db>, now: SystemTime) -> UserRepo {
        let cache = Cache::builder()
            .prefix(prefix)
            .stats_report_interval(Duration::ZERO)
            .build()
            .await
            .expect("an L1-only cache");
        UserRepo {
            db: db.clone(),
            cache,
            day: EndOfDay::new(0, fixed(now)),
        }
    }

    #[tokio::test]
    async fn a_profile_read_at_23_59_59_500_expires_half_a_second_later_and_one_read_at_midnight_stays(
    ) {
        let db = Arc::new(Db::default());
        db.query(|rows| {
            rows.insert(
                1,
                (
                    Profile {
                        id: 1,
                        name: "Ada".into(),
                        email: "ada@example.com".into(),
                    },
                    Settings {
                        theme: "dark".into(),
                        newsletter: false,
                    },
                ),
            );
        })
        .await;
        let late = repo("users-test-late", &db, at(MIDNIGHT * 1000 - 500)).await;
        let early = repo("users-test-early", &db, at(MIDNIGHT * 1000)).await;
        let queries = || db.queries.load(Ordering::Relaxed);

        let started = Instant::now();
        late.profile(1).await.expect("user 1");
        early.profile(1).await.expect("user 1");
        let loaded = queries();
        late.profile(1).await.expect("user 1");
        early.profile(1).await.expect("user 1");
        assert_eq!(queries(), loaded, "both profiles are served from the cache");

        // The late one expires after its 500 ms (not after the kind's 10 minutes): poll for it.
        let expired_after = loop {
            let before = queries();
            late.profile(1).await.expect("user 1");
            if queries() > before {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the profile read at 23:59:59.500 was still cached after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            expired_after >= Duration::from_millis(450),
            "expired after {expired_after:?}, before its 500 ms"
        );
        // The one read at midnight is good for the whole day.
        let before = queries();
        early.profile(1).await.expect("user 1");
        assert_eq!(
            queries(),
            before,
            "the profile read at midnight was reloaded"
        );
    }
}

//! # tiered-cache: `cache-core`
//!
//! A two-tier application cache: an in-process [moka](https://docs.rs/moka) cache (L1, bounded by
//! bytes, typed values) in front of a shared Redis (L2, MessagePack in a versioned envelope, zstd
//! above a size threshold).
//!
//! ## Motivation
//! Services that hand-roll a Redis cache tend to get the same things wrong: a dead or hung Redis
//! takes the app down, concurrent misses stampede the origin, bytes written by an older deploy fail
//! to decode, and nobody knows the hit rate. This crate handles those once:
//!
//! - **Degradation**: each Redis operation has a deadline (default 100 ms) and a circuit breaker
//!   skips Redis while it fails; the cache serves from L1 and loaders and never returns an L2 error.
//! - **Stampede protection**: concurrent callers of a cold key share one loader call; opt-in, so do
//!   instances sharing Redis (a short Redis lock), and TTL jitter spreads expiries.
//! - **Freshness**: eager (or XFetch) refresh in the background, soft and hard loader timeouts
//!   ([`Cache::get_or_load_owned`]), and invalidations that survive a Redis outage.
//! - **Race safety**: a load that began before an invalidation does not store its stale result.
//! - **Untrusted bytes**: anything undecodable in Redis is a counted miss, never a panic.
//! - **Stats**: per tier and per kind, serializable.
//!
//! ## Quick start
//! ```
//! use cache_core::{Cache, Kind};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Weather { city: String, celsius: f32 }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // Reads REDIS_URL, CACHE_PREFIX, ... ; without REDIS_URL it runs L1-only.
//! let cache = Cache::from_env().await?;
//! let w = cache
//!     .get_or_load(Kind::API_RESPONSE, "weather:paris", || async {
//!         Ok::<_, std::io::Error>(Weather { city: "Paris".into(), celsius: 21.5 })
//!     })
//!     .await
//!     .expect("loader failed");
//! assert_eq!(w.city, "Paris");
//! println!("hit rate: {:.2}", cache.stats().total.hit_rate);
//! # Ok::<_, cache_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Components
//! [`Cache`] (the handle), [`CacheBuilder`] (settings in code, `from_env`, a TOML `config_file`), [`Kind`] / [`KindConfig`] /
//! [`Tiers`] (named kinds with default TTLs, tier routing and freshness settings), [`EntryOptions`]
//! (per-call TTL, fixed or computed from the value, tags and freshness), [`Stats`] (snapshot),
//! [`Error`], [`LoadError`].
//!
//! Per call: [`Cache::get_or_load_traced`] returns a [`Lookup`] telling where the value came from
//! ([`Source`]: L1, L2, the loader, a stale fallback) and its age; [`scope::bypass`] and [`scope::refresh`] scope
//! how the `#[cached]` functions called inside a future use the cache. For everything the cache
//! does, [`Cache::events`] subscribes to a stream of [`Event`]s (hits with their tier, misses with
//! their reason, loads, stale values served, breaker transitions, invalidations sent and
//! received): see [`events`].
//!
//! Attribute macros (feature `macros`, on by default): `#[cached]` reads through the cache;
//! `#[cache_put]` stores what a function returns and `#[cache_invalidate]` drops entries after it
//! succeeds, on every instance.
//!
//! Operations: [`Cache::warm`] / [`Cache::warm_with`] ([`WarmPlan`], [`WarmReport`]) fill the cache
//! at startup; `Cache::prometheus_text` (feature `metrics`) exports the stats for Prometheus; each instance publishes
//! its stats to Redis for the `cachectl` admin tool; the `http` feature adds an axum router
//! ([`http::router`]) with stats, warm, invalidate, health and metrics endpoints.
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod breaker;
mod builder;
mod cache;
mod clock;
mod codec;
mod coherence;
mod config;
mod departures;
mod entry_store;
mod error;
pub mod events;
mod flight;
mod freshness;
mod heap_size;
mod history;
mod housekeeper;
mod inner;
mod jitter;
mod key;
mod kind;
mod l1;
mod l2;
mod load;
mod loader;
mod lock;
mod macro_support;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod options;
mod provenance;
mod recommend;
mod refresh;
pub mod scope;
pub mod stats;
mod tags;
mod typed;
mod warm;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;

/// Items used by code that `#[cached]` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::macro_support::*;
    pub use serde;
}

pub use breaker::BreakerState;
pub use builder::CacheBuilder;
pub use cache::Cache;
#[cfg(feature = "macros")]
pub use cache_macros::{cache_invalidate, cache_put, cached};
pub use coherence::Confirmation;
pub use error::{Error, LoadError, Result};
pub use events::{Event, EventStream};
pub use key::MAX_KEY_PART;
pub use kind::{Kind, KindConfig, Tiers};
pub use macro_support::{default_cache, set_default_cache};
pub use options::MAX_TTL;
pub use options::{EntryOptions, OwnedOptions};
pub use provenance::{Lookup, Source};
pub use stats::Stats;
pub use typed::Typed;
pub use warm::{
    WarmFailure, WarmOutput, WarmPlan, WarmReport, WarmerSummary, DEFAULT_WARM_CONCURRENCY,
    DEFAULT_WARM_TIMEOUT,
};

/// The key prefix of a cache built without [`CacheBuilder::prefix`] or `CACHE_PREFIX`.
pub const DEFAULT_PREFIX: &str = "cache";

/// The README's code sample, compiled and run as a doctest.
#[cfg(doctest)]
// `README.md` here is a link to the workspace README, packaged as a file by `cargo package`.
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! Named kinds of cached data, each with a default TTL and a tier routing.

use std::{borrow::Cow, fmt, time::Duration};

/// A named kind of cached data (`api_response`, `session_data`, ...). The kind is part of the Redis
/// key, picks the default TTL and the tiers used, and has its own stats.
///
/// Six kinds are built in; register your own with
/// [`CacheBuilder::kind`](crate::CacheBuilder::kind).
///
/// ```
/// use cache_core::Kind;
/// assert_eq!(Kind::API_RESPONSE.name(), "api_response");
/// assert_eq!(Kind::API_RESPONSE.default_ttl().unwrap().as_secs(), 300);
/// let custom = Kind::new("llm_answer");
/// assert_eq!(custom.default_ttl(), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Kind(Cow<'static, str>);

impl Kind {
    /// ML model outputs and metadata. Default TTL 3600 s.
    pub const MODEL_DATA: Kind = Kind::from_static("model_data");
    /// User sessions. Default TTL 1800 s.
    pub const SESSION_DATA: Kind = Kind::from_static("session_data");
    /// Responses of external APIs. Default TTL 300 s.
    pub const API_RESPONSE: Kind = Kind::from_static("api_response");
    /// Database query results. Default TTL 600 s.
    pub const DATABASE_QUERY: Kind = Kind::from_static("database_query");
    /// Results of expensive computations. Default TTL 1800 s.
    pub const HEAVY_COMPUTATION: Kind = Kind::from_static("heavy_computation");
    /// Rarely changing reference data. Default TTL 7200 s.
    pub const STATIC_DATA: Kind = Kind::from_static("static_data");

    /// The built-in kinds with their default TTLs.
    pub const BUILT_IN: [(Kind, u64); 6] = [
        (Kind::MODEL_DATA, 3600),
        (Kind::SESSION_DATA, 1800),
        (Kind::API_RESPONSE, 300),
        (Kind::DATABASE_QUERY, 600),
        (Kind::HEAVY_COMPUTATION, 1800),
        (Kind::STATIC_DATA, 7200),
    ];

    /// A kind from a static name (usable in `const`).
    pub const fn from_static(name: &'static str) -> Kind {
        Kind(Cow::Borrowed(name))
    }

    /// A kind by name. Names are ASCII letters, digits, `_`, `-`, `.`, at most 64 bytes; the cache
    /// refuses to register other names.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Kind {
        Kind(name.into())
    }

    /// The kind's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The default TTL of a built-in kind; `None` for other kinds.
    pub fn default_ttl(&self) -> Option<Duration> {
        Kind::BUILT_IN
            .iter()
            .find(|(k, _)| k.0 == self.0)
            .map(|(_, s)| Duration::from_secs(*s))
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kind({})", self.0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Kind {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Kind {
    fn from(s: &'static str) -> Self {
        Kind::from_static(s)
    }
}

/// Which tiers a kind uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Tiers {
    /// In-process L1 in front of Redis L2 (the default).
    #[default]
    Both,
    /// Only the in-process L1 (data that must not leave the process, or is cheap to recompute).
    L1Only,
    /// Only Redis (large values that would crowd L1, or data that must be coherent at once).
    L2Only,
}

impl Tiers {
    pub(crate) fn l1(self) -> bool {
        matches!(self, Tiers::Both | Tiers::L1Only)
    }
    pub(crate) fn l2(self) -> bool {
        matches!(self, Tiers::Both | Tiers::L2Only)
    }
}

/// Settings of one kind.
///
/// ```
/// use cache_core::{KindConfig, Tiers};
/// use std::time::Duration;
/// let cfg = KindConfig::new(Duration::from_secs(60))
///     .tiers(Tiers::Both)
///     .l1_ttl(Duration::from_secs(10));
/// assert_eq!(cfg.ttl(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct KindConfig {
    ttl: Duration,
    l1_ttl: Option<Duration>,
    tiers: Tiers,
}

impl KindConfig {
    /// A kind with this default TTL, using both tiers, with the L1 TTL equal to the TTL.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            l1_ttl: None,
            tiers: Tiers::Both,
        }
    }

    /// Which tiers the kind uses. Default: [`Tiers::Both`].
    #[must_use]
    pub fn tiers(mut self, tiers: Tiers) -> Self {
        self.tiers = tiers;
        self
    }

    /// A cap on how long an entry stays in L1 (shorter than the TTL bounds how stale an instance's
    /// L1 copy can get). Default: the entry's TTL.
    #[must_use]
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = Some(ttl);
        self
    }

    /// The default TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The L1 TTL cap, if any.
    pub fn l1_ttl_cap(&self) -> Option<Duration> {
        self.l1_ttl
    }

    /// The tiers used.
    pub fn tier_routing(&self) -> Tiers {
        self.tiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds_have_the_documented_ttls() {
        let built_in = Kind::BUILT_IN;
        let got: Vec<(&str, u64)> = built_in
            .iter()
            .map(|(k, _)| (k.name(), k.default_ttl().unwrap().as_secs()))
            .collect();
        assert_eq!(
            got,
            [
                ("model_data", 3600),
                ("session_data", 1800),
                ("api_response", 300),
                ("database_query", 600),
                ("heavy_computation", 1800),
                ("static_data", 7200)
            ]
        );
    }
}

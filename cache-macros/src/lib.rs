//! The `#[cached]` attribute macro of tiered-cache (in progress; see the project's issues).

//! Runnable examples of tiered-cache: see `examples/README.md` and `cargo run --example NAME`.

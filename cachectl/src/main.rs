//! `cachectl`: admin tool for tiered-cache.

fn main() {}

//! Compile-time behaviour of `#[cached]`: accepted forms compile (and run), every rule has a
//! `compile_fail` case with its golden `.stderr`. Regenerate goldens with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}

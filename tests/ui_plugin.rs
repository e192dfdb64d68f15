//! What users see when they misuse `#[plugin]` or the builder's kind bounds: each case under
//! `tests/ui/{plugin,builder}/fail` has its reviewed `.stderr`; the `pass` cases keep valid
//! uses valid (and run). Regenerate with `TRYBUILD=overwrite cargo test --test ui_plugin` on
//! the pinned toolchain, then read every changed `.stderr`.

#[test]
fn plugin_attribute() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/plugin/pass/*.rs");
    t.compile_fail("tests/ui/plugin/fail/*.rs");
}

#[test]
fn builder_kind_bounds() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/builder/pass/*.rs");
    t.compile_fail("tests/ui/builder/fail/*.rs");
}

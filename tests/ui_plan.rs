//! The `plan!` UI suite: every misuse in `tests/ui/plan/fail` must fail to compile with the
//! reviewed `.stderr` next to it, and every construct in `tests/ui/plan/pass` must compile.
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test --test ui_plan` (on the
//! pinned toolchain) and read every one before committing it.

#[test]
fn plan_macro_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/plan/pass/*.rs");
    t.compile_fail("tests/ui/plan/fail/*.rs");
}

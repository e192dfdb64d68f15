//! `plan!{}`, `block!{}` and `sequence!{}`: parse ([`ast`]) → validate ([`valid`], collecting
//! every error in a [`ctxt::Ctxt`]) → expand ([`expand`]) to calls of the typed builder.

mod ast;
mod ctxt;
mod expand;
mod valid;

use proc_macro2::TokenStream;

pub(crate) use valid::Kind;

/// Expands the input of the macro whose root node is `root` (`Plan`, `Block` or `Sequence`).
pub(crate) fn expand(root: Kind, input: TokenStream) -> TokenStream {
    let cx = ctxt::Ctxt::new();
    let body = ast::parse(&cx, input);
    let ir = valid::validate(&cx, root, &body);
    match (cx.check(), ir) {
        (Ok(()), Some(ir)) => expand::expand(&ir),
        (Err(errors), _) => expand::fallback(root, errors),
        (Ok(()), None) => unreachable!("plan! validation failed without reporting why"),
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn expanded(root: Kind, input: TokenStream) -> String {
        expand(root, input).to_string()
    }

    #[test]
    fn a_plan_expands_to_the_typed_builder() {
        let out = expanded(
            Kind::Plan,
            quote! {
                name: "p",
                cont_checks { delay: 30s, action { name: "c", plugin: Probe, request: ProbeReq::default() } }
                block {
                    name: "b",
                    tolerated_failures: 10%,
                    for h in hosts {
                        sequence { name: h, action { name: "a", plugin: plugins::Scp, request: R, timeout: 5min, retries: 2 } }
                    }
                    ..more
                }
                deferred_actions { batch { name: "undo", when: OnFailure, action { name: "u", plugin: Scp, request: R } } }
            },
        );
        for needle in [
            ":: coercion :: Plan :: builder (\"p\")",
            ". cont_checks (",
            ". delay (:: core :: time :: Duration :: from_secs (30))",
            ":: coercion :: __private :: plan_check :: < Probe , _ > (\"c\"",
            ":: coercion :: __private :: RequestOf < Probe >",
            ". tolerated_failures (:: coercion :: Tolerance :: Percent (10))",
            "for h in hosts {",
            ":: coercion :: __private :: plan_action :: < plugins :: Scp , _ > (\"a\"",
            ". timeout (:: core :: time :: Duration :: from_secs (300))",
            ". retries (2)",
            ". sequences (more)",
            ". deferred (:: coercion :: DeferredBatch :: builder (\"undo\" , :: coercion :: When :: OnFailure) . action (",
            ". build ()",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn a_rolling_expands_to_the_rolling_builder() {
        let out = expanded(
            Kind::Plan,
            quote! {
                name: "p",
                rolling {
                    name: "r",
                    serial: [1, 5%, n, rest],
                    concurrency: 5,
                    post_checks { action { name: "c", plugin: Probe, request: R } }
                    for h in hosts { sequence { name: h, action { name: "a", plugin: Scp, request: R } } }
                }
            },
        );
        for needle in [
            ". rolling ({ let mut __coercion_rolling = :: coercion :: rolling :: Rolling :: new (\"r\" , [:: coercion :: rolling :: BatchSize :: Count (1) , :: coercion :: rolling :: BatchSize :: Percent (5) , :: coercion :: rolling :: BatchSize :: from (n) , :: coercion :: rolling :: BatchSize :: Rest]) . concurrency (5) ;",
            "__coercion_rolling = __coercion_rolling . post_checks (",
            "for h in hosts { __coercion_rolling = __coercion_rolling . sequence (",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in\n{out}");
        }
        let out = expanded(
            Kind::Plan,
            quote!(name: "p", rolling { name: "r", serial: sizes, ..seqs }),
        );
        assert!(
            out.contains(". rolling (:: coercion :: rolling :: Rolling :: new (\"r\" , sizes) . sequences (seqs))"),
            "{out}"
        );
    }

    #[test]
    fn fragments_expand_to_builders() {
        let block = expanded(Kind::Block, quote!(name: "b", ..seqs));
        assert_eq!(
            block,
            ":: coercion :: Block :: builder (\"b\") . sequences (seqs)"
        );
        assert!(!block.contains("build ()"), "{block}");
        let sequence = expanded(
            Kind::Sequence,
            quote!(name: "s", action { name: "a", plugin: A, request: R }),
        );
        assert!(
            sequence.starts_with(":: coercion :: Sequence :: builder (\"s\") . action ("),
            "{sequence}"
        );
    }

    #[test]
    fn invalid_input_expands_to_errors_and_a_stand_in() {
        let out = expanded(
            Kind::Plan,
            quote!(name: "p", block { name: "b", concurrency: 0 }),
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(
            out.contains("invalid_input :: < :: coercion :: Plan > ()"),
            "{out}"
        );
        assert!(!out.contains("builder"), "{out}");
        let out = expanded(Kind::Sequence, quote!(name: "s"));
        assert!(
            out.contains("invalid_input :: < :: coercion :: SequenceBuilder > ()"),
            "{out}"
        );
    }
}

//! Code generation: the validated IR becomes calls of the typed builder.
//!
//! Actions go through `::coercion::__private::{plan_action, plan_check}`, which are bounded on
//! the plugin kinds, and their requests are bound to `<P as ::coercion::Plugin>::Request`
//! (`__private::RequestOf<P>`); both carry the span of the user's `plugin:` type so the
//! compiler's errors (wrong kind, wrong request type, not a plugin) point there. Builder locals
//! use `Span::mixed_site()`, so they can never clash with the user's names.

use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned;

use super::valid::{
    Arg, BatchSizeLit, Child, DurationLit, DurationUnit, Head, Kind, NodeIr, Serial, Slot,
    ToleranceLit, When,
};

/// The expression a root node expands to: a `Plan`, a `BlockBuilder` or a `SequenceBuilder`.
pub(crate) fn expand(root: &NodeIr) -> TokenStream {
    node(root, Kind::Plan, false)
}

/// Whether `ir` says `require_previews: true`.
fn requires_previews(ir: &NodeIr) -> bool {
    ir.setters
        .iter()
        .any(|s| s.field == "require_previews" && matches!(s.value, Arg::Bool(true, _)))
}

/// The value of the macro when its input was invalid: the errors, then a stand-in of the
/// right type, so code using the value does not report errors of its own.
pub(crate) fn fallback(root: Kind, errors: syn::Error) -> TokenStream {
    let ty = match root {
        Kind::Plan => quote!(::coercion::Plan),
        Kind::Block => quote!(::coercion::BlockBuilder),
        _ => quote!(::coercion::SequenceBuilder),
    };
    let errors = errors.to_compile_error();
    quote!({
        #errors
        ::coercion::__private::invalid_input::<#ty>()
    })
}

/// The builder local of a node kind.
fn local(kind: Kind) -> Ident {
    let name = match kind {
        Kind::Plan | Kind::DeferredActions => "__coercion_plan",
        Kind::Block => "__coercion_block",
        Kind::Rolling => "__coercion_rolling",
        Kind::Sequence => "__coercion_sequence",
        Kind::Checks(_) => "__coercion_checks",
        Kind::Batch => "__coercion_batch",
        Kind::Action => "__coercion_action",
    };
    Ident::new(name, Span::mixed_site())
}

/// The methods that add one child of the repeated kind, and several.
fn push_methods(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Plan => ("block", "blocks"),
        Kind::Block | Kind::Rolling => ("sequence", "sequences"),
        Kind::Sequence | Kind::Checks(_) | Kind::Batch | Kind::Action => ("action", "actions"),
        Kind::DeferredActions => ("deferred", "deferred_batches"),
    }
}

/// The method that adds one `child` node: `one` of its parent, or `rolling` for a rolling
/// rollout in a plan.
fn push_method(child: Kind, one: &'static str) -> &'static str {
    if child == Kind::Rolling {
        "rolling"
    } else {
        one
    }
}

/// The builder expression of `ir`, a child of `parent`; `previews`: an enclosing plan or block
/// requires previews, so every action plugin under it must preview.
fn node(ir: &NodeIr, parent: Kind, previews: bool) -> TokenStream {
    let previews = previews || requires_previews(ir);
    let head = match &ir.head {
        Head::Named(name) => {
            let ty = match ir.kind {
                Kind::Plan => quote!(Plan),
                Kind::Block => quote!(Block),
                _ => quote!(Sequence),
            };
            quote!(::coercion::#ty::builder(#name))
        }
        Head::Batch { name, when } => {
            let when = match when {
                When::Variant(v) => quote_spanned!(v.span()=> ::coercion::When::#v),
                When::Expr(e) => quote!(#e),
            };
            quote!(::coercion::DeferredBatch::builder(#name, #when))
        }
        Head::Rolling { name, serial } => {
            let serial = match serial {
                Serial::List(sizes) => {
                    let sizes = sizes.iter().map(batch_size);
                    quote!([#(#sizes),*])
                }
                Serial::Expr(e) => quote!(#e),
            };
            quote!(::coercion::rolling::Rolling::new(#name, #serial))
        }
        Head::Checks => quote!(::coercion::Checks::builder()),
        Head::Action(a) => action_head(
            &a.name,
            &a.plugin,
            &a.request,
            match parent {
                Kind::Checks(_) => "plan_check",
                _ if previews => "plan_previewed_action",
                _ => "plan_action",
            },
        ),
        Head::DeferredActions => unreachable!("deferred batches are added to the plan directly"),
    };
    let setters = ir.setters.iter().map(|s| {
        let method = Ident::new(&s.field.to_string(), s.field.span());
        let arg = arg(&s.value);
        quote!(.#method(#arg))
    });
    let build = if ir.kind == Kind::Plan {
        quote!(.build())
    } else {
        quote!()
    };
    // Without loops or branches the children are one chain of builder calls, exactly what a
    // hand-written builder expression is; otherwise a builder local is updated in place.
    if let Some(calls) = chain(ir.kind, &ir.children, previews) {
        return quote!(#head #(#setters)* #calls #build);
    }
    let var = local(ir.kind);
    let stmts = children(&var, ir.kind, &ir.children, previews);
    quote!({
        let mut #var = #head #(#setters)*;
        #stmts
        #var #build
    })
}

/// The calls that add `items` to a `kind` builder as one chain (`.block(a).block(b)`), or
/// `None` when a `for` or an `if` needs statements.
fn chain(kind: Kind, items: &[Child], previews: bool) -> Option<TokenStream> {
    let (one, many) = push_methods(kind);
    let mut out = TokenStream::new();
    for child in items {
        out.extend(match child {
            Child::Node(n) => match n.kind {
                Kind::Checks(slot) => {
                    let method = Ident::new(slot_method(slot), n.span);
                    let checks = node(n, kind, previews);
                    quote!(.#method(#checks))
                }
                Kind::DeferredActions => chain(Kind::DeferredActions, &n.children, previews)?,
                _ => {
                    let method = Ident::new(push_method(n.kind, one), n.span);
                    let value = node(n, kind, previews);
                    quote!(.#method(#value))
                }
            },
            Child::Splice(expr) => {
                let method = Ident::new(many, expr.span());
                quote!(.#method(#expr))
            }
            Child::For { .. } | Child::If { .. } => return None,
        });
    }
    Some(out)
}

/// `{ let req: <P as Plugin>::Request = request; plan_action::<P>(name, req) }` (or
/// `plan_check`), spanned at `P`: a plugin of the wrong kind is one error under the user's
/// type, and a request of the wrong type reads "expected `PReq`, found `OtherReq`", with
/// "expected due to this" under the plugin.
fn action_head(
    name: &TokenStream,
    plugin: &TokenStream,
    request: &TokenStream,
    ctor: &str,
) -> TokenStream {
    let span = type_span(plugin);
    let ctor = Ident::new(ctor, span);
    let req = Ident::new("__coercion_request", Span::mixed_site().located_at(span));
    quote_spanned! {span=>
        {
            let #req: ::coercion::__private::RequestOf<#plugin> = #request;
            ::coercion::__private::#ctor::<#plugin, _>(#name, #req)
        }
    }
}

/// The span errors about a plugin type point at: its last identifier (`Scp` in
/// `plugins::Scp`), which is also where the compiler reports a failed projection.
fn type_span(ty: &TokenStream) -> Span {
    let mut span = None;
    for tt in ty.clone() {
        match &tt {
            TokenTree::Ident(i) => span = Some(i.span()),
            _ if span.is_none() => span = Some(tt.span()),
            _ => {}
        }
    }
    span.unwrap_or_else(Span::call_site)
}

/// The statements that add `children` to the builder local `var` of a `kind` node.
fn children(var: &Ident, kind: Kind, items: &[Child], previews: bool) -> TokenStream {
    let (one, many) = push_methods(kind);
    let mut out = TokenStream::new();
    for child in items {
        out.extend(match child {
            Child::Node(n) => match n.kind {
                Kind::Checks(slot) => {
                    let method = Ident::new(slot_method(slot), n.span);
                    let checks = node(n, kind, previews);
                    quote!(#var = #var.#method(#checks);)
                }
                Kind::DeferredActions => {
                    children(var, Kind::DeferredActions, &n.children, previews)
                }
                _ => {
                    let method = Ident::new(push_method(n.kind, one), n.span);
                    let value = node(n, kind, previews);
                    quote!(#var = #var.#method(#value);)
                }
            },
            Child::For { pat, expr, body } => {
                let body = children(var, kind, body, previews);
                quote!(for #pat in #expr { #body })
            }
            Child::If { arms, else_body } => {
                let arms = arms.iter().map(|(cond, body)| {
                    let body = children(var, kind, body, previews);
                    quote!(if #cond { #body })
                });
                let else_body = else_body.as_ref().map(|body| {
                    let body = children(var, kind, body, previews);
                    quote!(else { #body })
                });
                quote!(#(#arms)else* #else_body)
            }
            Child::Splice(expr) => {
                let method = Ident::new(many, expr.span());
                quote!(#var = #var.#method(#expr);)
            }
        });
    }
    out
}

fn slot_method(slot: Slot) -> &'static str {
    match slot {
        Slot::Bypass => "bypass_checks",
        Slot::Pre => "pre_checks",
        Slot::Cont => "cont_checks",
        Slot::Post => "post_checks",
        Slot::Deferred => "deferred_checks",
    }
}

fn batch_size(size: &BatchSizeLit) -> TokenStream {
    match size {
        BatchSizeLit::Count(n, span) => {
            let n = Literal::u64_unsuffixed(*n);
            quote_spanned!(*span=> ::coercion::rolling::BatchSize::Count(#n))
        }
        BatchSizeLit::Percent(p, span) => {
            let p = Literal::u8_unsuffixed(*p);
            quote_spanned!(*span=> ::coercion::rolling::BatchSize::Percent(#p))
        }
        BatchSizeLit::Rest(span) => quote_spanned!(*span=> ::coercion::rolling::BatchSize::Rest),
        BatchSizeLit::Expr(e) => quote!(::coercion::rolling::BatchSize::from(#e)),
    }
}

fn arg(arg: &Arg) -> TokenStream {
    match arg {
        Arg::Expr(e) => quote!(#e),
        Arg::Bool(b, span) => quote_spanned!(*span=> #b),
        Arg::Duration(DurationLit { amount, unit, span }) => {
            let amount = Literal::u64_unsuffixed(*amount);
            match unit {
                DurationUnit::Millis => {
                    quote_spanned!(*span=> ::core::time::Duration::from_millis(#amount))
                }
                DurationUnit::Secs => {
                    quote_spanned!(*span=> ::core::time::Duration::from_secs(#amount))
                }
            }
        }
        Arg::Tolerance(ToleranceLit::Count(n, span)) => {
            let n = Literal::u32_unsuffixed(*n);
            quote_spanned!(*span=> ::coercion::Tolerance::Count(#n))
        }
        Arg::Tolerance(ToleranceLit::Percent(p, span)) => {
            let p = Literal::u8_unsuffixed(*p);
            quote_spanned!(*span=> ::coercion::Tolerance::Percent(#p))
        }
        Arg::Tolerance(ToleranceLit::Unlimited(span)) => {
            quote_spanned!(*span=> ::coercion::Tolerance::Unlimited)
        }
    }
}

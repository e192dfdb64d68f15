//! `#[plugin]`: parse the arguments (collecting every error), validate the item, expand to the
//! marker impls and the inventory registration.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Item, Lit, Meta, Path, Token};

use crate::suggest::did_you_mean;

const ARGS: &[&str] = &[
    "check",
    "name",
    "new",
    "manual",
    "not_idempotent",
    "preview",
];

/// The parsed arguments of one `#[plugin(...)]`.
#[derive(Default)]
struct Args {
    check: Option<Span>,
    name: Option<syn::LitStr>,
    new: Option<Path>,
    manual: Option<Span>,
    not_idempotent: Option<Span>,
    preview: Option<Span>,
}

fn duplicate(errors: &mut Vec<syn::Error>, span: Span, arg: &str) {
    errors.push(syn::Error::new(
        span,
        format!("duplicate `{arg}` argument in #[plugin(...)]"),
    ));
}

fn parse_args(args: TokenStream, errors: &mut Vec<syn::Error>) -> Args {
    let mut out = Args::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(m) => m,
        Err(e) => {
            errors.push(e);
            return out;
        }
    };
    for meta in metas {
        let Some(ident) = meta.path().get_ident().map(|i| i.to_string()) else {
            errors.push(syn::Error::new(
                meta.path().span(),
                "expected a plugin argument such as `check` or `name = \"...\"`",
            ));
            continue;
        };
        let span = meta.span();
        match (ident.as_str(), &meta) {
            ("check", Meta::Path(_)) => {
                if out.check.replace(span).is_some() {
                    duplicate(errors, span, "check");
                }
            }
            ("manual", Meta::Path(_)) => {
                if out.manual.replace(span).is_some() {
                    duplicate(errors, span, "manual");
                }
            }
            ("not_idempotent", Meta::Path(_)) => {
                if out.not_idempotent.replace(span).is_some() {
                    duplicate(errors, span, "not_idempotent");
                }
            }
            ("preview", Meta::Path(_)) => {
                if out.preview.replace(span).is_some() {
                    duplicate(errors, span, "preview");
                }
            }
            ("name", Meta::NameValue(nv)) => match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
                    if s.value().trim().is_empty() {
                        errors.push(syn::Error::new(s.span(), "plugin name must not be blank"));
                    } else if out.name.replace(s.clone()).is_some() {
                        duplicate(errors, span, "name");
                    }
                }
                other => errors.push(syn::Error::new(
                    other.span(),
                    "`name` takes a string literal: `name = \"example.com/ping\"`",
                )),
            },
            ("new", Meta::NameValue(nv)) => match &nv.value {
                Expr::Path(p) if p.qself.is_none() => {
                    if out.new.replace(p.path.clone()).is_some() {
                        duplicate(errors, span, "new");
                    }
                }
                other => errors.push(syn::Error::new(
                    other.span(),
                    "`new` takes the path of a function that returns the plugin: `new = MyPlugin::from_env`",
                )),
            },
            ("check" | "manual" | "not_idempotent" | "preview", _) => errors.push(syn::Error::new(
                span,
                format!("`{ident}` takes no value: write `#[plugin({ident})]`"),
            )),
            ("name" | "new", _) => errors.push(syn::Error::new(
                span,
                format!("`{ident}` takes a value: write `{ident} = ...`"),
            )),
            (other, _) => {
                let hint = match did_you_mean(other, ARGS) {
                    none if none.is_empty() => "; expected one of `check`, `name = \"...\"`, `new = path`, `manual`, `not_idempotent`, `preview`".to_owned(),
                    suggestion => suggestion,
                };
                errors.push(syn::Error::new(meta.path().span(), format!("unknown #[plugin] argument `{other}`{hint}")))
            }
        }
    }
    if let (Some(preview), Some(_)) = (out.preview, out.check) {
        errors.push(syn::Error::new(
            preview,
            "`preview` is for action plugins: a preview runs check plugins for real (they have no side effects)",
        ));
    }
    if let (Some(manual), Some(_)) = (out.manual, &out.new) {
        errors.push(syn::Error::new(
            manual,
            "`new` and `manual` exclude each other: a manual plugin is not built by the registry",
        ));
    }
    out
}

/// Expands `#[plugin(args)] item`. On error the item is emitted unchanged next to the errors,
/// so one bad argument does not turn every use of the struct into an error.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Vec::new();
    let parsed = parse_args(args, &mut errors);
    let item_ast: Item = match syn::parse2(item.clone()) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let (ident, generics) = match &item_ast {
        Item::Struct(s) => (&s.ident, &s.generics),
        other => {
            let span = match other {
                Item::Enum(e) => e.enum_token.span,
                Item::Fn(f) => f.sig.fn_token.span,
                Item::Impl(i) => i.impl_token.span,
                _ => other.span(),
            };
            errors.push(syn::Error::new(
                span,
                "#[plugin] can only be used on a struct",
            ));
            return with_errors(item, errors);
        }
    };
    if !generics.params.is_empty() {
        errors.push(syn::Error::new(
            generics.span(),
            "#[plugin] cannot be used on a generic struct: the registry needs one concrete type per plugin name; \
             wrap a concrete instantiation in its own struct instead",
        ));
    }
    if !errors.is_empty() {
        return with_errors(item, errors);
    }

    let span = ident.span();
    let name = match &parsed.name {
        Some(s) => quote!(#s),
        None => {
            let ident_str = ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #ident_str))
        }
    };
    let (kind, kind_tag, reg_fn) = if parsed.check.is_some() {
        (
            quote!(::coercion::PluginKind::Check),
            quote!(::coercion::__private::IsCheck),
            quote!(check),
        )
    } else {
        (
            quote!(::coercion::PluginKind::Action),
            quote!(::coercion::__private::IsAction),
            quote!(action),
        )
    };
    let idempotent = parsed.not_idempotent.is_none();
    let preview = match parsed.preview {
        Some(span) => quote_spanned! {span=>
            const PREVIEWS: bool = true;
            fn __preview<'a>(
                &'a self,
                ctx: &'a ::coercion::Context,
                req: &'a ::coercion::workflow::Json,
            ) -> ::core::option::Option<
                ::coercion::plugin::BoxFuture<'a, ::core::result::Result<::coercion::Preview, ::coercion::PluginError>>,
            > {
                ::core::option::Option::Some(::coercion::__private::preview_json::<Self>(self, ctx, req))
            }
        },
        None => quote!(),
    };
    let preview_marker = match parsed.preview {
        Some(span) => quote_spanned!(span=> impl ::coercion::__private::IsPreview for #ident {}),
        None => quote!(),
    };
    let registration = if parsed.manual.is_some() {
        quote!()
    } else {
        let ctor = match &parsed.new {
            Some(path) => quote_spanned! {path.span()=>
                {
                    fn __coercion_ctor() -> ::std::sync::Arc<dyn ::coercion::plugin::DynPlugin> {
                        let plugin: #ident = #path();
                        ::std::sync::Arc::new(plugin)
                    }
                    __coercion_ctor
                }
            },
            None => quote_spanned!(span=> ::coercion::__private::auto_ctor::<#ident>),
        };
        quote_spanned! {span=>
            ::coercion::__private::inventory::submit! {
                ::coercion::__private::PluginRegistration::#reg_fn::<#ident>(::core::file!(), ::core::line!(), #ctor)
            }
        }
    };
    quote! {
        #item_ast
        const _: () = {
            impl ::coercion::PluginMeta for #ident {
                const NAME: &'static str = #name;
                const KIND: ::coercion::PluginKind = #kind;
                const IDEMPOTENT: bool = #idempotent;
                #preview
            }
            impl ::coercion::__private::Sealed for #ident {}
            impl #kind_tag for #ident {}
            #preview_marker
            #registration
        };
    }
}

fn with_errors(item: TokenStream, errors: Vec<syn::Error>) -> TokenStream {
    let errors = errors.into_iter().map(|e| e.to_compile_error());
    quote!(#item #(#errors)*)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(args: TokenStream) -> Vec<String> {
        let mut errors = Vec::new();
        parse_args(args, &mut errors);
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn accepts_every_argument() {
        assert!(errors_of(quote!(check, name = "a/b", new = Foo::new, not_idempotent)).is_empty());
        assert!(errors_of(quote!(preview, not_idempotent)).is_empty());
        assert!(errors_of(quote!(manual)).is_empty());
    }

    #[test]
    fn reports_all_errors_with_suggestions() {
        let errs = errors_of(quote!(chek, name = 5, manual, manual));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("did you mean `check`?"), "{}", errs[0]);
        assert!(errs[1].contains("string literal"));
        assert!(errs[2].contains("duplicate `manual`"));
    }

    #[test]
    fn a_check_plugin_cannot_declare_previews() {
        let errs = errors_of(quote!(check, preview));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("`preview` is for action plugins"),
            "{errs:?}"
        );
    }

    #[test]
    fn rejects_new_with_manual_and_blank_names() {
        let errs = errors_of(quote!(manual, new = make, name = "  "));
        assert!(
            errs.iter().any(|e| e.contains("exclude each other")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("blank")), "{errs:?}");
    }

    #[test]
    fn generic_struct_is_an_error_and_keeps_the_item() {
        let out = expand(
            quote!(),
            quote!(
                struct Foo<T>(T);
            ),
        )
        .to_string();
        assert!(out.contains("generic struct"), "{out}");
        assert!(out.contains("struct Foo"), "{out}");
    }
}

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

//! The loose syntax tree of `plan!{}`, `block!{}` and `sequence!{}`.
//!
//! Every node has the same shape, `keyword { field: value, … child … for/if … ..splice }`, so
//! parsing knows nothing about which field or child belongs where: that is [`super::valid`]'s
//! job. Parsing recovers from syntax errors: a bad item is recorded in the [`Ctxt`] and skipped
//! up to the next `,` or `{ … }` group, so one typo does not hide the rest of the input.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::discouraged::Speculative;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Lit, LitFloat, LitInt, Pat, Token, Type, braced};

use super::ctxt::Ctxt;

/// The contents of one pair of braces (or of the whole macro input).
#[derive(Default)]
pub(crate) struct Body {
    pub items: Vec<Item>,
}

/// One entry of a [`Body`].
pub(crate) enum Item {
    /// `name: value`
    Field(Field),
    /// `keyword { … }`
    Node(Node),
    /// `for pat in expr { … }`
    For(Box<ForLoop>),
    /// `if cond { … } else if cond { … } else { … }`
    If(IfChain),
    /// `..expr`
    Splice(Splice),
}

/// `name: value`.
pub(crate) struct Field {
    pub name: Ident,
    pub value: Value,
}

/// The value of a [`Field`].
pub(crate) enum Value {
    /// An expression (or, for `plugin:`, a type) as the tokens the user wrote, up to the next
    /// `,`. Values are not parsed into syntax trees: syn's expression parser is by far the most
    /// expensive part of the macro, the compiler parses them anyway, and validation only looks
    /// at lone literals (`30s`, `"name"`, `0`) and lone identifiers (`unlimited`, `OnFailure`).
    Tokens(TokenStream),
    /// `10%` (the literal is checked to be a whole number later).
    Percent(Lit, Token![%]),
}

impl Value {
    /// The value's only token, if it is a single one (looking through invisible groups, which
    /// `macro_rules!` fragments arrive in).
    pub(crate) fn single(&self) -> Option<TokenTree> {
        let Value::Tokens(tokens) = self else {
            return None;
        };
        single(tokens.clone())
    }

    /// The value as a literal, if it is a lone literal.
    pub(crate) fn lit(&self) -> Option<Lit> {
        match self.single()? {
            TokenTree::Literal(l) => Some(Lit::new(l)),
            _ => None,
        }
    }

    /// The value as an identifier, if it is a lone identifier.
    pub(crate) fn ident(&self) -> Option<Ident> {
        match self.single()? {
            TokenTree::Ident(i) => Some(i),
            _ => None,
        }
    }
}

fn single(tokens: TokenStream) -> Option<TokenTree> {
    let mut iter = tokens.into_iter();
    let first = iter.next()?;
    if iter.next().is_some() {
        return None;
    }
    match first {
        TokenTree::Group(g) if g.delimiter() == Delimiter::None => single(g.stream()),
        tt => Some(tt),
    }
}

impl ToTokens for Value {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Value::Tokens(t) => t.to_tokens(tokens),
            Value::Percent(lit, pct) => {
                lit.to_tokens(tokens);
                pct.to_tokens(tokens);
            }
        }
    }
}

/// `keyword { … }`.
pub(crate) struct Node {
    pub keyword: Ident,
    pub body: Body,
}

/// `for pat in expr { … }`.
pub(crate) struct ForLoop {
    pub for_token: Token![for],
    pub pat: Pat,
    pub expr: Expr,
    pub body: Body,
}

/// `if a { … } else if b { … } else { … }`.
pub(crate) struct IfChain {
    pub arms: Vec<IfArm>,
    pub else_body: Option<Body>,
}

/// One `if cond { … }` of an [`IfChain`].
pub(crate) struct IfArm {
    pub if_token: Token![if],
    pub cond: Expr,
    pub body: Body,
}

/// `..expr`.
pub(crate) struct Splice {
    pub dots: Token![..],
    pub expr: Expr,
}

/// Parses a macro input. Syntax errors are recorded in `cx`; what could be read is returned.
pub(crate) fn parse(cx: &Ctxt, tokens: TokenStream) -> Body {
    let parser = |input: ParseStream| Ok(parse_body(cx, input));
    match parser.parse2(tokens) {
        Ok(body) => body,
        Err(e) => {
            cx.syn_error(e);
            Body::default()
        }
    }
}

fn parse_body(cx: &Ctxt, input: ParseStream) -> Body {
    let mut items = Vec::new();
    while !input.is_empty() {
        if input.peek(Token![,]) {
            // A stray separator (`a: 1,,` or `block { … },`): harmless.
            let _ = input.parse::<Token![,]>();
            continue;
        }
        // Each item is read on a fork, so that a syntax error deep inside a value leaves no
        // trace in the main stream; the stream then skips the broken item and goes on.
        let fork = input.fork();
        match parse_item(cx, &fork) {
            Ok(item) => {
                input.advance_to(&fork);
                let needs_separator = match &item {
                    Item::Field(f) => Some(format!("the value of `{}`", f.name)),
                    Item::Splice(_) => Some("a `..` splice".to_owned()),
                    _ => None,
                };
                items.push(item);
                if let Some(what) = needs_separator {
                    expect_separator(cx, input, &what);
                }
            }
            Err(e) => {
                cx.syn_error(e);
                skip_item(input);
            }
        }
    }
    Body { items }
}

/// After a field or a splice: a `,`, the end, or (reported) a missing `,`.
fn expect_separator(cx: &Ctxt, input: ParseStream, what: &str) {
    if input.is_empty() {
        return;
    }
    if input.peek(Token![,]) {
        let _ = input.parse::<Token![,]>();
        return;
    }
    cx.error(input.span(), format!("expected `,` after {what}"));
    if !starts_item(input) {
        skip_item(input);
    }
}

/// Whether the next tokens look like the start of an item, so parsing can go on after a
/// missing `,` without skipping anything.
fn starts_item(input: ParseStream) -> bool {
    input.peek(Token![for])
        || input.peek(Token![if])
        || input.peek(Token![..])
        || (input.peek(Ident::peek_any)
            && (input.peek2(Token![:]) || input.peek2(syn::token::Brace)))
}

/// Skips the rest of a broken item: everything up to and including the next top-level `,`,
/// or up to and including the next `{ … }` group.
fn skip_item(input: ParseStream) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            rest = next;
            match &tt {
                TokenTree::Punct(p) if p.as_char() == ',' => break,
                TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => break,
                _ => {}
            }
        }
        Ok(((), rest))
    });
}

fn parse_item(cx: &Ctxt, input: ParseStream) -> syn::Result<Item> {
    if input.peek(Token![for]) {
        return parse_for(cx, input).map(|f| Item::For(Box::new(f)));
    }
    if input.peek(Token![if]) {
        return parse_if(cx, input).map(Item::If);
    }
    if input.peek(Token![..]) {
        let dots: Token![..] = input.parse()?;
        if input.is_empty() || input.peek(Token![,]) {
            return Err(syn::Error::new(
                dots.spans[0],
                "`..` needs an expression to splice: `..more_blocks`",
            ));
        }
        let expr = input.parse()?;
        return Ok(Item::Splice(Splice { dots, expr }));
    }
    if !input.peek(Ident::peek_any) {
        return Err(input.error(
            "expected a field (`name: ...`), a node (`block { ... }`), `for`, `if` or a `..` splice",
        ));
    }
    let name = input.call(Ident::parse_any)?;
    if input.peek(Token![:]) && !input.peek(Token![::]) {
        input.parse::<Token![:]>()?;
        if input.peek(syn::token::Brace) && super::valid::is_node_keyword(&name.to_string()) {
            // `action: { ... }`: reported, then read as the node it was meant to be.
            cx.error(
                name.span(),
                format!(
                    "`{name}` is a node, not a field: write `{name} {{ ... }}` without the `:`"
                ),
            );
            let body = parse_braced(cx, input)?;
            return Ok(Item::Node(Node {
                keyword: name,
                body,
            }));
        }
        let value = parse_value(cx, &name, input)?;
        return Ok(Item::Field(Field { name, value }));
    }
    if input.peek(syn::token::Brace) {
        let body = parse_braced(cx, input)?;
        return Ok(Item::Node(Node {
            keyword: name,
            body,
        }));
    }
    Err(syn::Error::new(
        name.span(),
        format!("expected `{name}: value` (a field) or `{name} {{ ... }}` (a node)"),
    ))
}

fn parse_braced(cx: &Ctxt, input: ParseStream) -> syn::Result<Body> {
    let content;
    braced!(content in input);
    Ok(parse_body(cx, &content))
}

fn parse_value(cx: &Ctxt, name: &Ident, input: ParseStream) -> syn::Result<Value> {
    if input.is_empty() || input.peek(Token![,]) {
        return Err(input.error(format!("`{name}:` needs a value")));
    }
    if (input.peek(LitInt) || input.peek(LitFloat)) && input.peek2(Token![%]) {
        let fork = input.fork();
        let _ = fork.parse::<Lit>();
        let _ = fork.parse::<Token![%]>();
        if fork.is_empty() || fork.peek(Token![,]) {
            return Ok(Value::Percent(input.parse()?, input.parse()?));
        }
    }
    let tokens = value_tokens(input, name == "plugin")?;
    if name == "plugin" {
        check_plugin_type(cx, &tokens);
    }
    Ok(Value::Tokens(tokens))
}

/// The tokens of a value: everything up to the next top-level `,`, or up to what is plainly
/// the start of the next item after a forgotten `,` (`name:`, `action {`, `for`, `if`).
/// A value with a top-level `<` or `|` may hold commas of its own (`HashMap::<K, V>::new()`,
/// `|a, b| …`): such a value is parsed as an expression (a type for `plugin:`) to find its end.
fn value_tokens(input: ParseStream, is_type: bool) -> syn::Result<TokenStream> {
    let fork = input.fork();
    let (tokens, ambiguous) = fork.step(|cursor| {
        let mut out = TokenStream::new();
        let mut ambiguous = false;
        let mut previous: Option<TokenTree> = None;
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            match &tt {
                TokenTree::Punct(p) if p.as_char() == ',' => break,
                TokenTree::Punct(p) if matches!(p.as_char(), '<' | '|') => ambiguous = true,
                TokenTree::Ident(id)
                    if previous.is_some() && starts_next_item(id, next, previous.as_ref()) =>
                {
                    break;
                }
                _ => {}
            }
            out.extend([tt.clone()]);
            previous = Some(tt);
            rest = next;
        }
        Ok(((out, ambiguous), rest))
    })?;
    if !ambiguous {
        input.advance_to(&fork);
        return Ok(tokens);
    }
    if is_type {
        Ok(input.parse::<Type>()?.into_token_stream())
    } else {
        Ok(input.parse::<Expr>()?.into_token_stream())
    }
}

/// Whether identifier `id`, followed by `next` and preceded by `previous` inside a value,
/// can only be the start of the next item.
fn starts_next_item(id: &Ident, next: syn::buffer::Cursor, previous: Option<&TokenTree>) -> bool {
    let after_dot_or_path =
        matches!(previous, Some(TokenTree::Punct(p)) if matches!(p.as_char(), '.' | ':'));
    if after_dot_or_path {
        return false;
    }
    if let Some((p, _)) = next.punct()
        && p.as_char() == ':'
        && p.spacing() == proc_macro2::Spacing::Alone
    {
        return true; // `name: …`; a path would be `name::…`
    }
    if next.group(Delimiter::Brace).is_some() && super::valid::is_node_keyword(&id.to_string()) {
        return true; // `action { … }`
    }
    let word = id.to_string();
    let after_else = matches!(previous, Some(TokenTree::Ident(e)) if e == "else");
    word == "for" || (word == "if" && !after_else)
}

/// Reports a `plugin:` value that cannot be a type: a string (a registered name) or a value.
fn check_plugin_type(cx: &Ctxt, tokens: &TokenStream) {
    let first = tokens.clone().into_iter().next();
    if let Some(TokenTree::Literal(l)) = &first
        && matches!(Lit::new(l.clone()), Lit::Str(_))
    {
        cx.error(
            l.span(),
            "`plugin` takes the plugin's type, e.g. `plugin: Ssh`, not its registered name",
        );
        return;
    }
    let is_value = tokens.clone().into_iter().any(|tt| match tt {
        TokenTree::Group(g) => matches!(g.delimiter(), Delimiter::Parenthesis | Delimiter::Brace),
        TokenTree::Punct(p) => p.as_char() == '.',
        _ => false,
    });
    if is_value {
        cx.error_spanned(
            tokens,
            "`plugin` takes the plugin's type (`plugin: Ssh`), not a value: the registry builds the plugin",
        );
    }
}

fn parse_for(cx: &Ctxt, input: ParseStream) -> syn::Result<ForLoop> {
    let for_token = input.parse()?;
    let pat = Pat::parse_multi_with_leading_vert(input)?;
    input.parse::<Token![in]>()?;
    let expr = Expr::parse_without_eager_brace(input)?;
    let body = parse_braced(cx, input)?;
    Ok(ForLoop {
        for_token,
        pat,
        expr,
        body,
    })
}

fn parse_if(cx: &Ctxt, input: ParseStream) -> syn::Result<IfChain> {
    let mut arms = Vec::new();
    loop {
        let if_token = input.parse()?;
        let cond = Expr::parse_without_eager_brace(input)?;
        let body = parse_braced(cx, input)?;
        arms.push(IfArm {
            if_token,
            cond,
            body,
        });
        if !input.peek(Token![else]) {
            return Ok(IfChain {
                arms,
                else_body: None,
            });
        }
        input.parse::<Token![else]>()?;
        if !input.peek(Token![if]) {
            let else_body = parse_braced(cx, input)?;
            return Ok(IfChain {
                arms,
                else_body: Some(else_body),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn parse_ok(tokens: TokenStream) -> Body {
        let cx = Ctxt::new();
        let body = parse(&cx, tokens);
        if let Err(e) = cx.check() {
            panic!("unexpected parse errors: {e}");
        }
        body
    }

    fn parse_errors(tokens: TokenStream) -> (Body, Vec<String>) {
        let cx = Ctxt::new();
        let body = parse(&cx, tokens);
        let errors = match cx.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (body, errors)
    }

    fn kinds(body: &Body) -> Vec<String> {
        body.items
            .iter()
            .map(|i| match i {
                Item::Field(f) => format!("field {}", f.name),
                Item::Node(n) => format!("node {}", n.keyword),
                Item::For(_) => "for".to_owned(),
                Item::If(c) => format!(
                    "if/{}{}",
                    c.arms.len(),
                    if c.else_body.is_some() { "+else" } else { "" }
                ),
                Item::Splice(_) => "splice".to_owned(),
            })
            .collect()
    }

    #[test]
    fn parses_fields_nodes_loops_branches_and_splices() {
        let body = parse_ok(quote! {
            name: "deploy",
            tolerated_failures: 10%,
            timeout: 5min,
            plugin: support::Scp,
            pre_checks { action { name: "a", plugin: P, request: R {} } }
            for host in &hosts { sequence { name: host } }
            if a { } else if let Some(x) = b { } else { }
            ..more,
            block { }
        });
        assert_eq!(
            kinds(&body),
            [
                "field name",
                "field tolerated_failures",
                "field timeout",
                "field plugin",
                "node pre_checks",
                "for",
                "if/2+else",
                "splice",
                "node block",
            ]
        );
        match &body.items[1] {
            Item::Field(Field {
                value: Value::Percent(Lit::Int(lit), _),
                ..
            }) => {
                assert_eq!(lit.base10_digits(), "10")
            }
            _ => panic!("10% is a percentage"),
        }
        let Item::Field(timeout) = &body.items[2] else {
            panic!("a field")
        };
        let Some(Lit::Int(i)) = timeout.value.lit() else {
            panic!("5min is an integer literal")
        };
        assert_eq!(i.suffix(), "min");
        let Item::Field(plugin) = &body.items[3] else {
            panic!("a field")
        };
        assert_eq!(plugin.value.to_token_stream().to_string(), "support :: Scp");
    }

    fn value_of(body: &Body, i: usize) -> String {
        let Item::Field(f) = &body.items[i] else {
            panic!("item {i} is not a field")
        };
        f.value.to_token_stream().to_string()
    }

    #[test]
    fn values_end_at_the_next_top_level_comma() {
        let body = parse_ok(quote! {
            request: Req { a: 1, b: vec![1, 2] },
            name: format!("{}-{}", a, b),
            request: HashMap::<String, u32>::new(),
            request: make(|a, b| a + b),
            request: |a: u32, b: u32| a < b,
            fail_plan: x < y,
            descr: if x { "a" } else if y { "b" } else { "c" },
        });
        assert_eq!(value_of(&body, 0), "Req { a : 1 , b : vec ! [1 , 2] }");
        assert_eq!(value_of(&body, 1), "format ! (\"{}-{}\" , a , b)");
        assert_eq!(value_of(&body, 2), "HashMap :: < String , u32 > :: new ()");
        assert_eq!(value_of(&body, 3), "make (| a , b | a + b)");
        assert_eq!(value_of(&body, 4), "| a : u32 , b : u32 | a < b");
        assert_eq!(value_of(&body, 5), "x < y");
        assert_eq!(body.items.len(), 7);
    }

    #[test]
    fn lone_literals_and_identifiers_are_recognized() {
        let body = parse_ok(quote!(a: "x", b: 30s, c: unlimited, d: x.y, e: -1));
        let Item::Field(f) = &body.items[0] else {
            panic!()
        };
        assert!(matches!(f.value.lit(), Some(Lit::Str(_))));
        let Item::Field(f) = &body.items[2] else {
            panic!()
        };
        assert_eq!(f.value.ident().unwrap(), "unlimited");
        for i in [3, 4] {
            let Item::Field(f) = &body.items[i] else {
                panic!()
            };
            assert!(f.value.lit().is_none() && f.value.ident().is_none());
        }
    }

    #[test]
    fn modulo_is_still_an_expression() {
        let body = parse_ok(quote!(tolerated_failures: 10 % n));
        assert!(matches!(
            &body.items[0],
            Item::Field(Field {
                value: Value::Tokens(_),
                ..
            })
        ));
    }

    #[test]
    fn struct_literals_in_values_and_trailing_nodes() {
        let body = parse_ok(quote! {
            request: Req { addr: host.clone(), n: 1 },
            name: format!("{}", x),
            action { }
        });
        assert_eq!(kinds(&body), ["field request", "field name", "node action"]);
    }

    #[test]
    fn recovers_after_syntax_errors() {
        let (body, errors) = parse_errors(quote! {
            name "x",
            sequence { action { name: , retries: 3 } }
            for in hosts { }
            descr: "d"
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].contains("expected `name: value` (a field) or `name { ... }` (a node)"),
            "{errors:?}"
        );
        assert!(errors[1].contains("`name:` needs a value"), "{errors:?}");
        // `descr` after the broken `for` is still read.
        assert_eq!(kinds(&body), ["node sequence", "field descr"]);
    }

    #[test]
    fn missing_comma_is_reported_once_and_parsing_goes_on() {
        let (body, errors) = parse_errors(quote!(name: "a" descr: "b", retries: 3));
        assert_eq!(errors, ["expected `,` after the value of `name`"]);
        assert_eq!(kinds(&body), ["field name", "field descr", "field retries"]);
    }

    #[test]
    fn plugin_names_as_strings_are_refused() {
        let (_, errors) = parse_errors(quote!(plugin: "ssh", name: "x"));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("the plugin's type"), "{errors:?}");
    }

    #[test]
    fn empty_splice_is_an_error() {
        let (_, errors) = parse_errors(quote!(.., name: "x"));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("needs an expression"), "{errors:?}");
    }
}

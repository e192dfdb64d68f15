//! The rules of the `plan!` grammar: which fields and children each node takes, what is
//! required, where nodes may sit, literal values (durations, tolerances, concurrency, keys).
//!
//! Every problem is recorded in the [`Ctxt`] and validation goes on, so one invocation reports
//! all of them. What passes becomes the typed IR that [`super::expand`] turns into builder
//! calls; plugin kinds and request types are left to the compiler, through those calls.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use syn::{Expr, Ident, Lit, LitStr, Pat};

use super::ast::{Body, Field, Item, Node, Value};
use super::ctxt::Ctxt;
use crate::suggest::{closest, did_you_mean};

/// The five check sections of a plan or a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Bypass,
    Pre,
    Cont,
    Post,
    Deferred,
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Plan,
    Block,
    /// A block split into batches of its sequences (`serial: [1, 25%, rest]`).
    Rolling,
    Sequence,
    Action,
    Checks(Slot),
    DeferredActions,
    Batch,
}

const CHECKS: [Kind; 5] = [
    Kind::Checks(Slot::Bypass),
    Kind::Checks(Slot::Pre),
    Kind::Checks(Slot::Cont),
    Kind::Checks(Slot::Post),
    Kind::Checks(Slot::Deferred),
];

const PLAN_SECTIONS: [Kind; 6] = [
    Kind::Checks(Slot::Bypass),
    Kind::Checks(Slot::Pre),
    Kind::Checks(Slot::Cont),
    Kind::Checks(Slot::Post),
    Kind::Checks(Slot::Deferred),
    Kind::DeferredActions,
];

const ALL: [Kind; 12] = [
    Kind::Plan,
    Kind::Block,
    Kind::Rolling,
    Kind::Sequence,
    Kind::Action,
    Kind::Checks(Slot::Bypass),
    Kind::Checks(Slot::Pre),
    Kind::Checks(Slot::Cont),
    Kind::Checks(Slot::Post),
    Kind::Checks(Slot::Deferred),
    Kind::DeferredActions,
    Kind::Batch,
];

const DURATION_FIELDS: &[&str] = &["timeout", "delay", "entrance_delay", "exit_delay"];

impl Kind {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Kind::Plan => "plan",
            Kind::Block => "block",
            Kind::Rolling => "rolling",
            Kind::Sequence => "sequence",
            Kind::Action => "action",
            Kind::Checks(Slot::Bypass) => "bypass_checks",
            Kind::Checks(Slot::Pre) => "pre_checks",
            Kind::Checks(Slot::Cont) => "cont_checks",
            Kind::Checks(Slot::Post) => "post_checks",
            Kind::Checks(Slot::Deferred) => "deferred_checks",
            Kind::DeferredActions => "deferred_actions",
            Kind::Batch => "batch",
        }
    }

    pub(crate) fn from_keyword(word: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.keyword() == word)
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Plan => &["name", "descr", "group_id", "meta", "require_previews"],
            Kind::Block => &[
                "name",
                "descr",
                "key",
                "concurrency",
                "tolerated_failures",
                "entrance_delay",
                "exit_delay",
                "require_previews",
            ],
            Kind::Rolling => &[
                "name",
                "descr",
                "serial",
                "concurrency",
                "tolerated_failures",
                "entrance_delay",
                "exit_delay",
                "require_previews",
            ],
            Kind::Sequence => &["name", "descr", "key"],
            Kind::Action => &[
                "name", "descr", "key", "plugin", "request", "timeout", "retries",
            ],
            Kind::Checks(Slot::Cont) => &["delay", "key"],
            Kind::Checks(_) => &["key"],
            Kind::DeferredActions => &[],
            Kind::Batch => &["name", "descr", "key", "when", "fail_plan"],
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            Kind::Plan | Kind::Block | Kind::Sequence => &["name"],
            Kind::Rolling => &["name", "serial"],
            Kind::Action => &["name", "plugin", "request"],
            Kind::Batch => &["name", "when"],
            Kind::Checks(_) | Kind::DeferredActions => &[],
        }
    }

    /// The child that may appear any number of times, and that `for`, `if` and `..` produce.
    pub(crate) fn item(self) -> Option<Kind> {
        match self {
            Kind::Plan => Some(Kind::Block),
            Kind::Block | Kind::Rolling => Some(Kind::Sequence),
            Kind::Sequence | Kind::Checks(_) | Kind::Batch => Some(Kind::Action),
            Kind::DeferredActions => Some(Kind::Batch),
            Kind::Action => None,
        }
    }

    /// Whether `child` may appear any number of times in this node: its [`item`](Kind::item),
    /// and also a `rolling` in the plan, which adds blocks.
    fn takes_item(self, child: Kind) -> bool {
        Some(child) == self.item() || (self == Kind::Plan && child == Kind::Rolling)
    }

    /// The children that may appear at most once, directly in the node.
    fn sections(self) -> &'static [Kind] {
        match self {
            Kind::Plan => &PLAN_SECTIONS,
            Kind::Block | Kind::Rolling => &CHECKS,
            _ => &[],
        }
    }

    /// How a message names this node: "the plan", "a `block`", "`pre_checks`".
    fn the(self) -> String {
        match self {
            Kind::Plan => "the plan".to_owned(),
            Kind::Action => "an `action`".to_owned(),
            Kind::Block | Kind::Rolling | Kind::Sequence | Kind::Batch => {
                format!("a `{}`", self.keyword())
            }
            Kind::Checks(_) | Kind::DeferredActions => format!("`{}`", self.keyword()),
        }
    }

    /// Where a node of this kind belongs, for "cannot sit here" messages.
    fn home(self) -> &'static str {
        match self {
            Kind::Plan => {
                "`plan! { ... }` itself: write the plan's fields and blocks directly in it"
            }
            Kind::Block => "the plan, one after another",
            Kind::Rolling => "the plan, where it adds one block per batch",
            Kind::Sequence => "a `block { ... }`",
            Kind::Action => {
                "a `sequence { ... }` or a deferred `batch { ... }` (action plugins), or a check section such as `pre_checks { ... }` (check plugins)"
            }
            Kind::Checks(_) => "the plan or a `block { ... }`",
            Kind::DeferredActions => "the plan (blocks have `deferred_checks` only)",
            Kind::Batch => "`deferred_actions { ... }`",
        }
    }
}

/// Whether `word` is the keyword of a node (`block`, `pre_checks`, …).
pub(crate) fn is_node_keyword(word: &str) -> bool {
    Kind::from_keyword(word).is_some()
}

/// Whether a node sits where it belongs; the insides of a misplaced one are still checked, but
/// not for emptiness, which is better reported once it has moved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    Placed,
    Misplaced,
}

/// A validated node, ready to expand.
pub(crate) struct NodeIr {
    pub kind: Kind,
    /// The node's keyword, or the macro call for the root.
    pub span: Span,
    pub head: Head,
    /// The optional fields, in the order written; each becomes a builder method call.
    pub setters: Vec<Setter>,
    pub children: Vec<Child>,
}

/// What the node's builder is created from.
pub(crate) enum Head {
    /// `Plan::builder(name)`, `Block::builder(name)`, `Sequence::builder(name)`.
    Named(TokenStream),
    /// `DeferredBatch::builder(name, when)`.
    Batch { name: TokenStream, when: When },
    /// `Rolling::new(name, serial)`.
    Rolling { name: TokenStream, serial: Serial },
    /// `Checks::builder()`.
    Checks,
    /// No builder of its own: its batches go into the plan.
    DeferredActions,
    /// A typed action or check.
    Action(Box<ActionHead>),
}

/// The required fields of an `action`.
pub(crate) struct ActionHead {
    pub name: TokenStream,
    /// The plugin's type.
    pub plugin: TokenStream,
    pub request: TokenStream,
}

/// `when:` of a batch.
pub(crate) enum When {
    /// `OnSuccess`, `OnFailure` or `Always`.
    Variant(Ident),
    /// Any expression of type `When`.
    Expr(TokenStream),
}

/// `serial:` of a `rolling`.
pub(crate) enum Serial {
    /// `[1, 5%, rest]`, or a lone `5`, `25%` or `rest`.
    List(Vec<BatchSizeLit>),
    /// Any expression that iterates over sizes.
    Expr(TokenStream),
}

/// One size of a [`Serial::List`].
pub(crate) enum BatchSizeLit {
    Count(u64, Span),
    Percent(u8, Span),
    Rest(Span),
    /// Anything that converts into a `BatchSize` (a `usize`, a `BatchSize`).
    Expr(TokenStream),
}

/// An optional field: the builder method of the same name, called with `value`.
pub(crate) struct Setter {
    pub field: Ident,
    pub value: Arg,
}

/// The argument of a [`Setter`].
pub(crate) enum Arg {
    Expr(TokenStream),
    /// `true` or `false`, as `require_previews` takes it.
    Bool(bool, Span),
    Duration(DurationLit),
    Tolerance(ToleranceLit),
}

/// A duration literal (`500ms`, `30s`, `5min`, `2h`), normalized to milliseconds or seconds.
pub(crate) struct DurationLit {
    pub amount: u64,
    pub unit: DurationUnit,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DurationUnit {
    Millis,
    Secs,
}

/// A literal tolerance: `2`, `10%` or `unlimited`.
pub(crate) enum ToleranceLit {
    Count(u32, Span),
    Percent(u8, Span),
    Unlimited(Span),
}

/// A child of a node.
pub(crate) enum Child {
    Node(Box<NodeIr>),
    For {
        pat: Box<Pat>,
        expr: Box<Expr>,
        body: Vec<Child>,
    },
    If {
        arms: Vec<(Expr, Vec<Child>)>,
        else_body: Option<Vec<Child>>,
    },
    Splice(Expr),
}

/// Validates the input of `plan!` (`root` = [`Kind::Plan`]), `block!` or `sequence!`.
/// Returns `None` when something was wrong; every problem is then recorded in `cx`.
pub(crate) fn validate(cx: &Ctxt, root: Kind, body: &Body) -> Option<NodeIr> {
    let mut v = Validator {
        cx,
        keys: Vec::new(),
        branch: Vec::new(),
        next_if: 0,
        loop_depth: 0,
        rolling_checks: 0,
    };
    v.node(root, Span::call_site(), body, Placement::Placed)
}

/// A literal `key` seen so far, and the `if` arms it sits in.
struct KeyUse {
    value: String,
    branch: Vec<(usize, usize)>,
}

struct Validator<'a> {
    cx: &'a Ctxt,
    keys: Vec<KeyUse>,
    /// The `(if chain, arm)` pairs around the current position.
    branch: Vec<(usize, usize)>,
    next_if: usize,
    loop_depth: usize,
    /// How deep inside the check sections of a `rolling` (copied into every batch) we are.
    rolling_checks: usize,
}

/// Whether a field was accepted; if not, which field it was probably meant to be.
enum Accept {
    Yes,
    No { meant: Option<&'static str> },
}

/// Where a child is read: directly in its node, or in a `for`/`if` body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Direct,
    Inside(&'static str),
}

impl Validator<'_> {
    fn node(
        &mut self,
        kind: Kind,
        span: Span,
        body: &Body,
        placement: Placement,
    ) -> Option<NodeIr> {
        let mut fields: Vec<&Field> = Vec::new();
        let mut children = Vec::new();
        let mut complete = true;
        let mut written = 0usize;
        let mut sections: Vec<Kind> = Vec::new();
        // Fields that misspelled ones were probably meant to be: not reported missing as well.
        let mut meant_fields: Vec<&str> = Vec::new();

        // Fields first (they are written first), so errors come out in source order.
        let first_child_at = body.items.iter().position(|i| !matches!(i, Item::Field(_)));
        for (i, item) in body.items.iter().enumerate() {
            let Item::Field(f) = item else { continue };
            if first_child_at.is_some_and(|c| c < i) {
                self.cx.error(
                    f.name.span(),
                    format!(
                        "`{}` must come before the child nodes of {}: fields come first",
                        f.name,
                        kind.the()
                    ),
                );
            }
            match self.accept_field(kind, f, &fields) {
                Accept::Yes => fields.push(f),
                Accept::No { meant } => {
                    meant_fields.extend(meant);
                    complete = false;
                }
            }
        }

        let mut name = None;
        let mut plugin = None;
        let mut request = None;
        let mut when = None;
        let mut serial = None;
        let mut setters = Vec::new();
        for f in &fields {
            match f.name.to_string().as_str() {
                "name" => name = self.name(f),
                "plugin" => plugin = self.plugin(f),
                "request" => request = self.expr(f).cloned(),
                "when" => when = self.when(f),
                "serial" => serial = self.serial(f),
                other => match self.setter_arg(kind, other, f) {
                    Some(value) => setters.push(Setter {
                        field: f.name.clone(),
                        value,
                    }),
                    None => complete = false,
                },
            }
        }

        for required in kind.required() {
            if meant_fields.contains(required) {
                complete = false;
                continue;
            }
            if !fields.iter().any(|f| f.name == required) {
                let example = match *required {
                    "plugin" => "plugin: MyPlugin",
                    "request" => "request: MyRequest { ... }",
                    "when" => "when: OnFailure",
                    "serial" => "serial: [1, 25%, rest]",
                    _ => "name: \"...\"",
                };
                self.cx.error(
                    span,
                    format!(
                        "{} is missing the required field `{required}` (`{example}`)",
                        kind.the()
                    ),
                );
                complete = false;
            }
        }

        for item in &body.items {
            if matches!(item, Item::Field(_)) {
                continue;
            }
            let mut ctx = ChildCtx {
                sections: &mut sections,
                written: &mut written,
            };
            match self.child(kind, item, Place::Direct, &mut ctx) {
                Some(c) => children.push(c),
                None => complete = false,
            }
        }

        if written == 0
            && placement == Placement::Placed
            && let Some(item) = kind.item()
        {
            let hint = if kind == Kind::Rolling {
                ", one per host: `for host in &hosts { sequence { ... } }`"
            } else {
                ""
            };
            self.cx.error(
                span,
                format!(
                    "{} needs at least one `{} {{ ... }}`{hint}",
                    kind.the(),
                    item.keyword()
                ),
            );
            complete = false;
        }

        let head = match kind {
            Kind::Plan | Kind::Block | Kind::Sequence => Head::Named(name?),
            Kind::Action => Head::Action(Box::new(ActionHead {
                name: name?,
                plugin: plugin?,
                request: request?,
            })),
            Kind::Batch => Head::Batch {
                name: name?,
                when: when?,
            },
            Kind::Rolling => Head::Rolling {
                name: name?,
                serial: serial?,
            },
            Kind::Checks(_) => Head::Checks,
            Kind::DeferredActions => Head::DeferredActions,
        };
        // `complete` only says whether this subtree can be expanded; every problem is already
        // recorded in the context.
        complete.then_some(NodeIr {
            kind,
            span,
            head,
            setters,
            children,
        })
    }

    /// Checks that `f` is a known, not yet set field of `kind`.
    fn accept_field(&self, kind: Kind, f: &Field, seen: &[&Field]) -> Accept {
        let name = f.name.to_string();
        if kind.fields().contains(&name.as_str()) {
            if seen.iter().any(|s| s.name == f.name) {
                self.cx.error(
                    f.name.span(),
                    format!(
                        "duplicate field `{name}` in {}: it is already set above",
                        kind.the()
                    ),
                );
                return Accept::No { meant: None };
            }
            return Accept::Yes;
        }
        let mut meant = None;
        let message = if kind == Kind::Rolling && name == "key" {
            "a `rolling` takes no `key`: it becomes one block per batch, and keys must be unique across the plan; give keys to its sequences".to_owned()
        } else if let Some(node) = Kind::from_keyword(&name) {
            format!(
                "`{name}` is a node, not a field: write `{} {{ ... }}`",
                node.keyword()
            )
        } else if ALL.into_iter().any(|k| k.fields().contains(&name.as_str())) {
            let owners: Vec<String> = ALL
                .into_iter()
                .filter(|k| k.fields().contains(&name.as_str()))
                .map(|k| format!("`{}`", k.keyword()))
                .collect();
            format!(
                "{} has no field `{name}` (it is a field of {})",
                kind.the(),
                owners.join(", ")
            )
        } else if kind.fields().is_empty() {
            format!(
                "{} takes no fields, only `{} {{ ... }}` nodes",
                kind.the(),
                kind.item().map_or("", Kind::keyword)
            )
        } else {
            meant = closest(&name, kind.fields());
            let suggestion = did_you_mean(&name, kind.fields());
            if suggestion.is_empty() {
                let expected: Vec<String> =
                    kind.fields().iter().map(|f| format!("`{f}`")).collect();
                format!(
                    "unknown field `{name}` in {}; expected one of {}",
                    kind.the(),
                    expected.join(", ")
                )
            } else {
                format!("unknown field `{name}` in {}{suggestion}", kind.the())
            }
        };
        self.cx.error(f.name.span(), message);
        Accept::No { meant }
    }

    fn child(
        &mut self,
        parent: Kind,
        item: &Item,
        place: Place,
        ctx: &mut ChildCtx,
    ) -> Option<Child> {
        if parent == Kind::Action {
            self.cx.error(
                item_span(item),
                "an `action` takes fields only (`name`, `plugin`, `request`, ...); it has no child nodes",
            );
            return None;
        }
        match item {
            Item::Field(f) => {
                let Place::Inside(what) = place else {
                    unreachable!("fields are read by `node`")
                };
                *ctx.written += 1;
                self.cx.error(
                    f.name.span(),
                    format!(
                        "`{}: ...` cannot sit inside `{what}`: fields belong to {} and come before its children",
                        f.name,
                        parent.the()
                    ),
                );
                None
            }
            Item::Node(n) => self.child_node(parent, n, place, ctx),
            Item::For(f) => {
                *ctx.written += 1;
                self.loop_depth += 1;
                let mut inner_written = 0usize;
                let body = self.children(parent, &f.body, Place::Inside("for"), &mut inner_written);
                self.loop_depth -= 1;
                if f.body.items.is_empty() {
                    self.cx.error(
                        f.for_token.span,
                        format!(
                            "this `for` loop is empty: it adds nothing to {}",
                            parent.the()
                        ),
                    );
                    return None;
                }
                Some(Child::For {
                    pat: Box::new(f.pat.clone()),
                    expr: Box::new(f.expr.clone()),
                    body: body?,
                })
            }
            Item::If(chain) => {
                *ctx.written += 1;
                let id = self.next_if;
                self.next_if += 1;
                let mut arms = Vec::new();
                let mut complete = true;
                for (i, arm) in chain.arms.iter().enumerate() {
                    self.branch.push((id, i));
                    let mut inner_written = 0usize;
                    let body =
                        self.children(parent, &arm.body, Place::Inside("if"), &mut inner_written);
                    self.branch.pop();
                    match body {
                        Some(b) => arms.push((arm.cond.clone(), b)),
                        None => complete = false,
                    }
                }
                let else_body = match &chain.else_body {
                    Some(body) => {
                        self.branch.push((id, chain.arms.len()));
                        let mut inner_written = 0usize;
                        let b =
                            self.children(parent, body, Place::Inside("else"), &mut inner_written);
                        self.branch.pop();
                        match b {
                            Some(b) => Some(b),
                            None => {
                                complete = false;
                                None
                            }
                        }
                    }
                    None => None,
                };
                complete.then_some(Child::If { arms, else_body })
            }
            Item::Splice(s) => {
                *ctx.written += 1;
                Some(Child::Splice(s.expr.clone()))
            }
        }
    }

    /// The children of a `for`/`if` body.
    fn children(
        &mut self,
        parent: Kind,
        body: &Body,
        place: Place,
        written: &mut usize,
    ) -> Option<Vec<Child>> {
        let mut sections = Vec::new();
        let mut out = Vec::new();
        let mut complete = true;
        for item in &body.items {
            let mut ctx = ChildCtx {
                sections: &mut sections,
                written,
            };
            match self.child(parent, item, place, &mut ctx) {
                Some(c) => out.push(c),
                None => complete = false,
            }
        }
        complete.then_some(out)
    }

    fn child_node(
        &mut self,
        parent: Kind,
        n: &Node,
        place: Place,
        ctx: &mut ChildCtx,
    ) -> Option<Child> {
        let word = n.keyword.to_string();
        let span = n.keyword.span();
        let Some(kind) = Kind::from_keyword(&word) else {
            *ctx.written += 1;
            self.unknown_node(parent, &n.keyword, place);
            return None;
        };
        if parent.takes_item(kind) {
            *ctx.written += 1;
            return self
                .node(kind, span, &n.body, Placement::Placed)
                .map(|n| Child::Node(Box::new(n)));
        }
        if parent.sections().contains(&kind) {
            if let Place::Inside(what) = place {
                self.cx.error(
                    span,
                    format!(
                        "`{word}` cannot sit inside `{what}`: {} has a single `{word}` section; move it out",
                        parent.the()
                    ),
                );
                self.node(kind, span, &n.body, Placement::Misplaced);
                return None;
            }
            if ctx.sections.contains(&kind) {
                self.cx.error(
                    span,
                    format!(
                        "duplicate `{word}` section in {}: merge them into one",
                        parent.the()
                    ),
                );
                self.node(kind, span, &n.body, Placement::Placed);
                return None;
            }
            ctx.sections.push(kind);
            let copied = usize::from(parent == Kind::Rolling);
            self.rolling_checks += copied;
            let node = self.node(kind, span, &n.body, Placement::Placed);
            self.rolling_checks -= copied;
            return node.map(|n| Child::Node(Box::new(n)));
        }
        *ctx.written += 1;
        let place_word = match place {
            Place::Direct => "directly in".to_owned(),
            Place::Inside(_) => "in".to_owned(),
        };
        self.cx.error(
            span,
            format!(
                "`{word}` cannot sit {place_word} {}; it belongs in {}",
                parent.the(),
                kind.home()
            ),
        );
        // Its insides are still checked, so their own mistakes show up now rather than later.
        self.node(kind, span, &n.body, Placement::Misplaced);
        None
    }

    fn unknown_node(&self, parent: Kind, keyword: &Ident, place: Place) {
        let word = keyword.to_string();
        if ALL.into_iter().any(|k| k.fields().contains(&word.as_str())) {
            self.cx.error(
                keyword.span(),
                format!("`{word}` is a field, not a node: write `{word}: ...`"),
            );
            return;
        }
        let mut allowed: Vec<&str> = ALL
            .into_iter()
            .filter(|k| parent.takes_item(*k))
            .map(Kind::keyword)
            .collect();
        if place == Place::Direct {
            allowed.extend(parent.sections().iter().map(|k| k.keyword()));
        }
        let everything: Vec<&str> = ALL
            .into_iter()
            .filter(|k| *k != Kind::Plan)
            .map(Kind::keyword)
            .collect();
        let suggestion = match closest(&word, &allowed) {
            Some(_) => did_you_mean(&word, &allowed),
            None => did_you_mean(&word, &everything),
        };
        let message = if suggestion.is_empty() {
            let list: Vec<String> = allowed.iter().map(|k| format!("`{k} {{ ... }}`")).collect();
            format!(
                "unknown node `{word}` in {}; expected {}, `for`, `if` or a `..` splice",
                parent.the(),
                list.join(", ")
            )
        } else {
            format!("unknown node `{word}` in {}{suggestion}", parent.the())
        };
        self.cx.error(keyword.span(), message);
    }

    /// The value of a field that takes an expression.
    fn expr<'f>(&self, f: &'f Field) -> Option<&'f TokenStream> {
        match &f.value {
            Value::Tokens(t) => Some(t),
            Value::Percent(..) => {
                self.cx.error_spanned(
                    &f.value,
                    format!(
                        "`{}` does not take a percentage; only `tolerated_failures` and `serial` do",
                        f.name
                    ),
                );
                None
            }
        }
    }

    fn name(&self, f: &Field) -> Option<TokenStream> {
        let e = self.expr(f)?;
        if let Some(Lit::Str(s)) = f.value.lit()
            && s.value().trim().is_empty()
        {
            self.cx
                .error(s.span(), format!("`{}` must not be blank", f.name));
            return None;
        }
        Some(e.clone())
    }

    /// The plugin's type; a string or a value in its place was reported by the parser.
    fn plugin(&self, f: &Field) -> Option<TokenStream> {
        let ty = self.expr(f)?;
        if f.value.ident().is_some_and(|i| i == "_") {
            self.cx.error_spanned(
                ty,
                "`plugin` needs the plugin's type; it cannot be inferred",
            );
            return None;
        }
        Some(ty.clone())
    }

    fn when(&self, f: &Field) -> Option<When> {
        const WHENS: &[&str] = &["OnSuccess", "OnFailure", "Always"];
        let e = self.expr(f)?;
        if let Some(id) = f.value.ident() {
            let word = id.to_string();
            if WHENS.contains(&word.as_str()) {
                return Some(When::Variant(id));
            }
            if word.starts_with(|c: char| c.is_ascii_uppercase()) {
                self.cx.error(
                    id.span(),
                    match closest(&word, WHENS) {
                        Some(w) => format!("unknown `when` value `{word}`; did you mean `{w}`?"),
                        None => format!(
                            "unknown `when` value `{word}`; expected `OnSuccess`, `OnFailure` or `Always`"
                        ),
                    },
                );
                return None;
            }
        }
        Some(When::Expr(e.clone()))
    }

    /// `serial:` — a list of batch sizes (`[1, 5%, 25%, rest]`), one lone size, or any
    /// expression; literal sizes are checked here.
    fn serial(&self, f: &Field) -> Option<Serial> {
        let tokens = match &f.value {
            Value::Percent(lit, pct) => {
                let size = self.batch_size(quote::quote!(#lit #pct))?;
                return Some(Serial::List(vec![size]));
            }
            Value::Tokens(tokens) => tokens,
        };
        let group = match f.value.single() {
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket => g,
            Some(TokenTree::Literal(_)) => {
                return Some(Serial::List(vec![self.batch_size(tokens.clone())?]));
            }
            Some(TokenTree::Ident(id)) if id == "rest" => {
                return Some(Serial::List(vec![BatchSizeLit::Rest(id.span())]));
            }
            _ => return Some(Serial::Expr(tokens.clone())),
        };
        let mut entries = vec![TokenStream::new()];
        for tt in group.stream() {
            match &tt {
                TokenTree::Punct(p) if p.as_char() == ',' => entries.push(TokenStream::new()),
                _ => entries.last_mut().expect("never empty").extend([tt]),
            }
        }
        if entries.last().is_some_and(TokenStream::is_empty) {
            entries.pop(); // `[1, 2,]`
        }
        if entries.is_empty() {
            self.cx.error(
                group.span(),
                "`serial` needs at least one batch size, such as `serial: [1, 25%, rest]`",
            );
            return None;
        }
        let mut sizes = Vec::new();
        let mut complete = true;
        let mut after_rest = false;
        for entry in entries {
            if after_rest {
                self.cx.error_spanned(
                    &entry,
                    "nothing can follow `rest`: it already takes every remaining host",
                );
                complete = false;
            }
            match self.batch_size(entry) {
                Some(size) => {
                    after_rest |= matches!(size, BatchSizeLit::Rest(_));
                    sizes.push(size);
                }
                None => complete = false,
            }
        }
        complete.then_some(Serial::List(sizes))
    }

    /// One entry of a `serial` list: `5`, `25%`, `rest` or an expression.
    fn batch_size(&self, entry: TokenStream) -> Option<BatchSizeLit> {
        let tokens: Vec<TokenTree> = entry.clone().into_iter().collect();
        match tokens.as_slice() {
            [] => {
                self.cx.error(
                    Span::call_site(),
                    "an empty batch size in `serial`: remove the extra `,`",
                );
                None
            }
            [TokenTree::Ident(id)] if id == "rest" => Some(BatchSizeLit::Rest(id.span())),
            [TokenTree::Ident(id)] if id.to_string().eq_ignore_ascii_case("rest") => {
                self.cx.error(
                    id.span(),
                    format!("unknown batch size `{id}`; did you mean `rest`?"),
                );
                None
            }
            [TokenTree::Literal(l)] => {
                match Lit::new(l.clone()) {
                    Lit::Int(i) if i.suffix().is_empty() => {
                        let Ok(n) = i.base10_parse::<u64>() else {
                            self.cx.error(i.span(), "this batch size is too large; write `rest` for every remaining host");
                            return None;
                        };
                        if n == 0 {
                            self.cx.error(i.span(), "a batch size must be at least 1: a batch of 0 hosts would roll out nothing (write `rest` for every remaining host)");
                            return None;
                        }
                        Some(BatchSizeLit::Count(n, i.span()))
                    }
                    _ => Some(BatchSizeLit::Expr(entry)),
                }
            }
            [TokenTree::Literal(l), TokenTree::Punct(p)] if p.as_char() == '%' => {
                let pct = match Lit::new(l.clone()) {
                    Lit::Int(i) if i.suffix().is_empty() => i.base10_parse::<u64>().ok(),
                    _ => None,
                };
                let Some(pct) = pct else {
                    self.cx.error_spanned(
                        &entry,
                        "a batch percentage must be a whole number, such as `25%`",
                    );
                    return None;
                };
                if pct == 0 {
                    self.cx.error_spanned(&entry, "a batch size must be at least 1%: a batch of 0% of the hosts would roll out nothing");
                    return None;
                }
                if pct > 100 {
                    self.cx.error_spanned(&entry, "a batch size cannot exceed 100%: a batch cannot hold more than all the hosts");
                    return None;
                }
                Some(BatchSizeLit::Percent(pct as u8, l.span()))
            }
            _ => Some(BatchSizeLit::Expr(entry)),
        }
    }

    /// The argument of an optional field.
    fn setter_arg(&mut self, kind: Kind, name: &str, f: &Field) -> Option<Arg> {
        if DURATION_FIELDS.contains(&name) {
            return self.duration(kind, f);
        }
        if name == "tolerated_failures" {
            return self.tolerance(f);
        }
        if name == "require_previews" {
            return match f.value.ident() {
                Some(i) if i == "true" || i == "false" => Some(Arg::Bool(i == "true", i.span())),
                _ => {
                    self.cx.error_spanned(
                        &f.value,
                        "`require_previews` takes `true` or `false`: the plugins are checked at compile time, so it cannot be an expression",
                    );
                    None
                }
            };
        }
        let e = self.expr(f)?;
        match name {
            "key" => {
                if let Some(Lit::Str(s)) = f.value.lit() {
                    self.key(&s)?;
                }
            }
            "descr" => {}
            "concurrency" => {
                if let Some(Lit::Int(n)) = f.value.lit()
                    && n.base10_digits().trim_start_matches('0').is_empty()
                {
                    self.cx.error(n.span(), "`concurrency` must be at least 1: a block runs at least one sequence at a time");
                    return None;
                }
            }
            _ => {}
        }
        Some(Arg::Expr(e.clone()))
    }

    fn key(&mut self, s: &LitStr) -> Option<()> {
        let value = s.value();
        if value.trim().is_empty() {
            self.cx.error(s.span(), "`key` must not be blank");
            return None;
        }
        if self.loop_depth > 0 {
            self.cx.error(
                s.span(),
                "this key would be the same in every iteration of the enclosing `for` loop, but keys must be unique across the plan; build it from the loop variable, e.g. `key: format!(\"deploy-{host}\")`",
            );
            return None;
        }
        if self.rolling_checks > 0 {
            self.cx.error(
                s.span(),
                "the checks of a `rolling` are copied into every batch, so this key would be repeated, but keys must be unique across the plan; remove it",
            );
            return None;
        }
        let clash = self
            .keys
            .iter()
            .any(|k| k.value == value && !exclusive(&k.branch, &self.branch));
        if clash {
            self.cx.error(
                s.span(),
                format!("duplicate key {value:?}: it is already used above, and keys must be unique across the plan"),
            );
            return None;
        }
        self.keys.push(KeyUse {
            value,
            branch: self.branch.clone(),
        });
        Some(())
    }

    fn duration(&self, kind: Kind, f: &Field) -> Option<Arg> {
        let e = match &f.value {
            Value::Percent(..) => {
                self.cx.error_spanned(
                    &f.value,
                    format!("`{}` takes a duration (`30s`), not a percentage", f.name),
                );
                return None;
            }
            _ => self.expr(f)?,
        };
        // Anything but a literal must be a `Duration`; the compiler checks it.
        let Some(lit) = f.value.lit() else {
            return Some(Arg::Expr(e.clone()));
        };
        match lit {
            Lit::Int(i) => {
                let (factor, unit) = match i.suffix() {
                    "ms" => (1, DurationUnit::Millis),
                    "s" => (1, DurationUnit::Secs),
                    "min" => (60, DurationUnit::Secs),
                    "h" => (3600, DurationUnit::Secs),
                    "" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32"
                    | "i64" | "i128" | "isize" => {
                        self.cx.error(
                            i.span(),
                            "a bare number is ambiguous here: write `30s`, `500ms`, `5min`, `2h` or a `Duration`",
                        );
                        return None;
                    }
                    other => {
                        self.cx.error(i.span(), unknown_unit(other));
                        return None;
                    }
                };
                let Some(amount) = i
                    .base10_parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(factor))
                else {
                    self.cx.error(i.span(), "this duration is too large");
                    return None;
                };
                if amount == 0 {
                    if f.name == "timeout" {
                        self.cx.error(
                            i.span(),
                            "`timeout` must be greater than zero: it is the time each attempt gets",
                        );
                        return None;
                    }
                    if f.name == "delay" && kind == Kind::Checks(Slot::Cont) {
                        self.cx.error(
                            i.span(),
                            "`delay` must be greater than zero: it is the pause between two runs of the continuous checks",
                        );
                        return None;
                    }
                }
                Some(Arg::Duration(DurationLit {
                    amount,
                    unit,
                    span: i.span(),
                }))
            }
            Lit::Float(x) => {
                let suffix = x.suffix();
                let smaller = match suffix {
                    "s" => Some((1000.0, "ms")),
                    "min" => Some((60.0, "s")),
                    "h" => Some((60.0, "min")),
                    _ => None,
                };
                let hint = match (smaller, x.base10_parse::<f64>()) {
                    (Some((factor, unit)), Ok(v)) if (v * factor).fract() == 0.0 => {
                        format!("write `{}{unit}`", v * factor)
                    }
                    _ => "use a smaller unit".to_owned(),
                };
                self.cx.error(
                    x.span(),
                    format!("a duration literal must be a whole number: {hint}, or a `Duration` expression"),
                );
                None
            }
            _ => Some(Arg::Expr(e.clone())),
        }
    }

    fn tolerance(&self, f: &Field) -> Option<Arg> {
        match &f.value {
            Value::Percent(lit, _) => {
                let pct = match lit {
                    Lit::Int(i) if i.suffix().is_empty() => i.base10_parse::<u64>().ok(),
                    _ => None,
                };
                let Some(pct) = pct else {
                    self.cx.error_spanned(
                        &f.value,
                        "a tolerance percentage must be a whole number, such as `10%`",
                    );
                    return None;
                };
                if pct > 100 {
                    self.cx.error_spanned(
                        &f.value,
                        "`tolerated_failures` cannot exceed 100%: a block cannot fail more sequences than it has",
                    );
                    return None;
                }
                Some(Arg::Tolerance(ToleranceLit::Percent(pct as u8, lit.span())))
            }
            Value::Tokens(e) => {
                if let Some(Lit::Int(i)) = f.value.lit()
                    && i.suffix().is_empty()
                {
                    let Ok(n) = i.base10_parse::<u32>() else {
                        self.cx.error(
                            i.span(),
                            "this count is too large; write `unlimited` to tolerate every failure",
                        );
                        return None;
                    };
                    return Some(Arg::Tolerance(ToleranceLit::Count(n, i.span())));
                }
                if let Some(id) = f.value.ident() {
                    if id == "unlimited" {
                        return Some(Arg::Tolerance(ToleranceLit::Unlimited(id.span())));
                    }
                    let word = id.to_string();
                    if closest(&word, &["unlimited"]).is_some() {
                        self.cx.error(
                            id.span(),
                            format!("unknown tolerance `{word}`; did you mean `unlimited`?"),
                        );
                        return None;
                    }
                }
                Some(Arg::Expr(e.clone()))
            }
        }
    }
}

/// Where the children of one node are counted and its sections recorded.
struct ChildCtx<'a> {
    sections: &'a mut Vec<Kind>,
    written: &'a mut usize,
}

fn unknown_unit(suffix: &str) -> String {
    let alias = match suffix {
        "m" => {
            return "`m` is ambiguous: write `min` for minutes or `ms` for milliseconds".to_owned();
        }
        "sec" | "secs" | "second" | "seconds" => Some("s"),
        "mins" | "minute" | "minutes" => Some("min"),
        "hr" | "hrs" | "hour" | "hours" => Some("h"),
        "msec" | "msecs" | "millis" => Some("ms"),
        _ => closest(suffix, &["ms", "s", "min", "h"]),
    };
    let hint = alias
        .map(|a| format!("; did you mean `{a}`?"))
        .unwrap_or_default();
    format!("unknown duration unit `{suffix}`{hint} (write `500ms`, `30s`, `5min` or `2h`)")
}

/// Whether two positions are in different arms of the same `if` chain.
fn exclusive(a: &[(usize, usize)], b: &[(usize, usize)]) -> bool {
    a.iter()
        .any(|(id, arm)| b.iter().any(|(id2, arm2)| id == id2 && arm != arm2))
}

fn item_span(item: &Item) -> Span {
    match item {
        Item::Field(f) => f.name.span(),
        Item::Node(n) => n.keyword.span(),
        Item::For(f) => f.for_token.span,
        Item::If(c) => c.arms[0].if_token.span,
        Item::Splice(s) => s.dots.spans[0],
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::*;
    use crate::plan::ast;

    /// Every error of validating `tokens` as the input of the `root` macro, and the IR.
    fn check(root: Kind, tokens: TokenStream) -> (Option<NodeIr>, Vec<String>) {
        let cx = Ctxt::new();
        let body = ast::parse(&cx, tokens);
        let ir = validate(&cx, root, &body);
        let errors = match cx.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (ir, errors)
    }

    fn errors(tokens: TokenStream) -> Vec<String> {
        check(Kind::Plan, tokens).1
    }

    /// Asserts exactly one error, containing `needle`.
    #[track_caller]
    fn one_error(tokens: TokenStream, needle: &str) {
        let errs = errors(tokens);
        assert_eq!(
            errs.len(),
            1,
            "expected one error containing {needle:?}, got {errs:?}"
        );
        assert!(
            errs[0].contains(needle),
            "expected {needle:?} in {:?}",
            errs[0]
        );
    }

    /// A plan around `body`, placed in a sequence.
    fn in_sequence(body: TokenStream) -> TokenStream {
        quote!(name: "p", block { name: "b", sequence { name: "s", #body } })
    }

    /// A plan around `block_fields`, the fields of its block.
    fn block_fields(fields: TokenStream) -> TokenStream {
        quote!(name: "p", block { name: "b", #fields sequence { name: "s", action { name: "a", plugin: A, request: R } } })
    }

    fn action() -> TokenStream {
        quote!(action {
            name: "a",
            plugin: A,
            request: R
        })
    }

    #[test]
    fn a_complete_plan_is_valid() {
        let act = action();
        let (ir, errs) = check(
            Kind::Plan,
            quote! {
                name: "p", descr: "d", group_id: g, meta: vec![1u8],
                bypass_checks { #act }
                pre_checks { key: "pre", #act }
                cont_checks { delay: 30s, #act }
                post_checks { for h in hs { #act } }
                deferred_checks { ..more_checks }
                block {
                    name: "b", descr: "d", key: "blk", concurrency: 5, tolerated_failures: 10%,
                    entrance_delay: 1min, exit_delay: Duration::from_secs(1),
                    pre_checks { #act }
                    for h in hs {
                        sequence {
                            name: h, key: format!("{h}"),
                            action { name: "a", plugin: m::A, request: R { x: 1 }, timeout: 500ms, retries: 3, key: k }
                            if c { #act } else if d { #act } else { ..extra }
                        }
                    }
                    ..fragments,
                }
                ..blocks,
                deferred_actions {
                    batch { name: "undo", when: OnFailure, fail_plan: true, #act }
                    batch { name: "n", when: When::Always, #act }
                    ..batches
                }
            },
        );
        assert_eq!(errs, Vec::<String>::new());
        let ir = ir.expect("a valid plan has an IR");
        let kinds: Vec<String> = ir
            .children
            .iter()
            .map(|c| match c {
                Child::Node(n) => n.kind.keyword().to_owned(),
                Child::Splice(_) => "..".to_owned(),
                _ => "other".to_owned(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "bypass_checks",
                "pre_checks",
                "cont_checks",
                "post_checks",
                "deferred_checks",
                "block",
                "..",
                "deferred_actions"
            ]
        );
        let setters: Vec<String> = ir.setters.iter().map(|s| s.field.to_string()).collect();
        assert_eq!(setters, ["descr", "group_id", "meta"]);
    }

    #[test]
    fn fragments_validate_their_own_root() {
        let act = action();
        assert!(
            check(Kind::Block, quote!(name: "b", sequence { name: "s", #act }))
                .1
                .is_empty()
        );
        assert!(check(Kind::Sequence, quote!(name: "s", #act)).1.is_empty());
        let (_, errs) = check(Kind::Sequence, quote!(name: "s", block { name: "b" }));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("`block` cannot sit directly in a `sequence`"),
            "{errs:?}"
        );
    }

    #[test]
    fn misspelled_fields_get_a_suggestion() {
        one_error(
            in_sequence(quote!(action {
                name: "a",
                plugin: A,
                request: R,
                retires: 3
            })),
            "unknown field `retires` in an `action`; did you mean `retries`?",
        );
        one_error(
            quote!(nmae: "p", block { name: "b", sequence { name: "s" , action { name: "a", plugin: A, request: R } } }),
            "did you mean `name`?",
        );
    }

    #[test]
    fn unknown_fields_without_a_close_match_list_the_fields() {
        one_error(
            in_sequence(quote!(action {
                name: "a",
                plugin: A,
                request: R,
                colour: 3
            })),
            "unknown field `colour` in an `action`; expected one of `name`, `descr`, `key`, `plugin`, `request`, `timeout`, `retries`",
        );
    }

    #[test]
    fn fields_of_other_nodes_say_where_they_belong() {
        one_error(
            quote!(name: "p", block { name: "b", sequence { name: "s", concurrency: 2, action { name: "a", plugin: A, request: R } } }),
            "a `sequence` has no field `concurrency` (it is a field of `block`, `rolling`)",
        );
        one_error(
            quote!(name: "p", pre_checks { delay: 5s, action { name: "a", plugin: A, request: R } } block { name: "b", sequence { name: "s", action { name: "a", plugin: A, request: R } } }),
            "`pre_checks` has no field `delay` (it is a field of `cont_checks`)",
        );
        one_error(
            in_sequence(quote!(action: { name: "a", plugin: A, request: R })),
            "`action` is a node, not a field: write `action { ... }`",
        );
    }

    #[test]
    fn duplicate_fields_and_sections() {
        one_error(
            block_fields(quote!(concurrency: 2, concurrency: 3,)),
            "duplicate field `concurrency` in a `block`",
        );
        let act = action();
        one_error(
            quote!(name: "p", pre_checks { #act } pre_checks { #act } block { name: "b", sequence { name: "s", #act } }),
            "duplicate `pre_checks` section in the plan",
        );
    }

    #[test]
    fn missing_required_fields() {
        one_error(
            in_sequence(quote!(action {
                name: "a",
                plugin: A
            })),
            "an `action` is missing the required field `request` (`request: MyRequest { ... }`)",
        );
        let errs = errors(in_sequence(quote!(action { descr: "x" })));
        assert_eq!(errs.len(), 3, "{errs:?}");
        one_error(
            quote!(block { name: "b", sequence { name: "s", action { name: "a", plugin: A, request: R } } }),
            "the plan is missing the required field `name`",
        );
        let act = action();
        one_error(
            quote!(name: "p", block { name: "b", sequence { name: "s", #act } } deferred_actions { batch { name: "x", #act } }),
            "a `batch` is missing the required field `when` (`when: OnFailure`)",
        );
    }

    #[test]
    fn misplaced_nodes_say_where_they_belong_and_do_not_cascade() {
        let act = action();
        // No "a block needs at least one sequence" on top: the action was meant as its child.
        one_error(
            quote!(name: "p", block { name: "b", #act }),
            "`action` cannot sit directly in a `block`; it belongs in a `sequence { ... }`",
        );
        one_error(
            quote!(name: "p", sequence { name: "s", #act }),
            "`sequence` cannot sit directly in the plan; it belongs in a `block { ... }`",
        );
        one_error(
            quote!(name: "p", block { name: "b", sequence { name: "s", #act } deferred_actions { } }),
            "`deferred_actions` cannot sit directly in a `block`; it belongs in the plan (blocks have `deferred_checks` only)",
        );
        one_error(
            in_sequence(quote!(pre_checks { #act } #act)),
            "`pre_checks` cannot sit directly in a `sequence`; it belongs in the plan or a `block { ... }`",
        );
        // The insides of a misplaced node are still checked.
        let errs = errors(
            quote!(name: "p", block { name: "b", action { name: "a", plugin: A, request: R, retires: 1 } }),
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn unknown_nodes_get_a_suggestion() {
        let act = action();
        one_error(
            quote!(name: "p", block { name: "b", sequense { name: "s", #act } }),
            "unknown node `sequense` in a `block`; did you mean `sequence`?",
        );
        one_error(
            quote!(name: "p", block { name: "b", sequence { name: "s", #act } } post_check { #act }),
            "did you mean `post_checks`?",
        );
        one_error(
            in_sequence(quote!(#act name { })),
            "`name` is a field, not a node: write `name: ...`",
        );
    }

    #[test]
    fn sections_and_fields_cannot_sit_in_loops_or_branches() {
        let act = action();
        one_error(
            quote!(name: "p", for x in xs { pre_checks { #act } } block { name: "b", sequence { name: "s", #act } }),
            "`pre_checks` cannot sit inside `for`: the plan has a single `pre_checks` section; move it out",
        );
        one_error(
            in_sequence(quote!(if c { descr: "x", #act })),
            "`descr: ...` cannot sit inside `if`: fields belong to a `sequence` and come before its children",
        );
    }

    #[test]
    fn fields_come_first() {
        let act = action();
        one_error(
            quote!(name: "p", block { name: "b", sequence { name: "s", #act } concurrency: 2 }),
            "`concurrency` must come before the child nodes of a `block`: fields come first",
        );
    }

    #[test]
    fn statically_empty_nodes() {
        one_error(
            quote!(name: "p"),
            "the plan needs at least one `block { ... }`",
        );
        one_error(
            quote!(name: "p", block { name: "b" }),
            "a `block` needs at least one `sequence { ... }`",
        );
        one_error(
            in_sequence(quote!()),
            "a `sequence` needs at least one `action { ... }`",
        );
        let act = action();
        one_error(
            quote!(name: "p", pre_checks { } block { name: "b", sequence { name: "s", #act } }),
            "`pre_checks` needs at least one `action { ... }`",
        );
        one_error(
            quote!(name: "p", block { name: "b", sequence { name: "s", #act } } deferred_actions { }),
            "`deferred_actions` needs at least one `batch { ... }`",
        );
        one_error(
            quote!(name: "p", block { name: "b", for h in hs { } }),
            "this `for` loop is empty: it adds nothing to a `block`",
        );
        // A loop, a branch or a splice is not statically empty.
        assert!(errors(quote!(name: "p", block { name: "b", ..seqs })).is_empty());
        assert!(errors(quote!(name: "p", block { name: "b", if c { ..seqs } })).is_empty());
    }

    #[test]
    fn durations() {
        let with_timeout = |t: TokenStream| {
            in_sequence(quote!(action { name: "a", plugin: A, request: R, timeout: #t }))
        };
        for ok in [
            quote!(500ms),
            quote!(30s),
            quote!(5min),
            quote!(2h),
            quote!(Duration::from_secs(3)),
            quote!(d),
        ] {
            assert!(errors(with_timeout(ok.clone())).is_empty(), "{ok}");
        }
        one_error(
            with_timeout(quote!(30)),
            "a bare number is ambiguous here: write `30s`, `500ms`, `5min`, `2h` or a `Duration`",
        );
        one_error(
            with_timeout(quote!(30u64)),
            "a bare number is ambiguous here",
        );
        one_error(
            with_timeout(quote!(0s)),
            "`timeout` must be greater than zero",
        );
        one_error(
            with_timeout(quote!(30secs)),
            "unknown duration unit `secs`; did you mean `s`?",
        );
        one_error(
            with_timeout(quote!(30m)),
            "`m` is ambiguous: write `min` for minutes or `ms` for milliseconds",
        );
        one_error(
            with_timeout(quote!(1.5s)),
            "a duration literal must be a whole number: write `1500ms`",
        );
        one_error(
            with_timeout(quote!(10%)),
            "`timeout` takes a duration (`30s`), not a percentage",
        );
        one_error(
            with_timeout(quote!(99999999999999999999h)),
            "this duration is too large",
        );
        let act = action();
        one_error(
            quote!(name: "p", cont_checks { delay: 0ms, #act } block { name: "b", sequence { name: "s", #act } }),
            "`delay` must be greater than zero",
        );
        assert!(errors(block_fields(quote!(entrance_delay: 0s,))).is_empty());
    }

    #[test]
    fn duration_literals_are_normalized() {
        let (ir, errs) = check(
            Kind::Block,
            quote!(name: "b", entrance_delay: 5min, exit_delay: 250ms, ..s),
        );
        assert!(errs.is_empty(), "{errs:?}");
        let ir = ir.unwrap();
        let lits: Vec<(u64, DurationUnit)> = ir
            .setters
            .iter()
            .map(|s| match &s.value {
                Arg::Duration(d) => (d.amount, d.unit),
                _ => panic!("a duration literal"),
            })
            .collect();
        assert_eq!(
            lits,
            [(300, DurationUnit::Secs), (250, DurationUnit::Millis)]
        );
    }

    #[test]
    fn concurrency_and_tolerance() {
        one_error(
            block_fields(quote!(concurrency: 0,)),
            "`concurrency` must be at least 1",
        );
        assert!(errors(block_fields(quote!(concurrency: hosts.len(),))).is_empty());
        one_error(
            block_fields(quote!(tolerated_failures: 150%,)),
            "`tolerated_failures` cannot exceed 100%",
        );
        one_error(
            block_fields(quote!(tolerated_failures: 2.5%,)),
            "a tolerance percentage must be a whole number",
        );
        one_error(
            block_fields(quote!(tolerated_failures: unlimted,)),
            "unknown tolerance `unlimted`; did you mean `unlimited`?",
        );
        one_error(
            block_fields(quote!(retries: 10%,)),
            "a `block` has no field `retries` (it is a field of `action`)",
        );
        one_error(
            in_sequence(quote!(action { name: 10%, plugin: A, request: R })),
            "`name` does not take a percentage",
        );
        for ok in [
            quote!(2),
            quote!(0%),
            quote!(100%),
            quote!(unlimited),
            quote!(Tolerance::Percent(5)),
            quote!(n),
        ] {
            assert!(
                errors(block_fields(quote!(tolerated_failures: #ok,))).is_empty(),
                "{ok}"
            );
        }
    }

    /// A plan with one `rolling` of `fields`, over `hosts`.
    fn rolling(fields: TokenStream) -> TokenStream {
        quote!(name: "p", rolling { name: "r", #fields for h in hosts { sequence { name: h, action { name: "a", plugin: A, request: R } } } })
    }

    #[test]
    fn rolling_serial_literals() {
        for ok in [
            quote!([1, 5%, 25%]),
            quote!([1, 10%, rest]),
            quote!([1, 100%,]),
            quote!([1, n, BatchSize::Percent(p), rest]),
            quote!(5),
            quote!(25%),
            quote!(rest),
            quote!(sizes),
            quote!(sizes.clone()),
        ] {
            let errs = errors(rolling(quote!(serial: #ok,)));
            assert!(errs.is_empty(), "{ok}: {errs:?}");
        }
        one_error(
            rolling(quote!(serial: [1, 0],)),
            "a batch size must be at least 1:",
        );
        one_error(
            rolling(quote!(serial: [0%],)),
            "a batch size must be at least 1%",
        );
        one_error(
            rolling(quote!(serial: 0,)),
            "a batch size must be at least 1:",
        );
        one_error(rolling(quote!(serial: [1, 150%],)), "cannot exceed 100%");
        one_error(rolling(quote!(serial: 101%,)), "cannot exceed 100%");
        one_error(rolling(quote!(serial: [2.5%],)), "must be a whole number");
        one_error(
            rolling(quote!(serial: [],)),
            "`serial` needs at least one batch size",
        );
        one_error(
            rolling(quote!(serial: [rest, 1],)),
            "nothing can follow `rest`",
        );
        one_error(rolling(quote!(serial: [1, Rest],)), "did you mean `rest`?");
        // Every bad literal of one list is reported.
        assert_eq!(
            errors(rolling(quote!(serial: [0, 200%, rest, 1],))).len(),
            3
        );
    }

    #[test]
    fn rolling_shape() {
        one_error(
            rolling(quote!()),
            "a `rolling` is missing the required field `serial` (`serial: [1, 25%, rest]`)",
        );
        one_error(
            quote!(name: "p", rolling { name: "r", serial: [1, rest] }),
            "a `rolling` needs at least one `sequence { ... }`, one per host: `for host in &hosts { sequence { ... } }`",
        );
        one_error(
            rolling(quote!(serial: [1], key: "k",)),
            "a `rolling` takes no `key`",
        );
        let act = action();
        one_error(
            quote!(name: "p", block { name: "b", rolling { name: "r", serial: 1, sequence { name: "s", #act } } }),
            "`rolling` cannot sit directly in a `block`; it belongs in the plan, where it adds one block per batch",
        );
        one_error(
            rolling(
                quote!(serial: [1], pre_checks { key: "pre", action { name: "c", plugin: C, request: R } }),
            ),
            "the checks of a `rolling` are copied into every batch",
        );
        let (ir, errs) = check(
            Kind::Plan,
            quote!(
                name: "p",
                if canary { rolling { name: "r", serial: [1, rest], concurrency: 2, tolerated_failures: 10%, pre_checks { #act } ..seqs } }
                block { name: "b", sequence { name: "s", #act } }
            ),
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert!(ir.is_some());
        one_error(
            quote!(name: "p", rollng { name: "r" }),
            "unknown node `rollng` in the plan; did you mean `rolling`?",
        );
    }

    #[test]
    fn blank_names_and_keys() {
        one_error(
            in_sequence(quote!(action {
                name: "  ",
                plugin: A,
                request: R
            })),
            "`name` must not be blank",
        );
        one_error(
            in_sequence(quote!(action {
                name: "a",
                key: "",
                plugin: A,
                request: R
            })),
            "`key` must not be blank",
        );
    }

    #[test]
    fn literal_keys_must_be_unique_except_in_exclusive_branches() {
        one_error(
            in_sequence(
                quote!(action { name: "a", key: "k", plugin: A, request: R } action { name: "b", key: "k", plugin: A, request: R }),
            ),
            "duplicate key \"k\": it is already used above",
        );
        assert!(
            errors(in_sequence(quote!(if c {
                action {
                    name: "a",
                    key: "k",
                    plugin: A,
                    request: R,
                }
            } else if d {
                action {
                    name: "b",
                    key: "k",
                    plugin: A,
                    request: R,
                }
            } else {
                action {
                    name: "c",
                    key: "k",
                    plugin: A,
                    request: R,
                }
            })))
            .is_empty()
        );
        // Two arms of the same chain are exclusive, but not with what follows the chain.
        one_error(
            in_sequence(quote!(
                if c { action { name: "a", key: "k", plugin: A, request: R } } else { action { name: "b", plugin: A, request: R } }
                action { name: "c", key: "k", plugin: A, request: R }
            )),
            "duplicate key \"k\"",
        );
        one_error(
            quote!(name: "p", block { name: "b", for h in hs { sequence { name: h, key: "web", action { name: "a", plugin: A, request: R } } } }),
            "this key would be the same in every iteration of the enclosing `for` loop",
        );
    }

    #[test]
    fn plugin_values_and_when() {
        one_error(
            in_sequence(quote!(action {
                name: "a",
                plugin: "ssh",
                request: R
            })),
            "not its registered name",
        );
        one_error(
            in_sequence(quote!(action {
                name: "a",
                plugin: Scp::default(),
                request: R
            })),
            "`plugin` takes the plugin's type (`plugin: Ssh`), not a value",
        );
        one_error(
            in_sequence(quote!(action {
                name: "a",
                plugin: Scp { x: 1 },
                request: R
            })),
            "`plugin` takes the plugin's type (`plugin: Ssh`), not a value",
        );
        let act = action();
        let batch = |when: TokenStream| quote!(name: "p", block { name: "b", sequence { name: "s", #act } } deferred_actions { batch { name: "x", when: #when, #act } });
        for ok in [
            quote!(OnFailure),
            quote!(OnSuccess),
            quote!(Always),
            quote!(When::Always),
            quote!(w),
        ] {
            assert!(errors(batch(ok.clone())).is_empty(), "{ok}");
        }
        one_error(
            batch(quote!(OnFail)),
            "unknown `when` value `OnFail`; did you mean `OnFailure`?",
        );
    }

    #[test]
    fn every_error_of_an_invocation_is_reported_together() {
        let errs = errors(quote! {
            name: "p",
            block {
                name: "b",
                concurrency: 0,
                action { name: "a", plugin: A, request: R }
                sequence {
                    name: "s",
                    action { name: "a", plugin: A, request: R, retires: 3, timeout: 30 }
                    action { name: "a", plugin: A }
                }
            }
            block { name: "empty" }
        });
        assert_eq!(errs.len(), 6, "{errs:#?}");
        // In the order they are written.
        let order = [
            "`concurrency` must be at least 1",
            "`action` cannot sit directly",
            "`retires`",
            "bare number",
            "`request`",
            "needs at least one `sequence",
        ];
        for (err, expected) in errs.iter().zip(order) {
            assert!(
                err.contains(expected),
                "{expected:?} in {err:?} ({errs:#?})"
            );
        }
    }

    #[test]
    fn actions_have_no_children() {
        one_error(
            in_sequence(
                quote!(action { name: "a", plugin: A, request: R, action { name: "b", plugin: A, request: R } }),
            ),
            "an `action` takes fields only",
        );
    }
}

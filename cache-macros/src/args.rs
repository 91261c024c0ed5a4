//! Parsing of `#[cached(...)]` arguments into [`CachedArgs`].
//!
//! Each argument is a keyword, checked here for its value's form (a string literal, an integer
//! literal, an expression, a list of names) and for being given once. Rules that involve the
//! function's signature or several arguments live in `validate.rs`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{bracketed, parenthesized, Error, Expr, Ident, Lit, LitStr, Result, Token};

/// The custom keywords of `#[cached(...)]`.
pub(crate) mod kw {
    syn::custom_keyword!(kind);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(key);
    syn::custom_keyword!(tags);
    syn::custom_keyword!(unless);
    syn::custom_keyword!(none_ttl);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(cache);
    syn::custom_keyword!(warm);
}

/// Every argument name, in the order the docs present them.
pub(crate) const ARGUMENTS: [&str; 9] = [
    "kind", "ttl", "key", "tags", "unless", "none_ttl", "skip", "cache", "warm",
];

/// The built-in kinds (see `cache_core::Kind::BUILT_IN`).
pub(crate) const BUILT_IN_KINDS: [&str; 6] = [
    "model_data",
    "session_data",
    "api_response",
    "database_query",
    "heavy_computation",
    "static_data",
];

/// The parsed arguments of one `#[cached(...)]`.
#[derive(Default)]
pub(crate) struct CachedArgs {
    /// `kind = "..."`: required (checked in `validate`, so the error combines with others).
    pub(crate) kind: Option<LitStr>,
    /// `ttl = 300` or `ttl = <Duration expr>`.
    pub(crate) ttl: Option<Ttl>,
    /// `key = "user:{id}"`.
    pub(crate) key: Option<LitStr>,
    /// `tags = ["user:{id}", ...]`.
    pub(crate) tags: Option<(kw::tags, Vec<LitStr>)>,
    /// `unless = <bool expr over result>`.
    pub(crate) unless: Option<Expr>,
    /// `none_ttl = 60` or `none_ttl = <Duration expr>`, with its keyword for error spans.
    pub(crate) none_ttl: Option<(kw::none_ttl, Ttl)>,
    /// `skip(a, b)`, with its keyword for error spans.
    pub(crate) skip: Option<(kw::skip, Vec<Ident>)>,
    /// `cache = <expr>`.
    pub(crate) cache: Option<Expr>,
    /// `warm`.
    pub(crate) warm: Option<kw::warm>,
}

/// A TTL: whole seconds as an integer literal, or an expression of type `Duration`.
pub(crate) enum Ttl {
    /// `ttl = 300`: seconds, > 0.
    Secs(u64, Span),
    /// `ttl = Duration::from_millis(1500)`: type-checked as `Duration` by the compiler.
    Expr(Box<Expr>),
}

impl Parse for CachedArgs {
    fn parse(input: ParseStream<'_>) -> Result<Self> {
        let mut args = CachedArgs::default();
        while !input.is_empty() {
            let la = input.lookahead1();
            if la.peek(kw::kind) {
                let k: kw::kind = input.parse()?;
                let value = parse_value(input, "kind")?;
                let lit = string_literal(&value, "kind", "kind = \"api_response\"")?;
                check_kind_name(&lit)?;
                set_once(&mut args.kind, lit, k.span, "kind")?;
            } else if la.peek(kw::ttl) {
                let k: kw::ttl = input.parse()?;
                let ttl = parse_ttl(input, "ttl")?;
                set_once(&mut args.ttl, ttl, k.span, "ttl")?;
            } else if la.peek(kw::key) {
                let k: kw::key = input.parse()?;
                let value = parse_value(input, "key")?;
                let lit = string_literal(&value, "key", "key = \"user:{id}\"")?;
                set_once(&mut args.key, lit, k.span, "key")?;
            } else if la.peek(kw::tags) {
                let k: kw::tags = input.parse()?;
                let tags = parse_tags(input)?;
                set_once(&mut args.tags, (k, tags), k.span, "tags")?;
            } else if la.peek(kw::unless) {
                let k: kw::unless = input.parse()?;
                let value = parse_value(input, "unless")?;
                set_once(&mut args.unless, value, k.span, "unless")?;
            } else if la.peek(kw::none_ttl) {
                let k: kw::none_ttl = input.parse()?;
                let ttl = parse_ttl(input, "none_ttl")?;
                set_once(&mut args.none_ttl, (k, ttl), k.span, "none_ttl")?;
            } else if la.peek(kw::skip) {
                let k: kw::skip = input.parse()?;
                let names = parse_skip(input, k)?;
                set_once(&mut args.skip, (k, names), k.span, "skip")?;
            } else if la.peek(kw::cache) {
                let k: kw::cache = input.parse()?;
                let value = parse_value(input, "cache")?;
                set_once(&mut args.cache, value, k.span, "cache")?;
            } else if la.peek(kw::warm) {
                let k: kw::warm = input.parse()?;
                if input.peek(Token![=]) || input.peek(syn::token::Paren) {
                    return Err(Error::new(
                        input.span(),
                        "`warm` is a flag and takes no value: write `warm`",
                    ));
                }
                set_once(&mut args.warm, k, k.span, "warm")?;
            } else if input.peek(Ident) {
                let ident: Ident = input.parse()?;
                return Err(unknown_argument(&ident));
            } else {
                return Err(Error::new(
                    input.span(),
                    format!(
                        "expected an argument name such as `kind = \"api_response\"`; valid arguments: {}",
                        ARGUMENTS.join(", ")
                    ),
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>().map_err(|e| {
                Error::new(
                    e.span(),
                    "expected `,` between arguments: `#[cached(kind = \"api_response\", ttl = 60)]`",
                )
            })?;
        }
        Ok(args)
    }
}

/// `= <expr>` after `name`.
fn parse_value(input: ParseStream<'_>, name: &str) -> Result<Expr> {
    if !input.peek(Token![=]) {
        return Err(Error::new(
            input.span(),
            format!("expected `=` after `{name}`: {}", example(name)),
        ));
    }
    input.parse::<Token![=]>()?;
    input.parse::<Expr>()
}

/// An example of each argument, for error messages.
fn example(name: &str) -> &'static str {
    match name {
        "kind" => "`kind = \"api_response\"`",
        "ttl" => "`ttl = 300` (seconds) or `ttl = Duration::from_millis(1500)`",
        "key" => "`key = \"user:{id}\"`",
        "tags" => "`tags = [\"user:{id}\", \"users\"]`",
        "unless" => "`unless = result.is_empty()`",
        "none_ttl" => "`none_ttl = 60` (seconds)",
        "skip" => "`skip(db, client)`",
        "cache" => "`cache = &CACHE`",
        _ => "`warm`",
    }
}

fn string_literal(value: &Expr, name: &str, example: &str) -> Result<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(Error::new(
            other.span(),
            format!("`{name}` takes a string literal, e.g. `{example}`"),
        )),
    }
}

/// Kind names follow the cache's rule: 1 to 64 ASCII letters, digits, `_`, `-`, `.`.
fn check_kind_name(lit: &LitStr) -> Result<()> {
    let name = lit.value();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            lit.span(),
            format!(
                "invalid kind name {:?}: use 1 to 64 ASCII letters, digits, `_`, `-` or `.`; \
                 built-in kinds: {}",
                name,
                BUILT_IN_KINDS.join(", ")
            ),
        ))
    }
}

fn parse_ttl(input: ParseStream<'_>, name: &str) -> Result<Ttl> {
    let value = parse_value(input, name)?;
    if let Expr::Unary(syn::ExprUnary {
        op: syn::UnOp::Neg(_),
        expr,
        ..
    }) = &value
    {
        if matches!(**expr, Expr::Lit(_)) {
            return Err(Error::new(
                value.span(),
                format!("`{name}` must be positive: give whole seconds, e.g. `{name} = 300`"),
            ));
        }
    }
    let Expr::Lit(syn::ExprLit { lit, .. }) = &value else {
        return Ok(Ttl::Expr(Box::new(value)));
    };
    let wrong = |what: &str| {
        Error::new(
            lit.span(),
            format!(
                "`{name}` takes whole seconds as an integer literal (`{name} = 300`) or an \
                 expression of type `std::time::Duration` (`{name} = Duration::from_millis(1500)`), \
                 not {what}"
            ),
        )
    };
    match lit {
        Lit::Int(int) => {
            if !matches!(int.suffix(), "" | "u8" | "u16" | "u32" | "u64" | "usize") {
                return Err(wrong("a signed integer"));
            }
            let secs: u64 = int.base10_parse()?;
            if secs == 0 {
                return Err(Error::new(
                    int.span(),
                    format!(
                        "`{name} = 0` would expire entries at once: give at least 1 second, or \
                         remove `#[cached]` to stop caching"
                    ),
                ));
            }
            Ok(Ttl::Secs(secs, int.span()))
        }
        Lit::Str(_) => Err(wrong("a string")),
        Lit::Float(_) => Err(wrong("a float")),
        _ => Err(wrong("this literal")),
    }
}

fn parse_tags(input: ParseStream<'_>) -> Result<Vec<LitStr>> {
    if !input.peek(Token![=]) {
        return Err(Error::new(
            input.span(),
            format!("expected `=` after `tags`: {}", example("tags")),
        ));
    }
    input.parse::<Token![=]>()?;
    if !input.peek(syn::token::Bracket) {
        let value: Expr = input.parse()?;
        return Err(Error::new(
            value.span(),
            "`tags` takes a list of string literals in brackets, e.g. `tags = [\"user:{id}\", \"users\"]`",
        ));
    }
    let content;
    bracketed!(content in input);
    let items = Punctuated::<Expr, Token![,]>::parse_terminated(&content)?;
    items
        .iter()
        .map(|e| string_literal(e, "tags", "tags = [\"user:{id}\", \"users\"]"))
        .collect()
}

fn parse_skip(input: ParseStream<'_>, k: kw::skip) -> Result<Vec<Ident>> {
    if !input.peek(syn::token::Paren) {
        return Err(Error::new(
            input.span(),
            "`skip` takes argument names in parentheses, e.g. `skip(db, client)`",
        ));
    }
    let content;
    parenthesized!(content in input);
    let mut names: Vec<Ident> = Vec::new();
    while !content.is_empty() {
        let name = if content.peek(Token![self]) {
            let s: Token![self] = content.parse()?;
            return Err(Error::new(
                s.span,
                "`self` is never part of the default key: remove it from `skip(...)`",
            ));
        } else if content.peek(Ident) {
            content.parse::<Ident>()?
        } else {
            return Err(Error::new(
                content.span(),
                "`skip(...)` takes argument names, e.g. `skip(db, client)`",
            ));
        };
        if names.contains(&name) {
            return Err(Error::new(
                name.span(),
                format!("`{name}` is skipped twice: list each argument once"),
            ));
        }
        names.push(name);
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    if names.is_empty() {
        return Err(Error::new(
            k.span,
            "`skip()` names no argument: list the arguments to leave out of the key, e.g. \
             `skip(db)`, or remove it",
        ));
    }
    Ok(names)
}

fn set_once<T>(slot: &mut Option<T>, value: T, span: Span, name: &str) -> Result<()> {
    if slot.is_some() {
        return Err(Error::new(
            span,
            format!("`{name}` is given twice: give each argument once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn unknown_argument(ident: &Ident) -> Error {
    let name = ident.to_string();
    let hint = ARGUMENTS
        .iter()
        .map(|a| (edit_distance(a, &name), a))
        .filter(|(d, a)| *d <= 2 && *d < a.len())
        .min()
        .map(|(_, a)| format!("did you mean `{a}`? "))
        .unwrap_or_default();
    Error::new(
        ident.span(),
        format!(
            "unknown argument `{name}`; {hint}valid arguments: {}",
            ARGUMENTS.join(", ")
        ),
    )
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

//! Parsing of the arguments of `#[cached(...)]`, `#[cache_put(...)]` and
//! `#[cache_invalidate(...)]` into [`Args`].
//!
//! Each argument is a name, checked here for being one of the attribute's, for its value's form
//! (a string literal, an integer literal, an expression, a list) and for being given once. Rules
//! that involve the function's signature or several arguments live in `validate.rs`.

use proc_macro2::Span;
use syn::parse::ParseStream;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{bracketed, parenthesized, Error, Expr, Ident, Lit, LitStr, Result, Token};

/// Which attribute is being parsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Attr {
    /// `#[cached]`: read-through.
    Cached,
    /// `#[cache_put]`: store the returned value.
    Put,
    /// `#[cache_invalidate]`: drop keys and tags.
    Invalidate,
}

impl Attr {
    /// The attribute's name, as written by users.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Attr::Cached => "cached",
            Attr::Put => "cache_put",
            Attr::Invalidate => "cache_invalidate",
        }
    }

    /// The attribute's arguments, in the order the docs present them.
    pub(crate) fn arguments(self) -> &'static [&'static str] {
        match self {
            Attr::Cached => &[
                "kind",
                "ttl",
                "ttl_fn",
                "key",
                "tags",
                "condition",
                "unless",
                "none_ttl",
                "cache_errors",
                "skip",
                "cache",
                "warm",
                "companions",
                "refresh",
                "xfetch",
                "soft_timeout",
                "hard_timeout",
                "lock",
                "schema",
            ],
            Attr::Put => &["kind", "key", "tags", "ttl", "ttl_fn", "schema", "cache"],
            Attr::Invalidate => &["kind", "key", "tags", "before", "cache"],
        }
    }

    /// A well-formed example, for error messages.
    fn example(self) -> &'static str {
        match self {
            Attr::Cached => "#[cached(kind = \"api_response\", ttl = 60)]",
            Attr::Put => "#[cache_put(kind = \"database_query\", key = \"user:{id}\")]",
            Attr::Invalidate => {
                "#[cache_invalidate(kind = \"database_query\", key = \"user:{id}\")]"
            }
        }
    }
}

/// The built-in kinds (see `cache_core::Kind::BUILT_IN`).
pub(crate) const BUILT_IN_KINDS: [&str; 6] = [
    "model_data",
    "session_data",
    "api_response",
    "database_query",
    "heavy_computation",
    "static_data",
];

/// The parsed arguments of one attribute. Each argument keeps its name's identifier, so that
/// errors about it point at it.
pub(crate) struct Args {
    pub(crate) attr: Attr,
    /// `kind = "..."`.
    pub(crate) kind: Option<(Ident, LitStr)>,
    /// `ttl = 300` or `ttl = <Duration expr>`.
    pub(crate) ttl: Option<(Ident, Ttl)>,
    /// `ttl_fn = <fn(&T) -> Duration>`.
    pub(crate) ttl_fn: Option<(Ident, Expr)>,
    /// `key = "user:{id}"`, or a list of them (`#[cache_put]`, `#[cache_invalidate]`).
    pub(crate) key: Option<(Ident, Vec<LitStr>)>,
    /// `tags = ["user:{id}", ...]`.
    pub(crate) tags: Option<(Ident, Vec<LitStr>)>,
    /// `condition = <bool expr over the arguments>`.
    pub(crate) condition: Option<Expr>,
    /// `unless = <bool expr over result>`.
    pub(crate) unless: Option<Expr>,
    /// `none_ttl = 60` or `none_ttl = <Duration expr>`.
    pub(crate) none_ttl: Option<(Ident, Ttl)>,
    /// `cache_errors = 60` or `cache_errors = <Duration expr>`.
    pub(crate) cache_errors: Option<(Ident, Ttl)>,
    /// `skip(a, b)`.
    pub(crate) skip: Option<(Ident, Vec<Ident>)>,
    /// `cache = <expr>`.
    pub(crate) cache: Option<Expr>,
    /// `warm`.
    pub(crate) warm: Option<Ident>,
    /// `companions(traced, refresh)`.
    pub(crate) companions: Option<(Ident, Companions)>,
    /// `before` or `before = true`.
    pub(crate) before: Option<(Ident, bool)>,
    /// `refresh = 0.8`: eager refresh after this fraction of the TTL.
    pub(crate) refresh: Option<(Ident, f64)>,
    /// `xfetch` or `xfetch = 1.5`: probabilistic early refresh with this beta.
    pub(crate) xfetch: Option<(Ident, f64)>,
    /// `soft_timeout = "100ms"` or a `Duration` expression.
    pub(crate) soft_timeout: Option<(Ident, Timeout)>,
    /// `hard_timeout = "2s"` or a `Duration` expression.
    pub(crate) hard_timeout: Option<(Ident, Timeout)>,
    /// `lock` or `lock = false`: the distributed single-flight lock.
    pub(crate) lock: Option<(Ident, bool)>,
    /// `schema = "profile-v3"`: the stable identity of the stored type in L2 entries.
    pub(crate) schema: Option<(Ident, LitStr)>,
}

impl Args {
    /// The argument that puts a `#[cached]` function in background mode (a load may outlive the
    /// call, so the body must own its arguments), if any.
    pub(crate) fn background(&self) -> Option<&Ident> {
        self.refresh
            .as_ref()
            .map(|(i, _)| i)
            .or(self.xfetch.as_ref().map(|(i, _)| i))
            .or(self.soft_timeout.as_ref().map(|(i, _)| i))
            .or(self.hard_timeout.as_ref().map(|(i, _)| i))
    }
}

/// A loader timeout: a literal with a unit, or an expression of type `Duration`.
pub(crate) enum Timeout {
    /// `"150ms"`, `"2s"`, `"1.5s"`: milliseconds, > 0.
    Millis(u64, Span),
    /// `Duration::from_millis(150)`: type-checked as `Duration` by the compiler.
    Expr(Box<Expr>),
}

/// The companion functions `#[cached]` generates next to the function.
#[derive(Default)]
pub(crate) struct Companions {
    /// `{name}_traced`.
    pub(crate) traced: Option<Ident>,
    /// `{name}_refresh`.
    pub(crate) refresh: Option<Ident>,
}

/// A TTL: whole seconds as an integer literal, or an expression of type `Duration`.
pub(crate) enum Ttl {
    /// `ttl = 300`: seconds, > 0.
    Secs(u64, Span),
    /// `ttl = Duration::from_millis(1500)`: type-checked as `Duration` by the compiler.
    Expr(Box<Expr>),
}

impl Args {
    fn new(attr: Attr) -> Self {
        Args {
            attr,
            kind: None,
            ttl: None,
            ttl_fn: None,
            key: None,
            tags: None,
            condition: None,
            unless: None,
            none_ttl: None,
            cache_errors: None,
            skip: None,
            cache: None,
            warm: None,
            companions: None,
            before: None,
            refresh: None,
            xfetch: None,
            soft_timeout: None,
            hard_timeout: None,
            lock: None,
            schema: None,
        }
    }
}

/// Parses the arguments of `attr`.
pub(crate) fn parse(attr: Attr, input: ParseStream<'_>) -> Result<Args> {
    let mut args = Args::new(attr);
    while !input.is_empty() {
        if !input.peek(Ident) {
            return Err(Error::new(
                input.span(),
                format!(
                    "expected an argument name, as in `{}`; valid arguments: {}",
                    attr.example(),
                    attr.arguments().join(", ")
                ),
            ));
        }
        let name: Ident = input.parse()?;
        let n = name.to_string();
        if !attr.arguments().contains(&n.as_str()) {
            return Err(unknown_argument(attr, &name));
        }
        match n.as_str() {
            "kind" => {
                let value = parse_value(input, "kind")?;
                let lit = string_literal(&value, "kind", "kind = \"api_response\"")?;
                check_kind_name(&lit)?;
                set_once(&mut args.kind, (name, lit))?;
            }
            "ttl" => {
                let ttl = parse_ttl(input, "ttl")?;
                set_once(&mut args.ttl, (name, ttl))?;
            }
            "ttl_fn" => {
                let value = parse_value(input, "ttl_fn")?;
                set_once(&mut args.ttl_fn, (name, value))?;
            }
            "key" => {
                let keys = parse_keys(input, attr)?;
                set_once(&mut args.key, (name, keys))?;
            }
            "tags" => {
                let tags = parse_tags(input)?;
                set_once(&mut args.tags, (name, tags))?;
            }
            "condition" => {
                let value = parse_value(input, "condition")?;
                set_once_at(&mut args.condition, value, &name)?;
            }
            "unless" => {
                let value = parse_value(input, "unless")?;
                set_once_at(&mut args.unless, value, &name)?;
            }
            "none_ttl" => {
                let ttl = parse_ttl(input, "none_ttl")?;
                set_once(&mut args.none_ttl, (name, ttl))?;
            }
            "cache_errors" => {
                let ttl = parse_ttl(input, "cache_errors")?;
                set_once(&mut args.cache_errors, (name, ttl))?;
            }
            "skip" => {
                let names = parse_skip(input, &name)?;
                set_once(&mut args.skip, (name, names))?;
            }
            "cache" => {
                let value = parse_value(input, "cache")?;
                set_once_at(&mut args.cache, value, &name)?;
            }
            "warm" => {
                no_value(input, "warm")?;
                set_once_at(&mut args.warm, name.clone(), &name)?;
            }
            "companions" => {
                let companions = parse_companions(input, &name)?;
                set_once(&mut args.companions, (name, companions))?;
            }
            "before" => {
                let before = parse_flag_bool(
                    input,
                    "`before` takes `true` or `false`: `before = true` invalidates before the \
                     function runs, the default (`false`) after it succeeds",
                )?;
                set_once(&mut args.before, (name, before))?;
            }
            "refresh" => {
                let f = parse_fraction(input)?;
                set_once(&mut args.refresh, (name, f))?;
            }
            "xfetch" => {
                let beta = parse_beta(input)?;
                set_once(&mut args.xfetch, (name, beta))?;
            }
            "soft_timeout" | "hard_timeout" => {
                let t = parse_timeout(input, &n)?;
                let slot = if n == "soft_timeout" {
                    &mut args.soft_timeout
                } else {
                    &mut args.hard_timeout
                };
                set_once(slot, (name, t))?;
            }
            "lock" => {
                let on = parse_flag_bool(
                    input,
                    "`lock` takes `true` or `false` (or no value, meaning `true`)",
                )?;
                set_once(&mut args.lock, (name, on))?;
            }
            "schema" => {
                let value = parse_value(input, "schema")?;
                let lit = string_literal(&value, "schema", "schema = \"profile-v3\"")?;
                let len = lit.value().len();
                if len == 0 || len > 128 {
                    return Err(Error::new(
                        lit.span(),
                        "a schema name is 1 to 128 bytes, e.g. `schema = \"profile-v3\"`; bump it \
                         when the stored type's serialized form changes",
                    ));
                }
                set_once(&mut args.schema, (name, lit))?;
            }
            _ => return Err(unknown_argument(attr, &name)),
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>().map_err(|e| {
            Error::new(
                e.span(),
                format!("expected `,` between arguments: `{}`", attr.example()),
            )
        })?;
    }
    Ok(args)
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

/// Flags take no value.
fn no_value(input: ParseStream<'_>, name: &str) -> Result<()> {
    if input.peek(Token![=]) || input.peek(syn::token::Paren) {
        return Err(Error::new(
            input.span(),
            format!("`{name}` is a flag and takes no value: write `{name}`"),
        ));
    }
    Ok(())
}

/// An example of each argument, for error messages.
fn example(name: &str) -> &'static str {
    match name {
        "kind" => "`kind = \"api_response\"`",
        "ttl" => "`ttl = 300` (seconds) or `ttl = Duration::from_millis(1500)`",
        "ttl_fn" => "`ttl_fn = ttl_of` (a `fn(&T) -> Duration`) or `ttl_fn = |v: &T| ...`",
        "key" => "`key = \"user:{id}\"`",
        "tags" => "`tags = [\"user:{id}\", \"users\"]`",
        "condition" => "`condition = filter.is_none()`",
        "unless" => "`unless = result.is_empty()`",
        "none_ttl" => "`none_ttl = 60` (seconds)",
        "cache_errors" => "`cache_errors = 60` (seconds)",
        "skip" => "`skip(db, client)`",
        "cache" => "`cache = &CACHE`",
        "companions" => "`companions(traced, refresh)`",
        "before" => "`before = true`",
        "refresh" => "`refresh = 0.8` (refresh in the background after 80% of the TTL)",
        "soft_timeout" => {
            "`soft_timeout = \"150ms\"` or `soft_timeout = Duration::from_millis(150)`"
        }
        "hard_timeout" => "`hard_timeout = \"2s\"` or `hard_timeout = Duration::from_secs(2)`",
        "schema" => "`schema = \"profile-v3\"`",
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
                let instead = match name {
                    "ttl" => "remove `#[cached]` to stop caching",
                    "cache_errors" => "remove `cache_errors` to leave errors uncached",
                    _ => "remove it",
                };
                return Err(Error::new(
                    int.span(),
                    format!(
                        "`{name} = 0` would expire entries at once: give at least 1 second, or \
                         {instead}"
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

/// `= [ "a", "b" ]`: a bracketed list of string literals (`what` is `tags` or `key`).
fn parse_list(input: ParseStream<'_>, what: &str, example: &str) -> Result<Vec<LitStr>> {
    let content;
    bracketed!(content in input);
    let items = Punctuated::<Expr, Token![,]>::parse_terminated(&content)?;
    items
        .iter()
        .map(|e| string_literal(e, what, example))
        .collect()
}

fn parse_tags(input: ParseStream<'_>) -> Result<Vec<LitStr>> {
    const EXAMPLE: &str = "tags = [\"user:{id}\", \"users\"]";
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
            format!("`tags` takes a list of string literals in brackets, e.g. `{EXAMPLE}`"),
        ));
    }
    parse_list(input, "tags", EXAMPLE)
}

/// `key = "..."`; for the write-side attributes also `key = ["...", "..."]`.
fn parse_keys(input: ParseStream<'_>, attr: Attr) -> Result<Vec<LitStr>> {
    if !input.peek(Token![=]) {
        return Err(Error::new(
            input.span(),
            format!("expected `=` after `key`: {}", example("key")),
        ));
    }
    input.parse::<Token![=]>()?;
    if input.peek(syn::token::Bracket) {
        if attr == Attr::Cached {
            let list: Expr = input.parse()?;
            return Err(Error::new(
                list.span(),
                "`#[cached]` reads one key: give one template, e.g. `key = \"user:{id}\"` \
                 (a list of keys is for `#[cache_put]` and `#[cache_invalidate]`)",
            ));
        }
        return parse_list(input, "key", "key = [\"user:{id}\", \"email:{email}\"]");
    }
    let value: Expr = input.parse()?;
    let example = if attr == Attr::Cached {
        "key = \"user:{id}\""
    } else {
        "key = \"user:{id}\"` or `key = [\"user:{id}\", \"email:{email}\"]"
    };
    Ok(vec![string_literal(&value, "key", example)?])
}

fn parse_skip(input: ParseStream<'_>, k: &Ident) -> Result<Vec<Ident>> {
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
            k.span(),
            "`skip()` names no argument: list the arguments to leave out of the key, e.g. \
             `skip(db)`, or remove it",
        ));
    }
    Ok(names)
}

/// `companions(traced, refresh)`.
fn parse_companions(input: ParseStream<'_>, k: &Ident) -> Result<Companions> {
    const VALID: &str =
        "`traced` (generates `{name}_traced`) and `refresh` (generates `{name}_refresh`)";
    if !input.peek(syn::token::Paren) {
        return Err(Error::new(
            input.span(),
            format!("`companions` takes names in parentheses, e.g. `companions(traced, refresh)`; valid: {VALID}"),
        ));
    }
    let content;
    parenthesized!(content in input);
    let names = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
    let mut out = Companions::default();
    for name in names {
        let slot = match name.to_string().as_str() {
            "traced" => &mut out.traced,
            "refresh" => &mut out.refresh,
            other => {
                return Err(Error::new(
                    name.span(),
                    format!("unknown companion `{other}`; valid: {VALID}"),
                ))
            }
        };
        if slot.is_some() {
            return Err(Error::new(
                name.span(),
                format!("`{name}` is listed twice: list each companion once"),
            ));
        }
        *slot = Some(name);
    }
    if out.traced.is_none() && out.refresh.is_none() {
        return Err(Error::new(
            k.span(),
            format!("`companions()` names no companion: list some ({VALID}), or remove it"),
        ));
    }
    Ok(out)
}

/// `before` or `before = true|false`.
/// `refresh = 0.8`: a fraction strictly between 0 and 1.
fn parse_fraction(input: ParseStream<'_>) -> Result<f64> {
    let value = parse_value(input, "refresh")?;
    let f = match &value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>().ok(),
        _ => None,
    };
    match f {
        Some(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(Error::new(
            value.span(),
            "`refresh` takes the fraction of the TTL after which a read refreshes the entry in \
             the background, a float literal strictly between 0 and 1: `refresh = 0.8`",
        )),
    }
}

/// `xfetch` (beta 1.0) or `xfetch = 1.5`: a positive float literal.
fn parse_beta(input: ParseStream<'_>) -> Result<f64> {
    if !input.peek(Token![=]) {
        return Ok(1.0);
    }
    input.parse::<Token![=]>()?;
    let value: Expr = input.parse()?;
    let beta = match &value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>().ok(),
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<f64>().ok(),
        _ => None,
    };
    match beta {
        Some(b) if b.is_finite() && b > 0.0 => Ok(b),
        _ => Err(Error::new(
            value.span(),
            "`xfetch` takes a positive beta (higher refreshes earlier): `xfetch` (beta 1.0) or \
             `xfetch = 1.5`",
        )),
    }
}

/// `= "150ms"` / `= "2s"` / `= "1.5s"`, or `= <Duration expr>`.
fn parse_timeout(input: ParseStream<'_>, name: &str) -> Result<Timeout> {
    let value = parse_value(input, name)?;
    let lit = match &value {
        Expr::Lit(syn::ExprLit { lit, .. }) => lit,
        _ => return Ok(Timeout::Expr(Box::new(value))),
    };
    let wrong = || {
        Error::new(
            lit.span(),
            format!(
                "`{name}` takes a duration with its unit as a string (`{name} = \"150ms\"`, \
                 `{name} = \"2s\"`) or an expression of type `std::time::Duration`; it must be \
                 above zero"
            ),
        )
    };
    let Lit::Str(s) = lit else {
        return Err(wrong());
    };
    match parse_millis(&s.value()) {
        Some(ms) if ms > 0 => Ok(Timeout::Millis(ms, s.span())),
        _ => Err(wrong()),
    }
}

/// `"150ms"` → 150, `"2s"` → 2000, `"1.5s"` → 1500.
fn parse_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    let n: f64 = number.trim().parse().ok()?;
    let ms = (n * scale).round();
    (ms.is_finite() && ms >= 0.0 && ms < u64::MAX as f64).then_some(ms as u64)
}

/// A flag that may be written `name`, `name = true` or `name = false`; `wrong` is the error for
/// any other value.
fn parse_flag_bool(input: ParseStream<'_>, wrong: &str) -> Result<bool> {
    if !input.peek(Token![=]) {
        return Ok(true);
    }
    input.parse::<Token![=]>()?;
    let value: Expr = input.parse()?;
    match &value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        other => Err(Error::new(other.span(), wrong)),
    }
}

/// Sets `slot`, whose value carries the argument's name, once.
fn set_once<T>(slot: &mut Option<(Ident, T)>, value: (Ident, T)) -> Result<()> {
    if slot.is_some() {
        return Err(twice(&value.0));
    }
    *slot = Some(value);
    Ok(())
}

fn set_once_at<T>(slot: &mut Option<T>, value: T, name: &Ident) -> Result<()> {
    if slot.is_some() {
        return Err(twice(name));
    }
    *slot = Some(value);
    Ok(())
}

fn twice(name: &Ident) -> Error {
    Error::new(
        name.span(),
        format!("`{name}` is given twice: give each argument once"),
    )
}

fn unknown_argument(attr: Attr, ident: &Ident) -> Error {
    let name = ident.to_string();
    let valid = attr.arguments().join(", ");
    let elsewhere: Vec<&str> = [Attr::Cached, Attr::Put, Attr::Invalidate]
        .into_iter()
        .filter(|a| a.arguments().contains(&name.as_str()))
        .map(Attr::name)
        .collect();
    if !elsewhere.is_empty() {
        let listed: Vec<String> = elsewhere.iter().map(|a| format!("`#[{a}]`")).collect();
        return Error::new(
            ident.span(),
            format!(
                "`{name}` is an argument of {}, not of `#[{}]`; valid arguments: {valid}",
                listed.join(" and "),
                attr.name()
            ),
        );
    }
    let hint = attr
        .arguments()
        .iter()
        .map(|a| (edit_distance(a, &name), a))
        .filter(|(d, a)| *d <= 2 && *d < a.len())
        .min()
        .map(|(_, a)| format!("did you mean `{a}`? "))
        .unwrap_or_default();
    Error::new(
        ident.span(),
        format!("unknown argument `{name}`; {hint}valid arguments: {valid}"),
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

//! Rules on the function's signature and between arguments. Every broken rule becomes a
//! `syn::Error` at the offending token, saying how to fix it; all of them are reported together.
//!
//! [`check`] is for `#[cached]`; [`check_write`] for `#[cache_put]` and `#[cache_invalidate]`,
//! whose functions always run, so they accept any receiver and generic parameters.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Error, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments};
use syn::{LitStr, Result, ReturnType, Type};

use crate::args::{Args, Attr, BUILT_IN_KINDS};
use crate::key::Template;

/// What the function returns, which picks the runtime wrapper.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returns {
    /// Any `T`: `cached_value`.
    Value,
    /// `Option<T>`: `cached_option` (`None` cached only with `none_ttl`).
    Option,
    /// `Result<T, E>` (or an alias such as `io::Result<T>`): `cached_result` (`Err` never cached).
    Result,
}

/// A function that passed every rule, with what the expansion needs to know about it.
pub(crate) struct Plan {
    pub(crate) kind: LitStr,
    pub(crate) returns: Returns,
    /// The declared return type.
    pub(crate) ret_ty: Type,
    /// The type of the cached value: `T` of `T`, `Option<T>` or `Result<T, E>` (what `unless`
    /// sees as `result: &T`).
    pub(crate) value_ty: Type,
    /// `E` of `Result<T, E>` when written out (not for an alias such as `io::Result<T>`).
    pub(crate) err_ty: Option<Type>,
    /// The function takes `&self`.
    pub(crate) has_receiver: bool,
    /// The arguments hashed into the default key (all but the skipped ones, never `self`).
    pub(crate) key_args: Vec<Ident>,
    pub(crate) key: Option<Template>,
    pub(crate) tags: Vec<Template>,
    /// A load may outlive the call (`refresh`, `xfetch`, `soft_timeout`, `hard_timeout`): the body
    /// owns copies of its arguments.
    pub(crate) background: bool,
}

/// Collects errors so that every broken rule is reported at once.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.add(Error::new(span, msg));
    }

    fn add(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

/// Checks the function and the arguments together.
pub(crate) fn check(args: &Args, item: &ItemFn) -> Result<Plan> {
    let mut errors = Errors::default();
    let sig = &item.sig;

    check_async(Attr::Cached, item, &mut errors);

    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(_) => {}
            GenericParam::Type(_) | GenericParam::Const(_) => errors.push(
                param.span(),
                "`#[cached]` does not support generic functions (the key would not tell the \
                 instantiations apart): make this function non-generic, or call \
                 `Cache::get_or_load` inside it",
            ),
        }
    }

    let mut has_receiver = false;
    let mut arg_names: Vec<Ident> = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                has_receiver = true;
                check_receiver(r, &mut errors);
            }
            FnArg::Typed(pt) => {
                if let Type::ImplTrait(it) = &*pt.ty {
                    errors.push(
                        it.impl_token.span,
                        "`#[cached]` does not support `impl Trait` arguments (they make the \
                         function generic): use a concrete type",
                    );
                }
                match &*pt.pat {
                    Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                        arg_names.push(pi.ident.clone());
                    }
                    other => errors.push(
                        other.span(),
                        "`#[cached]` refers to arguments by name: bind this argument to a plain \
                         name (e.g. `point: (i32, i32)`) and destructure it in the body",
                    ),
                }
            }
        }
    }

    let (returns, ret_ty) = match &sig.output {
        ReturnType::Default => {
            errors.push(
                sig.ident.span(),
                format!(
                    "`#[cached]` caches the return value, but `{}` returns `()`: give it a return \
                     type (`-> T`, `-> Option<T>` or `-> Result<T, E>`)",
                    sig.ident
                ),
            );
            (Returns::Value, syn::parse_quote!(()))
        }
        ReturnType::Type(_, ty) => (classify(ty), (**ty).clone()),
    };
    let value_ty = match returns {
        Returns::Value => ret_ty.clone(),
        Returns::Option | Returns::Result => first_type_arg(&ret_ty).unwrap_or(ret_ty.clone()),
    };
    let err_ty = match returns {
        Returns::Result => type_args(&ret_ty).nth(1),
        Returns::Value | Returns::Option => None,
    };

    if args.kind.is_none() {
        errors.push(
            Span::call_site(),
            format!(
                "missing `kind = \"...\"`: e.g. `#[cached(kind = \"api_response\")]`; built-in \
                 kinds: {} (other names work once registered with `CacheBuilder::kind`)",
                BUILT_IN_KINDS.join(", ")
            ),
        );
    }

    if let Some((k, _)) = &args.none_ttl {
        if returns != Returns::Option {
            errors.push(
                k.span(),
                "`none_ttl` caches `None` results, so it needs a function returning `Option<T>`: \
                 remove `none_ttl`, or return `Option<T>`",
            );
        }
    }

    if let Some((k, _)) = &args.cache_errors {
        if returns != Returns::Result {
            errors.push(
                k.span(),
                "`cache_errors` caches `Err` results, so it needs a function returning \
                 `Result<T, E>`: remove `cache_errors`, or return `Result<T, E>`",
            );
        }
    }

    check_ttl_fn(args, &mut errors);

    if let Some((k, _)) = &args.hard_timeout {
        if returns != Returns::Result {
            errors.push(
                k.span(),
                "`hard_timeout` gives up on the body with an error, so it needs a function \
                 returning `Result<T, E>` (with `E: From<cache_core::Error>`): a function \
                 returning `T` or `Option<T>` has no error to return; use `soft_timeout` (serve \
                 the stale value while the body finishes) instead",
            );
        }
    }
    if let Some(bg) = args.background() {
        for input in &sig.inputs {
            if let FnArg::Typed(pt) = input {
                if let Type::Reference(r) = &*pt.ty {
                    if r.mutability.is_some() {
                        errors.push(
                            r.span(),
                            format!(
                                "`{bg}` runs the body in a background task, which cannot hold a \
                                 `&mut` argument: take it by value or by `&`, or remove `{bg}`"
                            ),
                        );
                    }
                }
            }
        }
    }

    if let Some(w) = &args.warm {
        if !sig.inputs.is_empty() {
            let names: Vec<String> = sig
                .inputs
                .iter()
                .map(|i| match i {
                    FnArg::Receiver(_) => "`self`".to_owned(),
                    FnArg::Typed(pt) => format!("`{}`", quote::ToTokens::to_token_stream(&pt.pat)),
                })
                .collect();
            errors.push(
                w.span(),
                format!(
                    "`warm` needs a function without arguments (warm-up calls it with none), but \
                     `{}` takes {}: remove `warm`, or write a zero-argument `#[cached(..., warm)]` \
                     function for the values to preload",
                    sig.ident,
                    names.join(", ")
                ),
            );
        }
    }

    let mut skipped: Vec<&Ident> = Vec::new();
    if let Some((k, names)) = &args.skip {
        if args.key.is_some() {
            errors.push(
                k.span(),
                "`skip(...)` has no effect with `key = \"...\"` (the template names the arguments \
                 in the key): remove `skip(...)`",
            );
        }
        for name in names {
            if arg_names.contains(name) {
                skipped.push(name);
            } else {
                errors.push(
                    name.span(),
                    format!(
                        "`{name}` is not an argument of `{}`; {}",
                        sig.ident,
                        list_arguments(&arg_names)
                    ),
                );
            }
        }
    }

    let key = templates(args.key.as_ref(), "key", &arg_names, &mut errors)
        .into_iter()
        .next();
    let tags = templates(args.tags.as_ref(), "tags", &arg_names, &mut errors);

    if let Some(e) = errors.0 {
        return Err(e);
    }
    let Some((_, kind)) = &args.kind else {
        // Reported above with the list of kinds; unreachable, but no panic in a macro.
        return Err(Error::new(Span::call_site(), "missing `kind = \"...\"`"));
    };
    Ok(Plan {
        kind: kind.clone(),
        returns,
        ret_ty,
        value_ty,
        err_ty,
        has_receiver,
        key_args: arg_names
            .into_iter()
            .filter(|a| !skipped.contains(&a))
            .collect(),
        key,
        tags,
        background: args.background().is_some(),
    })
}

fn check_receiver(r: &syn::Receiver, errors: &mut Errors) {
    let by_shared_ref = match (&r.reference, &r.colon_token) {
        (Some(_), _) => r.mutability.is_none(),
        // `self: &Self` and the like.
        (None, Some(_)) => matches!(&*r.ty, Type::Reference(t) if t.mutability.is_none()),
        (None, None) => false,
    };
    if by_shared_ref {
        return;
    }
    if let (Some(_), Some(m)) = (&r.reference, r.mutability) {
        errors.push(
            m.span,
            "`#[cached]` methods take `&self`, not `&mut self` (a cache hit skips the body, so \
             it must not mutate): remove `mut` and use interior mutability if needed",
        );
        return;
    }
    errors.push(
        r.self_token.span,
        "`#[cached]` methods take `&self`: the receiver is borrowed, not consumed (write `&self`)",
    );
}

/// `Option<..>` / `Result<..>` by the last path segment; anything else is a plain value.
fn classify(ty: &Type) -> Returns {
    let Type::Path(tp) = ty else {
        return Returns::Value;
    };
    let Some(last) = tp.path.segments.last() else {
        return Returns::Value;
    };
    let PathArguments::AngleBracketed(ab) = &last.arguments else {
        return Returns::Value;
    };
    let types = ab
        .args
        .iter()
        .filter(|a| matches!(a, GenericArgument::Type(_)))
        .count();
    match last.ident.to_string().as_str() {
        "Option" if types == 1 => Returns::Option,
        "Result" if (1..=2).contains(&types) => Returns::Result,
        _ => Returns::Value,
    }
}

/// `T` of `Option<T>` / `Result<T, E>`.
fn first_type_arg(ty: &Type) -> Option<Type> {
    type_args(ty).next()
}

/// The type arguments of the last path segment of `ty`.
fn type_args(ty: &Type) -> impl Iterator<Item = Type> + '_ {
    let args = match ty {
        Type::Path(tp) => match tp.path.segments.last().map(|s| &s.arguments) {
            Some(PathArguments::AngleBracketed(ab)) => Some(&ab.args),
            _ => None,
        },
        _ => None,
    };
    args.into_iter().flatten().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    })
}

fn list_arguments(names: &[Ident]) -> String {
    if names.is_empty() {
        "it has no arguments".to_owned()
    } else {
        let names: Vec<String> = names.iter().map(|a| format!("`{a}`")).collect();
        format!("arguments: {}", names.join(", "))
    }
}

/// `async fn` only.
fn check_async(attr: Attr, item: &ItemFn, errors: &mut Errors) {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span,
            format!(
                "`#[{}]` works on `async fn` only: add `async` (`async fn {}(...)`)",
                attr.name(),
                sig.ident
            ),
        );
    }
}

/// `ttl_fn` computes the TTL that `ttl` would fix: one of them.
fn check_ttl_fn(args: &Args, errors: &mut Errors) {
    if let (Some((k, _)), Some(_)) = (&args.ttl_fn, &args.ttl) {
        errors.push(
            k.span(),
            "`ttl_fn` and `ttl` both set the TTL: keep `ttl_fn` to compute it from the value, or \
             `ttl` to compute it from the arguments",
        );
    }
}

/// Checks each template of `what` (`key` or `tags`) against the argument names.
fn templates(
    lits: Option<&(Ident, Vec<LitStr>)>,
    what: &str,
    arg_names: &[Ident],
    errors: &mut Errors,
) -> Vec<Template> {
    let mut out = Vec::new();
    for lit in lits.map(|(_, l)| l.as_slice()).unwrap_or_default() {
        match Template::parse(lit, what, arg_names) {
            Ok(t) => out.push(t),
            Err(e) => errors.add(e),
        }
    }
    out
}

/// A `#[cache_put]` / `#[cache_invalidate]` function that passed every rule.
pub(crate) struct WritePlan {
    /// `None` only for `#[cache_invalidate]` with tags alone.
    pub(crate) kind: Option<LitStr>,
    pub(crate) returns: Returns,
    /// The declared return type (`()` when none).
    pub(crate) ret_ty: Type,
    /// What `#[cache_put]` stores (and `ttl_fn` sees): `T` of `T`, `Option<T>`, `Result<T, E>`.
    pub(crate) value_ty: Type,
    pub(crate) keys: Vec<Template>,
    pub(crate) tags: Vec<Template>,
}

/// Checks a `#[cache_put]` or `#[cache_invalidate]` function and its arguments together.
pub(crate) fn check_write(args: &Args, item: &ItemFn) -> Result<WritePlan> {
    let attr = args.attr;
    let mut errors = Errors::default();
    let sig = &item.sig;
    check_async(attr, item, &mut errors);

    // Only plain names can appear in templates; other patterns are fine otherwise.
    let arg_names: Vec<Ident> = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(pi) if pi.subpat.is_none() => Some(pi.ident.clone()),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect();

    let (returns, ret_ty) = match &sig.output {
        ReturnType::Default => {
            if attr == Attr::Put {
                errors.push(
                    sig.ident.span(),
                    format!(
                        "`#[cache_put]` stores the return value, but `{}` returns `()`: return \
                         the value to store (`-> T`, `-> Option<T>` or `-> Result<T, E>`), or use \
                         `#[cache_invalidate]`",
                        sig.ident
                    ),
                );
            }
            (Returns::Value, syn::parse_quote!(()))
        }
        ReturnType::Type(_, ty) => (classify(ty), (**ty).clone()),
    };
    let value_ty = match returns {
        Returns::Value => ret_ty.clone(),
        Returns::Option | Returns::Result => first_type_arg(&ret_ty).unwrap_or(ret_ty.clone()),
    };

    let keys = templates(args.key.as_ref(), "key", &arg_names, &mut errors);
    let tags = templates(args.tags.as_ref(), "tags", &arg_names, &mut errors);
    if let Some((k, lits)) = &args.key {
        if lits.is_empty() {
            errors.push(
                k.span(),
                "`key = []` names no key: give one or more templates, e.g. `key = \"user:{id}\"`",
            );
        }
    }

    match attr {
        Attr::Put => {
            if args.key.is_none() {
                errors.push(
                    Span::call_site(),
                    "missing `key = \"...\"`: `#[cache_put]` stores the returned value under it, \
                     e.g. `#[cache_put(kind = \"database_query\", key = \"user:{id}\")]` (the \
                     same `kind` and `key` as the `#[cached]` function that reads it)",
                );
            }
            if args.kind.is_none() {
                errors.push(Span::call_site(), missing_kind(attr));
            }
            check_ttl_fn(args, &mut errors);
        }
        Attr::Invalidate => {
            let has_tags = args.tags.as_ref().is_some_and(|(_, t)| !t.is_empty());
            match (&args.key, &args.kind) {
                (None, _) if !has_tags => errors.push(
                    Span::call_site(),
                    "`#[cache_invalidate]` needs something to invalidate: `key = \"...\"` (with \
                     `kind`) and/or `tags = [...]`, e.g. `#[cache_invalidate(kind = \
                     \"database_query\", key = \"user:{id}\", tags = [\"user:{id}\"])]`",
                ),
                (Some(_), None) => errors.push(Span::call_site(), missing_kind(attr)),
                (None, Some((k, _))) => errors.push(
                    k.span(),
                    "`kind` goes with `key` (tags are not per kind): add `key = \"...\"`, or \
                     remove `kind`",
                ),
                _ => {}
            }
        }
        Attr::Cached => {}
    }

    if let Some(e) = errors.0 {
        return Err(e);
    }
    Ok(WritePlan {
        kind: args.kind.as_ref().map(|(_, k)| k.clone()),
        returns,
        ret_ty,
        value_ty,
        keys,
        tags,
    })
}

fn missing_kind(attr: Attr) -> String {
    format!(
        "missing `kind = \"...\"`: the kind of the keys, as in the `#[cached]` function that \
         reads them, e.g. `#[{}(kind = \"database_query\", key = \"user:{{id}}\")]`; built-in \
         kinds: {}",
        attr.name(),
        BUILT_IN_KINDS.join(", ")
    )
}

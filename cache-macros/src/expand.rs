//! Rebuilds the function: its attributes, visibility and signature are re-emitted unchanged.
//!
//! - `#[cached]`: the body becomes a call into `::cache_core::__private` that runs the original
//!   body (moved into `move || async move { ... }`, so `?`, `return` and `self` keep working) only
//!   on a miss; `companions(...)` adds `{name}_traced` / `{name}_refresh` next to the function,
//!   which call it.
//! - `#[cache_put]` / `#[cache_invalidate]`: the keys are built from the arguments, the body runs
//!   as an `async move` block, then (on success) the value is stored or the keys and tags dropped.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, Signature};

use crate::args::{Args, Attr, Companions, Timeout, Ttl};
use crate::background;
use crate::key;
use crate::validate::{Plan, Returns, WritePlan};

/// Types the body's future as the declared return type, so `?` and `return` in the body convert
/// errors exactly as they did without the attribute.
fn body_typer() -> TokenStream {
    quote! {
        fn __cache_body<__CacheOut, __CacheFut>(f: __CacheFut) -> __CacheFut
        where
            __CacheFut: ::core::future::Future<Output = __CacheOut>,
        {
            f
        }
    }
}

/// The expanded `#[cached]` function, and its companions.
pub(crate) fn expand(args: &Args, item: &ItemFn, plan: &Plan) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let ret_ty = &plan.ret_ty;
    let kind = &plan.kind;
    let value_ty = &plan.value_ty;

    let warm = args
        .warm
        .as_ref()
        .map(|w| warmer(&sig.ident, w.span(), plan));

    let cache = match &args.cache {
        // A deref coercion to `&Cache` accepts `Cache`, `&Cache`, `Arc<Cache>`, `LazyLock<Cache>`...
        // and the temporary of an expression such as `self.cache.clone()` lives to the end of
        // the function (temporary lifetime extension of `let x = &temp;`).
        Some(expr) => quote_spanned! {expr.span()=>
            let __cache_ref: &::cache_core::Cache = &(#expr);
            let __cache_cache = ::core::option::Option::Some(::std::borrow::Cow::Borrowed(__cache_ref));
        },
        None => quote! {
            let __cache_cache = ::cache_core::__private::global();
        },
    };

    let key = match &plan.key {
        Some(t) => {
            let f = t.to_format();
            quote! { ::core::option::Option::Some(#f) }
        }
        None => key::default_key(&plan.key_args, plan.has_receiver),
    };
    // `condition`: evaluated first; when false, no key is built and the body runs uncached.
    let key = match &args.condition {
        Some(cond) => {
            let cond = quote_spanned! {cond.span()=>
                let __cache_condition: bool = #cond;
            };
            quote! {
                {
                    #cond
                    if __cache_condition { #key } else { ::core::option::Option::None }
                }
            }
        }
        None => key,
    };

    let tags = plan.tags.iter().map(key::Template::to_format);
    let ttl = ttl_tokens(args.ttl.as_ref().map(|(_, t)| t));
    let ttl_fn = ttl_fn_tokens(args.ttl_fn.as_ref().map(|(_, e)| e), value_ty);

    let result = Ident::new("result", Span::call_site());
    let unless = match &args.unless {
        // Typed: the value type is not inferred yet where this closure is checked.
        Some(expr) => quote_spanned! {expr.span()=>
            |#result: &#value_ty| -> bool {
                let _ = #result;
                #expr
            }
        },
        None => quote! { |_| false },
    };

    // What comes between the call description and `unless`.
    let (call, extra, check) = match (plan.returns, &args.cache_errors) {
        (Returns::Value, _) => (quote! { cached_value }, TokenStream::new(), None),
        (Returns::Option, _) => {
            let t = ttl_tokens(args.none_ttl.as_ref().map(|(_, t)| t));
            (quote! { cached_option }, quote! { #t, }, None)
        }
        (Returns::Result, None) => {
            // Concurrent callers share one call of the body, and so its error: checked at the
            // error type, with a message saying why.
            let span = plan.err_ty.as_ref().map_or(ret_ty.span(), Spanned::span);
            let check = quote_spanned! {span=>
                ::cache_core::__private::assert_shared_error(
                    ::core::marker::PhantomData::<#ret_ty>,
                );
            };
            (quote! { cached_result }, TokenStream::new(), Some(check))
        }
        (Returns::Result, Some((k, ttl))) => {
            let ttl = duration_tokens(ttl);
            // The error type must be storable: checked at the error type (or at `cache_errors`
            // for an alias such as `io::Result<T>`), with a message saying why.
            let span = plan.err_ty.as_ref().map_or(k.span(), Spanned::span);
            let check = quote_spanned! {span=>
                ::cache_core::__private::assert_cacheable_error(
                    ::core::marker::PhantomData::<#ret_ty>,
                );
            };
            (
                quote! { cached_result_errors },
                quote! { #ttl, },
                Some(check),
            )
        }
    };

    let companions = args
        .companions
        .as_ref()
        .map(|(_, c)| companions(item, c, plan));
    let body_typer = body_typer();
    let freshness = freshness_tokens(args);
    let lock = args
        .lock
        .as_ref()
        .map(|(_, on)| quote! { .distributed_lock(#on) });
    let schema = schema_tokens(args);
    let prelude = quote! {
        #warm
        #body_typer
        #check
        #cache
        let __cache_call = ::cache_core::__private::Call {
            cache: __cache_cache,
            kind: #kind,
            key: #key,
            opts: ::cache_core::__private::options(#ttl, ::std::vec![#(#tags),*]) #lock #schema,
            fresh: ::cache_core::__private::fresh() #freshness,
            ttl_fn: #ttl_fn,
        };
    };

    if plan.background {
        let call = background_call(args, sig, block, plan, &extra);
        let sig = background::wrapper_signature(sig);
        return quote! {
            #(#attrs)*
            #vis #sig {
                #prelude
                #call
            }
            #companions
        };
    }

    quote! {
        #(#attrs)*
        #vis #sig {
            #prelude
            ::cache_core::__private::#call(
                __cache_call,
                #extra
                #unless,
                move || __cache_body::<#ret_ty, _>(async move #block),
            )
            .await
        }
        #companions
    }
}

/// `.schema("...")` on the options, when the function names a schema.
fn schema_tokens(args: &Args) -> TokenStream {
    match &args.schema {
        Some((_, s)) => quote! { .schema(#s) },
        None => TokenStream::new(),
    }
}

/// The freshness settings as `OwnedOptions` setter calls (background mode).
fn freshness_tokens(args: &Args) -> TokenStream {
    let mut out = TokenStream::new();
    if let Some((_, f)) = &args.refresh {
        out.extend(quote! { .eager_refresh(#f) });
    }
    if let Some((_, b)) = &args.xfetch {
        out.extend(quote! { .xfetch(#b) });
    }
    if let Some((_, t)) = &args.soft_timeout {
        let d = timeout_tokens(t);
        out.extend(quote! { .soft_timeout(#d) });
    }
    if let Some((_, t)) = &args.hard_timeout {
        let d = timeout_tokens(t);
        out.extend(quote! { .hard_timeout(#d) });
    }
    out
}

fn timeout_tokens(t: &Timeout) -> TokenStream {
    match t {
        Timeout::Millis(ms, span) => quote_spanned! {*span=>
            ::core::time::Duration::from_millis(#ms)
        },
        Timeout::Expr(expr) => quote_spanned! {expr.span()=>
            {
                let __cache_timeout: ::core::time::Duration = #expr;
                __cache_timeout
            }
        },
    }
}

/// The background-mode call: `make` copies the arguments into an owned body that also says
/// whether `unless` refuses its output (see `background`).
fn background_call(
    args: &Args,
    sig: &Signature,
    block: &syn::Block,
    plan: &Plan,
    extra: &TokenStream,
) -> TokenStream {
    let ret_ty = &plan.ret_ty;
    let value_ty = &plan.value_ty;
    let background::Owned { copies, rebinds } = background::owned_arguments(sig);
    let block = if plan.has_receiver {
        background::rename_self_in_block(block)
    } else {
        block.clone()
    };
    let result = Ident::new("result", Span::call_site());
    let refused = match &args.unless {
        None => quote! { false },
        Some(expr) => {
            let expr = if plan.has_receiver {
                background::rename_self_in_expr(expr)
            } else {
                expr.clone()
            };
            let unless = quote_spanned! {expr.span()=>
                |#result: &#value_ty| -> bool {
                    let _ = #result;
                    #expr
                }
            };
            match plan.returns {
                Returns::Value => quote! { (#unless)(&__cache_out) },
                Returns::Option => quote! {
                    match &__cache_out {
                        ::core::option::Option::Some(v) => (#unless)(v),
                        ::core::option::Option::None => false,
                    }
                },
                Returns::Result => quote! {
                    match &__cache_out {
                        ::core::result::Result::Ok(v) => (#unless)(v),
                        ::core::result::Result::Err(_) => false,
                    }
                },
            }
        }
    };
    let (func, on_timeout) = match (plan.returns, &args.cache_errors) {
        (Returns::Value, _) => (quote! { cached_value_bg }, None),
        (Returns::Option, _) => (quote! { cached_option_bg }, None),
        (Returns::Result, errors) => {
            let on_timeout = match &args.hard_timeout {
                Some((k, _)) => {
                    let span = plan.err_ty.as_ref().map_or(k.span(), Spanned::span);
                    quote_spanned! {span=>
                        |__cache_after: ::core::time::Duration| {
                            ::cache_core::__private::timeout_error(__cache_after)
                        }
                    }
                }
                None => quote! {
                    |__cache_never: ::core::convert::Infallible| match __cache_never {}
                },
            };
            let func = match errors {
                None => quote! { cached_result_bg },
                Some(_) => quote! { cached_result_errors_bg },
            };
            (func, Some(on_timeout))
        }
    };
    let on_timeout = on_timeout.map(|t| quote! { , #t });
    quote! {
        ::cache_core::__private::#func(
            __cache_call,
            #extra
            move || {
                #copies
                move || async move {
                    #rebinds
                    let __cache_out: #ret_ty = __cache_body::<#ret_ty, _>(async move #block).await;
                    let __cache_refused: bool = #refused;
                    (__cache_out, __cache_refused)
                }
            }
            #on_timeout
        )
        .await
    }
}

/// `Option<Duration>` for a `ttl`-like argument.
fn ttl_tokens(ttl: Option<&Ttl>) -> TokenStream {
    match ttl {
        None => quote! { ::core::option::Option::None },
        Some(ttl) => {
            let d = duration_tokens(ttl);
            quote! { ::core::option::Option::Some(#d) }
        }
    }
}

/// The `Duration` of a `ttl`-like argument, evaluated at each call.
fn duration_tokens(ttl: &Ttl) -> TokenStream {
    match ttl {
        Ttl::Secs(secs, span) => quote_spanned! {*span=>
            ::core::time::Duration::from_secs(#secs)
        },
        Ttl::Expr(expr) => quote_spanned! {expr.span()=>
            {
                let __cache_ttl: ::core::time::Duration = #expr;
                __cache_ttl
            }
        },
    }
}

/// `Option<TtlFn<T>>` for `ttl_fn`; typed so that a closure's argument type is inferred.
fn ttl_fn_tokens(ttl_fn: Option<&syn::Expr>, value_ty: &syn::Type) -> TokenStream {
    match ttl_fn {
        None => quote! { ::core::option::Option::None },
        Some(expr) => quote_spanned! {expr.span()=>
            ::cache_core::__private::ttl_fn::<#value_ty, _>(#expr)
        },
    }
}

/// `{name}_traced` and `{name}_refresh`, which call the function (so its attributes, such as
/// `#[tracing::instrument]`, apply to them too).
fn companions(item: &ItemFn, c: &Companions, plan: &Plan) -> TokenStream {
    let sig = &item.sig;
    let name = &sig.ident;
    let ret_ty = &plan.ret_ty;
    // `#[cfg(...)]` on the function applies to its companions.
    let cfgs = item.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let vis = &item.vis;

    // The companions take the same arguments and pass them on (without `mut`, which is the
    // function's business).
    let mut forwarded = Vec::new();
    let mut inputs = sig.inputs.clone();
    for input in inputs.iter_mut() {
        if let FnArg::Typed(pt) = input {
            if let Pat::Ident(pi) = &mut *pt.pat {
                pi.mutability = None;
                forwarded.push(pi.ident.clone());
            }
        }
    }
    let call = if plan.has_receiver {
        quote! { Self::#name(self, #(#forwarded),*) }
    } else {
        quote! { #name(#(#forwarded),*) }
    };
    let companion_sig = |ident: Ident, output: TokenStream| -> Signature {
        let mut s = sig.clone();
        s.ident = ident;
        s.inputs = inputs.clone();
        s.output = syn::parse_quote!(-> #output);
        s
    };
    let cfgs: Vec<_> = cfgs.collect();
    let mut out = TokenStream::new();
    if let Some(t) = &c.traced {
        let doc = format!(
            " `{name}` with where its value came from (L1, L2, the body, a stale fallback) and \
             its age. Generated by `#[cached(..., companions(traced))]`."
        );
        let s = companion_sig(
            format_ident!("{}_traced", name, span = t.span()),
            quote! { ::cache_core::Lookup<#ret_ty> },
        );
        out.extend(quote! {
            #(#cfgs)*
            #[doc = #doc]
            #vis #s {
                ::cache_core::__private::traced(#call).await
            }
        });
    }
    if let Some(r) = &c.refresh {
        let doc = format!(
            " `{name}`, reloading: its body runs and its result replaces the cached one on every \
             instance (calls made by the body read through the cache as usual). Generated by \
             `#[cached(..., companions(refresh))]`."
        );
        let s = companion_sig(
            format_ident!("{}_refresh", name, span = r.span()),
            quote! { #ret_ty },
        );
        out.extend(quote! {
            #(#cfgs)*
            #[doc = #doc]
            #vis #s {
                ::cache_core::__private::refresh_one(#call).await
            }
        });
    }
    out
}

/// Registers the zero-argument function as a warmer: `run` calls it (which caches its result).
fn warmer(name: &Ident, span: Span, plan: &Plan) -> TokenStream {
    let name_str = name.to_string();
    // Spanned at `warm`: on an associated function (which cannot be named from here) the error
    // "cannot find function" points at `warm`.
    let call = quote_spanned! {span=> #name() };
    let outcome = match plan.returns {
        Returns::Result => quote! {
            fn __cache_type_name<E>(_: &E) -> &'static str {
                ::core::any::type_name::<E>()
            }
            match #call.await {
                ::core::result::Result::Ok(_) => ::core::result::Result::Ok(()),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::std::format!(
                    "{} returned an error of type `{}`",
                    __CACHE_WARM_NAME,
                    __cache_type_name(&e),
                )),
            }
        },
        Returns::Value | Returns::Option => quote! {
            let _ = #call.await;
            ::core::result::Result::Ok(())
        },
    };
    quote! {
        const __CACHE_WARM_NAME: &str = ::core::concat!(::core::module_path!(), "::", #name_str);
        ::cache_core::__private::inventory::submit! {
            ::cache_core::__private::Warmer {
                name: __CACHE_WARM_NAME,
                run: {
                    fn __cache_warm() -> ::cache_core::__private::WarmFuture {
                        ::std::boxed::Box::pin(async {
                            #outcome
                        })
                    }
                    __cache_warm
                },
            }
        }
    }
}

/// The expanded `#[cache_put]` or `#[cache_invalidate]` function.
pub(crate) fn expand_write(args: &Args, item: &ItemFn, plan: &WritePlan) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let ret_ty = &plan.ret_ty;
    // Tags alone need no kind.
    let kind = plan
        .kind
        .as_ref()
        .map_or_else(|| quote! { "" }, |k| quote! { #k });

    let cache = match &args.cache {
        // Cloned (an `Arc` clone) before the body runs, so that the body can take `&mut self`
        // or `self` even when the cache is a field of `self`.
        Some(expr) => quote_spanned! {expr.span()=>
            let __cache_cache: ::core::option::Option<::cache_core::Cache> = {
                let __cache_ref: &::cache_core::Cache = &(#expr);
                ::cache_core::__private::owned(__cache_ref)
            };
        },
        None => quote! {
            let __cache_cache: ::core::option::Option<::cache_core::Cache> =
                ::cache_core::__private::global_owned();
        },
    };
    let keys = plan.keys.iter().map(key::Template::to_format);
    let tags = plan.tags.iter().map(key::Template::to_format);
    let body_typer = body_typer();

    let (before, after) = match args.attr {
        Attr::Invalidate => {
            let invalidate = quote! {
                ::cache_core::__private::invalidate(
                    __cache_cache.as_ref(),
                    #kind,
                    &__cache_keys,
                    &__cache_tags,
                )
                .await;
            };
            if args.before.as_ref().is_some_and(|(_, b)| *b) {
                (invalidate, TokenStream::new())
            } else {
                let ok = match plan.returns {
                    Returns::Result => quote! { ::core::result::Result::is_ok(&__cache_out) },
                    Returns::Value | Returns::Option => quote! { true },
                };
                (TokenStream::new(), quote! { if #ok { #invalidate } })
            }
        }
        Attr::Put | Attr::Cached => {
            let ttl = ttl_tokens(args.ttl.as_ref().map(|(_, t)| t));
            let schema = schema_tokens(args);
            let ttl_fn = ttl_fn_tokens(args.ttl_fn.as_ref().map(|(_, e)| e), &plan.value_ty);
            let shape = match plan.returns {
                Returns::Value => quote! { put_plain },
                Returns::Option => quote! { put_some },
                Returns::Result => quote! { put_ok },
            };
            // Spanned at the return type: a value that cannot be stored is reported there.
            let stored = quote_spanned! {ret_ty.span()=>
                ::cache_core::__private::#shape(&__cache_out, #ttl_fn, __cache_opts)
            };
            let after = quote! {
                let __cache_opts = ::cache_core::__private::options(#ttl, __cache_tags)#schema;
                let (__cache_value, __cache_opts) = #stored;
                ::cache_core::__private::put(
                    __cache_cache.as_ref(),
                    #kind,
                    &__cache_keys,
                    __cache_value,
                    __cache_opts,
                )
                .await;
            };
            (TokenStream::new(), after)
        }
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #body_typer
            #cache
            let __cache_keys: ::std::vec::Vec<::std::string::String> = ::std::vec![#(#keys),*];
            let __cache_tags: ::std::vec::Vec<::std::string::String> = ::std::vec![#(#tags),*];
            #before
            let __cache_out: #ret_ty = __cache_body::<#ret_ty, _>(async move #block).await;
            #after
            __cache_out
        }
    }
}

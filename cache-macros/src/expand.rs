//! Rebuilds the function: its attributes, visibility and signature are re-emitted unchanged; its
//! body becomes a call into `::cache_core::__private` that runs the original body (moved into
//! `move || async move { ... }`, so `?`, `return` and `self` keep working) only on a miss.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn};

use crate::args::{CachedArgs, Ttl};
use crate::key;
use crate::validate::{Plan, Returns};

/// The expanded function.
pub(crate) fn expand(args: &CachedArgs, item: &ItemFn, plan: &Plan) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let ret_ty = &plan.ret_ty;
    let kind = &plan.kind;

    let warm = args.warm.as_ref().map(|w| warmer(&sig.ident, w.span, plan));

    let cache = match &args.cache {
        // A deref coercion to `&Cache` accepts `Cache`, `&Cache`, `Arc<Cache>`, `LazyLock<Cache>`...
        // and the temporary of an expression such as `self.cache.clone()` lives to the end of
        // the function (temporary lifetime extension of `let x = &temp;`).
        Some(expr) => quote_spanned! {expr.span()=>
            let __cache_ref: &::cache_core::Cache = &(#expr);
            let __cache_cache = ::core::option::Option::Some(__cache_ref);
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

    let tags = plan.tags.iter().map(key::Template::to_format);
    let ttl = ttl_tokens(args.ttl.as_ref());

    let result = Ident::new("result", Span::call_site());
    let value_ty = &plan.value_ty;
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

    let call = match plan.returns {
        Returns::Value => quote! { ::cache_core::__private::cached_value },
        Returns::Option => quote! { ::cache_core::__private::cached_option },
        Returns::Result => quote! { ::cache_core::__private::cached_result },
    };
    let none_ttl = match plan.returns {
        Returns::Option => {
            let t = ttl_tokens(args.none_ttl.as_ref().map(|(_, t)| t));
            quote! { #t, }
        }
        _ => TokenStream::new(),
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #warm
            // Types the body's future as the declared return type, so `?` and `return` in the
            // body convert errors exactly as they did before `#[cached]`.
            fn __cache_body<__CacheOut, __CacheFut>(f: __CacheFut) -> __CacheFut
            where
                __CacheFut: ::core::future::Future<Output = __CacheOut>,
            {
                f
            }
            #cache
            let __cache_key: ::core::option::Option<::std::string::String> = #key;
            let __cache_opts: ::cache_core::EntryOptions = ::cache_core::__private::options(
                #ttl,
                ::std::vec![#(#tags),*],
            );
            #call(
                __cache_cache,
                #kind,
                __cache_key,
                &__cache_opts,
                #none_ttl
                #unless,
                move || __cache_body::<#ret_ty, _>(async move #block),
            )
            .await
        }
    }
}

/// `Option<Duration>` for a `ttl`-like argument.
fn ttl_tokens(ttl: Option<&Ttl>) -> TokenStream {
    match ttl {
        None => quote! { ::core::option::Option::None },
        Some(Ttl::Secs(secs, span)) => quote_spanned! {*span=>
            ::core::option::Option::Some(::core::time::Duration::from_secs(#secs))
        },
        Some(Ttl::Expr(expr)) => quote_spanned! {expr.span()=>
            {
                let __cache_ttl: ::core::time::Duration = #expr;
                ::core::option::Option::Some(__cache_ttl)
            }
        },
    }
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

//! The cache key of a call: a `key = "..."` template over the arguments, or the default key (the
//! function's path plus a hash of its non-skipped arguments). Also checks the `tags` templates,
//! which follow the same rules.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Error, Ident, LitStr, Result};

/// A checked `key`/`tags` template: a format string whose `{name}` placeholders are arguments.
pub(crate) struct Template {
    lit: LitStr,
}

impl Template {
    /// Checks `lit` (the value of `what`, i.e. `key` or `tags`) against the argument names.
    ///
    /// Placeholders are `{name}` or `{name:spec}` (e.g. `{id:?}`, `{n:08}`); `{{` and `}}` are literal
    /// braces.
    pub(crate) fn parse(lit: &LitStr, what: &str, args: &[Ident]) -> Result<Template> {
        let text = lit.value();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                }
                '}' => {
                    return Err(Error::new(
                        lit.span(),
                        format!("unmatched `}}` in `{what}`: write `}}}}` for a literal brace"),
                    ))
                }
                '{' => {
                    let mut inner = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        inner.push(c);
                    }
                    if !closed {
                        return Err(Error::new(
                            lit.span(),
                            format!(
                                "unclosed `{{` in `{what}`: close it (`{{id}}`) or write `{{{{` for a \
                                 literal brace"
                            ),
                        ));
                    }
                    let (name, spec) = match inner.split_once(':') {
                        Some((n, s)) => (n.trim(), Some(s)),
                        None => (inner.trim(), None),
                    };
                    check_placeholder(lit, what, name, spec, args)?;
                }
                _ => {}
            }
        }
        Ok(Template { lit: lit.clone() })
    }

    /// `format!("user:{id}")`: the arguments are captured by name (the literal carries the user's
    /// span, so the names resolve to the function's parameters).
    pub(crate) fn to_format(&self) -> TokenStream {
        let lit = &self.lit;
        quote_spanned! {lit.span()=> ::std::format!(#lit) }
    }
}

fn check_placeholder(
    lit: &LitStr,
    what: &str,
    name: &str,
    spec: Option<&str>,
    args: &[Ident],
) -> Result<()> {
    let available = || {
        if args.is_empty() {
            "this function has no arguments".to_owned()
        } else {
            let names: Vec<String> = args.iter().map(|a| format!("`{a}`")).collect();
            format!("arguments: {}", names.join(", "))
        }
    };
    if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::new(
            lit.span(),
            format!(
                "`{{{name}}}` in `{what}` needs an argument name, e.g. `{{id}}`; {}",
                available()
            ),
        ));
    }
    if name == "self" {
        return Err(Error::new(
            lit.span(),
            format!(
                "`{{self}}` cannot be used in `{what}`: only arguments can; {}",
                available()
            ),
        ));
    }
    if !args.iter().any(|a| a == name) {
        return Err(Error::new(
            lit.span(),
            format!(
                "`{{{name}}}` in `{what}` is not an argument of this function; {}",
                available()
            ),
        ));
    }
    if let Some(spec) = spec {
        if spec.contains('$') || spec.contains('*') {
            return Err(Error::new(
                lit.span(),
                format!(
                    "`{{{name}:{spec}}}` in `{what}`: width or precision taken from arguments \
                     (`$`, `*`) is not supported; write the number, e.g. `{{{name}:08}}`"
                ),
            ));
        }
    }
    Ok(())
}

/// The default key: `default_key(<fn path>, &(&a, &b, ...))` over the non-skipped arguments.
///
/// The path is the `type_name` of an item nested in the function, which is unique per function
/// definition (it includes the type of a method, `<T as Trait>` for trait impls, and the enclosing
/// function of a nested one), minus the `{{closure}}` segments that async bodies add. It is
/// computed once per function. Methods of generic types also get the concrete `Self`, which the
/// nested item's path shows as `Repo<_>`.
pub(crate) fn default_key(args: &[Ident], has_receiver: bool) -> TokenStream {
    let path = quote! {
        {
            static __CACHE_FN_PATH: ::std::sync::OnceLock<::std::string::String> =
                ::std::sync::OnceLock::new();
            __CACHE_FN_PATH.get_or_init(|| {
                fn __cache_fn() {}
                let path = ::core::any::type_name_of_val(&__cache_fn);
                path.strip_suffix("::__cache_fn")
                    .unwrap_or(path)
                    .replace("::{{closure}}", "")
            })
        }
    };
    let path = if has_receiver {
        quote! {
            {
                let __cache_fn_path: &'static str = #path;
                let __cache_self = ::core::any::type_name::<Self>();
                if __cache_self.contains('<') {
                    ::std::borrow::Cow::Owned(::std::format!("{}@{}", __cache_fn_path, __cache_self))
                } else {
                    ::std::borrow::Cow::Borrowed(__cache_fn_path)
                }
            }
        }
    } else {
        quote! { ::std::borrow::Cow::<'static, str>::Borrowed(#path) }
    };
    let tuple = arg_tuple(args);
    quote! {
        {
            // Checks each argument on its own, so a missing `Serialize` is reported at the
            // argument, with what to do about it.
            #[diagnostic::on_unimplemented(
                message = "`{Self}` is part of the default cache key of a `#[cached]` function, so it must implement `serde::Serialize`",
                label = "this argument is not `Serialize`",
                note = "derive `Serialize` for it, leave it out of the key with `skip(...)`, or give the key with `key = \"...\"`"
            )]
            trait __CacheKeyArg {}
            impl<T: ?::core::marker::Sized + ::cache_core::__private::serde::Serialize> __CacheKeyArg for T {}
            fn __cache_key_arg<T: ?::core::marker::Sized + __CacheKeyArg>(arg: &T) -> &T {
                arg
            }
            let __cache_path: ::std::borrow::Cow<'static, str> = #path;
            ::cache_core::__private::default_key(&__cache_path, &#tuple)
        }
    }
}

/// `(&a, &b, ...)`, nested so that no tuple has more than 12 fields (serde implements `Serialize`
/// for tuples of up to 16).
fn arg_tuple(args: &[Ident]) -> TokenStream {
    let refs = args
        .iter()
        .map(|a| quote_spanned! {a.span()=> __cache_key_arg(&#a) })
        .collect();
    nest(refs)
}

fn nest(items: Vec<TokenStream>) -> TokenStream {
    const MAX: usize = 12;
    if items.len() <= MAX {
        return quote! { (#(#items,)*) };
    }
    nest(
        items
            .chunks(MAX)
            .map(|chunk| quote! { (#(#chunk,)*) })
            .collect(),
    )
}

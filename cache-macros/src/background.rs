//! Background mode of `#[cached]` (`refresh`, `xfetch`, `soft_timeout`, `hard_timeout`): a load
//! may outlive the call (an eager refresh, a body finishing after its soft timeout), so the body
//! runs in an owned, `Send + 'static` future. This module builds it:
//!
//! - each `&T` argument is copied with `ToOwned` (a `&str` becomes a `String`) and borrowed back
//!   inside the future under its own name; owned arguments move in;
//! - `&self` is cloned, and `self` in the body (and in `unless`) is renamed to the clone's name,
//!   since a closure cannot rebind `self`.
//!
//! The copies are made only when a load or a refresh runs the body; a hit copies nothing.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{Block, Expr, FnArg, Pat, Signature, Type};

/// The name `self` is renamed to inside a background body.
pub(crate) fn self_name() -> Ident {
    Ident::new("__cache_self", Span::call_site())
}

/// What background mode adds around the body.
pub(crate) struct Owned {
    /// Statements run when a load needs the body: the owned copies (borrowing the arguments).
    pub(crate) copies: TokenStream,
    /// Statements at the start of the owned future: the arguments under their own names.
    pub(crate) rebinds: TokenStream,
}

/// The owned copies and rebindings of `sig`'s arguments and receiver.
pub(crate) fn owned_arguments(sig: &Signature) -> Owned {
    let mut copies = TokenStream::new();
    let mut rebinds = TokenStream::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                let this = self_name();
                copies.extend(quote_spanned! {r.span()=>
                    let __cache_this = ::cache_core::__private::own_receiver(self);
                });
                rebinds.extend(quote! { let #this = &__cache_this; });
            }
            FnArg::Typed(pt) => {
                // Plain names only (checked in `validate`).
                let Pat::Ident(pi) = &*pt.pat else { continue };
                let name = &pi.ident;
                let mutability = &pi.mutability;
                let own = format_ident!("__cache_own_{}", name);
                match &*pt.ty {
                    Type::Reference(r) => {
                        let elem = &r.elem;
                        copies.extend(quote_spanned! {pt.ty.span()=>
                            let #own = ::cache_core::__private::own_arg::<#elem>(#name);
                        });
                        rebinds.extend(quote! {
                            let #mutability #name: &#elem = ::std::borrow::Borrow::borrow(&#own);
                        });
                    }
                    _ => {
                        copies.extend(quote_spanned! {pt.ty.span()=>
                            let #own = ::cache_core::__private::own_value(#name);
                        });
                        rebinds.extend(quote! { let #mutability #name = #own; });
                    }
                }
            }
        }
    }
    Owned { copies, rebinds }
}

/// The signature of the wrapper: arguments without `mut` (the owned future rebinds them with it).
pub(crate) fn wrapper_signature(sig: &Signature) -> Signature {
    let mut sig = sig.clone();
    for input in sig.inputs.iter_mut() {
        if let FnArg::Typed(pt) = input {
            if let Pat::Ident(pi) = &mut *pt.pat {
                pi.mutability = None;
            }
        }
    }
    sig
}

/// `block` with `self` renamed (see the module docs).
pub(crate) fn rename_self_in_block(block: &Block) -> Block {
    let mut block = block.clone();
    RenameSelf.visit_block_mut(&mut block);
    block
}

/// `expr` with `self` renamed.
pub(crate) fn rename_self_in_expr(expr: &Expr) -> Expr {
    let mut expr = expr.clone();
    RenameSelf.visit_expr_mut(&mut expr);
    expr
}

struct RenameSelf;

impl VisitMut for RenameSelf {
    fn visit_expr_path_mut(&mut self, e: &mut syn::ExprPath) {
        if e.qself.is_none() && e.path.leading_colon.is_none() && e.path.segments.len() == 1 {
            let seg = &mut e.path.segments[0];
            if seg.ident == "self" {
                seg.ident = Ident::new("__cache_self", seg.ident.span());
            }
        }
    }

    // Items nested in the body (`fn`, `impl`) have their own `self`.
    fn visit_item_mut(&mut self, _: &mut syn::Item) {}

    // Macro arguments are tokens: rename the `self` that is not the start of a path (`self::x`).
    fn visit_macro_mut(&mut self, m: &mut syn::Macro) {
        m.tokens = rename_self_in_tokens(m.tokens.clone());
    }
}

fn rename_self_in_tokens(tokens: TokenStream) -> TokenStream {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = TokenStream::new();
    for (i, tt) in trees.iter().enumerate() {
        match tt {
            TokenTree::Ident(id) if id == "self" && !starts_path(&trees[i + 1..]) => {
                out.extend(Ident::new("__cache_self", id.span()).into_token_stream());
            }
            TokenTree::Group(g) => {
                let mut ng = Group::new(g.delimiter(), rename_self_in_tokens(g.stream()));
                ng.set_span(g.span());
                out.extend(TokenTree::Group(ng).into_token_stream());
            }
            other => out.extend(other.to_token_stream()),
        }
    }
    out
}

/// Whether the tokens begin with `::`.
fn starts_path(rest: &[TokenTree]) -> bool {
    matches!(rest, [TokenTree::Punct(a), TokenTree::Punct(b), ..] if a.as_char() == ':' && b.as_char() == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> impl Iterator<Item = &str> {
        s.split(|c: char| !c.is_alphanumeric() && c != '_')
    }

    fn renamed(body: &str) -> String {
        let block: Block = syn::parse_str(body).expect("a block");
        rename_self_in_block(&block).to_token_stream().to_string()
    }

    #[test]
    fn self_in_expressions_closures_and_macros_is_renamed() {
        let out = renamed(
            "{ let a = self.db.get(self.id); let f = || self.x; format!(\"{}\", self.name); a }",
        );
        assert!(!words(&out).any(|w| w == "self"), "{out}");
        assert_eq!(
            words(&out).filter(|w| *w == "__cache_self").count(),
            4,
            "{out}"
        );
    }

    #[test]
    fn module_paths_and_nested_items_keep_self() {
        let out = renamed(
            "{ self::helper(); m!(self::X); struct S; impl S { fn f(&self) -> u8 { self.0 } } }",
        );
        assert!(!out.contains("__cache_self"), "{out}");
    }
}

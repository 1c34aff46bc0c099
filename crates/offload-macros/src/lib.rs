//! The `#[task]` attribute of [`offload`](https://docs.rs/offload): turns a
//! plain function into an `offload::proc::Task`. Use it through
//! `offload::proc::task` (feature `macros`).

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::{FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Type, parse_macro_input};

/// Turns `fn name(args) -> Out` into a task type `Name` (the function's
/// name in CamelCase) implementing `offload::proc::Task`, with
/// `NAME = "name"`, `Input` = the argument's type (a tuple for several
/// arguments, `()` for none) and `Output` = the return type. The function
/// itself stays as it was.
///
/// Options: `#[task(name = "other")]` sets `NAME`; `#[task(type = Other)]`
/// names the generated type.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let mut name: Option<LitStr> = None;
    let mut type_name: Option<Ident> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("type") {
            type_name = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("expected `name = \"...\"` or `type = Ident`"))
        }
    });
    if let Err(e) = parser.parse(attr) {
        return e.to_compile_error().into();
    }
    match expand(func, name, type_name) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn camel_case(snake: &str) -> String {
    snake
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

fn expand(
    func: ItemFn,
    name: Option<LitStr>,
    type_name: Option<Ident>,
) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if sig.asyncness.is_some() {
        return Err(syn::Error::new_spanned(
            sig.asyncness,
            "a task runs on a worker's thread: it must be a plain (non-async) fn",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a task cannot be generic",
        ));
    }
    let fn_name = &sig.ident;
    let vis = &func.vis;
    let task_name = name.unwrap_or_else(|| LitStr::new(&fn_name.to_string(), fn_name.span()));
    let type_ident = type_name.unwrap_or_else(|| {
        format_ident!(
            "{}",
            camel_case(fn_name.to_string().trim_start_matches("r#"))
        )
    });
    let mut pats = Vec::new();
    let mut types: Vec<&Type> = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(r, "a task cannot take `self`"));
            }
            FnArg::Typed(t) => {
                let ident = match &*t.pat {
                    Pat::Ident(p) => p.ident.clone(),
                    _ => Ident::new(&format!("arg{i}"), Span::call_site()),
                };
                pats.push(ident);
                types.push(&t.ty);
            }
        }
    }
    let output = match &sig.output {
        ReturnType::Default => quote! { () },
        ReturnType::Type(_, ty) => quote! { #ty },
    };
    let (input_ty, destructure, call_args) = match types.len() {
        0 => (quote! { () }, quote! { let () = input; }, quote! {}),
        1 => {
            let ty = types[0];
            let p = &pats[0];
            (quote! { #ty }, quote! { let #p = input; }, quote! { #p })
        }
        _ => (
            quote! { ( #( #types ),* ) },
            quote! { let ( #( #pats ),* ) = input; },
            quote! { #( #pats ),* },
        ),
    };
    let doc = format!("The task that runs [`{fn_name}`] in a worker process (made by `#[task]`).");
    Ok(quote! {
        #func

        #[doc = #doc]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #type_ident;

        impl ::offload::proc::Task for #type_ident {
            const NAME: &'static str = #task_name;
            type Input = #input_ty;
            type Output = #output;
            fn run(input: Self::Input) -> Self::Output {
                #destructure
                #fn_name(#call_args)
            }
        }
    })
}

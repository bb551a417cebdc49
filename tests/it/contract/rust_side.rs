//! What the hand-written Rust side declares, read from its source with syn:
//! messages and their `#[prost(...)]` fields, enums, and the methods the
//! server routes and the client calls.

use quote::ToTokens;
use syn::{Fields, FnArg, ImplItem, Item, ItemImpl, ItemTrait, ReturnType, TraitItem, Type};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustField {
    pub name: String,
    /// The prost type: `string`, `int64`, `bytes`, `message`, `enumeration=UserRole`, …
    pub kind: String,
    /// `optional`, `repeated`, or empty.
    pub label: String,
    pub tag: u32,
    /// The Rust type's innermost name, for message fields (`User`).
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustMessage {
    pub name: String,
    pub fields: Vec<RustField>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustEnum {
    pub name: String,
    pub variants: Vec<(String, i64)>,
}

/// One RPC as one side of the transport declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustMethod {
    /// The full path, `/package.Service/Method`, from the route or the
    /// client's `method!` macro.
    pub name: String,
    /// The Rust fn name.
    pub fn_name: String,
    pub input: String,
    pub output: String,
    /// Streaming flags as the Rust signature has them.
    pub client_streaming: bool,
    pub server_streaming: bool,
    /// The tonic call the method makes (`unary`, `server_streaming`,
    /// `client_streaming`, `streaming`), which must agree with both.
    pub via: String,
}

fn derives(attrs: &[syn::Attribute], what: &str) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("derive") && a.to_token_stream().to_string().contains(what))
}

/// The innermost type name: `Option<Vec<User>>` → `User`.
fn innermost(ty: &Type) -> String {
    if let Type::Path(path) = ty {
        let last = path.path.segments.last().unwrap();
        if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
            for arg in &args.args {
                match arg {
                    syn::GenericArgument::Type(inner) => return innermost(inner),
                    syn::GenericArgument::AssocType(assoc) => return innermost(&assoc.ty),
                    _ => {}
                }
            }
        }
        return last.ident.to_string();
    }
    if let Type::ImplTrait(imp) = ty {
        for bound in &imp.bounds {
            if let syn::TypeParamBound::Trait(t) = bound {
                let last = t.path.segments.last().unwrap();
                if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                    for arg in &args.args {
                        match arg {
                            syn::GenericArgument::Type(inner) => return innermost(inner),
                            syn::GenericArgument::AssocType(assoc) => return innermost(&assoc.ty),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    ty.to_token_stream().to_string()
}

/// Whether `ty` mentions `name` anywhere (`Streaming`, `IntoStreamingRequest`).
fn mentions(ty: &Type, name: &str) -> bool {
    ty.to_token_stream()
        .to_string()
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|t| t == name)
}

fn parse_prost_attr(attr: &syn::Attribute) -> (String, String, u32) {
    let text = attr.meta.require_list().unwrap().tokens.to_string();
    let mut kind = String::new();
    // `btree_map = "string, string"`: the comma inside the quotes is the
    // map's, so read the map first and drop it from what is split below.
    let mut text = text;
    for map in ["btree_map", "hash_map", "map"] {
        let start = format!("{map} = \"");
        if let Some(at) = text.find(&start)
            && (at == 0 || text[..at].ends_with(' ') || text[..at].ends_with(','))
        {
            let rest = &text[at + start.len()..];
            let end = rest.find('"').unwrap();
            let types: Vec<&str> = rest[..end].split(',').map(str::trim).collect();
            kind = format!("map<{},{}>", types[0], types[1]);
            text = format!("{}{}", &text[..at], &rest[end + 1..]);
            break;
        }
    }
    let mut label = String::new();
    let mut tag = 0;
    for part in text.split(',').map(str::trim) {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_owned())),
            None => (part, None),
        };
        match (key, value) {
            ("tag", Some(v)) => tag = v.parse().unwrap(),
            ("optional" | "repeated", None) => label = key.to_owned(),
            ("enumeration", Some(v)) => kind = format!("enumeration={v}"),
            ("bytes", Some(_)) => kind = "bytes".into(),
            ("", None) => {}
            (k, None) if kind.is_empty() => kind = k.to_owned(),
            _ => {}
        }
    }
    (kind, label, tag)
}

/// Messages and enums declared in `source` (the text of `src/pb.rs`).
pub fn messages_and_enums(source: &str) -> (Vec<RustMessage>, Vec<RustEnum>) {
    let file = syn::parse_file(source).unwrap();
    let mut messages = Vec::new();
    let mut enums = Vec::new();
    for item in &file.items {
        match item {
            Item::Struct(s) if derives(&s.attrs, "Message") => {
                let Fields::Named(named) = &s.fields else {
                    continue;
                };
                let fields = named
                    .named
                    .iter()
                    .filter_map(|f| {
                        let attr = f.attrs.iter().find(|a| a.path().is_ident("prost"))?;
                        let (kind, label, tag) = parse_prost_attr(attr);
                        Some(RustField {
                            name: f.ident.as_ref().unwrap().to_string(),
                            kind,
                            label,
                            tag,
                            type_name: innermost(&f.ty),
                        })
                    })
                    .collect();
                messages.push(RustMessage {
                    name: s.ident.to_string(),
                    fields,
                });
            }
            Item::Enum(e) if derives(&e.attrs, "Enumeration") => {
                let variants = e
                    .variants
                    .iter()
                    .map(|v| {
                        let value = v
                            .discriminant
                            .as_ref()
                            .unwrap()
                            .1
                            .to_token_stream()
                            .to_string();
                        (v.ident.to_string(), value.replace(' ', "").parse().unwrap())
                    })
                    .collect();
                enums.push(RustEnum {
                    name: e.ident.to_string(),
                    variants,
                });
            }
            _ => {}
        }
    }
    (messages, enums)
}

fn response_type(output: &ReturnType) -> Type {
    // Result<Response<T>, Status>
    let ReturnType::Type(_, ty) = output else {
        panic!("a method returns a Result")
    };
    let Type::Path(path) = &**ty else {
        panic!("a method returns a Result")
    };
    let syn::PathArguments::AngleBracketed(args) = &path.path.segments.last().unwrap().arguments
    else {
        panic!("Result<..>")
    };
    let Some(syn::GenericArgument::Type(response)) = args.args.first() else {
        panic!("Result<Response<..>>")
    };
    response.clone()
}

fn request_type(sig: &syn::Signature) -> Type {
    sig.inputs
        .iter()
        .find_map(|arg| match arg {
            FnArg::Typed(typed) => Some((*typed.ty).clone()),
            FnArg::Receiver(_) => None,
        })
        .expect("a method takes a request")
}

/// The server's methods: each route of `call` (path, handler kind, trait
/// method) joined with the trait method's signature, from the text of
/// `src/pb/server.rs`. A route whose trait method is missing has empty types.
pub fn server_methods(source: &str) -> Vec<RustMethod> {
    let file = syn::parse_file(source).unwrap();
    let mut methods = Vec::new();
    let mut routes = Vec::new();
    let mut stream_items: Vec<(String, String)> = Vec::new();
    for item in &file.items {
        if let Item::Trait(ItemTrait { items, .. }) = item {
            for trait_item in items {
                if let TraitItem::Type(assoc) = trait_item {
                    let bounds = assoc.bounds.to_token_stream().to_string();
                    let item = bounds
                        .split("Result <")
                        .nth(1)
                        .unwrap()
                        .split(',')
                        .next()
                        .unwrap()
                        .trim()
                        .to_owned();
                    // An event stream's messages may be sent encoded
                    // already (`pb::Outgoing`): on the wire they are the same.
                    let item = item
                        .strip_prefix("Outgoing <")
                        .and_then(|inner| inner.strip_suffix('>'))
                        .map_or(item.clone(), |inner| inner.trim().to_owned());
                    stream_items.push((assoc.ident.to_string(), item));
                }
            }
            for trait_item in items {
                if let TraitItem::Fn(f) = trait_item {
                    let input = request_type(&f.sig);
                    let output = response_type(&f.sig.output);
                    let out = output.to_token_stream().to_string();
                    let stream = stream_items
                        .iter()
                        .find(|(name, _)| out.contains(&format!("Self :: {name}")));
                    methods.push(RustMethod {
                        name: String::new(),
                        fn_name: f.sig.ident.to_string(),
                        input: innermost(&input),
                        output: stream.map_or_else(|| innermost(&output), |(_, item)| item.clone()),
                        client_streaming: mentions(&input, "Streaming"),
                        server_streaming: stream.is_some(),
                        via: String::new(),
                    });
                }
            }
        }
        if let Item::Impl(ItemImpl { items, trait_, .. }) = item {
            let is_service = trait_
                .as_ref()
                .is_some_and(|(_, p, _)| p.to_token_stream().to_string().contains("Service"));
            if !is_service {
                continue;
            }
            for impl_item in items {
                let ImplItem::Fn(f) = impl_item else { continue };
                if f.sig.ident != "call" {
                    continue;
                }
                // Arms read: Some(Method::Name) => route!(self, req, kind, T::method)
                let body = f.block.to_token_stream().to_string();
                for arm in body.split("Some (Method ::").skip(1) {
                    let name: String = arm
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric())
                        .collect();
                    let Some(route) = arm.split("route !").nth(1) else {
                        continue;
                    };
                    let args: Vec<&str> = route
                        .trim_start_matches([' ', '('])
                        .split(',')
                        .map(str::trim)
                        .collect();
                    let kind = args[2].to_owned();
                    let method: String = args[3]
                        .trim_start_matches("T ::")
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    routes.push((path_of(&name), kind, method));
                }
            }
        }
    }
    routes
        .into_iter()
        .map(|(path, via, fn_name)| {
            let name = path;
            let signature = methods.iter().find(|m| m.fn_name == fn_name);
            RustMethod {
                name,
                via,
                ..signature.cloned().unwrap_or(RustMethod {
                    name: String::new(),
                    fn_name,
                    input: String::new(),
                    output: String::new(),
                    client_streaming: false,
                    server_streaming: false,
                    via: String::new(),
                })
            }
        })
        .collect()
}

/// The path a `Method` variant is served at: its row in `pb::METHODS`, or
/// for a variant the table lacks, the path it would have there.
fn path_of(variant: &str) -> String {
    usersvc::pb::METHODS
        .iter()
        .find(|m| m.name == variant)
        .map_or_else(
            || format!("/{}/{variant}", usersvc::pb::SERVICE_NAME),
            |m| m.path.to_owned(),
        )
}

/// The client's RPC methods, from the text of `src/pb/client.rs`.
pub fn client_methods(source: &str) -> Vec<RustMethod> {
    let file = syn::parse_file(source).unwrap();
    let mut methods = Vec::new();
    for item in &file.items {
        let Item::Impl(imp) = item else { continue };
        for impl_item in &imp.items {
            let ImplItem::Fn(f) = impl_item else { continue };
            let body = f.block.to_token_stream().to_string();
            // Each call names its method: self.prepare(Method::Name, …).
            let Some(name) = body.split("prepare (Method ::").nth(1) else {
                continue;
            };
            let name: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            let name = path_of(&name);
            let via = ["server_streaming", "client_streaming", "streaming", "unary"]
                .into_iter()
                .find(|kind| body.contains(&format!(". {kind} (")))
                .unwrap_or("none");
            let input = request_type(&f.sig);
            let output = response_type(&f.sig.output);
            methods.push(RustMethod {
                name,
                fn_name: f.sig.ident.to_string(),
                input: innermost(&input),
                output: innermost(&output),
                client_streaming: mentions(&input, "IntoStreamingRequest"),
                server_streaming: mentions(&output, "Streaming"),
                via: via.to_owned(),
            });
        }
    }
    methods
}

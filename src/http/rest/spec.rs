//! The OpenAPI description of one REST version's routes, next to the route table it
//! describes (`mod.rs`): the schemas come from the types the handlers serialise and
//! deserialise (`#[derive(ToSchema)]`), so a field added to a view is in the spec at once.
//! `tests/api/openapi.rs` fails when a route in the code has no entry here or the reverse.

use utoipa::{
    PartialSchema,
    openapi::{
        Content, HttpMethod, PathItem, PathsBuilder, Ref, RefOr, Required, ResponseBuilder, Schema,
        path::{OperationBuilder, Parameter, ParameterBuilder, ParameterIn},
        request_body::RequestBodyBuilder,
        schema::{ArrayBuilder, ObjectBuilder, Type},
        security::SecurityRequirement,
    },
};

use super::{
    Version, api_keys, auth, posts, users,
    views::{ApiKeyView, CreatedApiKeyView, PostView, UserView},
};

/// The named schemas of version `V` (`UserV1`, `PostListV2`, ...).
pub(crate) fn schemas<V: Version>() -> Vec<(String, RefOr<Schema>)> {
    let n = V::NAME;
    let list = |item: &str| V::list_schema(Ref::from_schema_name(format!("{item}{n}")).into());
    vec![
        (format!("User{n}"), V::shape(UserView::<V::Id>::schema())),
        (format!("Post{n}"), V::shape(PostView::<V::Id>::schema())),
        (format!("ApiKey{n}"), ApiKeyView::<V::Id>::schema()),
        (
            format!("CreatedApiKey{n}"),
            CreatedApiKeyView::<V::Id>::schema(),
        ),
        (format!("UserList{n}"), list("User")),
        (format!("PostList{n}"), list("Post")),
        (format!("ApiKeyList{n}"), list("ApiKey")),
    ]
}

/// The request bodies, shared by both versions.
pub(crate) fn body_schemas() -> Vec<(String, RefOr<Schema>)> {
    vec![
        ("Registration".into(), auth::RegisterBody::schema()),
        ("Login".into(), auth::LoginBody::schema()),
        ("NewApiKey".into(), api_keys::CreateBody::schema()),
        ("UserChange".into(), users::UpdateBody::schema()),
        ("NewPost".into(), posts::CreateBody::schema()),
        ("PostChange".into(), posts::UpdateBody::schema()),
    ]
}

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anyone,
    /// An access token or an API key.
    Authenticated,
    /// An access token only (managing API keys).
    TokenOnly,
}

/// One operation of the route table.
struct Op {
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    caller: Caller,
    params: Vec<Parameter>,
    body: Option<&'static str>,
    /// Status and, unless empty, the schema of the success answer.
    ok: (u16, Option<String>),
}

/// Every operation of version `V`, under its prefix.
pub(crate) fn paths<V: Version>(mut paths: PathsBuilder) -> PathsBuilder {
    let n = V::NAME;
    let id = || path_id();
    let ops = [
        Op {
            method: HttpMethod::Post,
            path: "/auth/register",
            summary: "Register: 201 with the user; 409 when the email is taken",
            caller: Caller::Anyone,
            params: vec![],
            body: Some("Registration"),
            ok: (201, Some(format!("User{n}"))),
        },
        Op {
            method: HttpMethod::Post,
            path: "/auth/login",
            summary: "Log in: an access token; 401 for an unknown email or a wrong password alike",
            caller: Caller::Anyone,
            params: vec![],
            body: Some("Login"),
            ok: (200, Some("AccessToken".into())),
        },
        Op {
            method: HttpMethod::Get,
            path: "/api-keys",
            summary: "The caller's live API keys, never their secrets",
            caller: Caller::TokenOnly,
            params: vec![],
            body: None,
            ok: (200, Some(format!("ApiKeyList{n}"))),
        },
        Op {
            method: HttpMethod::Post,
            path: "/api-keys",
            summary: "Create an API key: the key is in this answer and never again",
            caller: Caller::TokenOnly,
            params: vec![],
            body: Some("NewApiKey"),
            ok: (201, Some(format!("CreatedApiKey{n}"))),
        },
        Op {
            method: HttpMethod::Delete,
            path: "/api-keys/{id}",
            summary: "Revoke one of the caller's API keys",
            caller: Caller::TokenOnly,
            params: vec![id()],
            body: None,
            ok: (204, None),
        },
        Op {
            method: HttpMethod::Get,
            path: "/users",
            summary: "Users in id order across shards",
            caller: Caller::Anyone,
            params: V::list_params(true),
            body: None,
            ok: (200, Some(format!("UserList{n}"))),
        },
        Op {
            method: HttpMethod::Get,
            path: "/users/{id}",
            summary: "One user; the email only for the user themself",
            caller: Caller::Anyone,
            params: [vec![id()], V::show_params(true)].concat(),
            body: None,
            ok: (200, Some(format!("User{n}"))),
        },
        Op {
            method: HttpMethod::Patch,
            path: "/users/{id}",
            summary: "Change the caller's own name, email or password",
            caller: Caller::Authenticated,
            params: vec![id()],
            body: Some("UserChange"),
            ok: (200, Some(format!("User{n}"))),
        },
        Op {
            method: HttpMethod::Delete,
            path: "/users/{id}",
            summary: "Delete the caller's own account and their posts",
            caller: Caller::Authenticated,
            params: vec![id()],
            body: None,
            ok: (204, None),
        },
        Op {
            method: HttpMethod::Get,
            path: "/users/{id}/posts",
            summary: "A user's posts, newest first",
            caller: Caller::Anyone,
            params: [vec![id()], V::list_params(false)].concat(),
            body: None,
            ok: (200, Some(format!("PostList{n}"))),
        },
        Op {
            method: HttpMethod::Get,
            path: "/posts",
            summary: "Every shard's posts, newest first",
            caller: Caller::Anyone,
            params: V::list_params(false),
            body: None,
            ok: (200, Some(format!("PostList{n}"))),
        },
        Op {
            method: HttpMethod::Post,
            path: "/posts",
            summary: "Write a post, on its author's shard",
            caller: Caller::Authenticated,
            params: vec![],
            body: Some("NewPost"),
            ok: (201, Some(format!("Post{n}"))),
        },
        Op {
            method: HttpMethod::Get,
            path: "/posts/{id}",
            summary: "One post",
            caller: Caller::Anyone,
            params: [vec![id()], V::show_params(false)].concat(),
            body: None,
            ok: (200, Some(format!("Post{n}"))),
        },
        Op {
            method: HttpMethod::Patch,
            path: "/posts/{id}",
            summary: "Change the title or body of the caller's own post",
            caller: Caller::Authenticated,
            params: vec![id()],
            body: Some("PostChange"),
            ok: (200, Some(format!("Post{n}"))),
        },
        Op {
            method: HttpMethod::Delete,
            path: "/posts/{id}",
            summary: "Delete the caller's own post",
            caller: Caller::Authenticated,
            params: vec![id()],
            body: None,
            ok: (204, None),
        },
    ];
    for op in ops {
        let path = format!("{}{}", V::PREFIX, op.path);
        paths = paths.path(path, PathItem::new(op.method.clone(), operation::<V>(op)));
    }
    paths
}

fn operation<V: Version>(op: Op) -> utoipa::openapi::path::Operation {
    let (status, schema) = op.ok;
    let mut ok = ResponseBuilder::new().description("Success");
    if let Some(schema) = schema {
        ok = ok.content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(schema))),
        );
    }
    let mut builder = OperationBuilder::new()
        .summary(Some(op.summary))
        .tag(V::NAME.to_lowercase())
        .parameters(Some(op.params))
        .response(status.to_string(), ok)
        .response("default", problem());
    if op.method == HttpMethod::Get && op.path.ends_with("{id}") {
        builder = builder.response(
            "304",
            ResponseBuilder::new().description("Not modified: the `If-None-Match` ETag is current"),
        );
    }
    if op.method == HttpMethod::Post {
        builder = builder.parameter(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Run this POST once: a retry with the same key and body gets the first \
                     answer back (`Idempotent-Replayed: true`) for 24 h; another body is a 422, \
                     a retry while the first still runs a 409",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[!-~]+$")),
                )),
        );
    }
    if let Some(body) = op.body {
        builder = builder.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name(body))),
                )
                .build(),
        ));
    }
    let security = match op.caller {
        Caller::Anyone => None,
        Caller::Authenticated => Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("apiKey", Vec::<String>::new()),
        ]),
        Caller::TokenOnly => Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]),
    };
    builder.securities(security).build()
}

/// Every error, whatever its status: RFC 9457 problem details.
fn problem() -> ResponseBuilder {
    ResponseBuilder::new()
        .description("A problem: 4xx for what the client can fix, 5xx only for what it cannot")
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
}

fn path_id() -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Int64,
                )))
                .minimum(Some(1)),
        ))
        .build()
}

/// A query parameter of `schema`.
pub(super) fn query(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// `?limit`, 1 to the configured page size.
pub(super) fn limit() -> Parameter {
    query(
        "limit",
        "Page size, 1 to 100 (20 when absent)",
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(100)),
    )
}

/// A string query parameter.
pub(super) fn text(name: &str, description: &str) -> Parameter {
    query(
        name,
        description,
        ObjectBuilder::new().schema_type(Type::String),
    )
}

/// v1 lists: an array of `item`.
pub(super) fn array_of(item: RefOr<Schema>) -> RefOr<Schema> {
    ArrayBuilder::new().items(item).into()
}

/// The token login answers with (kept here: the auth layer knows nothing of OpenAPI).
pub(crate) fn access_token_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .property("access_token", String::schema())
        .property("token_type", String::schema())
        .property(
            "expires_in",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .required("access_token")
        .required("token_type")
        .required("expires_in")
        .into()
}

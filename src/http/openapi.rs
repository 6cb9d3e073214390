//! The OpenAPI 3.1 description of REST v1 and v2 at `/openapi.json`, and a docs page at
//! `/docs` that works with no internet.
//!
//! The description is generated from the code: each version's operations come from
//! `rest/spec.rs`, beside the route table, and every schema from the types the handlers
//! serialise and deserialise (`#[derive(ToSchema)]`). It is built once at start-up and served
//! as bytes. `tests/api/openapi.rs` checks it against the routes the code mounts, and the
//! schema-driven test runs schemathesis against it.
//!
//! The docs page is Swagger UI, on assets compiled into the binary (`assets.rs`), so it
//! works with no internet.

use axum::{
    Router,
    body::Bytes,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use utoipa::openapi::{
    ComponentsBuilder, Content, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, ResponseBuilder, Tag,
    path::OperationBuilder,
    security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::rest::{self, spec, v1::V1, v2::V2};
use crate::{
    AppState,
    error::{field_error_schema, problem_schema},
};

/// The whole description.
pub fn document() -> OpenApi {
    let mut schemas = spec::body_schemas();
    schemas.extend(spec::schemas::<V1>());
    schemas.extend(spec::schemas::<V2>());
    schemas.push(("Problem".into(), problem_schema()));
    schemas.push(("FieldError".into(), field_error_schema()));
    schemas.push(("AccessToken".into(), spec::access_token_schema()));
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from `POST /v2/auth/login`"))
                    .build(),
            ),
        )
        .security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "An API key from `POST /v2/api-keys` (`Authorization: ApiKey <key>` works too)",
            ))),
        )
        .build();
    let paths = rest::spec::paths::<V2>(rest::spec::paths::<V1>(PathsBuilder::new()));
    let paths = probes(paths);
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("scalable-api")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Users and posts over sharded Postgres with read replicas and a Redis \
                     cache. v2 is current; v1 is kept for existing clients (integer ids, \
                     offset pages). Errors are RFC 9457 problem details. GraphQL is at \
                     `/graphql` and describes itself.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some([
            tag("v2", "REST v2: string ids, cursor pages, include, fields"),
            tag("v1", "REST v1: integer ids, offset pages"),
            tag(
                "probes",
                "Liveness and readiness, for load balancers and orchestrators",
            ),
        ]))
        .build()
}

fn tag(name: &str, description: &str) -> Tag {
    let mut tag = Tag::new(name);
    tag.description = Some(description.to_owned());
    tag
}

/// `/healthz` and `/readyz`: part of the HTTP surface a client (a load balancer) relies on.
fn probes(paths: PathsBuilder) -> PathsBuilder {
    let probe = |summary: &str, codes: &[(&str, &str)]| {
        let mut op = OperationBuilder::new().summary(Some(summary)).tag("probes");
        for (code, description) in codes {
            op = op.response(
                *code,
                ResponseBuilder::new().description(*description).content(
                    "application/json",
                    Content::new(Some(utoipa::openapi::schema::Object::new())),
                ),
            );
        }
        op.build()
    };
    paths
        .path(
            "/healthz",
            PathItem::new(
                HttpMethod::Get,
                probe(
                    "Liveness: the process answers (no I/O)",
                    &[("200", "Alive")],
                ),
            ),
        )
        .path(
            "/readyz",
            PathItem::new(
                HttpMethod::Get,
                probe(
                    "Readiness, with every dependency's state",
                    &[
                        ("200", "Ready, or degraded but serving"),
                        ("503", "Nothing can be served"),
                    ],
                ),
            ),
        )
}

/// `/openapi.json` and `/docs`.
pub fn router() -> Router<AppState> {
    // Shared bytes: each answer is a reference count, not a copy of the document.
    let json: Bytes = match document().to_json() {
        Ok(json) => json.into(),
        // Serialising a document built in code cannot fail on input; if it ever does, say
        // so at the route rather than stop the service.
        Err(err) => {
            tracing::error!(error = %err, "the OpenAPI document does not serialise");
            Bytes::from_static(b"{}")
        }
    };
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move { asset("application/json", json) }
            }),
        )
        .route("/docs", get(docs_page))
}

fn asset(content_type: &'static str, body: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // The same bytes for the life of the binary; revalidated after a day.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn docs_page() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>scalable-api: REST v1 and v2</title>
  <link rel="stylesheet" href="/assets/swagger-ui/swagger-ui.css">
</head>
<body>
  <div id="docs"></div>
  <script src="/assets/swagger-ui/swagger-ui-bundle.js"></script>
  <script>
    SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#docs",
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      // No call to the public validator service: the page works offline and sends the
      // description nowhere.
      validatorUrl: null,
      tryItOutEnabled: true,
    });
  </script>
</body>
</html>
"##;

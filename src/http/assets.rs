//! The browser pages' scripts and stylesheets, compiled into the binary: Swagger UI for
//! `/docs`, GraphiQL (with the React it runs on) for `GET /graphql`.
//!
//! Why vendored and not loaded from a CDN: an API template is often run where there is no
//! internet (a laptop on a train, a locked-down CI runner), and a page that loads its code
//! from a CDN is then blank; a CDN also sees every developer who opens the page. The cost is
//! about 3.4 MB of binary (and of the repository, under `assets/vendor/`, each with its
//! licence). `scripts/vendor-assets` fetches the pinned versions again from npm.
//!
//! Served outside the rate limits (like the probes): the same bytes for the life of the
//! binary, cached by browsers for a day.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::IntoResponse,
    routing::get,
};

use crate::AppState;

/// (path, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/assets/swagger-ui/swagger-ui-bundle.js",
        "text/javascript",
        include_bytes!("../../assets/vendor/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "/assets/swagger-ui/swagger-ui.css",
        "text/css",
        include_bytes!("../../assets/vendor/swagger-ui/swagger-ui.css"),
    ),
    (
        "/assets/graphiql/graphiql.min.js",
        "text/javascript",
        include_bytes!("../../assets/vendor/graphiql/graphiql.min.js"),
    ),
    (
        "/assets/graphiql/graphiql.min.css",
        "text/css",
        include_bytes!("../../assets/vendor/graphiql/graphiql.min.css"),
    ),
    (
        "/assets/react/react.production.min.js",
        "text/javascript",
        include_bytes!("../../assets/vendor/react/react.production.min.js"),
    ),
    (
        "/assets/react/react-dom.production.min.js",
        "text/javascript",
        include_bytes!("../../assets/vendor/react/react-dom.production.min.js"),
    ),
];

pub fn router() -> Router<AppState> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, bytes)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                            (
                                header::CACHE_CONTROL,
                                HeaderValue::from_static("public, max-age=86400"),
                            ),
                        ],
                        bytes,
                    )
                        .into_response()
                }),
            )
        })
}

/// The GraphiQL page, on the vendored assets (`GET /graphql`).
pub const GRAPHIQL_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>scalable-api: GraphiQL</title>
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
  <link rel="stylesheet" href="/assets/graphiql/graphiql.min.css">
</head>
<body>
  <div id="graphiql">Loading GraphiQL...</div>
  <script src="/assets/react/react.production.min.js"></script>
  <script src="/assets/react/react-dom.production.min.js"></script>
  <script src="/assets/graphiql/graphiql.min.js"></script>
  <script>
    const fetcher = GraphiQL.createFetcher({ url: "/graphql" });
    ReactDOM.createRoot(document.getElementById("graphiql"))
      .render(React.createElement(GraphiQL, { fetcher }));
  </script>
</body>
</html>
"##;

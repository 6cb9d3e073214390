//! `/graphql`: POST runs a query or mutation, GET serves the GraphiQL page (in the dev
//! profile, or as `graphql.graphiql` says; a 404 otherwise).
//!
//! The transport is a few lines on purpose: the schema, loaders and limits are in
//! `src/graphql/`. What is decided here is what a GraphQL request is over HTTP:
//!
//! - the body goes through the same JSON extractor as REST, so `http.body_limit_bytes` bounds
//!   it (async-graphql-axum's own extractor streams the body past axum's limit), and one
//!   operation per request: a batch (a JSON array) would multiply the cost past the per-query
//!   limits;
//! - the credentials (access token or API key) are read by the same extractor as REST; bad
//!   ones are refused, not treated as anonymous;
//! - errors before execution (bad JSON, a bad token, a body too large) keep their HTTP status
//!   but come as a GraphQL `errors` array with `extensions.code`, which GraphQL clients read;
//!   everything after (parse, validation, limits, resolver errors) is a 200 with `errors`;
//! - except the rate limit: the query's cost is charged after validation
//!   (`src/graphql/charge.rs`), and a refused charge is a 429 (or a 503 for a login while the
//!   limiter is unavailable), like a refused REST request, with a GraphQL `errors` body;
//! - the answer is serialised here rather than by async-graphql-axum's responder, to time it
//!   (the `ser` entry of `Server-Timing`).

use std::{sync::Arc, time::Instant};

use async_graphql::{Request, ServerError};
use async_graphql_axum::GraphQLResponse;
use axum::{
    Extension, Router,
    body::Body,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};

use crate::{
    AppState,
    auth::Principal,
    db::Session,
    error::{Error, InternalErrorReport},
    graphql::{ApiSchema, RequestData, build_schema, planned::Rendered},
    http::{client::ClientAddr, extract::Json},
    telemetry::Phase,
    traffic::GraphqlCharge,
};

pub fn router(app: &AppState) -> Router<AppState> {
    let schema = build_schema(&app.config);
    // Without GraphiQL, `GET /graphql` is a 404 like any unknown page, not a 405 that would
    // confirm a GraphQL endpoint to a scanner probing with GET.
    let page = if app.config.graphiql() {
        get(graphiql)
    } else {
        get(|| async { Error::NotFound("no route matches this path") })
    };
    Router::new().route(
        "/graphql",
        page.post(
            move |State(app): State<AppState>,
                  session: Session,
                  ClientAddr(client): ClientAddr,
                  charge: Option<Extension<GraphqlCharge>>,
                  principal: Result<Principal, Error>,
                  body: Result<Json<Request>, Error>| {
                let charge = charge.map(|Extension(charge)| charge);
                execute(
                    schema.clone(),
                    app,
                    session,
                    client,
                    charge,
                    principal,
                    body,
                )
            },
        ),
    )
}

/// Runs one GraphQL request with its own [`RequestData`] (principal, session, DataLoaders)
/// and, when the route is rate limited, its [`GraphqlCharge`].
async fn execute(
    schema: ApiSchema,
    app: AppState,
    session: Session,
    client: std::net::IpAddr,
    charge: Option<GraphqlCharge>,
    principal: Result<Principal, Error>,
    body: Result<Json<Request>, Error>,
) -> Response {
    let (principal, request) = match (principal, body) {
        (Ok(principal), Ok(Json(request))) => (principal, request),
        (Err(err), _) | (_, Err(err)) => {
            return match charge_minimum(&app, charge.as_ref()).await {
                Some(refusal) => transport_error(refusal),
                None => transport_error(err),
            };
        }
    };
    let rendered = Rendered::default();
    let mut request = request.data(
        RequestData::new(app.clone(), session.clone(), principal, client)
            .with_rendered(rendered.clone()),
    );
    if let Some(charge) = &charge {
        request = request.data(charge.clone());
    }
    let response = schema.execute(request).await;
    if let Some(refusal) = charge_minimum(&app, charge.as_ref()).await {
        return transport_error(refusal);
    }
    // Internal errors reach the client as a generic message; their chain rides in the error's
    // source, and goes to the logging middleware like a REST 500's.
    let internal: Vec<&str> = response
        .errors
        .iter()
        .filter_map(|err| err.source::<InternalErrorReport>())
        .map(|report| &*report.0)
        .collect();
    let report = (!internal.is_empty()).then(|| InternalErrorReport(internal.join("; ").into()));
    // The planned executor wrote the answer already (and timed it).
    let body = match Arc::try_unwrap(rendered) {
        Ok(slot) => slot.into_inner(),
        // Something still holds the request's data: copy rather than wait for it.
        Err(shared) => shared.get().cloned(),
    };
    if let Some(body) = body {
        return graphql_response(&response, body);
    }
    let start = Instant::now();
    let body = serde_json::to_vec(&response);
    session.timing().record(Phase::Serialize, start.elapsed());
    let mut http = match body {
        Ok(body) => graphql_response(&response, body),
        Err(err) => return transport_error(Error::Internal(err.into())),
    };
    if let Some(report) = report {
        http.extensions_mut().insert(report);
    }
    http
}

/// What async-graphql-axum's responder sends, around a body serialised already: the GraphQL
/// media type, the schema's cache hints when there were no errors, and any headers a
/// resolver set.
fn graphql_response(response: &async_graphql::Response, body: Vec<u8>) -> Response {
    let mut http = Response::new(Body::from(body));
    let headers = http.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql-response+json"),
    );
    if response.is_ok()
        && let Some(cache_control) = response.cache_control.value()
        && let Ok(value) = HeaderValue::from_str(&cache_control)
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.extend(response.http_headers.clone());
    http
}

/// The charge's refusal, if it was refused; a request that was never charged (it failed
/// before validation) is charged one unit first.
async fn charge_minimum(app: &AppState, charge: Option<&GraphqlCharge>) -> Option<Error> {
    let charge = charge?;
    let verdict = match charge.verdict() {
        Some(verdict) => verdict,
        None => charge.settle(&app.limits, &app.limiter, 1).await,
    };
    verdict.error()
}

/// A request that never reached the schema, as a GraphQL response with the error's status.
/// Malformed bodies are 400 (the GraphQL-over-HTTP spec's answer), not REST's 422.
pub(super) fn transport_error(err: Error) -> Response {
    let status = match &err {
        Error::InvalidBody(_) => StatusCode::BAD_REQUEST,
        other => other.status(),
    };
    let mut headers = axum::http::HeaderMap::new();
    err.add_headers(&mut headers);
    let report = err.internal_report();
    let error = async_graphql::Error::from(err);
    let mut error_at_no_location = ServerError::new(error.message, None);
    error_at_no_location.extensions = error.extensions;
    let mut response = (
        status,
        headers,
        GraphQLResponse::from(async_graphql::Response::from_errors(vec![
            error_at_no_location,
        ])),
    )
        .into_response();
    if let Some(report) = report {
        response.extensions_mut().insert(report);
    }
    response
}

/// The GraphiQL IDE, to try queries in a browser, on assets served by this service (no CDN).
async fn graphiql() -> Html<&'static str> {
    Html(super::assets::GRAPHIQL_PAGE)
}

//! The one error type of the API, rendered as `application/problem+json` (RFC 9457).
//!
//! Handlers return `Result<T>` and use `?`; every failure becomes one of these variants, and
//! only here does it turn into a status code and a body. That keeps the contract in one place:
//! each variant has a stable `type` URI that clients can switch on, and a 5xx body never
//! carries internal text (a database message can leak schema, hostnames or data; it is logged
//! instead).
//!
//! The same variants also become GraphQL errors (`impl From<Error> for async_graphql::Error`):
//! a stable `extensions.code` per meaning, so a client of either API switches on the same
//! vocabulary. The GraphQL crate's `custom-error-conversion` feature is on, which removes its
//! blanket "anything `Display` becomes an error message" conversion: without it a `?` on a
//! database error in a resolver would send the driver's text to the client. Now only this
//! mapping turns an error into a GraphQL error.

use std::{sync::Arc, time::Duration};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Base of the stable problem `type` URIs; each problem appends its slug.
pub const PROBLEM_BASE: &str = "https://scalable-api.dev/problems/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: bad JSON syntax, a bad path or query parameter.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body parsed but is not acceptable: wrong types, unknown or missing fields.
    #[error("invalid body: {0}")]
    InvalidBody(String),
    /// Fields that failed domain validation, each with its own message.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("payload too large")]
    PayloadTooLarge,
    /// Missing, malformed, expired or wrongly signed credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `Accept` names only representations this API does not serve (a REST version it does
    /// not offer); the detail names the ones on offer.
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// An `Idempotency-Key` sent again with another request (method, path or body): the key
    /// names one request, and this is not it.
    #[error("idempotency key reused for another request")]
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still running; retry after it ends.
    #[error("idempotency key in use")]
    IdempotencyKeyInUse,
    /// A limit on this kind of request was reached; the same request passes after
    /// `retry_after`.
    #[error("too many requests: {detail}")]
    TooManyRequests {
        detail: &'static str,
        retry_after: Duration,
    },
    /// A dependency (a shard, the directory) cannot serve now; the client may retry later.
    #[error("unavailable: {detail}")]
    Unavailable {
        detail: &'static str,
        retry_after: Duration,
    },
    /// Anything else. Logged with its chain; the client sees only a generic 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The RFC 9457 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

/// A field error's schema (the problem body refers to it by name).
pub(crate) fn field_error_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    <FieldError as utoipa::PartialSchema>::schema()
}

/// The problem body's schema, for the OpenAPI description.
pub(crate) fn problem_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    <Problem as utoipa::PartialSchema>::schema()
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::InvalidBody(_) | Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::Conflict(_) | Error::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable slug of the problem type; also the GraphQL `extensions.code` family.
    pub fn slug(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad-request",
            Error::InvalidBody(_) => "invalid-body",
            Error::Validation(_) => "validation",
            Error::UnsupportedMediaType(_) => "unsupported-media-type",
            Error::PayloadTooLarge => "payload-too-large",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not-found",
            Error::MethodNotAllowed => "method-not-allowed",
            Error::NotAcceptable(_) => "not-acceptable",
            Error::Conflict(_) => "conflict",
            Error::IdempotencyKeyReused => "idempotency-key-reused",
            Error::IdempotencyKeyInUse => "idempotency-key-in-use",
            Error::TooManyRequests { .. } => "too-many-requests",
            Error::Unavailable { .. } => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The GraphQL `extensions.code` of this error: the same meaning as [`Error::slug`], in the
    /// vocabulary GraphQL clients know (Apollo's codes where one exists).
    pub fn graphql_code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::InvalidBody(_) | Error::Validation(_) => "BAD_USER_INPUT",
            // Transport-level: the HTTP request itself is unusable.
            Error::UnsupportedMediaType(_)
            | Error::PayloadTooLarge
            | Error::MethodNotAllowed
            | Error::NotAcceptable(_) => "BAD_REQUEST",
            Error::Unauthorized(_) => "UNAUTHENTICATED",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::NotFound(_) => "NOT_FOUND",
            Error::Conflict(_) | Error::IdempotencyKeyInUse => "CONFLICT",
            Error::IdempotencyKeyReused => "BAD_USER_INPUT",
            Error::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Error::Unavailable { .. } => "UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "Bad request",
            Error::InvalidBody(_) => "The request body is not acceptable",
            Error::Validation(_) => "Some fields are invalid",
            Error::UnsupportedMediaType(_) => "Unsupported media type",
            Error::PayloadTooLarge => "The request body is too large",
            Error::Unauthorized(_) => "Authentication required",
            Error::Forbidden(_) => "Not allowed",
            Error::NotFound(_) => "Not found",
            Error::MethodNotAllowed => "Method not allowed",
            Error::NotAcceptable(_) => "Not acceptable",
            Error::Conflict(_) => "Conflict",
            Error::IdempotencyKeyReused => "The idempotency key was used for another request",
            Error::IdempotencyKeyInUse => "A request with this idempotency key is in progress",
            Error::TooManyRequests { .. } => "Too many requests",
            Error::Unavailable { .. } => "Temporarily unavailable",
            Error::Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Error::BadRequest(d)
            | Error::InvalidBody(d)
            | Error::UnsupportedMediaType(d)
            | Error::NotAcceptable(d) => d.clone(),
            Error::Validation(_) => "see `errors` for each invalid field".into(),
            Error::PayloadTooLarge => "the body exceeds the configured limit".into(),
            Error::Unauthorized(d)
            | Error::Forbidden(d)
            | Error::NotFound(d)
            | Error::Conflict(d) => (*d).into(),
            Error::MethodNotAllowed => "this route does not accept that method".into(),
            Error::IdempotencyKeyReused => {
                "this Idempotency-Key was first sent with another method, path or body; a key names one request: send a new key for a new request".into()
            }
            Error::IdempotencyKeyInUse => {
                "the first request with this Idempotency-Key has not finished; retry after Retry-After to get its answer".into()
            }
            Error::Unavailable { detail, .. } | Error::TooManyRequests { detail, .. } => {
                (*detail).into()
            }
            Error::Internal(_) => "the server failed to handle this request".into(),
        }
    }

    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, message)])
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}{}", self.slug()),
            title: self.title(),
            status: status.as_u16(),
            detail: self.detail(),
            errors: match &self {
                Error::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        self.add_headers(response.headers_mut());
        if let Some(report) = self.internal_report() {
            // Not logged here (a conversion has no side effects): the chain rides in the
            // response extensions and `http::log_internal_errors` logs it with the request.
            response.extensions_mut().insert(report);
        }
        response
    }
}

impl Error {
    /// The headers that go with this error whatever the body's format: `WWW-Authenticate` on
    /// 401, `Retry-After` on 429, 503 and an idempotency key in use.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        match self {
            Error::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::Unavailable { retry_after, .. } | Error::TooManyRequests { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            Error::IdempotencyKeyInUse => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
    }

    /// The full chain of an internal error, for the log; `None` for every client error.
    pub fn internal_report(&self) -> Option<InternalErrorReport> {
        match self {
            Error::Internal(err) => Some(InternalErrorReport(Arc::from(format!("{err:#}")))),
            _ => None,
        }
    }
}

/// The text of an internal error, for the logging middleware; never sent to the client.
#[derive(Debug, Clone)]
pub struct InternalErrorReport(pub Arc<str>);

/// A GraphQL error: `message` is the problem's detail (for validation, every field's message),
/// `extensions` carry `code` ([`Error::graphql_code`]), the problem `type` URI, and where they
/// apply the per-field `errors` and `retryAfter` (seconds). An internal error's chain rides in
/// `source`, which is never serialised: the HTTP handler hands it to the logging middleware.
impl From<Error> for async_graphql::Error {
    fn from(err: Error) -> Self {
        let message = match &err {
            Error::Validation(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect();
                format!("some fields are invalid: {}", fields.join("; "))
            }
            other => other.detail(),
        };
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", err.graphql_code());
        extensions.set("type", format!("{PROBLEM_BASE}{}", err.slug()));
        match &err {
            Error::Validation(fields) => {
                let fields: Vec<async_graphql::Value> = fields
                    .iter()
                    .map(|f| {
                        let mut map = async_graphql::indexmap::IndexMap::new();
                        map.insert(async_graphql::Name::new("field"), f.field.into());
                        map.insert(
                            async_graphql::Name::new("message"),
                            f.message.clone().into(),
                        );
                        async_graphql::Value::Object(map)
                    })
                    .collect();
                extensions.set("errors", fields);
            }
            Error::Unavailable { retry_after, .. } | Error::TooManyRequests { retry_after, .. } => {
                extensions.set("retryAfter", retry_after.as_secs().max(1));
            }
            _ => {}
        }
        async_graphql::Error {
            message,
            source: err
                .internal_report()
                .map(|report| Arc::new(report) as Arc<dyn std::any::Any + Send + Sync>),
            extensions: Some(extensions),
        }
    }
}

//! Extractors whose rejections are problem+json, never axum's plain-text defaults.

use axum::{
    extract::{FromRequest, FromRequestParts, Path, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, de::DeserializeOwned};

use crate::{AppState, config::ApiConfig, db, domain, error::Error};

/// JSON in (with problem+json rejections) and out.
///
/// Syntax errors are 400; a body that parses but has wrong types, missing or unknown fields
/// (request types use `deny_unknown_fields`) is 422; a missing `Content-Type: application/json`
/// is 415; a body past the limit is 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonSyntaxError(err) => Error::BadRequest(err.body_text()),
        JsonRejection::JsonDataError(err) => Error::InvalidBody(err.body_text()),
        JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ),
        rejection if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
        rejection => Error::BadRequest(rejection.body_text()),
    }
}

/// Serialised here, timed as the `ser` entry of the request's `Server-Timing` (through the
/// session middleware's task-local: a response has no session).
impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let start = std::time::Instant::now();
        let response = axum::Json(self.0).into_response();
        super::session::record_serialization(start.elapsed());
        response
    }
}

/// Query parameters; a parameter that is unknown or of the wrong type is a 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| Error::BadRequest(rejection.body_text()))
    }
}

/// A resource id from the path, parsed by [`domain::parse_id`] (a positive integer, else 400).
#[derive(Debug, Clone, Copy)]
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
        domain::parse_id(&raw).map(Id)
    }
}

/// `?limit&offset` offset pagination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Default page size when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 20;

impl PageParams {
    /// Checks the bounds of `api`; out-of-range values are a 400 that names the bound.
    pub fn page(&self, api: &ApiConfig) -> Result<db::Page, Error> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let max_limit = i64::from(api.max_page_size);
        if !(1..=max_limit).contains(&limit) {
            return Err(Error::BadRequest(format!(
                "limit must be between 1 and {max_limit}"
            )));
        }
        let offset = self.offset.unwrap_or(0);
        let max_offset = i64::from(api.max_offset);
        if !(0..=max_offset).contains(&offset) {
            return Err(Error::BadRequest(format!(
                "offset must be between 0 and {max_offset} (deep pages cost every shard; use v2 cursors)"
            )));
        }
        Ok(db::Page { limit, offset })
    }
}

/// Page bounds come from the app's config.
impl FromRequestParts<AppState> for db::Page {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        let Query(params) = Query::<PageParams>::from_request_parts(parts, app).await?;
        params.page(&app.config.api)
    }
}

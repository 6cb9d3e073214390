//! REST v2: the same operations as v1, for clients that walk, shape and batch.
//!
//! - Ids are strings (`"42"`, see `views.rs`). Times are RFC 3339, as in v1.
//! - Every list is `{"data": [...], "next_cursor": "..." | null}`. The cursor is opaque and
//!   tamper-evident (`src/http/cursor.rs`); a page is an index seek from it, so there is no
//!   depth limit and a walk returns each row once even while rows are being added.
//! - `include=posts` on users adds each user's newest posts, read for the whole page in one
//!   statement per shard (through the cache), instead of one request per user.
//! - `fields=a,b` keeps only those fields of each user or post (`id` always stays), for
//!   clients on slow links; an unknown field is a 400 naming the fields on offer.

use std::collections::HashMap;

use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use utoipa::openapi::{
    RefOr, Schema,
    path::Parameter,
    schema::{ObjectBuilder, SchemaType, Type},
};

use super::{
    Reads, Version, spec,
    views::{self, ApiKeyView, StringId},
};
use crate::{
    App, AppState,
    auth::MaybeAuthUser,
    db::{Page, Session},
    domain::User,
    error::{Error, Result},
    http::{
        conditional::{Audience, conditional_json},
        cursor::Cursor,
        extract::{DEFAULT_LIMIT, Id, Json, Query},
    },
    operations::{posts as post_ops, users as user_ops},
};

/// How many of each user's newest posts `include=posts` adds.
pub const INCLUDED_POSTS: i64 = 5;

pub(crate) struct V2;

type UserView = views::UserView<StringId>;
type PostView = views::PostView<StringId>;

impl Version for V2 {
    const PREFIX: &'static str = "/v2";
    const NAME: &'static str = "V2";

    type Id = StringId;

    type ApiKeys = List<Vec<ApiKeyView<StringId>>>;
    fn api_keys(keys: Vec<ApiKeyView<StringId>>) -> Self::ApiKeys {
        List {
            data: keys,
            next_cursor: None,
        }
    }

    fn reads() -> Reads {
        Reads {
            users: get(list_users),
            user: get(show_user),
            user_posts: get(user_posts),
            feed: get(feed),
            post: get(show_post),
        }
    }

    fn list_schema(item: RefOr<Schema>) -> RefOr<Schema> {
        ObjectBuilder::new()
            .property("data", spec::array_of(item))
            .property(
                "next_cursor",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .description(Some("Where the next page starts; null on the last page")),
            )
            .required("data")
            .required("next_cursor")
            .into()
    }

    /// `fields=` may leave out anything but `id`.
    fn shape(mut schema: RefOr<Schema>) -> RefOr<Schema> {
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.required = vec!["id".to_owned()];
        }
        schema
    }

    fn list_params(users: bool) -> Vec<Parameter> {
        let mut params = vec![
            spec::limit(),
            spec::text(
                "cursor",
                "The `next_cursor` of the previous page, as it came",
            ),
            fields_param(users),
        ];
        if users {
            params.push(include_param());
        }
        params
    }

    fn show_params(users: bool) -> Vec<Parameter> {
        let mut params = vec![fields_param(users)];
        if users {
            params.push(include_param());
        }
        params
    }
}

/// Every v2 list: a page and where the next one starts (`null` on the last page).
#[derive(Debug, Serialize)]
pub struct List<D> {
    pub data: D,
    pub next_cursor: Option<String>,
}

const USER_FIELDS: &[&str] = &["id", "name", "email", "created_at", "posts"];
const POST_FIELDS: &[&str] = &["id", "user_id", "title", "body", "created_at", "updated_at"];

fn fields_param(users: bool) -> Parameter {
    let offered = if users { USER_FIELDS } else { POST_FIELDS };
    spec::text(
        "fields",
        &format!(
            "Comma-separated fields to keep (and `id`), of: {}",
            offered.join(", ")
        ),
    )
}

fn include_param() -> Parameter {
    spec::query(
        "include",
        "`posts`: each user's newest 5 posts, batched per shard",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["posts"])),
    )
}

/// `?fields=`: the fields of each item to keep, checked against those on offer.
#[derive(Debug, Default)]
struct Fields(Option<Vec<String>>);

impl Fields {
    fn parse(raw: Option<&str>, offered: &[&str]) -> Result<Self> {
        let Some(raw) = raw else {
            return Ok(Self(None));
        };
        let fields = raw
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|field| {
                offered
                    .contains(&field)
                    .then(|| field.to_owned())
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "fields: `{field}` is not a field here; fields on offer: {}",
                            offered.join(", ")
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self(Some(fields)))
    }

    /// `item` as a JSON tree with only the chosen fields (and `id`); the whole item without
    /// `fields=` (callers skip the tree then: see [`Fields::answer`], [`list_answer`]).
    fn apply<T: Serialize>(&self, item: &T) -> Result<Value> {
        let value = serde_json::to_value(item).map_err(|err| Error::Internal(err.into()))?;
        Ok(match (&self.0, value) {
            (Some(fields), Value::Object(object)) => Value::Object(
                object
                    .into_iter()
                    .filter(|(key, _)| key == "id" || fields.iter().any(|f| f == key))
                    .collect::<Map<String, Value>>(),
            ),
            (_, value) => value,
        })
    }

    fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// A single resource's answer (ETag and all, see `conditional_json`), shaped: straight
    /// from the view when every field is wanted, so the common case pays no JSON tree.
    fn answer<T: Serialize>(
        &self,
        headers: &HeaderMap,
        item: &T,
        audience: Audience,
    ) -> Result<Response> {
        if self.is_all() {
            conditional_json(headers, item, audience)
        } else {
            conditional_json(headers, &self.apply(item)?, audience)
        }
    }
}

/// `?limit`, bounded like v1's.
fn limit(app: &App, limit: Option<i64>) -> Result<i64> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let max = i64::from(app.config.api.max_page_size);
    if !(1..=max).contains(&limit) {
        return Err(Error::BadRequest(format!(
            "limit must be between 1 and {max}"
        )));
    }
    Ok(limit)
}

/// A page read with one row more than asked: whether that row exists says whether there is
/// a next page, so the last page says so (`null`) instead of costing one more request.
fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    next: impl FnOnce(&T) -> Cursor,
) -> (Vec<T>, Option<Cursor>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let cursor = rows.last().map(next);
    (rows, cursor)
}

/// A list answer, each item shaped by `fields`.
fn list_answer<T: Serialize>(
    app: &App,
    items: &[T],
    next: Option<Cursor>,
    fields: &Fields,
) -> Result<Response> {
    let next_cursor = next.map(|cursor| app.cursors.encode(cursor));
    if fields.is_all() {
        return Ok(Json(List {
            data: items,
            next_cursor,
        })
        .into_response());
    }
    let data = items
        .iter()
        .map(|item| fields.apply(item))
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(List { data, next_cursor }).into_response())
}

/// Where a list's page starts: `None` without `?cursor` (the first page), the position `of`
/// takes from a cursor this API signed for this list, else a 400.
fn position<T>(
    app: &App,
    cursor: Option<&str>,
    of: impl FnOnce(Cursor) -> Option<T>,
) -> Result<Option<T>> {
    let Some(text) = cursor else {
        return Ok(None);
    };
    of(app.cursors.decode(text)?)
        .map(Some)
        .ok_or_else(|| Error::BadRequest("cursor belongs to another list".into()))
}

/// `?include=`: only `posts` is on offer.
fn include_posts(include: Option<&str>) -> Result<bool> {
    match include {
        None => Ok(false),
        Some("posts") => Ok(true),
        Some(other) => Err(Error::BadRequest(format!(
            "include: `{other}` cannot be included; on offer: posts"
        ))),
    }
}

/// Adds each user's newest posts: one statement per shard for the whole page (the
/// DataLoader's batched read, through the cache).
async fn with_posts(
    app: &App,
    session: &Session,
    users: Vec<User>,
    viewer: Option<i64>,
    include: bool,
) -> Result<Vec<UserView>> {
    let mut posts = if include {
        let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
        post_ops::newest_of_users(app, session, &ids, INCLUDED_POSTS).await?
    } else {
        HashMap::new()
    };
    Ok(users
        .into_iter()
        .map(|user| {
            let posts = include.then(|| {
                posts
                    .remove(&user.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(PostView::from)
                    .collect()
            });
            UserView {
                posts,
                ..UserView::new(user, viewer)
            }
        })
        .collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    include: Option<String>,
    fields: Option<String>,
}

/// `GET /v2/users?limit&cursor&include&fields`, in id order across shards.
async fn list_users(
    State(app): State<AppState>,
    session: Session,
    viewer: MaybeAuthUser,
    Query(query): Query<UsersQuery>,
) -> Result<Response> {
    let limit = limit(&app, query.limit)?;
    let fields = Fields::parse(query.fields.as_deref(), USER_FIELDS)?;
    let include = include_posts(query.include.as_deref())?;
    let after = position(&app, query.cursor.as_deref(), |cursor| match cursor {
        Cursor::Users { after } => Some(after),
        _ => None,
    })?;
    let users = user_ops::after(&app, &session, after, limit + 1).await?;
    let (users, next) = page(users, limit, |last| Cursor::Users { after: last.id });
    let users = with_posts(&app, &session, users, viewer.id(), include).await?;
    // Private: the viewer's own entry carries their email.
    let mut response = list_answer(&app, &users, next, &fields)?;
    Audience::PerViewer.mark(response.headers_mut());
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    include: Option<String>,
    fields: Option<String>,
}

/// `GET /v2/users/{id}?include&fields`.
async fn show_user(
    State(app): State<AppState>,
    session: Session,
    viewer: MaybeAuthUser,
    Id(id): Id,
    Query(query): Query<UserQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let fields = Fields::parse(query.fields.as_deref(), USER_FIELDS)?;
    let include = include_posts(query.include.as_deref())?;
    let user = user_ops::get(&app, &session, id).await?;
    let Some(user) = with_posts(&app, &session, vec![user], viewer.id(), include)
        .await?
        .pop()
    else {
        return Err(Error::Internal(anyhow::anyhow!(
            "a user went missing while rendering"
        )));
    };
    fields.answer(&headers, &user, Audience::PerViewer)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostsQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    fields: Option<String>,
}

/// `GET /v2/users/{id}/posts?limit&cursor&fields`, newest first. The first page comes from
/// the cache (it is what most clients read); later pages are index seeks past the cursor.
async fn user_posts(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    Query(query): Query<PostsQuery>,
) -> Result<Response> {
    let limit = limit(&app, query.limit)?;
    let fields = Fields::parse(query.fields.as_deref(), POST_FIELDS)?;
    let before = position(&app, query.cursor.as_deref(), |cursor| match cursor {
        Cursor::UserPosts { user, before } if user == id => Some(before),
        _ => None,
    })?;
    let posts = match before {
        None => {
            let first = Page {
                limit: limit + 1,
                offset: 0,
            };
            post_ops::of_user(&app, &session, id, first).await?
        }
        Some(before) => post_ops::of_user_before(&app, &session, id, before, limit + 1).await?,
    };
    let (posts, next) = page(posts, limit, |last| Cursor::UserPosts {
        user: id,
        before: last.id,
    });
    let posts: Vec<PostView> = posts.into_iter().map(PostView::from).collect();
    list_answer(&app, &posts, next, &fields)
}

/// `GET /v2/posts?limit&cursor&fields`: every shard's posts, newest first.
async fn feed(
    State(app): State<AppState>,
    session: Session,
    Query(query): Query<PostsQuery>,
) -> Result<Response> {
    let limit = limit(&app, query.limit)?;
    let fields = Fields::parse(query.fields.as_deref(), POST_FIELDS)?;
    let before = position(&app, query.cursor.as_deref(), |cursor| match cursor {
        Cursor::Feed { before } => Some(before),
        _ => None,
    })?;
    let posts = post_ops::before(&app, &session, before, limit + 1).await?;
    let (posts, next) = page(posts, limit, |last| Cursor::Feed {
        before: (last.created_at, last.id),
    });
    let posts: Vec<PostView> = posts.into_iter().map(PostView::from).collect();
    list_answer(&app, &posts, next, &fields)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostQuery {
    fields: Option<String>,
}

/// `GET /v2/posts/{id}?fields`.
async fn show_post(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    Query(query): Query<PostQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let fields = Fields::parse(query.fields.as_deref(), POST_FIELDS)?;
    let post = post_ops::get(&app, &session, id).await?;
    fields.answer(&headers, &PostView::from(post), Audience::Public)
}

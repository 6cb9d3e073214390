//! A plan's reads: one level at a time, each level one batch call per kind of read.
//!
//! The roots first (each list its own read, as in the resolvers; every single `user`, `viewer`
//! and `post` of the query together), then level by level: every object of a level is known
//! before the level below asks for anything, so the level's keys go out together, whichever
//! root or alias they came from (`users::by_ids`, `posts::newest_of_users` once per page
//! size): through the cache, and for the misses one statement per shard. Rows this request
//! has loaded are not asked for again (a page's users are the authors of their own posts).
//! Every call is one of the request's reads (`src/graphql/budget.rs`). Any failure returns
//! `None`: the request then runs on the resolvers, which report it as they always do (or, if
//! the failure was the read budget, is stopped with its error).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::plan::{ConnectionField, EdgeField, Plan, PostField, PostSel, Root, UserField, UserSel};
use crate::{
    domain::{self, Post, User},
    graphql::{
        RequestData,
        query::{PostCursor, UserCursor, decode},
    },
    operations::{posts as post_ops, users as user_ops},
};

/// What a plan read: each root's rows, and every user and post list the answer shows.
#[derive(Default)]
pub(super) struct Loaded {
    pub(super) roots: Vec<RootData>,
    pub(super) users: HashMap<i64, User>,
    /// The newest `first` posts of a user, by `(user id, first)`.
    pub(super) newest: HashMap<(i64, i64), Vec<Post>>,
}

pub(super) enum RootData {
    Users {
        ids: Vec<i64>,
        has_next: bool,
        from_cursor: bool,
    },
    Posts {
        rows: Vec<Post>,
        has_next: bool,
        from_cursor: bool,
    },
    /// `user`, `viewer`: the user's id, when there is one.
    User(Option<i64>),
    Post(Option<Post>),
    Typename,
}

pub(super) async fn load(plan: &Plan, rq: &RequestData) -> Option<Loaded> {
    let mut loaded = Loaded::default();
    let mut level = Level::default();
    // The single users and posts every root asks for, each kind in one call.
    let mut single_users = Vec::new();
    let mut single_posts = Vec::new();
    for root in &plan.roots {
        match root {
            Root::User { id, .. } => single_users.push(domain::parse_id(id).ok()?),
            Root::Viewer { .. } => single_users.extend(rq.viewer_id()),
            Root::Post { id, .. } => single_posts.push(domain::parse_id(id).ok()?),
            _ => {}
        }
    }
    if !single_users.is_empty() {
        let ids = distinct(single_users.into_iter());
        let found = rq
            .budget
            .read(user_ops::by_ids(&rq.app, &rq.session, &ids))
            .await
            .ok()?;
        loaded.users.extend(found);
    }
    let mut posts = if single_posts.is_empty() {
        HashMap::new()
    } else {
        let ids = distinct(single_posts.into_iter());
        rq.budget
            .read(post_ops::by_ids(&rq.app, &rq.session, &ids))
            .await
            .ok()?
    };

    for root in &plan.roots {
        let data = match root {
            Root::Users {
                first, after, page, ..
            } => {
                let first = page_size(rq, *first)?;
                let after = after
                    .as_deref()
                    .map(decode::<UserCursor>)
                    .transpose()
                    .ok()?;
                let from_cursor = after.is_some();
                let users = rq
                    .budget
                    .read(user_ops::after(
                        &rq.app,
                        &rq.session,
                        after.map(|cursor| cursor.id),
                        first + 1,
                    ))
                    .await
                    .ok()?;
                let (users, has_next) = first_page(users, first)?;
                let ids: Vec<i64> = users.iter().map(|user| user.id).collect();
                loaded
                    .users
                    .extend(users.into_iter().map(|user| (user.id, user)));
                for sel in node_sels(&page.fields) {
                    level.users.push((ids.clone(), sel));
                }
                RootData::Users {
                    ids,
                    has_next,
                    from_cursor,
                }
            }
            Root::Posts {
                first, after, page, ..
            } => {
                let first = page_size(rq, *first)?;
                let after = after
                    .as_deref()
                    .map(decode::<PostCursor>)
                    .transpose()
                    .ok()?;
                let from_cursor = after.is_some();
                let cursor = after.map(|cursor| (cursor.at, cursor.id));
                let rows = rq
                    .budget
                    .read(post_ops::before(&rq.app, &rq.session, cursor, first + 1))
                    .await
                    .ok()?;
                let (rows, has_next) = first_page(rows, first)?;
                let authors: Vec<i64> = rows.iter().map(|post| post.user_id).collect();
                for sel in node_sels(&page.fields) {
                    level.posts.push((authors.clone(), sel));
                }
                RootData::Posts {
                    rows,
                    has_next,
                    from_cursor,
                }
            }
            Root::User { id, sel, .. } => {
                let id = domain::parse_id(id).ok()?;
                let found = loaded.users.contains_key(&id).then_some(id);
                level.users.extend(found.map(|id| (vec![id], sel)));
                RootData::User(found)
            }
            Root::Viewer { sel, .. } => {
                let found = rq.viewer_id().filter(|id| loaded.users.contains_key(id));
                level.users.extend(found.map(|id| (vec![id], sel)));
                RootData::User(found)
            }
            Root::Post { id, sel, .. } => {
                let id = domain::parse_id(id).ok()?;
                let post = posts.remove(&id);
                level
                    .posts
                    .extend(post.as_ref().map(|post| (vec![post.user_id], sel)));
                RootData::Post(post)
            }
            Root::Typename(_) => RootData::Typename,
        };
        loaded.roots.push(data);
    }
    while !level.is_empty() {
        level = level.load(rq, &mut loaded).await?;
    }
    Some(loaded)
}

/// One level of the answer still to load: users whose selection may ask for their posts, and
/// posts (by their authors' ids) whose selection may ask for their author.
#[derive(Default)]
struct Level<'a> {
    users: Vec<(Vec<i64>, &'a UserSel)>,
    posts: Vec<(Vec<i64>, &'a PostSel)>,
}

impl<'a> Level<'a> {
    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.posts.is_empty()
    }

    /// Loads what this level's selections ask for, every kind in one call (one per page size
    /// for post lists), and returns the level below.
    async fn load(mut self, rq: &RequestData, loaded: &mut Loaded) -> Option<Level<'a>> {
        // The users' post lists, grouped by page size, not loaded yet.
        let mut wanted: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (ids, sel) in &self.users {
            for field in &sel.0 {
                if let UserField::Posts { first, .. } = field {
                    let first = page_size(rq, *first)?;
                    let missing = ids
                        .iter()
                        .filter(|id| !loaded.newest.contains_key(&(**id, first)));
                    wanted.entry(first).or_default().extend(missing);
                }
            }
        }
        for (first, ids) in wanted {
            let ids = distinct(ids.into_iter());
            if ids.is_empty() {
                continue;
            }
            let mut found = rq
                .budget
                .read(post_ops::newest_of_users(&rq.app, &rq.session, &ids, first))
                .await
                .ok()?;
            for id in ids {
                let posts = found.remove(&id).unwrap_or_default();
                loaded.newest.insert((id, first), posts);
            }
        }
        // Their posts join this level's posts.
        for (ids, sel) in &self.users {
            for field in &sel.0 {
                if let UserField::Posts { first, sel, .. } = field {
                    let first = page_size(rq, *first)?;
                    let authors = ids
                        .iter()
                        .filter_map(|id| loaded.newest.get(&(*id, first)))
                        .flatten()
                        .map(|post| post.user_id)
                        .collect();
                    self.posts.push((authors, sel));
                }
            }
        }
        // The authors those posts' selections ask for, in one call; a missing author is the
        // resolvers' error to report.
        let mut below = Level::default();
        for (authors, sel) in &self.posts {
            for field in &sel.0 {
                if let PostField::Author(_, sel) = field {
                    below.users.push((distinct(authors.iter().copied()), sel));
                }
            }
        }
        let missing = distinct(
            below
                .users
                .iter()
                .flat_map(|(ids, _)| ids)
                .copied()
                .filter(|id| !loaded.users.contains_key(id)),
        );
        if !missing.is_empty() {
            let found = rq
                .budget
                .read(user_ops::by_ids(&rq.app, &rq.session, &missing))
                .await
                .ok()?;
            if found.len() < missing.len() {
                return None;
            }
            loaded.users.extend(found);
        }
        Some(below)
    }
}

/// A page of `first` rows from `first + 1` read, and whether there is a next page (the extra
/// row), as the resolvers' connections do.
fn first_page<T>(mut rows: Vec<T>, first: i64) -> Option<(Vec<T>, bool)> {
    let has_next = rows.len() as i64 > first;
    rows.truncate(usize::try_from(first).ok()?);
    Some((rows, has_next))
}

/// `first` as the resolvers take it (between 1 and the page-size limit); the limits have
/// refused anything else before the plan runs.
fn page_size(rq: &RequestData, first: i64) -> Option<i64> {
    rq.page_size(i32::try_from(first).ok()?).ok()
}

/// The node selections of a connection: under `edges { node }` and under `nodes`.
fn node_sels<S>(fields: &[ConnectionField<S>]) -> impl Iterator<Item = &S> {
    fields.iter().flat_map(|field| -> Vec<&S> {
        match field {
            ConnectionField::Edges(_, edge) => edge
                .iter()
                .filter_map(|field| match field {
                    EdgeField::Node(_, sel) => Some(sel),
                    _ => None,
                })
                .collect(),
            ConnectionField::Nodes(_, sel) => vec![sel],
            _ => Vec::new(),
        }
    })
}

/// `ids` without repeats, in first-seen order.
fn distinct(ids: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}

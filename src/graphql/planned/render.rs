//! A loaded plan as the JSON answer, written field by field into one buffer.
//!
//! Each value is written as the resolvers' types write it (`src/graphql/types.rs`,
//! `query.rs`): ids as strings, timestamps in RFC 3339, the email for its owner only, opaque
//! cursors, keys in the query's order. `None` (a row the load should have brought is
//! missing) sends the request to the resolvers; `None` with the budget spent (the answer grew
//! past `graphql.max_response_bytes`, checked as each object starts) stops the request.

use std::io::Write as _;

use async_graphql::connection::{CursorType, OpaqueCursor};
use chrono::{DateTime, Utc};

use super::{
    load::{Loaded, RootData},
    plan::{
        Connection, ConnectionField, EdgeField, PageInfoField, Plan, PostField, PostSel, Root,
        UserField, UserSel,
    },
};
use crate::{
    domain::{Post, User},
    graphql::{
        budget::RequestBudget,
        query::{PostCursor, UserCursor},
    },
};

pub(super) fn render(
    plan: &Plan,
    loaded: &Loaded,
    viewer: Option<i64>,
    budget: &RequestBudget,
) -> Option<Vec<u8>> {
    let mut w = Writer {
        out: Vec::with_capacity(8 * 1024),
        loaded,
        viewer,
        limit: budget.bytes_left(),
    };
    let written = roots(&mut w, plan, loaded);
    if written.is_none() && w.out.len() <= w.limit {
        return None; // a missing row: the resolvers answer
    }
    // Past the limit (stopped early or not), this spends the budget and stops the request.
    budget.add_bytes(w.out.len()).then_some(w.out)
}

/// The whole answer into `w`; `None` when a row is missing or the answer outgrew `w.limit`.
fn roots(w: &mut Writer<'_>, plan: &Plan, loaded: &Loaded) -> Option<()> {
    w.raw("{\"data\":{");
    for (i, (root, data)) in plan.roots.iter().zip(&loaded.roots).enumerate() {
        if i > 0 {
            w.raw(",");
        }
        match (root, data) {
            (
                Root::Users { key, page, .. },
                RootData::Users {
                    ids,
                    has_next,
                    from_cursor,
                },
            ) => {
                w.key(key);
                let users = ids
                    .iter()
                    .map(|id| loaded.users.get(id))
                    .collect::<Option<Vec<&User>>>()?;
                let cursors: Vec<String> = users
                    .iter()
                    .map(|user| OpaqueCursor(UserCursor { id: user.id }).encode_cursor())
                    .collect();
                w.connection(
                    page,
                    &users,
                    &cursors,
                    *has_next,
                    *from_cursor,
                    |w, user, sel| w.user(user, sel),
                )?;
            }
            (
                Root::Posts { key, page, .. },
                RootData::Posts {
                    rows,
                    has_next,
                    from_cursor,
                },
            ) => {
                w.key(key);
                let posts: Vec<&Post> = rows.iter().collect();
                let cursors: Vec<String> = posts
                    .iter()
                    .map(|post| {
                        OpaqueCursor(PostCursor {
                            at: post.created_at,
                            id: post.id,
                        })
                        .encode_cursor()
                    })
                    .collect();
                w.connection(
                    page,
                    &posts,
                    &cursors,
                    *has_next,
                    *from_cursor,
                    |w, post, sel| w.post(post, sel),
                )?;
            }
            (Root::User { key, sel, .. } | Root::Viewer { key, sel }, RootData::User(id)) => {
                w.key(key);
                match id {
                    Some(id) => {
                        let user = loaded.users.get(id)?;
                        w.user(user, sel)?;
                    }
                    None => w.raw("null"),
                }
            }
            (Root::Post { key, sel, .. }, RootData::Post(post)) => {
                w.key(key);
                match post {
                    Some(post) => w.post(post, sel)?,
                    None => w.raw("null"),
                }
            }
            (Root::Typename(key), RootData::Typename) => {
                w.key(key);
                w.string("Query");
            }
            _ => return None,
        }
    }
    w.raw("}}");
    Some(())
}

struct Writer<'a> {
    out: Vec<u8>,
    loaded: &'a Loaded,
    viewer: Option<i64>,
    /// The most bytes the answer may take (the request's budget).
    limit: usize,
}

impl Writer<'_> {
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A JSON string, escaped.
    fn string(&mut self, s: &str) {
        // Writing into a Vec cannot fail, and a &str always serialises.
        let _ = serde_json::to_writer(&mut self.out, s);
    }

    fn key(&mut self, key: &str) {
        self.string(key);
        self.raw(":");
    }

    /// An `ID`: the integer as a string.
    fn id(&mut self, id: i64) {
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "\"{id}\"");
    }

    /// A `DateTime`, as async-graphql's chrono scalar writes it.
    fn time(&mut self, at: DateTime<Utc>) {
        self.string(&at.to_rfc3339());
    }

    fn bool(&mut self, value: bool) {
        self.raw(if value { "true" } else { "false" });
    }

    /// Writes `{` fields `}`, calling `field` for each with a comma between.
    fn object<F>(
        &mut self,
        fields: &[F],
        mut field: impl FnMut(&mut Self, &F) -> Option<()>,
    ) -> Option<()> {
        if self.out.len() > self.limit {
            // Stop here; the length past the limit is what `render` reports to the budget.
            return None;
        }
        self.raw("{");
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            field(self, f)?;
        }
        self.raw("}");
        Some(())
    }

    fn list<T>(
        &mut self,
        items: &[T],
        mut item: impl FnMut(&mut Self, &T) -> Option<()>,
    ) -> Option<()> {
        self.raw("[");
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            item(self, it)?;
        }
        self.raw("]");
        Some(())
    }

    fn user(&mut self, user: &User, sel: &UserSel) -> Option<()> {
        let loaded = self.loaded;
        self.object(&sel.0, |w, field| {
            match field {
                UserField::Id(key) => {
                    w.key(key);
                    w.id(user.id);
                }
                UserField::Name(key) => {
                    w.key(key);
                    w.string(&user.name);
                }
                UserField::Email(key) => {
                    w.key(key);
                    match user.email_for(w.viewer) {
                        Some(email) => w.string(email),
                        None => w.raw("null"),
                    }
                }
                UserField::CreatedAt(key) => {
                    w.key(key);
                    w.time(user.created_at);
                }
                UserField::Posts { key, first, sel } => {
                    w.key(key);
                    let posts = loaded.newest.get(&(user.id, *first))?;
                    w.list(posts, |w, post| w.post(post, sel))?;
                }
                UserField::Typename(key) => {
                    w.key(key);
                    w.string("User");
                }
            }
            Some(())
        })
    }

    fn post(&mut self, post: &Post, sel: &PostSel) -> Option<()> {
        let loaded = self.loaded;
        self.object(&sel.0, |w, field| {
            match field {
                PostField::Id(key) => {
                    w.key(key);
                    w.id(post.id);
                }
                PostField::Title(key) => {
                    w.key(key);
                    w.string(&post.title);
                }
                PostField::Body(key) => {
                    w.key(key);
                    w.string(&post.body);
                }
                PostField::CreatedAt(key) => {
                    w.key(key);
                    w.time(post.created_at);
                }
                PostField::UpdatedAt(key) => {
                    w.key(key);
                    w.time(post.updated_at);
                }
                PostField::Author(key, sel) => {
                    w.key(key);
                    let author = loaded.users.get(&post.user_id)?;
                    w.user(author, sel)?;
                }
                PostField::Typename(key) => {
                    w.key(key);
                    w.string("Post");
                }
            }
            Some(())
        })
    }

    /// A connection over `nodes` (one cursor each), its edges and nodes written by `node`.
    fn connection<T, S>(
        &mut self,
        page: &Connection<S>,
        nodes: &[&T],
        cursors: &[String],
        has_next: bool,
        from_cursor: bool,
        node: impl Fn(&mut Self, &T, &S) -> Option<()>,
    ) -> Option<()> {
        self.object(&page.fields, |w, field| {
            match field {
                ConnectionField::Edges(key, fields) => {
                    w.key(key);
                    let edges: Vec<(&T, &String)> = nodes.iter().copied().zip(cursors).collect();
                    w.list(&edges, |w, (item, cursor)| {
                        w.object(fields, |w, field| {
                            match field {
                                EdgeField::Cursor(key) => {
                                    w.key(key);
                                    w.string(cursor);
                                }
                                EdgeField::Node(key, sel) => {
                                    w.key(key);
                                    node(w, item, sel)?;
                                }
                                EdgeField::Typename(key) => {
                                    w.key(key);
                                    w.string(page.edge_type);
                                }
                            }
                            Some(())
                        })
                    })?;
                }
                ConnectionField::Nodes(key, sel) => {
                    w.key(key);
                    w.list(nodes, |w, item| node(w, item, sel))?;
                }
                ConnectionField::PageInfo(key, fields) => {
                    w.key(key);
                    w.object(fields, |w, field| {
                        match field {
                            PageInfoField::HasPreviousPage(key) => {
                                w.key(key);
                                w.bool(from_cursor);
                            }
                            PageInfoField::HasNextPage(key) => {
                                w.key(key);
                                w.bool(has_next);
                            }
                            PageInfoField::StartCursor(key) => {
                                w.key(key);
                                w.cursor(cursors.first());
                            }
                            PageInfoField::EndCursor(key) => {
                                w.key(key);
                                w.cursor(cursors.last());
                            }
                            PageInfoField::Typename(key) => {
                                w.key(key);
                                w.string("PageInfo");
                            }
                        }
                        Some(())
                    })?;
                }
                ConnectionField::Typename(key) => {
                    w.key(key);
                    w.string(page.type_name);
                }
            }
            Some(())
        })
    }

    fn cursor(&mut self, cursor: Option<&String>) {
        match cursor {
            Some(cursor) => self.string(cursor),
            None => self.raw("null"),
        }
    }
}

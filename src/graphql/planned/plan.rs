//! A query as a plan: which root fields, which fields of each object, under which keys.
//!
//! Built from the parsed document before validation runs, and used only once validation has
//! passed, so it never needs to report an error: anything outside what the planned executor
//! covers makes [`Plan::build`] return `None`, and the request runs on the resolvers as before.
//! Covered: one query operation of plain fields (aliases and `__typename` included) over the
//! schema's reads. Not covered (resolvers): mutations, fragments, directives, introspection, a
//! response key given twice in one selection (GraphQL merges those), arguments it cannot read.

use std::collections::HashSet;

use crate::graphql::limits::variable;

use async_graphql::{
    Name, Value, Variables,
    parser::types::{
        DocumentOperations, ExecutableDocument, Field, OperationType, Selection, SelectionSet,
    },
};

/// The response key of a field: its alias, else its name.
pub(super) type Key = String;

/// One query operation's root fields, in the order they were asked.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(super) roots: Vec<Root>,
}

#[derive(Debug)]
pub(super) enum Root {
    Users {
        key: Key,
        first: i64,
        after: Option<String>,
        page: Connection<UserSel>,
    },
    User {
        key: Key,
        id: String,
        sel: UserSel,
    },
    Posts {
        key: Key,
        first: i64,
        after: Option<String>,
        page: Connection<PostSel>,
    },
    Post {
        key: Key,
        id: String,
        sel: PostSel,
    },
    Viewer {
        key: Key,
        sel: UserSel,
    },
    Typename(Key),
}

/// What is asked of a Relay connection (`UserConnection`, `PostConnection`).
#[derive(Debug)]
pub(super) struct Connection<S> {
    pub(super) type_name: &'static str,
    /// What `__typename` on an edge answers.
    pub(super) edge_type: &'static str,
    pub(super) fields: Vec<ConnectionField<S>>,
}

#[derive(Debug)]
pub(super) enum ConnectionField<S> {
    Edges(Key, Vec<EdgeField<S>>),
    Nodes(Key, S),
    PageInfo(Key, Vec<PageInfoField>),
    Typename(Key),
}

#[derive(Debug)]
pub(super) enum EdgeField<S> {
    Cursor(Key),
    Node(Key, S),
    Typename(Key),
}

#[derive(Debug)]
pub(super) enum PageInfoField {
    HasPreviousPage(Key),
    HasNextPage(Key),
    StartCursor(Key),
    EndCursor(Key),
    Typename(Key),
}

#[derive(Debug, Default)]
pub(super) struct UserSel(pub(super) Vec<UserField>);

#[derive(Debug)]
pub(super) enum UserField {
    Id(Key),
    Name(Key),
    Email(Key),
    CreatedAt(Key),
    Posts { key: Key, first: i64, sel: PostSel },
    Typename(Key),
}

#[derive(Debug, Default)]
pub(super) struct PostSel(pub(super) Vec<PostField>);

#[derive(Debug)]
pub(super) enum PostField {
    Id(Key),
    Title(Key),
    Body(Key),
    CreatedAt(Key),
    UpdatedAt(Key),
    Author(Key, UserSel),
    Typename(Key),
}

/// The default `first` of every list field in the schema.
const DEFAULT_FIRST: i64 = 20;

impl Plan {
    /// The plan of the operation `operation_name` names (or the document's only one), if the
    /// planned executor covers it.
    pub(crate) fn build(
        doc: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Option<Self> {
        // Fragments are left to the resolvers: expanding them here would repeat the limits'
        // work, and the common client sends plain selections.
        if !doc.fragments.is_empty() {
            return None;
        }
        let operation = match (&doc.operations, operation_name) {
            (DocumentOperations::Single(op), _) => &op.node,
            (DocumentOperations::Multiple(ops), Some(name)) => &ops.get(name)?.node,
            (DocumentOperations::Multiple(_), None) => return None,
        };
        if operation.ty != OperationType::Query || !operation.directives.is_empty() {
            return None;
        }
        let args = Args { doc, variables };
        let roots = fields(&operation.selection_set.node)?
            .map(|(key, field)| {
                let sel = &field.selection_set.node;
                Some(match field.name.node.as_str() {
                    "users" => Root::Users {
                        key,
                        first: args.int(field, "first")?.unwrap_or(DEFAULT_FIRST),
                        after: args.string(field, "after")?,
                        page: connection(&args, sel, "UserConnection", "UserEdge", user_sel)?,
                    },
                    "posts" => Root::Posts {
                        key,
                        first: args.int(field, "first")?.unwrap_or(DEFAULT_FIRST),
                        after: args.string(field, "after")?,
                        page: connection(&args, sel, "PostConnection", "PostEdge", post_sel)?,
                    },
                    "user" => Root::User {
                        key,
                        id: args.id(field)?,
                        sel: user_sel(&args, sel)?,
                    },
                    "post" => Root::Post {
                        key,
                        id: args.id(field)?,
                        sel: post_sel(&args, sel)?,
                    },
                    "viewer" => Root::Viewer {
                        key,
                        sel: user_sel(&args, sel)?,
                    },
                    "__typename" => Root::Typename(key),
                    _ => return None,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { roots })
    }
}

/// The fields of a selection set with their response keys, if they are plain fields (no
/// fragment, no directive) with distinct keys.
fn fields(set: &SelectionSet) -> Option<impl Iterator<Item = (Key, &Field)>> {
    let mut keys = HashSet::with_capacity(set.items.len());
    let mut fields = Vec::with_capacity(set.items.len());
    for item in &set.items {
        let Selection::Field(field) = &item.node else {
            return None;
        };
        let field = &field.node;
        if !field.directives.is_empty() {
            return None;
        }
        let key = field.response_key().node.as_str();
        if !keys.insert(key) {
            return None;
        }
        fields.push((key.to_owned(), field));
    }
    Some(fields.into_iter())
}

fn user_sel(args: &Args<'_>, set: &SelectionSet) -> Option<UserSel> {
    fields(set)?
        .map(|(key, field)| {
            Some(match field.name.node.as_str() {
                "id" => UserField::Id(key),
                "name" => UserField::Name(key),
                "email" => UserField::Email(key),
                "createdAt" => UserField::CreatedAt(key),
                "posts" => UserField::Posts {
                    key,
                    first: args.int(field, "first")?.unwrap_or(DEFAULT_FIRST),
                    sel: post_sel(args, &field.selection_set.node)?,
                },
                "__typename" => UserField::Typename(key),
                _ => return None,
            })
        })
        .collect::<Option<_>>()
        .map(UserSel)
}

fn post_sel(args: &Args<'_>, set: &SelectionSet) -> Option<PostSel> {
    fields(set)?
        .map(|(key, field)| {
            Some(match field.name.node.as_str() {
                "id" => PostField::Id(key),
                "title" => PostField::Title(key),
                "body" => PostField::Body(key),
                "createdAt" => PostField::CreatedAt(key),
                "updatedAt" => PostField::UpdatedAt(key),
                "author" => PostField::Author(key, user_sel(args, &field.selection_set.node)?),
                "__typename" => PostField::Typename(key),
                _ => return None,
            })
        })
        .collect::<Option<_>>()
        .map(PostSel)
}

fn connection<S>(
    args: &Args<'_>,
    set: &SelectionSet,
    type_name: &'static str,
    edge_type: &'static str,
    node: fn(&Args<'_>, &SelectionSet) -> Option<S>,
) -> Option<Connection<S>> {
    let fields = fields(set)?
        .map(|(key, field)| {
            let sel = &field.selection_set.node;
            Some(match field.name.node.as_str() {
                "edges" => ConnectionField::Edges(
                    key,
                    fields(sel)?
                        .map(|(key, field)| {
                            Some(match field.name.node.as_str() {
                                "cursor" => EdgeField::Cursor(key),
                                "node" => {
                                    EdgeField::Node(key, node(args, &field.selection_set.node)?)
                                }
                                "__typename" => EdgeField::Typename(key),
                                _ => return None,
                            })
                        })
                        .collect::<Option<_>>()?,
                ),
                "nodes" => ConnectionField::Nodes(key, node(args, sel)?),
                "pageInfo" => ConnectionField::PageInfo(
                    key,
                    fields(sel)?
                        .map(|(key, field)| {
                            Some(match field.name.node.as_str() {
                                "hasPreviousPage" => PageInfoField::HasPreviousPage(key),
                                "hasNextPage" => PageInfoField::HasNextPage(key),
                                "startCursor" => PageInfoField::StartCursor(key),
                                "endCursor" => PageInfoField::EndCursor(key),
                                "__typename" => PageInfoField::Typename(key),
                                _ => return None,
                            })
                        })
                        .collect::<Option<_>>()?,
                ),
                "__typename" => ConnectionField::Typename(key),
                _ => return None,
            })
        })
        .collect::<Option<_>>()?;
    Some(Connection {
        type_name,
        edge_type,
        fields,
    })
}

/// Reads a field's arguments: literals, or variables (as sent, else their declared default).
/// Validation has checked the types by the time the plan runs; a value of another shape here
/// means "not covered", never an error.
struct Args<'a> {
    doc: &'a ExecutableDocument,
    variables: &'a Variables,
}

impl Args<'_> {
    fn value(&self, field: &Field, name: &str) -> Option<Option<Value>> {
        let Some(arg) = field.get_argument(name) else {
            return Some(None);
        };
        let value = arg
            .node
            .clone()
            .into_const_with(|var: Name| variable(&var, self.doc, self.variables).ok_or(()))
            .ok()?;
        Some(match value {
            Value::Null => None,
            value => Some(value),
        })
    }

    /// `Some(None)`: absent or null; `None`: not an integer.
    fn int(&self, field: &Field, name: &str) -> Option<Option<i64>> {
        match self.value(field, name)? {
            None => Some(None),
            Some(Value::Number(n)) => Some(Some(n.as_i64()?)),
            Some(_) => None,
        }
    }

    /// A required `ID`: a string, or an integer literal (GraphQL accepts both for `ID`).
    fn id(&self, field: &Field) -> Option<String> {
        match self.value(field, "id")?? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.as_i64()?.to_string()),
            _ => None,
        }
    }

    /// `Some(None)`: absent or null; `None`: not a string.
    fn string(&self, field: &Field, name: &str) -> Option<Option<String>> {
        match self.value(field, name)? {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => None,
        }
    }
}

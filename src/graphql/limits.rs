//! The limits a public GraphQL endpoint needs, all checked before a resolver runs.
//!
//! One GraphQL request can ask for a great deal in a few lines: nest the cyclic
//! `User.posts` / `Post.author` a hundred times, ask for 100 users with 100 posts each, or
//! expand a fragment that spreads another fragment twice, thirty levels down (2^30 fields from
//! a kilobyte of text). REST bounds each endpoint's cost by design; GraphQL has to measure the
//! query. This [`Limits`] extension does, in two hooks:
//!
//! - on receiving the request, once it is parsed and before anything else walks it: the page
//!   size of every `first` argument (`api.max_page_size`, like REST's `limit`), and the number
//!   of fields once fragments are expanded, counted with memoised fragment sizes in linear
//!   time (a fragment that spreads itself is refused as such). That second check guards
//!   async-graphql itself: its post-parse recursion check and its validator walk fragments
//!   expanded, and spent nine minutes of CPU on a 2 KB fragment bomb before this check existed.
//! - after validation: depth (`graphql.max_depth`) and cost (`graphql.max_complexity`). A
//!   field costs 1 plus its selections; a field with `first: n` costs n times its selection
//!   ([`page_cost`]), so list sizes weigh in and aliases add up; a text field costs 1 more per
//!   thousand characters it may hold ([`BODY_COST`]), so a query asking for many long bodies
//!   weighs what its answer may weigh, not what its field count says.
//!
//! - with the size checks: at most `graphql.max_root_fields` root fields per operation,
//!   counted through aliases and fragments. Each root list is its own read of every shard,
//!   and root fields resolve concurrently: one 64 KB body holds about 1,500 aliased
//!   `posts(first: 1) { edges { node { id } } }`, each cheap to the cost limit. (What a query
//!   reads while it runs is bounded again by the request's read budget, `budget.rs`.)
//! - with the size checks: at most one password check (`login` or `register`) per operation,
//!   however it is spelled (aliases, fragments). Without it one request of a 64 KB body tries
//!   about a thousand passwords under aliases, which no per-request limit or per-account
//!   counter sees as more than one request.
//!
//! The errors say which limit and by how much, with a stable `extensions.code`:
//! `QUERY_TOO_DEEP`, `QUERY_TOO_COMPLEX`, `BAD_USER_INPUT` (page size),
//! `TOO_MANY_ROOT_FIELDS`, `TOO_MANY_CREDENTIAL_CHECKS`. async-graphql's own
//! parse and validation errors get `GRAPHQL_PARSE_FAILED` / `GRAPHQL_VALIDATION_FAILED`.
//! The request body is bounded before any of this, by `http.body_limit_bytes`.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use async_graphql::{
    Name, Pos, Positioned, Request, ServerError, ServerResult, ValidationResult, Value, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
        NextValidation,
    },
    parser::types::{
        ExecutableDocument, FragmentDefinition, OperationDefinition, OperationType, Selection,
        SelectionSet,
    },
};

use crate::{config::GraphqlConfig, error::Error};

/// No cost grows past this, so summing costs can never overflow (a sum has at most as many
/// terms as the query has fields, and the fields are bounded first).
const COST_CAP: usize = 1 << 40;

/// The cost of a post's `body`: 1, plus 1 per thousand characters a body may hold (21). A
/// field's cost is otherwise blind to its size: `posts(first: 100) { body author {
/// posts(first: 100) { body } } }` would cost about 10,000, under the limit, for an answer of
/// up to 10,000 bodies of 20,000 characters (hundreds of MB). Priced by size it costs over
/// 200,000 and is refused; `posts(first: 100) { body }` costs 2,101 and passes. (A `title`
/// holds at most 200 characters and costs 1, like the other short fields.) The answer's
/// actual size is bounded again while it is built (`budget.rs`).
pub const BODY_COST: usize = 1 + crate::domain::BODY_MAX_CHARS / 1_000;

/// The cost of a field with `first: n` and a selection costing `child`: the field itself, plus
/// its selection once per row it may return. Used in `#[graphql(complexity = ..)]`.
pub fn page_cost(first: i32, child: usize) -> usize {
    // A `first` outside 1..=max never gets this far (the page-size check runs first); clamping
    // keeps the arithmetic sound whatever it is.
    let rows = usize::try_from(first).unwrap_or(0).max(1);
    rows.saturating_mul(child).saturating_add(1).min(COST_CAP)
}

/// `first` as a row count: between 1 and `max`, else a `BAD_USER_INPUT` error that names the
/// bound.
pub fn page_size(first: i64, max: u32) -> Result<i64, Error> {
    if !(1..=i64::from(max)).contains(&first) {
        return Err(Error::BadRequest(format!(
            "`first` must be between 1 and {max}, not {first}: pages are bounded so that one request cannot ask for every row"
        )));
    }
    Ok(first)
}

/// The extension; see the module documentation.
#[derive(Debug, Clone)]
pub struct Limits {
    max_depth: usize,
    max_complexity: usize,
    max_page_size: u32,
    max_root_fields: usize,
    /// Whether this request's operations ask only for introspection (`__schema`, `__type`),
    /// which the depth limit spares; set per request, in `prepare_request`.
    introspection_only: Arc<AtomicBool>,
}

impl Limits {
    pub fn new(config: &GraphqlConfig, max_page_size: u32) -> Self {
        Self {
            max_depth: config.max_depth as usize,
            max_complexity: config.max_complexity as usize,
            max_page_size,
            max_root_fields: config.max_root_fields as usize,
            introspection_only: Arc::default(),
        }
    }

    /// At most `max_root_fields` root fields in each operation, through aliases, inline
    /// fragments and spreads (`__typename` is free). Runs after the expanded-size check, which
    /// has refused fragment cycles and bounded the expansion.
    fn check_root_fields(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        for (_, operation) in doc.operations.iter() {
            let mut fields = 0;
            let mut sets = vec![&operation.node.selection_set.node];
            while let Some(set) = sets.pop() {
                for selection in &set.items {
                    match &selection.node {
                        Selection::Field(field) if field.node.name.node == "__typename" => {}
                        Selection::Field(field) => {
                            fields += 1;
                            if fields > self.max_root_fields {
                                return Err(with_code(
                                    ServerError::new(
                                        format!(
                                            "the operation selects more than {} root fields (graphql.max_root_fields), aliases included: each root list reads every shard, so ask for fewer at once",
                                            self.max_root_fields
                                        ),
                                        Some(field.pos),
                                    ),
                                    "TOO_MANY_ROOT_FIELDS",
                                ));
                            }
                        }
                        Selection::InlineFragment(inline) => {
                            sets.push(&inline.node.selection_set.node)
                        }
                        Selection::FragmentSpread(spread) => {
                            if let Some(fragment) =
                                doc.fragments.get(&spread.node.fragment_name.node)
                            {
                                sets.push(&fragment.node.selection_set.node);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_page_sizes(
        &self,
        doc: &ExecutableDocument,
        variables: &Variables,
    ) -> ServerResult<()> {
        let mut sets: Vec<&SelectionSet> = doc
            .operations
            .iter()
            .map(|(_, op)| &op.node.selection_set.node)
            .collect();
        sets.extend(doc.fragments.values().map(|f| &f.node.selection_set.node));
        while let Some(set) = sets.pop() {
            for selection in &set.items {
                match &selection.node {
                    Selection::Field(field) => {
                        if let Some(first) = field.node.get_argument("first") {
                            // A literal or a variable; anything but an integer is the
                            // validator's to report.
                            let value = first
                                .node
                                .clone()
                                .into_const_with(|name| variable(&name, doc, variables).ok_or(()));
                            if let Some(n) = value.ok().as_ref().and_then(integer) {
                                page_size(n, self.max_page_size).map_err(|err| {
                                    async_graphql::Error::from(err).into_server_error(first.pos)
                                })?;
                            }
                        }
                        sets.push(&field.node.selection_set.node);
                    }
                    Selection::InlineFragment(inline) => sets.push(&inline.node.selection_set.node),
                    Selection::FragmentSpread(_) => {} // fragments are checked once each, above
                }
            }
        }
        Ok(())
    }

    fn check_expanded_size(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let mut sizes = FragmentSizes {
            fragments: &doc.fragments,
            memo: HashMap::new(),
        };
        for (_, operation) in doc.operations.iter() {
            let fields = sizes.of(&operation.node.selection_set.node)?;
            if fields > self.max_complexity {
                return Err(too_complex(format!(
                    "the query selects {fields} fields once its fragments are expanded, above the limit of {}",
                    self.max_complexity
                )));
            }
        }
        Ok(())
    }
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        // A flag of this request's own.
        Arc::new(Self {
            introspection_only: Arc::default(),
            ..self.clone()
        })
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    /// Parses the query once (async-graphql reuses the document) and checks its expanded size
    /// and page sizes. This must come before async-graphql's own post-parse check, which
    /// walks fragments expanded and so is itself exponential on a fragment bomb.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let variables = request.variables.clone();
        let doc = request
            .parsed_query()
            .map_err(|err| with_code(err.clone(), "GRAPHQL_PARSE_FAILED"))?;
        self.check_expanded_size(doc)?;
        self.check_page_sizes(doc, &variables)?;
        self.check_root_fields(doc)?;
        check_credential_fields(doc)?;
        self.introspection_only
            .store(introspection_only(doc), Ordering::Relaxed);
        next.run(ctx, request).await
    }

    /// async-graphql's own checks after parsing (recursion depth, directives) get a code.
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|err| with_code(err, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|err| with_code(err, "GRAPHQL_VALIDATION_FAILED"))
                .collect::<Vec<_>>()
        })?;
        // Introspection is spared the depth limit: the standard introspection query (GraphiQL's,
        // code generators', schemathesis') nests `ofType` eight deep to unwrap `[T!]!`, past
        // any depth a data query needs. Its size is still bounded by the cost limit, the
        // answer's byte budget and async-graphql's recursion limit, and it reads nothing.
        if result.depth > self.max_depth && !self.introspection_only.load(Ordering::Relaxed) {
            let mut err = ServerError::new(
                format!(
                    "the query nests fields {} deep, above the limit of {}",
                    result.depth, self.max_depth
                ),
                None,
            );
            err = with_code(err, "QUERY_TOO_DEEP");
            return Err(vec![err]);
        }
        if result.complexity > self.max_complexity {
            return Err(vec![too_complex(format!(
                "the query costs {}, above the limit of {}: each `first: n` multiplies the cost of its selection by n, so ask for smaller pages or fewer fields",
                result.complexity, self.max_complexity
            ))]);
        }
        Ok(result)
    }
}

/// Whether every operation of `doc` selects only `__schema`, `__type` and `__typename` at its
/// root (through fragments). Call it only on a document the size checks accepted.
fn introspection_only(doc: &ExecutableDocument) -> bool {
    doc.operations.iter().all(|(_, operation)| {
        let mut sets = vec![&operation.node.selection_set.node];
        while let Some(set) = sets.pop() {
            for selection in &set.items {
                match &selection.node {
                    Selection::Field(field) => {
                        if !matches!(
                            field.node.name.node.as_str(),
                            "__schema" | "__type" | "__typename"
                        ) {
                            return false;
                        }
                    }
                    Selection::InlineFragment(inline) => sets.push(&inline.node.selection_set.node),
                    Selection::FragmentSpread(spread) => {
                        match doc.fragments.get(&spread.node.fragment_name.node) {
                            Some(fragment) => sets.push(&fragment.node.selection_set.node),
                            None => return false,
                        }
                    }
                }
            }
        }
        true
    })
}

/// The mutation fields that check a password: each costs an argon2 run, and each is a guess.
const CREDENTIAL_FIELDS: [&str; 2] = ["login", "register"];

/// At most one [`CREDENTIAL_FIELDS`] field in each mutation, counted through aliases, inline
/// fragments and fragment spreads. Runs after the expanded-size check, which has refused
/// fragment cycles and bounded the expansion.
fn check_credential_fields(doc: &ExecutableDocument) -> ServerResult<()> {
    for (_, operation) in doc.operations.iter() {
        let mut seen = 0;
        credential_fields(doc, &operation.node, |pos| {
            seen += 1;
            if seen > 1 {
                return Err(with_code(
                    ServerError::new(
                        "at most one `login` or `register` per request: each checks a password",
                        Some(pos),
                    ),
                    "TOO_MANY_CREDENTIAL_CHECKS",
                ));
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Whether an operation of `doc` checks a password: the rate limits charge it as a login
/// (`src/graphql/charge.rs`). Call it only on a document these limits accepted: it walks
/// fragments expanded.
pub fn checks_a_password(doc: &ExecutableDocument) -> bool {
    doc.operations.iter().any(|(_, operation)| {
        credential_fields(doc, &operation.node, |_| {
            Err(ServerError::new("found", None))
        })
        .is_err()
    })
}

/// Calls `found` with the position of each [`CREDENTIAL_FIELDS`] field of a mutation,
/// through aliases, inline fragments and fragment spreads; stops at its first error.
fn credential_fields(
    doc: &ExecutableDocument,
    operation: &OperationDefinition,
    mut found: impl FnMut(Pos) -> ServerResult<()>,
) -> ServerResult<()> {
    if operation.ty != OperationType::Mutation {
        return Ok(());
    }
    let mut sets = vec![&operation.selection_set.node];
    while let Some(set) = sets.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    if CREDENTIAL_FIELDS.contains(&field.node.name.node.as_str()) {
                        found(field.pos)?;
                    }
                }
                Selection::InlineFragment(inline) => sets.push(&inline.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                        sets.push(&fragment.node.selection_set.node);
                    }
                }
            }
        }
    }
    Ok(())
}

fn too_complex(message: String) -> ServerError {
    with_code(ServerError::new(message, None), "QUERY_TOO_COMPLEX")
}

/// Sets `extensions.code` unless the error already has one.
fn with_code(mut err: ServerError, code: &'static str) -> ServerError {
    let extensions = err.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    err
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The value of variable `name`: as given, else its declared default.
pub(super) fn variable(
    name: &Name,
    doc: &ExecutableDocument,
    variables: &Variables,
) -> Option<Value> {
    variables.get(name).cloned().or_else(|| {
        doc.operations.iter().find_map(|(_, op)| {
            op.node
                .variable_definitions
                .iter()
                .find(|def| def.node.name.node == *name)
                .and_then(|def| def.node.default_value.as_ref())
                .map(|default| default.node.clone())
        })
    })
}

/// Counts the fields a selection set has once fragments are expanded, remembering each
/// fragment's count, so a fragment spread a million times is counted once: linear in the
/// document, where expanding it would be exponential.
struct FragmentSizes<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    /// `None` while a fragment is being counted: meeting it again is a cycle.
    memo: HashMap<&'a Name, Option<usize>>,
}

impl<'a> FragmentSizes<'a> {
    fn of(&mut self, set: &'a SelectionSet) -> ServerResult<usize> {
        let mut total: usize = 0;
        for selection in &set.items {
            let size = match &selection.node {
                // `__typename` costs nothing in the validator's count either.
                Selection::Field(field) if field.node.name.node == "__typename" => 0,
                Selection::Field(field) => 1 + self.of(&field.node.selection_set.node)?,
                Selection::InlineFragment(inline) => self.of(&inline.node.selection_set.node)?,
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    let Some((name, fragment)) = self.fragments.get_key_value(name) else {
                        continue; // unknown fragment: the validator reports it
                    };
                    match self.memo.get(name) {
                        Some(Some(size)) => *size,
                        Some(None) => {
                            return Err(with_code(
                                ServerError::new(
                                    format!("fragment `{name}` spreads itself"),
                                    Some(spread.pos),
                                ),
                                "GRAPHQL_VALIDATION_FAILED",
                            ));
                        }
                        None => {
                            self.memo.insert(name, None);
                            let size = self.of(&fragment.node.selection_set.node)?;
                            self.memo.insert(name, Some(size));
                            size
                        }
                    }
                }
            };
            total = total.saturating_add(size).min(COST_CAP);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    //! The limits on the real schema, without a database: a query that passes them reaches
    //! its resolvers, which fail here for want of request data (an `INTERNAL` error); a
    //! query that does not is refused with the limit's code.

    use async_graphql::{Request, Variables};
    use serde_json::json;

    use crate::{Config, graphql::build_schema};

    const NESTED: &str = "{ users(first: 50) { edges { node { id name posts(first: 5) { id title author { id name } } } } } }";

    /// The `extensions.code` of each error of `query` run on a schema built from `config`.
    async fn codes(config: &Config, request: impl Into<Request>) -> Vec<(String, String)> {
        let response = build_schema(config).execute(request).await;
        response
            .errors
            .into_iter()
            .map(|err| {
                let code = err
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("code"))
                    .map(ToString::to_string)
                    .unwrap_or_default();
                (code.trim_matches('"').to_owned(), err.message)
            })
            .collect()
    }

    fn code_of(errors: &[(String, String)]) -> &str {
        errors
            .first()
            .map(|(code, _)| code.as_str())
            .unwrap_or("none")
    }

    #[tokio::test]
    async fn first_multiplies_the_cost_of_its_selection() {
        // A limit above the 11 fields but below the cost makes the error tell the cost.
        let mut config = Config::default();
        config.graphql.max_complexity = 20;
        let cost = |query: String| {
            let config = config.clone();
            async move {
                let errors = codes(&config, query).await;
                assert_eq!(code_of(&errors), "QUERY_TOO_COMPLEX", "{errors:?}");
                let message = &errors[0].1;
                message
                    .split_whitespace()
                    .nth(3)
                    .and_then(|n| n.trim_end_matches(',').parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("no cost in {message:?}"))
            }
        };

        // author { id name } = 3; a post = id + title + author = 5; posts(first: k) = 1 + 5k;
        // a node = 1 + id + name + posts; an edge = 1 + node; users(first: n) = 1 + n * edge.
        let five = cost(NESTED.to_owned()).await;
        assert_eq!(five, 1 + 50 * (1 + 1 + 1 + 1 + (1 + 5 * 5)));
        let fifty = cost(NESTED.replace("posts(first: 5)", "posts(first: 50)")).await;
        assert_eq!(fifty, 1 + 50 * (1 + 1 + 1 + 1 + (1 + 5 * 50)));
        assert!(fifty < Config::default().graphql.max_complexity as usize);
    }

    #[tokio::test]
    async fn the_nested_query_passes_the_default_limits_and_a_hundred_by_a_hundred_does_not() {
        let config = Config::default();
        let nested = codes(
            &config,
            NESTED.replace("posts(first: 5)", "posts(first: 50)"),
        )
        .await;
        assert_eq!(
            code_of(&nested),
            "INTERNAL",
            "reached the resolvers: {nested:?}"
        );

        let abusive = NESTED
            .replace("users(first: 50)", "users(first: 100)")
            .replace("posts(first: 5)", "posts(first: 100)");
        let errors = codes(&config, abusive).await;
        assert_eq!(code_of(&errors), "QUERY_TOO_COMPLEX", "{errors:?}");
    }

    #[tokio::test]
    async fn aliases_add_up_to_the_cost_they_really_have() {
        // Each alias alone costs 2,801 (a body costs 21); eight of them 22,408.
        let one = "posts(first: 100) { edges { node { id title body author { id name } } } }";
        let many: Vec<String> = (0..8).map(|i| format!("p{i}: {one}")).collect();
        let errors = codes(&Config::default(), format!("{{ {} }}", many.join(" "))).await;
        assert_eq!(code_of(&errors), "QUERY_TOO_COMPLEX", "{errors:?}");
    }

    #[tokio::test]
    async fn deep_nesting_is_refused() {
        let mut query = "id".to_owned();
        for _ in 0..6 {
            query = format!("posts(first: 1) {{ author {{ {query} }} }}");
        }
        let errors = codes(
            &Config::default(),
            format!("{{ user(id: \"1\") {{ {query} }} }}"),
        )
        .await;
        assert_eq!(code_of(&errors), "QUERY_TOO_DEEP", "{errors:?}");
        assert!(errors[0].1.contains("limit of 10"), "{errors:?}");
    }

    #[tokio::test]
    async fn page_sizes_past_the_limit_are_refused_literal_or_variable() {
        let config = Config::default();
        let literal = codes(&config, "{ users(first: 101) { edges { node { id } } } }").await;
        assert_eq!(code_of(&literal), "BAD_USER_INPUT", "{literal:?}");
        assert!(literal[0].1.contains("between 1 and 100"), "{literal:?}");

        let nested = codes(
            &config,
            "{ users(first: 2) { edges { node { posts(first: 0) { id } } } } }",
        )
        .await;
        assert_eq!(code_of(&nested), "BAD_USER_INPUT", "{nested:?}");
        assert_eq!(nested.len(), 1, "one error, not one per parent: {nested:?}");

        let query = "query ($n: Int = 500) { users(first: $n) { edges { node { id } } } }";
        let by_default = codes(&config, query).await;
        assert_eq!(code_of(&by_default), "BAD_USER_INPUT", "{by_default:?}");
        let given = Request::new(query).variables(Variables::from_json(json!({ "n": 1000 })));
        assert_eq!(code_of(&codes(&config, given).await), "BAD_USER_INPUT");
        let fine = Request::new(query).variables(Variables::from_json(json!({ "n": 3 })));
        assert_eq!(code_of(&codes(&config, fine).await), "INTERNAL");
    }

    #[tokio::test]
    async fn a_fragment_bomb_is_refused_before_it_is_expanded() {
        // f30 spreads f29 twice, which spreads f28 twice...: 2^30 fields from 2 KB of text.
        let mut query = String::from("{ user(id: \"1\") { ...f30 } } fragment f0 on User { id }");
        for i in 1..=30 {
            query.push_str(&format!(
                " fragment f{i} on User {{ ...f{j} a{i}: name ...f{j} }}",
                j = i - 1
            ));
        }
        let errors = codes(&Config::default(), query).await;
        assert_eq!(code_of(&errors), "QUERY_TOO_COMPLEX", "{errors:?}");
    }

    #[tokio::test]
    async fn a_fragment_that_spreads_itself_is_refused() {
        let query = "{ user(id: \"1\") { ...a } } fragment a on User { id ...b } fragment b on User { name ...a }";
        let errors = codes(&Config::default(), query).await;
        assert_eq!(code_of(&errors), "GRAPHQL_VALIDATION_FAILED", "{errors:?}");
    }

    #[tokio::test]
    async fn one_request_checks_one_password_however_the_fields_are_spelled() {
        let login = r#"login(email: "a@example.com", password: "guess-one")"#;
        let config = Config::default();
        let one = codes(&config, format!("mutation {{ {login} {{ accessToken }} }}")).await;
        assert_eq!(
            code_of(&one),
            "INTERNAL",
            "one login reaches its resolver: {one:?}"
        );
        for (what, query) in [
            (
                "aliases",
                format!("mutation {{ a: {login} {{ accessToken }} b: {login} {{ accessToken }} }}"),
            ),
            (
                "a login and a register",
                format!(
                    r#"mutation {{ {login} {{ accessToken }} register(email: "b@example.com", name: "B", password: "guess-two") {{ id }} }}"#
                ),
            ),
            (
                "fragments",
                format!(
                    "mutation {{ ...A ... on Mutation {{ b: {login} {{ accessToken }} }} }} fragment A on Mutation {{ a: {login} {{ accessToken }} }}"
                ),
            ),
        ] {
            let errors = codes(&config, query).await;
            assert_eq!(
                code_of(&errors),
                "TOO_MANY_CREDENTIAL_CHECKS",
                "{what}: {errors:?}"
            );
        }
    }

    /// The query GraphiQL and schemathesis send (graphql-core's `get_introspection_query`),
    /// deeper than `graphql.max_depth`, is answered; data nested as deep is not.
    #[tokio::test]
    async fn the_standard_introspection_query_passes_the_limits() {
        let response = build_schema(&Config::default())
            .execute(STANDARD_INTROSPECTION)
            .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = response.data.into_json().expect("JSON data");
        assert_eq!(data["__schema"]["queryType"]["name"], json!("Query"));

        let mut deep = "id".to_owned();
        for _ in 0..6 {
            deep = format!("posts(first: 1) {{ author {{ {deep} }} }}");
        }
        let mixed =
            format!("{{ __schema {{ queryType {{ name }} }} user(id: \"1\") {{ {deep} }} }}");
        let errors = codes(&Config::default(), mixed).await;
        assert_eq!(code_of(&errors), "QUERY_TOO_DEEP", "{errors:?}");
    }

    const STANDARD_INTROSPECTION: &str = include_str!("introspection.graphql");

    #[tokio::test]
    async fn introspection_follows_the_config() {
        let query = "{ __schema { queryType { name } } }";
        let answer = |config: Config| async move {
            let data = build_schema(&config).execute(query).await.data.into_json();
            data.expect("JSON data")["__schema"]["queryType"]["name"].clone()
        };
        assert_eq!(answer(Config::default()).await, json!("Query"));
        let mut config = Config::default();
        config.graphql.introspection = Some(false);
        assert_eq!(answer(config).await, serde_json::Value::Null);
        // And so does the production profile.
        let mut config = Config::default();
        config.profile = crate::config::Profile::Production;
        assert_eq!(answer(config).await, serde_json::Value::Null);
    }
}

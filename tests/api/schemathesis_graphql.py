"""The server-error check for schemathesis' GraphQL run (`tests/api/schemathesis.rs`).

Schemathesis' own `not_a_server_error` counts every error that has a `path` as the server's
failure unless its code is one of a few client codes (Apollo's `BAD_USER_INPUT`, ...): a
`FORBIDDEN` for another user's post, an `UNAUTHENTICATED` for a wrong password or a
`NOT_FOUND` are refusals the API means, and would all be reported. This check fails on
what is the server's fault instead: a 5xx status, an answer that is not a GraphQL response,
a non-null field that resolved to null (a schema violation), and any error whose code is not
one of the refusals the API documents (`INTERNAL` above all, or no code at all).
"""

import schemathesis
from schemathesis.specs.graphql.validation import is_schema_violation, parse_payload

# The `extensions.code`s of refusals: the caller's request, not the server, is at fault
# (src/error.rs, src/graphql/limits.rs, src/graphql/budget.rs).
REFUSALS = {
    "BAD_USER_INPUT",
    "BAD_REQUEST",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "TOO_MANY_REQUESTS",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "QUERY_TOO_DEEP",
    "QUERY_TOO_COMPLEX",
    "TOO_MANY_ROOT_FIELDS",
    "TOO_MANY_CREDENTIAL_CHECKS",
    "RESPONSE_TOO_LARGE",
    "TOO_MANY_READS",
}


@schemathesis.check
def graphql_no_server_error(ctx, response, case):
    """No 5xx, a GraphQL response, no null in a non-null field, only documented refusals."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")
    payload = parse_payload(response)
    if not isinstance(payload, dict) or not ("data" in payload or "errors" in payload):
        raise AssertionError(f"not a GraphQL response: {response.text[:500]}")
    errors = payload.get("errors") or []
    if is_schema_violation(errors):
        raise AssertionError(f"a non-null field resolved to null: {errors}")
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        if code not in REFUSALS:
            raise AssertionError(f"an error the server did not mean ({code}): {error}")

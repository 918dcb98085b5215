//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document, built from the route table below.
//! The table is the one place a route's method, path, role and summary are written down besides
//! the router; a test checks that every documented route answers and enforces its role.

use loom_api::{
    AnswerDecision, AttemptDto, BeadDto, BeadPageDto, ClaimBead, CloseBead, ConnectorDto, ConnectorHealthDto,
    ConnectorRequest, CreateBead, CreateKey, Dependency, ErrorBody, EventDto, HandBack, HandedBack, ImportSummary,
    KeyDto, ProjectDto, ProjectRequest, RenewLease, StartDispatch, StartedDispatch, UpdateBead, UpdateConnector,
};
use loom_api::{ConversationDto, UsageDto};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// Builds the schema of a request or response body, registering the types it uses.
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// A documented route: method, path (axum syntax), the role it needs, what it does, and its
/// JSON bodies (generated from the `loom-api` types the handlers use).
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub role: &'static str,
    pub summary: &'static str,
    request: Option<SchemaFn>,
    /// The body may be left out.
    request_optional: bool,
    response: Option<(u16, SchemaFn)>,
    /// The success status when there is no body (204).
    empty: Option<u16>,
}

const fn r(method: &'static str, path: &'static str, role: &'static str, summary: &'static str) -> Route {
    Route { method, path, role, summary, request: None, request_optional: false, response: None, empty: None }
}

impl Route {
    const fn body(mut self, request: SchemaFn) -> Route {
        self.request = Some(request);
        self
    }

    const fn optional_body(mut self, request: SchemaFn) -> Route {
        self.request = Some(request);
        self.request_optional = true;
        self
    }

    const fn ok(mut self, response: SchemaFn) -> Route {
        self.response = Some((200, response));
        self
    }

    const fn created(mut self, response: SchemaFn) -> Route {
        self.response = Some((201, response));
        self
    }

    const fn no_content(mut self) -> Route {
        self.empty = Some(204);
        self
    }
}

pub(crate) const ROUTES: &[Route] = &[
    r("get", "/health", "viewer", "Readiness of the store and the bus"),
    r("get", "/status", "viewer", "Counts of projects, beads by status and live agents"),
    r("get", "/projects", "viewer", "List projects").ok(schema::<Vec<ProjectDto>>),
    r("post", "/projects", "operator", "Register a project")
        .body(schema::<ProjectRequest>)
        .created(schema::<ProjectDto>),
    r("get", "/projects/{id}", "viewer", "Show a project").ok(schema::<ProjectDto>),
    r("put", "/projects/{id}", "operator", "Replace a project's settings")
        .body(schema::<ProjectRequest>)
        .ok(schema::<ProjectDto>),
    r(
        "delete",
        "/projects/{id}",
        "operator",
        "Delete a project and its beads (refused while beads run or other projects' beads depend on them)",
    )
    .no_content(),
    r("post", "/projects/{id}/pause", "operator", "Stop dispatching the project's beads").ok(schema::<ProjectDto>),
    r("post", "/projects/{id}/resume", "operator", "Dispatch the project's beads again").ok(schema::<ProjectDto>),
    r(
        "post",
        "/projects/{id}/import",
        "operator",
        "Import a bd (beads) tracker: the body is its issues.jsonl (application/x-ndjson), streamed; query \
         format=bd, dangling=keep|skip (default keep). Idempotent; one transaction per batch of 500 issues",
    )
    .ok(schema::<ImportSummary>),
    r(
        "get",
        "/projects/{id}/export",
        "viewer",
        "Export the project's beads as a bd issues.jsonl (application/x-ndjson), streamed page by page; query format=bd",
    ),
    r(
        "get",
        "/beads",
        "viewer",
        "List beads (filters project_id, status, type, assignee, priority, tag; cursor, limit)",
    )
    .ok(schema::<BeadPageDto>),
    r("post", "/beads", "operator", "Create a bead").body(schema::<CreateBead>).created(schema::<BeadDto>),
    r("get", "/beads/{id}", "viewer", "Show a bead with its latest result").ok(schema::<BeadDto>),
    r("get", "/beads/{id}/attempts", "viewer", "What each finished dispatch of a bead reported, oldest first")
        .ok(schema::<Vec<AttemptDto>>),
    r(
        "get",
        "/beads/{id}/conversation",
        "viewer",
        "One attempt's conversation with the model, secrets redacted (attempt; the latest when left out)",
    )
    .ok(schema::<ConversationDto>),
    r(
        "post",
        "/beads/{id}/answer",
        "operator",
        "Answer a decision bead: it closes with the answer, and the bead that escalated runs again with it",
    )
    .body(schema::<AnswerDecision>)
    .ok(schema::<BeadDto>),
    r("get", "/usage", "viewer", "Tokens and cost of the recorded attempts per project (project_id)")
        .ok(schema::<Vec<UsageDto>>),
    r("patch", "/beads/{id}", "operator", "Change a bead (optionally at an expected version)")
        .body(schema::<UpdateBead>)
        .ok(schema::<BeadDto>),
    r("delete", "/beads/{id}", "operator", "Close a bead (beads are never erased)").ok(schema::<BeadDto>),
    r(
        "post",
        "/beads/{id}/claim",
        "operator",
        "Claim an open, unblocked bead to work on it yourself (agent_id, lease_secs); no task is published",
    )
    .body(schema::<ClaimBead>)
    .ok(schema::<BeadDto>),
    r(
        "post",
        "/beads/{id}/lease",
        "operator",
        "Renew the lease of a bead claimed by hand (dispatch_id from the claim, lease_secs)",
    )
    .body(schema::<RenewLease>)
    .ok(schema::<BeadDto>),
    r(
        "post",
        "/beads/{id}/start",
        "operator",
        "An agent starts the dispatch it holds: queued becomes running and the lease clock starts",
    )
    .body(schema::<StartDispatch>)
    .ok(schema::<StartedDispatch>),
    r(
        "post",
        "/beads/{id}/hand-back",
        "operator",
        "An agent gives its dispatch back unfinished (shutdown, drain); the attempt is not counted",
    )
    .body(schema::<HandBack>)
    .ok(schema::<HandedBack>),
    r("post", "/beads/{id}/close", "operator", "Close a bead by hand; a running task is cancelled")
        .optional_body(schema::<CloseBead>)
        .ok(schema::<BeadDto>),
    r("post", "/beads/{id}/reopen", "operator", "Reopen a closed or blocked bead with a fresh retry budget")
        .ok(schema::<BeadDto>),
    r("post", "/beads/{id}/redispatch", "operator", "Cancel a running bead's task and dispatch it again")
        .ok(schema::<BeadDto>),
    r("post", "/beads/{id}/dependencies", "operator", "Make the bead wait on a blocker")
        .body(schema::<Dependency>)
        .ok(schema::<BeadDto>),
    r("delete", "/beads/{id}/dependencies", "operator", "Remove a dependency")
        .body(schema::<Dependency>)
        .ok(schema::<BeadDto>),
    r("get", "/ready", "viewer", "A project's ready beads in dispatch order (project_id, limit)")
        .ok(schema::<Vec<BeadDto>>),
    r(
        "get",
        "/work-graph",
        "viewer",
        "A page of a project's beads and their edges: {nodes, edges, next_cursor} (project_id, cursor, limit ≤ 1000, default 500)",
    ),
    r("get", "/agents", "viewer", "Live agents from the registry"),
    r(
        "get",
        "/events",
        "viewer",
        "Events after a cursor (after, limit, project_id); the X-Next-Cursor header is the next call's after",
    )
    .ok(schema::<Vec<EventDto>>),
    r("get", "/events/stream", "viewer", "Server-sent events (project_id); resumes after Last-Event-ID"),
    r("get", "/keys", "admin", "List API keys (never their secrets)").ok(schema::<Vec<KeyDto>>),
    r("post", "/keys", "admin", "Create an API key; the secret is in this response only")
        .body(schema::<CreateKey>)
        .created(schema::<KeyDto>),
    r("delete", "/keys/{id}", "admin", "Revoke an API key").no_content(),
    r("get", "/connectors", "viewer", "List connectors with their health (secrets by name only)")
        .ok(schema::<Vec<ConnectorDto>>),
    r("post", "/connectors", "admin", "Register a connector; its secrets are write-only")
        .body(schema::<ConnectorRequest>)
        .created(schema::<ConnectorDto>),
    r("get", "/connectors/{id}", "viewer", "Show a connector (secrets redacted)").ok(schema::<ConnectorDto>),
    r("put", "/connectors/{id}", "admin", "Replace a connector's settings at its expected version")
        .body(schema::<UpdateConnector>)
        .ok(schema::<ConnectorDto>),
    r("delete", "/connectors/{id}", "admin", "Remove a connector").no_content(),
    r("post", "/connectors/{id}/check", "operator", "Check a connector's health now").ok(schema::<ConnectorHealthDto>),
];

/// The OpenAPI document.
pub(crate) fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let error = schema::<ErrorBody>(&mut generator);
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut responses = Map::new();
        match (route.response, route.empty) {
            (Some((status, body)), _) => {
                let body = body(&mut generator);
                responses.insert(
                    status.to_string(),
                    json!({ "description": "OK", "content": { "application/json": { "schema": body } } }),
                );
            }
            (None, Some(status)) => {
                responses.insert(status.to_string(), json!({ "description": "Done" }));
            }
            (None, None) => {
                responses.insert("200".into(), json!({ "description": "OK" }));
            }
        }
        responses.insert(
            "default".into(),
            json!({ "description": "Error", "content": { "application/json": { "schema": error } } }),
        );
        let mut op = json!({
            "summary": route.summary,
            "description": format!("Needs the `{}` role.", route.role),
            "parameters": params,
            "security": [{ "bearer": [] }],
            "responses": responses,
        });
        if let Some(body) = route.request {
            op["requestBody"] = json!({
                "required": !route.request_optional,
                "content": { "application/json": { "schema": body(&mut generator) } }
            });
        }
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Loom API", "version": env!("CARGO_PKG_VERSION") },
        "servers": [{ "url": "/api/v1" }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": generator.take_definitions(true),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn bodies_are_described_by_schemas_that_resolve() {
        let doc = document();
        let create = &doc["paths"]["/beads"]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/CreateBead"
        );
        assert_eq!(
            create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/BeadDto"
        );
        let schema = &doc["components"]["schemas"]["CreateBead"];
        let required: Vec<&str> = schema["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(required, ["project_id", "title"]);
        assert_eq!(schema["additionalProperties"], false, "unknown fields are refused");
        assert!(schema["properties"]["type"].is_object(), "serde renames are followed");
        assert_eq!(doc["paths"]["/beads/{id}/close"]["post"]["requestBody"]["required"], false);
        assert!(doc["paths"]["/keys/{id}"]["delete"]["responses"]["204"].is_object());
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(doc["components"]["schemas"][name].is_object(), "{r} does not resolve");
        }
    }
}

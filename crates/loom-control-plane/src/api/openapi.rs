//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document, built from the route table below.
//! The table is the one place a route's method, path, role and summary are written down besides
//! the router; a test checks that every documented route answers and enforces its role.

use serde_json::{Map, Value, json};

/// A documented route: method, path (axum syntax), the role it needs, what it does.
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub role: &'static str,
    pub summary: &'static str,
}

const fn r(method: &'static str, path: &'static str, role: &'static str, summary: &'static str) -> Route {
    Route { method, path, role, summary }
}

pub(crate) const ROUTES: &[Route] = &[
    r("get", "/health", "viewer", "Readiness of the store and the bus"),
    r("get", "/status", "viewer", "Counts of projects, beads by status and live agents"),
    r("get", "/projects", "viewer", "List projects"),
    r("post", "/projects", "operator", "Register a project"),
    r("get", "/projects/{id}", "viewer", "Show a project"),
    r("put", "/projects/{id}", "operator", "Replace a project's settings"),
    r("delete", "/projects/{id}", "operator", "Delete a project and its beads (refused while beads run)"),
    r("post", "/projects/{id}/pause", "operator", "Stop dispatching the project's beads"),
    r("post", "/projects/{id}/resume", "operator", "Dispatch the project's beads again"),
    r(
        "get",
        "/beads",
        "viewer",
        "List beads (filters project_id, status, type, assignee, priority, tag; cursor, limit)",
    ),
    r("post", "/beads", "operator", "Create a bead"),
    r("get", "/beads/{id}", "viewer", "Show a bead"),
    r("patch", "/beads/{id}", "operator", "Change a bead (optionally at an expected version)"),
    r("delete", "/beads/{id}", "operator", "Close a bead (beads are never erased)"),
    r(
        "post",
        "/beads/{id}/claim",
        "operator",
        "Claim an open, unblocked bead to work on it yourself (agent_id, lease_secs); no task is published",
    ),
    r("post", "/beads/{id}/close", "operator", "Close a bead by hand; a running task is cancelled"),
    r("post", "/beads/{id}/reopen", "operator", "Reopen a closed or blocked bead with a fresh retry budget"),
    r("post", "/beads/{id}/redispatch", "operator", "Cancel a running bead's task and dispatch it again"),
    r("post", "/beads/{id}/dependencies", "operator", "Make the bead wait on a blocker"),
    r("delete", "/beads/{id}/dependencies", "operator", "Remove a dependency"),
    r("get", "/ready", "viewer", "A project's ready beads in dispatch order (project_id, limit)"),
    r("get", "/work-graph", "viewer", "A project's beads and dependency edges (project_id)"),
    r("get", "/agents", "viewer", "Live agents from the registry"),
    r("get", "/events", "viewer", "Events after a cursor (after, limit, project_id)"),
    r("get", "/events/stream", "viewer", "Server-sent events; resumes after Last-Event-ID"),
    r("get", "/keys", "admin", "List API keys (never their secrets)"),
    r("post", "/keys", "admin", "Create an API key; the secret is in this response only"),
    r("delete", "/keys/{id}", "admin", "Revoke an API key"),
];

/// The OpenAPI document.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        entry[route.method] = json!({
            "summary": route.summary,
            "description": format!("Needs the `{}` role.", route.role),
            "parameters": params,
            "security": [{ "bearer": [] }],
            "responses": {
                "200": { "description": "OK" },
                "default": {
                    "description": "Error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Loom API", "version": env!("CARGO_PKG_VERSION") },
        "servers": [{ "url": "/api/v1" }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" } } } }
                }
            }
        }
    })
}

//! A typed client of Loom's HTTP API (`/api/v1`), used by the `loom` CLI and tests. It speaks only
//! HTTP and the JSON types of `loom-api`; it never depends on a server crate.
//!
//! Invariant: every failed call is an [`Error`] that carries the server's `code` and `message`
//! when there was a response, so the CLI can show them as they are.

use futures::{Stream, StreamExt};
use loom_api::{
    AnswerDecision, AttemptDto, BeadDto, BeadPageDto, ClaimBead, CloseBead, ConversationDto, CreateBead, Dangling,
    Dependency, ErrorBody, EventDto, HandBack, HandedBack, ImportSummary, ProjectDto, ProjectRequest, RenewLease,
    StartDispatch, StartedDispatch, UpdateBead, UsageDto,
};
use loom_api::{ConnectorDto, ConnectorHealthDto, ConnectorRequest, UpdateConnector};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{message} ({status} {code})")]
    Api { status: u16, code: String, message: String },
    /// The server could not be reached.
    #[error("cannot reach the Loom API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered something this client does not understand.
    #[error("unexpected response: {0}")]
    Decode(String),
}

/// How long one API call (not the event stream) may take.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A client for one control plane.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the control plane's URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, key: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { base: base.trim_end_matches('/').to_owned(), key, http }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let url = format!("{}/api/v1{path}", self.base);
        // Every call but the event stream is bounded: a hung control plane is an error, not a hang.
        let mut req = traced(self.http.request(method, &url).timeout(CALL_TIMEOUT));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp =
            req.send().await.map_err(|e| Error::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        decode(resp).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = traced(self.http.request(method, format!("{}/api/v1{path}", self.base)));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// Imports a bd tracker's JSONL into a project (`POST /projects/{id}/import`). `body` is sent
    /// as it is read, never whole in memory, and the call has no overall timeout (a large tracker
    /// takes a while); the summary comes once the server has imported every line.
    pub async fn import_beads<S>(&self, project: &str, dangling: Dangling, body: S) -> Result<ImportSummary, Error>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        let dangling = match dangling {
            Dangling::Keep => "keep",
            Dangling::Skip => "skip",
        };
        let resp = self
            .request(Method::POST, &format!("/projects/{project}/import?format=bd&dangling={dangling}"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| Error::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        decode(resp).await
    }

    /// A project's beads as bd JSONL (`GET /projects/{id}/export`), streamed as the server writes it.
    pub async fn export_beads(&self, project: &str) -> Result<impl Stream<Item = Result<bytes::Bytes, Error>>, Error> {
        let resp = self
            .request(Method::GET, &format!("/projects/{project}/export?format=bd"))
            .send()
            .await
            .map_err(|e| Error::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        if !resp.status().is_success() {
            return Err(decode::<Value>(resp)
                .await
                .err()
                .unwrap_or_else(|| Error::Decode("an error without a body".into())));
        }
        Ok(resp.bytes_stream().map(|chunk| chunk.map_err(|e| Error::Decode(format!("the export broke off: {e}")))))
    }

    pub async fn connectors(&self) -> Result<Vec<ConnectorDto>, Error> {
        self.get("/connectors").await
    }

    pub async fn connector(&self, id: &str) -> Result<ConnectorDto, Error> {
        self.get(&format!("/connectors/{id}")).await
    }

    pub async fn create_connector(&self, req: &ConnectorRequest) -> Result<ConnectorDto, Error> {
        self.call(Method::POST, "/connectors", Some(req)).await
    }

    pub async fn update_connector(&self, id: &str, req: &UpdateConnector) -> Result<ConnectorDto, Error> {
        self.call(Method::PUT, &format!("/connectors/{id}"), Some(req)).await
    }

    pub async fn delete_connector(&self, id: &str) -> Result<(), Error> {
        self.call::<Value>(Method::DELETE, &format!("/connectors/{id}"), None::<&()>).await.map(|_| ())
    }

    pub async fn check_connector(&self, id: &str) -> Result<ConnectorHealthDto, Error> {
        self.call(Method::POST, &format!("/connectors/{id}/check"), None::<&()>).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn projects(&self) -> Result<Vec<ProjectDto>, Error> {
        self.get("/projects").await
    }

    pub async fn project(&self, id: &str) -> Result<ProjectDto, Error> {
        self.get(&format!("/projects/{id}")).await
    }

    pub async fn create_project(&self, req: &ProjectRequest) -> Result<ProjectDto, Error> {
        self.call(Method::POST, "/projects", Some(req)).await
    }

    /// Replaces a project's settings (`PUT /projects/{id}`).
    pub async fn update_project(&self, id: &str, req: &ProjectRequest) -> Result<ProjectDto, Error> {
        self.call(Method::PUT, &format!("/projects/{id}"), Some(req)).await
    }

    pub async fn delete_project(&self, id: &str) -> Result<(), Error> {
        self.call::<Value>(Method::DELETE, &format!("/projects/{id}"), None::<&()>).await.map(|_| ())
    }

    /// `query` is a URL query string such as `project_id=p&status=open` (may be empty).
    pub async fn beads(&self, query: &str) -> Result<BeadPageDto, Error> {
        self.get(&format!("/beads?{query}")).await
    }

    pub async fn bead(&self, id: &str) -> Result<BeadDto, Error> {
        self.get(&format!("/beads/{id}")).await
    }

    /// What each finished dispatch of a bead reported, oldest first.
    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptDto>, Error> {
        self.get(&format!("/beads/{id}/attempts")).await
    }

    /// One attempt's conversation with the model (the latest attempt when `attempt` is `None`).
    pub async fn conversation(&self, id: &str, attempt: Option<u32>) -> Result<ConversationDto, Error> {
        let query = attempt.map(|n| format!("?attempt={n}")).unwrap_or_default();
        self.get(&format!("/beads/{id}/conversation{query}")).await
    }

    /// Answers a decision bead (`POST /beads/{id}/answer`).
    pub async fn answer_decision(&self, id: &str, text: &str) -> Result<BeadDto, Error> {
        self.call(Method::POST, &format!("/beads/{id}/answer"), Some(&AnswerDecision { text: text.to_owned() })).await
    }

    /// Tokens and cost per project (one project's when given).
    pub async fn usage(&self, project: Option<&str>) -> Result<Vec<UsageDto>, Error> {
        let query = project.map(|p| format!("?project_id={p}")).unwrap_or_default();
        self.get(&format!("/usage{query}")).await
    }

    pub async fn create_bead(&self, req: &CreateBead) -> Result<BeadDto, Error> {
        self.call(Method::POST, "/beads", Some(req)).await
    }

    pub async fn update_bead(&self, id: &str, req: &UpdateBead) -> Result<BeadDto, Error> {
        self.call(Method::PATCH, &format!("/beads/{id}"), Some(req)).await
    }

    pub async fn claim_bead(&self, id: &str, agent_id: &str, lease_secs: Option<u64>) -> Result<BeadDto, Error> {
        let req = ClaimBead { agent_id: agent_id.to_owned(), lease_secs };
        self.call(Method::POST, &format!("/beads/{id}/claim"), Some(&req)).await
    }

    pub async fn renew_lease(&self, id: &str, dispatch_id: &str, lease_secs: Option<u64>) -> Result<BeadDto, Error> {
        let req = RenewLease { dispatch_id: dispatch_id.to_owned(), lease_secs };
        self.call(Method::POST, &format!("/beads/{id}/lease"), Some(&req)).await
    }

    /// An agent starts the dispatch it holds; `outcome` says whether to run it.
    pub async fn start_dispatch(&self, id: &str, dispatch_id: &str, agent_id: &str) -> Result<StartedDispatch, Error> {
        let req = StartDispatch { dispatch_id: dispatch_id.to_owned(), agent_id: agent_id.to_owned() };
        self.call(Method::POST, &format!("/beads/{id}/start"), Some(&req)).await
    }

    /// An agent gives its dispatch back unfinished.
    pub async fn hand_back(
        &self,
        id: &str,
        dispatch_id: &str,
        agent_id: &str,
        reason: &str,
    ) -> Result<HandedBack, Error> {
        let req =
            HandBack { dispatch_id: dispatch_id.to_owned(), agent_id: agent_id.to_owned(), reason: reason.to_owned() };
        self.call(Method::POST, &format!("/beads/{id}/hand-back"), Some(&req)).await
    }

    pub async fn close_bead(&self, id: &str, reason: Option<String>) -> Result<BeadDto, Error> {
        self.call(Method::POST, &format!("/beads/{id}/close"), Some(&CloseBead { reason, version: None })).await
    }

    pub async fn reopen_bead(&self, id: &str) -> Result<BeadDto, Error> {
        self.call(Method::POST, &format!("/beads/{id}/reopen"), None::<&()>).await
    }

    pub async fn add_dependency(&self, id: &str, blocker: &str) -> Result<BeadDto, Error> {
        let dep = Dependency { blocker: blocker.to_owned() };
        self.call(Method::POST, &format!("/beads/{id}/dependencies"), Some(&dep)).await
    }

    pub async fn remove_dependency(&self, id: &str, blocker: &str) -> Result<BeadDto, Error> {
        let dep = Dependency { blocker: blocker.to_owned() };
        self.call(Method::DELETE, &format!("/beads/{id}/dependencies"), Some(&dep)).await
    }

    pub async fn ready(&self, project: &str) -> Result<Vec<BeadDto>, Error> {
        self.get(&format!("/ready?project_id={project}")).await
    }

    pub async fn agents(&self) -> Result<Value, Error> {
        self.get("/agents").await
    }

    pub async fn status(&self) -> Result<Value, Error> {
        self.get("/status").await
    }

    pub async fn events(&self, after: i64, limit: u32) -> Result<Vec<EventDto>, Error> {
        self.get(&format!("/events?after={after}&limit={limit}")).await
    }

    /// Follows `/events/stream` from `after` (or from now): yields events as they happen.
    pub async fn follow_events(
        &self,
        after: Option<i64>,
    ) -> Result<impl Stream<Item = Result<EventDto, Error>>, Error> {
        let mut req = self.http.get(format!("{}/api/v1/events/stream", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(a) = after {
            req = req.header("Last-Event-ID", a.to_string());
        }
        let resp =
            req.send().await.map_err(|e| Error::Unreachable { url: self.base.clone(), reason: e.to_string() })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body: ErrorBody = resp.json().await.map_err(|e| Error::Decode(e.to_string()))?;
            return Err(Error::Api { status, code: body.error.code, message: body.error.message });
        }
        let bytes = resp.bytes_stream();
        Ok(sse_data(bytes)
            .map(|r| r.and_then(|data| serde_json::from_str(&data).map_err(|e| Error::Decode(e.to_string())))))
    }
}

/// The `data:` payloads of a server-sent event stream.
fn sse_data(
    bytes: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
) -> impl Stream<Item = Result<String, Error>> {
    futures::stream::unfold((bytes, String::new()), |(mut bytes, mut buf)| async move {
        loop {
            if let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let data: Vec<&str> =
                    frame.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((Ok(data.join("\n")), (bytes, buf)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(e)) => return Some((Err(Error::Decode(e.to_string())), (bytes, buf))),
                None => return None,
            }
        }
    })
}

/// The body of a response as `T`, or the error it carries.
/// The request with the caller's trace context (`traceparent`, `tracestate`) while trace
/// export is on, so the control plane's spans continue the caller's trace.
fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let carrier = loom_telemetry::propagate::current();
    let req = match carrier.traceparent {
        Some(tp) => req.header(loom_telemetry::propagate::TRACEPARENT, tp),
        None => req,
    };
    match carrier.tracestate {
        Some(ts) => req.header(loom_telemetry::propagate::TRACESTATE, ts),
        None => req,
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| Error::Decode(e.to_string()))?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Error::Api { status: status.as_u16(), code: b.error.code, message: b.error.message },
            Err(_) => Error::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            },
        });
    }
    let bytes = if bytes.is_empty() { "null".into() } else { bytes };
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{e} in {}", String::from_utf8_lossy(&bytes))))
}

//! A minimal OpenAI-compatible chat completions client: `POST {base}/v1/chat/completions`,
//! bearer key in the header only, `max_tokens` requested, the actions optionally sent as
//! `tools`, token usage and `finish_reason` read from the response. 429, 5xx, timeouts and
//! connection failures are retried a bounded number of times with exponential backoff, waiting
//! what `Retry-After` (or `retry-after-ms`) asks when the server says.
//!
//! The tool mode is per client (one provider): `auto` sends `tools` until the endpoint rejects
//! them once (a 400 about tools, or a 422), then speaks the JSON-in-text protocol
//! for the rest of the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::Error;
use crate::config::{ApiKey, LlmConfig, Price, ToolMode};

/// One chat message: `content`, and for an assistant's native calls `tool_calls`, for the
/// answer to one of them `tool_call_id`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct Message {
    pub(crate) role: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(crate) content: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) tool_calls: Vec<ToolCall>,
    #[serde(default)]
    pub(crate) tool_call_id: Option<String>,
    /// Not sent: the one line that may replace `content` when the history is condensed (set on
    /// the results of successful actions; `None` = always kept whole).
    #[serde(skip)]
    pub(crate) brief: Option<String>,
}

/// As the API has it: an assistant message that only calls tools has `content: null`.
impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("role", &self.role)?;
        if self.content.is_empty() && !self.tool_calls.is_empty() {
            map.serialize_entry("content", &())?;
        } else {
            map.serialize_entry("content", &self.content)?;
        }
        if !self.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &self.tool_calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        map.end()
    }
}

impl Message {
    pub(crate) fn new(role: &str, content: impl Into<String>) -> Message {
        Message {
            role: role.to_owned(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            brief: None,
        }
    }

    /// The answer to the native call `id`.
    pub(crate) fn tool(id: &str, content: impl Into<String>) -> Message {
        Message { tool_call_id: Some(id.to_owned()), ..Message::new("tool", content) }
    }
}

/// One native call: `{id, type: "function", function: {name, arguments}}`, `arguments` a JSON
/// text (an object is accepted too: some servers send one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ToolCall {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(rename = "type", default = "function")]
    pub(crate) kind: String,
    pub(crate) function: FunctionCall,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct FunctionCall {
    pub(crate) name: String,
    #[serde(default, deserialize_with = "arguments_text", serialize_with = "as_text")]
    pub(crate) arguments: String,
}

fn function() -> String {
    "function".into()
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn arguments_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => "{}".into(),
        other => other.to_string(),
    })
}

fn as_text<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(text)
}

/// Tokens one request used.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub(crate) prompt_tokens: u64,
    #[serde(default)]
    pub(crate) completion_tokens: u64,
    #[serde(default)]
    pub(crate) total_tokens: u64,
}

/// One model reply.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) message: Message,
    /// `stop`, `tool_calls`, `length`, … (empty when the server gives none).
    pub(crate) finish_reason: String,
    pub(crate) usage: Usage,
    /// The model the server says answered (else the configured one).
    pub(crate) model: String,
    /// Requests retried before this one answered.
    pub(crate) retries: u32,
}

/// Why a completion failed.
#[derive(Debug)]
pub(crate) enum ChatError {
    /// The request was too long for the model's context (HTTP 400 saying so).
    ContextLength(String),
    /// The endpoint refused a request carrying `tools` (a 4xx other than a context-length one).
    ToolsRejected(String),
    Other(Error),
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

const UNKNOWN: u8 = 0;
const TOOLS: u8 = 1;
const TEXT: u8 = 2;

/// The configured endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    key: Option<ApiKey>,
    pub(crate) model: String,
    pub(crate) max_tokens: Option<u32>,
    /// The model's context window (tokens), which the loop condenses the history to fit.
    pub(crate) context_window_tokens: u32,
    mode: ToolMode,
    /// What `auto` settled on, shared by every task of this agent.
    resolved: Arc<AtomicU8>,
    max_retries: u32,
    retry_base: Duration,
    retry_max_wait: Duration,
    /// Who serves the model, for the usage records: the endpoint's host and port.
    pub(crate) provider: String,
    prices: std::collections::BTreeMap<String, Price>,
}

/// One failed request, and whether it may be retried after a wait.
struct Failure {
    error: ChatError,
    retry: Option<Option<Duration>>,
}

impl Client {
    pub(crate) fn new(config: &LlmConfig) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| Error::Llm(format!("cannot build the HTTP client: {e}")))?;
        let base = config.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let resolved = match config.tool_mode {
            ToolMode::Auto => UNKNOWN,
            ToolMode::Tools => TOOLS,
            ToolMode::Text => TEXT,
        };
        Ok(Client {
            http,
            url: format!("{base}/v1/chat/completions"),
            key: config.api_key.clone(),
            model: config.model.clone(),
            max_tokens: config.max_tokens,
            context_window_tokens: config.context_window_tokens,
            mode: config.tool_mode,
            resolved: Arc::new(AtomicU8::new(resolved)),
            max_retries: config.max_retries,
            retry_base: config.retry_base,
            retry_max_wait: config.retry_max_wait,
            provider: provider(base),
            prices: config.prices.clone(),
        })
    }

    /// The price of `model` (as the server named it, else as configured).
    pub(crate) fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).or_else(|| self.prices.get(&self.model)).copied()
    }

    /// Values never to keep in a record: the key.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.key.iter().map(|k| k.expose().to_owned()).collect()
    }

    /// Whether requests carry `tools` (in `auto`, until the endpoint rejects them).
    pub(crate) fn uses_tools(&self) -> bool {
        self.resolved.load(Ordering::Relaxed) != TEXT
    }

    /// `tools` were rejected: in `auto`, speak text from now on (true); in `tools`, fail (false).
    pub(crate) fn fall_back_to_text(&self) -> bool {
        if self.mode != ToolMode::Auto {
            return false;
        }
        self.resolved.store(TEXT, Ordering::Relaxed);
        true
    }

    /// One completion (with `tools` when given); retries 429, 5xx, timeouts and connection
    /// failures at most `max_retries` times.
    pub(crate) async fn chat(&self, messages: &[Message], tools: Option<&Value>) -> Result<Completion, ChatError> {
        let mut retries = 0;
        loop {
            match self.chat_once(messages, tools).await {
                Ok(mut completion) => {
                    if tools.is_some() {
                        self.resolved.store(TOOLS, Ordering::Relaxed);
                    }
                    completion.retries = retries;
                    return Ok(completion);
                }
                Err(Failure { error, retry: Some(asked) }) if retries < self.max_retries => {
                    let wait = asked.unwrap_or_else(|| self.backoff(retries));
                    if wait > self.retry_max_wait {
                        let why = format!(
                            "the endpoint asks to retry after {}s, longer than llm.retry_max_wait_secs ({}s): {}",
                            wait.as_secs_f64().ceil(),
                            self.retry_max_wait.as_secs(),
                            describe(&error)
                        );
                        return Err(ChatError::Other(Error::Llm(why)));
                    }
                    retries += 1;
                    tracing::warn!(
                        retries,
                        wait_ms = wait.as_millis() as u64,
                        error = describe(&error),
                        "LLM request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(Failure { error, retry: Some(_) }) => {
                    let why = format!("{} (gave up after {retries} retries)", describe(&error));
                    return Err(ChatError::Other(Error::Llm(why)));
                }
                Err(Failure { error, retry: None }) => return Err(error),
            }
        }
    }

    fn backoff(&self, retries: u32) -> Duration {
        self.retry_base.saturating_mul(1 << retries.min(10)).min(self.retry_max_wait)
    }

    async fn chat_once(&self, messages: &[Message], tools: Option<&Value>) -> Result<Completion, Failure> {
        let mut body = serde_json::json!({ "model": self.model, "messages": messages, "temperature": 0 });
        if let Some(max) = self.max_tokens {
            body["max_tokens"] = max.into();
        }
        if let Some(tools) = tools {
            body["tools"] = tools.clone();
        }
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose());
        }
        let fail = |m: String, retry: Option<Option<Duration>>| Failure {
            error: ChatError::Other(Error::Llm(self.redact(&m))),
            retry,
        };
        let resp = req.send().await.map_err(|e| fail(format!("request failed: {e}"), Some(None)))?;
        let status = resp.status();
        let asked = retry_after(resp.headers());
        let text = resp.text().await.map_err(|e| fail(format!("reading the response: {e}"), Some(None)))?;
        let code = status.as_u16();
        if code == 400 && is_context_length(&text) {
            return Err(Failure { error: ChatError::ContextLength(self.redact(&text)), retry: None });
        }
        if status.is_server_error() || code == 429 {
            return Err(fail(format!("HTTP {status}: {}", snippet(&text)), Some(asked)));
        }
        if tools.is_some() && rejects_tools(code, &text) {
            let why = self.redact(&format!("HTTP {status}: {}", snippet(&text)));
            return Err(Failure { error: ChatError::ToolsRejected(why), retry: None });
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {}", snippet(&text)), None));
        }
        let parsed: Response = serde_json::from_str(&text)
            .map_err(|e| fail(format!("not a chat completion ({e}): {}", snippet(&text)), None))?;
        let choice =
            parsed.choices.into_iter().next().ok_or_else(|| fail("the response has no choices".into(), None))?;
        Ok(Completion {
            message: choice.message,
            finish_reason: choice.finish_reason.unwrap_or_default(),
            usage: parsed.usage.unwrap_or_default(),
            model: parsed.model.filter(|m| !m.is_empty()).unwrap_or_else(|| self.model.clone()),
            retries: 0,
        })
    }

    /// Errors may echo the request; make sure the key never leaves through one.
    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "<redacted>"),
            _ => text.to_owned(),
        }
    }
}

/// `host:port` of a base URL (`https://api.example.com/v1` → `api.example.com`).
fn provider(base: &str) -> String {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or_default();
    host.rsplit_once('@').map_or(host, |(_, h)| h).to_owned()
}

fn describe(error: &ChatError) -> String {
    match error {
        ChatError::ContextLength(s) | ChatError::ToolsRejected(s) => s.clone(),
        ChatError::Other(e) => e.to_string(),
    }
}

/// `retry-after-ms` (OpenAI), else `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
    {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default())
}

/// A 4xx refusing the request's `tools`: llama.cpp without `--jinja`, vLLM without
/// `--enable-auto-tool-choice`, Ollama's "does not support tools", a schema check (422)…; not an
/// authentication, unknown-model or rate-limit error, nor a 400 about something else.
fn rejects_tools(code: u16, body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    code == 422 || (code == 400 && (b.contains("tool") || b.contains("function")))
}

fn is_context_length(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("context_length")
        || b.contains("context length")
        || b.contains("maximum context")
        || b.contains("too many tokens")
}

fn snippet(text: &str) -> &str {
    &text[..text.floor_char_boundary(500)]
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_in_seconds_milliseconds_or_a_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past: retry now");
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert("retry-after", HeaderValue::from_str(&soon).unwrap());
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(25)), "{:?}", retry_after(&h));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        h.clear();
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn only_a_refusal_of_tools_switches_to_text() {
        assert!(rejects_tools(400, r#"{"error":{"message":"tools param requires --jinja flag"}}"#));
        assert!(rejects_tools(400, "\"auto\" tool choice requires --enable-auto-tool-choice"));
        assert!(rejects_tools(400, "registry.ollama.ai/library/gemma does not support tools"));
        assert!(rejects_tools(422, "extra fields not permitted"));
        assert!(!rejects_tools(400, "Unsupported parameter: 'max_tokens'"), "another 400 fails clearly");
        assert!(!rejects_tools(401, "invalid api key for tools"));
        assert!(!rejects_tools(404, "the model `x` does not exist"));
    }

    #[test]
    fn tool_calls_round_trip_the_wire_format() {
        let wire = serde_json::json!({
            "role": "assistant", "content": null,
            "tool_calls": [{ "id": "call_1", "type": "function",
                "function": { "name": "read_file", "arguments": "{\"path\":\"a\"}" } },
                { "id": "call_2", "type": "function", "function": { "name": "build", "arguments": {} } }],
        });
        let m: Message = serde_json::from_value(wire).unwrap();
        assert_eq!(m.content, "");
        assert_eq!(m.tool_calls[1].function.arguments, "{}", "an object is kept as its JSON text");
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["content"], Value::Null, "a message that only calls tools has no content");
        assert_eq!(back["tool_calls"][0]["function"]["arguments"], "{\"path\":\"a\"}");
        assert_eq!(back["tool_calls"][0]["type"], "function");
        assert!(back.get("tool_call_id").is_none());
        let answer = serde_json::to_value(Message::tool("call_1", "ok")).unwrap();
        assert_eq!(answer, serde_json::json!({ "role": "tool", "content": "ok", "tool_call_id": "call_1" }));
        assert!(serde_json::to_value(Message::new("user", "x")).unwrap().get("tool_calls").is_none());
    }
}

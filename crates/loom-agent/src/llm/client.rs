//! A minimal OpenAI-compatible chat completions client: `POST {base}/v1/chat/completions`,
//! bearer key in the header only, token usage read from the response.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::config::{ApiKey, LlmConfig};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) role: String,
    pub(crate) content: String,
}

impl Message {
    pub(crate) fn new(role: &str, content: impl Into<String>) -> Message {
        Message { role: role.to_owned(), content: content.into() }
    }
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

/// Why a completion failed.
#[derive(Debug)]
pub(crate) enum ChatError {
    /// The request was too long for the model's context (HTTP 400 saying so).
    ContextLength(String),
    Other(Error),
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

/// The configured endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    key: Option<ApiKey>,
    pub(crate) model: String,
    max_tokens: Option<u32>,
}

const RETRIES: u32 = 2;

impl Client {
    pub(crate) fn new(config: &LlmConfig) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| Error::Llm(format!("cannot build the HTTP client: {e}")))?;
        let base = config.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let url = format!("{base}/v1/chat/completions");
        let (key, model, max_tokens) = (config.api_key.clone(), config.model.clone(), config.max_tokens);
        Ok(Client { http, url, key, model, max_tokens })
    }

    /// One completion; retries server errors and connection failures a couple of times.
    pub(crate) async fn chat(&self, model: &str, messages: &[Message]) -> Result<(String, Usage), ChatError> {
        let mut attempt = 0;
        loop {
            match self.chat_once(model, messages).await {
                Err(ChatError::Other(Error::Llm(e))) if attempt < RETRIES && e.starts_with("retryable") => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "LLM request failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn chat_once(&self, model: &str, messages: &[Message]) -> Result<(String, Usage), ChatError> {
        let mut body = serde_json::json!({ "model": model, "messages": messages, "temperature": 0 });
        if let Some(max) = self.max_tokens {
            body["max_tokens"] = max.into();
        }
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose());
        }
        let other = |m: String| ChatError::Other(Error::Llm(self.redact(&m)));
        let resp = req.send().await.map_err(|e| other(format!("retryable: request failed: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| other(format!("retryable: reading the response: {e}")))?;
        if status.as_u16() == 400 && is_context_length(&text) {
            return Err(ChatError::ContextLength(self.redact(&text)));
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(other(format!("retryable: HTTP {status}: {}", snippet(&text))));
        }
        if !status.is_success() {
            return Err(other(format!("HTTP {status}: {}", snippet(&text))));
        }
        let parsed: Response = serde_json::from_str(&text)
            .map_err(|e| other(format!("not a chat completion ({e}): {}", snippet(&text))))?;
        let content = parsed.choices.into_iter().next().map(|c| c.message.content);
        let content = content.ok_or_else(|| other("the response has no choices".into()))?;
        Ok((content, parsed.usage.unwrap_or_default()))
    }

    /// Errors may echo the request; make sure the key never leaves through one.
    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "<redacted>"),
            _ => text.to_owned(),
        }
    }
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

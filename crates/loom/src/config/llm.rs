//! The `[llm]` section: the OpenAI-compatible endpoint the agents' `llm` executor talks to. The
//! key itself is never a configuration value: it is read from the environment variable named by
//! `api_key_env` (default `LOOM_LLM_API_KEY`) or from `api_key_file`, once, when the
//! configuration loads, and it is shown only as `****`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use loom_agent::{ApiKey, ToolMode};
use serde::{Deserialize, Serialize};

/// The variable the key is read from unless `api_key_env` names another.
pub const DEFAULT_KEY_ENV: &str = "LOOM_LLM_API_KEY";

/// The endpoint, where its key comes from, and the action loop's limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `http(s)://host:port`, with or without a trailing `/v1`.
    pub base_url: String,
    /// The model name sent with every request.
    pub model: String,
    /// Name of the environment variable that holds the API key (unset or empty: no key).
    pub api_key_env: String,
    /// A file whose content (trimmed) is the API key; wins over `api_key_env`.
    pub api_key_file: Option<PathBuf>,
    /// One request, the whole reply included.
    pub request_timeout_secs: u64,
    /// Establishing the connection.
    pub connect_timeout_secs: u64,
    /// Tokens of one reply, sent as `max_tokens` with each request.
    pub max_tokens: Option<u32>,
    /// Model replies per task.
    pub max_iterations: u32,
    /// `auto` (native tool calls, falling back to JSON in the text once the endpoint rejects
    /// them), `tools` (native only) or `text` (JSON in the text only).
    pub tool_mode: String,
    /// Retries of one request on 429, 5xx, timeouts and connection failures.
    pub max_retries: u32,
    /// The longest wait before a retry; a `Retry-After` asking for more fails the request.
    pub retry_max_wait_secs: u64,
    /// The model's context window in tokens; past 75 % of it older action results are
    /// condensed to one line each.
    pub context_window_tokens: u32,
    /// `[llm.prices."model-name"]`: `prompt_per_mtok` and `completion_per_mtok`, US dollars per
    /// million tokens; each attempt's cost is computed from them (0 for a model without a price).
    pub prices: std::collections::BTreeMap<String, loom_agent::Price>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        let agent = loom_agent::LlmConfig::default();
        Self {
            base_url: agent.base_url,
            model: agent.model,
            api_key_env: DEFAULT_KEY_ENV.to_owned(),
            api_key_file: None,
            request_timeout_secs: agent.request_timeout.as_secs(),
            connect_timeout_secs: agent.connect_timeout.as_secs(),
            max_tokens: agent.max_tokens,
            max_iterations: agent.max_iterations,
            tool_mode: agent.tool_mode.as_str().to_owned(),
            max_retries: agent.max_retries,
            retry_max_wait_secs: agent.retry_max_wait.as_secs(),
            context_window_tokens: agent.context_window_tokens,
            prices: agent.prices,
        }
    }
}

/// Where the key was found, for `loom config show`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedKey {
    pub key: ApiKey,
    pub source: String,
}

impl LlmConfig {
    /// Checks the values and reads the key (from `api_key_file`, else `api_key_env`).
    pub fn load_key(&self) -> anyhow::Result<Option<LoadedKey>> {
        self.validate()?;
        if let Some(file) = &self.api_key_file {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!("invalid configuration: llm.api_key_file {} cannot be read", file.display())
            })?;
            let key = text.trim();
            anyhow::ensure!(!key.is_empty(), "invalid configuration: llm.api_key_file {} is empty", file.display());
            return Ok(Some(LoadedKey { key: ApiKey::new(key), source: format!("file {}", file.display()) }));
        }
        match std::env::var(&self.api_key_env) {
            Ok(key) if !key.trim().is_empty() => {
                Ok(Some(LoadedKey { key: ApiKey::new(key.trim()), source: format!("${}", self.api_key_env) }))
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("invalid configuration: ${} (llm.api_key_env) is not valid UTF-8", self.api_key_env)
            }
        }
    }

    /// Checks the values (not the key).
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = url::Url::parse(&self.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        anyhow::ensure!(
            url.is_some(),
            "invalid configuration: llm.base_url must be an http:// or https:// URL, not {:?}",
            self.base_url
        );
        anyhow::ensure!(!self.model.trim().is_empty(), "invalid configuration: llm.model must not be empty");
        let name = &self.api_key_env;
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        anyhow::ensure!(
            valid_name,
            "invalid configuration: llm.api_key_env {name:?} is not an environment variable name"
        );
        // Every other LOOM_* variable is a configuration key, so it cannot also hold the key.
        anyhow::ensure!(
            name == DEFAULT_KEY_ENV || !name.starts_with("LOOM_"),
            "invalid configuration: llm.api_key_env {name:?}: LOOM_* variables are configuration keys; use \
             {DEFAULT_KEY_ENV} or a name outside LOOM_"
        );
        anyhow::ensure!(
            self.request_timeout_secs > 0 && self.connect_timeout_secs > 0 && self.max_iterations > 0,
            "invalid configuration: llm.request_timeout_secs, connect_timeout_secs and max_iterations must be at \
             least 1"
        );
        anyhow::ensure!(self.max_tokens != Some(0), "invalid configuration: llm.max_tokens must be at least 1");
        self.tool_mode()?;
        anyhow::ensure!(
            self.retry_max_wait_secs > 0,
            "invalid configuration: llm.retry_max_wait_secs must be at least 1"
        );
        anyhow::ensure!(
            self.context_window_tokens >= 1024 && self.max_tokens.is_none_or(|m| m < self.context_window_tokens),
            "invalid configuration: llm.context_window_tokens must be at least 1024 and more than llm.max_tokens, \
             not {}",
            self.context_window_tokens
        );
        for (model, price) in &self.prices {
            let fine = |v: f64| v.is_finite() && v >= 0.0;
            anyhow::ensure!(
                fine(price.prompt_per_mtok) && fine(price.completion_per_mtok),
                "invalid configuration: llm.prices.{model:?}: prices must be finite and at least 0"
            );
        }
        Ok(())
    }

    fn tool_mode(&self) -> anyhow::Result<ToolMode> {
        ToolMode::parse(&self.tool_mode).map_err(|_| {
            anyhow::anyhow!(
                "invalid configuration: llm.tool_mode must be \"auto\", \"tools\" or \"text\", not {:?}",
                self.tool_mode
            )
        })
    }

    /// The agent's LLM settings with `key`.
    pub fn agent(&self, key: Option<&LoadedKey>) -> loom_agent::LlmConfig {
        loom_agent::LlmConfig {
            base_url: self.base_url.clone(),
            api_key: key.map(|k| k.key.clone()),
            model: self.model.clone(),
            max_iterations: self.max_iterations,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            max_tokens: self.max_tokens,
            // Checked when the configuration loaded.
            tool_mode: self.tool_mode().unwrap_or_default(),
            max_retries: self.max_retries,
            retry_max_wait: Duration::from_secs(self.retry_max_wait_secs),
            context_window_tokens: self.context_window_tokens,
            prices: self.prices.clone(),
            ..loom_agent::LlmConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LlmConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn tool_mode_max_tokens_and_retries_reach_the_agent() {
        let agent = LlmConfig::default().agent(None);
        assert_eq!((agent.tool_mode, agent.max_tokens, agent.max_retries), (ToolMode::Auto, Some(4096), 3));
        let c = parse("tool_mode = \"text\"\nmax_tokens = 256\nmax_retries = 0\nretry_max_wait_secs = 5\n");
        c.validate().unwrap();
        let agent = c.agent(None);
        assert_eq!((agent.tool_mode, agent.max_tokens, agent.max_retries), (ToolMode::Text, Some(256), 0));
        assert_eq!(agent.retry_max_wait, Duration::from_secs(5));
        assert_eq!(parse("tool_mode = \"tools\"").agent(None).tool_mode, ToolMode::Tools);
    }

    #[test]
    fn bad_tool_modes_and_retry_bounds_are_clear_errors() {
        let err = parse("tool_mode = \"native\"").validate().unwrap_err().to_string();
        assert!(err.contains("llm.tool_mode must be \"auto\", \"tools\" or \"text\", not \"native\""), "{err}");
        let err = parse("retry_max_wait_secs = 0").validate().unwrap_err().to_string();
        assert!(err.contains("llm.retry_max_wait_secs must be at least 1"), "{err}");
        let err = parse("context_window_tokens = 2048\nmax_tokens = 4096").validate().unwrap_err().to_string();
        assert!(err.contains("llm.context_window_tokens must be at least 1024 and more than"), "{err}");
        assert_eq!(LlmConfig::default().agent(None).context_window_tokens, 32768);
        assert_eq!(parse("context_window_tokens = 128000").agent(None).context_window_tokens, 128000);
    }

    #[test]
    fn prices_per_model_reach_the_agent_and_are_checked() {
        let c = parse("[prices.\"gpt-x\"]\nprompt_per_mtok = 2.5\ncompletion_per_mtok = 10\n");
        c.validate().unwrap();
        let price = c.agent(None).prices["gpt-x"];
        assert!((price.cost(1_000_000, 100_000) - 3.5).abs() < 1e-9, "{price:?}");
        let err = parse("[prices.m]\nprompt_per_mtok = -1").validate().unwrap_err().to_string();
        assert!(err.contains("llm.prices.\"m\": prices must be finite and at least 0"), "{err}");
        assert!(toml::from_str::<LlmConfig>("[prices.m]\nprompt = 1").is_err(), "unknown price keys are refused");
    }
}

//! The record of one attempt's conversation, as it is stored with the attempt and served by
//! `GET /beads/{id}/conversation`: every message as it was first sent or received (the system
//! prompt, the task, each reply with its calls, each result), before any condensing, each
//! redacted (`crate::redact`) and cut to [`MESSAGE_MAX`] characters, and the whole kept under
//! [`TOTAL_MAX`] bytes of JSON by leaving out the oldest messages after the task (a `note`
//! says how many).

use serde_json::{Value, json};

use super::client::Message;
use crate::redact::Redactor;

/// Characters kept of one message's content (and of one call's arguments).
pub(crate) const MESSAGE_MAX: usize = 4000;
/// Bytes of the whole conversation as JSON: it travels in one result context entry.
pub(crate) const TOTAL_MAX: usize = 60 * 1024;
/// Messages at the head never left out: the system prompt and the task.
const HEAD: usize = 2;

#[derive(Debug, Default)]
pub(crate) struct Transcript {
    pub(crate) redactor: Redactor,
    messages: Vec<Value>,
}

impl Transcript {
    pub(crate) fn new(redactor: Redactor) -> Transcript {
        Transcript { redactor, messages: Vec::new() }
    }

    /// Keeps `m` (said during model turn `turn`).
    pub(crate) fn record(&mut self, m: &Message, turn: u32) {
        let mut entry = json!({ "role": m.role, "content": self.cut(&m.content), "turn": turn });
        if !m.tool_calls.is_empty() {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| json!({ "id": c.id, "name": c.function.name, "arguments": self.cut(&c.function.arguments) }))
                .collect();
            entry["tool_calls"] = Value::Array(calls);
        }
        if let Some(id) = &m.tool_call_id {
            entry["tool_call_id"] = id.as_str().into();
        }
        self.messages.push(entry);
    }

    fn cut(&self, text: &str) -> String {
        let text = self.redactor.redact(text);
        let n = text.chars().count();
        if n <= MESSAGE_MAX {
            return text;
        }
        let head: String = text.chars().take(MESSAGE_MAX).collect();
        format!("{head}… [{} more characters not kept]", n - MESSAGE_MAX)
    }

    /// The conversation as a JSON array within [`TOTAL_MAX`].
    pub(crate) fn finish(&self) -> String {
        let sizes: Vec<usize> = self.messages.iter().map(|m| m.to_string().len() + 1).collect();
        let mut total: usize = sizes.iter().sum::<usize>() + 2;
        let mut dropped = 0;
        let room = TOTAL_MAX - 200; // the note
        while total > room && HEAD + dropped + 1 < self.messages.len() {
            total -= sizes[HEAD + dropped];
            dropped += 1;
        }
        let mut out: Vec<Value> = Vec::with_capacity(self.messages.len() - dropped + 1);
        out.extend(self.messages.iter().take(HEAD).cloned());
        if dropped > 0 {
            let note = format!("{dropped} older messages were left out to keep the conversation within 60 KiB");
            out.push(json!({ "role": "note", "content": note }));
        }
        out.extend(self.messages.iter().skip(HEAD + dropped).cloned());
        let text = Value::Array(out).to_string();
        if text.len() > TOTAL_MAX {
            // The head alone is too big (a huge system prompt): keep its start only.
            let head: Vec<Value> = self
                .messages
                .iter()
                .take(HEAD)
                .map(|m| json!({ "role": m["role"], "content": cap(m["content"].as_str().unwrap_or_default()) }))
                .collect();
            return Value::Array(head).to_string();
        }
        text
    }
}

fn cap(s: &str) -> String {
    s.chars().take(TOTAL_MAX / 4).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_redacted_cut_and_the_whole_is_bounded() {
        let mut t = Transcript::new(Redactor::new(["sk-own-key-xyz".to_owned()]));
        t.record(&Message::new("system", "S"), 0);
        t.record(&Message::new("user", "TASK with sk-own-key-xyz"), 0);
        for i in 0..100 {
            t.record(&Message::new("assistant", format!("{i} {}", "x".repeat(5000))), i);
        }
        let all: Vec<Value> = serde_json::from_str(&t.finish()).unwrap();
        let text = t.finish();
        assert!(text.len() <= TOTAL_MAX, "{}", text.len());
        assert!(!text.contains("sk-own-key-xyz"));
        assert_eq!(all[0]["content"], "S");
        assert_eq!(all[1]["content"], "TASK with <redacted>");
        assert_eq!(all[2]["role"], "note", "{}", all[2]);
        assert!(all.last().unwrap()["content"].as_str().unwrap().starts_with("99 "), "the latest is kept");
        assert!(all[3]["content"].as_str().unwrap().ends_with("more characters not kept]"));
    }
}

//! Reads the answer out of a provider's response as it passes, so that a miss can be stored
//! once the response has ended. Nothing is held back: the plugin copies what it reads.
//!
//! Only complete, plain answers are kept: a 200 with one choice of text that ended with
//! `finish_reason: stop` (streams also with `data: [DONE]`). Errors, tool calls, answers cut
//! by `max_tokens` or by a dropped connection, and answers longer than the bound are not.

use crate::entry::Entry;
use aigw_shared::body::{is_event_stream, is_json, BodyBuffer};
use aigw_shared::openai::{ChatChunk, ChatCompletion};
use aigw_shared::sse::{Decoder, Event};

enum Reader {
    Stream(Decoder),
    Json(BodyBuffer),
}

pub struct Capture {
    reader: Option<Reader>,
    max_content: usize,
    content: String,
    model: String,
    finish: Option<String>,
    done: bool,
    tokens: (u64, u64),
    /// Why the answer cannot be stored, once known (then nothing more is read).
    refused: Option<&'static str>,
}

impl Capture {
    /// `None` when the response cannot be a cacheable answer (status, content type).
    pub fn new(
        status: u16,
        content_type: &str,
        max_content: usize,
    ) -> Result<Capture, &'static str> {
        if status != 200 {
            return Err("response is not a 200");
        }
        let reader = if is_event_stream(content_type) {
            Reader::Stream(Decoder::with_max_event_bytes(max_content + (64 << 10)))
        } else if is_json(content_type) {
            // The answer plus room for the JSON around it.
            Reader::Json(BodyBuffer::new(max_content * 2 + (16 << 10)))
        } else {
            return Err("response is neither JSON nor an event stream");
        };
        Ok(Capture {
            reader: Some(reader),
            max_content,
            content: String::new(),
            model: String::new(),
            finish: None,
            done: false,
            tokens: (0, 0),
            refused: None,
        })
    }

    /// Whether the rest of the body still needs reading.
    pub fn wants_body(&self) -> bool {
        self.reader.is_some()
    }

    /// The stream has delivered `data: [DONE]`: the answer is whole and can be stored before
    /// the client has read it.
    pub fn complete(&self) -> bool {
        self.done && self.refused.is_none()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        match &mut self.reader {
            Some(Reader::Stream(decoder)) => {
                let mut events = Vec::new();
                decoder.push_with(chunk, |e| events.push(e));
                for event in events {
                    self.on_event(&event);
                }
            }
            Some(Reader::Json(buffer)) => {
                let fits = buffer.push(chunk);
                if !fits {
                    self.refuse("answer is larger than maxAnswerBytes");
                }
            }
            None => {}
        }
    }

    /// The answer to store, or why there is none.
    pub fn finish(mut self) -> Result<Entry, &'static str> {
        if let Some(Reader::Stream(decoder)) = &mut self.reader {
            if let Some(event) = decoder.finish() {
                self.on_event(&event);
            }
        }
        if let Some(Reader::Json(buffer)) = self.reader.take() {
            self.read_completion(buffer.get().unwrap_or_default());
        } else if self.refused.is_none() && !self.done {
            self.refuse("stream ended without [DONE]");
        }
        if let Some(why) = self.refused {
            return Err(why);
        }
        match self.finish.as_deref() {
            Some("stop") => {}
            Some("tool_calls" | "function_call") => return Err("answer is a tool call"),
            Some(_) => return Err("answer did not finish with stop"),
            None => return Err("answer has no finish_reason"),
        }
        if self.content.is_empty() {
            return Err("answer has no text");
        }
        Ok(Entry {
            content: self.content,
            model: self.model,
            prompt_tokens: self.tokens.0,
            completion_tokens: self.tokens.1,
        })
    }

    fn refuse(&mut self, why: &'static str) {
        self.refused.get_or_insert(why);
        self.reader = None;
        self.content = String::new();
    }

    fn on_event(&mut self, event: &Event) {
        if self.refused.is_some() {
            return;
        }
        if event.is_done() {
            self.done = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<ChatChunk>(&event.data) else {
            return self.refuse("stream event is not a chat completion chunk");
        };
        if self.model.is_empty() {
            self.model = chunk.model;
        }
        if let Some(usage) = chunk.usage {
            self.tokens = (usage.prompt_tokens, usage.completion_tokens);
        }
        for choice in chunk.choices {
            if choice.index != 0 {
                return self.refuse("answer has several choices");
            }
            if choice
                .delta
                .tool_calls
                .as_ref()
                .is_some_and(|t| !t.is_empty())
            {
                return self.refuse("answer is a tool call");
            }
            if let Some(text) = &choice.delta.content {
                if self.content.len() + text.len() > self.max_content {
                    return self.refuse("answer is larger than maxAnswerBytes");
                }
                self.content.push_str(text);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
            }
        }
    }

    fn read_completion(&mut self, body: &[u8]) {
        if self.refused.is_some() {
            return;
        }
        let Ok(completion) = serde_json::from_slice::<ChatCompletion>(body) else {
            return self.refuse("response is not a chat completion");
        };
        let [choice] = completion.choices.as_slice() else {
            return self.refuse("answer has several choices");
        };
        if choice
            .message
            .tool_calls
            .as_ref()
            .is_some_and(|t| !t.is_empty())
        {
            return self.refuse("answer is a tool call");
        }
        let text = choice
            .message
            .content
            .as_ref()
            .map(|c| c.text())
            .unwrap_or_default();
        if text.len() > self.max_content {
            return self.refuse("answer is larger than maxAnswerBytes");
        }
        self.content = text;
        self.finish = choice.finish_reason.clone();
        self.model = completion.model;
        if let Some(usage) = completion.usage {
            self.tokens = (usage.prompt_tokens, usage.completion_tokens);
        }
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSE: &str = "text/event-stream";

    fn chunk(delta: &str, finish: Option<&str>) -> String {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n")
    }

    fn stream(parts: &[&str], done: bool) -> String {
        let mut s = chunk(r#"{"role":"assistant","content":""}"#, None);
        for p in parts {
            s.push_str(&chunk(&format!("{{\"content\":\"{p}\"}}"), None));
        }
        s.push_str(&chunk("{}", Some("stop")));
        s.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n");
        if done {
            s.push_str("data: [DONE]\n\n");
        }
        s
    }

    fn captured(status: u16, ct: &str, body: &str, max: usize) -> Result<Entry, &'static str> {
        let mut c = Capture::new(status, ct, max)?;
        // Any split of the body gives the same result.
        for piece in body.as_bytes().chunks(7) {
            c.push(piece);
        }
        c.finish()
    }

    #[test]
    fn a_complete_stream_is_kept() {
        let e = captured(200, SSE, &stream(&["Hel", "lo"], true), 100).unwrap();
        assert_eq!(e.content, "Hello");
        assert_eq!((e.prompt_tokens, e.completion_tokens), (9, 2));
        assert_eq!(e.model, "gpt-4o-2024");
    }

    #[test]
    fn streams_that_are_not_kept() {
        assert_eq!(
            captured(200, SSE, &stream(&["Hel", "lo"], false), 100).unwrap_err(),
            "stream ended without [DONE]"
        );
        assert_eq!(
            captured(200, SSE, &stream(&["Hel", "lo"], true), 4).unwrap_err(),
            "answer is larger than maxAnswerBytes"
        );
        let tools = chunk(
            r#"{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":""}}]}"#,
            None,
        ) + &chunk("{}", Some("tool_calls"))
            + "data: [DONE]\n\n";
        assert_eq!(
            captured(200, SSE, &tools, 100).unwrap_err(),
            "answer is a tool call"
        );
        let cut =
            chunk(r#"{"content":"Hel"}"#, None) + &chunk("{}", Some("length")) + "data: [DONE]\n\n";
        assert_eq!(
            captured(200, SSE, &cut, 100).unwrap_err(),
            "answer did not finish with stop"
        );
        assert!(Capture::new(429, SSE, 100).is_err());
        assert!(Capture::new(200, "text/html", 100).is_err());
    }

    #[test]
    fn json_answers() {
        let ok = r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
        let e = captured(200, "application/json", ok, 100).unwrap();
        assert_eq!(
            (e.content.as_str(), e.prompt_tokens, e.completion_tokens),
            ("Paris", 5, 1)
        );
        let tool = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
        assert_eq!(
            captured(200, "application/json", tool, 100).unwrap_err(),
            "answer is a tool call"
        );
        assert_eq!(
            captured(200, "application/json", ok, 3).unwrap_err(),
            "answer is larger than maxAnswerBytes"
        );
        assert!(captured(200, "application/json", "{\"error\":{}}", 100).is_err());
    }
}

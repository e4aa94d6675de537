//! A small blocking HTTP client for tests: whole responses, and streams read as they arrive
//! with the time of the first byte.

use serde_json::Value;
use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .no_proxy()
            .build()
            .expect("http client")
    })
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The token quota left, as ai-token-ratelimit's `x-ratelimit-remaining-tokens` says.
    pub fn remaining_tokens(&self) -> u64 {
        self.header("x-ratelimit-remaining-tokens")
            .unwrap_or_else(|| panic!("no x-ratelimit-remaining-tokens: {:?}", self.headers))
            .parse()
            .unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

fn headers_of(response: &reqwest::blocking::Response) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn send(request: reqwest::blocking::RequestBuilder) -> reqwest::Result<Reply> {
    let response = request.send()?;
    let status = response.status().as_u16();
    let headers = headers_of(&response);
    let body = response.bytes()?.to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub fn get(url: &str) -> reqwest::Result<Reply> {
    send(client().get(url))
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// POSTs raw bytes.
pub fn post(url: &str, body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().post(url).body(body.into());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request).unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// POSTs JSON (with `content-type: application/json`).
pub fn post_json(url: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    post(url, serde_json::to_vec(body).expect("json"), &all)
}

/// A streamed response as the client saw it.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// From sending the request to the first body byte.
    pub first_byte: Option<Duration>,
    /// Each read of the body: when it ended and how many bytes had arrived by then.
    pub reads: Vec<(Duration, usize)>,
    pub total: Duration,
    /// Why the body ended before its end (the connection was cut), for
    /// [`post_stream_may_break`]; `None` when the body ended as HTTP says a body ends.
    pub cut: Option<String>,
}

impl Streamed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of the SSE body, in order (`[DONE]` included).
    pub fn data(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .split("\n\n")
            .flat_map(|event| {
                let lines: Vec<&str> = event
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix("data:")
                            .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    })
                    .collect();
                (!lines.is_empty()).then(|| lines.join("\n"))
            })
            .collect()
    }

    /// The JSON chunks (everything but `[DONE]`).
    pub fn chunks(&self) -> Vec<Value> {
        self.data()
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| {
                serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk is not JSON ({e}): {d}"))
            })
            .collect()
    }

    /// Named events (`event:` + JSON `data:`), as Anthropic streams them.
    pub fn events(&self) -> Vec<(String, Value)> {
        String::from_utf8_lossy(&self.body)
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let kind = e
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("")
                    .to_string();
                let data = e
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap_or("null");
                (
                    kind,
                    serde_json::from_str(data).unwrap_or_else(|err| panic!("{err}: {data}")),
                )
            })
            .collect()
    }

    /// When the body first held `needle` whole, from sending the request.
    pub fn arrival_of(&self, needle: &str) -> Option<Duration> {
        let end = String::from_utf8_lossy(&self.body).find(needle)? + needle.len();
        self.reads
            .iter()
            .find(|(_, arrived)| *arrived >= end)
            .map(|(at, _)| *at)
    }

    /// The streamed assistant text, concatenated.
    pub fn text(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }
}

/// POSTs JSON and reads the answer as it streams, counting bytes instead of keeping them when
/// `keep` is false (for very large streams).
pub fn post_stream(url: &str, body: &Value, headers: &[(&str, &str)]) -> Streamed {
    stream_inner(url, body, headers, true, false).0
}

/// Like [`post_stream`], for answers that may break off: a body cut short (a connection closed
/// or reset before the end of a chunked body) is kept with the reason in `cut`.
pub fn post_stream_may_break(url: &str, body: &Value, headers: &[(&str, &str)]) -> Streamed {
    stream_inner(url, body, headers, true, true).0
}

/// Like [`post_stream`] but only counts the bytes; returns the count.
pub fn post_stream_count(url: &str, body: &Value, headers: &[(&str, &str)]) -> (Streamed, u64) {
    stream_inner(url, body, headers, false, false)
}

fn stream_inner(
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
    keep: bool,
    may_break: bool,
) -> (Streamed, u64) {
    let start = Instant::now();
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("json"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let headers = headers_of(&response);
    let mut kept = Vec::new();
    let mut count = 0u64;
    let mut first_byte = None;
    let mut reads = Vec::new();
    let mut cut = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match response.read(&mut buf) {
            Ok(n) => n,
            Err(e) if may_break => {
                cut = Some(error_chain(&e));
                break;
            }
            Err(e) => panic!("reading stream: {e}"),
        };
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| start.elapsed());
        count += n as u64;
        if keep {
            kept.extend_from_slice(&buf[..n]);
            reads.push((start.elapsed(), kept.len()));
        }
    }
    let streamed = Streamed {
        status,
        headers,
        body: kept,
        first_byte,
        reads,
        total: start.elapsed(),
        cut,
    };
    (streamed, count)
}

/// An error with its sources ("error decoding response body: … incomplete chunked message").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The arguments of the first tool call of an OpenAI stream, from its fragments.
pub fn tool_arguments(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Sends any method with raw bytes (empty for none).
pub fn request(
    method: &str,
    url: &str,
    body: impl Into<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client().request(method, url).body(body.into());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request).unwrap_or_else(|e| panic!("{url}: {e}"))
}

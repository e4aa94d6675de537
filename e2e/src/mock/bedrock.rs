//! A mock of AWS Bedrock Runtime's Converse API (`POST /model/{modelId}/converse` and
//! `/converse-stream`), following the API reference and the recorded transcripts:
//!
//! - every request must be signed with SigV4 for the mock's credentials, region and service
//!   `bedrock`, and the mock checks the signature the way AWS documents it: it rebuilds the
//!   canonical request from what it received (method, path encoded once more, query, the
//!   signed headers, the body's SHA-256), the string to sign and the signing key, and compares
//!   (403 `InvalidSignatureException` with AWS's message on a mismatch); or carry a Bedrock API
//!   key as `Authorization: Bearer`;
//! - request checks with Bedrock's `ValidationException` messages (a user turn first, turns
//!   alternating, no blank text, `toolConfig` when tool blocks are present, unknown fields);
//! - answers: text, or a `toolUse` of the first tool when the last user turn asks (not only
//!   `toolResult`s); `stopReason`, `usage`, `metrics`;
//! - streams in AWS event-stream binary framing (`application/vnd.amazon.eventstream`): each
//!   message with its prelude and message CRC32, the `:event-type` / `:content-type` /
//!   `:message-type` headers, and the random-length `p` padding field real streams carry.
//!
//! Per-request knobs: see [`super::knobs`]; also `x-mock-exception: <type>` (an exception
//! message after `messageStart`) and `x-mock-corrupt-frame: <n>` (the n-th message, from 0,
//! goes out with a wrong message CRC).

use super::knobs::Knobs;
use super::openai::completion::{first_parameter, fragments};
use super::openai::content_pieces;
use super::{Provider, Recorded, Reply};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Model ids starting with this are refused as invalid.
pub const UNKNOWN_MODEL_PREFIX: &str = "does-not-exist";
const TOP_LEVEL: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
];

pub struct BedrockMock {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// A Bedrock API key accepted as `Authorization: Bearer` instead of a signature.
    pub api_key: Option<String>,
    pub chunks: usize,
    pub delay: Duration,
    pub first_delay: Duration,
}

impl BedrockMock {
    pub fn new(access_key_id: &str, secret_access_key: &str, region: &str) -> Self {
        BedrockMock {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            region: region.into(),
            api_key: None,
            chunks: 5,
            delay: Duration::ZERO,
            first_delay: Duration::ZERO,
        }
    }

    pub fn with_api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.into());
        self
    }

    fn check_auth(&self, request: &Recorded) -> Result<(), Reply> {
        let Some(authorization) = request.header("authorization") else {
            return Err(error(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        if let Some(key) = authorization.strip_prefix("Bearer ") {
            return match &self.api_key {
                Some(expected) if key == expected => Ok(()),
                _ => Err(error(
                    403,
                    "UnrecognizedClientException",
                    "Invalid API Key format: Must start with pre-defined prefix",
                )),
            };
        }
        verify_sigv4(
            request,
            authorization,
            &self.access_key_id,
            &self.secret_access_key,
            &self.region,
        )
        .map_err(|(kind, message)| error(403, kind, &message))
    }

    fn converse(&self, request: &Recorded, model: &str, stream: bool) -> Reply {
        let body = match validate(&request.body) {
            Ok(body) => body,
            Err(message) => return error(400, "ValidationException", &message),
        };
        if model.starts_with(UNKNOWN_MODEL_PREFIX) {
            return error(
                400,
                "ValidationException",
                "The provided model identifier is invalid.",
            );
        }
        let knobs = Knobs::read(request, self.chunks, self.delay, self.first_delay);
        if let Some(status) = knobs.status {
            let kind = if status == 429 {
                "ThrottlingException"
            } else {
                "InternalServerException"
            };
            return error(status, kind, &format!("mock error with status {status}"));
        }
        let answer = Answer::new(&body, &knobs);
        if !stream {
            return Reply::json(200, &answer.whole());
        }
        let corrupt: Option<usize> = request
            .header("x-mock-corrupt-frame")
            .and_then(|v| v.parse().ok());
        let mut events = answer.events(&knobs);
        if let Some(kind) = request.header("x-mock-exception") {
            events.truncate(1);
            events.push((
                Duration::ZERO,
                encode(
                    &[
                        (":exception-type", kind),
                        (":content-type", "application/json"),
                        (":message-type", "exception"),
                    ],
                    br#"{"message":"Too many tokens, please wait before trying again."}"#,
                ),
            ));
        }
        let pieces: Vec<(Duration, Bytes)> = events
            .into_iter()
            .enumerate()
            .flat_map(|(i, (pause, mut frame))| {
                if corrupt == Some(i) {
                    let last = frame.len() - 1;
                    frame[last] ^= 0xff;
                }
                // Each message in two writes, the first inside its prelude.
                let rest = frame.split_off(5);
                [
                    (pause, Bytes::from(frame)),
                    (Duration::ZERO, Bytes::from(rest)),
                ]
            })
            .collect();
        Reply::Stream {
            status: 200,
            headers: vec![
                (
                    "content-type".into(),
                    "application/vnd.amazon.eventstream".into(),
                ),
                (
                    "x-amzn-requestid".into(),
                    "00000000-0000-0000-0000-000000000000".into(),
                ),
            ],
            pieces: Box::new(pieces.into_iter()),
        }
    }
}

impl Provider for BedrockMock {
    fn handle(&self, request: &Recorded) -> Reply {
        let path = request.path.split('?').next().unwrap_or("");
        let Some((model, operation)) = path
            .strip_prefix("/model/")
            .and_then(|rest| rest.rsplit_once('/'))
        else {
            return error(404, "UnknownOperationException", "Not Found");
        };
        if request.method != "POST" || !matches!(operation, "converse" | "converse-stream") {
            return error(404, "UnknownOperationException", "Not Found");
        }
        if let Err(reply) = self.check_auth(request) {
            return reply;
        }
        let model = percent_decode(model);
        self.converse(request, &model, operation == "converse-stream")
    }
}

/// Bedrock's error: `{"message"}` and the type in `x-amzn-errortype`.
pub fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::Full {
        status,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "x-amzn-errortype".into(),
                format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            ),
        ],
        body: Bytes::from(json!({"message": message}).to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding of everything but unreserved characters and `/`, as SigV4's canonical URI.
fn uri_encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a SigV4 `Authorization` header against the request, as AWS documents the
/// signature's computation. `Err` carries AWS's error type and message.
pub fn verify_sigv4(
    request: &Recorded,
    authorization: &str,
    access_key_id: &str,
    secret: &str,
    region: &str,
) -> Result<(), (&'static str, String)> {
    let incomplete = || {
        ("IncompleteSignatureException", format!("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters. Authorization={authorization}"))
    };
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(incomplete)?;
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    let (credential, signed_headers, presented) = match (
        field("Credential"),
        field("SignedHeaders"),
        field("Signature"),
    ) {
        (Some(c), Some(h), Some(s)) => (c, h, s),
        _ => return Err(incomplete()),
    };
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != access_key_id {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        ));
    }
    if scope[2] != region || scope[3] != "bedrock" || scope[4] != "aws4_request" {
        return Err(("InvalidSignatureException", format!("Credential should be scoped to a valid region and service. Credential={credential}")));
    }
    let amz_date = request.header("x-amz-date").ok_or((
        "IncompleteSignatureException",
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            .to_string(),
    ))?;
    if !amz_date.starts_with(scope[1]) {
        return Err(("InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP".into()));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if amz_date_seconds(amz_date).is_none_or(|t| t.abs_diff(now) > 300) {
        return Err((
            "InvalidSignatureException",
            format!(
                "Signature expired: {amz_date} is now earlier or later than the allowed 5 minutes."
            ),
        ));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") {
        return Err((
            "InvalidSignatureException",
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let body_hash = hex(&Sha256::digest(&request.body));
    if request
        .header("x-amz-content-sha256")
        .is_some_and(|h| h != body_hash)
    {
        return Err((
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
        ));
    }
    let expected = signature(request, &names, &body_hash, amz_date, &scope[1..], secret);
    if expected != presented {
        return Err(("InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into()));
    }
    Ok(())
}

/// The SigV4 signature of `request` over its headers `names`, as AWS documents it: the
/// canonical request (the received path encoded once more, sorted query, the signed headers'
/// trimmed values, the payload hash), the string to sign over its SHA-256, and the HMAC chain
/// from `AWS4<secret>` through date, region, service and `aws4_request`.
fn signature(
    request: &Recorded,
    names: &[&str],
    body_hash: &str,
    amz_date: &str,
    scope: &[&str],
    secret: &str,
) -> String {
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    let mut query: Vec<&str> = query.split('&').filter(|q| !q.is_empty()).collect();
    query.sort_unstable();
    let canonical_headers: String = names
        .iter()
        .map(|name| {
            let value = request.header(name).unwrap_or("");
            format!(
                "{name}:{}\n",
                value.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{}\n{body_hash}",
        request.method,
        uri_encode_path(path),
        query.join("&"),
        names.join(";")
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        scope.join("/"),
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = scope[..3]
        .iter()
        .chain(std::iter::once(&"aws4_request"))
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac(&key, part)
        });
    hex(&hmac(&key, &string_to_sign))
}

/// `20150830T123600Z` as seconds since the epoch.
fn amz_date_seconds(date: &str) -> Option<u64> {
    let num = |range: std::ops::Range<usize>| date.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The checks Converse makes, with its messages.
fn validate(body: &[u8]) -> Result<Value, String> {
    let body: Value = serde_json::from_slice(body).map_err(|_| {
        "Malformed input request, please reformat your input and try again.".to_string()
    })?;
    let object = body
        .as_object()
        .ok_or("Malformed input request, please reformat your input and try again.")?;
    if let Some(unknown) = object.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(format!("Malformed input request: extraneous key [{unknown}] is not permitted, please reformat your input and try again."));
    }
    let messages = body["messages"].as_array().filter(|m| !m.is_empty()).ok_or("A conversation must start with a user message. Try again with a conversation that starts with a user message.")?;
    let mut uses_tools = false;
    for (i, message) in messages.iter().enumerate() {
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if message["role"] != expected {
            return Err(if i == 0 {
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.".into()
            } else {
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".into()
            });
        }
        let blocks = message["content"].as_array().filter(|c| !c.is_empty()).ok_or(format!("The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."))?;
        for (j, block) in blocks.iter().enumerate() {
            if block
                .get("text")
                .is_some_and(|t| t.as_str().is_none_or(|t| t.trim().is_empty()))
            {
                return Err(format!("The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."));
            }
            uses_tools |= block.get("toolUse").is_some() || block.get("toolResult").is_some();
        }
    }
    if uses_tools && body.get("toolConfig").is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
    }
    Ok(body)
}

/// The mock's answer to a Converse request.
struct Answer {
    pieces: Vec<String>,
    call: Option<(String, Value)>,
    stop: &'static str,
    input_tokens: u64,
}

impl Answer {
    fn new(body: &Value, knobs: &Knobs) -> Answer {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let last_asks = messages.last().is_some_and(|m| {
            m["content"]
                .as_array()
                .is_some_and(|c| c.iter().all(|b| b.get("toolResult").is_none()))
        });
        let tools = body
            .pointer("/toolConfig/tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let call = (last_asks && !tools.is_empty()).then(|| {
            let named = body
                .pointer("/toolConfig/toolChoice/tool/name")
                .and_then(Value::as_str);
            let spec = named
                .and_then(|n| tools.iter().find(|t| t["toolSpec"]["name"] == n))
                .unwrap_or(&tools[0]);
            let spec = &spec["toolSpec"];
            (
                spec["name"].as_str().unwrap_or("tool").to_string(),
                json!({ first_parameter(&spec["inputSchema"]["json"]): "Paris" }),
            )
        });
        let mut pieces: Vec<String> = content_pieces(knobs.chunks, knobs.chunk_bytes).collect();
        let mut stop = if call.is_some() {
            "tool_use"
        } else {
            "end_turn"
        };
        if let Some(max) = body
            .pointer("/inferenceConfig/maxTokens")
            .and_then(Value::as_u64)
        {
            if call.is_none() && pieces.len() as u64 > max {
                pieces.truncate(max as usize);
                stop = "max_tokens";
            }
        }
        let text: usize = messages
            .iter()
            .chain(body["system"].as_array().into_iter().flatten())
            .map(|m| m.to_string().len())
            .sum();
        Answer {
            pieces: if call.is_some() { Vec::new() } else { pieces },
            call,
            stop,
            input_tokens: 3 + text.div_ceil(6) as u64,
        }
    }

    fn output_tokens(&self) -> u64 {
        match &self.call {
            Some(_) => 12,
            None => self.pieces.len() as u64,
        }
    }

    fn usage(&self) -> Value {
        let output = self.output_tokens();
        json!({"inputTokens": self.input_tokens, "outputTokens": output, "totalTokens": self.input_tokens + output})
    }

    fn whole(&self) -> Value {
        let content = match &self.call {
            Some((name, input)) => {
                json!([{"toolUse": {"toolUseId": "tooluse_mock0", "name": name, "input": input}}])
            }
            None => json!([{"text": self.pieces.concat()}]),
        };
        json!({
            "metrics": {"latencyMs": 42},
            "output": {"message": {"content": content, "role": "assistant"}},
            "stopReason": self.stop,
            "usage": self.usage(),
        })
    }

    /// The stream's messages, framed, each with the pause before it.
    fn events(&self, knobs: &Knobs) -> Vec<(Duration, Vec<u8>)> {
        let mut events: Vec<(Duration, &str, Value)> =
            vec![(Duration::ZERO, "messageStart", json!({"role": "assistant"}))];
        match &self.call {
            Some((name, input)) => {
                events.push((knobs.first_delay, "contentBlockStart", json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_mock0", "name": name}}})));
                for fragment in fragments(&input.to_string(), 5) {
                    events.push((
                        Duration::ZERO,
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": fragment}}}),
                    ));
                }
            }
            None => {
                for (i, piece) in self.pieces.iter().enumerate() {
                    events.push((
                        knobs.pause_before(i),
                        "contentBlockDelta",
                        json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                    ));
                }
            }
        }
        events.push((
            Duration::ZERO,
            "contentBlockStop",
            json!({"contentBlockIndex": 0}),
        ));
        events.push((knobs.delay, "messageStop", json!({"stopReason": self.stop})));
        let mut usage = self.usage();
        usage["serverToolUsage"] = json!({}); // in streams' usage, empty without server tools
        events.push((
            Duration::ZERO,
            "metadata",
            json!({"usage": usage, "metrics": {"latencyMs": 42}}),
        ));
        events
            .into_iter()
            .enumerate()
            .map(|(i, (pause, kind, mut payload))| {
                // The padding real streams carry, of varying length.
                payload["p"] = json!(&"abcdefghijklmnopqrstuvwxyz0123456789"[..(7 * i + 3) % 36]);
                let frame = encode(
                    &[
                        (":event-type", kind),
                        (":content-type", "application/json"),
                        (":message-type", "event"),
                    ],
                    payload.to_string().as_bytes(),
                );
                (pause, frame)
            })
            .collect()
    }
}

/// One event-stream message with string headers: prelude (lengths and their CRC32), headers,
/// payload, message CRC32.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = 12 + head.len() + payload.len() + 4;
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&(total as u32).to_be_bytes());
    frame.extend_from_slice(&(head.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
    frame.extend_from_slice(&head);
    frame.extend_from_slice(payload);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_be_bytes());
    frame
}

/// An event-stream message: its string headers and payload.
pub type Frame = (Vec<(String, String)>, Vec<u8>);

/// Decodes event-stream messages, checking both CRCs.
pub fn decode(mut data: &[u8]) -> Result<Vec<Frame>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if data.len() < 16 {
            return Err(format!("{} trailing bytes", data.len()));
        }
        let total = be32(&data[0..4]) as usize;
        let head_len = be32(&data[4..8]) as usize;
        if crc32fast::hash(&data[..8]) != be32(&data[8..12])
            || total > data.len()
            || crc32fast::hash(&data[..total - 4]) != be32(&data[total - 4..total])
        {
            return Err("CRC mismatch".into());
        }
        let mut head = &data[12..12 + head_len];
        let mut headers = Vec::new();
        while !head.is_empty() {
            let n = head[0] as usize;
            let name = String::from_utf8_lossy(&head[1..1 + n]).into_owned();
            let len = u16::from_be_bytes([head[2 + n], head[3 + n]]) as usize;
            headers.push((
                name,
                String::from_utf8_lossy(&head[4 + n..4 + n + len]).into_owned(),
            ));
            head = &head[4 + n + len..];
        }
        out.push((headers, data[12 + head_len..total - 4].to_vec()));
        data = &data[total..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AWS SigV4 test suite's `post-vanilla` and `get-vanilla-query-order-key-case` cases.
    #[test]
    fn signatures_follow_the_aws_test_suite() {
        let empty = hex(&Sha256::digest(b""));
        let scope = ["20150830", "us-east-1", "service", "aws4_request"];
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let request = |method: &str, path: &str| Recorded {
            method: method.into(),
            path: path.into(),
            headers: vec![
                ("host".into(), "example.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            body: Bytes::new(),
        };
        let names = ["host", "x-amz-date"];
        assert_eq!(
            signature(
                &request("POST", "/"),
                &names,
                &empty,
                "20150830T123600Z",
                &scope,
                secret
            ),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        assert_eq!(
            signature(
                &request("GET", "/?Param2=value2&Param1=value1"),
                &names,
                &empty,
                "20150830T123600Z",
                &scope,
                secret
            ),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn dates_and_paths_parse_like_aws() {
        assert_eq!(amz_date_seconds("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(
            percent_decode("us.amazon.nova-micro-v1%3A0"),
            "us.amazon.nova-micro-v1:0"
        );
        assert_eq!(
            uri_encode_path("/model/a%3A0/converse"),
            "/model/a%253A0/converse"
        );
    }

    #[test]
    fn frames_round_trip_with_their_crcs() {
        let frame = encode(&[(":event-type", "messageStart")], b"{}");
        let decoded = decode(&frame).unwrap();
        assert_eq!(
            decoded[0].0,
            vec![(":event-type".to_string(), "messageStart".to_string())]
        );
        let mut bad = frame.clone();
        bad[14] ^= 1;
        assert!(decode(&bad).is_err());
    }
}

//! Mock providers: real HTTP/1.1 servers on loopback that speak a provider's wire format.
//!
//! A server runs on its own thread and Tokio runtime, so tests stay synchronous. Every request
//! is recorded (method, path, headers, body) for assertions on what the gateway sent.
//!
//! Wire formats: [`openai`] (Chat Completions, embeddings, models, also under the path prefixes
//! of OpenAI-compatible services), [`azure`] (Azure OpenAI deployments), [`anthropic`]
//! (Messages), [`gemini`] (Gemini API), [`vertex`] (Vertex AI and Google's token endpoint),
//! [`bedrock`] (Converse, SigV4-checked, event-stream framing), [`cohere`] (Chat v2) and
//! [`ollama`] (native `/api/chat`). All of them take the per-request knobs of [`knobs`];
//! [`faulty`] fails on request (cut connections, stalls, garbage).

pub mod aliyun_green;
pub mod anthropic;
pub mod azure;
pub mod azure_content_safety;
pub mod bedrock;
pub mod bedrock_guardrail;
pub mod cohere;
pub mod embeddings;
pub mod endless;
pub mod faulty;
pub mod gemini;
pub mod guard_model;
pub mod hostile;
pub mod knobs;
pub mod moderation;
pub mod ollama;
pub mod openai;
pub mod openai_moderation;
pub mod scripted;
pub mod vertex;
pub mod webhook;
pub mod websocket;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the mock answers.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// A chunked body: each piece is sent after its delay.
    Stream {
        status: u16,
        headers: Vec<(String, String)>,
        pieces: Box<dyn Iterator<Item = (Duration, Bytes)> + Send>,
    },
    /// Like `Stream`, then the connection is cut without the end of the body: a provider that
    /// crashes or drops the connection mid-answer.
    Broken {
        status: u16,
        headers: Vec<(String, String)>,
        pieces: Box<dyn Iterator<Item = (Duration, Bytes)> + Send>,
    },
    /// The connection is closed without an answer.
    Hangup,
    /// `reply`, headers included, after `delay`: a provider slow to start answering.
    Held { delay: Duration, reply: Box<Reply> },
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(serde_json::to_vec(value).expect("json")),
        }
    }

    /// A 200 `text/event-stream` answer made of already framed SSE events, each sent after its
    /// delay; `extra_headers` are added after the stream headers all providers send.
    pub fn event_stream(extra_headers: &[(&str, &str)], events: Vec<(Duration, Bytes)>) -> Reply {
        let mut headers: Vec<(String, String)> = vec![
            (
                "content-type".into(),
                "text/event-stream; charset=utf-8".into(),
            ),
            ("cache-control".into(), "no-cache".into()),
        ];
        headers.extend(
            extra_headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Reply::Stream {
            status: 200,
            headers,
            pieces: Box::new(events.into_iter()),
        }
    }
}

/// A wire format the mock can speak.
pub trait Provider: Send + Sync + 'static {
    fn handle(&self, request: &Recorded) -> Reply;
}

/// Requests seen by a mock, newest last, bounded.
#[derive(Default)]
pub struct RequestLog {
    requests: Mutex<VecDeque<Recorded>>,
}

const KEEP_REQUESTS: usize = 1000;

impl RequestLog {
    fn push(&self, request: Recorded) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if requests.len() == KEEP_REQUESTS {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
            .cloned()
    }

    pub fn count(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A running mock server; stops when dropped.
pub struct MockServer {
    pub addr: SocketAddr,
    pub requests: Arc<RequestLog>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Serves `provider` on a free loopback port.
    pub fn start(provider: impl Provider) -> MockServer {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), provider)
    }

    pub fn start_on(bind: SocketAddr, provider: impl Provider) -> MockServer {
        let provider: Arc<dyn Provider> = Arc::new(provider);
        let requests = Arc::new(RequestLog::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let log = requests.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mock-{bind}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(serve(bind, provider, log, addr_tx, shutdown_rx));
            })
            .expect("mock thread");
        let addr = addr_rx
            .recv()
            .expect("mock server thread died")
            .unwrap_or_else(|e| panic!("mock server cannot bind {bind}: {e}"));
        MockServer {
            addr,
            requests,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    bind: SocketAddr,
    provider: Arc<dyn Provider>,
    log: Arc<RequestLog>,
    addr_tx: std::sync::mpsc::Sender<std::io::Result<SocketAddr>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = addr_tx.send(Err(e));
            return;
        }
    };
    let _ = addr_tx.send(listener.local_addr());
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        // Without this, small SSE writes wait for delayed ACKs (~40 ms each).
        let _ = stream.set_nodelay(true);
        let provider = provider.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, provider.clone(), log.clone()));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type MockBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

async fn handle(
    request: Request<Incoming>,
    provider: Arc<dyn Provider>,
    log: Arc<RequestLog>,
) -> Result<Response<MockBody>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let mut reply = provider.handle(&recorded);
    log.push(recorded);
    while let Reply::Held { delay, reply: held } = reply {
        tokio::time::sleep(delay).await;
        reply = *held;
    }
    if let Reply::Hangup = reply {
        // A service error makes hyper close the connection without a response.
        return Err("the mock hangs up".into());
    }
    Ok(into_response(reply))
}

fn into_response(reply: Reply) -> Response<MockBody> {
    let (status, headers, body): (u16, Vec<(String, String)>, MockBody) = match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => (
            status,
            headers,
            Full::new(body).map_err(|never| match never {}).boxed(),
        ),
        Reply::Stream {
            status,
            headers,
            pieces,
        } => (status, headers, channel_body(pieces, false)),
        Reply::Broken {
            status,
            headers,
            pieces,
        } => (status, headers, channel_body(pieces, true)),
        Reply::Hangup => unreachable!("answered by closing the connection"),
        Reply::Held { .. } => unreachable!("waited for before answering"),
    };
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(body).expect("valid mock response")
}

/// A body sent piece by piece, each after its delay; `broken` ends it with an error, which
/// makes hyper cut the connection instead of ending the body.
fn channel_body(
    pieces: Box<dyn Iterator<Item = (Duration, Bytes)> + Send>,
    broken: bool,
) -> MockBody {
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(16);
    tokio::spawn(async move {
        for (delay, bytes) in pieces {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(bytes)).await.is_err() {
                return; // client went away
            }
        }
        if broken {
            let _ = tx.send(Err("the mock cuts the connection".into())).await;
        }
    });
    ChannelBody { rx }.boxed()
}

/// A response body fed by a channel, one frame per piece.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|bytes| bytes.map(Frame::data)))
    }
}

//! The HTTP context: one per request, running the stages that apply to it.

use super::env::{apply, HostEnv};
use super::root::Worker;
use crate::callout::Outcome;
use crate::host;
use crate::stage::{
    BodyUse, Cx, Effects, Reply, RequestBody, ResponseChunk, ResponseHead, Stage, Step,
};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    RequestHeaders { end: bool },
    RequestBody,
    ResponseHeaders { end: bool },
    ResponseBody,
}

impl Phase {
    fn is_request(self) -> bool {
        matches!(self, Phase::RequestHeaders { .. } | Phase::RequestBody)
    }
}

/// How a run of the stages over one phase ended.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Every stage let it through.
    Done,
    /// A stage holds it until its callout answers.
    Paused,
    /// A stage answered locally.
    Replied,
}

/// A stream as the root's lists keep it.
pub type StreamRef = Weak<RefCell<Stream>>;

pub struct Stream {
    worker: Rc<Worker>,
    context_id: u32,
    /// This stream, for the root's lists (wake-ups, callouts answering to the root).
    me: StreamRef,
    /// The root acts for this stream now: callouts sent answer to the root.
    from_root: bool,
    /// The stages that apply to this request, in chain order, with their plugin's slot.
    stages: Vec<(usize, Box<dyn Stage>)>,
    body_use: BodyUse,
    /// The request body read so far (`BodyUse::Read`), `None` once past every limit.
    body_read: Option<Vec<u8>>,
    body_len: usize,
    request_body: Option<RequestBody>,
    /// Bytes of the buffered body the stages' version replaces.
    request_body_size: usize,
    /// The body Envoy buffered while a stage held the request headers: its size, and whether
    /// it has ended.
    body_held: Option<(usize, bool)>,
    head: Option<ResponseHead>,
    chunk: Option<ResponseChunk>,
    /// The bytes of the response body Envoy holds for the chunk (all of them since a stage
    /// began holding the response).
    chunk_size: usize,
    /// Callouts in flight: token → (stage position, the stage's tag).
    callouts: HashMap<u32, (usize, u32)>,
    /// The phase a stage holds, and the step of the run it holds it at.
    paused: Option<(Phase, usize)>,
    /// The stage that answered locally: it and the stages after it never see the response.
    replied_by: Option<usize>,
    done: bool,
}

impl Stream {
    pub fn new(worker: Rc<Worker>, context_id: u32) -> Stream {
        Stream {
            worker,
            context_id,
            me: Weak::new(),
            from_root: false,
            stages: Vec::new(),
            body_use: BodyUse::None,
            body_read: Some(Vec::new()),
            body_len: 0,
            request_body: None,
            request_body_size: 0,
            body_held: None,
            head: None,
            chunk: None,
            chunk_size: 0,
            callouts: HashMap::new(),
            paused: None,
            replied_by: None,
            done: false,
        }
    }

    /// How many stages a phase runs over: on the way out, only those before a local reply.
    fn reach(&self, phase: Phase) -> usize {
        if phase.is_request() {
            self.stages.len()
        } else {
            self.replied_by.unwrap_or(self.stages.len())
        }
    }

    /// The position of the stage at `step` of a run: in order on the way in, in reverse on
    /// the way out.
    fn position(&self, phase: Phase, step: usize) -> usize {
        if phase.is_request() {
            step
        } else {
            self.reach(phase) - 1 - step
        }
    }

    /// Runs the stages over `phase` from `step` on.
    fn run(&mut self, phase: Phase, from: usize) -> Flow {
        for step in from..self.reach(phase) {
            let position = self.position(phase, step);
            match self.call(phase, position) {
                Step::Continue => {}
                Step::Hold => {
                    self.hold(phase, step);
                    return Flow::Paused;
                }
                Step::Respond(reply) => {
                    send(&reply);
                    self.replied_by = Some(position);
                    return Flow::Replied;
                }
            }
        }
        self.finish_phase(phase);
        Flow::Done
    }

    fn call(&mut self, phase: Phase, position: usize) -> Step {
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &HostEnv,
            effects: &mut effects,
        };
        let stage = &mut self.stages[position].1;
        let step = match phase {
            Phase::RequestHeaders { end } => stage.on_request_headers(&mut cx, end),
            Phase::RequestBody => match self.request_body.as_mut() {
                Some(body) if stage.request_body_use() != BodyUse::None => {
                    stage.on_request_body(&mut cx, body)
                }
                _ => Step::Continue,
            },
            Phase::ResponseHeaders { end } => match self.head.as_mut() {
                Some(head) => {
                    let step = stage.on_response_headers(&mut cx, head, end);
                    // The stages after this one see the head as this one left it.
                    for (name, value) in &cx.effects.response_headers {
                        head.set(name, value.as_deref());
                    }
                    step
                }
                None => Step::Continue,
            },
            Phase::ResponseBody => match self.chunk.as_mut() {
                Some(chunk) if stage.wants_response_body() => {
                    stage.on_response_body(&mut cx, chunk)
                }
                _ => Step::Continue,
            },
        };
        self.settle(position, effects, step)
    }

    /// Applies a stage's effects and sends its callouts. A callout Envoy refuses at once is
    /// answered at once as unreachable; when the stage was holding for it, what it answers
    /// then is its step.
    fn settle(&mut self, position: usize, mut effects: Effects, mut step: Step) -> Step {
        loop {
            let slot = &self.worker.slots[self.stages[position].0];
            apply(slot.name(), &mut effects, &mut slot.metrics.borrow_mut());
            if !effects.released.is_empty() {
                match self.chunk.as_mut() {
                    Some(chunk) => chunk.extend(&effects.released),
                    None => log::warn!("{}: released response bytes it did not hold", slot.name()),
                }
                effects.released.clear();
            }
            let mut refused = Vec::new();
            for (tag, callout) in std::mem::take(&mut effects.callouts) {
                match host::dispatch(&callout) {
                    Ok(token) => {
                        self.callouts.insert(token, (position, tag));
                        if self.from_root {
                            self.worker
                                .stream_callouts
                                .borrow_mut()
                                .insert(token, (self.context_id, self.me.clone()));
                        }
                    }
                    Err(why) => refused.push((tag, why)),
                }
            }
            if refused.is_empty() {
                return step;
            }
            let stage = &mut self.stages[position].1;
            for (tag, why) in refused {
                let mut cx = Cx {
                    env: &HostEnv,
                    effects: &mut effects,
                };
                let answered = stage.on_callout(&mut cx, tag, Outcome::Unreachable(why));
                if step == Step::Hold {
                    step = answered;
                }
            }
        }
    }

    /// What follows a phase every stage let through: the bodies they changed go back to Envoy.
    fn finish_phase(&mut self, phase: Phase) {
        match phase {
            Phase::RequestHeaders { .. } => {
                self.body_use = self
                    .stages
                    .iter()
                    .fold(BodyUse::None, |all, (_, s)| all.and(s.request_body_use()));
            }
            Phase::RequestBody => {
                let Some(body) = self.request_body.as_mut().filter(|b| b.is_changed()) else {
                    return;
                };
                if matches!(self.body_use, BodyUse::Change { .. }) {
                    let bytes = body.take_bytes();
                    if let Err(status) = host::set_request_body(0, self.request_body_size, &bytes) {
                        log::warn!("could not replace the request body: host status {status}");
                    }
                } else {
                    log::warn!("a stage changed a request body it only asked to read");
                }
            }
            Phase::ResponseHeaders { end } => {
                if end {
                    self.end_response();
                }
            }
            Phase::ResponseBody => {
                let Some(chunk) = self.chunk.take() else {
                    return;
                };
                let end = chunk.end;
                if chunk.is_changed() {
                    if let Err(status) =
                        host::set_response_body(0, self.chunk_size, &chunk.into_bytes())
                    {
                        log::warn!("could not replace the response body: host status {status}");
                    }
                }
                if end {
                    self.end_response();
                }
            }
        }
    }

    /// Tells the stages that see the response that it has ended, in reverse order.
    fn end_response(&mut self) {
        for step in 0..self.reach(Phase::ResponseBody) {
            let position = self.position(Phase::ResponseBody, step);
            let mut effects = Effects::default();
            let mut cx = Cx {
                env: &HostEnv,
                effects: &mut effects,
            };
            self.stages[position].1.on_response_end(&mut cx);
            self.settle(position, effects, Step::Continue);
        }
    }

    /// A stage holds `phase` at `step`: the stream waits for it, and for its wake-up time
    /// when it has one.
    fn hold(&mut self, phase: Phase, step: usize) {
        self.paused = Some((phase, step));
        let position = self.position(phase, step);
        if self.stages[position].1.wake_at_ms().is_some() {
            self.worker
                .waking
                .borrow_mut()
                .insert(self.context_id, self.me.clone());
        }
    }

    /// Runs `f` on the stream for the root context (a wake-up, or a callout the root sent):
    /// host calls apply to the stream, and callouts sent answer to the root. `None` when the
    /// stream is gone or busy.
    pub fn for_root<R>(
        stream: &Rc<RefCell<Stream>>,
        context_id: u32,
        f: impl FnOnce(&mut Stream) -> R,
    ) -> Option<R> {
        let mut stream = stream.try_borrow_mut().ok()?;
        if !host::set_effective_context(context_id) {
            return None;
        }
        stream.from_root = true;
        let result = f(&mut stream);
        stream.from_root = false;
        Some(result)
    }

    /// The root's tick: wakes the stage holding the stream when its time has come. Returns
    /// whether the stream still waits for a wake-up.
    pub fn wake(&mut self, now: u64) -> bool {
        let Some((phase, held_at)) = self.paused else {
            return false;
        };
        let position = self.position(phase, held_at);
        match self.stages[position].1.wake_at_ms() {
            None => return false,
            Some(at) if at > now => return true,
            Some(_) => {}
        }
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &HostEnv,
            effects: &mut effects,
        };
        let step = self.stages[position].1.on_wake(&mut cx);
        let step = self.settle(position, effects, step);
        self.go_on(phase, held_at, position, step);
        matches!(self.paused, Some((p, s)) if (p, s) == (phase, held_at))
            && self.stages[position].1.wake_at_ms().is_some()
    }

    /// What the stage holding `phase` at `held_at` answered (to a callout or a wake-up).
    fn go_on(&mut self, phase: Phase, held_at: usize, position: usize, step: Step) {
        let flow = match step {
            Step::Hold => {
                self.hold(phase, held_at);
                return;
            }
            Step::Continue => {
                self.paused = None;
                self.run(phase, held_at + 1)
            }
            Step::Respond(reply) => {
                self.paused = None;
                self.replied_by = Some(position);
                send(&reply);
                Flow::Replied
            }
        };
        if flow == Flow::Done {
            if phase.is_request() {
                let go_on = match phase {
                    Phase::RequestHeaders { end } => end || self.after_held_headers(),
                    _ => true,
                };
                if go_on {
                    host::resume_request();
                }
            } else {
                host::resume_response();
            }
        }
    }

    /// More of the response came while a stage holds it. Envoy holds all of it since the held
    /// chunk: the stages before the holder see the new bytes alone, then the holder, and what
    /// it leaves of them goes after the chunk it holds.
    fn more_while_held(&mut self, held_at: usize, body_size: usize, end: bool) -> Action {
        let phase = Phase::ResponseBody;
        let known = self.chunk_size;
        let new = if body_size > known {
            host::response_body_range(known, body_size - known).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.chunk_size = body_size.max(known);
        let held = self.chunk.replace(ResponseChunk::new(new, end));
        self.paused = None;
        let mut step = Step::Continue;
        for at in 0..=held_at {
            let position = self.position(phase, at);
            step = self.call(phase, position);
            match (&step, at == held_at) {
                (Step::Continue, _) | (_, true) => {}
                (Step::Hold, false) => {
                    log::warn!("a stage held a response another stage holds; it goes on");
                    step = Step::Continue;
                }
                (Step::Respond(reply), false) => {
                    send(reply);
                    self.replied_by = Some(position);
                    return Action::Pause;
                }
            }
        }
        if let Some(mut held) = held {
            if let Some(new) = self.chunk.take() {
                held.append(new);
            }
            self.chunk = Some(held);
        }
        let position = self.position(phase, held_at);
        match step {
            Step::Continue => Stream::action(self.run(phase, held_at + 1)),
            Step::Hold => {
                self.hold(phase, held_at);
                Action::Pause
            }
            Step::Respond(reply) => {
                self.replied_by = Some(position);
                send(&reply);
                Action::Pause
            }
        }
    }

    fn action(flow: Flow) -> Action {
        match flow {
            Flow::Done => Action::Continue,
            Flow::Paused | Flow::Replied => Action::Pause,
        }
    }

    /// Whether the request headers wait for the body: a stage may still change it, or set
    /// headers from it.
    fn headers_wait_for_body(&self, phase: Phase) -> bool {
        phase == (Phase::RequestHeaders { end: false })
            && matches!(self.body_use, BodyUse::Change { .. })
    }

    /// Whether a stage that sees the response keeps its headers until the body shows more.
    fn response_headers_wait(&self) -> bool {
        self.stages[..self.reach(Phase::ResponseBody)]
            .iter()
            .any(|(_, s)| s.holds_response_headers())
    }

    /// The request headers were held and every stage has now let them through: what Envoy
    /// buffered of the body meanwhile is read, and the request goes on unless the stages
    /// still need more of it. Returns whether the request may go on.
    fn after_held_headers(&mut self) -> bool {
        let Some((size, ended)) = self.body_held.take() else {
            return !matches!(self.body_use, BodyUse::Change { .. });
        };
        match self.body_use {
            BodyUse::None => true,
            BodyUse::Read { .. } => {
                self.read_body(size);
                !ended || self.on_request_body_end() == Action::Continue
            }
            BodyUse::Change { max_bytes } => {
                if !ended && size <= max_bytes {
                    return false;
                }
                self.request_body_size = size;
                self.on_request_body_end() == Action::Continue
            }
        }
    }

    /// Copies a piece of the body for stages that only read it, up to their limit.
    fn read_body(&mut self, size: usize) {
        let BodyUse::Read { max_bytes } = self.body_use else {
            return;
        };
        self.body_len += size;
        if let Some(read) = self.body_read.as_mut() {
            if self.body_len > max_bytes {
                self.body_read = None;
            } else if size > 0 {
                read.extend(host::request_body(size).unwrap_or_default());
            }
        }
    }

    fn on_request_body_end(&mut self) -> Action {
        let body = match self.body_use {
            BodyUse::None => return Action::Continue,
            BodyUse::Read { .. } => RequestBody::new(self.body_read.take(), self.body_len),
            BodyUse::Change { max_bytes } => {
                let bytes = (self.request_body_size <= max_bytes)
                    .then(|| host::request_body(self.request_body_size).unwrap_or_default());
                RequestBody::new(bytes, self.request_body_size)
            }
        };
        self.request_body = Some(body);
        Stream::action(self.run(Phase::RequestBody, 0))
    }
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let Some((position, tag)) = self.callouts.remove(&token) else {
            return;
        };
        let outcome = host::callout_response(body_size);
        let mut effects = Effects::default();
        let mut cx = Cx {
            env: &HostEnv,
            effects: &mut effects,
        };
        let step = self.stages[position].1.on_callout(&mut cx, tag, outcome);
        let step = self.settle(position, effects, step);
        let Some((phase, held_at)) = self.paused else {
            if step != Step::Continue {
                log::warn!("a stage answered a callout it was not holding the stream for");
            }
            return;
        };
        if self.position(phase, held_at) != position {
            return;
        }
        self.go_on(phase, held_at, position, step);
    }
}

/// The stream as the host holds it; the root reaches it for wake-ups and for callouts it
/// sent on the stream's behalf.
pub struct Handle(Rc<RefCell<Stream>>);

impl Handle {
    pub fn new(stream: Stream) -> Handle {
        let stream = Rc::new(RefCell::new(stream));
        stream.borrow_mut().me = Rc::downgrade(&stream);
        Handle(stream)
    }
}

impl Context for Handle {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        self.0
            .borrow_mut()
            .on_http_call_response(token, headers, body_size, trailers);
    }
}

impl HttpContext for Handle {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.0
            .borrow_mut()
            .on_http_request_headers(num_headers, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0
            .borrow_mut()
            .on_http_request_body(body_size, end_of_stream)
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.0
            .borrow_mut()
            .on_http_response_headers(num_headers, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.0
            .borrow_mut()
            .on_http_response_body(body_size, end_of_stream)
    }

    fn on_log(&mut self) {
        self.0.borrow_mut().on_log();
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.stages = self
            .worker
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| Some((index, slot.plugin.borrow().stage(&HostEnv)?)))
            .collect();
        if self.stages.is_empty() {
            return Action::Continue;
        }
        let phase = Phase::RequestHeaders { end: end_of_stream };
        match self.run(phase, 0) {
            Flow::Done if self.headers_wait_for_body(phase) => Action::Pause,
            flow => Stream::action(flow),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.replied_by.is_some() {
            return Action::Pause;
        }
        // While a stage holds the request, `Continue` here would let it go on (Envoy continues
        // held headers with the body).
        match self.paused {
            Some((Phase::RequestHeaders { .. }, _)) => {
                // Envoy buffers it until the stage holding the headers lets them go.
                self.body_held = Some((body_size, end_of_stream));
                return Action::Pause;
            }
            Some((Phase::RequestBody, _)) => return Action::Pause,
            _ => {}
        }
        if self.request_body.is_some() {
            // The stages saw the body (or its length, past their limits) already.
            return Action::Continue;
        }
        match self.body_use {
            BodyUse::None => return Action::Continue,
            BodyUse::Read { .. } => self.read_body(body_size),
            BodyUse::Change { max_bytes } => {
                if !end_of_stream && body_size <= max_bytes {
                    return Action::Pause;
                }
                self.request_body_size = body_size;
                return self.on_request_body_end();
            }
        }
        if end_of_stream {
            self.on_request_body_end()
        } else {
            Action::Continue
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let phase = Phase::ResponseHeaders { end: end_of_stream };
        if self.reach(phase) == 0 {
            return Action::Continue;
        }
        self.head = Some(ResponseHead {
            headers: host::response_headers(),
        });
        match self.run(phase, 0) {
            Flow::Done if !end_of_stream && self.response_headers_wait() => Action::Pause,
            flow => Stream::action(flow),
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some((Phase::ResponseBody, held_at)) = self.paused {
            return self.more_while_held(held_at, body_size, end_of_stream);
        }
        let reach = self.reach(Phase::ResponseBody);
        let wanting = || {
            self.stages[..reach]
                .iter()
                .filter(|(_, s)| s.wants_response_body())
        };
        if wanting().next().is_none() {
            if end_of_stream {
                self.end_response();
            }
            return Action::Continue;
        }
        if !end_of_stream && wanting().any(|(_, s)| s.buffers_response_body()) {
            // Envoy keeps it; the stages see it whole with its last piece.
            return Action::Pause;
        }
        let bytes = if body_size > 0 {
            host::response_body(body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.chunk = Some(ResponseChunk::new(bytes, end_of_stream));
        self.chunk_size = body_size;
        Stream::action(self.run(Phase::ResponseBody, 0))
    }

    fn on_log(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        for position in 0..self.stages.len() {
            let mut effects = Effects::default();
            let mut cx = Cx {
                env: &HostEnv,
                effects: &mut effects,
            };
            self.stages[position].1.on_done(&mut cx);
            // Callouts asked for now have no stream to come back to; they still go out.
            self.settle(position, effects, Step::Continue);
        }
    }
}

fn send(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    host::send_response(reply.status, &headers, &reply.body);
}

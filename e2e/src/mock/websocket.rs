//! A WebSocket echo server: the long-lived connection that must survive plugin swaps.

use std::net::{SocketAddr, TcpListener};

pub struct EchoServer {
    pub addr: SocketAddr,
}

impl EchoServer {
    /// Serves on a free loopback port; every text or binary message is sent back as it came.
    pub fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind websocket server");
        let addr = listener.local_addr().expect("websocket addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(mut socket) = tungstenite::accept(stream) else {
                        return;
                    };
                    while let Ok(message) = socket.read() {
                        let echo = message.is_text() || message.is_binary();
                        if message.is_close() || (echo && socket.send(message).is_err()) {
                            return;
                        }
                    }
                });
            }
        });
        EchoServer { addr }
    }
}

//! A server that accepts connections and never answers: a hung Redis (the worst case for a
//! client; a stopped one at least refuses at once).

/// Listens on a free loopback port until dropped, holding every connection open in silence.
pub struct SilentServer {
    pub port: u16,
    accepting: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { port, accepting }
    }

    /// Its `redis://` URL.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

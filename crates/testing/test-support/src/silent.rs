//! A loopback TCP listener that accepts connections and never answers: what a paused process,
//! a half-open connection or a black-holing network looks like to a client. A client without
//! time limits waits on it forever.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A listener on a free loopback port that reads and discards whatever arrives and never
/// writes a byte; connections stay open until the listener is dropped.
#[derive(Debug)]
pub struct SilentListener {
    address: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl SilentListener {
    /// Starts listening.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let address = listener.local_addr().expect("bound address");
        let accept_loop = tokio::spawn(async move {
            let mut held = tokio::task::JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                held.spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        Self {
            address,
            accept_loop,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>`, for an SDK endpoint override.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

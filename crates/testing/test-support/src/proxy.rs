//! A loopback TCP proxy that a test can cut (every open connection dropped, new ones refused),
//! stall (nothing forwarded, nothing closed: a silent network partition, a paused or
//! black-holed dependency) and restore, to see how a process behaves when a dependency goes away
//! and comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy from a free loopback port to `upstream`.
#[derive(Debug)]
pub struct CuttableProxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

impl CuttableProxy {
    /// Starts proxying to `upstream`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let address = listener.local_addr().expect("bound address");
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let accept_loop = tokio::spawn(accept(
            listener,
            upstream,
            cut.clone(),
            generation.clone(),
            stalled.clone(),
        ));
        Self {
            address,
            cut,
            generation,
            stalled,
            accept_loop,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every open connection and refuses new ones until [`CuttableProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Stops forwarding in both directions without closing anything, until
    /// [`CuttableProxy::restore`]: bytes already read are held, open connections stay open (no
    /// FIN, no RST), and new connections are accepted but not forwarded. To both sides it looks
    /// like a network that silently drops packets (a partition, a paused VM's host), which only a
    /// timeout or a keepalive can detect; unlike [`CuttableProxy::cut`], which they notice at once.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again: accepts connections after a cut, and delivers what a stall held (its
    /// connections carry on).
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.stalled.send_replace(false);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.generation.send_modify(|generation| *generation += 1);
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if cut.load(Ordering::SeqCst) {
            continue; // dropping the socket refuses the client
        }
        let mut cuts = generation.subscribe();
        let stalls = stalled.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = forward(client, upstream, stalls) => {}
                _ = cuts.changed() => {}
            }
        });
    }
}

/// Connects to `upstream` (once no stall is on) and pumps both directions until either side
/// closes.
async fn forward(client: TcpStream, upstream: SocketAddr, mut stalls: watch::Receiver<bool>) {
    if stalls.wait_for(|stalled| !*stalled).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, stalls.clone()),
        pump(server_read, client_write, stalls),
    );
}

/// Copies `from` to `to`, holding what it read while a stall is on; closes `to`'s write side when
/// `from` ends.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut stalls: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if stalls.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        // Read just before a stall began: held until it ends.
        if stalls.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server on a free loopback port.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = socket.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        address
    }

    /// What one read brings within `wait`: `Some(bytes)` (empty: the peer closed or reset),
    /// `None` when nothing arrived at all.
    async fn read_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 64];
        match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
            Ok(Ok(n)) => Some(buffer[..n].to_vec()),
            Ok(Err(_)) => Some(Vec::new()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn a_stalled_proxy_holds_traffic_silently_and_delivers_it_once_restored() {
        let proxy = CuttableProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        open.write_all(b"before").await.unwrap();
        assert_eq!(
            read_within(&mut open, Duration::from_secs(5))
                .await
                .unwrap(),
            b"before"
        );

        proxy.stall();
        // What was tried: a write on an open connection and a new connection while stalled.
        // Neither gets an answer, and neither sees a close or a reset (no FIN, no RST): the
        // client cannot tell a stall from a slow server.
        open.write_all(b"held").await.unwrap();
        assert_eq!(
            read_within(&mut open, Duration::from_millis(700)).await,
            None
        );
        let mut late = TcpStream::connect(proxy.address()).await.unwrap();
        late.write_all(b"late").await.unwrap();
        assert_eq!(
            read_within(&mut late, Duration::from_millis(300)).await,
            None
        );

        proxy.restore();
        assert_eq!(
            read_within(&mut open, Duration::from_secs(5))
                .await
                .unwrap(),
            b"held"
        );
        assert_eq!(
            read_within(&mut late, Duration::from_secs(5))
                .await
                .unwrap(),
            b"late"
        );
    }

    #[tokio::test]
    async fn a_cut_still_resets_open_connections() {
        let proxy = CuttableProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        open.write_all(b"x").await.unwrap();
        assert_eq!(
            read_within(&mut open, Duration::from_secs(5))
                .await
                .unwrap(),
            b"x"
        );
        proxy.cut();
        assert_eq!(
            read_within(&mut open, Duration::from_secs(5)).await,
            Some(Vec::new()),
            "a cut closes the connection"
        );
    }
}

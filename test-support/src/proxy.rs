//! A loopback TCP proxy that a test can cut (every open connection dropped, new ones refused),
//! silence (every open connection dropped, new ones accepted and never answered: a paused or
//! black-holed dependency) and restore, to see how a process behaves when a dependency goes
//! away and comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy from a free loopback port to `upstream`.
#[derive(Debug)]
pub struct CuttableProxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
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
        let silent = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let accept_loop = tokio::spawn(accept(
            listener,
            upstream,
            (cut.clone(), silent.clone()),
            generation.clone(),
        ));
        Self {
            address,
            cut,
            silent,
            generation,
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

    /// Drops every open connection; new ones are accepted and held open, but nothing is
    /// forwarded either way until [`CuttableProxy::restore`]: a client without time limits
    /// waits forever.
    pub fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Forwards connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.silent.store(false, Ordering::SeqCst);
        // Drops the connections held silent, so their clients reconnect.
        self.generation.send_modify(|generation| *generation += 1);
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
    (cut, silent): (Arc<AtomicBool>, Arc<AtomicBool>),
    generation: watch::Sender<u64>,
) {
    while let Ok((mut client, _)) = listener.accept().await {
        if cut.load(Ordering::SeqCst) {
            continue; // dropping the socket refuses the client
        }
        let mut cuts = generation.subscribe();
        if silent.load(Ordering::SeqCst) {
            // Held, unanswered, until the next cut, silence or restore drops it.
            tokio::spawn(async move {
                let _held = client;
                let _ = cuts.changed().await;
            });
            continue;
        }
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cuts.changed() => {}
            }
        });
    }
}

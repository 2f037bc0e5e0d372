//! What the server-streaming RPCs share: the bounded channel a stream's task writes into and the
//! gauge of open streams.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::ApiError;

/// Messages waiting for one slow client. The stream's task waits when they are full; what it
/// misses meanwhile it rereads from the store (or, for a subscriber, is told it fell behind).
const STREAM_BUFFER: usize = 16;

/// The response stream of a server-streaming RPC.
pub type ResponseStream<T> = ReceiverStream<Result<T, Status>>;

/// The sending half of one stream, counted in `orderpipe_streams_open{rpc}` while it lives.
pub struct StreamSender<T> {
    sender: mpsc::Sender<Result<T, Status>>,
    rpc: &'static str,
}

/// A stream for `rpc`: its sender, for the task that fills it, and the response.
pub fn open<T>(rpc: &'static str) -> (StreamSender<T>, ResponseStream<T>) {
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    metrics::gauge!("orderpipe_streams_open", "rpc" => rpc).increment(1.0);
    (StreamSender { sender, rpc }, ReceiverStream::new(receiver))
}

/// The client has gone: the stream's task stops.
pub struct ClientGone;

impl<T> StreamSender<T> {
    /// Sends one message, waiting while the client is slow.
    pub async fn send(&self, message: T) -> Result<(), ClientGone> {
        self.sender.send(Ok(message)).await.map_err(|_| ClientGone)
    }

    /// Ends the stream with `error`'s status.
    pub async fn fail(self, error: ApiError) {
        let _ = self.sender.send(Err(error.into())).await;
    }

    /// Completes once the client has gone.
    pub async fn closed(&self) {
        self.sender.closed().await;
    }
}

impl<T> Drop for StreamSender<T> {
    fn drop(&mut self) {
        metrics::gauge!("orderpipe_streams_open", "rpc" => self.rpc).decrement(1.0);
    }
}

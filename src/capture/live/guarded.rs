//! The metrics server's listener, bounded against whoever can reach the
//! port: at most [`MAX_CONNECTIONS`] connections at once (further ones are
//! closed as soon as they are accepted), and each must send a whole request
//! within [`REQUEST_TIMEOUT`] of opening or of its previous answer, so
//! half-sent requests cannot hold the server's memory or slots.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, Instant, Sleep};

/// Connections served at once: a few Prometheus servers and people with
/// curl, with room to spare.
pub const MAX_CONNECTIONS: usize = 64;
/// A scrape request arrives in one packet; this is generous for a slow link
/// and short for a connection that sends a byte now and then.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A TCP listener that hands out [`Guarded`] connections.
pub struct GuardedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener) -> GuardedListener {
        GuardedListener { inner, slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)) }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Guarded, std::net::SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            // Full: close this one at once rather than queue it.
            let Ok(slot) = self.slots.clone().try_acquire_owned() else { continue };
            return (Guarded::new(stream, slot), addr);
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// One connection holding a slot, whose reads fail once a request has
/// taken longer than REQUEST_TIMEOUT to arrive.
pub struct Guarded {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    /// Answering a request starts the clock anew for the next one.
    answered: bool,
    _slot: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Guarded {
        Guarded { stream, deadline: Box::pin(sleep(REQUEST_TIMEOUT)), answered: false, _slot: slot }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.answered {
            self.answered = false;
            self.deadline.as_mut().reset(Instant::now() + REQUEST_TIMEOUT);
        }
        if let Poll::Ready(read) = Pin::new(&mut self.stream).poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request not sent in time"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.answered = true;
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

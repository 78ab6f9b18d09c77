//! The byte relay: both directions of one proxied connection in one future,
//! through bounded buffers, with half-close.
//!
//! Generic over the upstream stream so that the same relay carries plain TCP
//! and, once it is wrapped, TLS to the endpoint.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first buffer of each direction. A buffer that a read fills grows
/// fourfold, up to the configured size: an idle connection holds two small
/// buffers, a bulk transfer gets the large ones.
const FIRST_BUFFER: usize = 512;

/// Which side of a relay failed.
#[derive(Debug)]
pub(crate) enum RelayError {
    /// Reading from or writing to the client failed.
    Client,
    /// Reading from or writing to the endpoint failed.
    Upstream,
}

/// One direction: bytes read from one stream and written to the other.
struct Pipe<'c> {
    buf: Vec<u8>,
    max: usize,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    shut_down: bool,
    counter: &'c AtomicU64,
}

/// Where a pipe's failure came from: its reader or its writer.
enum PipeError {
    Read,
    Write,
}

impl<'c> Pipe<'c> {
    fn new(max: usize, counter: &'c AtomicU64) -> Self {
        Pipe {
            buf: Vec::new(),
            max: max.max(1),
            pos: 0,
            cap: 0,
            read_done: false,
            need_flush: false,
            shut_down: false,
            counter,
        }
    }

    /// Copies until the reader ends, then shuts the writer down (half-close).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), PipeError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.read_done {
                if self.buf.is_empty() {
                    self.buf.resize(FIRST_BUFFER.min(self.max), 0);
                }
                let mut read = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut read) {
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(|_| PipeError::Write)?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(PipeError::Read)),
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                        }
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.pos..self.cap]))
                .map_err(|_| PipeError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(PipeError::Write));
                }
                self.pos += n;
                self.need_flush = true;
                self.counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            if self.cap == self.buf.len() && self.buf.len() < self.max {
                // The last read filled the buffer: a bulk transfer.
                let grown = (self.buf.len() * 4).min(self.max);
                self.buf.resize(grown, 0);
            }
            if self.read_done {
                if !self.shut_down {
                    ready!(writer.as_mut().poll_shutdown(cx)).map_err(|_| PipeError::Write)?;
                    self.shut_down = true;
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Relays between `client` and `upstream` until both directions have ended:
/// each side's end of stream is passed on as a half-close. `sent` counts
/// bytes written to the upstream, `received` bytes written to the client;
/// each direction buffers at most `buffer` bytes.
pub(crate) async fn relay<C, S>(
    client: &mut C,
    upstream: &mut S,
    buffer: usize,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> Result<(), RelayError>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Pipe::new(buffer, sent);
    let mut down = Pipe::new(buffer, received);
    let (mut up_done, mut down_done) = (false, false);
    poll_fn(|cx| {
        if !up_done {
            match up.poll_copy(cx, Pin::new(&mut *client), Pin::new(&mut *upstream)) {
                Poll::Ready(Ok(())) => up_done = true,
                Poll::Ready(Err(PipeError::Read)) => return Poll::Ready(Err(RelayError::Client)),
                Poll::Ready(Err(PipeError::Write)) => {
                    return Poll::Ready(Err(RelayError::Upstream))
                }
                Poll::Pending => {}
            }
        }
        if !down_done {
            match down.poll_copy(cx, Pin::new(&mut *upstream), Pin::new(&mut *client)) {
                Poll::Ready(Ok(())) => down_done = true,
                Poll::Ready(Err(PipeError::Read)) => return Poll::Ready(Err(RelayError::Upstream)),
                Poll::Ready(Err(PipeError::Write)) => return Poll::Ready(Err(RelayError::Client)),
                Poll::Pending => {}
            }
        }
        if up_done && down_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    /// Both directions arrive whole and in order through buffers much
    /// smaller than the data, each end of stream is passed on, and the
    /// counters count every byte.
    #[tokio::test]
    async fn relays_both_ways_with_small_buffers_and_half_close() {
        let (mut client_app, mut client) = duplex(64);
        let (mut upstream, mut server_app) = duplex(64);
        let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
        let up: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let client_side = async move {
            client_app.write_all(&up2).await.unwrap();
            client_app.shutdown().await.unwrap();
            let mut got = Vec::new();
            client_app.read_to_end(&mut got).await.unwrap();
            got
        };
        let server_side = async move {
            let mut got = Vec::new();
            server_app.read_to_end(&mut got).await.unwrap();
            server_app.write_all(&down2).await.unwrap();
            server_app.shutdown().await.unwrap();
            got
        };
        let relayed = relay(&mut client, &mut upstream, 100, &sent, &received);
        let (r, client_got, server_got) = tokio::join!(relayed, client_side, server_side);
        r.unwrap();
        assert_eq!(server_got, up);
        assert_eq!(client_got, down);
        assert_eq!(sent.load(Ordering::Relaxed), up.len() as u64);
        assert_eq!(received.load(Ordering::Relaxed), down.len() as u64);
    }

    #[tokio::test]
    async fn names_the_side_that_failed() {
        let (_client_app, mut client) = duplex(64);
        let (mut upstream, server_app) = duplex(64);
        drop(server_app);
        // Writing towards a closed upstream fails on the upstream side.
        let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut client_app = _client_app;
        client_app.write_all(b"hello").await.unwrap();
        let r = relay(&mut client, &mut upstream, 16, &sent, &received).await;
        assert!(matches!(r, Err(RelayError::Upstream)), "{r:?}");
    }
}

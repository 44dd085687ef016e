//! Owns telling apart the two protocol headers an AMQP peer may open with: `AMQP 3 1 0 0` (SASL
//! first, as most clients do) and `AMQP 0 1 0 0` (no SASL at all: the Node.js `azure-iothub`
//! service client, which authenticates through `$cbs` only). IoT Hub accepts both; fe2o3-amqp's
//! acceptor is built for one or the other, so the header is read here and replayed to the one
//! that fits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The 8-byte protocol header.
pub type Header = [u8; 8];

/// True for `AMQP 3 1 0 0` (the SASL security layer comes first).
pub fn is_sasl(header: &Header) -> bool {
    header[4] == 3
}

/// A stream whose first bytes, already read, are given again before the rest.
#[derive(Debug)]
pub struct Replayed<Io> {
    head: Header,
    at: usize,
    io: Io,
}

/// Reads the peer's protocol header and returns it with the stream that replays it.
pub async fn read<Io: AsyncRead + Unpin>(mut io: Io) -> io::Result<(Header, Replayed<Io>)> {
    let mut head = [0u8; 8];
    io.read_exact(&mut head).await?;
    Ok((head, Replayed { head, at: 0, io }))
}

impl<Io: AsyncRead + Unpin> AsyncRead for Replayed<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.head.len() {
            let n = (self.head.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Replayed<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_header_is_replayed_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"AMQP\x00\x01\x00\x00rest").await.unwrap();
        let (header, mut replayed) = read(server).await.unwrap();
        assert!(!is_sasl(&header));
        assert!(is_sasl(b"AMQP\x03\x01\x00\x00"));
        let mut all = [0u8; 12];
        replayed.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"AMQP\x00\x01\x00\x00rest");
    }
}

//! Owns one wire detail: every performative the server sends carries all of its fields. AMQP lets
//! an encoder leave trailing null fields out of a performative's list, and `fe2o3-amqp` does; the
//! pure-Python AMQP stack of `azure-eventhub` (and its siblings) indexes the decoded list up to
//! the last field (`frame[9]` of OPEN, `frame[2]` of DETACH, the payload at `frame[11]` of a
//! TRANSFER) and fails on a short one. IoT Hub sends full lists, so this writer pads the list of
//! each outgoing frame with nulls to the performative's field count, and leaves the rest alone.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Field counts by descriptor code (AMQP 1.0 part 2.7 and 5.3).
fn field_count(code: u8) -> Option<usize> {
    Some(match code {
        0x10 => 10, // open
        0x11 => 8,  // begin
        0x12 => 14, // attach
        0x13 => 11, // flow
        0x14 => 11, // transfer
        0x15 => 6,  // disposition
        0x16 => 3,  // detach
        0x17 | 0x18 => 1, // end, close
        0x40 | 0x42 | 0x43 => 1, // sasl-mechanisms, -challenge, -response
        0x44 => 2,  // sasl-outcome
        _ => return None,
    })
}

/// Rewrites one complete frame (`frame` holds it all, size header included).
fn pad_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let doff = *frame.get(4)? as usize * 4;
    let body = frame.get(doff..)?;
    // A described list: 0x00, then the descriptor as smallulong (0x53 code) or ulong (0x80 + 8 bytes).
    let (code, list_at) = match body {
        [0x00, 0x53, code, ..] => (*code, 3),
        [0x00, 0x80, rest @ ..] if rest.len() >= 8 => (rest[7], 10),
        _ => return None,
    };
    let want = field_count(code)?;
    let list = body.get(list_at..)?;
    let (count, items, after) = match list.first()? {
        0x45 => (0usize, &list[1..1], &list[1..]),
        0xc0 => {
            let size = *list.get(1)? as usize;
            let count = *list.get(2)? as usize;
            (count, list.get(3..2 + size)?, list.get(2 + size..)?)
        }
        0xd0 => {
            let size = u32::from_be_bytes(list.get(1..5)?.try_into().ok()?) as usize;
            let count = u32::from_be_bytes(list.get(5..9)?.try_into().ok()?) as usize;
            (count, list.get(9..5 + size)?, list.get(5 + size..)?)
        }
        _ => return None,
    };
    if count >= want {
        return None;
    }
    let pad = want - count;
    let mut out = Vec::with_capacity(frame.len() + pad + 8);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&frame[4..doff]);
    out.extend_from_slice(&body[..list_at]);
    let size = items.len() + pad;
    if size + 1 <= 0xff {
        out.push(0xc0);
        out.push((size + 1) as u8);
        out.push(want as u8);
    } else {
        out.push(0xd0);
        out.extend_from_slice(&((size + 4) as u32).to_be_bytes());
        out.extend_from_slice(&(want as u32).to_be_bytes());
    }
    out.extend_from_slice(items);
    out.extend(std::iter::repeat_n(0x40u8, pad));
    out.extend_from_slice(after);
    let total = out.len() as u32;
    out[..4].copy_from_slice(&total.to_be_bytes());
    Some(out)
}

/// Wraps a stream; what is written through it is padded frame by frame (protocol headers pass).
pub struct FullPerformatives<Io> {
    inner: Io,
    /// Bytes written to us that do not make a whole frame yet.
    pending: BytesMut,
    /// Rewritten bytes not yet accepted by `inner`.
    out: BytesMut,
}

/// Past this much unflushed output a write waits for the socket (backpressure).
const HIGH_WATER: usize = 256 * 1024;

impl<Io> FullPerformatives<Io> {
    pub fn new(inner: Io) -> Self {
        FullPerformatives { inner, pending: BytesMut::new(), out: BytesMut::new() }
    }

    fn process(&mut self) {
        loop {
            if self.pending.starts_with(b"AMQP") {
                if self.pending.len() < 8 {
                    return;
                }
                let header = self.pending.split_to(8);
                self.out.put_slice(&header);
                continue;
            }
            if self.pending.len() < 4 {
                return;
            }
            let size = u32::from_be_bytes([self.pending[0], self.pending[1], self.pending[2], self.pending[3]]) as usize;
            if size < 8 {
                // Not a frame we can read: pass everything through untouched.
                let rest = self.pending.split();
                self.out.put_slice(&rest);
                return;
            }
            if self.pending.len() < size {
                return;
            }
            let frame = self.pending.split_to(size);
            match pad_frame(&frame) {
                Some(padded) => self.out.put_slice(&padded),
                None => self.out.put_slice(&frame),
            }
        }
    }
}

impl<Io: AsyncWrite + Unpin> FullPerformatives<Io> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for FullPerformatives<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for FullPerformatives<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.out.len() >= HIGH_WATER {
            std::task::ready!(self.poll_drain(cx))?;
        }
        self.pending.put_slice(buf);
        self.process();
        // Push what we can now; the rest goes on the next write or flush.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<Io> std::fmt::Debug for FullPerformatives<Io> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FullPerformatives")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_detach_gets_its_error_field() {
        // DETACH(handle=1, closed=true) as list8 of 2 fields.
        let frame = [0, 0, 0, 17, 2, 0, 0, 0, 0x00, 0x53, 0x16, 0xc0, 0x04, 0x02, 0x52, 0x01, 0x41];
        let padded = pad_frame(&frame).unwrap();
        assert_eq!(&padded[..4], &18u32.to_be_bytes());
        assert_eq!(&padded[11..], &[0xc0, 0x05, 0x03, 0x52, 0x01, 0x41, 0x40]);
    }

    #[test]
    fn a_transfer_keeps_its_payload_after_the_list() {
        // TRANSFER(handle=0) as list0, then a payload.
        let mut frame = vec![0, 0, 0, 0, 2, 0, 0, 0, 0x00, 0x53, 0x14, 0x45, 0xAA, 0xBB];
        frame[3] = frame.len() as u8;
        let padded = pad_frame(&frame).unwrap();
        assert_eq!(&padded[11..14], &[0xc0, 12, 11]);
        assert!(padded[14..25].iter().all(|b| *b == 0x40));
        assert_eq!(&padded[25..], &[0xAA, 0xBB]);
        assert_eq!(u32::from_be_bytes(padded[..4].try_into().unwrap()) as usize, padded.len());
    }

    #[test]
    fn full_and_unknown_frames_pass_unchanged() {
        let frame = [0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x17, 0x45];
        assert!(pad_frame(&frame).is_some(), "END with no fields gets its one field");
        let empty = [0, 0, 0, 8, 2, 0, 0, 0];
        assert!(pad_frame(&empty).is_none(), "a heartbeat has no body");
    }
}

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

/// A frame's performative: its descriptor code, where its list starts in the body, the field
/// count, the encoded fields and what follows the list (a transfer's payload).
struct Performative<'a> {
    code: u8,
    head: &'a [u8],
    count: usize,
    items: &'a [u8],
    after: &'a [u8],
}

/// Splits one complete frame (`frame` holds it all, size header included).
fn performative(frame: &[u8]) -> Option<Performative<'_>> {
    let doff = *frame.get(4)? as usize * 4;
    let body = frame.get(doff..)?;
    // A described list: 0x00, then the descriptor as smallulong (0x53 code) or ulong (0x80 + 8 bytes).
    let (code, list_at) = match body {
        [0x00, 0x53, code, ..] => (*code, 3),
        [0x00, 0x80, rest @ ..] if rest.len() >= 8 => (rest[7], 10),
        _ => return None,
    };
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
    Some(Performative { code, head: frame.get(4..doff + list_at)?, count, items, after })
}

/// Rewrites one complete frame with its performative's list padded; `None`: leave it as it is.
fn pad_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let p = performative(frame)?;
    let want = field_count(p.code)?;
    if p.count >= want {
        return None;
    }
    let pad = want - p.count;
    let mut out = Vec::with_capacity(frame.len() + pad + 8);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(p.head);
    let size = p.items.len() + pad;
    if size < 0xff {
        out.push(0xc0);
        out.push((size + 1) as u8);
        out.push(want as u8);
    } else {
        out.push(0xd0);
        out.extend_from_slice(&((size + 4) as u32).to_be_bytes());
        out.extend_from_slice(&(want as u32).to_be_bytes());
    }
    out.extend_from_slice(p.items);
    out.extend(std::iter::repeat_n(0x40u8, pad));
    out.extend_from_slice(p.after);
    let total = out.len() as u32;
    out[..4].copy_from_slice(&total.to_be_bytes());
    Some(out)
}

/// The max-frame-size of a peer's OPEN frame (its third field; absent: no limit).
fn open_max_frame_size(frame: &[u8]) -> Option<u32> {
    let p = performative(frame)?;
    if p.code != 0x10 {
        return None;
    }
    // Skip container-id and hostname (strings or null), then read the uint.
    let mut rest = p.items;
    for _ in 0..2.min(p.count) {
        rest = match rest.first()? {
            0x40 => &rest[1..],
            0xa1 => rest.get(2 + *rest.get(1)? as usize..)?,
            0xb1 => rest.get(5 + u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?) as usize..)?,
            _ => return None,
        };
    }
    if p.count < 3 {
        return Some(u32::MAX);
    }
    match rest.first()? {
        0x70 => Some(u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?)),
        0x52 => Some(*rest.get(1)? as u32),
        0x43 => Some(0),
        0x40 => Some(u32::MAX),
        _ => None,
    }
}

/// Splits complete frames off `buf` (protocol headers pass as they are).
fn next_frame(buf: &mut BytesMut) -> Option<BytesMut> {
    if buf.starts_with(b"AMQP") {
        return (buf.len() >= 8).then(|| buf.split_to(8));
    }
    if buf.len() < 4 {
        return None;
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if size < 8 {
        // Not a frame we can read: everything passes untouched.
        return Some(buf.split());
    }
    (buf.len() >= size).then(|| buf.split_to(size))
}

/// Wraps a stream; what is written through it is padded frame by frame (protocol headers pass).
pub struct FullPerformatives<Io> {
    inner: Io,
    /// The peer's max-frame-size once its OPEN went by: a frame that padding would make larger
    /// goes out as it is (only a peer with frames smaller than a message sees split transfers).
    peer_max_frame: Option<u32>,
    /// What was read before the peer's OPEN, to find it.
    sniffed: Option<BytesMut>,
    /// Bytes written to us that do not make a whole frame yet.
    pending: BytesMut,
    /// Rewritten bytes not yet accepted by `inner`.
    out: BytesMut,
}

/// Past this much unflushed output a write waits for the socket (backpressure).
const HIGH_WATER: usize = 256 * 1024;

impl<Io> FullPerformatives<Io> {
    pub fn new(inner: Io) -> Self {
        FullPerformatives {
            inner,
            peer_max_frame: None,
            sniffed: Some(BytesMut::new()),
            pending: BytesMut::new(),
            out: BytesMut::new(),
        }
    }

    fn process(&mut self) {
        while let Some(frame) = next_frame(&mut self.pending) {
            match pad_frame(&frame) {
                Some(padded) if padded.len() as u64 <= self.peer_max_frame.unwrap_or(u32::MAX) as u64 => {
                    self.out.put_slice(&padded)
                }
                _ => self.out.put_slice(&frame),
            }
        }
    }

    /// Looks for the peer's OPEN in what it sent (SASL and headers come first).
    fn sniff(&mut self, read: &[u8]) {
        let Some(buf) = self.sniffed.as_mut() else { return };
        buf.put_slice(read);
        while let Some(frame) = next_frame(buf) {
            if let Some(max) = open_max_frame_size(&frame) {
                self.peer_max_frame = Some(max);
                self.sniffed = None;
                return;
            }
        }
        if buf.len() > 64 * 1024 {
            self.sniffed = None; // not AMQP as we know it; the engine will refuse it
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
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if self.sniffed.is_some() {
            let read = buf.filled()[before..].to_vec();
            self.sniff(&read);
        }
        Poll::Ready(result)
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
    fn the_peer_max_frame_size_is_read_from_its_open() {
        // OPEN("c", null, 65536) as list8.
        let frame = [0, 0, 0, 23, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0xc0, 0x0a, 0x03, 0xa1, 0x01, b'c', 0x40, 0x70, 0, 1, 0, 0];
        assert_eq!(open_max_frame_size(&frame), Some(65536));
        let frame = [0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0x45];
        assert_eq!(open_max_frame_size(&frame), Some(u32::MAX), "no fields: no limit");
        let begin = [0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x11, 0x45];
        assert_eq!(open_max_frame_size(&begin), None);
    }

    #[test]
    fn full_and_unknown_frames_pass_unchanged() {
        let frame = [0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x17, 0x45];
        assert!(pad_frame(&frame).is_some(), "END with no fields gets its one field");
        let empty = [0, 0, 0, 8, 2, 0, 0, 0];
        assert!(pad_frame(&empty).is_none(), "a heartbeat has no body");
    }
}

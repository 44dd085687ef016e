//! A fault-injection TCP proxy of our own: listens on an ephemeral loopback port, forwards every
//! connection to an upstream address (the emulator's MQTT port), and on command breaks the links
//! the way real networks do, so the fault tests drive a real client over real TLS through it.
//!
//! - `cut(Cut::Reset | Cut::Fin)`: closes every current connection (RST, or an orderly FIN);
//!   new connections are still accepted and forwarded.
//! - `stall()`: stops moving bytes in both directions but keeps every socket open (a congested or
//!   frozen path: TCP buffers fill, nothing is lost yet).
//! - `black_hole()`: accepts and reads everything, forwards and answers nothing; connections made
//!   while black-holed never reach upstream (a silently dead link, as after a NAT timeout).
//! - `heal()`: forwarding resumes for links that were stalled; black-holed bytes stay lost.
//!
//! The proxy never looks at what it carries (TLS passes through untouched).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// How `cut` closes connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// `SO_LINGER 0` then close: the peer reads ECONNRESET.
    Reset,
    /// An orderly close: the peer reads end of stream.
    Fin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Stall,
    BlackHole,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    mode: watch::Sender<Mode>,
    cuts: broadcast::Sender<Cut>,
    accepted: AtomicUsize,
    open: AtomicUsize,
    forwarded_bytes: AtomicU64,
    discarded_bytes: AtomicU64,
}

/// A running proxy; dropping it stops accepting (open relays end with their sockets).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` that forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            mode: watch::Sender::new(Mode::Forward),
            cuts: broadcast::channel(16).0,
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            forwarded_bytes: AtomicU64::new(0),
            discarded_bytes: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy { addr, shared, accept_task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where new connections go (e.g. a restarted upstream on another port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Closes every connection open now.
    pub fn cut(&self, how: Cut) {
        let _ = self.shared.cuts.send(how);
    }

    pub fn stall(&self) {
        self.shared.mode.send_replace(Mode::Stall);
    }

    pub fn black_hole(&self) {
        self.shared.mode.send_replace(Mode::BlackHole);
    }

    pub fn heal(&self) {
        self.shared.mode.send_replace(Mode::Forward);
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose relay is still running.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded_bytes.load(Ordering::SeqCst)
    }

    /// Bytes read and thrown away while black-holed.
    pub fn discarded_bytes(&self) -> u64 {
        self.shared.discarded_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Open relays close too: a dropped proxy is a dead path.
        let _ = self.shared.cuts.send(Cut::Fin);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let _ = client.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        // Subscribed before the task starts, so a cut issued right after accept reaches it.
        let cuts = shared.cuts.subscribe();
        let shared = shared.clone();
        tokio::spawn(async move {
            relay(client, cuts, &shared).await;
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Carries one connection until either side closes it or a cut comes.
async fn relay(client: TcpStream, mut cuts: broadcast::Receiver<Cut>, shared: &Arc<Shared>) {
    let black_holed = *shared.mode.borrow() == Mode::BlackHole;
    let upstream = if black_holed {
        None
    } else {
        let target = *shared.upstream.lock().unwrap();
        match TcpStream::connect(target).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            // Upstream down (e.g. the emulator restarting): the client sees its link reset.
            Err(_) => {
                let _ = client.set_zero_linger();
                return;
            }
        }
    };
    let (client_read, client_write) = client.into_split();
    let Some(upstream) = upstream else {
        // Accepted while black-holed: read forever, never answer, never reach upstream.
        let cut = tokio::select! {
            _ = discard(client_read, shared) => Cut::Fin,
            cut = cuts.recv() => cut.unwrap_or(Cut::Fin),
        };
        close(client_write, cut);
        return;
    };
    let (up_read, up_write) = upstream.into_split();
    let cut = tokio::select! {
        _ = pump(client_read, &up_write, shared) => None,
        _ = pump(up_read, &client_write, shared) => None,
        cut = cuts.recv() => Some(cut.unwrap_or(Cut::Fin)),
    };
    let cut = match cut {
        Some(cut) => cut,
        // A black hole forwards no FIN either (upstream giving up on the silent link must not
        // tell the client): the client's side stays open until a cut or the proxy's end.
        None if *shared.mode.borrow() == Mode::BlackHole => {
            close(up_write, Cut::Fin);
            let cut = cuts.recv().await.unwrap_or(Cut::Fin);
            close(client_write, cut);
            return;
        }
        None => Cut::Fin,
    };
    close(up_write, cut);
    close(client_write, cut);
}

/// Closes a connection whose read half is gone (or going with the caller's frame).
fn close(half: OwnedWriteHalf, how: Cut) {
    match how {
        Cut::Reset => {
            // Linger 0 makes the kernel answer the close with RST; `forget` skips the FIN that
            // dropping a write half would send first.
            let _ = half.as_ref().set_zero_linger();
            half.forget();
        }
        Cut::Fin => drop(half),
    }
}

async fn discard(mut from: OwnedReadHalf, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        shared.discarded_bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// Moves bytes one way, obeying the mode: stalled → reads nothing; black-holed → reads and drops.
/// Ends when `from` ends or fails, or `to` cannot be written.
async fn pump(mut from: OwnedReadHalf, to: &OwnedWriteHalf, shared: &Shared) {
    let mut mode = shared.mode.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Stalled: leave the bytes in the kernel's buffers until the mode changes.
        while *mode.borrow_and_update() == Mode::Stall {
            if mode.changed().await.is_err() {
                return;
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Re-check the mode (a stall must stop reads that are already waiting).
            _ = mode.changed() => continue,
        };
        // A stall that began while this read was completing holds the bytes, not drops them.
        while *mode.borrow_and_update() == Mode::Stall {
            if mode.changed().await.is_err() {
                return;
            }
        }
        if *mode.borrow() == Mode::BlackHole {
            shared.discarded_bytes.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        if write_all(to, &buf[..n]).await.is_err() {
            return;
        }
        shared.forwarded_bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
}

async fn write_all(to: &OwnedWriteHalf, mut data: &[u8]) -> std::io::Result<()> {
    // `OwnedWriteHalf` needs `&mut` for AsyncWrite; the shared reference goes through try_write.
    while !data.is_empty() {
        to.as_ref().writable().await?;
        match to.as_ref().try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}


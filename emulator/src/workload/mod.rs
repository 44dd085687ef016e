//! The IoT Edge workload API, as iotedged serves it to the modules of an edge device: the trust
//! bundle (the emulator's CA) and HMAC-SHA256 signing with a module's key, which is how a module
//! started by IoT Edge builds its SAS tokens without ever seeing its key. Also the `IOTEDGE_*`
//! environment such a module is started with.
//!
//! - `api`: the calls and their answers. `listener`: HTTP/1.1 over a Unix socket or TCP.
//! - `environment`: the `IOTEDGE_*` variables of a module.

pub mod api;
mod environment;
mod listener;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use api::{WorkloadApi, WorkloadError, DEFAULT_API_VERSION};
pub use environment::edge_environment;
pub use listener::{serve, Listener};

/// Where a running workload API listens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadEndpoints {
    pub socket: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
}

impl WorkloadEndpoints {
    /// What `IOTEDGE_WORKLOADURI` holds: the Unix socket when there is one (as iotedged on
    /// Linux), else the TCP address; `None` when the workload API is not served.
    pub fn uri(&self) -> Option<String> {
        match (&self.socket, &self.tcp) {
            (Some(path), _) => Some(format!("unix://{}", path.display())),
            (None, Some(_)) => self.http_uri(),
            (None, None) => None,
        }
    }

    /// The TCP endpoint as a workload URI (`http://127.0.0.1:port`), when there is one.
    pub fn http_uri(&self) -> Option<String> {
        self.tcp.map(|addr| format!("http://{addr}"))
    }
}

/// Serves `api` on the Unix socket at `path` until the returned task is aborted.
#[cfg(unix)]
pub fn serve_socket(path: &Path, api: Arc<WorkloadApi>) -> io::Result<JoinHandle<()>> {
    let listener = bind_socket(path)?;
    Ok(tokio::spawn(serve(listener, api)))
}

#[cfg(not(unix))]
pub fn serve_socket(path: &Path, _api: Arc<WorkloadApi>) -> io::Result<JoinHandle<()>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, format!("cannot serve the workload socket {}: no Unix sockets here", path.display())))
}

/// Listens on the Unix socket at `path`, creating its directory. A dead socket file left behind by
/// an emulator that did not stop cleanly is replaced; a live one (someone answers) or any other
/// file there is an error, never deleted.
#[cfg(unix)]
fn bind_socket(path: &Path) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on the workload socket {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(context)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(context(io::Error::new(io::ErrorKind::AddrInUse, "another server is listening there")));
            }
            std::fs::remove_file(path).map_err(context)?
        }
        Ok(_) => return Err(context(io::Error::new(io::ErrorKind::AlreadyExists, "a file that is not a socket is in the way"))),
        Err(_) => {}
    }
    tokio::net::UnixListener::bind(path).map_err(context)
}

//! A TCP proxy on loopback that a test can cut, to play a network failure between one agent
//! and scitqd without touching either process.
//!
//! Two kinds of failure:
//! - [`Proxy::cut`]: every open connection is reset and new ones are closed at once, as when
//!   a peer's host is gone and the network says so;
//! - [`Proxy::blackhole`]: connections stay open but no byte crosses in either direction, as
//!   when a cable is pulled: only the programs' own timeouts can notice.
//!
//! [`Proxy::restore`] lets traffic through again (new connections only, after a cut).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const OPEN: u8 = 0;
const CUT: u8 = 1;
const BLACKHOLE: u8 = 2;

struct Shared {
    /// Where new connections go; see [`Proxy::retarget`].
    target: Mutex<SocketAddr>,
    mode: AtomicU8,
    /// Both ends of every connection made, to reset them on a cut.
    sockets: Mutex<Vec<TcpStream>>,
    connections: AtomicU8,
    /// Bytes replaced by others of the same length on their way back from the target.
    rewrite: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

/// A proxy from `127.0.0.1:<free port>` to a target address. Its threads end with the
/// test process; dropping it cuts everything.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Starts forwarding to `target` (`HOST:PORT`).
    pub fn start(target: &str) -> Proxy {
        let target: SocketAddr = target.parse().expect("proxy target HOST:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            mode: AtomicU8::new(OPEN),
            sockets: Mutex::new(Vec::new()),
            connections: AtomicU8::new(0),
            rewrite: Mutex::new(None),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepting.mode.load(Ordering::SeqCst) == CUT {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let target = *accepting.target.lock().expect("proxy target");
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                accepting.connections.fetch_add(1, Ordering::SeqCst);
                {
                    let mut sockets = accepting.sockets.lock().expect("proxy sockets");
                    sockets.push(client.try_clone().expect("clone socket"));
                    sockets.push(server.try_clone().expect("clone socket"));
                }
                pipe(
                    accepting.clone(),
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    false,
                );
                pipe(accepting.clone(), server, client, true);
            }
        });
        Proxy { addr, shared }
    }

    /// `127.0.0.1:PORT` to give to the client side.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Sends new connections to `target` (`HOST:PORT`) from now on; open ones stay where they
    /// are. A server restarted on a new port stays reachable at this proxy's address.
    pub fn retarget(&self, target: &str) {
        let target: SocketAddr = target.parse().expect("proxy target HOST:PORT");
        *self.shared.target.lock().expect("proxy target") = target;
    }

    /// Damages what the target sends back: `from` becomes `to` (same length) wherever it
    /// appears within one read, as a corrupted transfer would (headers stay as they are).
    pub fn rewrite_replies(&self, from: &[u8], to: &[u8]) {
        assert_eq!(from.len(), to.len(), "a rewrite keeps the length");
        *self.shared.rewrite.lock().expect("proxy rewrite") = Some((from.to_vec(), to.to_vec()));
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u8 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Resets every connection and closes new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.mode.store(CUT, Ordering::SeqCst);
        let sockets = std::mem::take(&mut *self.shared.sockets.lock().expect("proxy sockets"));
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Stops forwarding bytes; connections stay open and new ones are accepted but starved.
    pub fn blackhole(&self) {
        self.shared.mode.store(BLACKHOLE, Ordering::SeqCst);
    }

    /// Forwards again. After a cut, only new connections carry traffic; after a blackhole,
    /// open connections resume with whatever the peers still send.
    pub fn restore(&self) {
        self.shared.mode.store(OPEN, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies `from` to `to` until either closes; holds bytes back while blackholed; applies
/// the rewrite to `replies` (target to client).
fn pipe(shared: Arc<Shared>, mut from: TcpStream, mut to: TcpStream, replies: bool) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            loop {
                match shared.mode.load(Ordering::SeqCst) {
                    OPEN => break,
                    CUT => {
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                        return;
                    }
                    _ => thread::sleep(Duration::from_millis(10)),
                }
            }
            if replies && let Some((old, new)) = &*shared.rewrite.lock().expect("proxy rewrite") {
                let mut i = 0;
                while i + old.len() <= n {
                    if buf[i..i + old.len()] == old[..] {
                        buf[i..i + old.len()].copy_from_slice(new);
                        i += old.len();
                    } else {
                        i += 1;
                    }
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

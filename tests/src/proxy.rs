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
    target: SocketAddr,
    mode: AtomicU8,
    /// Both ends of every connection made, to reset them on a cut.
    sockets: Mutex<Vec<TcpStream>>,
    connections: AtomicU8,
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
            target,
            mode: AtomicU8::new(OPEN),
            sockets: Mutex::new(Vec::new()),
            connections: AtomicU8::new(0),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepting.mode.load(Ordering::SeqCst) == CUT {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(accepting.target) else {
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
                );
                pipe(accepting.clone(), server, client);
            }
        });
        Proxy { addr, shared }
    }

    /// `127.0.0.1:PORT` to give to the client side.
    pub fn addr(&self) -> String {
        self.addr.to_string()
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

/// Copies `from` to `to` until either closes; holds bytes back while blackholed.
fn pipe(shared: Arc<Shared>, mut from: TcpStream, mut to: TcpStream) {
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
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

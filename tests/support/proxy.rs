//! A loopback fault proxy between test clients and a server, driven by the test: it forwards
//! every connection made to it, and on command resets them all (a real RST, as a crashed
//! middlebox or a load balancer dropping flows sends), freezes them (both sockets stay open,
//! nothing is forwarded either way: a half-open path), thaws them, or refuses new ones.
//!
//! Each connection is two sockets and two pump threads, one per direction. A pump reads with
//! a short timeout so it notices a command without being woken; a reset sets `SO_LINGER` 0 on
//! both sockets and waits for the pumps to drop them, so the last close sends the RST and the
//! call returns only once it has been sent.
//!
//! [`client_behind`] (and, with the `tokio` feature, [`async_client_behind`]) connect a client
//! with a resumable session through a proxy, the way every resume suite starts.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How often an idle pump or the acceptor looks at the commands.
const POLL: Duration = Duration::from_millis(10);

/// A link's state, as its pumps read it.
const OPEN: u8 = 0;
/// Closing with FIN (the proxy is dropped, or one side closed).
const CLOSE: u8 = 1;
/// Closing with RST.
const RESET: u8 = 2;

/// One proxied connection: the client's socket, the server's, and how it should end.
struct Link {
    state: AtomicU8,
    /// Pumps of this link that have stopped forwarding for a freeze.
    parked: AtomicUsize,
    pumps: Mutex<Vec<thread::JoinHandle<()>>>,
    /// The client's side, to count what a freeze holds back (`held_bytes`). A copy of the
    /// socket: the pump that ends the link drops it, since while any copy is open the client's
    /// side is never closed (a client would see a link whose server is gone as open forever).
    down: Mutex<Option<TcpStream>>,
}

/// A blocking client behind `proxy` with a session of `grace`, which the server opened.
pub fn client_behind(proxy: &Proxy, grace: Duration) -> officer::client::Client {
    let client = officer::client::Client::builder()
        .host("127.0.0.1")
        .port(proxy.port())
        .session_grace(grace)
        .connect()
        .expect("connect through the proxy");
    assert!(client.session().is_some(), "the server opened no session");
    client
}

/// An async client behind `proxy` with a session of `grace`, which the server opened.
#[cfg(feature = "tokio")]
pub async fn async_client_behind(proxy: &Proxy, grace: Duration) -> officer::client::tokio::AsyncClient {
    let client = officer::client::tokio::AsyncClient::builder()
        .host("127.0.0.1")
        .port(proxy.port())
        .session_grace(grace)
        .connect()
        .await
        .expect("connect through the proxy");
    assert!(client.session().is_some(), "the server opened no session");
    client
}

/// What the test controls, shared with the proxy's threads.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    frozen: AtomicBool,
    /// New connections are reset as soon as they are accepted.
    refusing: AtomicBool,
    accepted: AtomicUsize,
    links: Mutex<Vec<Arc<Link>>>,
}

/// A proxy listening on 127.0.0.1:0 that forwards to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let for_acceptor = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(listener, upstream, &for_acceptor));
        Proxy { addr, shared, acceptor: Some(acceptor) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far (refused ones included).
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently forwarded (or frozen).
    pub fn live(&self) -> usize {
        let mut links = self.shared.links.lock().unwrap();
        links.retain(|l| l.state.load(Ordering::SeqCst) == OPEN);
        links.len()
    }

    /// Resets every connection through the proxy, both ways, and returns how many: each side
    /// gets an RST (the close with `SO_LINGER` 0), not a FIN. Returns once they are closed.
    pub fn reset_all(&self) -> usize {
        self.end_all(RESET)
    }

    /// Stops forwarding both ways, holding every socket open (new connections too). Returns
    /// once every pump has stopped: a byte written after this is not forwarded until `thaw`.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
        let links: Vec<Arc<Link>> = self.shared.links.lock().unwrap().clone();
        for link in links {
            while link.state.load(Ordering::SeqCst) == OPEN && link.parked.load(Ordering::SeqCst) < 2 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Bytes the clients have sent that a freeze holds back, unread in the proxy's sockets:
    /// a test waits on it to know a request reached the frozen proxy.
    pub fn held_bytes(&self) -> usize {
        let links = self.shared.links.lock().unwrap();
        links
            .iter()
            .filter(|l| l.state.load(Ordering::SeqCst) == OPEN)
            .map(|l| l.down.lock().unwrap().as_ref().map_or(0, unread))
            .sum()
    }

    /// Waits until a freeze holds back at least `bytes` from the clients, failing after 10 s.
    pub fn wait_held(&self, bytes: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.held_bytes() < bytes {
            assert!(std::time::Instant::now() < deadline, "nothing reached the frozen proxy");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Forwards again whatever was held back while frozen.
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
    }

    /// Resets new connections as soon as they are accepted (`true`), or forwards them again.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    fn end_all(&self, how: u8) -> usize {
        let links: Vec<Arc<Link>> = std::mem::take(&mut *self.shared.links.lock().unwrap());
        let mut ended = 0;
        for link in links {
            if link.state.compare_exchange(OPEN, how, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                ended += 1;
            }
            for pump in std::mem::take(&mut *link.pumps.lock().unwrap()) {
                let _ = pump.join();
            }
        }
        ended
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.end_all(CLOSE);
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let down = match listener.accept() {
            Ok((down, _)) => down,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("proxy accept: {e}"),
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        down.set_nonblocking(false).expect("blocking proxied socket");
        if shared.refusing.load(Ordering::SeqCst) {
            set_linger_zero(&down);
            drop(down);
            continue;
        }
        let up = match TcpStream::connect(upstream) {
            Ok(up) => up,
            Err(_) => {
                // The server is gone: the client hears it as a reset.
                set_linger_zero(&down);
                continue;
            }
        };
        let _ = up.set_nodelay(true);
        let _ = down.set_nodelay(true);
        let link = Arc::new(Link {
            state: AtomicU8::new(OPEN),
            parked: AtomicUsize::new(0),
            pumps: Mutex::new(Vec::new()),
            down: Mutex::new(Some(clone(&down))),
        });
        // Listed before its pumps start, under the list's lock: a reset that follows any byte
        // forwarded on this link finds it, with its pumps to wait for.
        let mut links = shared.links.lock().unwrap();
        links.retain(|l| l.state.load(Ordering::SeqCst) == OPEN);
        let pumps = vec![
            pump(clone(&down), clone(&up), Arc::clone(&link), Arc::clone(shared)),
            pump(up, down, Arc::clone(&link), Arc::clone(shared)),
        ];
        *link.pumps.lock().unwrap() = pumps;
        links.push(link);
    }
}

/// The bytes waiting to be read on `s` (FIONREAD); 0 if it cannot say.
fn unread(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD on an open socket writes one c_int, which `n` is.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

fn clone(s: &TcpStream) -> TcpStream {
    s.try_clone().expect("clone proxied socket")
}

/// Makes the last close of `s` send an RST instead of a FIN (best effort: a socket the peer
/// already reset needs nothing more).
fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on an open socket with a valid, correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Copies `from` to `to` while the link is open and the proxy not frozen. When one side ends,
/// the link ends for both: with a FIN when it closed, with an RST when it was reset (or the
/// test asked for one).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    link: Arc<Link>,
    shared: Arc<Shared>,
) -> thread::JoinHandle<()> {
    from.set_read_timeout(Some(POLL)).expect("proxy read timeout");
    thread::spawn(move || {
        let mut buf = [0u8; 16384];
        let mut parked = false;
        loop {
            if link.state.load(Ordering::SeqCst) != OPEN {
                break;
            }
            if shared.frozen.load(Ordering::SeqCst) {
                if !parked {
                    parked = true;
                    link.parked.fetch_add(1, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            if parked {
                parked = false;
                link.parked.fetch_sub(1, Ordering::SeqCst);
            }
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = link.state.compare_exchange(OPEN, CLOSE, Ordering::SeqCst, Ordering::SeqCst);
                    break;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        let _ = link.state.compare_exchange(OPEN, RESET, Ordering::SeqCst, Ordering::SeqCst);
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    let _ = link.state.compare_exchange(OPEN, RESET, Ordering::SeqCst, Ordering::SeqCst);
                    break;
                }
            }
        }
        if link.state.load(Ordering::SeqCst) == RESET {
            // Both sockets, so whichever pump drops the last copy sends the RST.
            set_linger_zero(&from);
            set_linger_zero(&to);
        } else {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        }
        // The link's own copy of the client's socket goes too, so the last close happens.
        drop(link.down.lock().unwrap().take());
    })
}

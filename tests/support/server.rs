//! The server in-process: `TestServer` binds 127.0.0.1:0 (or a UNIX socket the test names) on
//! its own thread and stops it gracefully, so a test reads the real address and waits on events.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use officer::server::{BoundAddr, Config, Listen, Server, ShutdownHandle};

/// A server running on its own thread in this process.
pub struct TestServer {
    addr: BoundAddr,
    metrics: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// TCP on 127.0.0.1 with an OS-chosen port and default limits.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config { listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() };
        configure(&mut config);
        let server = Server::bind(config).expect("bind test server");
        let addr = server.local_addr().clone();
        let metrics = server.metrics_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run().expect("server run"));
        TestServer { addr, metrics, handle, thread: Some(thread) }
    }

    /// The TCP address (panics for a UNIX-socket server).
    pub fn addr(&self) -> SocketAddr {
        match &self.addr {
            BoundAddr::Tcp(a) => *a,
            BoundAddr::Unix(p) => panic!("server listens on {}", p.display()),
        }
    }

    /// Where `/metrics` is served (when the config enabled it).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.expect("metrics not enabled")
    }

    /// Graceful stop: clients get a SHUTDOWN frame then EOF; waits for the loop to exit.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread panicked");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

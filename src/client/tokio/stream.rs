//! Connecting with tokio (TCP or a UNIX socket) within the connect timeout, and the handshake
//! over the new socket, its steps taken from [`handshake`](crate::client::handshake); then the
//! socket as a [`Link`], its two halves boxed so TCP and UNIX links are one type (a resume
//! replaces one with the other kind never, but the driver need not know which it runs).

use std::io;

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ::tokio::net::{TcpStream, UnixStream};
use ::tokio::time::timeout;

use crate::client::builder::{Config, Target};
use crate::client::handshake::{self, AUTH_ID, HELLO_ID, PROBE_ID};
use crate::client::Result;
use crate::protocol::{HelloOk, Response};

/// The read half of a link's socket.
pub(crate) type Reader = Box<dyn AsyncRead + Unpin + Send>;
/// The write half of a link's socket.
pub(crate) type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// A socket after a successful handshake: its halves and any bytes read past the handshake.
pub(crate) struct Link {
    pub(crate) rd: Reader,
    pub(crate) wr: Writer,
    pub(crate) leftover: Vec<u8>,
}

/// Connects to the configured target and performs the handshake, each within the connect
/// timeout; the server's HELLO_OK and the link.
pub(crate) async fn connect(config: &Config) -> Result<(HelloOk, Link)> {
    match &config.target {
        Target::Unix(path) => {
            let mut s =
                timeout(config.connect_timeout, UnixStream::connect(path)).await.map_err(|_| late())??;
            let (hello, leftover) = shake(&mut s, config).await?;
            let (rd, wr) = s.into_split();
            Ok((hello, Link { rd: Box::new(rd), wr: Box::new(wr), leftover }))
        }
        Target::Tcp { host, port } => {
            let mut s = connect_tcp(config, host, *port).await?;
            let (hello, leftover) = shake(&mut s, config).await?;
            let (rd, wr) = s.into_split();
            Ok((hello, Link { rd: Box::new(rd), wr: Box::new(wr), leftover }))
        }
    }
}

/// Sends `frame` (SESSION_OPEN or SESSION_RESUME, under the handshake's
/// [`SESSION_ID`](crate::client::conn::SESSION_ID)) on a link no task reads yet, and reads its
/// answer, within the connect timeout.
pub(crate) async fn exchange(config: &Config, link: &mut Link, frame: &[u8]) -> Result<Response> {
    let id = crate::client::conn::SESSION_ID;
    let steps = async {
        link.wr.write_all(frame).await?;
        read_reply(&mut link.rd, &mut link.leftover, id, None).await
    };
    timeout(config.connect_timeout, steps).await.map_err(|_| handshake::silent())?
}

/// Tries each resolved address until one answers within the connect timeout.
async fn connect_tcp(config: &Config, host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in ::tokio::net::lookup_host((host, port)).await? {
        match timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests are small and latency-bound; never wait to coalesce them.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(late()),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"))))
}

fn late() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
}

/// The handshake within the connect timeout; silence past it names the likely cause.
async fn shake<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, config: &Config) -> Result<(HelloOk, Vec<u8>)> {
    timeout(config.connect_timeout, handshake_steps(s, config)).await.map_err(|_| handshake::silent())?
}

/// HELLO and the probe PING, then AUTH when the server asks, as the blocking client does.
async fn handshake_steps<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    config: &Config,
) -> Result<(HelloOk, Vec<u8>)> {
    let mut buf = Vec::new();
    s.write_all(&handshake::opening()).await?;
    let hello = handshake::hello(read_reply(s, &mut buf, HELLO_ID, Some(&config.target)).await?)?;
    handshake::probe(read_reply(s, &mut buf, PROBE_ID, None).await?)?;
    handshake::check_version(&hello)?;
    if let Some(auth) = handshake::auth_request(config, &hello)? {
        s.write_all(&auth).await?;
        handshake::auth(read_reply(s, &mut buf, AUTH_ID, None).await?)?;
    }
    Ok((hello, buf))
}

/// Reads until the answer to `id` arrives (see [`handshake::next_reply`] for `first_of`).
async fn read_reply<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    buf: &mut Vec<u8>,
    id: u32,
    first_of: Option<&Target>,
) -> Result<Response> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(resp) = handshake::next_reply(buf, id, first_of)? {
            return Ok(resp);
        }
        match s.read(&mut chunk).await {
            Ok(0) => return Err(handshake::closed_early(buf, first_of)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

//! The HTTP/1.1 client behind cloud providers: hyper's connection API,
//! driven inline by the task that reads the answer.
//!
//! A pooled client (reqwest, hyper-util) runs each connection as its own
//! task and hands the body over through a channel one chunk per scheduler
//! turn, so an SSE answer that arrived in one read still left as one write
//! per event, each a wakeup for the client. Here the request's task polls
//! the connection itself whenever the body has nothing ready: every event
//! already in the read buffer is decoded in the same poll, and the server
//! writes them out together.
//!
//! Each HTTP thread keeps its own idle connections (a connection's socket
//! belongs to the event loop that opened it). An idle connection is
//! checked before reuse; if it turns out closed under the request, the
//! request is sent once more on a new one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::{http1, TrySendError};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Idle connections kept per HTTP thread and endpoint.
const MAX_IDLE: usize = 64;
/// Idle connections older than this are closed rather than reused: cloud
/// load balancers drop idle connections after a minute or two, and a
/// request sent into one that is closing costs a round trip.
const IDLE_FOR: Duration = Duration::from_secs(50);
/// The largest whole (non-streamed) answer read.
const MAX_BODY: usize = 64 << 20;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No TCP connection (refused, unreachable, name not resolved).
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// HTTP on an open connection failed (reset, malformed, closed early).
    #[error("{}", chain(.0))]
    Http(#[from] hyper::Error),
    /// The connect timeout or the request's deadline passed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The proxy refused or broke the tunnel.
    #[error("proxy: {0}")]
    Proxy(String),
    /// A whole answer larger than [`MAX_BODY`].
    #[error("the answer is larger than {} MiB", MAX_BODY >> 20)]
    TooLarge,
}

impl Error {
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// hyper's Display omits the cause (reset, EOF, ...).
fn chain(e: &hyper::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Where requests go: one URL, parsed once.
struct Target {
    host: String,
    port: u16,
    /// `host[:port]` as the URL gave it.
    host_header: HeaderValue,
    /// `host:port`, always with the port (a CONNECT target).
    authority: String,
    /// The request target: origin-form (`/v1/chat/completions`), or the
    /// whole URL for plain HTTP through a proxy.
    path: Uri,
    /// The proxy to go through, if any.
    proxy: Option<Proxy>,
    /// `None` for plain HTTP.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

/// A client for one URL, with a pool of idle connections per HTTP thread.
pub(crate) struct Client {
    target: Arc<Target>,
    connect_timeout: Duration,
    pools: Arc<[Mutex<Vec<Idle>>]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .finish()
    }
}

/// An HTTP/1.1 connection: the request side and the connection itself,
/// which only makes progress when polled.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: http1::Connection<TokioIo<Stream>, Full<Bytes>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// An answer's status and headers; its body is read with [`Body`].
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
}

/// A response body. Reading it drives its connection, which goes back to
/// its pool once the body has been read to the end (and is closed if the
/// body is dropped before).
pub(crate) struct Body {
    incoming: Incoming,
    conn: Option<Conn>,
    pool: Arc<[Mutex<Vec<Idle>>]>,
    thread: usize,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Client {
    /// A client for `url` (`http://` or `https://`, with the path requests
    /// go to), through `proxy` if given; `tls` secures https.
    pub(crate) fn new(
        url: &str,
        proxy: Option<Proxy>,
        tls: &Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        threads: usize,
    ) -> Result<Self, String> {
        let uri = url.parse::<Uri>().map_err(|e| e.to_string())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("not an http:// or https:// URL".into()),
        };
        let authority = uri.authority().ok_or("no host")?;
        // `[::1]` in the URL; `::1` to connect and to name.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match https {
            false => None,
            true => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("`{host}` is not a TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(tls.clone()), name))
            }
        };
        // A proxy forwards plain HTTP by the request line's whole URL; https
        // goes through a CONNECT tunnel and asks as usual.
        let path = match (&proxy, https) {
            (Some(_), false) => uri.clone(),
            _ => uri.path_and_query().map_or("/", |p| p.as_str()).parse::<Uri>().map_err(|e| e.to_string())?,
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL: use api_key_env".into());
        }
        Ok(Self {
            target: Arc::new(Target {
                port,
                authority: format!("{}:{port}", authority.host()),
                host,
                host_header,
                path,
                proxy,
                tls,
            }),
            connect_timeout,
            pools: (0..threads.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        })
    }

    /// POST `body` with `headers` (the host is added); the answer's head,
    /// within `timeout` of now, which also bounds reading its body.
    pub(crate) async fn post(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let deadline = Instant::now() + timeout;
        let thread = crate::http_thread() % self.pools.len();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.target.path.clone();
        *req.headers_mut() = headers.clone();
        req.headers_mut().insert(header::HOST, self.target.host_header.clone());
        if let Some(auth) = self.target.proxy.as_ref().filter(|_| self.target.tls.is_none()).and_then(|p| p.auth.clone()) {
            req.headers_mut().insert(header::PROXY_AUTHORIZATION, auth);
        }
        let exchange = async {
            if let Some(conn) = self.checkout(thread) {
                match exchange(conn, req).await {
                    Ok(r) => return Ok(r),
                    // The connection closed before the request was written
                    // (the server's idle timeout raced it): hyper gives it
                    // back, and it goes out again on a new connection. A
                    // request that may have been written is not resent here:
                    // the router decides about retries.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(Error::Http(e.into_error())),
                    },
                }
            }
            let conn = self.connect().await?;
            exchange(conn, req).await.map_err(|e| Error::Http(e.into_error()))
        };
        let (head, conn) = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        let (parts, incoming) = head.into_parts();
        let body = Body {
            incoming,
            conn,
            pool: self.pools.clone(),
            thread,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            limit: timeout,
        };
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self, thread: usize) -> Option<Conn> {
        let mut idle = self.pools[thread].lock().unwrap_or_else(|p| p.into_inner());
        // The oldest sit at the bottom, never reached while newer ones serve:
        // closed here (they may be in CLOSE_WAIT already).
        idle.retain(|i| i.since.elapsed() <= IDLE_FOR);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        while let Some(mut i) = idle.pop() {
            // One poll notices a close the peer already sent.
            if Pin::new(&mut i.conn.conn).poll(&mut cx).is_ready() {
                continue;
            }
            if let Poll::Ready(Ok(())) = i.conn.sender.poll_ready(&mut cx) {
                return Some(i.conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let t = &self.target;
        let open = async {
            let (host, port) = t.proxy.as_ref().map_or((t.host.as_str(), t.port), |p| (p.host.as_str(), p.port));
            let mut tcp = TcpStream::connect((host, port)).await.map_err(Error::Connect)?;
            // Requests and SSE events are small and latency-bound.
            tcp.set_nodelay(true).map_err(Error::Connect)?;
            if let (Some(proxy), Some(_)) = (&t.proxy, &t.tls) {
                proxy.tunnel(&mut tcp, &t.authority).await?;
            }
            Ok::<_, Error>(match &t.tls {
                None => Stream::Plain(tcp),
                Some((connector, name)) => Stream::Tls(Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(Error::Tls)?,
                )),
            })
        };
        let io = tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| Error::Timeout(self.connect_timeout))??;
        let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
        Ok(Conn { sender, conn })
    }
}

/// Send `req` on `conn` and drive the connection until the answer's head
/// is in; the connection too unless it has ended.
async fn exchange(
    conn: Conn,
    req: Request<Full<Bytes>>,
) -> Result<(axum::http::Response<Incoming>, Option<Conn>), TrySendError<Request<Full<Bytes>>>> {
    let Conn { mut sender, conn } = conn;
    let mut sent = std::pin::pin!(sender.try_send_request(req));
    let mut conn = Some(conn);
    let head = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = sent.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if conn.as_mut().is_some_and(|c| Pin::new(c).poll(cx).is_ready()) {
            // Ended (closed while idle, before taking the request): dropping
            // it hands the request back unsent, or fails it, at once.
            conn = None;
            return sent.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await?;
    Ok((head, conn.map(|conn| Conn { sender, conn })))
}

impl Body {
    /// The whole body (up to [`MAX_BODY`]).
    pub(crate) async fn bytes(mut self) -> Result<Bytes, Error> {
        use futures_util::StreamExt;
        // The usual answer is one frame: kept as it is, no copy.
        let mut first = Bytes::new();
        let mut more: Option<BytesMut> = None;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if more.as_ref().map_or(first.len(), BytesMut::len) + chunk.len() > MAX_BODY {
                return Err(Error::TooLarge);
            }
            match &mut more {
                None if first.is_empty() => first = chunk,
                None => {
                    let mut buf = BytesMut::from(&first[..]);
                    buf.extend_from_slice(&chunk);
                    more = Some(buf);
                }
                Some(buf) => buf.extend_from_slice(&chunk),
            }
        }
        Ok(more.map_or(first, BytesMut::freeze))
    }

    /// Read the body's end if it has already arrived, without waiting: a
    /// stream's reader stops at its last event (`[DONE]`), before the
    /// chunked body's terminator, and a connection can only be reused once
    /// that is read. If it has not arrived, dropping the body closes the
    /// connection.
    pub(crate) fn end_now(&mut self) {
        use futures_util::Stream;
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // Anything after the last event is ignored; a few frames at most.
        for _ in 0..4 {
            match Pin::new(&mut *self).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                _ => return,
            }
        }
    }

    /// The body is read: its connection can serve another request.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.pool[self.thread]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
        }
    }
}

impl futures_util::Stream for Body {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut driven = false;
        loop {
            match Pin::new(&mut this.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    // Empty data or trailers: nothing to hand on.
                    _ => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Http(e))));
                }
                Poll::Ready(None) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Poll::Pending if driven => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.conn = None;
                        return Poll::Ready(Some(Err(Error::Timeout(this.limit))));
                    }
                    return Poll::Pending;
                }
                Poll::Pending => {}
            }
            // Nothing decoded yet: drive the connection, which decodes what
            // it has buffered or reads the socket, then look again. When it
            // ends, hyper ends the body too (with an error if cut short).
            driven = true;
            if let Some(conn) = this.conn.as_mut() {
                if Pin::new(&mut conn.conn).poll(cx).is_ready() {
                    this.conn = None;
                }
            }
        }
    }
}

/// An HTTP proxy: plain HTTP goes through it by absolute URL, https
/// through a CONNECT tunnel.
pub(crate) struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization: Basic ...` from the URL's `user:password@`.
    auth: Option<HeaderValue>,
}

impl Proxy {
    /// `http://[user:password@]host:port`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        use base64::Engine;
        let bad = |why: &str| format!("proxy `{}`: {why}", crate::config::redacted(url));
        let uri = url.parse::<Uri>().map_err(|e| bad(&e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// proxies are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let auth = match authority.as_str().rsplit_once('@') {
            None => None,
            Some((userinfo, _)) => {
                // `p%40ss` in a URL is `p@ss`.
                let basic = base64::engine::general_purpose::STANDARD.encode(percent_decoded(userinfo));
                let mut v = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| bad("bad credentials"))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self { host, port: authority.port_u16().unwrap_or(80), auth })
    }

    /// Ask the proxy on `tcp` for a tunnel to `target` (`host:port`).
    async fn tunnel(&self, tcp: &mut TcpStream, target: &str) -> Result<(), Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
        if let Some(auth) = &self.auth {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(auth.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        tcp.write_all(&head).await.map_err(Error::Connect)?;
        // Its answer's head, byte by byte: nothing after it may be consumed,
        // it is the TLS handshake's.
        let mut answer = Vec::with_capacity(128);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= 8192 {
                return Err(Error::Proxy("its answer to CONNECT has no end".into()));
            }
            let byte = tcp.read_u8().await.map_err(|e| Error::Proxy(format!("closed the tunnel: {e}")))?;
            answer.push(byte);
        }
        let status_line = String::from_utf8_lossy(&answer[..answer.iter().position(|&b| b == b'\r').unwrap_or(0)]).into_owned();
        match status_line.split(' ').nth(1) {
            Some(code) if code.starts_with('2') => Ok(()),
            _ => Err(Error::Proxy(format!("refused CONNECT {target}: {status_line}"))),
        }
    }
}

/// `%XX` escapes decoded (others kept as they are).
fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A TCP connection, with or without TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

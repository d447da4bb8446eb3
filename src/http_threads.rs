//! `starling serve`'s HTTP side: one thread per core, each running its own
//! single-threaded event loop on its own listening socket of the same
//! address (`SO_REUSEPORT`: the kernel spreads new connections across
//! them). A request is read, routed, sent upstream and answered on one
//! thread, with no hand-off between threads: on a work-stealing runtime
//! each request woke a second worker and parked the first, which cost more
//! than everything the gateway itself does (see benches/gateway.rs).
//!
//! The app is shared: metrics, breakers, keys and the cache are the same
//! for every thread; each thread has its own connection pool to each
//! provider ([`gateway::enter_http_thread`]). Background work (model
//! loading, the usage writer, signals) stays on the caller's runtime.

use std::net::{SocketAddr, ToSocketAddrs};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

/// `threads` listening sockets on `listen`. With port 0 the first socket
/// picks the port and the others join it.
pub fn bind(listen: &str, threads: usize) -> Result<Vec<std::net::TcpListener>> {
    let mut addr: SocketAddr = listen
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {listen}"))?
        .next()
        .with_context(|| format!("{listen} resolves to no address"))?;
    if addr.port() != 0 {
        // SO_REUSEPORT would also let a second `starling serve` share the
        // port with this one, silently. A plain socket cannot bind a port
        // anyone listens on: try one first, so that mistake stays an error.
        drop(std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?);
    }
    let mut out = Vec::with_capacity(threads);
    for _ in 0..threads {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into()).with_context(|| format!("cannot listen on {addr}"))?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
        if cfg!(not(unix)) {
            // No SO_REUSEPORT: one socket, one thread.
            break;
        }
    }
    Ok(out)
}

/// Serving threads; [`Threads::stop`] starts their graceful shutdown.
pub struct Threads {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<std::io::Result<()>>>,
}

/// Serve `app` on each listener from a thread of its own.
pub fn spawn(listeners: Vec<std::net::TcpListener>, app: &gateway::App) -> Result<Threads> {
    let (stop, stopped) = watch::channel(false);
    let mut handles = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (app, mut stopped) = (app.clone(), stopped.clone());
        let handle = std::thread::Builder::new().name(format!("http-{i}")).spawn(move || {
            gateway::enter_http_thread(i);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                // A timer registered earlier than every other makes tokio's
                // time driver wake its own event loop (an eventfd write and
                // an extra epoll return): per request, for its deadline and
                // first-chunk timeout, on an otherwise idle wheel. A timer
                // always due within a second keeps those later than the
                // driver's next wake. It ends with the runtime.
                tokio::spawn(async {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                    }
                });
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                gateway::serve_connections(listener, app, shutdown).await
            })
        })?;
        handles.push(handle);
    }
    Ok(Threads { stop, handles })
}

impl Threads {
    /// Stop accepting everywhere and wait (off the async runtime) for each
    /// thread's requests to end; the first error, if any.
    pub async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        let handles = self.handles;
        let joined = tokio::task::spawn_blocking(move || {
            let mut first = Ok(());
            for h in handles {
                let r = match h.join() {
                    Ok(r) => r.context("an HTTP thread failed"),
                    Err(_) => Err(anyhow::anyhow!("an HTTP thread panicked")),
                };
                if first.is_ok() {
                    first = r;
                }
            }
            first
        });
        joined.await.context("cannot wait for the HTTP threads")?
    }
}

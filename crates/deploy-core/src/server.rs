//! The HTTP serve loop of `faseng serve` and `chima serve`: HTTP/1.1 with limits on what a
//! client can hold. A client has [`Limits::header_read_timeout`] to send a request's headers
//! (a silent or trickling connection is closed), [`Limits::request_timeout`] from then until
//! its response begins (a body trickled slower gets 408), and at most
//! [`Limits::max_connections`] connections are open at once (more wait in the listen backlog
//! until one closes). Handlers find the client's address as axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) (`std::net::SocketAddr`).
//!
//! Shaped like tokio's mini-redis: [`run`] takes a bound listener, the router, the limits
//! and a shutdown future; on shutdown it stops accepting, lets every connection finish the
//! request it is on, and returns when all are closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutLayer;

/// The default of [`Limits::max_connections`] (`FASENG_MAX_CONNECTIONS`,
/// `CHIMA_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long an accept error that is not about one connection (out of file descriptors,
/// memory) holds the loop back before it accepts again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one client can hold of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, from when the server starts reading them (on a
    /// kept-alive connection: from the end of the previous response). Then it is closed.
    pub header_read_timeout: Duration,
    /// Time from a request's headers to the start of its response, reading its body
    /// included; later, the answer is 408. A streamed response (SSE) is not bounded by it.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    /// 10 s for the headers, 30 s for the request, [`DEFAULT_MAX_CONNECTIONS`] connections.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then stops
/// accepting, lets each open connection finish the request it is on, and returns once every
/// connection is closed.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let router = router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let max_connections = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stopping, stop) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    drop(slot);
                    if !is_about_one_connection(&e) {
                        tracing::error!(error = %e, "accepting a connection failed; retrying shortly");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request.map(Body::new)
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let stopped = async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            let finished = tokio::select! {
                finished = connection.as_mut() => finished,
                () = stopped => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = finished {
                tracing::debug!(error = %e, %remote, "connection ended");
            }
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a slot until it is closed: all slots back means all closed.
    let _ = slots.acquire_many(max_connections as u32).await;
}

/// True for accept errors that concern one connection only (it was reset before it was
/// accepted): the next accept may succeed at once.
fn is_about_one_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Raises this process's soft limit on open files to its hard limit (each connection takes
/// one descriptor, and the usual soft limit of 1024 is below [`DEFAULT_MAX_CONNECTIONS`] plus
/// what the process needs besides); returns the limit now in force.
pub fn raise_open_files_limit() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// This machine's host name (`/proc/sys/kernel/hostname`), or `unknown`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::body::Bytes;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::sync::{Notify, oneshot};

    use super::*;

    /// Bound for what should happen at once; only a failing test waits this long.
    const WAIT: Duration = Duration::from_secs(10);

    /// Serves `router` within `limits`; returns the address, the shutdown trigger and the
    /// serve task.
    async fn serve(
        router: Router,
        limits: Limits,
    ) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    fn echo_peer() -> Router {
        Router::new()
            .route(
                "/",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/upload",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
    }

    /// Reads until the server closes the connection (or resets it); what arrived.
    async fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut seen))
            .await
            .expect("the server closed the connection");
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Sends one keep-alive GET and reads its whole response (headers and the
    /// `content-length` bytes of body after them).
    async fn get_root(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        loop {
            if let Some((head, body)) = seen.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.parse::<usize>().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return seen;
                }
            }
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("a response")
                .unwrap();
            assert!(n > 0, "closed before the whole response: {seen}");
            seen.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
    }

    #[tokio::test]
    async fn handlers_see_the_client_address() {
        let (addr, _stop, _task) = serve(echo_peer(), Limits::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let response = get_root(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.ends_with(&client.local_addr().unwrap().to_string()),
            "{response}"
        );
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_closed_at_the_header_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop, _task) = serve(echo_peer(), limits).await;
        let started = tokio::time::Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut trickling = TcpStream::connect(addr).await.unwrap();
        trickling
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .unwrap();
        assert!(!read_until_closed(&mut silent).await.contains("200 OK"));
        assert!(!read_until_closed(&mut trickling).await.contains("200 OK"));
        assert!(started.elapsed() >= limits.header_read_timeout);
        // The server goes on serving.
        let mut client = TcpStream::connect(addr).await.unwrap();
        assert!(get_root(&mut client).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_within_the_request_timeout_gets_408() {
        let limits = Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, _stop, _task) = serve(echo_peer(), limits).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
            .await
            .unwrap();
        let response = read_until_closed(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_waits_until_one_closes() {
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let (addr, _stop, _task) = serve(echo_peer(), limits).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert!(get_root(&mut first).await.starts_with("HTTP/1.1 200"));
        let mut second = TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        // A bounded look for an answer that must not come while the first connection is open.
        let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
        assert!(early.is_err(), "served over the cap: {early:?}");
        drop(first);
        let n = tokio::time::timeout(WAIT, second.read(&mut byte))
            .await
            .expect("served once a slot is free")
            .unwrap();
        assert_eq!((n, byte[0]), (1, b'H'));
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_then_returns() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let router = {
            let (entered, release) = (entered.clone(), release.clone());
            Router::new().route(
                "/slow",
                get(move || async move {
                    let released = release.notified();
                    entered.notify_one();
                    released.await;
                    "finished"
                }),
            )
        };
        let (addr, stop, task) = serve(router, Limits::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(WAIT, entered.notified())
            .await
            .expect("the request reached its handler");
        stop.send(()).unwrap();
        // New connections are refused once the listener is gone; the one in flight goes on.
        let refused = tokio::time::timeout(WAIT, async {
            loop {
                match TcpStream::connect(addr).await {
                    Err(e) => return e,
                    Ok(_) => tokio::task::yield_now().await,
                }
            }
        })
        .await
        .expect("the listener closes");
        assert!(
            matches!(
                refused.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ),
            "{refused}"
        );
        assert!(!task.is_finished(), "returned with a request in flight");
        release.notify_one();
        let response = read_until_closed(&mut client).await;
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with("finished"),
            "{response}"
        );
        tokio::time::timeout(WAIT, task)
            .await
            .expect("run returns once its connections are closed")
            .unwrap();
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let limit = raise_open_files_limit().unwrap();
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (limit, limit));
    }
}

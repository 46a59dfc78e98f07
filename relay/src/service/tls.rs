//! The API's sockets: plain HTTP, or HTTPS with TLS 1.3 only (rustls with the `ring`
//! provider), served by [`serve_api`] within [`ConnectionLimits`].
//!
//! A connection takes a place among [`ConnectionLimits::max_connections`] when it is
//! accepted and keeps it until its stream is dropped, WebSocket included; a client that says
//! nothing loses its place after the handshake or header timeout. So slow or silent clients
//! hold neither the accept loop nor more than a bounded amount of memory, on either scheme.
//! (Each request's own time limit is the API router's.)

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use gatehouse_transport::TransportError;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// A server configuration: TLS 1.3 only (the policy of `gatehouse_transport`), `cert` (a PEM
/// chain, leaf first) with `key`, speaking HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TransportError> {
    let mut config = gatehouse_transport::tls13_server_config(
        gatehouse_transport::read_certificates(cert)?,
        gatehouse_transport::read_private_key(key)?,
    )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Bounds on the API's connections, plain or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, from accept to close: TLS handshakes, keep-alive connections
    /// and WebSocket streams alike. Further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from the connection's
    /// start or from the end of the previous response; so also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// How long a client may take to complete its TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` completes,
/// then stops accepting, lets every connection finish its request (idle ones close at once)
/// and returns when the last connection is closed. Each request carries the peer's
/// `ConnectInfo<SocketAddr>`. Only HTTP/1.1 is spoken (with upgrades, for WebSockets).
pub async fn serve_api(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let capacity =
        u32::try_from(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let places = Arc::new(Semaphore::new(capacity as usize));
    let acceptor = tls.map(TlsAcceptor::from);
    let (closing, closing_seen) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer, place) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &places) => accepted,
        };
        tokio::spawn(connection(
            socket,
            peer,
            place,
            acceptor.clone(),
            router.clone(),
            limits,
            closing_seen.clone(),
        ));
    }
    // New clients are refused from now on rather than left in the backlog.
    drop(listener);
    closing.send_replace(true);
    // Every connection gives its place back when it closes.
    if places.acquire_many(capacity).await.is_err() {
        tracing::warn!("the API's connection count was closed; not waiting for connections");
    }
}

/// The next connection, once there is a place for it.
async fn accept(
    listener: &TcpListener,
    places: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let Ok(place) = Arc::clone(places).acquire_owned().await else {
            // Never closed while accepting; wait for shutdown rather than spin.
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((socket, peer)) => {
                // Live updates are small frames: without this, Nagle's algorithm and the
                // client's delayed ACK hold one back for 40 ms.
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%error, "API could not set TCP_NODELAY");
                }
                return (socket, peer, place);
            }
            Err(error) => {
                // Out of file descriptors and the like: let it pass rather than spin.
                tracing::warn!(%error, "API could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: its TLS handshake if any, then HTTP.
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    place: OwnedSemaphorePermit,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    closing: watch::Receiver<bool>,
) {
    let Some(acceptor) = acceptor else {
        let stream = Counted {
            stream: socket,
            _place: place,
        };
        return serve_http(stream, peer, router, limits, closing).await;
    };
    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            let stream = Counted {
                stream,
                _place: place,
            };
            serve_http(stream, peer, router, limits, closing).await;
        }
        Ok(Err(error)) => tracing::debug!(%peer, %error, "API TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
    }
}

async fn serve_http<S>(
    stream: Counted<S>,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = until_closing(&mut closing) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "API connection closed on an error");
    }
}

/// Completes once the server stops (or is gone).
async fn until_closing(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here: it must not live across an await.
    let _closing = closing.wait_for(|closing| *closing).await.is_ok();
}

/// A connection's stream holding the connection's place, which is given back when the
/// stream is dropped: after the last response, or when the WebSocket it was upgraded to
/// closes.
struct Counted<S> {
    stream: S,
    _place: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::pki::{FleetCa, Validity};

    /// A test server; stopped when dropped.
    struct Served {
        /// The CA of its certificate, when it speaks TLS.
        ca: Option<FleetCa>,
        /// A TLS 1.3 client trusting that CA.
        connector: Option<TlsConnector>,
        address: SocketAddr,
        stop: CancellationToken,
        stopped: tokio::task::JoinHandle<()>,
        _folder: tempfile::TempDir,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    /// Serves `/hello` (`hi`) and `/peer` (the peer address the handler saw).
    async fn serve(tls: bool, limits: ConnectionLimits) -> anyhow::Result<Served> {
        let folder = tempfile::tempdir()?;
        let (ca, config) = if tls {
            let ca = FleetCa::generate("test CA")?;
            let issued = ca.issue_server_cert(
                &["localhost"],
                Validity::starting_now(Duration::from_secs(3600)),
            )?;
            let (cert, key) = (folder.path().join("api.pem"), folder.path().join("api.key"));
            std::fs::write(&cert, &issued.cert_pem)?;
            std::fs::write(&key, &issued.key_pem)?;
            let config = Arc::new(server_config(&cert, &key)?);
            (Some(ca), Some(config))
        } else {
            (None, None)
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let router = Router::new()
            .route("/hello", axum::routing::get(|| async { "hi" }))
            .route(
                "/peer",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peer.to_string()
                }),
            );
        let stop = CancellationToken::new();
        let stopped = tokio::spawn(serve_api(
            listener,
            config,
            router,
            limits,
            stop.clone().cancelled_owned(),
        ));
        let connector = ca
            .as_ref()
            .map(|ca| client(ca, &[&rustls::version::TLS13]))
            .transpose()?;
        Ok(Served {
            ca,
            connector,
            address,
            stop,
            stopped,
            _folder: folder,
        })
    }

    fn client(
        ca: &FleetCa,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> anyhow::Result<TlsConnector> {
        // Not tls13_client_config: these tests also offer TLS 1.2 to see it refused.
        let roots = gatehouse_transport::root_store(gatehouse_transport::certificates_from_pem(
            ca.cert_pem().as_bytes(),
        )?)?;
        let config = rustls::ClientConfig::builder_with_provider(gatehouse_transport::provider())
            .with_protocol_versions(versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// A client connection, over TLS 1.3 when the server speaks it.
    trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

    async fn connect(
        address: SocketAddr,
        connector: Option<&TlsConnector>,
    ) -> anyhow::Result<Box<dyn Connection>> {
        let socket = TcpStream::connect(address).await?;
        Ok(match connector {
            None => Box::new(socket),
            Some(connector) => Box::new(
                connector
                    .connect(ServerName::try_from("localhost")?, socket)
                    .await?,
            ),
        })
    }

    /// Sends `GET path` and reads one response of `Content-Length` bytes.
    async fn get(connection: &mut dyn Connection, path: &str) -> anyhow::Result<String> {
        connection
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let read = connection.read(&mut buffer).await?;
            anyhow::ensure!(read > 0, "closed before a whole response");
            received.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map(str::parse::<usize>)
                    .transpose()?
                    .unwrap_or(0);
                if body.len() >= length {
                    anyhow::ensure!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
                    return Ok(body.to_owned());
                }
            }
        }
    }

    /// Whether the server closes `connection` within `within` (reading until end of stream).
    async fn closed_within(connection: &mut dyn Connection, within: Duration) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(within, connection.read_to_end(&mut sink))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_api_answers_over_tls_1_3_and_refuses_tls_1_2() -> anyhow::Result<()> {
        let served = serve(true, ConnectionLimits::default()).await?;
        let ca = served.ca.as_ref().ok_or_else(|| anyhow::anyhow!("no CA"))?;
        let name = ServerName::try_from("localhost")?;

        // A client that says nothing does not hold up the others.
        let _silent = TcpStream::connect(served.address).await?;

        let socket = TcpStream::connect(served.address).await?;
        let mut tls = client(ca, &[&rustls::version::TLS13])?
            .connect(name.clone(), socket)
            .await?;
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(get(&mut tls, "/hello").await?, "hi");
        // The handler sees who is calling.
        let local = tls.get_ref().0.local_addr()?;
        assert_eq!(get(&mut tls, "/peer").await?, local.to_string());

        let socket = TcpStream::connect(served.address).await?;
        let refused = client(ca, &[&rustls::version::TLS12])?
            .connect(name, socket)
            .await;
        assert!(refused.is_err(), "a TLS 1.2 client was served");
        Ok(())
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_cut_off_on_both_schemes() -> anyhow::Result<()> {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            handshake_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        for tls in [false, true] {
            let served = serve(tls, limits).await?;
            // Headers that never end.
            let mut slow = connect(served.address, served.connector.as_ref()).await?;
            slow.write_all(b"GET /hello HTTP/1.1\r\nhost: local")
                .await?;
            // A keep-alive connection left idle after its answer.
            let mut idle = connect(served.address, served.connector.as_ref()).await?;
            assert_eq!(get(idle.as_mut(), "/hello").await?, "hi");
            // A TCP connection that never starts its handshake (or its request).
            let mut silent: Box<dyn Connection> =
                Box::new(TcpStream::connect(served.address).await?);
            for (name, connection) in [
                ("slow", &mut slow),
                ("idle", &mut idle),
                ("silent", &mut silent),
            ] {
                assert!(
                    closed_within(connection.as_mut(), Duration::from_secs(3)).await,
                    "tls {tls}: the {name} connection stayed open"
                );
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_place() -> anyhow::Result<()> {
        let limits = ConnectionLimits {
            max_connections: 1,
            ..ConnectionLimits::default()
        };
        for tls in [false, true] {
            let served = serve(tls, limits).await?;
            let mut first = connect(served.address, served.connector.as_ref()).await?;
            assert_eq!(get(first.as_mut(), "/hello").await?, "hi");
            // The first keeps its place while it is open (keep-alive): the second waits.
            let second = tokio::spawn({
                let (address, connector) = (served.address, served.connector.clone());
                async move {
                    let mut second = connect(address, connector.as_ref()).await?;
                    get(second.as_mut(), "/hello").await
                }
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(!second.is_finished(), "tls {tls}: served past the cap");
            drop(first);
            let answer = tokio::time::timeout(Duration::from_secs(5), second).await???;
            assert_eq!(answer, "hi", "tls {tls}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn stopping_closes_idle_connections_and_returns() -> anyhow::Result<()> {
        let mut served = serve(false, ConnectionLimits::default()).await?;
        let mut idle = connect(served.address, served.connector.as_ref()).await?;
        assert_eq!(get(idle.as_mut(), "/hello").await?, "hi");
        served.stop.cancel();
        assert!(closed_within(idle.as_mut(), Duration::from_secs(3)).await);
        tokio::time::timeout(Duration::from_secs(3), &mut served.stopped).await??;
        Ok(())
    }

    #[test]
    fn unreadable_or_empty_files_are_named() -> anyhow::Result<()> {
        let folder = tempfile::tempdir()?;
        let empty = folder.path().join("empty.pem");
        std::fs::write(&empty, "")?;
        let missing = folder.path().join("missing.key");
        let error = server_config(&empty, &missing)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("empty.pem: no PEM certificate found"),
            "{error}"
        );
        std::fs::write(
            &empty,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )?;
        let error = server_config(&empty, &missing)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("cannot read") && error.contains("missing.key"),
            "{error}"
        );
        Ok(())
    }
}

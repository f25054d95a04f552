//! The accept loop of the public and admin listeners: bounded before any request is read.
//!
//! A connection over `max_connections`, or one that would make more than `max_pending_handshakes`
//! connections whose TLS handshake and first HTTP request head are not yet complete, is closed at once and
//! counted. A connection that has not finished both within `handshake_timeout` is closed. Each accepted
//! socket holds its slot until it closes, WebSocket sessions included (the slot travels with the socket
//! through the upgrade). HTTP/1.1 only, as the routers speak nothing else.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Which listener a connection arrived on (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ListenerKind {
    public,
    admin,
}

/// Why a connection was closed before its first request was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Reason {
    max_connections,
    max_pending_handshakes,
    handshake_timeout,
    tls_handshake,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: ListenerKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    listener: ListenerKind,
    reason: Reason,
}

/// `tts_server_connections_active`, `tts_server_handshakes_pending` and
/// `tts_server_connections_rejected_total`.
#[derive(Clone, Default)]
pub(crate) struct ConnectionMetrics {
    active: Family<ListenerLabels, Gauge>,
    pending: Family<ListenerLabels, Gauge>,
    rejected: Family<RejectLabels, Counter>,
}

impl ConnectionMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tts_server_connections_active",
            "Connections open now (WebSocket sessions included), by listener",
            metrics.active.clone(),
        );
        registry.register(
            "tts_server_handshakes_pending",
            "Connections whose TLS handshake or first request head is not complete yet, by listener",
            metrics.pending.clone(),
        );
        registry.register(
            "tts_server_connections_rejected",
            "Connections closed before their first request was served, by listener and reason",
            metrics.rejected.clone(),
        );
        for listener in [ListenerKind::public, ListenerKind::admin] {
            let _ = metrics.active.get_or_create(&ListenerLabels { listener });
            let _ = metrics.pending.get_or_create(&ListenerLabels { listener });
            for reason in [
                Reason::max_connections,
                Reason::max_pending_handshakes,
                Reason::handshake_timeout,
                Reason::tls_handshake,
            ] {
                let _ = metrics.rejected.get_or_create(&RejectLabels { listener, reason });
            }
        }
        metrics
    }

    fn rejected(&self, listener: ListenerKind, reason: Reason) {
        self.rejected
            .get_or_create(&RejectLabels { listener, reason })
            .inc();
    }
}

/// How many connections a listener holds, and how long one may take to say what it wants.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_pending_handshakes: usize,
    pub(crate) handshake_timeout: Duration,
}

/// One listener: where, what it serves, with or without TLS, within which limits.
pub(crate) struct Listener {
    pub(crate) kind: ListenerKind,
    pub(crate) tcp: TcpListener,
    pub(crate) router: Router,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) limits: Limits,
    pub(crate) metrics: ConnectionMetrics,
}

/// A count with a ceiling, shared by the accept loop and its connections.
struct Slots {
    used: AtomicUsize,
    max: usize,
    gauge: Gauge,
}

impl Slots {
    fn new(max: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
            gauge,
        })
    }

    /// A slot, or `None` when all are taken. Only the accept loop takes slots, so check-then-add is
    /// exact.
    fn take(self: &Arc<Self>) -> Option<Slot> {
        if self.used.load(Ordering::Acquire) >= self.max {
            return None;
        }
        self.used.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        Some(Slot(self.clone()))
    }
}

/// Gives its slot back when dropped.
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets each HTTP connection finish
/// its request in flight and waits for them (upgraded WebSocket sessions end through the gateway's own
/// shutdown).
pub(crate) async fn run(listener: Listener, mut shutdown: watch::Receiver<bool>) {
    let labels = ListenerLabels {
        listener: listener.kind,
    };
    let open = Slots::new(
        listener.limits.max_connections,
        listener.metrics.active.get_or_create(&labels).clone(),
    );
    let pending = Slots::new(
        listener.limits.max_pending_handshakes,
        listener.metrics.pending.get_or_create(&labels).clone(),
    );
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            () = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next() => continue,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(error) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(listener = ?listener.kind, error = %error, "Cannot accept a connection.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(open_slot) = open.take() else {
            listener.metrics.rejected(listener.kind, Reason::max_connections);
            continue;
        };
        let Some(pending_slot) = pending.take() else {
            listener
                .metrics
                .rejected(listener.kind, Reason::max_pending_handshakes);
            continue;
        };
        let connection = Connection {
            kind: listener.kind,
            router: listener.router.clone(),
            metrics: listener.metrics.clone(),
            deadline: Instant::now() + listener.limits.handshake_timeout,
            open_slot,
            pending_slot,
            shutdown: shutdown.clone(),
        };
        connections.spawn(connection.serve(tcp, listener.tls.clone()));
    }
    drop(listener.tcp);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `shutdown` turns true (or its sender is gone), holding no borrow of it afterwards.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One accepted socket, before and after its first request.
struct Connection {
    kind: ListenerKind,
    router: Router,
    metrics: ConnectionMetrics,
    deadline: Instant,
    open_slot: Slot,
    pending_slot: Slot,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        // Frames are small writes 20 ms apart: without TCP_NODELAY, Nagle's algorithm holds each one until
        // the previous is acknowledged, and the client's delayed ACK turns that into 40 ms stalls.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(error = %error, "Cannot set TCP_NODELAY; frames may be delayed.");
        }
        let Some(acceptor) = tls else {
            return self.serve_http(tcp).await;
        };
        match tokio::time::timeout_at(self.deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => self.serve_http(stream).await,
            Ok(Err(error)) => {
                self.metrics.rejected(self.kind, Reason::tls_handshake);
                tracing::debug!(listener = ?self.kind, error = %error, "TLS handshake failed.");
            }
            Err(_) => self.metrics.rejected(self.kind, Reason::handshake_timeout),
        }
    }

    /// Serves HTTP/1.1 (with upgrades) on `io`: first within the deadline for the request head, then
    /// until the connection ends or the server shuts down.
    async fn serve_http<Io>(self, io: Io)
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            kind,
            router,
            metrics,
            deadline,
            open_slot,
            pending_slot,
            mut shutdown,
        } = self;
        let (head_tx, head_rx) = oneshot::channel();
        let head_tx = Arc::new(Mutex::new(Some(head_tx)));
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            if let Some(tx) = head_tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
            {
                let _ = tx.send(());
            }
            let mut router = router.clone();
            async move {
                let response = tower_service::Service::call(&mut router, request).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let io = TokioIo::new(Holding { io, _slot: open_slot });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            _ = &mut connection => return,
            head = tokio::time::timeout_at(deadline, head_rx) => {
                if head.is_err() {
                    metrics.rejected(kind, Reason::handshake_timeout);
                    return;
                }
            }
            () = stopped(&mut shutdown) => {
                // A request whose head is already being read is answered; an idle socket closes at once.
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout_at(deadline, connection).await;
                return;
            }
        }
        drop(pending_slot);
        tokio::select! {
            _ = &mut connection => {}
            () = stopped(&mut shutdown) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// A socket that holds its connection slot until it is dropped, wherever it goes (into a WebSocket
/// session after an upgrade, too).
struct Holding<Io> {
    io: Io,
    _slot: Slot,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Holding<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Holding<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

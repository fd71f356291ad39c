//! The accept loop: HTTP/1.1 with keep-alive, dropped connections on demand, graceful shutdown.
//!
//! axum's own `serve` hides the connection, but a "dropped connection" fault must close the
//! socket without answering, also on a keep-alive connection that already served requests.
//! So each connection gets a [`ConnHandle`] in its requests' extensions; the request layer
//! fires it, and the connection task drops the socket (the client sees EOF, no response).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::state::Shared;
use super::{SandboxError, admin, layer};

/// How long in-flight requests may take to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Fired by the request layer to drop the request's connection without an answer.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    kill: Arc<Notify>,
}

impl ConnHandle {
    pub fn drop_connection(&self) {
        self.kill.notify_one();
    }
}

#[derive(Debug)]
enum Driver {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// A serving sandbox: its address and how to stop it.
#[derive(Debug)]
pub(crate) struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    driver: Driver,
}

impl Running {
    /// Signals shutdown; a background thread is joined (it exits within the grace period).
    pub fn stop(self) {
        let _ = self.stop.send(true);
        if let Driver::Thread(t) = self.driver {
            let _ = t.join();
        }
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop_and_wait(self) {
        let _ = self.stop.send(true);
        match self.driver {
            Driver::Task(t) => {
                let _ = t.await;
            }
            Driver::Thread(t) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
    }
}

/// Every route: the vendors behind the request layer, the admin API beside it.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    layer::vendor_routes()
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            layer::vendor_layer,
        ))
        .merge(admin::routes())
        .with_state(shared)
}

async fn bind(port: u16) -> Result<(TcpListener, SocketAddr), SandboxError> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| SandboxError::Bind { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { port, source })?;
    Ok((listener, addr))
}

/// Binds and serves on the current runtime.
pub(crate) async fn spawn(shared: Arc<Shared>) -> Result<Running, SandboxError> {
    let (listener, addr) = bind(shared.settings.port).await?;
    let (stop, rx) = watch::channel(false);
    let app = router(shared.clone());
    let task = tokio::spawn(serve(listener, app, rx, shared));
    Ok(Running {
        addr,
        stop,
        driver: Driver::Task(task),
    })
}

/// Binds and serves on a new thread with its own two-worker runtime.
pub(crate) fn start_background(shared: Arc<Shared>) -> Result<Running, SandboxError> {
    let (stop, rx) = watch::channel(false);
    let (tx, ready) = std::sync::mpsc::channel::<Result<SocketAddr, SandboxError>>();
    let port = shared.settings.port;
    let thread = std::thread::Builder::new()
        .name("roster-sandbox".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("roster-sandbox-worker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(SandboxError::Runtime(e.to_string())));
                    return;
                }
            };
            rt.block_on(async move {
                match bind(port).await {
                    Ok((listener, addr)) => {
                        let _ = tx.send(Ok(addr));
                        let app = router(shared.clone());
                        serve(listener, app, rx, shared).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
            // Background jobs still sleeping are cancelled with the runtime.
            rt.shutdown_timeout(Duration::from_millis(100));
        })
        .map_err(|e| SandboxError::Runtime(e.to_string()))?;
    let addr = ready
        .recv()
        .map_err(|e| SandboxError::Runtime(e.to_string()))??;
    Ok(Running {
        addr,
        stop,
        driver: Driver::Thread(thread),
    })
}

async fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Small JSON answers on keep-alive: Nagle would add 40 ms per request.
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(serve_conn(tcp, app.clone(), stop.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    shared.begin_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(200), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

async fn serve_conn(tcp: TcpStream, app: Router, mut stop: watch::Receiver<bool>) {
    let kill = Arc::new(Notify::new());
    let handle = ConnHandle { kill: kill.clone() };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(handle.clone());
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(Body::new)).await;
            Ok::<_, Infallible>(resp.unwrap_or_else(|e| match e {}))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Dropping the connection future closes the socket with no answer written.
        _ = kill.notified() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

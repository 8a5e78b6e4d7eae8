//! The HTTP servers: `/healthz` and `/livez` on the health address, `/metrics` and
//! `/proxyMode` on the metrics address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::jiff::Timestamp;

use super::Status;
use super::metrics::Metrics;

/// The routes of the health server.
pub fn health_routes(status: Arc<Status>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/livez", get(livez)).with_state(status)
}

/// The routes of the metrics server.
pub fn metrics_routes(status: Arc<Status>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/proxyMode", get(|| async { "nftables" }))
        .with_state(status)
}

/// Binds `address` and serves `routes` in a task of its own. A port that cannot be bound is
/// reported and the agent goes on without that server: the dataplane matters more.
pub async fn spawn(name: &'static str, address: SocketAddr, routes: Router) {
    match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => {
            tracing::info!(%address, "serving {name}");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, routes).await {
                    tracing::error!(%address, "{name} server failed: {e}");
                }
            });
        }
        Err(e) => tracing::error!(%address, "cannot serve {name}: {e}"),
    }
}

async fn healthz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let report = status.health.report(Timestamp::now());
    answer(&status.metrics.healthz, report.healthy && report.node_eligible, report.body())
}

async fn livez(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let report = status.health.report(Timestamp::now());
    answer(&status.metrics.livez, report.healthy, report.body())
}

fn answer(counter: &super::metrics::CodeCounter, ok: bool, body: String) -> impl IntoResponse + use<> {
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Metrics::code(counter, code.as_u16()).inc();
    (code, [(header::CONTENT_TYPE, "application/json"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], body)
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], status.metrics.encode())
}

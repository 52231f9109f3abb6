//! The transport floor: what the boot storm's requests cost with nothing behind them. The bench
//! starts a second process of its own (this module, `BOOT_STORM_FLOOR_ANSWER` set) that serves
//! `POST /device/v1/profile` with axum on tokio as unboxd does (a multi-thread runtime, a worker
//! a core, jemalloc), reads each request's 4 KB body whole and answers with a copy of an answer
//! unboxd gave (same headers, same bytes), looking nothing up and writing nothing anywhere. Its
//! rate against pgbench's, in the same round with the same load generator, is the ceiling any
//! server of this protocol on this stack reaches on this machine; unboxd's rate over the floor's
//! is the share its own work leaves.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Response};
use axum::routing::post;

const ANSWER_ENV: &str = "BOOT_STORM_FLOOR_ANSWER";
const LISTEN_ENV: &str = "BOOT_STORM_FLOOR_LISTEN";

/// An answer as unboxd gave it: its headers (but `date` and `content-length`, which hyper
/// writes) and its body.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The floor server, when this process was started as one (never returns then).
pub fn serve_if_asked() {
    let (Ok(answer), Ok(listen)) = (std::env::var(ANSWER_ENV), std::env::var(LISTEN_ENV)) else {
        return;
    };
    let answer: Answer = serde_json::from_slice(&std::fs::read(answer).unwrap()).unwrap();
    let listen: SocketAddr = listen.parse().unwrap();
    let headers: Vec<(HeaderName, HeaderValue)> = answer
        .headers
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect();
    let body = Bytes::from(answer.body);
    let handler = move |_request: Bytes| {
        let (headers, body) = (headers.clone(), body.clone());
        async move {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().extend(headers);
            response
        }
    };
    let app = axum::Router::new().route("/device/v1/profile", post(handler));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    std::process::exit(0);
}

/// Starts the floor server on `address`, answering `answer` (kept in `dir`).
pub fn spawn(address: SocketAddr, answer: &Answer, dir: &Path) -> Child {
    let file = dir.join("floor-answer.json");
    std::fs::write(&file, serde_json::to_vec(answer).unwrap()).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .env(ANSWER_ENV, &file)
        .env(LISTEN_ENV, address.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

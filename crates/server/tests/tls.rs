//! HTTPS: the server (library and `unboxd --tls-cert/--tls-key`) with a certificate made at run
//! time, a client trusting it, and the certificate replaced without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use unbox_server::auth::tokens::{LocalKey, TokenService};
use unbox_server::device::tls::{Tls, TlsFiles};
use unbox_server::state::{AppState, Services, Settings};

/// A self-signed certificate for localhost, written to `dir` as cert.pem and key.pem;
/// returns the certificate's PEM.
fn write_self_signed(dir: &Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    // Write beside and rename, as certificate renewal tools do.
    std::fs::write(dir.join("key.pem.new"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem.new"), cert.pem()).unwrap();
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).unwrap();
    cert.pem()
}

/// A client that trusts only this certificate, on a fresh connection.
fn client(cert_pem: &str, address: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", address)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Polls until a client trusting only `cert` gets 200 from `url`.
async fn wait_served(cert: &str, address: std::net::SocketAddr, url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if status(&client(cert, address), url).await == Some(200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} was never served with the expected certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn https_with_a_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_self_signed(dir.path());
    let options = unbox_db::testing::fresh_database().await;
    let pool = unbox_db::connect(options, &unbox_db::PoolSettings::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let base = format!("https://localhost:{}", address.port());
    let key = LocalKey::load_or_generate(&dir.path().join("signing-key.pem")).unwrap();
    let settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    let state = AppState::from(Services {
        pool: pool.clone(),
        tokens: TokenService::new(base.clone(), Duration::from_secs(3600), key, None),
        metrics: unbox_server::telemetry::metrics_handle(),
        rules: std::sync::Arc::default(),
        device: unbox_server::device::DeviceRuntime::new(settings.device.clone()),
        settings: std::sync::Arc::new(settings),
    });
    let tls = Tls::new(TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    })
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(unbox_server::startup::serve_tls(
        listener,
        tls,
        state,
        async move {
            let _ = stopped.await;
        },
    ));

    wait_served(
        &first,
        address,
        &format!("{base}/readyz"),
        Duration::from_secs(30),
    )
    .await;
    // The device call over HTTPS.
    let r = client(&first, address)
        .post(format!("{base}/device/v1/profile"))
        .json(&serde_json::json!({"identity": {"manufacturer": "Acme", "model": "M", "serialNumber": "TLS-1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{address}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    // A renewed certificate: SIGHUP reloads it, new connections get it, the old one is gone.
    let second = write_self_signed(dir.path());
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_served(
        &second,
        address,
        &format!("{base}/healthz"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        status(&client(&first, address), &format!("{base}/healthz")).await,
        None
    );

    // A broken file keeps the certificate being served.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status(&client(&second, address), &format!("{base}/healthz")).await,
        Some(200)
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

fn spawn_unboxd(data: &Path, port: u16, database_url: &str, certs: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_unboxd"))
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--tls-cert")
        .arg(certs.join("cert.pem"))
        .arg("--tls-key")
        .arg(certs.join("key.pem"))
        .env("DATABASE_URL", database_url)
        .env("UNBOX_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn unboxd_serves_https_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_self_signed(dir.path());
    let options = unbox_db::testing::fresh_database().await;
    let url = unbox_db::testing::url_of(&options);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = spawn_unboxd(&dir.path().join("data"), port, &url, dir.path());
    let base = format!("https://localhost:{port}");
    wait_served(
        &first,
        address,
        &format!("{base}/readyz"),
        Duration::from_secs(60),
    )
    .await;

    // Renewed in place (no signal): the file watcher notices within seconds.
    let second = write_self_signed(dir.path());
    wait_served(
        &second,
        address,
        &format!("{base}/healthz"),
        Duration::from_secs(30),
    )
    .await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "unboxd did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! HTTPS: rustls with TLS 1.2/1.3 only, HTTP/2 by ALPN, HSTS and `Secure` cookies,
//! the plain listener redirecting, a certificate replaced on disk picked up without a
//! restart, and the client address taken from a trusted proxy only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use madoguchi::front::tls::{local_ca, TlsFiles};
use madoguchi::front::{Listeners, Server};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{ops_metrics, unique, TestEnv};

fn connector(ca: &std::path::Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 request over TLS; returns (ALPN, TLS version, peer certificate, response head and body).
async fn https_get(
    server: &Server,
    ca: &std::path::Path,
    host: &str,
    path: &str,
    alpn: &[&[u8]],
) -> (Option<Vec<u8>>, String, Vec<u8>, String) {
    let tcp = tokio::net::TcpStream::connect(server.bound.https.unwrap())
        .await
        .unwrap();
    let mut tls = connector(ca, alpn)
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let version = format!("{:?}", conn.protocol_version().unwrap());
    let cert = conn.peer_certificates().unwrap()[0].to_vec();
    if alpn.as_deref() == Some(b"h2") {
        return (alpn, version, cert, String::new());
    }
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.ok();
    (
        alpn,
        version,
        cert,
        String::from_utf8_lossy(&out).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_redirect_hsts_secure_cookies_and_reload() {
    let env = TestEnv::with(|s| s.trusted_proxies = vec!["127.0.0.2/32".parse().unwrap()]).await;
    let t = env.tenant(&unique("tls"), "千代田区", "131016").await;
    let host = t.hosts[0].clone();
    let form = madoguchi::control::tenant_admin::import_form(
        &env.platform,
        &t,
        include_str!("../../src/control/samples/bulky-waste.json"),
        "環境課",
        true,
    )
    .await
    .unwrap();
    let dir = env.state.path().join("tls");
    let files: TlsFiles = local_ca(&dir, &[host.clone(), "localhost".into()]).unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = Server::start_with(
        &env.platform,
        Listeners {
            public: any,
            ops: any,
            tls: Some((files.clone(), any)),
            lgwan: None,
        },
    )
    .await
    .unwrap();
    let ca = dir.join("ca.pem");

    // HTTP/2 is offered and chosen; HTTP/1.1 still works; TLS 1.3 by default.
    let (alpn, version, _, _) = https_get(&server, &ca, &host, "/", &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(version, "TLSv1_3");
    let (_, _, first_cert, resp) = https_get(&server, &ca, &host, &form, &[b"http/1.1"]).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // The expiry of the certificate served is a metric (the alert's input).
    let expiry = |der: &[u8]| {
        use x509_cert::der::Decode;
        x509_cert::Certificate::from_der(der)
            .unwrap()
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs()
    };
    let metric = |text: String| {
        text.lines()
            .find_map(|l| l.strip_prefix("madoguchi_tls_certificate_not_after_timestamp_seconds "))
            .map(|v| v.parse::<u64>().unwrap())
    };
    let served = expiry(&first_cert);
    assert!(served > 1_700_000_000, "{served}");
    assert_eq!(metric(ops_metrics(server.bound.ops).await), Some(served));
    let lower = resp.to_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=63072000"),
        "{resp}"
    );
    let cookie = lower
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.contains("secure") && cookie.contains("httponly"),
        "{cookie}"
    );

    // TLS 1.2 works, with an AEAD suite.
    let tcp = tokio::net::TcpStream::connect(server.bound.https.unwrap())
        .await
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            CertificateDer::pem_file_iter(&ca)
                .unwrap()
                .next()
                .unwrap()
                .unwrap(),
        )
        .unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let s = tokio_rustls::TlsConnector::from(Arc::new(tls12))
        .connect(ServerName::try_from(host.clone()).unwrap(), tcp)
        .await
        .unwrap();
    let suite = format!(
        "{:?}",
        s.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    );
    assert!(
        suite.starts_with("TLS_ECDHE_") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "{suite}"
    );
    // TLS 1.1 and 1.0 are refused (checked with openssl where it is installed).
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok()
    {
        for old in ["-tls1_1", "-tls1"] {
            let out = std::process::Command::new("openssl")
                .args(["s_client", old, "-connect"])
                .arg(server.bound.https.unwrap().to_string())
                .arg("-servername")
                .arg(&host)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() || text.contains("Cipher is (NONE)"),
                "{old} was accepted: {text}"
            );
        }
    }

    // The plain listener redirects to HTTPS, keeping the path.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://{}/f/x?y=1", server.bound.public))
        .header("host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers().get("location").unwrap().to_str().unwrap(),
        format!(
            "https://{host}:{}/f/x?y=1",
            server.bound.https.unwrap().port()
        )
    );
    // Its answers carry the security headers too, the unknown-host page included.
    let r = plain
        .get(format!("http://{}/", server.bound.public))
        .header("host", "nosuch.invalid")
        .send()
        .await
        .unwrap();
    for name in [
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
    ] {
        assert!(
            r.headers().contains_key(name),
            "{name} missing: {:?}",
            r.headers()
        );
    }

    // A new certificate written over the files is served without a restart.
    let old_ca = std::fs::read_to_string(&ca).unwrap();
    std::fs::remove_file(dir.join("hosts.txt")).unwrap();
    local_ca(
        &dir,
        &[host.clone(), "localhost".into(), "extra.localhost".into()],
    )
    .unwrap();
    // Trust both the old and the new local CA while the server switches.
    let both = dir.join("both.pem");
    std::fs::write(&both, old_ca + &std::fs::read_to_string(&ca).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, cert, _) = https_get(&server, &both, &host, "/", &[b"http/1.1"]).await;
        if cert != first_cert {
            assert_eq!(
                metric(ops_metrics(server.bound.ops).await),
                Some(expiry(&cert)),
                "the new certificate's expiry"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A broken certificate file is refused and the last good one stays in use.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, _, _, resp) = https_get(&server, &both, &host, "/", &[b"http/1.1"]).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_from_trusted_proxies_only() {
    // The unit rules are tested in src/front/conn.rs; here: a limit keyed by client
    // address sees different clients behind a trusted proxy.
    let env = TestEnv::with(|s| s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let t = env.tenant(&unique("xff"), "千代田区", "131016").await;
    let server = env.serve().await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |ip: &'static str| {
        c.post(format!("http://{}/admin/login", server.bound.public))
            .header("host", &t.hosts[0])
            .header("x-forwarded-for", ip)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=a%40example.jp&password=x&code=1")
            .send()
    };
    // One client uses up its sign-in burst...
    let mut limited = false;
    for _ in 0..(madoguchi::front::limits::SIGN_IN_BURST + 2) {
        if login("198.51.100.7").await.unwrap().status() == 429 {
            limited = true;
        }
    }
    assert!(limited, "the client was never limited");
    // ...and another client behind the same proxy is still served.
    assert_ne!(login("198.51.100.8").await.unwrap().status(), 429);
    server.shutdown().await;
}

/// A client cannot pick its own address behind a proxy that appends its own
/// `X-Forwarded-For` line: every line is read, the proxy's last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarded_for_line_does_not_escape_a_limit() {
    let env = TestEnv::with(|s| s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let t = env.tenant(&unique("xff"), "千代田区", "131016").await;
    let server = env.serve().await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut limited = false;
    for n in 0..(madoguchi::front::limits::SIGN_IN_BURST + 2) {
        let mut headers = reqwest::header::HeaderMap::new();
        // What the client sent (a new address each time), then the proxy's line.
        headers.append("x-forwarded-for", format!("192.0.2.{n}").parse().unwrap());
        headers.append("x-forwarded-for", "198.51.100.9".parse().unwrap());
        let status = c
            .post(format!("http://{}/admin/login", server.bound.public))
            .header("host", &t.hosts[0])
            .headers(headers)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=a%40example.jp&password=x&code=1")
            .send()
            .await
            .unwrap()
            .status();
        limited |= status == 429;
    }
    assert!(
        limited,
        "a client escaped the limit by forging its first line"
    );
    server.shutdown().await;
}

/// Limits count per municipality also over HTTP/2, which sends no Host header: the
/// sign-ins one address spends at one city leave another city's untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_per_municipality_over_http2_too() {
    let env = TestEnv::new().await;
    let a = env.tenant(&unique("h2a"), "千代田区", "131016").await;
    let b = env.tenant(&unique("h2b"), "札幌市", "011002").await;
    let server = env.serve().await;
    let port = server.bound.public.port();
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&a.hosts[0], server.bound.public)
        .resolve(&b.hosts[0], server.bound.public)
        .build()
        .unwrap();
    let login = |host: &str| {
        let r = c
            .post(format!("http://{host}:{port}/admin/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=a%40example.jp&password=x&code=1")
            .send();
        async move { r.await.unwrap() }
    };
    let first = login(&a.hosts[0]).await;
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    assert_eq!(first.status(), 401);
    let mut limited = false;
    for _ in 0..(madoguchi::front::limits::SIGN_IN_BURST + 1) {
        limited |= login(&a.hosts[0]).await.status() == 429;
    }
    assert!(limited, "never limited at the first city");
    assert_eq!(
        login(&b.hosts[0]).await.status(),
        401,
        "the first city's sign-ins used up the second's"
    );
    server.shutdown().await;
}

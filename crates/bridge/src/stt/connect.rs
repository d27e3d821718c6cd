//! Opens a recogniser's socket: TCP, TLS for `wss`, then the WebSocket opening handshake with
//! `Authorization: Token <key>` (RFC 6455 §4.1; PROTOCOLS.md §4.1, §10.1).
//!
//! The handshake is done here rather than by tungstenite's client: tungstenite reads the
//! response into a 4 KiB buffer that then becomes the socket's read buffer for the whole call,
//! 3 KiB more in every call than the [`SOCKET_READ_BUFFER`] it needs. Here the response is read
//! on the stack and only what followed it (a message the server sent at once) is handed on. The
//! TLS settings (the web's root certificates) are built once per process, not per call.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::Url;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::SttError;
use crate::secret::Secret;
use crate::socket::SOCKET_READ_BUFFER;

/// An open recogniser socket.
pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long opening the socket may take, TCP, TLS and handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest response head accepted (Deepgram's is well under 1 KiB).
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Headers read from the response; more is an error.
const MAX_HEADERS: usize = 32;

/// Opens the socket to `url` with `Authorization: Token <key>`. Boxed: the socket is over 1 KiB,
/// and a call's recognition task would otherwise hold room for it twice for the whole call.
pub(super) async fn connect(
    url: &Url,
    key: &Secret,
    service: &'static str,
) -> Result<Box<Socket>, SttError> {
    match timeout(CONNECT_TIMEOUT, open(url, key, None)).await {
        Err(_) => Err(SttError::Connect {
            service,
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }),
        Ok(Err(reason)) => Err(SttError::Connect { service, reason }),
        Ok(Ok(socket)) => Ok(socket),
    }
}

/// TCP, TLS (with `tls`, or the web's roots), handshake; the error says which step failed and
/// why.
async fn open(
    url: &Url,
    key: &Secret,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Box<Socket>, String> {
    let secure = match url.scheme() {
        "ws" => false,
        "wss" => true,
        other => return Err(format!("unsupported URL scheme {other:?}")),
    };
    // Built first: a key that cannot be sent opens no connection.
    let nonce = generate_key();
    let request = opening_request(url, key, &nonce)?;
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    // An IPv6 address is bracketed in the URL and the Host header, not when connecting.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|err| format!("TCP connect to {host}:{port}: {err}"))?;
    // TCP_NODELAY: a frame never waits for the previous one's ACK (Nagle).
    tcp.set_nodelay(true)
        .map_err(|err| format!("TCP_NODELAY: {err}"))?;
    let mut stream = if secure {
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())
            .map_err(|_| format!("{bare_host:?} is not a valid TLS server name"))?;
        let tls = TlsConnector::from(tls.unwrap_or_else(tls_config))
            .connect(name, tcp)
            .await
            .map_err(|err| format!("TLS: {err}"))?;
        MaybeTlsStream::Rustls(tls)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    let tail = handshake(&mut stream, &request, &nonce).await?;
    let config = WebSocketConfig::default().read_buffer_size(SOCKET_READ_BUFFER);
    let socket = WebSocketStream::from_partially_read(stream, tail, Role::Client, Some(config));
    Ok(Box::new(socket.await))
}

/// The TLS client settings every recogniser socket shares: the web's root certificates.
fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            Arc::new(
                ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// Sends the opening `request` (made with `nonce`) and reads the server's answer; returns the
/// bytes that followed the answer's head (the first frames, if the server sent some at once).
async fn handshake<S>(stream: &mut S, request: &str, nonce: &str) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("sending the handshake: {err}"))?;
    stream
        .flush()
        .await
        .map_err(|err| format!("sending the handshake: {err}"))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|err| format!("reading the handshake's answer: {err}"))?;
        if n == 0 {
            return Err("the server closed the connection during the handshake".into());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let end = end + 4;
            check_answer(&head[..end], nonce)?;
            // Exactly what followed: this becomes the socket's first read, not its buffer.
            return Ok(head[end..].to_vec());
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(format!(
                "the handshake's answer has no end within {MAX_RESPONSE_HEAD} bytes"
            ));
        }
    }
}

/// The HTTP/1.1 upgrade request for `url` (RFC 6455 §4.1).
fn opening_request(url: &Url, key: &Secret, nonce: &str) -> Result<String, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let token = key.expose();
    // What an HTTP header value may hold (visible ASCII, space, tab), as before.
    if !token
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err("the API key is not a valid header value".into());
    }
    Ok(format!(
        "GET {target} HTTP/1.1\r\n\
         Host: {authority}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {nonce}\r\n\
         Authorization: Token {token}\r\n\r\n"
    ))
}

/// Checks the answer's head: `101`, an upgrade to WebSocket, and the accept key that proves the
/// server read our request (RFC 6455 §4.1, the client's checks). A refusal names its status and
/// Deepgram's `dg-error`.
fn check_answer(head: &[u8], nonce: &str) -> Result<(), String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    match answer.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("the handshake's answer is cut short".into()),
        Err(err) => return Err(format!("the handshake's answer is not HTTP: {err}")),
    }
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let status = answer.code.unwrap_or(0);
    if status != 101 {
        let reason = answer.reason.unwrap_or("");
        let detail = header("dg-error").unwrap_or_default();
        let refused = format!("handshake refused with HTTP {status} {reason} {detail}");
        return Err(refused.trim_end().to_owned());
    }
    let upgrade = header("upgrade").unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(format!("the server upgraded to {upgrade:?}, not websocket"));
    }
    let connection = header("connection").unwrap_or_default();
    if !connection
        .split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err("the server's answer has no Connection: Upgrade".into());
    }
    let accept = header("sec-websocket-accept").unwrap_or_default();
    if accept != derive_accept_key(nonce.as_bytes()) {
        return Err("the server's Sec-WebSocket-Accept does not match our key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    const SERVICE: &str = "Deepgram live STT";

    /// A peer that reads the request and answers `answer` (with `{accept}` replaced by the key
    /// that proves it read the request), then sends `after` and keeps the socket open.
    async fn answering(
        answer: &'static str,
        after: &'static [u8],
    ) -> (Url, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request ended");
                request.extend_from_slice(&buf[..n]);
            }
            let request = String::from_utf8(request).unwrap();
            let nonce = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap_or("")
                .to_owned();
            let answer = answer.replace("{accept}", &derive_accept_key(nonce.as_bytes()));
            let mut out = answer.into_bytes();
            out.extend_from_slice(after);
            socket.write_all(&out).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            request
        });
        let url = Url::parse(&format!(
            "ws://{address}/v1/listen?encoding=linear16&sample_rate=8000"
        ))
        .unwrap();
        (url, peer)
    }

    const SWITCHING: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";

    #[tokio::test]
    async fn the_request_carries_the_key_and_the_whole_target() {
        let (url, peer) = answering(SWITCHING, b"").await;
        connect(&url, &Secret::new("sekret"), SERVICE)
            .await
            .unwrap();
        let request = peer.await.unwrap();
        let address = url.host_str().unwrap().to_owned() + ":" + &url.port().unwrap().to_string();
        assert!(
            request.starts_with("GET /v1/listen?encoding=linear16&sample_rate=8000 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("\r\nHost: {address}\r\n")),
            "{request}"
        );
        assert!(
            request.contains("\r\nAuthorization: Token sekret\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nUpgrade: websocket\r\n"), "{request}");
        assert!(
            request.contains("\r\nSec-WebSocket-Version: 13\r\n"),
            "{request}"
        );
    }

    /// A message the server sends in the same segment as its `101` is the socket's first.
    #[tokio::test]
    async fn a_message_right_after_the_answer_is_read_first() {
        // An unmasked text frame "hi" (servers do not mask, RFC 6455 §5.1).
        let (url, _peer) = answering(SWITCHING, b"\x81\x02hi").await;
        let mut socket = connect(&url, &Secret::new("k"), SERVICE).await.unwrap();
        let first = socket.next().await.unwrap().unwrap();
        assert_eq!(first, Message::text("hi"));
        socket.send(Message::text("ok")).await.unwrap();
    }

    /// What `connect` says against a peer that answers `answer`, with `key` as the API key.
    async fn refusal(answer: &'static str, key: &str) -> String {
        let (url, _peer) = answering(answer, b"").await;
        match connect(&url, &Secret::new(key), SERVICE).await {
            Ok(_) => panic!("the answer was accepted: {answer}"),
            Err(err) => err.to_string(),
        }
    }

    #[tokio::test]
    async fn a_wrong_accept_key_is_refused() {
        let wrong = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let err = refusal(wrong, "k").await;
        assert!(err.contains("Sec-WebSocket-Accept"), "{err}");
    }

    #[tokio::test]
    async fn an_answer_that_is_no_upgrade_is_refused() {
        let plain = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n";
        let err = refusal(plain, "k").await;
        assert!(err.contains("h2c"), "{err}");
    }

    #[tokio::test]
    async fn a_refused_handshake_names_the_status() {
        let refused = "HTTP/1.1 401 Unauthorized\r\ndg-error: Invalid credentials\r\ncontent-length: 0\r\n\r\n";
        let err = refusal(refused, "k").await;
        assert!(
            err.contains("401 Unauthorized")
                && err.contains("Invalid credentials")
                && err.contains(SERVICE),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_key_with_a_line_break_is_refused_before_sending() {
        let err = refusal(SWITCHING, "k\r\nX-Evil: 1").await;
        assert!(err.contains("not a valid header value"), "{err}");
        assert!(
            !err.contains("Evil"),
            "the key must not reach the error: {err}"
        );
    }

    /// A TLS server for 127.0.0.1 with the test certificate (`fixtures/tls`), speaking
    /// WebSocket behind it and echoing the first message; returns its `wss` URL.
    async fn tls_echo() -> Url {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let cert = CertificateDer::from(TEST_SERVER_CERT.to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(TEST_SERVER_KEY.to_vec()));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut socket = tokio_tungstenite::accept_async(tls).await.unwrap();
                if let Some(Ok(message)) = socket.next().await {
                    socket.send(message).await.unwrap();
                }
            }
        });
        Url::parse(&format!("wss://{address}/v1/listen")).unwrap()
    }

    const TEST_CA: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/tls/test_ca.der"
    ));
    const TEST_SERVER_CERT: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/tls/test_server.der"
    ));
    const TEST_SERVER_KEY: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/tls/test_server_key.der"
    ));

    #[tokio::test]
    async fn a_wss_socket_speaks_through_tls() {
        let url = tls_echo().await;
        let mut roots = RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(TEST_CA.to_vec()))
            .unwrap();
        let trusting = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut socket = open(&url, &Secret::new("k"), Some(Arc::new(trusting)))
            .await
            .unwrap();
        socket.send(Message::text("over TLS")).await.unwrap();
        let echo = socket.next().await.unwrap().unwrap();
        assert_eq!(echo, Message::text("over TLS"));
    }

    /// The web's roots do not include the test CA: the certificate is checked, not just used.
    #[tokio::test]
    async fn a_wss_server_with_an_unknown_certificate_is_refused() {
        let url = tls_echo().await;
        let err = connect(&url, &Secret::new("k"), SERVICE)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("TLS") && err.contains("UnknownIssuer"),
            "{err}"
        );
    }

    /// Builds the TLS settings for real (the crypto provider must resolve without a panic) and
    /// fails cleanly against a peer that speaks no TLS.
    #[tokio::test]
    async fn a_wss_peer_without_tls_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let url = Url::parse(&format!("wss://{address}/v1/listen")).unwrap();
        let err = connect(&url, &Secret::new("k"), SERVICE)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SttError::Connect { .. }), "{err}");
    }
}

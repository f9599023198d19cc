//! The backend connector: hyper-rustls's, with the TLS state of a connection boxed.
//!
//! The pooled client runs each backend connection as its own task, sized for the stream it
//! owns. `MaybeHttpsStream` holds a TLS session inline (about a kilobyte); a plain connection,
//! the common case for a backend beside the gateway, would carry that unused kilobyte for as
//! long as it lives, and there is one per open stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Inner = HttpsConnector<HttpConnector>;
type Error = Box<dyn std::error::Error + Send + Sync>;

/// Connects plain or over TLS as the backend's scheme says; see the module docs.
#[derive(Clone)]
pub struct Connector(Inner);

impl Connector {
    pub fn new(inner: Inner) -> Connector {
        Connector(inner)
    }
}

/// A backend connection; a TLS one's state lives on the heap.
pub enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<MaybeHttpsStream<TokioIo<TcpStream>>>),
}

impl From<MaybeHttpsStream<TokioIo<TcpStream>>> for Stream {
    fn from(stream: MaybeHttpsStream<TokioIo<TcpStream>>) -> Stream {
        match stream {
            MaybeHttpsStream::Http(plain) => Stream::Plain(plain),
            tls => Stream::Tls(Box::new(tls)),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(Stream::from) })
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => s.connected(),
        }
    }
}

/// Calls `$method` on whichever stream this is.
macro_rules! delegate {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            Stream::Plain(s) => Pin::new(s).$method($($arg),*),
            Stream::Tls(s) => Pin::new(s.as_mut()).$method($($arg),*),
        }
    };
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, poll_read(cx, buf))
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Response, Version};
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn a_plain_connection_does_not_carry_the_tls_state() {
        let plain = std::mem::size_of::<Stream>();
        let unboxed = std::mem::size_of::<MaybeHttpsStream<TokioIo<TcpStream>>>();
        assert!(plain * 8 < unboxed, "{plain} bytes against {unboxed}");
    }

    /// Serves `200 ok` on every connection, over TLS (h2 or HTTP/1.1 by ALPN) when given a
    /// certificate, in the clear otherwise.
    async fn server(tls: Option<rustls::ServerConfig>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        Some(a) => {
                            let tls = a.accept(tcp).await.unwrap();
                            server.serve_connection(TokioIo::new(tls), svc).await
                        }
                        None => server.serve_connection(TokioIo::new(tcp), svc).await,
                    };
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn backends_are_reached_in_the_clear_and_over_tls_with_alpn() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        server_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client: Client<Connector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(Connector::new(https));

        let tls_port = server(Some(server_tls)).await;
        let plain_port = server(None).await;
        for (url, version) in [
            (format!("https://localhost:{tls_port}/"), Version::HTTP_2),
            (format!("http://127.0.0.1:{plain_port}/"), Version::HTTP_11),
        ] {
            let response = client.get(url.parse().unwrap()).await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            // h2 over TLS means the boxed stream reported the ALPN the server chose.
            assert_eq!(response.version(), version, "{url}");
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
            assert_eq!(body.to_bytes(), "ok", "{url}");
        }
    }
}

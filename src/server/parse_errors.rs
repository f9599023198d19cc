//! hyper answers an HTTP/1.1 request it cannot parse (400), whose URI is too long (414) or
//! whose head is too large (431) by itself, with an empty body, before any service sees it.
//! [`ErrorBodies`] sits under hyper on the connection and gives those answers the fronts'
//! error body, `{"error":{"code","message","details"}}`. Nothing else is touched: it recognises
//! hyper's own head (one of those statuses with `content-length: 0`; every answer of the
//! gateway's own has a body).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose writes pass through, except hyper's bodiless parse-error answers.
pub(super) struct ErrorBodies<I> {
    inner: I,
    /// A rewritten answer not yet fully written.
    pending: Vec<u8>,
    written: usize,
}

impl<I> ErrorBodies<I> {
    pub(super) fn new(inner: I) -> ErrorBodies<I> {
        ErrorBodies {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The answer to write instead of `head`, when `head` is hyper's own parse-error answer.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let (code, message) = if head.starts_with(b"HTTP/1.1 400 ") {
        ("bad_request", "malformed HTTP request")
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        ("uri_too_long", "request URI too long")
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "request_header_fields_too_large",
            "request headers too large",
        )
    } else {
        return None;
    };
    let end = memchr::memmem::find(head, b"\r\n\r\n")?;
    // Exactly one head, without a body: hyper's own.
    if end + 4 != head.len()
        || memchr::memmem::find(&head[..end + 2], b"\r\ncontent-length: 0\r\n").is_none()
    {
        return None;
    }
    // The fronts' error body; the status is hyper's own, in the head.
    let body = crate::fronts::ApiError::new(http::StatusCode::BAD_REQUEST, code, message).body();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    let mut lines = head[..end].split(|&b| b == b'\n');
    if let Some(status) = lines.next() {
        out.extend_from_slice(status);
        out.push(b'\n');
    }
    for line in lines {
        if line.eq_ignore_ascii_case(b"content-length: 0\r") {
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    Some(out)
}

impl<I: AsyncWrite + Unpin> ErrorBodies<I> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ErrorBodies<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        match rewrite(buf) {
            Some(answer) => {
                this.pending = answer;
                // Taken whole; what the socket does not take now is written on flush.
                let _ = this.poll_pending(cx)?;
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let first = bufs.iter().find(|b| !b.is_empty());
        match first.and_then(|b| rewrite(b)) {
            Some(answer) => {
                this.pending = answer;
                let _ = this.poll_pending(cx)?;
                Poll::Ready(Ok(first.map_or(0, |b| b.len())))
            }
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn hypers_bodiless_parse_errors_get_a_json_body_and_nothing_else_changes() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 02:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).expect("rewritten")).expect("utf-8");
        let (new_head, body) = out.split_once("\r\n\r\n").expect("head");
        assert!(new_head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(new_head.contains("\r\ndate: Mon, 07 Dec 2026 02:00:00 GMT"));
        assert!(!new_head.contains("content-length: 0"));
        assert!(new_head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(v["error"]["code"], "request_header_fields_too_large");
        assert!(v["error"]["details"].is_object());

        // The gateway's own answers have bodies; other statuses pass.
        let own = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n";
        assert!(rewrite(own).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}";
        assert!(rewrite(with_body).is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}

//! Just enough HTTP/1.1 for thousands of SSE streams and keep-alive polls on bound sockets:
//! a request writer, a response head reader, `Content-Length` bodies and a chunked decoder.

use std::io;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A connection with its read buffer.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) content_length: Option<usize>,
    pub(crate) chunked: bool,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Writes a request; `body` gets a `Content-Length`.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        let mut bytes = out.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            bytes.extend_from_slice(b);
        } else {
            bytes.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&bytes).await
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads a response head.
    pub(crate) async fn head(&mut self) -> io::Result<Head> {
        let end = loop {
            if let Some(p) = memmem::find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            self.fill().await?;
        };
        let text = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut head = Head {
            status,
            content_length: None,
            chunked: false,
        };
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                head.content_length = v.parse().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
            }
        }
        self.buf.drain(..end + 4);
        Ok(head)
    }

    /// Reads a `Content-Length` body (or a chunked one, whole).
    pub(crate) async fn body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if let Some(n) = head.content_length {
            while self.buf.len() < n {
                self.fill().await?;
            }
            return Ok(self.buf.drain(..n).collect());
        }
        if head.chunked {
            let mut out = Vec::new();
            loop {
                let chunk = self.chunk().await?;
                if chunk.is_empty() {
                    return Ok(out);
                }
                out.extend_from_slice(&chunk);
            }
        }
        Err(bad("a body without length"))
    }

    /// The next chunk of a chunked body (empty at its end).
    pub(crate) async fn chunk(&mut self) -> io::Result<Vec<u8>> {
        let line_end = loop {
            if let Some(p) = memmem::find(&self.buf, b"\r\n") {
                break p;
            }
            self.fill().await?;
        };
        let size_text =
            std::str::from_utf8(&self.buf[..line_end]).map_err(|_| bad("chunk size not UTF-8"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        let start = line_end + 2;
        while self.buf.len() < start + size + 2 {
            self.fill().await?;
        }
        let data = self.buf[start..start + size].to_vec();
        self.buf.drain(..start + size + 2);
        Ok(data)
    }
}

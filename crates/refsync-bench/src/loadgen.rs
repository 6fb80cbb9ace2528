//! The load generator: sends a payload folder's requests over `C` keep-alive HTTP/1.1
//! connections, either at an offered rate (open loop) or as fast as the server answers (closed
//! loop), and measures every acknowledgement.
//!
//! **Open loop** (`rate = Some(r)`): a pacer thread releases request `i` at `start + i / r`
//! (with `std::thread::sleep`, whose resolution is far below a millisecond) into a queue the
//! connections take from. Latency is measured from that *intended* time to the last byte of
//! the response, so time spent waiting for a free connection counts (no "coordinated
//! omission": a slow server cannot hide its stalls by slowing the generator down).
//! **Closed loop** (`rate = None`): each connection sends its next request as soon as the
//! previous answer arrived; latency is measured from the write.
//!
//! The client is a minimal HTTP/1.1 writer with `httparse` for the response head: requests are
//! serialized once, up front, so the generator spends as little CPU as possible on the
//! shared cores.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::payloads::Request;
use crate::report::{Latency, summarize};

/// Where to send: `http://host:port/prefix` split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server address.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The path of the URL (`/hooks/crm`, or empty): requests with a path target are sent
    /// to `prefix + path`; plain bodies to the prefix itself.
    pub prefix: String,
}

impl Target {
    /// Parses `http://127.0.0.1:8080[/path]` (plain HTTP to an IP address or `localhost`:
    /// the generator measures servers on this machine).
    ///
    /// # Errors
    /// Anything else, with the reason.
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host_port = authority.replace("localhost", "127.0.0.1");
        let addr: SocketAddr = host_port
            .parse()
            .or_else(|_| format!("{host_port}:80").parse())
            .map_err(|e| format!("{url:?}: expected http://IP:PORT[/path]: {e}"))?;
        Ok(Target {
            addr,
            host: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The raw bytes of `r` for this target (`Content-Length`, keep-alive).
    pub fn serialize(&self, r: &Request) -> Vec<u8> {
        let path = if r.target.starts_with("http://") || r.target.starts_with("https://") {
            r.target.clone()
        } else if r.target.is_empty() {
            if self.prefix.is_empty() {
                "/".to_owned()
            } else {
                self.prefix.clone()
            }
        } else {
            format!("{}{}", self.prefix, r.target)
        };
        let mut out = Vec::with_capacity(r.body.len() + 512);
        out.extend_from_slice(
            format!("{} {path} HTTP/1.1\r\nHost: {}\r\n", r.method, self.host).as_bytes(),
        );
        for (name, value) in &r.headers {
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("host") {
                continue;
            }
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", r.body.len()).as_bytes());
        out.extend_from_slice(&r.body);
        out
    }
}

/// How to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSpec {
    /// Offered requests per second (open loop), or `None` (closed loop).
    pub rate: Option<f64>,
    /// Connections.
    pub concurrency: usize,
    /// How long one request may take before it counts as an error (and its connection is
    /// replaced).
    pub timeout: Duration,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadResult {
    /// Offered requests per second (`null` for a closed loop).
    pub offered_rps: Option<f64>,
    /// Connections.
    pub concurrency: usize,
    /// Requests sent.
    pub sent: usize,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests with no answer (connection error or timeout).
    pub errors: usize,
    /// From the first send to the last answer, seconds.
    pub elapsed_s: f64,
    /// 2xx answers per second over `elapsed_s`.
    pub acked_rps: f64,
    /// Latency of the 2xx answers.
    pub latency: Latency,
    /// How late the pacer released requests (open loop; p99, µs): a large value means the
    /// generator, not the server, fell behind.
    pub pacer_lag_p99_us: u64,
    /// When the last answer arrived (Unix milliseconds), to compare with other processes'
    /// clocks on the same machine.
    pub finished_unix_ms: u64,
}

impl LoadResult {
    /// 2xx answers.
    pub fn acked(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One finished request: status (0 = no answer) and latency.
struct Outcome {
    status: u16,
    micros: u32,
}

/// Sends every request of `requests` (already serialized with [`Target::serialize`]) once.
/// `progress` is called about once a second with (done, total).
pub async fn run(
    target: &Target,
    requests: Arc<Vec<Vec<u8>>>,
    spec: LoadSpec,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> LoadResult {
    let total = requests.len();
    let concurrency = spec.concurrency.clamp(1, total.max(1));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let lags = match spec.rate {
        Some(rate) => {
            let rate = rate.max(0.001);
            Some(std::thread::spawn(move || pace(&tx, total, rate, start)))
        }
        None => {
            for i in 0..total {
                let _ = tx.send((i, start));
            }
            drop(tx);
            None
        }
    };
    let closed_loop = spec.rate.is_none();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let rx = Arc::clone(&rx);
        let requests = Arc::clone(&requests);
        let done = Arc::clone(&done);
        let addr = target.addr;
        let timeout = spec.timeout;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conn: Option<Conn> = None;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, intended)) = next else { break };
                let sent_at = Instant::now();
                let from = if closed_loop { sent_at } else { intended };
                let status = match send(&mut conn, addr, &requests[i], timeout).await {
                    Ok(s) => s,
                    Err(_) => {
                        conn = None;
                        0
                    }
                };
                let micros = u32::try_from(from.elapsed().as_micros()).unwrap_or(u32::MAX);
                out.push(Outcome { status, micros });
                done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }
    let reporter = {
        let done = Arc::clone(&done);
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress(done.load(Ordering::Relaxed), total);
            }
        }
    };
    let joined = tokio::select! {
        j = futures_join(tasks) => j,
        () = reporter => unreachable!("the reporter never ends"),
    };
    let elapsed = start.elapsed();
    let mut statuses = BTreeMap::new();
    let mut ok_micros = Vec::new();
    let mut errors = 0;
    for o in joined.into_iter().flatten() {
        if o.status == 0 {
            errors += 1;
            continue;
        }
        *statuses.entry(o.status).or_insert(0) += 1;
        if (200..300).contains(&o.status) {
            ok_micros.push(o.micros);
        }
    }
    let mut lag = lags.and_then(|h| h.join().ok()).unwrap_or_default();
    let acked = ok_micros.len();
    LoadResult {
        offered_rps: spec.rate,
        concurrency,
        sent: total,
        statuses,
        errors,
        elapsed_s: elapsed.as_secs_f64(),
        acked_rps: acked as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: summarize(&mut ok_micros),
        pacer_lag_p99_us: summarize(&mut lag).p99_us,
        finished_unix_ms: unix_ms(std::time::SystemTime::now()),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(v) = t.await {
            out.push(v);
        }
    }
    out
}

/// Releases request `i` at `start + i / rate`; returns how late each release was (µs).
fn pace(
    tx: &tokio::sync::mpsc::UnboundedSender<(usize, Instant)>,
    total: usize,
    rate: f64,
    start: Instant,
) -> Vec<u32> {
    let mut lags = Vec::with_capacity(total);
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        lags.push(u32::try_from(intended.elapsed().as_micros()).unwrap_or(u32::MAX));
        if tx.send((i, intended)).is_err() {
            break;
        }
    }
    lags
}

/// A keep-alive connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

async fn send(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<u16, String> {
    tokio::time::timeout(timeout, async {
        if conn.is_none() {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            *conn = Some(Conn {
                stream,
                buf: Vec::with_capacity(4096),
            });
        }
        let c = conn.as_mut().ok_or("no connection")?;
        c.stream
            .write_all(request)
            .await
            .map_err(|e| e.to_string())?;
        let (status, close) = read_response(c).await?;
        if close {
            *conn = None;
        }
        Ok(status)
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

/// Reads one response (head, then a `Content-Length` or chunked body); (status, the server
/// will close).
async fn read_response(c: &mut Conn) -> Result<(u16, bool), String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&c.buf).map_err(|e| e.to_string())? {
            httparse::Status::Complete(head_len) => {
                let status = response.code.unwrap_or(0);
                let mut length = None;
                let mut chunked = false;
                let mut close = false;
                for h in response.headers.iter() {
                    let value = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse::<usize>().ok();
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = value.to_ascii_lowercase().contains("chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = value.eq_ignore_ascii_case("close");
                    }
                }
                if chunked {
                    read_chunked(c, head_len).await?;
                } else {
                    let need = head_len + length.unwrap_or(0);
                    while c.buf.len() < need {
                        fill(c).await?;
                    }
                    c.buf.drain(..need);
                }
                return Ok((status, close));
            }
            httparse::Status::Partial => fill(c).await?,
        }
    }
}

async fn read_chunked(c: &mut Conn, mut pos: usize) -> Result<(), String> {
    loop {
        let line_end = loop {
            if let Some(p) = c.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                break pos + p;
            }
            fill(c).await?;
        };
        let size_text = String::from_utf8_lossy(&c.buf[pos..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        let need = line_end + 2 + size + 2;
        while c.buf.len() < need {
            fill(c).await?;
        }
        pos = need;
        if size == 0 {
            c.buf.drain(..pos);
            return Ok(());
        }
    }
}

async fn fill(c: &mut Conn) -> Result<(), String> {
    let mut chunk = [0u8; 8192];
    let n = c.stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed by the server".into());
    }
    c.buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_join_paths() {
        let t = Target::parse("http://localhost:8080/base/").expect("url");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.prefix, "/base");
        let r = Request {
            method: "POST".into(),
            target: "/hooks/x".into(),
            headers: vec![("Content-Length".into(), "999".into())],
            body: b"{}".to_vec(),
        };
        let raw = String::from_utf8(t.serialize(&r)).expect("utf8");
        assert!(raw.starts_with("POST /base/hooks/x HTTP/1.1\r\nHost: localhost:8080\r\n"));
        assert!(raw.ends_with("Content-Length: 2\r\n\r\n{}"), "{raw}");
        assert!(!raw.contains("999"));
        assert!(Target::parse("https://example.com").is_err());
    }

    /// A loopback axum server answering 200 and 500 in turn: the generator counts each
    /// status, a closed loop sends every request once, an open loop keeps to its rate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_statuses_and_keeps_the_offered_rate() {
        use axum::http::StatusCode;
        let app = axum::Router::new().route(
            "/hooks/{n}",
            axum::routing::post(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    if n % 3 == 2 {
                        (StatusCode::INTERNAL_SERVER_ERROR, "no")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let target = Target::parse(&format!("http://{addr}")).expect("target");
        let requests: Vec<Vec<u8>> = (0..30)
            .map(|i| {
                target.serialize(&Request {
                    method: "POST".into(),
                    target: format!("/hooks/{i}"),
                    headers: vec![],
                    body: vec![b'x'; 10],
                })
            })
            .collect();
        let spec = LoadSpec {
            rate: None,
            concurrency: 4,
            timeout: Duration::from_secs(10),
        };
        let r = run(&target, Arc::new(requests.clone()), spec, &|_, _| {}).await;
        assert_eq!(r.sent, 30);
        assert_eq!(r.errors, 0);
        assert_eq!(r.statuses, BTreeMap::from([(200, 20), (500, 10)]));
        assert_eq!(r.acked(), 20);
        assert_eq!(r.latency.count, 20);
        // Open loop at 300/s: the last of 30 requests is released 29/300 s after the first.
        let paced = LoadSpec {
            rate: Some(300.0),
            ..spec
        };
        let r = run(&target, Arc::new(requests), paced, &|_, _| {}).await;
        assert_eq!(r.acked(), 20);
        assert!(r.elapsed_s >= 29.0 / 300.0, "{}", r.elapsed_s);
        server.abort();
    }

    /// Raw responses back to back on one connection: Content-Length, chunked (with an
    /// extension), then `Connection: close`.
    #[tokio::test]
    async fn reads_content_length_chunked_and_close_responses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
                  HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nacc\r\n5\r\nepted\r\n0\r\n\r\n\
                  HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            )
            .await
            .expect("write");
            // Keep the socket open until the client is done.
            let mut sink = [0u8; 1];
            let _ = s.read(&mut sink).await;
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut c = Conn {
            stream,
            buf: Vec::new(),
        };
        assert_eq!(read_response(&mut c).await, Ok((200, false)));
        assert_eq!(read_response(&mut c).await, Ok((202, false)));
        assert_eq!(read_response(&mut c).await, Ok((503, true)));
        assert!(c.buf.is_empty());
        drop(c);
        server.await.expect("server");
    }
}

//! A lean HTTP/1.1 load generator for the boot storm, built to cost the shared cores as little
//! per request as pgbench's client does on its side of the comparison: one thread per share of
//! the connections, each with its own epoll set (mio), requests built once up front, and per
//! request one `write`, one `read` and a share of one `epoll_wait`. (wrk re-arms its write
//! interest with `epoll_ctl` around every request and runs a Lua call: some six system calls a
//! request, which on two shared cores is a tenth of the machine at these rates.)
//!
//! It understands exactly what unboxd answers: a status line, headers with `Content-Length`,
//! a body. One request is in flight per connection (no pipelining), as with wrk and pgbench.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// What one run measured.
pub struct Outcome {
    /// Latency of every 200 answer, in µs.
    pub latencies_us: Vec<u32>,
    /// Answers other than 200, and connections lost.
    pub errors: usize,
    pub elapsed: Duration,
}

/// `connections` keep-alive connections on `threads` threads for `duration`; thread `t` cycles
/// through the bodies t, t + threads, t + 2·threads …, each connection taking the next one.
pub fn run(
    address: SocketAddr,
    path: &str,
    bodies: &[impl AsRef<[u8]> + Sync],
    connections: usize,
    threads: usize,
    duration: Duration,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let outcomes: Vec<(Vec<u32>, usize)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let requests: Vec<Vec<u8>> = bodies
                    .iter()
                    .skip(t)
                    .step_by(threads)
                    .map(|body| request_bytes(path, body.as_ref()))
                    .collect();
                let mine = (t..connections).step_by(threads).count();
                scope.spawn(move || worker(address, &requests, mine, deadline))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for (latencies, failed) in outcomes {
        latencies_us.extend(latencies);
        errors += failed;
    }
    Outcome {
        latencies_us,
        errors,
        elapsed,
    }
}

fn request_bytes(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

struct Connection {
    stream: TcpStream,
    /// The request being sent and how much of it is out.
    request: usize,
    written: usize,
    sent_at: Instant,
    /// The answer so far: `answer[..filled]` (the buffer is kept, never shrunk nor cleared).
    answer: Vec<u8>,
    filled: usize,
    /// Once the head is parsed: where the body starts and how long it is.
    body: Option<(usize, usize, u16)>,
}

fn connect(address: SocketAddr) -> TcpStream {
    loop {
        if let Ok(stream) = std::net::TcpStream::connect(address) {
            stream.set_nodelay(true).unwrap();
            stream.set_nonblocking(true).unwrap();
            return TcpStream::from_std(stream);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn worker(
    address: SocketAddr,
    requests: &[Vec<u8>],
    connections: usize,
    deadline: Instant,
) -> (Vec<u32>, usize) {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(1024);
    let mut latencies = Vec::with_capacity(2 << 20);
    let mut errors = 0;
    let mut next = 0;
    let mut take = || {
        let r = next;
        next = (next + 1) % requests.len();
        r
    };
    let mut conns: Vec<Connection> = (0..connections)
        .map(|i| {
            let mut stream = connect(address);
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
            Connection {
                stream,
                request: take(),
                written: 0,
                sent_at: Instant::now(),
                answer: vec![0; 32 * 1024],
                filled: 0,
                body: None,
            }
        })
        .collect();
    let mut open = connections;
    for c in &mut conns {
        send(c, requests);
    }
    // Past the deadline no request is sent; answers still due are waited for a little.
    let grace = deadline + Duration::from_secs(2);
    while open > 0 && Instant::now() < grace {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for event in &events {
            let i = event.token().0;
            let c = &mut conns[i];
            if c.written < requests[c.request].len() {
                if event.is_writable() {
                    send(c, requests);
                }
                // A connection that failed or was closed while sending is taken as lost below.
                if !(event.is_error() || event.is_read_closed()) {
                    continue;
                }
            }
            match receive(c) {
                Received::Pending => {}
                Received::Answer(status) => {
                    if status == 200 {
                        let us = c.sent_at.elapsed().as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                    if Instant::now() >= deadline {
                        poll.registry().deregister(&mut c.stream).unwrap();
                        open -= 1;
                        continue;
                    }
                    c.request = take();
                    c.written = 0;
                    send(c, requests);
                }
                Received::Lost => {
                    errors += 1;
                    let _ = poll.registry().deregister(&mut c.stream);
                    c.stream = connect(address);
                    poll.registry()
                        .register(
                            &mut c.stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .unwrap();
                    c.filled = 0;
                    c.body = None;
                    c.written = 0;
                    send(c, requests);
                }
            }
        }
    }
    (latencies, errors)
}

/// Writes what the socket takes of the current request; the rest goes on a writable event.
fn send(c: &mut Connection, requests: &[Vec<u8>]) {
    let request = &requests[c.request];
    if c.written == 0 {
        c.sent_at = Instant::now();
    }
    while c.written < request.len() {
        match c.stream.write(&request[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A lost connection shows on the read side.
            Err(_) => return,
        }
    }
}

enum Received {
    Pending,
    Answer(u16),
    Lost,
}

/// Reads until the answer is complete or the socket is drained. One request is in flight, so a
/// complete answer is everything the socket holds.
fn receive(c: &mut Connection) -> Received {
    loop {
        if c.answer.len() - c.filled < 4096 {
            let grown = c.answer.len() * 2;
            c.answer.resize(grown, 0);
        }
        match c.stream.read(&mut c.answer[c.filled..]) {
            Ok(0) => return Received::Lost,
            Ok(n) => c.filled += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Received::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Received::Lost,
        }
        if c.body.is_none() {
            c.body = head(&c.answer[..c.filled]);
        }
        if let Some((start, length, status)) = c.body
            && c.filled >= start + length
        {
            c.filled = 0;
            c.body = None;
            return Received::Answer(status);
        }
    }
}

/// The status, where the body starts and its `Content-Length`, once the head is complete.
fn head(answer: &[u8]) -> Option<(usize, usize, u16)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&answer[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .expect("unboxd answers with a Content-Length");
    Some((end + 4, length, status))
}

//! The benchmark's backend: a keep-alive HTTP/1.1 server on std threads (one
//! per connection) that answers every request with a 2-byte body. No
//! dependencies: compare.sh builds it with `rustc -O`.
//!
//! Usage: backend ADDR:PORT    (prints the bound address on stdout)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
const RESPONSE_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok";

/// Whether a request head asks to close the connection after the answer.
fn wants_close(head: &[u8]) -> bool {
    head.to_ascii_lowercase()
        .windows(17)
        .any(|w| w == b"connection: close")
}

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        // Answer every complete request in the buffer (wrk may pipeline none,
        // but a proxy may deliver two at once).
        let mut start = 0;
        let mut out = Vec::new();
        let mut close = false;
        while let Some(end) = buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            close = wants_close(&buf[start..start + end]);
            start += end + 4;
            out.extend_from_slice(if close { RESPONSE_CLOSE } else { RESPONSE });
            if close {
                break;
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() || close {
            return;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return; // a header larger than the buffer: not a benchmark client
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).expect("bind");
    println!("{}", listener.local_addr().unwrap());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}

//! A TCP proxy in front of a node that breaks connections on demand: to
//! show that the client retries and resumes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Faults {
    /// The next N answers are not forwarded: their connections close at
    /// their first bytes.
    drop_answers: AtomicUsize,
    /// The next answer's connection closes after forwarding this many
    /// bytes (0: off).
    cut_after: AtomicU64,
    /// Every byte clients sent.
    sent: Mutex<Vec<u8>>,
    conns: Mutex<Vec<tokio::task::AbortHandle>>,
    answers_dropped: AtomicUsize,
    answers_cut: AtomicUsize,
}

pub struct Proxy {
    pub url: String,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn to(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let h = tokio::spawn(pipe(client, server, f.clone()));
                f.conns.lock().expect("lock").push(h.abort_handle());
            }
        });
        Proxy { url, faults, task }
    }

    pub fn drop_answers(&self, n: usize) {
        self.faults.drop_answers.store(n, Ordering::SeqCst);
    }

    pub fn answers_dropped(&self) -> usize {
        self.faults.answers_dropped.load(Ordering::SeqCst)
    }

    pub fn answers_cut(&self) -> usize {
        self.faults.answers_cut.load(Ordering::SeqCst)
    }

    pub fn cut_next_answer_after(&self, bytes: u64) {
        self.faults.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Breaks every open connection.
    pub fn break_all(&self) {
        for h in self.faults.conns.lock().expect("lock").drain(..) {
            h.abort();
        }
    }

    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.faults.sent.lock().expect("lock")).into_owned()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.break_all();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, f: Arc<Faults>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let f2 = f.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = cr.read(&mut buf).await {
            f2.sent.lock().expect("lock").extend_from_slice(&buf[..n]);
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut cut = 0;
    while let Ok(n @ 1..) = sr.read(&mut buf).await {
        if cut == 0 {
            cut = f.cut_after.swap(0, Ordering::SeqCst);
        }
        if f.drop_answers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            f.answers_dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
        let n = if cut > 0 { n.min(cut as usize) } else { n };
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if cut > 0 {
            cut -= n as u64;
            if cut == 0 {
                f.answers_cut.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    up.abort();
}

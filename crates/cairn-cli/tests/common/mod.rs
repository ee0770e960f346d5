//! Helpers shared by the suites that run real `cairn` processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A `cairn serve` child on a free port; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `cairn serve` with `args` (the storage flags and any others).
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("CAIRN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_string();
        Server { child, base: format!("http://{addr}") }
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client (rustls needs its crypto provider first).
pub fn http() -> reqwest::Client {
    cairn_engine::storage::install_crypto();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Every event of a store as one node serves it, page by page.
pub async fn all_events(http: &reqwest::Client, base: &str, store: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let text = http.get(format!("{base}/v1/stores/{store}/events?from={from}")).send().await.unwrap().text().await.unwrap();
        let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let last = lines.pop().expect("a last line");
        let next = last.get("next").unwrap_or_else(|| panic!("the read was complete: {last}"));
        let got = lines.len();
        out.extend(lines);
        match next.as_u64() {
            Some(n) if got > 0 => from = n,
            _ => return out,
        }
    }
}

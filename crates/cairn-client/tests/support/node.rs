//! A real Cairn node in this process, on a loopback socket: what the
//! client's tests, examples and benchmarks talk to when no `--url` is given.
#![allow(dead_code)]

use std::sync::Arc;

/// A node serving until dropped.
pub struct Node {
    pub url: String,
    pub engine: Arc<cairn_engine::Engine>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// A node on `storage` (a storage URL: a directory, `memory://`, ...).
    pub async fn on(storage: &str) -> Node {
        let store = cairn_engine::storage::open(storage, &Default::default()).expect("storage opens");
        Node::with(store, None).await
    }

    /// A node over a fresh temporary directory (fsync on, like production).
    pub async fn temp_dir() -> Node {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = cairn_engine::storage::open(&dir.path().to_string_lossy(), &Default::default()).expect("storage opens");
        Node::with(store, Some(dir)).await
    }

    /// A node over memory.
    pub async fn memory() -> Node {
        Node::on("memory://").await
    }

    async fn with(store: Arc<dyn object_store::ObjectStore>, dir: Option<tempfile::TempDir>) -> Node {
        let engine = cairn_engine::Engine::new(store, Default::default());
        let app = cairn_server::router(cairn_server::AppState::new(engine.clone(), Default::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Node { url, engine, task, _dir: dir }
    }

    pub fn client(&self) -> cairn_client::Client {
        cairn_client::Client::new(&self.url).expect("a client")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

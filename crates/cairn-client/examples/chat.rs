//! Sample: a chat room. Each participant appends what they type to the
//! room's stream and tails the stream live.
//!
//! ```sh
//! cargo run -p cairn-cli --release -- serve            # a node, in one terminal
//! cargo run --example chat -- --name alice lobby        # in another
//! cargo run --example chat -- --name bob lobby          # and a third
//! ```
//!
//! Messages live in store `chat` (created if needed), stream `room-NAME`.
//! A newcomer sees the last `--history` messages, then new ones as they
//! are sent, whoever's node they were sent to.

use std::io::IsTerminal;

use cairn_client::{Client, EventData, Expected, Message, StreamRead};
use clap::Parser;
use futures::TryStreamExt;
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
struct Args {
    /// The room to join.
    room: String,
    /// Your name in the room.
    #[arg(long)]
    name: String,
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Messages of the past to show on joining.
    #[arg(long, default_value_t = 10)]
    history: u64,
    #[arg(long, default_value = "chat")]
    store: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Said {
    from: String,
    text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = Client::builder(&args.url).token(args.token.unwrap_or_default()).build()?.store(&args.store);
    store.create().await?;
    let stream = format!("room-{}", args.room);
    // Start `history` messages back: the newest one's revision tells where.
    let newest = store.read_stream(&stream, StreamRead::backward().limit(1)).try_next().await?;
    let from = newest.map_or(0, |e| (e.revision + 1).saturating_sub(args.history));
    let mut room = store.subscribe_stream(&stream, from);
    if std::io::stdin().is_terminal() {
        eprintln!("joined {} as {} (type a line and Enter to send; Ctrl-D to leave)", args.room, args.name);
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut typing = true;
    loop {
        tokio::select! {
            msg = room.next() => match msg? {
                Message::Event(e) => match e.json::<Said>() {
                    Ok(s) => println!("[{}] {}: {}", e.revision, s.from, s.text),
                    Err(_) => println!("[{}] ({} event)", e.revision, e.event_type),
                },
                Message::CaughtUp { .. } => {}
            },
            line = lines.next_line(), if typing => match line? {
                Some(text) if !text.trim().is_empty() => {
                    let said = EventData::json("Said", &Said { from: args.name.clone(), text })?;
                    store.append(&stream, vec![said], Expected::Any).await?;
                }
                Some(_) => {}
                // End of input: keep listening only when attached to a terminal.
                None if std::io::stdout().is_terminal() => return Ok(()),
                None => typing = false,
            },
        }
    }
}

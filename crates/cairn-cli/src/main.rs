//! `cairn`: the Cairn command. `cairn serve` runs an HTTP node; the other
//! subcommands talk to one (`--url`, `CAIRN_URL`) or read storage directly
//! (`inspect`).

mod archive;
mod bench;
mod inspect;
mod remote;
mod serve;
mod transfer;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cairn", version, about = "Cairn: an event store on object storage", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  cairn serve                                      a node on 127.0.0.1:7070, stores in ./data
  cairn stores create shop
  cairn append shop order-1 -t OrderPlaced -d '{\"total\":12}' --expected no_stream
  cairn read shop --follow                         tail the whole store live
  cairn export shop --out shop.ndjson && cairn import copy shop.ndjson --create
  cairn inspect ./data/shop/<incarnation>/seg/<id>.seg --verify
  cairn archive build shop --out shop.arc && cairn archive read shop.arc --space order-1

Commands other than serve, inspect and archive read talk to the node at --url (CAIRN_URL,
default http://127.0.0.1:7070), with the token in CAIRN_TOKEN if it asks for one.
Exit codes: 0 done, 1 failed, 2 usage error.";

#[derive(Subcommand)]
enum Command {
    /// Run an HTTP node (defaults: local directory ./data, 127.0.0.1:7070).
    Serve(serve::Serve),
    /// List, create, delete and describe stores.
    Stores(remote::StoresCmd),
    /// Append events to a stream (or to many, from NDJSON), atomically.
    Append(remote::AppendCmd),
    /// Read a store or a stream; --follow to tail it live.
    Read(remote::ReadCmd),
    /// Get, put and delete docs (compare-and-swap with --if-match).
    Doc(remote::DocCmd),
    /// Append the events of an NDJSON file (as `export` writes it), in batches.
    Import(transfer::ImportCmd),
    /// Write a store's events as NDJSON.
    Export(transfer::ExportCmd),
    /// Show the layout of a segment, index object or manifest, with no node
    /// running; --verify checks every checksum.
    Inspect(inspect::InspectCmd),
    /// Build an archive file from a store, or read one with no node running.
    Archive(archive::ArchiveCmd),
    /// Load a node: appends or reads, printing throughput and latency.
    Bench(bench::BenchCmd),
    /// Exit 0 if the node is alive (or, with --ready, reaches its storage):
    /// for container health checks.
    Health(remote::HealthCmd),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| "info".into());
            match a.log_format {
                serve::LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
                serve::LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init(),
            }
            runtime().and_then(|rt| rt.block_on(serve::serve(a)))
        }
        Command::Stores(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Append(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Read(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Doc(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Import(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Export(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Inspect(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Archive(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Bench(c) => runtime().and_then(|rt| rt.block_on(c.run())),
        Command::Health(c) => runtime().and_then(|rt| rt.block_on(c.run())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `cairn read ... | head`: the reader left; not a failure.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context and its causes, outermost first.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

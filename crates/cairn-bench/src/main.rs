//! `cairn-bench peers`: the same workloads against Cairn, NATS JetStream
//! and PostgreSQL at equal durability, on one machine in one run; writes
//! the table to docs/BENCHMARKS.md and a PNG plot. See docs/BENCHMARKS.md
//! ("Against the alternatives").

mod peers;
mod report;
mod servers;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use peers::{Corpus, Peer};
use report::{ms, Better, Measure, Panel, Report};
use workload::{Append, AppendRun, Latencies};

#[derive(Parser)]
#[command(about = "Side-by-side benchmarks of Cairn against NATS JetStream and PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every workload against every system, one system at a time.
    Peers(PeersArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum System {
    Cairn,
    Nats,
    Postgres,
}

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  scripts/bench-peers                         the full run (~25 minutes), writes docs/BENCHMARKS.md and docs/images/peers.png
  scripts/bench-peers --quick --no-doc        a check that everything runs (a minute)
  scripts/bench-peers --systems cairn,postgres --seconds 5")]
struct PeersArgs {
    /// Which systems to run.
    #[arg(long, value_delimiter = ',', default_values_t = [System::Cairn, System::Nats, System::Postgres], value_enum)]
    systems: Vec<System>,
    /// Events in the read corpus (catch-up and one-stream reads).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Streams the corpus is spread over.
    #[arg(long, default_value_t = 100_000)]
    streams: u64,
    /// Bytes of JSON data per corpus event.
    #[arg(long, default_value_t = 100)]
    corpus_size: usize,
    /// Seconds each append workload runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// One-stream reads to time.
    #[arg(long, default_value_t = 200)]
    stream_reads: usize,
    /// Appends the tail-latency workload times.
    #[arg(long, default_value_t = 200)]
    tail_samples: usize,
    /// Catch-up reads per system; the fastest counts (the machine's
    /// neighbours slow some runs, never speed one up).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    catch_up_runs: u32,
    /// Small sizes, for checking that everything runs: 20,000 events over
    /// 100 streams, 1 s per append workload, 20 reads and tail samples.
    #[arg(long)]
    quick: bool,
    /// The cairn binary (default: `cairn` beside this binary).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Where the servers keep their data and logs (emptied first).
    #[arg(long, default_value = "target/bench-peers")]
    work: PathBuf,
    /// Where NATS is installed.
    #[arg(long, default_value = "target/bench-servers")]
    tools: PathBuf,
    /// The Markdown file whose `<!-- peers:begin/end -->` section is rewritten.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    doc: PathBuf,
    /// The plot.
    #[arg(long, default_value = "docs/images/peers.png")]
    plot: PathBuf,
    /// Write the results only into the work directory (results.md,
    /// results.json, peers.png), not into --doc and --plot.
    #[arg(long)]
    no_doc: bool,
    /// Do not seal Cairn's history into archives for a second round of
    /// reads (by default the catch-up and one-stream reads run once on the
    /// store as loaded and once after `PUT tiering` sealed it).
    #[arg(long)]
    no_seal: bool,
    /// Keep each system's data in the work directory after its run (by
    /// default it is deleted before the next system starts).
    #[arg(long)]
    keep: bool,
}

/// Everything measured of one system.
#[derive(Default)]
struct Results {
    version: String,
    load: Option<(Duration, u64)>,
    appends: Vec<AppendRun>,
    latency_1: Option<AppendRun>,
    catch_up: Option<Duration>,
    streams: Option<Latencies>,
    /// How long moving the history into archives took (Cairn), and the
    /// same reads after it.
    sealed: Option<Duration>,
    catch_up_sealed: Option<Duration>,
    streams_sealed: Option<Latencies>,
    tail: Option<Latencies>,
    disk_bytes: u64,
    /// How long the server took to go quiet after the load.
    settled: Duration,
}

/// The longest wait for a server to go quiet after the load.
const SETTLE: Duration = Duration::from_secs(180);

/// The append throughput workloads, in the table's order.
fn append_workloads(duration: Duration) -> Vec<(String, &'static str, Append)> {
    let mut v = Vec::new();
    for (batch, clients, shorts) in [(1, 64, ["100 B ×1, 64c", "1 KiB ×1, 64c"]), (100, 16, ["100 B ×100, 16c", "1 KiB ×100, 16c"])] {
        for (size, short) in [100, 1024].into_iter().zip(shorts) {
            let label = format!("append {}, batches of {batch}, {clients} clients", if size == 100 { "100 B" } else { "1 KiB" });
            v.push((label, short, Append { size, batch, clients, duration }));
        }
    }
    v
}

#[tokio::main]
async fn main() {
    let Cli { command: Command::Peers(mut args) } = Cli::parse();
    if args.quick {
        args.events = 20_000;
        args.streams = 100;
        args.seconds = 1;
        args.stream_reads = 20;
        args.tail_samples = 20;
        // So few events lie inside the idempotency window: none could be
        // sealed.
        args.no_seal = true;
    }
    if let Err(e) = run(args).await {
        eprintln!("cairn-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: PeersArgs) -> Result<()> {
    if args.streams == 0 || args.events < args.streams {
        bail!("--events must be at least --streams, and --streams at least 1");
    }
    let cairn_bin = match &args.cairn {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.parent().context("the binary's directory")?.join("cairn"),
    };
    if args.work.exists() {
        std::fs::remove_dir_all(&args.work).with_context(|| format!("emptying {}", args.work.display()))?;
    }
    std::fs::create_dir_all(&args.work)?;
    std::fs::create_dir_all(&args.tools)?;
    let work = std::fs::canonicalize(&args.work)?;
    let tools = std::fs::canonicalize(&args.tools)?;
    let corpus = Corpus { total: args.events, streams: args.streams, size: args.corpus_size };
    let started = Instant::now();

    let mut all = Vec::new();
    for system in &args.systems {
        let dir = work.join(format!("{system:?}").to_lowercase());
        std::fs::create_dir_all(&dir)?;
        eprintln!("bench: {system:?}");
        let r = match system {
            System::Cairn => bench_cairn(&args, &cairn_bin, &dir, corpus).await,
            System::Nats => bench_nats(&args, &tools, &dir, corpus).await,
            System::Postgres => bench_postgres(&args, &dir, corpus).await,
        }
        .with_context(|| format!("benchmarking {system:?}"))?;
        // Each system's data goes before the next starts: disk and page cache.
        if !args.keep {
            std::fs::remove_dir_all(&dir)?;
        }
        all.push((*system, r));
    }

    let report = build_report(corpus, &all);
    let section = section(&args, corpus, &report, started.elapsed());
    std::fs::write(work.join("results.md"), &section)?;
    std::fs::write(work.join("results.json"), serde_json::to_string_pretty(&report.json())?)?;
    report.plot(&work.join("peers.png"))?;
    print!("{section}");
    if !args.no_doc {
        let doc = std::fs::read_to_string(&args.doc).with_context(|| format!("reading {}", args.doc.display()))?;
        std::fs::write(&args.doc, report::splice(&doc, &section))?;
        if let Some(parent) = args.plot.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(work.join("peers.png"), &args.plot)?;
        eprintln!("bench: wrote {} and {}", args.doc.display(), args.plot.display());
    }
    Ok(())
}

/// Retries a connection while a server finishes starting.
async fn connect<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(t) => return Ok(t),
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                if std::env::var_os("CAIRN_BENCH_VERBOSE").is_some() {
                    eprintln!("bench: {what} not ready yet: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn bench_cairn(args: &PeersArgs, bin: &Path, dir: &Path, corpus: Corpus) -> Result<Results> {
    let server = servers::cairn(bin, dir).await?;
    let base = format!("http://{}", server.addr);
    let peer: Arc<dyn Peer> = Arc::new(connect("cairn", || peers::cairn::Cairn::connect(&base, "bench")).await?);
    run_system(args, server, peer, corpus, None, &dir.join("cairn-data")).await
}

async fn bench_nats(args: &PeersArgs, tools: &Path, dir: &Path, corpus: Corpus) -> Result<Results> {
    let bin = servers::nats_binary(tools)?;
    let port = servers::free_port()?;
    let url = format!("nats://127.0.0.1:{port}");
    // The corpus is loaded with the server's default sync (every two
    // minutes): with a sync per message it would take hours. The server
    // is then restarted with `sync_interval: always` for everything
    // measured.
    let loading = servers::nats(&bin, dir, port, false).await?;
    let peer = connect("nats", || peers::nats::Nats::connect(&url)).await?;
    let loaded = load(&peer, corpus).await?;
    drop(peer);
    loading.stop().await?;
    let server = servers::nats(&bin, dir, port, true).await?;
    let peer: Arc<dyn Peer> = Arc::new(connect("nats", || peers::nats::Nats::connect(&url)).await?);
    run_system(args, server, peer, corpus, Some(loaded), &dir.join("nats-data")).await
}

async fn bench_postgres(args: &PeersArgs, dir: &Path, corpus: Corpus) -> Result<Results> {
    let bin = servers::postgres_bin()?;
    let (server, config) = servers::postgres(&bin, dir, servers::free_port()?).await?;
    let peer: Arc<dyn Peer> = Arc::new(connect("postgres", || peers::postgres::Postgres::connect(&config)).await?);
    run_system(args, server, peer, corpus, None, &dir.join("pg-data")).await
}

/// The same for every system: the concurrency check, the load (unless
/// `loaded` already), quiet, the workloads, then the server stopped and its
/// data measured.
async fn run_system(args: &PeersArgs, server: servers::Server, peer: Arc<dyn Peer>, corpus: Corpus, loaded: Option<(Duration, u64)>, data: &Path) -> Result<Results> {
    let mut r = Results { version: server.version.clone(), ..Results::default() };
    workload::check_concurrency(&*peer).await?;
    r.load = Some(match loaded {
        Some(l) => l,
        None => load(&*peer, corpus).await?,
    });
    r.settled = server.settle(SETTLE).await;
    measure(args, peer, corpus, &mut r).await?;
    server.stop().await?;
    r.disk_bytes = du(data);
    Ok(r)
}

async fn load(peer: &dyn Peer, corpus: Corpus) -> Result<(Duration, u64)> {
    eprintln!("bench:   loading {} events over {} streams", corpus.total, corpus.streams);
    let start = Instant::now();
    peer.load(corpus).await?;
    Ok((start.elapsed(), corpus.total))
}

/// The measured workloads, in the same order for every system: reads of
/// the corpus first (the store holds exactly the corpus), then appends,
/// then the tail.
async fn measure(args: &PeersArgs, peer: Arc<dyn Peer>, corpus: Corpus, r: &mut Results) -> Result<()> {
    let (catch_up, streams) = reads(args, &*peer, corpus).await?;
    (r.catch_up, r.streams) = (Some(catch_up), Some(streams));
    if !args.no_seal {
        if let Some(d) = peer.seal_history().await? {
            eprintln!("bench:   history sealed into archives in {:.1} s; the reads again", d.as_secs_f64());
            let (catch_up, streams) = reads(args, &*peer, corpus).await?;
            (r.sealed, r.catch_up_sealed, r.streams_sealed) = (Some(d), Some(catch_up), Some(streams));
        }
    }
    let duration = Duration::from_secs(args.seconds);
    for (i, (label, _, w)) in append_workloads(duration).into_iter().enumerate() {
        let run = workload::append(peer.clone(), w, &format!("a{i}")).await?;
        eprintln!("bench:   {label}: {:.0} events/s, {}", run.events_per_sec(), quantiles(&run.latencies));
        r.appends.push(run);
    }
    let run = workload::append(peer.clone(), Append { size: 100, batch: 1, clients: 1, duration }, "l1").await?;
    eprintln!("bench:   single-event appends, 1 client: {:.0} events/s, {}", run.events_per_sec(), quantiles(&run.latencies));
    r.latency_1 = Some(run);
    let l = workload::tail(peer, args.tail_samples, 100, Duration::from_millis(20)).await?;
    eprintln!("bench:   tail latency, {} samples: {}", args.tail_samples, quantiles(&l));
    r.tail = Some(l);
    Ok(())
}

/// The catch-up (the fastest of `catch_up_runs`) and the one-stream reads.
async fn reads(args: &PeersArgs, peer: &dyn Peer, corpus: Corpus) -> Result<(Duration, Latencies)> {
    let mut best: Option<Duration> = None;
    for _ in 0..args.catch_up_runs {
        let (d, _) = workload::catch_up(peer, corpus.total).await?;
        eprintln!("bench:   catch-up read of {} events: {:.1} s, {:.0} events/s", corpus.total, d.as_secs_f64(), corpus.total as f64 / d.as_secs_f64());
        best = Some(best.map_or(d, |b| b.min(d)));
    }
    let l = workload::read_streams(peer, corpus, args.stream_reads, 7).await?;
    eprintln!("bench:   {} one-stream reads: {}", args.stream_reads, quantiles(&l));
    Ok((best.context("no catch-up run")?, l))
}

fn quantiles(l: &Latencies) -> String {
    format!("p50 {:.2} ms, p99 {:.2} ms", ms(l.quantile(0.5)), ms(l.quantile(0.99)))
}

/// Bytes of the files under `dir`.
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn build_report(corpus: Corpus, all: &[(System, Results)]) -> Report {
    let name = |s: System| match s {
        System::Cairn => "Cairn",
        System::Nats => "NATS JetStream",
        System::Postgres => "PostgreSQL",
    };
    // Cairn first: the ratios are Cairn / peer.
    let mut order: Vec<&(System, Results)> = all.iter().collect();
    order.sort_by_key(|(s, _)| *s as u8);
    let systems = order.iter().map(|(s, _)| name(*s).to_string()).collect();
    let versions = order.iter().map(|(s, r)| format!("{}: {}", name(*s), r.version)).collect();
    let col = |f: &dyn Fn(&Results) -> Option<f64>| order.iter().map(|(_, r)| f(r)).collect::<Vec<_>>();
    let mut measures = Vec::new();
    for (i, (label, short, _)) in append_workloads(Duration::ZERO).into_iter().enumerate() {
        measures.push(Measure { workload: label, unit: "events/s", better: Better::Higher, values: col(&|r| r.appends.get(i).map(AppendRun::events_per_sec)), plot: Some((Panel::Throughput, short)) });
    }
    measures.push(Measure {
        workload: format!("catch-up read of {} events", corpus.total),
        unit: "events/s",
        better: Better::Higher,
        values: col(&|r| r.catch_up.map(|d| corpus.total as f64 / d.as_secs_f64())),
        plot: Some((Panel::Throughput, "catch-up read")),
    });
    // The reads again after Cairn sealed its history; a peer has one
    // layout, so its column is its only measure.
    let sealed = order.iter().any(|(_, r)| r.sealed.is_some());
    if sealed {
        measures.push(Measure {
            workload: format!("catch-up read of {} events, Cairn's history sealed into archives", corpus.total),
            unit: "events/s",
            better: Better::Higher,
            values: col(&|r| r.catch_up_sealed.or(r.catch_up).map(|d| corpus.total as f64 / d.as_secs_f64())),
            plot: None,
        });
    }
    let lat = |workload: &str, q: f64, unit: &'static str, f: fn(&Results) -> Option<&Latencies>, short: &'static str| Measure {
        workload: workload.to_string(),
        unit,
        better: Better::Lower,
        values: col(&|r| f(r).map(|l| ms(l.quantile(q)))),
        plot: Some((Panel::Latency, short)),
    };
    let per_stream = corpus.total / corpus.streams;
    let stream_label = format!("read one stream ({per_stream} events) among {}", corpus.streams);
    let tail_label = "tail: append sent → live reader has it";
    let one = "single-event append, 1 client";
    let many = "single-event append, 64 clients";
    fn latency_1(r: &Results) -> Option<&Latencies> {
        r.latency_1.as_ref().map(|a| &a.latencies)
    }
    fn latency_64(r: &Results) -> Option<&Latencies> {
        r.appends.first().map(|a| &a.latencies)
    }
    fn streams(r: &Results) -> Option<&Latencies> {
        r.streams.as_ref()
    }
    fn streams_sealed(r: &Results) -> Option<&Latencies> {
        r.streams_sealed.as_ref().or(r.streams.as_ref())
    }
    fn tail(r: &Results) -> Option<&Latencies> {
        r.tail.as_ref()
    }
    let sealed_label = format!("{stream_label}, Cairn's history sealed into archives");
    type Rows<'a> = Vec<(&'a str, fn(&Results) -> Option<&Latencies>, [&'static str; 2])>;
    let mut rows: Rows = vec![
        (one, latency_1, ["append 1c p50", "p99"]),
        (many, latency_64, ["append 64c p50", "p99"]),
        (stream_label.as_str(), streams, ["1 stream p50", "p99"]),
    ];
    if sealed {
        rows.push((sealed_label.as_str(), streams_sealed, ["1 stream, sealed, p50", "p99"]));
    }
    rows.push((tail_label, tail, ["tail p50", "p99"]));
    for (label, f, [p50, p99]) in rows {
        measures.push(lat(label, 0.5, "p50 ms", f, p50));
        measures.push(lat(label, 0.99, "p99 ms", f, p99));
    }
    measures.push(Measure {
        workload: format!("disk after the run ({} corpus events and the appends)", corpus.total),
        unit: "bytes/event",
        better: Better::Lower,
        values: col(&|r| {
            let events = corpus.total + r.appends.iter().map(|a| a.events).sum::<u64>() + r.latency_1.as_ref().map_or(0, |a| a.events);
            Some(r.disk_bytes as f64 / events as f64)
        }),
        plot: None,
    });
    let mut notes = Vec::new();
    for (s, r) in &order {
        if let Some((d, n)) = r.load {
            notes.push(format!(
                "{}: corpus loaded in {:.1} s ({:.0} events/s, not measured), then quiet (under 5% of a core for a second) after {:.0} s",
                name(*s),
                d.as_secs_f64(),
                n as f64 / d.as_secs_f64(),
                r.settled.as_secs_f64()
            ));
        }
        if let Some(d) = r.sealed {
            notes.push(format!(
                "{}: after the first reads, `PUT tiering {{\"seal_before\": <next seq>}}` sealed the corpus into archives (events grouped by stream) in {:.1} s, not measured, all but the newest events (the idempotency window, which stays on segments); the rows \"history sealed\" were read after it, and the peers' values in them are their only layout's",
                name(*s),
                d.as_secs_f64()
            ));
        }
    }
    Report { systems, versions, measures, notes }
}

fn section(args: &PeersArgs, corpus: Corpus, report: &Report, elapsed: Duration) -> String {
    let machine = machine();
    let mut s = String::new();
    s.push_str(&format!(
        "Measured {} by `scripts/bench-peers{}` in {:.0} s on {machine}. Each system ran alone on the machine, one after the other; the load generator shares its cores.\n\n",
        today(),
        if args.quick { " --quick" } else { "" },
        elapsed.as_secs_f64()
    ));
    s.push_str(&report.markdown());
    s.push_str("\nRatios are Cairn / peer: above 1 is Cairn ahead for throughput, below 1 for latency; bold where Cairn is ahead.\n\n");
    s.push_str(&format!(
        "Corpus: {} events of {} B JSON over {} streams (event k in stream k mod {}). The catch-up is the fastest of {} reads of the whole corpus; append workloads run {} s each; one-stream reads are {} random streams, one at a time; the tail is {} appends 20 ms apart.\n\n",
        corpus.total, corpus.size, corpus.streams, corpus.streams, args.catch_up_runs, args.seconds, args.stream_reads, args.tail_samples
    ));
    s.push_str("Versions:\n");
    for v in &report.versions {
        s.push_str(&format!("- {v}\n"));
    }
    for n in &report.notes {
        s.push_str(&format!("- {n}\n"));
    }
    s.push_str("\n![Throughput and latency of Cairn, NATS JetStream and PostgreSQL](images/peers.png)\n\n");
    s
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// CPU model, cores, memory and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map_or("unknown CPU", str::trim).to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo.lines().find(|l| l.starts_with("MemTotal")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({model}), {:.0} GiB, Linux {}", mem_kib as f64 / (1024.0 * 1024.0), kernel.trim())
}

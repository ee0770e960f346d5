//! The subcommands that talk to a node: `stores`, `append`, `read`, `doc`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read as _, Write};

use anyhow::{bail, Context};
use base64::Engine as _;
use cairn_client::{Client, EventData, Expected, Message, Precondition, RecordedEvent, StreamRead};
use clap::{Args, Subcommand, ValueEnum};
use futures::TryStreamExt;

/// Where the node is.
#[derive(Args, Clone)]
#[command(next_help_heading = "Node")]
pub struct Remote {
    /// The node (or the load balancer in front of the nodes).
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:7070", global = true)]
    pub url: String,
    /// A bearer token; prefer CAIRN_TOKEN (flags show up in process listings).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl Remote {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::builder(&self.url).token(self.token.clone().unwrap_or_default()).build()?)
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  cairn health                                  /healthz of CAIRN_URL\n  cairn health --ready --url http://10.0.0.5:7070\n\nUsed by the Docker image's HEALTHCHECK (the image has no shell or curl).")]
pub struct HealthCmd {
    /// Check /readyz (storage reachable) instead of /healthz (alive).
    #[arg(long)]
    ready: bool,
    #[command(flatten)]
    remote: Remote,
}

impl HealthCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        let c = Client::builder(&self.remote.url).timeout(std::time::Duration::from_secs(3)).connect_timeout(std::time::Duration::from_secs(2)).build()?;
        c.health(self.ready).await.with_context(|| format!("{} is not {}", self.remote.url, if self.ready { "ready" } else { "healthy" }))?;
        Ok(())
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  cairn stores list\n  cairn stores create shop\n  cairn stores info shop\n  cairn stores delete shop --yes")]
pub struct StoresCmd {
    #[command(subcommand)]
    cmd: Stores,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Subcommand)]
enum Stores {
    /// The names of the stores, one a line.
    List,
    /// Create a store (nothing happens if it exists).
    Create { name: String },
    /// Delete a store and every object in it.
    Delete {
        name: String,
        /// Yes, delete it: there is no undo.
        #[arg(long)]
        yes: bool,
    },
    /// A store's info as JSON: next seq, version, segments, ...
    Info { name: String },
    /// Show a store's retention, or change it (flags not given keep their
    /// value). Truncating deletes events for good.
    #[command(after_help = "Examples:
  cairn stores retention shop
  cairn stores retention shop --max-age 30d
  cairn stores retention shop --truncate-before 1000000 --yes
  cairn stores retention shop --no-max-age")]
    Retention {
        name: String,
        /// Truncate the events before this seq (reads before it then
        /// answer 410 truncated; the first seq never moves back).
        #[arg(long)]
        truncate_before: Option<u64>,
        /// Drop whole objects whose newest event is older than this
        /// (`30d`, `12h`, `90min`).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "no_max_age")]
        max_age: Option<std::time::Duration>,
        /// Keep events whatever their age.
        #[arg(long)]
        no_max_age: bool,
        /// Yes, truncate: there is no undo.
        #[arg(long)]
        yes: bool,
    },
    /// Show what of a store's history is sealed into archives, or change
    /// it (flags not given keep their value). Reads answer the same.
    #[command(after_help = "Examples:
  cairn stores tiering shop
  cairn stores tiering shop --seal-after 7d
  cairn stores tiering shop --seal-before 5000000
  cairn stores tiering shop --off")]
    Tiering {
        name: String,
        /// Seal history before this seq.
        #[arg(long, conflicts_with = "off")]
        seal_before: Option<u64>,
        /// Seal history whose newest event is older than this (`7d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "off")]
        seal_after: Option<std::time::Duration>,
        /// Seal nothing more (what is sealed stays in archives).
        #[arg(long)]
        off: bool,
    },
}

impl StoresCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        let c = self.remote.client()?;
        let mut out = std::io::stdout().lock();
        match self.cmd {
            Stores::List => {
                for name in c.list_stores().await? {
                    writeln!(out, "{name}")?;
                }
            }
            Stores::Create { name } => {
                let created = c.store(&name).create().await.with_context(|| format!("store {name}"))?;
                writeln!(out, "{} store {name}", if created { "created" } else { "already had" })?;
            }
            Stores::Delete { name, yes } => {
                if !yes {
                    bail!("deleting store {name} removes all its events and docs for good: add --yes");
                }
                c.store(&name).delete().await.with_context(|| format!("store {name}"))?;
                writeln!(out, "deleted store {name}")?;
            }
            Stores::Info { name } => {
                let i = c.store(&name).info().await.with_context(|| format!("store {name}"))?;
                writeln!(out, "{}", serde_json::to_string_pretty(&i)?)?;
            }
            Stores::Tiering { name, seal_before, seal_after, off } => {
                let store = c.store(&name);
                let mut t = store.tiering().await.with_context(|| format!("store {name}"))?;
                if off || seal_before.is_some() || seal_after.is_some() {
                    if off {
                        t = cairn_client::Tiering::default();
                    }
                    t.seal_before = seal_before.or(t.seal_before);
                    t.seal_after_ms = seal_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).or(t.seal_after_ms);
                    t = store.set_tiering(&t).await.with_context(|| format!("store {name}"))?;
                }
                writeln!(out, "{}", serde_json::to_string_pretty(&t)?)?;
            }
            Stores::Retention { name, truncate_before, max_age, no_max_age, yes } => {
                let store = c.store(&name);
                let now = store.retention().await.with_context(|| format!("store {name}"))?;
                let r = if truncate_before.is_none() && max_age.is_none() && !no_max_age {
                    now
                } else {
                    if truncate_before.is_some_and(|t| t > now.first_seq) && !yes {
                        bail!("truncating store {name} before seq {} deletes {} events for good: add --yes", truncate_before.unwrap_or(0), truncate_before.unwrap_or(0) - now.first_seq);
                    }
                    let max_age_ms = match (max_age, no_max_age) {
                        (Some(d), _) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        (None, true) => None,
                        (None, false) => now.max_age_ms,
                    };
                    store.set_retention(truncate_before.or(now.truncate_before), max_age_ms).await.with_context(|| format!("store {name}"))?
                };
                writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
            }
        }
        Ok(())
    }
}

/// `any`, `no_stream`, `stream_exists` or a revision.
fn expectation(s: &str) -> Result<Expected, String> {
    match s {
        "any" => Ok(Expected::Any),
        "no_stream" => Ok(Expected::NoStream),
        "stream_exists" => Ok(Expected::StreamExists),
        n => n.parse().map(Expected::Revision).map_err(|_| format!("{s:?} is not any, no_stream, stream_exists or a revision")),
    }
}

fn tag(s: &str) -> Result<(String, String), String> {
    match s.split_once(['=', ':']) {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn append shop order-1 -t OrderPlaced -d '{\"total\":12}' --expected no_stream
  cairn append shop order-1 -t Note -d '\"first\"' -d '\"second\"'     two events, one batch
  cairn append shop order-1 --file events.ndjson --expected 4
  printf '%s\\n' '{\"stream\":\"a\",\"type\":\"T\",\"data\":1}' | cairn append shop

An NDJSON line is an event as the API takes it:
  {\"stream\"?, \"type\", \"data\" | \"data_b64\", \"tags\"?, \"id\"?, \"timestamp\"?}
Without STREAM every event names its stream. The batch is one atomic append;
for large files use `cairn import`. Prints the answer as JSON.")]
pub struct AppendCmd {
    store: String,
    /// The stream (else each event names its own).
    stream: Option<String>,
    /// The type of the --data events.
    #[arg(short = 't', long = "type")]
    event_type: Option<String>,
    /// An event's data, JSON; repeat for several events.
    #[arg(short = 'd', long = "data")]
    data: Vec<String>,
    /// A tag of the --data events, KEY=VALUE; repeatable.
    #[arg(long = "tag", value_parser = tag)]
    tags: Vec<(String, String)>,
    /// Events as NDJSON (or a JSON array) from this file; `-` is stdin (the
    /// default when there is no --data and stdin is not a terminal).
    #[arg(short, long)]
    file: Option<String>,
    /// What the stream must look like: any, no_stream, stream_exists or a revision.
    #[arg(long, value_parser = expectation, default_value = "any")]
    expected: Expected,
    #[command(flatten)]
    remote: Remote,
}

/// One event as the API takes it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    stream: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    data: Option<Box<serde_json::value::RawValue>>,
    data_b64: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    id: Option<uuid::Uuid>,
    timestamp: Option<i64>,
    // What `export` writes besides: ignored on the way in.
    #[serde(default, rename = "seq")]
    _seq: Option<u64>,
    #[serde(default, rename = "revision")]
    _revision: Option<u64>,
}

impl EventIn {
    pub fn into_event(self) -> anyhow::Result<EventData> {
        let mut e = match (self.data, self.data_b64) {
            (Some(_), Some(_)) => bail!("an event has both data and data_b64"),
            (None, Some(b)) => EventData::binary(self.event_type, base64::engine::general_purpose::STANDARD.decode(b).context("data_b64 is not base64")?),
            (Some(d), None) => EventData::raw_json(self.event_type, d.get())?,
            (None, None) => EventData::raw_json(self.event_type, "null")?,
        };
        for (k, v) in self.tags {
            e = e.tag(k, v);
        }
        if let Some(s) = self.stream {
            e = e.stream(s);
        }
        if let Some(id) = self.id {
            e = e.id(id);
        }
        if let Some(t) = self.timestamp {
            e = e.timestamp(t);
        }
        Ok(e)
    }
}

/// Parses NDJSON (one event a line) or a JSON array of events.
pub fn parse_events(text: &str, what: &str) -> anyhow::Result<Vec<EventData>> {
    if text.trim_start().starts_with('[') {
        let evs: Vec<EventIn> = serde_json::from_str(text).with_context(|| format!("{what}: not a JSON array of events"))?;
        return evs.into_iter().map(EventIn::into_event).collect();
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: EventIn = serde_json::from_str(line).with_context(|| format!("{what}, line {}", n + 1))?;
        out.push(e.into_event().with_context(|| format!("{what}, line {}", n + 1))?);
    }
    Ok(out)
}

pub fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
    }
}

impl AppendCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        let mut events = Vec::new();
        if !self.data.is_empty() {
            let Some(t) = &self.event_type else { bail!("--data needs --type (-t)") };
            for d in &self.data {
                let mut e = EventData::raw_json(t.as_str(), d.as_str()).with_context(|| format!("--data {d:?}"))?;
                for (k, v) in &self.tags {
                    e = e.tag(k.as_str(), v.as_str());
                }
                events.push(e);
            }
        }
        let file = match (&self.file, self.data.is_empty()) {
            (Some(f), _) => Some(f.clone()),
            (None, true) if !std::io::stdin().is_terminal() => Some("-".to_string()),
            (None, true) => bail!("nothing to append: give --data, --file, or NDJSON on stdin"),
            (None, false) => None,
        };
        if let Some(f) = file {
            events.extend(parse_events(&read_input(&f)?, if f == "-" { "stdin" } else { &f })?);
        }
        if events.is_empty() {
            bail!("nothing to append: no events");
        }
        let store = self.remote.client()?.store(&self.store);
        let answer = match &self.stream {
            Some(stream) => serde_json::to_value(store.append(stream, events, self.expected).await?)?,
            None => {
                if self.expected != Expected::Any {
                    bail!("--expected needs STREAM (without it, each event names its stream)");
                }
                if let Some(i) = events.iter().position(|e| e.stream_name().is_none()) {
                    bail!("event {} names no stream: give STREAM or a \"stream\" in every event", i + 1);
                }
                serde_json::to_value(store.append_many(events, []).await?)?
            }
        };
        println!("{answer}");
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A table on a terminal, NDJSON otherwise.
    Auto,
    Ndjson,
    Table,
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn read shop                                   the whole store
  cairn read shop --from 1000 --limit 10
  cairn read shop order-1 --backward --limit 5      a stream, newest first
  cairn read shop --tag region:eu
  cairn read shop --follow                          then live, until Ctrl-C
  cairn read shop order-1 --from 3 --follow")]
pub struct ReadCmd {
    store: String,
    /// Read one stream (positions are revisions) instead of the store (seqs).
    stream: Option<String>,
    /// The first seq (or revision) to read.
    #[arg(long)]
    from: Option<u64>,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Newest first (streams only).
    #[arg(long)]
    backward: bool,
    /// Only events with this tag, KEY:VALUE.
    #[arg(long, value_parser = tag)]
    tag: Option<(String, String)>,
    /// After the last event, wait for new ones and print them as they come.
    #[arg(short = 'F', long)]
    follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

impl ReadCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.follow && self.backward {
            bail!("--follow reads forwards: drop --backward");
        }
        if self.follow && (self.limit.is_some() || self.tag.is_some()) {
            bail!("--follow takes neither --limit nor --tag");
        }
        if self.backward && self.stream.is_none() {
            bail!("--backward is for streams: a store reads forwards");
        }
        let table = match self.format {
            Format::Auto => std::io::stdout().is_terminal(),
            Format::Table => true,
            Format::Ndjson => false,
        };
        let store = self.remote.client()?.store(&self.store);
        let mut out = Output::new(table);
        if self.follow {
            let mut sub = match &self.stream {
                Some(s) => store.subscribe_stream(s, self.from.unwrap_or(0)),
                None => store.subscribe(self.from.unwrap_or(0)),
            };
            loop {
                match sub.next().await? {
                    Message::Event(e) => out.event(&e)?,
                    Message::CaughtUp { .. } => out.flush()?,
                }
            }
        }
        let tag = self.tag.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
        let mut events = match &self.stream {
            None => store.read_with(self.from.unwrap_or(0), self.limit, tag),
            Some(s) => {
                let mut how = if self.backward { StreamRead::backward() } else { StreamRead::forward() };
                if let Some(f) = self.from {
                    how = how.from(f);
                }
                if let Some(l) = self.limit {
                    how = how.limit(l);
                }
                if let Some((k, v)) = tag {
                    how = how.tag(k, v);
                }
                store.read_stream(s, how)
            }
        };
        while let Some(e) = events.try_next().await? {
            out.event(&e)?;
        }
        out.flush()
    }
}

/// Events as NDJSON lines, or as a table for people.
struct Output {
    table: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    header: bool,
}

impl Output {
    fn new(table: bool) -> Output {
        Output { table, out: std::io::BufWriter::new(std::io::stdout()), header: false }
    }

    fn event(&mut self, e: &RecordedEvent) -> anyhow::Result<()> {
        if !self.table {
            // Serialised first, so a closed pipe surfaces as an io::Error.
            let mut line = serde_json::to_vec(e)?;
            line.push(b'\n');
            self.out.write_all(&line)?;
            return Ok(());
        }
        if !self.header {
            self.header = true;
            writeln!(self.out, "{:>8}  {:<24}  {:>6}  {:<20}  {:<24}  DATA", "SEQ", "STREAM", "REV", "TYPE", "TIME (UTC)")?;
        }
        let data = if e.binary { format!("<{} bytes>", e.data.len()) } else { String::from_utf8_lossy(&e.data).into_owned() };
        let tags: String = e.tags.iter().map(|(k, v)| format!(" #{k}:{v}")).collect();
        writeln!(self.out, "{:>8}  {:<24}  {:>6}  {:<20}  {:<24}  {}{tags}", e.seq, clip(&e.stream, 24), e.revision, clip(&e.event_type, 20), utc(e.timestamp), clip(&data, 80))?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.out.flush()?)
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn utc(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}", rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000)
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn doc get shop view                          the body on stdout, the ETag on stderr
  cairn doc put shop view --data '{\"n\":1}' --if-absent
  cairn doc put shop view --file view.json --if-match 1a2b3c
  cairn doc delete shop view --if-match 1a2b3c")]
pub struct DocCmd {
    #[command(subcommand)]
    cmd: Doc,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Subcommand)]
enum Doc {
    /// Print a doc (its ETag goes to stderr).
    Get { store: String, key: String },
    /// Write a doc from --data, --file or stdin; prints its new ETag.
    Put {
        store: String,
        key: String,
        #[arg(short, long, conflicts_with = "file")]
        data: Option<String>,
        /// `-` is stdin (the default without --data).
        #[arg(short, long)]
        file: Option<String>,
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Only if the doc is at this ETag.
        #[arg(long, conflicts_with = "if_absent")]
        if_match: Option<String>,
        /// Only if there is no such doc.
        #[arg(long)]
        if_absent: bool,
    },
    /// Delete a doc.
    Delete {
        store: String,
        key: String,
        /// Only if the doc is at this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
}

impl DocCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        let c = self.remote.client()?;
        match self.cmd {
            Doc::Get { store, key } => match c.store(&store).get_doc(&key).await? {
                Some(d) => {
                    std::io::stdout().lock().write_all(&d.body)?;
                    eprintln!("etag: {}", d.etag);
                }
                None => bail!("no doc {key:?} in store {store}"),
            },
            Doc::Put { store, key, data, file, content_type, if_match, if_absent } => {
                let body = match (data, file) {
                    (Some(d), _) => d.into_bytes(),
                    (None, Some(f)) if f != "-" => std::fs::read(&f).with_context(|| format!("reading {f}"))?,
                    (None, _) => {
                        let mut b = Vec::new();
                        std::io::stdin().read_to_end(&mut b).context("reading stdin")?;
                        b
                    }
                };
                let pre = match (if_match, if_absent) {
                    (Some(t), _) => Precondition::Matches(t.trim_matches('"').to_string()),
                    (None, true) => Precondition::Absent,
                    (None, false) => Precondition::None,
                };
                let etag = c.store(&store).put_doc(&key, body, &content_type, pre).await?;
                println!("{etag}");
            }
            Doc::Delete { store, key, if_match } => {
                if !c.store(&store).delete_doc(&key, if_match.as_deref().map(|t| t.trim_matches('"'))).await? {
                    bail!("no doc {key:?} in store {store}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_the_epoch_and_leap_days() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(951_782_400_000 + 3_723_004), "2000-02-29 01:02:03.004");
        assert_eq!(super::utc(1_798_761_600_000), "2027-01-01 00:00:00.000");
        assert_eq!(super::utc(-1), "1969-12-31 23:59:59.999");
    }
}

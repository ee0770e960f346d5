//! Two OS processes appending to one store in one directory at once: every
//! acknowledged event is stored exactly once at its seq, with no gaps.
//!
//! The test binary runs itself twice as the children (the ignored test
//! `child_appender`, selected by name, with its settings in the environment).

use std::collections::HashSet;
use std::sync::Arc;

use cairn_engine::{AppendError, Engine};
use object_store::local::LocalFileSystem;

use crate::{batch, ev, read_all, test_config, with_id};

const BATCHES: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by two_processes_append_to_one_directory as a child process"]
async fn child_appender() {
    let dir = std::env::var("CAIRN_CHILD_DIR").expect("CAIRN_CHILD_DIR");
    let me: u64 = std::env::var("CAIRN_CHILD_ID").expect("CAIRN_CHILD_ID").parse().expect("id");
    let fs = LocalFileSystem::new_with_prefix(&dir).expect("dir").with_fsync(true);
    let engine = Engine::new(Arc::new(fs), test_config());
    for b in 0..BATCHES {
        let id = (u128::from(me) << 64) | u128::from(b);
        let stream = format!("s{}", b % 3);
        let bt = batch(vec![with_id(ev(&stream, "T", &id.to_string()), id)]);
        loop {
            match engine.append("p", bt.clone()).await {
                Ok(o) => {
                    println!("ACK {} {id}", o.first_seq);
                    break;
                }
                Err(AppendError::CommitOutcomeUnknown | AppendError::Overloaded { .. } | AppendError::Storage(_)) => continue,
                Err(e) => panic!("child {me}: {e:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_append_to_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap().with_fsync(true));
    let engine = Engine::new(fs, test_config());
    engine.create_store("p").await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (1..=2)
        .map(|id| {
            tokio::process::Command::new(&exe)
                .args(["processes::child_appender", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env("CAIRN_CHILD_DIR", dir.path())
                .env("CAIRN_CHILD_ID", id.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut acks: Vec<(u64, String)> = Vec::new();
    for c in children {
        let out = c.wait_with_output().await.unwrap();
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stdout));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // libtest may print its own words at the start of a line.
            if let Some(rest) = line.find("ACK ").map(|i| &line[i + 4..]) {
                let (seq, id) = rest.split_once(' ').unwrap();
                acks.push((seq.parse().unwrap(), id.to_string()));
            }
        }
    }
    assert_eq!(acks.len() as u64, 2 * BATCHES, "every batch was acknowledged");
    let all = read_all(&engine, "p").await;
    assert_eq!(all.len() as u64, 2 * BATCHES, "every event stored exactly once");
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..2 * BATCHES).collect::<Vec<_>>());
    let mut seqs = HashSet::new();
    for (seq, id) in &acks {
        assert!(seqs.insert(*seq), "seq {seq} acknowledged twice");
        assert_eq!(all[*seq as usize].event.data.as_ref(), id.as_bytes(), "acknowledged event at its seq");
    }
    for s in 0..3 {
        let revs: Vec<u64> = all.iter().filter(|r| *r.event.stream == *format!("s{s}")).map(|r| r.event.revision).collect();
        assert_eq!(revs, (0..revs.len() as u64).collect::<Vec<_>>());
    }
}

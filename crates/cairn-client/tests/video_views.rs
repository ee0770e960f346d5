//! The seed's video-views exercise: the costs of its four strategies.
#![allow(clippy::unwrap_used)]

#[path = "../examples/video_views.rs"]
mod video_views;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_strategies_cost_what_the_seed_says() {
    let node = video_views::node::Node::memory().await;
    let outcomes = video_views::run(&node.url).await.unwrap();
    for o in &outcomes {
        println!("{}", video_views::line(o, outcomes[0].cost_tenths));
        assert_eq!(o.counts.views, o.expected, "{}: the view counts every view once", o.strategy);
        assert_eq!(o.counts.views.values().sum::<u64>(), 3600);
    }
    let cost: Vec<u64> = outcomes.iter().map(|o| o.cost_tenths).collect();
    assert_eq!(cost[0], 72_500, "checkpoint after every event: 7250");
    assert_eq!(cost[1], 72_000, "checkpoint after handled events: 7200");
    // 36 batches of historic events (1 + 0.1 per view + 0.1 for the
    // checkpoint) and 100 live batches of 1.2: 509.6, 93% less.
    assert_eq!(cost[2], 5_096);
    let saved = 1.0 - cost[2] as f64 / cost[0] as f64;
    assert!((0.925..0.935).contains(&saved), "about 93% saved: {saved}");
    assert!(cost[3] < cost[2] / 2, "aggregation saves more than half again: {cost:?}");
    let checkpoints: Vec<_> = outcomes.iter().map(|o| o.counts.checkpoint).collect();
    assert_eq!(checkpoints, vec![Some(3649), Some(3649), Some(3649), Some(3649)]);
}

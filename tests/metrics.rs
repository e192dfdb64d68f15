//! The metrics of the process that runs plans, served by the one-call Prometheus exporter:
//! attempts by outcome with their durations, retries, timeouts, store commits, plans started,
//! ended and running. One process, one recorder: this file holds one test.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use coercion::prelude::*;
use coercion::testing::{FakeAction, FakeReq, Fakes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/prometheus.rs"]
mod prometheus;
use prometheus::sample;

async fn scrape(addr: SocketAddr) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_metrics_are_served_for_prometheus() {
    // An address in use is refused with an error, and installs nothing.
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let err = coercion::metrics::install_prometheus(taken.local_addr().unwrap())
        .expect_err("the address is in use");
    assert!(!err.to_string().is_empty());
    let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    coercion::metrics::install_prometheus(addr).unwrap();

    let plan = Plan::builder("measured")
        .block(
            Block::builder("b")
                .sequence(
                    Sequence::builder("flaky").action(
                        ActionSpec::new::<FakeAction>("twice failed", FakeReq::fail_times(2))
                            .retries(2),
                    ),
                )
                .sequence(
                    Sequence::builder("slow").action(
                        ActionSpec::new::<FakeAction>(
                            "too slow",
                            FakeReq::sleep(Duration::from_secs(60)),
                        )
                        .timeout(Duration::from_millis(50)),
                    ),
                )
                .tolerated_failures(Tolerance::Unlimited),
        )
        .build();
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .in_memory()
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(done.status(), Status::Completed);

    let page = scrape(addr).await;
    let plugin = "plugin=\"coercion.testing/action\"";
    let attempts = |outcome: &str| {
        sample(
            &page,
            &format!("coercion_attempt_duration_seconds_count{{{plugin},outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(attempts("failed"), 2.0);
    assert_eq!(attempts("ok"), 1.0);
    assert_eq!(attempts("timeout"), 1.0);
    // A histogram with coercion's buckets, not a summary; the timed-out attempt lasted its
    // timeout.
    assert_eq!(
        sample(
            &page,
            &format!(
                "coercion_attempt_duration_seconds_bucket{{{plugin},outcome=\"timeout\",le=\"0.01\"}}"
            )
        ),
        0.0
    );
    assert_eq!(
        sample(
            &page,
            &format!(
                "coercion_attempt_duration_seconds_bucket{{{plugin},outcome=\"timeout\",le=\"0.05\"}}"
            )
        ),
        0.0
    );
    assert_eq!(
        sample(
            &page,
            &format!(
                "coercion_attempt_duration_seconds_bucket{{{plugin},outcome=\"timeout\",le=\"60\"}}"
            )
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            &format!("coercion_attempt_retries_total{{{plugin}}}")
        ),
        2.0
    );
    assert_eq!(
        sample(
            &page,
            &format!("coercion_attempt_timeouts_total{{{plugin}}}")
        ),
        1.0
    );
    assert_eq!(sample(&page, "coercion_plans_started_total"), 1.0);
    assert_eq!(
        sample(&page, "coercion_plans_ended_total{status=\"Completed\"}"),
        1.0
    );
    assert_eq!(sample(&page, "coercion_plans_running"), 0.0);
    // At least the plan's start, each of the four attempts' start, and the plan's end.
    assert!(sample(&page, "coercion_store_commit_seconds_count") >= 6.0);
    assert!(page.contains("coercion_store_commit_seconds_bucket{le=\"0.00005\"}"));
}

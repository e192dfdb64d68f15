//! Telling a team without polling: the `coercion/webhook` plugin in a plan's deferred batch,
//! and `on_plan_end`, which reports every plan's end once — here through a webhook received by
//! a local HTTP server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coercion::plugins::{Webhook, WebhookReq};
use coercion::prelude::*;
use coercion::testing::{FakeAction, FakeReq, Fakes};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// An HTTP server on loopback that answers 200 to every request and hands over each one's
/// path and JSON body.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, serde_json::Value)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let mut length = 0;
                loop {
                    line.clear();
                    stream.read_line(&mut line).await.unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                let _ = tx.send((path, serde_json::from_slice(&body).unwrap()));
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await
                    .unwrap();
            });
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_tell_a_channel_and_on_plan_end_reports_each_end_once() {
    let (url, mut received) = receiver().await;
    let ended: Arc<Mutex<Vec<(PlanId, Status)>>> = Arc::default();
    let hook_url = format!("{url}/ended");
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .in_memory()
        .registry(fakes.registry().with(Webhook::default()).unwrap())
        .on_plan_end({
            let ended = ended.clone();
            move |plan| {
                ended.lock().unwrap().push((plan.id(), plan.status()));
                let req = WebhookReq::slack(
                    &hook_url,
                    format!("{}: {}", plan.name(), plan.status_label()),
                );
                tokio::spawn(async move { Webhook::default().send(&req).await.unwrap() });
            }
        })
        .on_plan_end(|_| panic!("a hook that panics stops nothing"))
        .build()
        .await
        .unwrap();

    let plan = |name: &str, req: FakeReq| {
        Plan::builder(name)
            .block(
                Block::builder("b").sequence(Sequence::builder("s").action(ActionSpec::new::<
                    FakeAction,
                >(
                    "a", req
                ))),
            )
            .deferred(
                DeferredBatch::builder("tell the channel", When::OnFailure).action(
                    ActionSpec::new::<Webhook>(
                        "post",
                        WebhookReq::json(
                            format!("{url}/failed"),
                            serde_json::json!({ "text": format!("{name} failed"), "plan": name }),
                        ),
                    )
                    .retries(2),
                ),
            )
            .build()
    };
    let ok = ws.run(plan("deploy", FakeReq::ok())).await.unwrap();
    assert_eq!(
        ended.lock().unwrap().as_slice(),
        [(ok.id(), Status::Completed)],
        "the hooks ran before `run` returned"
    );
    let failed = ws
        .run(plan("migrate", FakeReq::fail_permanently()))
        .await
        .unwrap();
    let stopped = ws
        .submit(plan("drain", FakeReq::wait_for_cancel()))
        .await
        .unwrap();
    ws.start(stopped).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.stop(stopped).await.unwrap();
    let stopped = ws.wait(stopped).await.unwrap();
    assert_eq!(failed.status(), Status::Failed);
    assert_eq!(stopped.status(), Status::Stopped);
    // The deferred webhook action of the failed plan ran and succeeded.
    assert_eq!(failed.deferred()[0].status(), Status::Completed);

    let mut got = Vec::new();
    // Three ends, and the deferred webhooks of the failed plan and of the stopped one (a stop
    // runs `OnFailure` work too).
    while got.len() < 5 {
        let next = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("every webhook arrives")
            .unwrap();
        got.push(next);
    }
    got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.to_string().cmp(&b.1.to_string())));
    let texts: Vec<(&str, &str)> = got
        .iter()
        .map(|(path, body)| (path.as_str(), body["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        [
            ("/ended", "deploy: Completed"),
            ("/ended", "drain: Stopped"),
            ("/ended", "migrate: Failed"),
            ("/failed", "drain failed"),
            ("/failed", "migrate failed"),
        ]
    );
    assert_eq!(got[4].1["plan"], "migrate", "the JSON is sent as given");
    let mut ends = ended.lock().unwrap().clone();
    ends.sort();
    let mut want = vec![
        (ok.id(), Status::Completed),
        (failed.id(), Status::Failed),
        (stopped.id(), Status::Stopped),
    ];
    want.sort();
    assert_eq!(ends, want, "each end reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_gate_tells_a_channel_when_a_plan_starts_waiting_for_approval() {
    use coercion::plugins::{Gate, GateReq};
    let (url, mut received) = receiver().await;
    let hook_url = format!("{url}/gate");
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .in_memory()
        .registry(fakes.registry().with(Gate).unwrap())
        .on_gate(move |plan, gate| {
            let text = format!(
                "{}: {} (approvers: {}) — coercion approve {} {:?}",
                plan.name(),
                gate.message,
                gate.approvers.join(", "),
                plan.id(),
                gate.name
            );
            let req = WebhookReq::slack(&hook_url, text);
            tokio::spawn(async move { Webhook::default().send(&req).await.unwrap() });
        })
        .on_gate(|_, _| panic!("a hook that panics stops nothing"))
        .build()
        .await
        .unwrap();
    let plan = Plan::builder("release")
        .block(
            Block::builder("fleet")
                .pre_checks(
                    Checks::builder().action(
                        CheckSpec::new::<Gate>(
                            "promote",
                            GateReq::new("Ship v2?").approvers(["alice"]),
                        )
                        .timeout(Duration::from_secs(600)),
                    ),
                )
                .sequence(
                    Sequence::builder("s")
                        .action(ActionSpec::new::<FakeAction>("a", FakeReq::ok())),
                ),
        )
        .build();
    let id = ws.submit_and_start(plan).await.unwrap();
    let (path, body) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the gate hook posted within 10 s")
        .unwrap();
    assert_eq!(path, "/gate");
    assert_eq!(
        body["text"],
        format!("release: Ship v2? (approvers: alice) — coercion approve {id} \"promote\"")
    );
    ws.decide(id, "promote", true, "alice", None).await.unwrap();
    assert_eq!(ws.wait(id).await.unwrap().status(), Status::Completed);
    assert!(received.try_recv().is_err(), "told once");
}

//! Approval gates (`coercion/gate`): a plan waits at a gate until a person approves or rejects
//! it, or until the gate's timeout; each decision is kept in the plan with who took it, when and
//! why; a rejection or a timeout fails the block, so `OnFailure` batches run.

use std::time::Duration;

use coercion::plugins::{Gate, GateReq, GateResp};
use coercion::prelude::*;
use coercion::testing::{FakeAction, FakeReq};

#[path = "../coercion/tests/cli_support/gated.rs"]
mod gated;
use gated::gated_plan;

async fn waiting(ws: &Workstream, id: PlanId) -> Plan {
    for _ in 0..500 {
        let plan = ws.read(id).await.unwrap();
        if !plan.waiting_gates().is_empty() {
            return plan;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("plan {id} never reached its gate");
}

fn gate_action(plan: &Plan) -> ActionView<'_> {
    plan.blocks()[1]
        .checks()
        .get(coercion::workflow::CheckSlot::Pre)
        .unwrap()
        .actions()[0]
}

#[tokio::test]
async fn an_approved_gate_lets_the_plan_through_and_records_who() {
    let registry = coercion::testing::registry();
    let log = registry.instance::<FakeAction>().unwrap().log().clone();
    let ws = Workstream::in_memory(registry).await.unwrap();
    let id = ws
        .submit_and_start(gated_plan(&["alice"], Duration::from_secs(3600)))
        .await
        .unwrap();
    let plan = waiting(&ws, id).await;
    let gates = plan.waiting_gates();
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].name, "promote canary");
    assert!(
        gates[0]
            .to_string()
            .starts_with("waiting for approval: promote canary, since "),
        "{}",
        gates[0]
    );
    assert_eq!(log.tags(), vec!["canary".to_owned()], "the fleet waits");

    // Not an approver, not a gate: refused, nothing recorded.
    let err = ws
        .decide(id, "promote canary", true, "mallory (uid 1001)", None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"mallory (uid 1001) may not decide gate "promote canary" (approvers: alice)"#
    );
    let err = ws
        .decide(id, "promote", true, "alice", None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(r#"plan {id} has no gate named "promote" (its gates: "promote canary")"#)
    );

    let d = ws
        .decide(
            id,
            "promote canary",
            true,
            "alice (uid 1000)",
            Some("canary is healthy".into()),
        )
        .await
        .unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{done}");
    assert_eq!(log.tags(), vec!["canary".to_owned(), "fleet".to_owned()]);
    assert_eq!(done.decisions(), std::slice::from_ref(&d));
    let resp: GateResp = gate_action(&done).response::<Gate>().unwrap();
    assert_eq!(
        (resp.by.as_str(), resp.comment.as_deref()),
        ("alice (uid 1000)", Some("canary is healthy"))
    );
    assert!(done.waiting_gates().is_empty());
    // Decided once: a second decision is refused.
    let again = ws
        .decide(id, "promote canary", false, "alice", None)
        .await
        .unwrap_err();
    assert!(matches!(again, coercion::Error::NotRunning(_)), "{again}");
}

#[tokio::test]
async fn a_rejected_gate_fails_the_block_and_runs_the_rollback() {
    let registry = coercion::testing::registry();
    let log = registry.instance::<FakeAction>().unwrap().log().clone();
    let ws = Workstream::in_memory(registry).await.unwrap();
    let id = ws
        .submit_and_start(gated_plan(&[], Duration::from_secs(3600)))
        .await
        .unwrap();
    waiting(&ws, id).await;
    ws.decide(
        id,
        "promote canary",
        false,
        "bob",
        Some("error rate up".into()),
    )
    .await
    .unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Failed);
    assert_eq!(done.reason(), Reason::Block);
    let error = gate_action(&done).last_error().unwrap();
    assert!(
        error.message.starts_with("rejected: rejected by bob at "),
        "{}",
        error.message
    );
    assert!(
        error.message.ends_with(": error rate up"),
        "{}",
        error.message
    );
    assert_eq!(error.code, coercion::plugins::codes::REJECTED);
    assert_eq!(
        log.tags(),
        vec!["canary".to_owned(), "rollback".to_owned()],
        "no fleet; the rollback ran"
    );
    assert!(!done.decisions()[0].approved);
}

#[tokio::test]
async fn a_gate_nobody_decides_times_out() {
    let registry = coercion::testing::registry();
    let log = registry.instance::<FakeAction>().unwrap().log().clone();
    let ws = Workstream::in_memory(registry).await.unwrap();
    let done = ws
        .run(gated_plan(&[], Duration::from_millis(400)))
        .await
        .unwrap();
    assert_eq!(done.status(), Status::Failed);
    let error = gate_action(&done).last_error().unwrap();
    assert!(
        error
            .message
            .starts_with("nobody approved or rejected it within "),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .ends_with("(Promote <the> release to the fleet?)"),
        "{}",
        error.message
    );
    assert_eq!(error.code, coercion::plugins::codes::NOT_DECIDED);
    assert_eq!(log.tags(), vec!["canary".to_owned(), "rollback".to_owned()]);
    assert!(done.decisions().is_empty());
}

#[tokio::test]
async fn a_gate_is_decided_once_even_by_two_people_at_the_same_moment() {
    let ws = Workstream::in_memory(coercion::testing::registry())
        .await
        .unwrap();
    let id = ws
        .submit_and_start(gated_plan(&[], Duration::from_secs(3600)))
        .await
        .unwrap();
    waiting(&ws, id).await;
    let (a, b) = tokio::join!(
        ws.decide(id, "promote canary", true, "alice", None),
        ws.decide(id, "promote canary", false, "bob", None),
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one decision: {a:?} {b:?}");
    let refused = a.err().or(b.err()).unwrap().to_string();
    assert!(
        refused.starts_with(r#"gate "promote canary" was already approved by alice"#),
        "{refused}"
    );
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.decisions().len(), 1);
    assert_eq!(done.status(), Status::Completed);
}

#[tokio::test]
async fn a_gate_outside_pre_and_post_checks_is_refused_at_submit() {
    let plan = Plan::builder("odd")
        .block(
            Block::builder("b")
                .bypass_checks(Checks::builder().action(CheckSpec::new::<Gate>(
                    "skip?",
                    GateReq::new("Skip the block?"),
                )))
                .sequence(
                    Sequence::builder("s")
                        .action(ActionSpec::new::<FakeAction>("a", FakeReq::ok())),
                ),
        )
        .build();
    let ws = Workstream::in_memory(coercion::testing::registry())
        .await
        .unwrap();
    let Err(coercion::Error::Invalid(problems)) = ws.submit(plan).await else {
        panic!("refused");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].to_string().starts_with(r#"block[0] "b" / bypass_checks / action[0] "skip?": an approval gate cannot sit in bypass_checks"#),
        "{}",
        problems[0]
    );
}

#[tokio::test]
async fn a_relayed_request_cannot_decide_a_gate_that_names_its_approvers() {
    use coercion::control::{ControlRequest, handle};
    let ws = Workstream::in_memory(coercion::testing::registry())
        .await
        .unwrap();
    let id = ws
        .submit_and_start(gated_plan(&["alice"], Duration::from_secs(3600)))
        .await
        .unwrap();
    waiting(&ws, id).await;
    let relayed = ControlRequest::decide(true, id, "promote canary", None)
        .via("the web UI for 10.0.0.7:5000");
    let err = handle(&ws, &relayed, "alice (uid 1000)").await.unwrap_err();
    assert!(err.contains("names its approvers (alice), and a request relayed for someone else cannot prove who they are"), "{err}");
    // Sent by alice herself: accepted.
    let direct = ControlRequest::decide(true, id, "promote canary", Some("ok".into()));
    handle(&ws, &direct, "alice (uid 1000)").await.unwrap();
    assert_eq!(
        ws.wait(id).await.unwrap().decisions()[0].by,
        "alice (uid 1000)"
    );
}

//! The gated plan of the gate tests (`coercion/tests/cli.rs`, the browser test, the workspace's
//! `tests/gates.rs`): a canary, then the fleet behind the gate "promote canary", a rollback on
//! failure. The message holds markup, which every face must show as text.

use std::time::Duration;

use coercion::plugins::{Gate, GateReq};
use coercion::testing::{FakeAction, FakeReq};
use coercion::{ActionSpec, Block, CheckSpec, Checks, DeferredBatch, Plan, Sequence, When};

/// A canary block, a gate before the rest, a deferred batch that runs on failure.
pub fn gated_plan(approvers: &[&str], timeout: Duration) -> Plan {
    Plan::builder("gated rollout")
        .block(
            Block::builder("canary").sequence(Sequence::builder("host-0").action(
                ActionSpec::new::<FakeAction>("deploy", FakeReq::ok().tag("canary")),
            )),
        )
        .block(
            Block::builder("fleet")
                .pre_checks(
                    Checks::builder().action(
                        CheckSpec::new::<Gate>(
                            "promote canary",
                            GateReq::new("Promote <the> release to the fleet?")
                                .approvers(approvers.iter().copied()),
                        )
                        .timeout(timeout),
                    ),
                )
                .sequence(
                    Sequence::builder("host-1").action(ActionSpec::new::<FakeAction>(
                        "deploy",
                        FakeReq::ok().tag("fleet"),
                    )),
                ),
        )
        .deferred(
            DeferredBatch::builder("roll back", When::OnFailure).action(ActionSpec::new::<
                FakeAction,
            >(
                "roll back",
                FakeReq::ok().tag("rollback"),
            )),
        )
        .build()
}

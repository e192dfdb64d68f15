//! Rolling batches (`rolling { serial: [1, 5%, 25%] ... }` and `coercion::rolling::Rolling`):
//! the shapes they split hosts into, and how the engine runs them — batches one after another,
//! each with its own failure budget, so a failed canary stops every batch after it.

use coercion::rolling::{BatchSize, Rolling, batch_sizes};
use coercion::testing::{FakeAction, FakeCheck, FakeReq, Fakes, run_paused};
use coercion::{ActionSpec, CheckSpec, Checks, Plan, Reason, Sequence, Status, Tolerance, plan};
use proptest::prelude::*;

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("web-{i}")).collect()
}

/// A request that fails permanently for the hosts in `failing`, and succeeds elsewhere; tagged
/// with the host, so the call log says which hosts ran.
fn deploy(host: &str, failing: &[&str]) -> FakeReq {
    let req = if failing.contains(&host) {
        FakeReq::fail_permanently()
    } else {
        FakeReq::ok()
    };
    req.tag(host)
}

fn rollout(hosts: &[String], serial: Vec<BatchSize>, failing: &[&str]) -> Plan {
    plan! {
        name: "rollout",
        rolling {
            name: "web",
            serial: serial,
            concurrency: 5,
            tolerated_failures: 10%,
            for host in hosts {
                sequence {
                    name: host.clone(),
                    action { name: "deploy", plugin: FakeAction, request: deploy(host, failing) }
                }
            }
        }
    }
}

fn block_sizes(plan: &Plan) -> Vec<usize> {
    plan.blocks().iter().map(|b| b.sequences().len()).collect()
}

#[test]
fn a_canary_then_percentages_of_forty_hosts() {
    let hosts = hosts(40);
    let plan = plan! {
        name: "rollout",
        rolling {
            name: "web",
            serial: [1, 5%, 25%],
            for host in &hosts {
                sequence { name: host.clone(), action { name: "deploy", plugin: FakeAction, request: FakeReq::ok() } }
            }
        }
    };
    assert_eq!(block_sizes(&plan), [1, 2, 10, 10, 10, 7]);
    let names: Vec<&str> = plan.blocks().iter().map(|b| b.name()).collect();
    assert_eq!(
        names,
        [
            "web 1/6", "web 2/6", "web 3/6", "web 4/6", "web 5/6", "web 6/6"
        ]
    );
    assert_eq!(
        plan.blocks()[0].descr(),
        "batch 1 of 6: 1 of 40 hosts (serial 1)"
    );
    assert_eq!(
        plan.blocks()[5].descr(),
        "batch 6 of 6: 7 of 40 hosts (serial 25%)"
    );
    // Hosts keep their order across the batches.
    let order: Vec<&str> = plan
        .blocks()
        .iter()
        .flat_map(|b| b.sequences())
        .map(|s| s.name())
        .collect();
    assert_eq!(order, hosts);

    let rest = rollout(
        &hosts,
        vec![BatchSize::Count(1), BatchSize::Percent(10), BatchSize::Rest],
        &[],
    );
    assert_eq!(block_sizes(&rest), [1, 4, 35]);
    let one = rollout(&hosts[..1], vec![BatchSize::Count(1), BatchSize::Rest], &[]);
    assert_eq!(block_sizes(&one), [1]);
}

#[test]
fn every_batch_runs_in_order_when_all_goes_well() {
    let fakes = Fakes::new();
    let hosts = hosts(12);
    let plan = rollout(
        &hosts,
        vec![BatchSize::Count(1), BatchSize::Percent(25)],
        &[],
    );
    let done = run_paused(fakes.registry(), plan).unwrap();
    assert_eq!(done.status(), Status::Completed);
    assert!(
        done.blocks()
            .iter()
            .all(|b| b.status() == Status::Completed)
    );
    assert_eq!(block_sizes(&done), [1, 3, 3, 3, 2]);
    // Batches run one after another: the log holds the hosts batch by batch.
    let ran = fakes.action.log().tags();
    assert_eq!(ran.len(), 12);
    assert_eq!(ran[0], "web-1", "the canary runs first");
    for (batch, block) in done.blocks().iter().enumerate().skip(1) {
        let first = block.sequences()[0].name();
        let started = ran.iter().position(|h| h == first).unwrap();
        // Every host of the earlier batches ran before this batch's first host.
        let before: usize = done.blocks()[..batch]
            .iter()
            .map(|b| b.sequences().len())
            .sum();
        assert!(
            started >= before,
            "batch {batch} started too early: {ran:?}"
        );
    }
}

#[test]
fn a_failed_canary_stops_every_batch_after_it() {
    let fakes = Fakes::new();
    let hosts = hosts(40);
    let plan = rollout(
        &hosts,
        vec![
            BatchSize::Count(1),
            BatchSize::Percent(5),
            BatchSize::Percent(25),
        ],
        &["web-1"],
    );
    let done = run_paused(fakes.registry(), plan).unwrap();
    assert_eq!(done.status(), Status::Failed);
    assert_eq!(done.reason(), Reason::Block);
    assert_eq!(done.blocks()[0].status(), Status::Failed);
    for later in &done.blocks()[1..] {
        assert_eq!(later.status(), Status::NotStarted, "{}", later.name());
        assert!(
            later
                .sequences()
                .iter()
                .all(|s| s.status() == Status::NotStarted)
        );
    }
    // Only the canary's plugin was ever called.
    assert_eq!(fakes.action.log().tags(), ["web-1"]);
}

#[test]
fn the_tolerance_applies_to_each_batch_on_its_own() {
    // 10 hosts in [2, rest] with one failure tolerated per batch: the first batch loses one
    // host and goes on; the second loses two and stops the rollout.
    let fakes = Fakes::new();
    let hosts = hosts(10);
    let plan = plan! {
        name: "rollout",
        rolling {
            name: "web",
            serial: [2, rest],
            concurrency: 1,
            tolerated_failures: 1,
            for host in &hosts {
                sequence {
                    name: host.clone(),
                    action { name: "deploy", plugin: FakeAction, request: deploy(host, &["web-1", "web-5", "web-6"]) }
                }
            }
        }
    };
    let done = run_paused(fakes.registry(), plan).unwrap();
    assert_eq!(block_sizes(&done), [2, 8]);
    assert_eq!(done.blocks()[0].status(), Status::Completed);
    assert_eq!(done.blocks()[1].status(), Status::Failed);
    assert_eq!(done.status(), Status::Failed);
    assert_eq!(done.reason(), Reason::Block);
    // With concurrency 1 the second batch stops after its second failure (web-6).
    assert_eq!(
        fakes.action.log().tags(),
        ["web-1", "web-2", "web-3", "web-4", "web-5", "web-6"]
    );

    // A percentage is of each batch's hosts: 1 failure of 9 is 11 %, over 10 %...
    let serial = || vec![BatchSize::Count(1), BatchSize::Rest];
    let plan = rollout(&hosts, serial(), &["web-10"]);
    let done = run_paused(Fakes::new().registry(), plan).unwrap();
    assert_eq!(done.status(), Status::Failed);
    // ...and 1 failure of 19 is 5 %, within budget: the plan completes, the failure visible.
    let hosts = self::hosts(20);
    let done = run_paused(
        Fakes::new().registry(),
        rollout(&hosts, serial(), &["web-20"]),
    )
    .unwrap();
    assert_eq!(done.status(), Status::Completed);
    assert!(done.is_completed_with_failures());
    assert_eq!(done.failure_counts().failed_sequences, 1);
}

#[test]
fn checks_are_copied_into_every_batch() {
    let fakes = Fakes::new();
    let hosts = hosts(4);
    let plan = plan! {
        name: "rollout",
        rolling {
            name: "web",
            serial: [1, rest],
            pre_checks { action { name: "lb up", plugin: FakeCheck, request: FakeReq::ok().tag("pre") } }
            post_checks { action { name: "healthy", plugin: FakeCheck, request: FakeReq::ok().tag("post") } }
            for host in &hosts {
                sequence { name: host.clone(), action { name: "deploy", plugin: FakeAction, request: FakeReq::ok() } }
            }
        }
    };
    let done = run_paused(fakes.registry(), plan).unwrap();
    assert_eq!(done.status(), Status::Completed);
    assert_eq!(fakes.check.log().tags(), ["pre", "post", "pre", "post"]);
}

#[test]
fn the_builder_and_the_macro_build_the_same_plan() {
    let hosts = hosts(9);
    let percent = 20;
    let from_macro = plan! {
        name: "rollout",
        rolling {
            name: "web",
            descr: "the web tier",
            serial: [1, BatchSize::Percent(percent), rest],
            concurrency: 2,
            tolerated_failures: 10%,
            entrance_delay: 5s,
            post_checks { action { name: "healthy", plugin: FakeCheck, request: FakeReq::ok() } }
            for host in &hosts {
                sequence { name: host.clone(), action { name: "deploy", plugin: FakeAction, request: FakeReq::ok().tag(host) } }
            }
        }
    };
    let from_builder = Plan::builder("rollout")
        .rolling(
            Rolling::new(
                "web",
                [
                    BatchSize::Count(1),
                    BatchSize::Percent(percent),
                    BatchSize::Rest,
                ],
            )
            .descr("the web tier")
            .concurrency(2)
            .tolerated_failures(Tolerance::Percent(10))
            .entrance_delay(std::time::Duration::from_secs(5))
            .post_checks(
                Checks::builder().action(CheckSpec::new::<FakeCheck>("healthy", FakeReq::ok())),
            )
            .sequences(hosts.iter().map(|host| {
                Sequence::builder(host.clone()).action(ActionSpec::new::<FakeAction>(
                    "deploy",
                    FakeReq::ok().tag(host),
                ))
            })),
        )
        .build();
    assert_eq!(from_macro, from_builder);
    assert_eq!(block_sizes(&from_macro), [1, 1, 7]);
    assert_eq!(
        from_macro.blocks()[2].descr(),
        "the web tier; batch 3 of 3: 7 of 9 hosts (serial rest)"
    );
    // A rollout also splices into a plan as blocks.
    let rolling = Rolling::new("web", [BatchSize::Count(1), BatchSize::Rest]).sequences(
        hosts.iter().map(|host| {
            Sequence::builder(host.clone())
                .action(ActionSpec::new::<FakeAction>("deploy", FakeReq::ok()))
        }),
    );
    let spliced = plan! { name: "rollout", ..rolling.clone() };
    assert_eq!(spliced, Plan::builder("rollout").rolling(rolling).build());
    assert_eq!(block_sizes(&spliced), [1, 8]);
}

#[test]
fn invalid_sizes_and_no_hosts_are_reported_at_submit() {
    let registry = Fakes::new().registry();
    let problems = |plan: &Plan| -> Vec<String> {
        coercion::workflow::validate_plan(plan, &registry)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let hosts = hosts(3);
    for (serial, message) in [
        (vec![], "serial []: serial is empty"),
        (
            vec![BatchSize::Count(1), BatchSize::Count(0)],
            "serial [1, 0]: batch 2's size is 0: a batch needs at least one host",
        ),
        (
            vec![BatchSize::Percent(120)],
            "serial [120%]: batch 1's size is 120%: a batch cannot hold more than 100% of the hosts",
        ),
        (
            vec![BatchSize::Rest, BatchSize::Count(1)],
            "serial [rest, 1]: batch 2 follows `rest`",
        ),
    ] {
        let plan = rollout(&hosts, serial, &[]);
        let found = problems(&plan);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("block[0] \"web\": ") && found[0].contains(message),
            "{found:?}"
        );
    }
    let found = problems(&rollout(&[], vec![BatchSize::Count(1)], &[]));
    assert!(
        found
            .iter()
            .any(|p| p.contains("the rolling rollout has no hosts")),
        "{found:?}"
    );
}

proptest! {
    #[test]
    fn batch_sizes_place_every_host_once_in_order(
        total in 0usize..500,
        serial in prop::collection::vec(
            prop_oneof![
                (1usize..50).prop_map(BatchSize::Count),
                (1u8..=100).prop_map(BatchSize::Percent),
            ],
            1..5,
        ),
        rest in any::<bool>(),
    ) {
        let mut serial = serial;
        if rest {
            serial.push(BatchSize::Rest);
        }
        let sizes = batch_sizes(total, &serial).unwrap();
        prop_assert_eq!(sizes.iter().sum::<usize>(), total);
        prop_assert!(sizes.iter().all(|&n| n > 0));
        // Each batch is what its size asks for, capped by the hosts left; the last size repeats.
        let mut left = total;
        for (i, &n) in sizes.iter().enumerate() {
            let size = serial.get(i).copied().unwrap_or(*serial.last().unwrap());
            let wanted = match size {
                BatchSize::Count(c) => c,
                BatchSize::Percent(p) => (total * p as usize / 100).max(1),
                BatchSize::Rest => left,
            };
            prop_assert_eq!(n, wanted.min(left));
            left -= n;
        }
    }
}

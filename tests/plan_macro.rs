//! `plan!`, `block!` and `sequence!` build exactly the plans the typed builder builds: each test
//! writes one plan both ways and compares them whole (`Plan: PartialEq` covers structure, names,
//! descriptions, keys, plugins, kinds, serialized requests, timeouts, retries, delays,
//! tolerances and deferred batches).

use std::time::Duration;

use coercion::testing::{FakeAction, FakeCheck, FakeReq};
use coercion::{
    ActionSpec, Block, BlockBuilder, CheckSpec, Checks, DeferredBatch, Plan, Sequence,
    SequenceBuilder, Tolerance, When, block, plan, sequence,
};

fn act(name: &str, tag: &str) -> ActionSpec {
    ActionSpec::new::<FakeAction>(name, FakeReq::ok().tag(tag))
}

fn check(name: &str, tag: &str) -> CheckSpec {
    CheckSpec::new::<FakeCheck>(name, FakeReq::ok().tag(tag))
}

#[test]
fn every_field_and_section_matches_the_builder() {
    let group = coercion::PlanId::new_v7().0;
    let from_macro = plan! {
        name: "deploy",
        descr: "the web tier",
        group_id: group,
        meta: b"opaque".to_vec(),
        bypass_checks { key: "bypass", action { name: "deployed?", plugin: FakeCheck, request: FakeReq::ok().tag("v2") } }
        pre_checks { action { name: "lb up", descr: "ping", key: "lb", plugin: FakeCheck, request: FakeReq::ok(), timeout: 5s, retries: 2 } }
        cont_checks { delay: 10s, action { name: "budget", plugin: FakeCheck, request: FakeReq::ok() } }
        post_checks { action { name: "healthy", plugin: FakeCheck, request: FakeReq::ok() } }
        deferred_checks { action { name: "audit", plugin: FakeCheck, request: FakeReq::ok() } }
        block {
            name: "web",
            descr: "web servers",
            key: "web",
            concurrency: 3,
            tolerated_failures: 10%,
            entrance_delay: 1min,
            exit_delay: 500ms,
            bypass_checks { action { name: "b", plugin: FakeCheck, request: FakeReq::ok() } }
            pre_checks { action { name: "p", plugin: FakeCheck, request: FakeReq::ok() } }
            cont_checks { delay: 2h, action { name: "c", plugin: FakeCheck, request: FakeReq::ok() } }
            post_checks { action { name: "q", plugin: FakeCheck, request: FakeReq::ok() } }
            deferred_checks { action { name: "d", plugin: FakeCheck, request: FakeReq::ok() } }
            sequence {
                name: "web-1",
                descr: "first host",
                key: "web-1",
                action { name: "copy", descr: "copy files", key: "copy-1", plugin: FakeAction, request: FakeReq::fail_times(1), timeout: 5min, retries: 3 }
                action { name: "start", plugin: FakeAction, request: FakeReq::ok().tag("start") }
            }
        }
        deferred_actions {
            batch {
                name: "roll back",
                descr: "undo",
                key: "rollback",
                when: OnFailure,
                fail_plan: true,
                action { name: "restore", plugin: FakeAction, request: FakeReq::ok() }
            }
            batch { name: "notify", when: Always, action { name: "tell", plugin: FakeAction, request: FakeReq::ok() } }
        }
    };

    let ok = || FakeReq::ok();
    let from_builder = Plan::builder("deploy")
        .descr("the web tier")
        .group_id(group)
        .meta(b"opaque".to_vec())
        .bypass_checks(
            Checks::builder()
                .key("bypass")
                .action(CheckSpec::new::<FakeCheck>(
                    "deployed?",
                    FakeReq::ok().tag("v2"),
                )),
        )
        .pre_checks(
            Checks::builder().action(
                CheckSpec::new::<FakeCheck>("lb up", ok())
                    .descr("ping")
                    .key("lb")
                    .timeout(Duration::from_secs(5))
                    .retries(2),
            ),
        )
        .cont_checks(
            Checks::builder()
                .delay(Duration::from_secs(10))
                .action(CheckSpec::new::<FakeCheck>("budget", ok())),
        )
        .post_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("healthy", ok())))
        .deferred_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("audit", ok())))
        .block(
            Block::builder("web")
                .descr("web servers")
                .key("web")
                .concurrency(3)
                .tolerated_failures(Tolerance::Percent(10))
                .entrance_delay(Duration::from_secs(60))
                .exit_delay(Duration::from_millis(500))
                .bypass_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("b", ok())))
                .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("p", ok())))
                .cont_checks(
                    Checks::builder()
                        .delay(Duration::from_secs(7200))
                        .action(CheckSpec::new::<FakeCheck>("c", ok())),
                )
                .post_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("q", ok())))
                .deferred_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("d", ok())))
                .sequence(
                    Sequence::builder("web-1")
                        .descr("first host")
                        .key("web-1")
                        .action(
                            ActionSpec::new::<FakeAction>("copy", FakeReq::fail_times(1))
                                .descr("copy files")
                                .key("copy-1")
                                .timeout(Duration::from_secs(300))
                                .retries(3),
                        )
                        .action(act("start", "start")),
                ),
        )
        .deferred(
            DeferredBatch::builder("roll back", When::OnFailure)
                .descr("undo")
                .key("rollback")
                .fail_plan(true)
                .action(ActionSpec::new::<FakeAction>("restore", ok())),
        )
        .deferred(
            DeferredBatch::builder("notify", When::Always)
                .action(ActionSpec::new::<FakeAction>("tell", ok())),
        )
        .build();

    assert_eq!(from_macro, from_builder);
}

#[test]
fn a_changed_detail_makes_a_different_plan() {
    let base = |retries: u32, timeout: Duration, tag: &str| {
        Plan::builder("p")
            .block(
                Block::builder("b").sequence(
                    Sequence::builder("s").action(
                        ActionSpec::new::<FakeAction>("a", FakeReq::ok().tag(tag))
                            .retries(retries)
                            .timeout(timeout),
                    ),
                ),
            )
            .build()
    };
    let from_macro = plan! {
        name: "p",
        block { name: "b", sequence { name: "s", action { name: "a", plugin: FakeAction, request: FakeReq::ok().tag("x"), retries: 1, timeout: 2s } } }
    };
    assert_eq!(from_macro, base(1, Duration::from_secs(2), "x"));
    assert_ne!(
        from_macro,
        base(2, Duration::from_secs(2), "x"),
        "retries are compared"
    );
    assert_ne!(
        from_macro,
        base(1, Duration::from_secs(3), "x"),
        "timeouts are compared"
    );
    assert_ne!(
        from_macro,
        base(1, Duration::from_secs(2), "y"),
        "requests are compared"
    );
}

#[test]
fn defaults_match_the_builder() {
    let from_macro = plan! {
        name: "p",
        block { name: "b", sequence { name: "s", action { name: "a", plugin: FakeAction, request: FakeReq::ok() } } }
    };
    let from_builder = Plan::builder("p")
        .block(Block::builder("b").sequence(Sequence::builder("s").action(act("a", ""))))
        .build();
    assert_eq!(from_macro, from_builder);
    let action = &from_macro.blocks()[0].sequences()[0].actions()[0];
    assert_eq!(action.timeout(), Duration::from_secs(30));
    assert_eq!(action.retries(), 0);
    assert_eq!(
        from_macro.blocks()[0].tolerated_failures(),
        Tolerance::Count(0)
    );
}

#[test]
fn loops_over_blocks_sequences_actions_checks_and_batches() {
    let tiers = ["web", "api"];
    let hosts = ["h1", "h2", "h3"];
    let steps = ["stop", "copy", "start"];
    let from_macro = plan! {
        name: "rollout",
        pre_checks {
            for host in hosts {
                action { name: format!("ping {host}"), plugin: FakeCheck, request: FakeReq::ok().tag(host) }
            }
        }
        for tier in tiers {
            block {
                name: tier,
                concurrency: hosts.len(),
                for (i, host) in hosts.iter().enumerate() {
                    sequence {
                        name: format!("{tier}/{i}"),
                        key: format!("{tier}-{host}"),
                        for step in steps {
                            action { name: step, plugin: FakeAction, request: FakeReq::ok().tag(format!("{host}:{step}")) }
                        }
                    }
                }
            }
        }
        deferred_actions {
            for when in [When::OnFailure, When::Always] {
                batch { name: format!("{when:?}"), when: when, action { name: "n", plugin: FakeAction, request: FakeReq::ok() } }
            }
        }
    };

    let mut from_builder = Plan::builder("rollout")
        .pre_checks(Checks::builder().actions(hosts.map(|h| check(&format!("ping {h}"), h))));
    for tier in tiers {
        from_builder = from_builder.block(Block::builder(tier).concurrency(hosts.len()).sequences(
            hosts.iter().enumerate().map(|(i, host)| {
                Sequence::builder(format!("{tier}/{i}"))
                    .key(format!("{tier}-{host}"))
                    .actions(steps.map(|step| act(step, &format!("{host}:{step}"))))
            }),
        ));
    }
    for when in [When::OnFailure, When::Always] {
        from_builder = from_builder
            .deferred(DeferredBatch::builder(format!("{when:?}"), when).action(act("n", "")));
    }
    let from_builder = from_builder.build();

    assert_eq!(from_macro, from_builder);
    assert_eq!(from_macro.blocks().len(), 2);
    assert_eq!(from_macro.blocks()[1].sequences()[2].actions().len(), 3);
}

#[test]
fn an_empty_loop_adds_nothing() {
    let hosts: Vec<&str> = Vec::new();
    let from_macro = plan! {
        name: "p",
        block {
            name: "b",
            for host in &hosts {
                sequence { name: *host, action { name: "a", plugin: FakeAction, request: FakeReq::ok() } }
            }
        }
    };
    assert_eq!(
        from_macro,
        Plan::builder("p").block(Block::builder("b")).build()
    );
}

fn branchy(region: &str, canary: bool, extra: Option<&str>) -> Plan {
    plan! {
        name: "deploy",
        if region == "us" {
            block { name: "us", sequence { name: "us-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
        } else if region == "eu" {
            block {
                name: "eu",
                sequence {
                    name: "eu-1",
                    if canary {
                        action { name: "canary", key: "start", plugin: FakeAction, request: FakeReq::ok().tag("canary") }
                    } else {
                        action { name: "start", key: "start", plugin: FakeAction, request: FakeReq::ok() }
                    }
                    if let Some(step) = extra {
                        action { name: step, plugin: FakeAction, request: FakeReq::ok() }
                    }
                }
            }
        } else {
            block { name: "elsewhere", sequence { name: "x", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
        }
    }
}

#[test]
fn branches_pick_the_same_plan_as_builder_code() {
    let single = |block: &str, seq: &str, actions: Vec<ActionSpec>| {
        Plan::builder("deploy")
            .block(Block::builder(block).sequence(Sequence::builder(seq).actions(actions)))
            .build()
    };
    assert_eq!(
        branchy("us", true, None),
        single("us", "us-1", vec![act("copy", "")])
    );
    assert_eq!(
        branchy("ap", true, None),
        single("elsewhere", "x", vec![act("copy", "")])
    );
    assert_eq!(
        branchy("eu", true, Some("warm cache")),
        single(
            "eu",
            "eu-1",
            vec![act("canary", "canary").key("start"), act("warm cache", "")]
        )
    );
    assert_eq!(
        branchy("eu", false, None),
        single("eu", "eu-1", vec![act("start", "").key("start")])
    );
}

fn host_sequence(host: &str) -> SequenceBuilder {
    sequence! {
        name: format!("deploy {host}"),
        key: format!("deploy-{host}"),
        action { name: "copy", plugin: FakeAction, request: FakeReq::ok().tag(host), timeout: 1min }
    }
}

fn tier(name: &str, hosts: &[&str]) -> BlockBuilder {
    block! {
        name: name,
        concurrency: 2,
        tolerated_failures: unlimited,
        pre_checks { action { name: "lb", plugin: FakeCheck, request: FakeReq::ok() } }
        ..hosts.iter().map(|h| host_sequence(h)),
    }
}

#[test]
fn fragments_and_splices_match_the_builder() {
    let extra_actions = vec![act("spliced", "s")];
    let extra_checks = [check("spliced check", "c")];
    let batches =
        vec![DeferredBatch::builder("spliced batch", When::OnSuccess).action(act("b", ""))];
    let from_macro = plan! {
        name: "deploy",
        post_checks {
            action { name: "done", plugin: FakeCheck, request: FakeReq::ok() }
            ..extra_checks.clone(),
        }
        ..[tier("web", &["w1", "w2"]), tier("api", &["a1"])],
        block {
            name: "db",
            ..Some(host_sequence("db1")),
            sequence {
                name: "db2",
                action { name: "first", plugin: FakeAction, request: FakeReq::ok() }
                ..extra_actions.clone(),
            }
        }
        deferred_actions {
            ..batches.clone(),
            batch { name: "last", when: OnSuccess, ..extra_actions.clone() }
        }
    };

    let builder_sequence = |host: &str| {
        Sequence::builder(format!("deploy {host}"))
            .key(format!("deploy-{host}"))
            .action(act("copy", host).timeout(Duration::from_secs(60)))
    };
    let builder_tier = |name: &str, hosts: &[&str]| {
        Block::builder(name)
            .concurrency(2)
            .tolerated_failures(Tolerance::Unlimited)
            .pre_checks(Checks::builder().action(check("lb", "")))
            .sequences(hosts.iter().map(|h| builder_sequence(h)))
    };
    let from_builder = Plan::builder("deploy")
        .post_checks(
            Checks::builder()
                .action(check("done", ""))
                .actions(extra_checks),
        )
        .blocks([
            builder_tier("web", &["w1", "w2"]),
            builder_tier("api", &["a1"]),
        ])
        .block(
            Block::builder("db")
                .sequence(builder_sequence("db1"))
                .sequence(
                    Sequence::builder("db2")
                        .action(act("first", ""))
                        .actions(extra_actions.clone()),
                ),
        )
        .deferred_batches(batches)
        .deferred(DeferredBatch::builder("last", When::OnSuccess).actions(extra_actions))
        .build();

    assert_eq!(from_macro, from_builder);
    // The fragments are the same values the builder makes.
    assert_eq!(tier("web", &["w1"]), builder_tier("web", &["w1"]));
}

#[test]
fn duration_forms_and_tolerances() {
    let slow = Duration::from_secs(90);
    let from_macro = plan! {
        name: "p",
        block { name: "count", tolerated_failures: 2, sequence { name: "s", action { name: "ms", plugin: FakeAction, request: FakeReq::ok(), timeout: 500ms } } }
        block { name: "percent", tolerated_failures: 100%, sequence { name: "s", action { name: "s", plugin: FakeAction, request: FakeReq::ok(), timeout: 30s } } }
        block { name: "unlimited", tolerated_failures: unlimited, sequence { name: "s", action { name: "min", plugin: FakeAction, request: FakeReq::ok(), timeout: 5min } } }
        block { name: "expr", tolerated_failures: Tolerance::Percent(5), sequence { name: "s", action { name: "h", plugin: FakeAction, request: FakeReq::ok(), timeout: 2h } } }
        block { name: "dur", exit_delay: slow, sequence { name: "s", action { name: "e", plugin: FakeAction, request: FakeReq::ok(), timeout: slow * 2 } } }
    };
    let one = |name: &str, tolerance: Tolerance, action: &str, timeout: Duration| {
        Block::builder(name)
            .tolerated_failures(tolerance)
            .sequence(Sequence::builder("s").action(act(action, "").timeout(timeout)))
    };
    let from_builder = Plan::builder("p")
        .block(one(
            "count",
            Tolerance::Count(2),
            "ms",
            Duration::from_millis(500),
        ))
        .block(one(
            "percent",
            Tolerance::Percent(100),
            "s",
            Duration::from_secs(30),
        ))
        .block(one(
            "unlimited",
            Tolerance::Unlimited,
            "min",
            Duration::from_secs(300),
        ))
        .block(one(
            "expr",
            Tolerance::Percent(5),
            "h",
            Duration::from_secs(7200),
        ))
        .block(one("dur", Tolerance::Count(0), "e", Duration::from_secs(180)).exit_delay(slow))
        .build();
    assert_eq!(from_macro, from_builder);
}

#[test]
fn field_values_are_evaluated_where_they_stand() {
    fn build(retries: &str) -> Result<Plan, std::num::ParseIntError> {
        Ok(plan! {
            name: "p",
            block { name: "b", sequence { name: "s", action { name: "a", plugin: FakeAction, request: FakeReq::ok(), retries: retries.parse()? } } }
        })
    }
    let expected = Plan::builder("p")
        .block(Block::builder("b").sequence(Sequence::builder("s").action(act("a", "").retries(7))))
        .build();
    assert_eq!(build("7").unwrap(), expected);
    assert!(
        build("seven").is_err(),
        "`?` in a field value returns from the enclosing function"
    );
}

#[test]
fn expanded_plans_pass_submit_validation() {
    let registry = coercion::testing::registry();
    let plan = branchy("eu", true, Some("warm"));
    coercion::workflow::validate_plan(&plan, &registry).expect("a plan! plan is valid at submit");
    let kinds: Vec<coercion::PluginKind> = plan.blocks()[0].sequences()[0]
        .actions()
        .iter()
        .map(|a| a.kind())
        .collect();
    assert_eq!(
        kinds,
        [coercion::PluginKind::Action, coercion::PluginKind::Action]
    );
}

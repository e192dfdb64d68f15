//! The object model through the public API: the JSON form, tolerances, `When`, statuses and
//! reasons, `Plan::walk` and `Plan::path`.

use std::time::Duration;

use coercion::testing::{FakeAction, FakeCheck, FakeReq};
use coercion::workflow::{CheckSlot, Loc, ObjectRef, Parent, SCHEMA_VERSION};
use coercion::{ActionSpec, BlockBuilder, CheckSpec, ChecksBuilder, SequenceBuilder};
use coercion::{
    Block, Checks, DeferredBatch, Plan, PlanId, Reason, Sequence, Status, Tolerance, When,
};

fn check(name: &str) -> CheckSpec {
    CheckSpec::new::<FakeCheck>(name, FakeReq::ok().tag(name))
}

fn act(name: &str) -> ActionSpec {
    ActionSpec::new::<FakeAction>(name, FakeReq::ok().tag(name))
}

fn checks(names: &[&str]) -> ChecksBuilder {
    Checks::builder().actions(names.iter().map(|n| check(n)))
}

fn seq(name: &str, actions: &[&str]) -> SequenceBuilder {
    Sequence::builder(name).actions(actions.iter().map(|a| act(a)))
}

/// A plan with every check slot at plan level and on block 0, two blocks, two batches.
fn every_slot() -> Plan {
    let canary: BlockBuilder = Block::builder("canary")
        .bypass_checks(checks(&["b-bypass"]))
        .pre_checks(checks(&["b-pre"]))
        .cont_checks(checks(&["b-cont"]))
        .post_checks(checks(&["b-post"]))
        .deferred_checks(checks(&["b-deferred"]))
        .sequence(seq("host-0", &["copy", "restart"]));
    let rest = Block::builder("rest")
        .concurrency(2)
        .sequences(["host-1", "host-2", "host-3", "host-4"].map(|h| seq(h, &["copy"])));
    Plan::builder("deploy")
        .bypass_checks(checks(&["p-bypass"]))
        .pre_checks(checks(&["p-pre-1", "p-pre-2"]))
        .cont_checks(checks(&["p-cont"]))
        .post_checks(checks(&["p-post"]))
        .deferred_checks(checks(&["p-deferred"]))
        .block(canary)
        .block(rest)
        .deferred(DeferredBatch::builder("roll back", When::OnFailure).action(act("undo")))
        .deferred(
            DeferredBatch::builder("notify", When::Always)
                .action(act("mail"))
                .action(act("page")),
        )
        .build()
}

/// A plan that sets every field the builder can set.
fn every_field() -> Plan {
    Plan::builder("every field")
        .descr("all of it")
        .group_id(PlanId::new_v7().0)
        .meta(b"\x00\xffopaque\n".to_vec())
        .bypass_checks(checks(&["p-bypass"]).key("pb"))
        .pre_checks(checks(&["p-pre"]))
        .cont_checks(checks(&["p-cont"]).delay(Duration::from_millis(1_250)))
        .post_checks(checks(&["p-post"]))
        .deferred_checks(checks(&["p-deferred"]))
        .block(
            Block::builder("counted")
                .descr("first")
                .key("b0")
                .concurrency(4)
                .tolerated_failures(3)
                .entrance_delay(Duration::from_secs(2))
                .exit_delay(Duration::from_nanos(1))
                .bypass_checks(checks(&["b-bypass"]))
                .pre_checks(checks(&["b-pre"]))
                .cont_checks(checks(&["b-cont"]).delay(Duration::from_secs(7_200)))
                .post_checks(checks(&["b-post"]))
                .deferred_checks(checks(&["b-deferred"]))
                .sequence(
                    Sequence::builder("s0").descr("d").key("s0").action(
                        act("a0")
                            .key("a0")
                            .descr("the first action")
                            .timeout(Duration::from_millis(10))
                            .retries(5),
                    ),
                )
                .sequence(seq("s1", &["a1", "a2"])),
        )
        .block(
            Block::builder("percent")
                .tolerated_failures(Tolerance::Percent(100))
                .sequence(seq("s", &["a"])),
        )
        .block(
            Block::builder("unlimited")
                .tolerated_failures(Tolerance::Unlimited)
                .sequence(seq("s", &["a"])),
        )
        .deferred(DeferredBatch::builder("on success", When::OnSuccess).action(act("d0")))
        .deferred(
            DeferredBatch::builder("on failure", When::OnFailure)
                .fail_plan(true)
                .key("k")
                .action(act("d1")),
        )
        .deferred(
            DeferredBatch::builder("always", When::Always)
                .descr("x")
                .action(act("d2")),
        )
        .build()
}

fn json_of(plan: &Plan) -> serde_json::Value {
    serde_json::from_str(&plan.to_json()).unwrap()
}

#[test]
fn a_built_plan_round_trips_through_json() {
    for plan in [every_slot(), every_field()] {
        let text = plan.to_json();
        let back = Plan::from_json(&text).unwrap();
        assert_eq!(back, plan);
        assert_eq!(
            back.to_json(),
            text,
            "the JSON text changed on the second round trip"
        );
    }
    let back = Plan::from_json(&every_field().to_json()).unwrap();
    assert_eq!(back.meta(), b"\x00\xffopaque\n");
    assert_eq!(back.blocks()[0].exit_delay(), Duration::from_nanos(1));
    assert_eq!(
        back.blocks()[0]
            .checks()
            .get(CheckSlot::Cont)
            .unwrap()
            .delay(),
        Duration::from_secs(7_200)
    );
    assert_eq!(back.blocks()[0].sequences()[0].actions()[0].retries(), 5);
    assert_eq!(back.deferred()[1].key(), Some("k"));
    assert!(back.deferred()[1].fail_plan());
}

#[test]
fn the_json_form_carries_the_schema_version_first() {
    let text = every_slot().to_json();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["schema_version"], serde_json::json!(SCHEMA_VERSION));
    assert_eq!(SCHEMA_VERSION, 1);
    assert!(text.starts_with("{\n  \"schema_version\": 1,"), "{text}");
}

#[test]
fn a_plan_that_never_ran_reads_back_with_defaults() {
    // Optional fields may be left out of hand-written JSON.
    let text = r#"{
        "schema_version": 1,
        "name": "minimal",
        "blocks": [{
            "name": "b",
            "concurrency": 1,
            "sequences": [{
                "name": "s",
                "actions": [{
                    "name": "a",
                    "plugin": "coercion.testing/action",
                    "kind": "Action",
                    "request": {"tag": "x"},
                    "timeout": "30s"
                }]
            }]
        }]
    }"#;
    let plan = Plan::from_json(text).unwrap();
    let built = Plan::builder("minimal")
        .block(Block::builder("b").sequence(seq("s", &["a"])))
        .build();
    assert_eq!(plan.id(), PlanId::NIL);
    assert_eq!(plan.status(), Status::NotStarted);
    assert_eq!(plan.reason(), Reason::None);
    assert_eq!(plan.blocks()[0].tolerated_failures(), Tolerance::Count(0));
    let action = &plan.blocks()[0].sequences()[0].actions()[0];
    assert_eq!(
        action.request::<FakeAction>().unwrap(),
        FakeReq::ok().tag("x")
    );
    assert_eq!(action.retries(), 0);
    // The same plan as the builder makes, up to the request's text.
    assert_eq!(
        action.timeout(),
        built.blocks()[0].sequences()[0].actions()[0].timeout()
    );
}

fn import_error(value: serde_json::Value) -> String {
    Plan::from_json(&value.to_string()).unwrap_err().to_string()
}

#[test]
fn an_unknown_schema_version_is_refused_clearly() {
    let mut value = json_of(&every_slot());
    value["schema_version"] = serde_json::json!(2);
    let err = import_error(value.clone());
    assert!(
        err.starts_with(
            "invalid plan JSON: schema_version 2 is not supported by this build of coercion (it reads version 1)"
        ),
        "{err}"
    );

    value["schema_version"] = serde_json::json!("1");
    let err = import_error(value.clone());
    assert!(
        err.starts_with("invalid plan JSON: invalid type: string \"1\", expected u32"),
        "{err}"
    );

    value.as_object_mut().unwrap().remove("schema_version");
    assert!(import_error(value).contains("missing field `schema_version`"));
}

#[test]
fn malformed_json_is_refused_with_the_place_of_the_mistake() {
    let err = Plan::from_json("{\"schema_version\": 1, \"name\": ")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid plan JSON: EOF while parsing a value at line 1 column 30"
    );
    let err = Plan::from_json("not json").unwrap_err().to_string();
    assert_eq!(err, "invalid plan JSON: expected ident at line 1 column 2");
    let err = Plan::from_json("[]").unwrap_err().to_string();
    // serde's derive reads a struct from an array too, hence "length" rather than "type".
    assert!(
        err.starts_with("invalid plan JSON: invalid length 0, expected struct Plan"),
        "{err}"
    );

    let mut value = json_of(&every_slot());
    value["blocks"][1]["concurrency"] = serde_json::json!(0);
    assert!(import_error(value.clone()).contains("expected a nonzero usize"));
    value["blocks"][1]["concurrency"] = serde_json::json!(1);
    value["blocks"][1]["sequences"][0]["actions"][0]["timeout"] = serde_json::json!("soon");
    let err = import_error(value.clone());
    assert!(
        err.contains("invalid value: string \"soon\", expected a duration at line 1"),
        "{err}"
    );
    value["blocks"][1]["sequences"][0]["actions"][0]["timeout"] = serde_json::json!("5s");
    value["blocks"][1]["sequences"][0]["actions"][0]["kind"] = serde_json::json!("Effect");
    let err = import_error(value.clone());
    assert!(
        err.contains("unknown variant `Effect`, expected `Check` or `Action`"),
        "{err}"
    );
    value["blocks"][1]["sequences"][0]["actions"][0]["kind"] = serde_json::json!("Action");
    value["meta"] = serde_json::json!("not base64!");
    let err = import_error(value);
    assert!(
        err.starts_with(
            "invalid plan JSON: `meta` is not valid base64: Invalid symbol 32, offset 3."
        ),
        "{err}"
    );
}

#[test]
fn count_tolerance_allows_exactly_that_many_failures() {
    assert!(!Tolerance::Count(0).is_exceeded(0, 10));
    assert!(Tolerance::Count(0).is_exceeded(1, 10));
    assert!(!Tolerance::Count(2).is_exceeded(2, 3));
    assert!(Tolerance::Count(2).is_exceeded(3, 3));
    assert!(
        !Tolerance::Count(5).is_exceeded(3, 3),
        "more tolerance than sequences never fails"
    );
    assert!(!Tolerance::Count(0).is_exceeded(0, 0));
    assert!(Tolerance::Count(u32::MAX - 1).is_exceeded(u32::MAX as usize, usize::MAX));
    assert_eq!(Tolerance::default(), Tolerance::Count(0));
    assert_eq!(Tolerance::from(4), Tolerance::Count(4));
}

#[test]
fn percent_tolerance_is_strictly_greater_than_the_share() {
    // 1 of 10 is 10 %: not more than 10 %.
    assert!(!Tolerance::Percent(10).is_exceeded(1, 10));
    assert!(Tolerance::Percent(10).is_exceeded(2, 10));
    // 1 of 9 is 11.1 %: more than 10 %, with no rounding down on the way.
    assert!(Tolerance::Percent(10).is_exceeded(1, 9));
    assert!(!Tolerance::Percent(10).is_exceeded(1, 11));
    // 1 of 3 is 33.3 %: more than 33 %, not more than 34 %.
    assert!(Tolerance::Percent(33).is_exceeded(1, 3));
    assert!(!Tolerance::Percent(34).is_exceeded(1, 3));
    // 0 % tolerates nothing; 100 % tolerates everything.
    assert!(!Tolerance::Percent(0).is_exceeded(0, 5));
    assert!(Tolerance::Percent(0).is_exceeded(1, 1_000));
    assert!(!Tolerance::Percent(100).is_exceeded(5, 5));
    // An empty block never fails.
    assert!(!Tolerance::Percent(0).is_exceeded(0, 0));
    assert!(!Tolerance::Percent(50).is_exceeded(0, 0));
}

#[test]
fn unlimited_tolerance_never_fails() {
    assert!(!Tolerance::Unlimited.is_exceeded(0, 0));
    assert!(!Tolerance::Unlimited.is_exceeded(10, 10));
    assert!(!Tolerance::Unlimited.is_exceeded(usize::MAX, usize::MAX));
}

#[test]
fn tolerances_display_as_written_in_plans() {
    assert_eq!(Tolerance::Count(2).to_string(), "2");
    assert_eq!(Tolerance::Percent(10).to_string(), "10%");
    assert_eq!(Tolerance::Unlimited.to_string(), "unlimited");
}

#[test]
fn when_selects_batches_by_outcome() {
    assert!(When::OnSuccess.selects(false));
    assert!(!When::OnSuccess.selects(true));
    assert!(!When::OnFailure.selects(false));
    assert!(When::OnFailure.selects(true));
    assert!(When::Always.selects(false));
    assert!(When::Always.selects(true));
    assert_eq!(When::OnFailure.to_string(), "OnFailure");
}

const STATUSES: [Status; 5] = [
    Status::NotStarted,
    Status::Running,
    Status::Completed,
    Status::Failed,
    Status::Stopped,
];

#[test]
fn status_displays_and_parses_back() {
    let names: Vec<String> = STATUSES.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        ["NotStarted", "Running", "Completed", "Failed", "Stopped"]
    );
    for status in STATUSES {
        assert_eq!(status.to_string().parse::<Status>(), Ok(status));
        assert_eq!(status.as_str(), status.to_string());
    }
    assert_eq!("not_started".parse::<Status>(), Ok(Status::NotStarted));
    assert_eq!("failed".parse::<Status>(), Ok(Status::Failed));
    assert_eq!(
        "done".parse::<Status>(),
        Err(
            "unknown status `done` (expected NotStarted, Running, Completed, Failed or Stopped)"
                .to_owned()
        )
    );
    let terminal: Vec<Status> = STATUSES.into_iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(
        terminal,
        [Status::Completed, Status::Failed, Status::Stopped]
    );
}

#[test]
fn reason_displays_and_parses_back() {
    let reasons = [
        Reason::None,
        Reason::PreCheck,
        Reason::ContCheck,
        Reason::Block,
        Reason::PostCheck,
        Reason::DeferredAction,
        Reason::DeferredCheck,
        Reason::Stopped,
        Reason::ExceedRecovery,
    ];
    let names: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "None",
            "PreCheck",
            "ContCheck",
            "Block",
            "PostCheck",
            "DeferredAction",
            "DeferredCheck",
            "Stopped",
            "ExceedRecovery"
        ]
    );
    for reason in reasons {
        assert_eq!(reason.to_string().parse::<Reason>(), Ok(reason));
        // The JSON form uses the same names.
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            serde_json::json!(reason.to_string())
        );
    }
    let err = "Timeout".parse::<Reason>().unwrap_err();
    assert!(
        err.starts_with("unknown reason `Timeout` (expected None, PreCheck,"),
        "{err}"
    );
}

/// `(kind, path)` of every object the walk yields.
fn walked(plan: &Plan) -> Vec<String> {
    plan.walk()
        .map(|(loc, obj)| format!("{} | {}", obj.kind_name(), plan.path(loc)))
        .collect()
}

#[test]
fn walk_yields_every_object_in_the_documented_order() {
    let plan = every_slot();
    let expected = [
        "plan | plan",
        // The plan's bypass, pre and continuous checks, each followed by its actions.
        "checks | bypass_checks",
        "action | bypass_checks / action[0] \"p-bypass\"",
        "checks | pre_checks",
        "action | pre_checks / action[0] \"p-pre-1\"",
        "action | pre_checks / action[1] \"p-pre-2\"",
        "checks | cont_checks",
        "action | cont_checks / action[0] \"p-cont\"",
        // Each block: the block, its bypass, pre and continuous checks, each sequence followed
        // by its actions, its post and deferred checks.
        "block | block[0] \"canary\"",
        "checks | block[0] \"canary\" / bypass_checks",
        "action | block[0] \"canary\" / bypass_checks / action[0] \"b-bypass\"",
        "checks | block[0] \"canary\" / pre_checks",
        "action | block[0] \"canary\" / pre_checks / action[0] \"b-pre\"",
        "checks | block[0] \"canary\" / cont_checks",
        "action | block[0] \"canary\" / cont_checks / action[0] \"b-cont\"",
        "sequence | block[0] \"canary\" / sequence[0] \"host-0\"",
        "action | block[0] \"canary\" / sequence[0] \"host-0\" / action[0] \"copy\"",
        "action | block[0] \"canary\" / sequence[0] \"host-0\" / action[1] \"restart\"",
        "checks | block[0] \"canary\" / post_checks",
        "action | block[0] \"canary\" / post_checks / action[0] \"b-post\"",
        "checks | block[0] \"canary\" / deferred_checks",
        "action | block[0] \"canary\" / deferred_checks / action[0] \"b-deferred\"",
        "block | block[1] \"rest\"",
        "sequence | block[1] \"rest\" / sequence[0] \"host-1\"",
        "action | block[1] \"rest\" / sequence[0] \"host-1\" / action[0] \"copy\"",
        "sequence | block[1] \"rest\" / sequence[1] \"host-2\"",
        "action | block[1] \"rest\" / sequence[1] \"host-2\" / action[0] \"copy\"",
        "sequence | block[1] \"rest\" / sequence[2] \"host-3\"",
        "action | block[1] \"rest\" / sequence[2] \"host-3\" / action[0] \"copy\"",
        "sequence | block[1] \"rest\" / sequence[3] \"host-4\"",
        "action | block[1] \"rest\" / sequence[3] \"host-4\" / action[0] \"copy\"",
        // The plan's post checks, each deferred batch with its actions, the plan's deferred checks.
        "checks | post_checks",
        "action | post_checks / action[0] \"p-post\"",
        "deferred batch | deferred batch[0] \"roll back\"",
        "action | deferred batch[0] \"roll back\" / action[0] \"undo\"",
        "deferred batch | deferred batch[1] \"notify\"",
        "action | deferred batch[1] \"notify\" / action[0] \"mail\"",
        "action | deferred batch[1] \"notify\" / action[1] \"page\"",
        "checks | deferred_checks",
        "action | deferred_checks / action[0] \"p-deferred\"",
    ];
    assert_eq!(walked(&plan), expected);
    assert_eq!(plan.walk().len(), expected.len());
    assert_eq!(
        plan.action_count(),
        expected
            .iter()
            .filter(|e| e.starts_with("action |"))
            .count()
    );
}

#[test]
fn walk_locations_lead_back_to_the_objects() {
    let plan = every_slot();
    for (loc, obj) in plan.walk() {
        assert_eq!(plan.state_at(loc), Some(obj.state()), "{loc:?}");
        assert_eq!(plan.id_at(loc), Some(obj.id()), "{loc:?}");
        match obj {
            ObjectRef::Plan(p) => assert!(std::ptr::eq(p, &plan)),
            ObjectRef::Checks(c) => {
                let Loc::Checks { block, slot } = loc else {
                    panic!("{loc:?}")
                };
                let located = plan.checks_at(block, slot).unwrap();
                assert!(std::ptr::eq(c.definition(), located.definition()));
            }
            ObjectRef::Block(b) => assert!(std::ptr::eq(
                b.definition(),
                plan.block_at(loc).unwrap().definition()
            )),
            ObjectRef::Sequence(s) => assert!(std::ptr::eq(
                s.definition(),
                plan.sequence_at(loc).unwrap().definition()
            )),
            ObjectRef::Batch(b) => assert!(std::ptr::eq(
                b.definition(),
                plan.batch_at(loc).unwrap().definition()
            )),
            ObjectRef::Action(a) => {
                let located = plan.action(loc).unwrap();
                assert!(std::ptr::eq(a.definition(), located.definition()));
                let Loc::Action { parent, index } = loc else {
                    panic!("{loc:?}")
                };
                let listed = plan.actions_of(parent).unwrap()[index];
                assert!(std::ptr::eq(a.definition(), listed.definition()));
            }
        }
    }
}

#[test]
fn a_plan_without_checks_or_batches_walks_blocks_only() {
    let plan = Plan::builder("p")
        .block(Block::builder("b").sequence(seq("s", &["a"])))
        .build();
    assert_eq!(
        walked(&plan),
        [
            "plan | plan",
            "block | block[0] \"b\"",
            "sequence | block[0] \"b\" / sequence[0] \"s\"",
            "action | block[0] \"b\" / sequence[0] \"s\" / action[0] \"a\""
        ]
    );
}

#[test]
fn paths_read_as_documented() {
    let plan = every_slot();
    let copy = Loc::Action {
        parent: Parent::Sequence { block: 1, seq: 3 },
        index: 0,
    };
    assert_eq!(
        plan.path(copy).to_string(),
        "block[1] \"rest\" / sequence[3] \"host-4\" / action[0] \"copy\""
    );
    assert_eq!(plan.path(copy).depth(), 3);
    assert_eq!(plan.path(Loc::Plan).to_string(), "plan");
    assert_eq!(plan.path(Loc::Plan).depth(), 0);
    assert_eq!(plan.path(Loc::Block(1)).to_string(), "block[1] \"rest\"");
    assert_eq!(
        plan.path(Loc::Sequence { block: 1, seq: 3 }).to_string(),
        "block[1] \"rest\" / sequence[3] \"host-4\""
    );
    assert_eq!(
        plan.path(Loc::Checks {
            block: None,
            slot: CheckSlot::Cont
        })
        .to_string(),
        "cont_checks"
    );
    assert_eq!(
        plan.path(Loc::Action {
            parent: Parent::Checks {
                block: Some(0),
                slot: CheckSlot::Post
            },
            index: 0
        })
        .to_string(),
        "block[0] \"canary\" / post_checks / action[0] \"b-post\""
    );
    assert_eq!(
        plan.path(Loc::Action {
            parent: Parent::Batch(1),
            index: 1
        })
        .to_string(),
        "deferred batch[1] \"notify\" / action[1] \"page\""
    );
}

#[test]
fn paths_quote_names_and_survive_bad_indices() {
    let plan = Plan::builder("p")
        .block(Block::builder("say \"hi\"\n").sequence(seq("a / b", &["x"])))
        .build();
    assert_eq!(
        plan.path(Loc::Sequence { block: 0, seq: 0 }).to_string(),
        "block[0] \"say \\\"hi\\\"\\n\" / sequence[0] \"a / b\""
    );
    // Indices out of range are shown without a name.
    assert_eq!(plan.path(Loc::Block(9)).to_string(), "block[9] \"\"");
    assert_eq!(
        plan.path(Loc::Action {
            parent: Parent::Sequence { block: 0, seq: 4 },
            index: 2
        })
        .to_string(),
        "block[0] \"say \\\"hi\\\"\\n\" / sequence[4] \"\" / action[2] \"\""
    );
    assert_eq!(
        plan.action(Loc::Action {
            parent: Parent::Batch(0),
            index: 0
        }),
        None
    );
    assert_eq!(plan.state_at(Loc::Block(9)), None);
}

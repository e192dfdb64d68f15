//! Submit-time validation (`validate_plan`): each rule gives a problem with the right path and a
//! readable message, and every problem of a plan is reported at once.

use std::collections::BTreeMap;
use std::time::Duration;

use coercion::prelude::*;
use coercion::testing::{FakeAction, FakeCheck, FakeReq};
use coercion::workflow::{Problem, validate_plan};
use coercion::{BlockBuilder, PlanBuilder, SequenceBuilder};

/// An action plugin whose `validate` refuses port 0.
#[coercion::plugin(name = "test.validate/listen", manual)]
#[derive(Default)]
struct Listen;

impl Plugin for Listen {
    type Request = u16;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _port: u16) -> Result<(), PluginError> {
        Ok(())
    }
    fn validate(&self, port: &u16) -> Result<(), ValidationError> {
        if *port == 0 {
            Err(ValidationError::new("port 0 cannot be listened on"))
        } else {
            Ok(())
        }
    }
}

/// An action plugin whose request cannot be written as JSON: map keys must be strings.
#[coercion::plugin(name = "test.validate/routes", manual)]
#[derive(Default)]
struct Routes;

impl Plugin for Routes {
    type Request = BTreeMap<(u8, u8), String>;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: Self::Request) -> Result<(), PluginError> {
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::new()
        .with(FakeAction::default())
        .and_then(|r| r.with(FakeCheck::default()))
        .and_then(|r| r.with(Listen))
        .and_then(|r| r.with(Routes))
        .unwrap()
}

fn act(name: &str) -> ActionSpec {
    ActionSpec::new::<FakeAction>(name, FakeReq::ok())
}

fn check(name: &str) -> CheckSpec {
    CheckSpec::new::<FakeCheck>(name, FakeReq::ok())
}

fn seq(name: &str) -> SequenceBuilder {
    Sequence::builder(name).action(act("a"))
}

fn block(name: &str) -> BlockBuilder {
    Block::builder(name).sequence(seq("s"))
}

fn plan() -> PlanBuilder {
    Plan::builder("p")
}

/// The problems of `plan`, as people read them.
fn problems(plan: &Plan) -> Vec<String> {
    match validate_plan(plan, &registry()) {
        Ok(()) => Vec::new(),
        Err(problems) => problems.iter().map(Problem::to_string).collect(),
    }
}

fn valid_plan() -> Plan {
    plan()
        .pre_checks(Checks::builder().action(check("pre")))
        .cont_checks(Checks::builder().action(check("cont")))
        .block(block("b"))
        .deferred(DeferredBatch::builder("d", When::Always).action(act("undo")))
        .build()
}

#[test]
fn a_valid_plan_has_no_problem() {
    assert_eq!(validate_plan(&valid_plan(), &registry()), Ok(()));
    // A zero delay only matters for continuous checks.
    let plan = plan()
        .pre_checks(Checks::builder().delay(Duration::ZERO).action(check("pre")))
        .block(block("b"))
        .build();
    assert_eq!(problems(&plan), Vec::<String>::new());
}

#[test]
fn blank_names_are_reported_where_they_are() {
    let plan = Plan::builder("  ")
        .block(
            Block::builder("")
                .sequence(Sequence::builder("\t").action(act(" ")))
                .post_checks(Checks::builder().action(check(""))),
        )
        .deferred(DeferredBatch::builder("\n", When::OnFailure).action(act("")))
        .build();
    assert_eq!(
        problems(&plan),
        [
            "plan: name is blank",
            "block[0] \"\": name is blank",
            "block[0] \"\" / sequence[0] \"\\t\": name is blank",
            "block[0] \"\" / sequence[0] \"\\t\" / action[0] \" \": name is blank",
            "block[0] \"\" / post_checks / action[0] \"\": name is blank",
            "deferred batch[0] \"\\n\": name is blank",
            "deferred batch[0] \"\\n\" / action[0] \"\": name is blank",
        ]
    );
}

#[test]
fn empty_plan_block_sequence_checks_and_batch_are_reported() {
    assert_eq!(problems(&plan().build()), ["plan: the plan has no blocks"]);
    let plan = plan()
        .bypass_checks(Checks::builder())
        .block(Block::builder("empty"))
        .block(
            Block::builder("b")
                .sequence(Sequence::builder("idle"))
                .deferred_checks(Checks::builder()),
        )
        .deferred(DeferredBatch::builder("nothing", When::OnSuccess))
        .build();
    assert_eq!(
        problems(&plan),
        [
            "bypass_checks: the check section has no actions",
            "block[0] \"empty\": the block has no sequences",
            "block[1] \"b\" / sequence[0] \"idle\": the sequence has no actions",
            "block[1] \"b\" / deferred_checks: the check section has no actions",
            "deferred batch[0] \"nothing\": the deferred batch has no actions",
        ]
    );
}

#[test]
fn duplicate_keys_name_the_first_use() {
    let plan = plan()
        .pre_checks(Checks::builder().key("k1").action(check("c").key("k2")))
        .block(block("b").key("k1"))
        .block(
            Block::builder("c")
                .sequence(Sequence::builder("s").key("k2").action(act("a").key("k1"))),
        )
        .deferred(
            DeferredBatch::builder("d", When::Always)
                .key("k3")
                .action(act("x").key("k3")),
        )
        .build();
    assert_eq!(
        problems(&plan),
        [
            "block[0] \"b\": key \"k1\" is already used by pre_checks; keys must be unique across the plan",
            "block[1] \"c\" / sequence[0] \"s\": key \"k2\" is already used by pre_checks / action[0] \"c\"; keys must be unique across the plan",
            "block[1] \"c\" / sequence[0] \"s\" / action[0] \"a\": key \"k1\" is already used by pre_checks; keys must be unique across the plan",
            "deferred batch[0] \"d\" / action[0] \"x\": key \"k3\" is already used by deferred batch[0] \"d\"; keys must be unique across the plan",
        ]
    );
}

#[test]
fn a_blank_key_is_reported_and_not_counted_as_used() {
    let plan = plan()
        .block(block("b").key(" "))
        .block(
            Block::builder("c").sequence(Sequence::builder("s").key(" ").action(act("a").key(""))),
        )
        .build();
    assert_eq!(
        problems(&plan),
        [
            "block[0] \"b\": key is blank",
            "block[1] \"c\" / sequence[0] \"s\": key is blank",
            "block[1] \"c\" / sequence[0] \"s\" / action[0] \"a\": key is blank",
        ]
    );
}

#[test]
fn an_unregistered_plugin_is_reported_with_its_name() {
    let only_actions = Registry::new().with(FakeAction::default()).unwrap();
    let problems = validate_plan(&valid_plan(), &only_actions).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "pre_checks / action[0] \"pre\": plugin \"coercion.testing/check\" is not registered",
            "cont_checks / action[0] \"cont\": plugin \"coercion.testing/check\" is not registered",
        ]
    );
    // The structured form carries the path, not only its text.
    assert_eq!(problems[0].path.segments().len(), 2);
    assert_eq!(
        problems[0].message,
        "plugin \"coercion.testing/check\" is not registered"
    );
}

/// The JSON of `valid_plan()`, for editing.
fn exported() -> serde_json::Value {
    serde_json::from_str(&valid_plan().to_json()).unwrap()
}

fn import(value: serde_json::Value) -> Plan {
    Plan::from_json(&value.to_string()).unwrap()
}

#[test]
fn a_check_plugin_moved_into_a_sequence_is_one_problem() {
    // Move the pre-check action, kind and all, into the sequence.
    let mut value = exported();
    let check = value["checks"]["pre"]["actions"][0].clone();
    value["blocks"][0]["sequences"][0]["actions"][0] = check;
    assert_eq!(
        problems(&import(value)),
        [
            "block[0] \"b\" / sequence[0] \"s\" / action[0] \"pre\": plugin \"coercion.testing/check\" is a check plugin and cannot be used in a sequence or deferred batch"
        ]
    );
}

#[test]
fn a_check_plugin_named_in_a_deferred_batch_is_reported() {
    // Only the plugin name is edited; the recorded kind still says "Action".
    let mut value = exported();
    value["deferred"][0]["actions"][0]["plugin"] = serde_json::json!("coercion.testing/check");
    assert_eq!(
        problems(&import(value)),
        [
            "deferred batch[0] \"d\" / action[0] \"undo\": plugin \"coercion.testing/check\" is a check plugin and cannot be used in a sequence or deferred batch"
        ]
    );
}

#[test]
fn an_action_plugin_in_checks_is_reported() {
    let mut value = exported();
    value["checks"]["cont"]["actions"][0]["plugin"] = serde_json::json!("coercion.testing/action");
    value["checks"]["cont"]["actions"][0]["kind"] = serde_json::json!("Action");
    assert_eq!(
        problems(&import(value)),
        [
            "cont_checks / action[0] \"cont\": plugin \"coercion.testing/action\" is an action plugin and cannot be used in a check section"
        ]
    );
}

#[test]
fn a_recorded_kind_that_contradicts_the_registry_is_reported() {
    let mut value = exported();
    value["blocks"][0]["sequences"][0]["actions"][0]["kind"] = serde_json::json!("Check");
    assert_eq!(
        problems(&import(value)),
        [
            "block[0] \"b\" / sequence[0] \"s\" / action[0] \"a\": plugin \"coercion.testing/action\" is recorded as a check plugin, but only action plugins may be used here"
        ]
    );
}

#[test]
fn a_blank_plugin_name_is_reported() {
    let mut value = exported();
    value["blocks"][0]["sequences"][0]["actions"][0]["plugin"] = serde_json::json!(" ");
    assert_eq!(
        problems(&import(value)),
        ["block[0] \"b\" / sequence[0] \"s\" / action[0] \"a\": plugin name is blank"]
    );
}

#[test]
fn a_request_the_plugin_refuses_is_reported_with_its_reason() {
    let plan = plan()
        .block(
            Block::builder("b").sequence(
                Sequence::builder("s")
                    .action(ActionSpec::new::<Listen>("ok", 8080))
                    .action(ActionSpec::new::<Listen>("zero", 0)),
            ),
        )
        .build();
    assert_eq!(
        problems(&plan),
        [
            "block[0] \"b\" / sequence[0] \"s\" / action[1] \"zero\": plugin \"test.validate/listen\" rejected the request: port 0 cannot be listened on"
        ]
    );
}

#[test]
fn an_imported_request_of_the_wrong_shape_is_reported() {
    let mut value = exported();
    value["blocks"][0]["sequences"][0]["actions"][0]["request"] = serde_json::json!({ "tag": 5 });
    let text = problems(&import(value));
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].starts_with(
            "block[0] \"b\" / sequence[0] \"s\" / action[0] \"a\": plugin \"coercion.testing/action\" rejected the request: the request does not decode into `coercion::testing::FakeReq`: invalid type: integer `5`, expected a string"
        ),
        "{text:?}"
    );
}

#[test]
fn a_request_that_does_not_serialize_is_one_problem() {
    let routes = BTreeMap::from([((10, 0), "gateway".to_owned())]);
    let plan = plan()
        .block(
            Block::builder("b").sequence(
                Sequence::builder("s").action(ActionSpec::new::<Routes>("route", routes)),
            ),
        )
        .build();
    assert_eq!(
        problems(&plan),
        [
            "block[0] \"b\" / sequence[0] \"s\" / action[0] \"route\": the request does not serialize to JSON: key must be a string"
        ]
    );
}

#[test]
fn durations_tolerance_and_concurrency_are_checked() {
    let plan = plan()
        .cont_checks(
            Checks::builder()
                .delay(Duration::ZERO)
                .action(check("c").timeout(Duration::ZERO)),
        )
        .block(
            block("b")
                .concurrency(0)
                .tolerated_failures(Tolerance::Percent(101))
                .cont_checks(Checks::builder().delay(Duration::ZERO).action(check("c"))),
        )
        .block(
            Block::builder("fine")
                .tolerated_failures(Tolerance::Percent(100))
                .sequence(
                    Sequence::builder("s")
                        .action(act("quick").timeout(Duration::from_nanos(1)))
                        .action(act("never").timeout(Duration::ZERO)),
                ),
        )
        .build();
    assert_eq!(
        problems(&plan),
        [
            "cont_checks: delay between continuous check runs must be greater than zero",
            "cont_checks / action[0] \"c\": timeout must be greater than zero",
            "block[0] \"b\": tolerated_failures is 101%, more than 100%",
            "block[0] \"b\": concurrency must be at least 1, got 0",
            "block[0] \"b\" / cont_checks: delay between continuous check runs must be greater than zero",
            "block[1] \"fine\" / sequence[0] \"s\" / action[1] \"never\": timeout must be greater than zero",
        ]
    );
}

#[test]
fn an_already_submitted_plan_is_refused() {
    let mut value = exported();
    value["id"] = serde_json::json!(PlanId::new_v7().to_string());
    assert_eq!(
        problems(&import(value)),
        [
            "plan: the plan was already submitted (it has an id); submit a clone made with `Plan::clone_for_resubmit`"
        ]
    );
}

#[test]
fn objects_that_ran_are_refused() {
    let mut value = exported();
    value["blocks"][0]["sequences"][0]["state"] = serde_json::json!({ "status": "Failed" });
    value["blocks"][0]["sequences"][0]["actions"][0]["id"] =
        serde_json::json!(PlanId::new_v7().to_string());
    value["reason"] = serde_json::json!("Block");
    assert_eq!(
        problems(&import(value)),
        [
            "plan: reason must be None before the plan runs, found Block",
            "block[0] \"b\" / sequence[0] \"s\": state must be NotStarted with no times before the plan runs, found Failed",
            "block[0] \"b\" / sequence[0] \"s\" / action[0] \"a\": the object already has an id; ids are assigned at submit",
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_in_walk_order() {
    let plan = Plan::builder("")
        .pre_checks(Checks::builder())
        .block(Block::builder("b").key("dup").concurrency(0))
        .block(
            Block::builder("c")
                .tolerated_failures(Tolerance::Percent(200))
                .sequence(
                    Sequence::builder(" ").action(ActionSpec::new::<Listen>("zero", 0).key("dup")),
                )
                .sequence(Sequence::builder("s").action(act("").timeout(Duration::ZERO))),
        )
        .deferred(DeferredBatch::builder("d", When::OnFailure))
        .build();
    let only = Registry::new().with(Listen).unwrap();
    let text: Vec<String> = validate_plan(&plan, &only)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        text,
        [
            "plan: name is blank",
            "pre_checks: the check section has no actions",
            "block[0] \"b\": the block has no sequences",
            "block[0] \"b\": concurrency must be at least 1, got 0",
            "block[1] \"c\": tolerated_failures is 200%, more than 100%",
            "block[1] \"c\" / sequence[0] \" \": name is blank",
            "block[1] \"c\" / sequence[0] \" \" / action[0] \"zero\": key \"dup\" is already used by block[0] \"b\"; keys must be unique across the plan",
            "block[1] \"c\" / sequence[0] \" \" / action[0] \"zero\": plugin \"test.validate/listen\" rejected the request: port 0 cannot be listened on",
            "block[1] \"c\" / sequence[1] \"s\" / action[0] \"\": name is blank",
            "block[1] \"c\" / sequence[1] \"s\" / action[0] \"\": timeout must be greater than zero",
            "block[1] \"c\" / sequence[1] \"s\" / action[0] \"\": plugin \"coercion.testing/action\" is not registered",
            "deferred batch[0] \"d\": the deferred batch has no actions",
        ]
    );
}

/// `fn main() -> Result<(), coercion::Error>` prints the error's `Debug`: it must be the
/// readable text (with its causes), not a dump of the structure.
#[tokio::test]
async fn the_error_debug_is_the_readable_text_with_its_causes() {
    let fakes = coercion::testing::Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan =
        Plan::builder(" ")
            .block(Block::builder("b").sequence(
                Sequence::builder("s").action(
                    ActionSpec::new::<FakeAction>("a", FakeReq::ok()).timeout(Duration::ZERO),
                ),
            ))
            .build();
    let err = ws.submit(plan).await.unwrap_err();
    let debug = format!("{err:?}");
    assert_eq!(debug, err.to_string());
    assert!(
        debug.starts_with("the plan is invalid:")
            && debug.contains("timeout must be greater than zero")
            && !debug.contains("Problem {"),
        "{debug}"
    );
    assert!(format!("{err:#?}").starts_with("Invalid("), "{err:#?}");

    // A cause chain is shown below the message.
    let dir = std::env::temp_dir().join(format!("coercion-debug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_db = dir.join("not-a-db");
    std::fs::write(
        &not_a_db,
        b"this is not a SQLite file, not at all, not even close",
    )
    .unwrap();
    let err = Workstream::open(&not_a_db, fakes.registry())
        .await
        .unwrap_err();
    let debug = format!("{err:?}");
    assert!(
        debug.starts_with(&err.to_string()) && debug.contains("\n\nCaused by:\n    "),
        "{debug}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_imported_plan_marked_paused_is_refused() {
    let mut value = exported();
    value["paused"] = serde_json::json!(true);
    assert_eq!(
        problems(&import(value)),
        [
            "plan: the plan is marked paused; a plan is paused by an operator while it runs, not before (remove `paused` from the imported plan)"
        ]
    );
}

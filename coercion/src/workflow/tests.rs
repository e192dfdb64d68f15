//! Unit tests of the object model that need crate-private access: plans that already ran
//! (states, attempts, ids, reason, heartbeat), their JSON round trip, and their validation.

use std::time::Duration;

use chrono::TimeZone as _;
use uuid::Uuid;

use super::*;
use crate::builder::{ActionSpec, CheckSpec};
use crate::plugin::{PluginError, PluginKind};
use crate::registry::Registry;
use crate::testing::{FakeAction, FakeCheck, FakeReq, FakeResp};

fn at(secs: i64, nanos: u32) -> Timestamp {
    Utc.timestamp_opt(1_700_000_000 + secs, nanos)
        .single()
        .expect("a valid timestamp")
}

fn checks(tag: &str) -> crate::builder::ChecksBuilder {
    Checks::builder().key(format!("{tag}-checks")).action(
        CheckSpec::new::<FakeCheck>(format!("{tag} check"), FakeReq::ok().tag(tag))
            .key(format!("{tag}-c0")),
    )
}

/// A plan that uses every field the JSON form has: every check slot at plan and block level,
/// several blocks with each kind of tolerance, deferred batches with every `When`, keys,
/// descriptions, group id, meta bytes, delays, timeouts and retries.
fn full_definition() -> Plan {
    let seq = |b: usize, s: usize| {
        Sequence::builder(format!("host-{b}-{s}"))
            .descr(format!("sequence {s} of block {b}"))
            .key(format!("seq-{b}-{s}"))
            .action(
                ActionSpec::new::<FakeAction>(
                    "copy",
                    FakeReq::fail_times(2).tag(format!("copy-{b}-{s}")),
                )
                .key(format!("copy-{b}-{s}"))
                .descr("copies the files")
                .timeout(Duration::from_millis(1_500))
                .retries(3),
            )
            .action(
                ActionSpec::new::<FakeAction>("restart", FakeReq::sleep(Duration::from_nanos(7)))
                    .timeout(Duration::new(3_600, 42)),
            )
    };
    Plan::builder("deploy everything")
        .descr("a plan with every field set")
        .group_id(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))
        .meta(vec![0u8, 159, 146, 150, 255, b'\n'])
        .bypass_checks(checks("plan-bypass"))
        .pre_checks(checks("plan-pre"))
        .cont_checks(checks("plan-cont").delay(Duration::from_millis(2_500)))
        .post_checks(checks("plan-post"))
        .deferred_checks(checks("plan-deferred"))
        .block(
            Block::builder("first")
                .descr("the first block")
                .key("block-0")
                .concurrency(3)
                .tolerated_failures(Tolerance::Count(2))
                .entrance_delay(Duration::from_secs(5))
                .exit_delay(Duration::from_millis(250))
                .bypass_checks(checks("b0-bypass"))
                .pre_checks(checks("b0-pre"))
                .cont_checks(checks("b0-cont").delay(Duration::from_secs(90)))
                .post_checks(checks("b0-post"))
                .deferred_checks(checks("b0-deferred"))
                .sequences((0..3).map(|s| seq(0, s))),
        )
        .block(
            Block::builder("second")
                .tolerated_failures(Tolerance::Percent(25))
                .sequences((0..2).map(|s| seq(1, s))),
        )
        .block(
            Block::builder("third")
                .tolerated_failures(Tolerance::Unlimited)
                .sequence(seq(2, 0)),
        )
        .deferred(
            DeferredBatch::builder("roll back", When::OnFailure)
                .key("rollback")
                .descr("undo the deploy")
                .fail_plan(true)
                .action(ActionSpec::new::<FakeAction>(
                    "undo",
                    FakeReq::ok().tag("undo"),
                )),
        )
        .deferred(
            DeferredBatch::builder("announce", When::OnSuccess).action(
                ActionSpec::new::<FakeAction>("announce", FakeReq::ok().tag("announce")),
            ),
        )
        .deferred(
            DeferredBatch::builder("notify", When::Always)
                .action(ActionSpec::new::<FakeAction>("notify a", FakeReq::ok()))
                .action(ActionSpec::new::<FakeAction>("notify b", FakeReq::fail())),
        )
        .build()
}

fn response(tag: &str, attempt: u32) -> Json {
    Json::encode(&FakeResp {
        tag: tag.into(),
        attempt,
        plan_id: PlanId::NIL,
        action_id: Uuid::nil(),
    })
    .unwrap()
}

/// `full_definition` after a run: ids, states with times, attempts with responses, errors
/// with source chains and one still in flight, a reason, a heartbeat, paused.
fn full_run() -> Plan {
    let mut plan = full_definition();
    plan.id = PlanId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
    plan.submit_time = Some(at(0, 1));
    let run = plan.run_mut();
    *run.reason = Reason::Block;
    *run.heartbeat = Some(at(100, 999_999_999));
    *run.paused = true;
    let locs: Vec<Loc> = plan.walk().map(|(loc, _)| loc).collect();
    let statuses = [
        Status::NotStarted,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Stopped,
    ];
    for (i, loc) in locs.iter().enumerate() {
        let status = statuses[i % statuses.len()];
        let state = plan.state_at_mut(*loc).unwrap();
        state.status = status;
        if status != Status::NotStarted {
            state.start = Some(at(i as i64, 123_456_789));
        }
        if status.is_terminal() {
            state.end = Some(at(i as i64 + 1, 987_654_321));
        }
        set_id(&mut plan, *loc, Uuid::from_u128(i as u128 + 1));
    }
    let copy = Loc::Action {
        parent: Parent::Sequence { block: 0, seq: 0 },
        index: 0,
    };
    let root = PluginError::new("connection reset by peer").with_code(104);
    let err = PluginError::new("scp failed").with_code(7).caused_by(&root);
    *plan.attempts_mut(copy).unwrap() = vec![
        Attempt {
            start: at(10, 1),
            end: Some(at(11, 2)),
            outcome: Some(Outcome::Error(Box::new(err))),
        },
        Attempt {
            start: at(12, 3),
            end: Some(at(13, 4)),
            outcome: Some(Outcome::Error(Box::new(
                PluginError::permanent("disk full").with_code(28),
            ))),
        },
        Attempt {
            start: at(14, 5),
            end: Some(at(15, 6)),
            outcome: Some(Outcome::Response(response("copy-0-0", 3))),
        },
    ];
    let restart = Loc::Action {
        parent: Parent::Sequence { block: 0, seq: 0 },
        index: 1,
    };
    *plan.attempts_mut(restart).unwrap() = vec![Attempt {
        start: at(16, 0),
        end: None,
        outcome: None,
    }];
    plan
}

fn set_id(plan: &mut Plan, loc: Loc, id: Uuid) {
    match loc {
        Loc::Plan => {}
        Loc::Checks { block, slot } => plan.checks_at_mut(block, slot).unwrap().id = id,
        Loc::Block(b) => plan.blocks[b].id = id,
        Loc::Sequence { block, seq } => plan.blocks[block].sequences[seq].id = id,
        Loc::Batch(i) => plan.deferred[i].id = id,
        Loc::Action { .. } => plan.action_mut(loc).unwrap().id = id,
    }
}

#[test]
fn full_definition_uses_every_slot_and_kind() {
    // Guards the fixtures: the round-trip tests below are only as good as this plan is full.
    let plan = full_definition();
    assert_eq!(plan.checks.iter().count(), 5);
    assert_eq!(plan.blocks[0].checks.iter().count(), 5);
    let tolerances: Vec<Tolerance> = plan.blocks.iter().map(|b| b.tolerated_failures).collect();
    assert_eq!(
        tolerances,
        [
            Tolerance::Count(2),
            Tolerance::Percent(25),
            Tolerance::Unlimited
        ]
    );
    let whens: Vec<When> = plan.deferred.iter().map(|b| b.when).collect();
    assert_eq!(whens, [When::OnFailure, When::OnSuccess, When::Always]);
    assert!(plan.walk().all(|(_, o)| match o {
        ObjectRef::Action(a) => a.defects.is_empty(),
        ObjectRef::Block(b) => b.defects.is_empty(),
        _ => true,
    }));
}

#[test]
fn definition_round_trips_through_json() {
    let plan = full_definition();
    let text = plan.to_json();
    let back = Plan::from_json(&text).unwrap();
    assert_eq!(back, plan);
    assert_eq!(
        back.to_json(),
        text,
        "the JSON text changed on the second round trip"
    );
}

#[test]
fn run_plan_round_trips_through_json() {
    let plan = full_run();
    let copy = Loc::Action {
        parent: Parent::Sequence { block: 0, seq: 0 },
        index: 0,
    };
    assert_eq!(plan.action(copy).unwrap().attempts().len(), 3);
    let text = plan.to_json();
    let back = Plan::from_json(&text).unwrap();
    assert_eq!(back, plan);
    assert_eq!(
        back.to_json(),
        text,
        "the JSON text changed on the second round trip"
    );

    // Spot checks on what the equality covers, so a lossy `PartialEq` cannot hide a loss.
    assert_eq!(back.id(), plan.id());
    assert_eq!(back.heartbeat(), Some(at(100, 999_999_999)));
    assert!(back.is_paused());
    assert_eq!(back.reason(), Reason::Block);
    assert_eq!(back.meta(), [0u8, 159, 146, 150, 255, b'\n']);
    let err = back.action(copy).unwrap().attempts()[0].error().unwrap();
    assert_eq!(err.chain(), "scp failed: connection reset by peer");
    assert_eq!(err.source.as_ref().unwrap().code, 104);
    assert_eq!(
        back.blocks[0].sequences[0].actions[1].timeout,
        Duration::new(3_600, 42)
    );
    assert_eq!(
        back.blocks()[0].sequences()[0].actions()[1].attempts()[0].end,
        None
    );
    let states: Vec<State> = back.walk().map(|(_, o)| o.state()).collect();
    let before: Vec<State> = plan.walk().map(|(_, o)| o.state()).collect();
    assert_eq!(states, before);
    assert!(states.iter().any(|s| {
        s.start
            .is_some_and(|t| t.timestamp_subsec_nanos() == 123_456_789)
    }));
}

#[test]
fn json_form_names_the_schema_version_and_durations_for_people() {
    let value: serde_json::Value = serde_json::from_str(&full_run().to_json()).unwrap();
    assert_eq!(value["schema_version"], SCHEMA_VERSION);
    let block = &value["blocks"][0];
    assert_eq!(block["entrance_delay"], "5s");
    assert_eq!(block["exit_delay"], "250ms");
    assert_eq!(block["checks"]["cont"]["delay"], "1m 30s");
    assert_eq!(
        block["tolerated_failures"],
        serde_json::json!({ "count": 2 })
    );
    assert_eq!(
        value["blocks"][1]["tolerated_failures"],
        serde_json::json!({ "percent": 25 })
    );
    assert_eq!(value["blocks"][2]["tolerated_failures"], "unlimited");
    let copy = &block["sequences"][0]["actions"][0];
    assert_eq!(copy["timeout"], "1s 500ms");
    assert_eq!(copy["kind"], "Action");
    assert_eq!(copy["request"]["tag"], "copy-0-0");
    assert_eq!(
        copy["attempts"][0]["outcome"]["error"]["source"]["message"],
        "connection reset by peer"
    );
    assert_eq!(copy["attempts"][2]["outcome"]["response"]["attempt"], 3);
    assert_eq!(value["deferred"][0]["when"], "OnFailure");
    assert_eq!(value["deferred"][0]["fail_plan"], true);
}

#[test]
fn typed_access_reads_the_request_and_the_last_response() {
    let plan = full_run();
    let copy = plan
        .action(Loc::Action {
            parent: Parent::Sequence { block: 0, seq: 0 },
            index: 0,
        })
        .unwrap();
    assert_eq!(
        copy.request::<FakeAction>().unwrap(),
        FakeReq::fail_times(2).tag("copy-0-0")
    );
    let resp = copy.response::<FakeAction>().unwrap();
    assert_eq!((resp.tag.as_str(), resp.attempt), ("copy-0-0", 3));
    assert_eq!(copy.last_error(), None);
    assert_eq!(
        copy.response::<FakeCheck>(),
        Err(TypedAccessError::WrongPlugin {
            asked: "coercion.testing/check",
            actual: "coercion.testing/action".into()
        })
    );

    let restart = plan
        .action(Loc::Action {
            parent: Parent::Sequence { block: 0, seq: 0 },
            index: 1,
        })
        .unwrap();
    assert_eq!(
        restart.response::<FakeAction>(),
        Err(TypedAccessError::NoResponse)
    );

    let loc = Loc::Action {
        parent: Parent::Sequence { block: 0, seq: 0 },
        index: 0,
    };
    let mut swapped = plan.clone();
    swapped.attempts_mut(loc).unwrap().swap(0, 2);
    let failed = swapped.action(loc).unwrap();
    assert_eq!(
        failed.response::<FakeAction>(),
        Err(TypedAccessError::NoResponse)
    );
    assert_eq!(
        failed.last_error().unwrap().chain(),
        "scp failed: connection reset by peer"
    );

    let mut garbled = copy.definition().clone();
    garbled.request = Json::from_text(r#"{"tag": 5}"#).unwrap();
    assert!(
        matches!(garbled.request::<FakeAction>(), Err(TypedAccessError::Decode(m)) if m.contains("invalid type"))
    );
}

fn registry() -> Registry {
    Registry::new()
        .with(FakeAction::default())
        .unwrap()
        .with(FakeCheck::default())
        .unwrap()
}

#[test]
fn a_fresh_definition_is_valid() {
    assert_eq!(validate_plan(&full_definition(), &registry()), Ok(()));
}

#[test]
fn a_plan_that_already_ran_is_refused_object_by_object() {
    let plan = full_run();
    let problems = validate_plan(&plan, &registry()).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| text.iter().any(|p| p == needle);

    assert!(
        has(
            "plan: the plan was already submitted (it has an id); submit a clone made with `Plan::clone_for_resubmit`"
        ),
        "{text:#?}"
    );
    assert!(
        has("plan: reason must be None before the plan runs, found Block"),
        "{text:#?}"
    );
    // Every object but those left NotStarted without times has a state problem; every object
    // but the plan has an id problem.
    let objects = plan.walk().count();
    let state_problems = text
        .iter()
        .filter(|p| p.contains("state must be NotStarted"))
        .count();
    let ran = plan
        .walk()
        .filter(|(_, o)| o.state() != State::default())
        .count();
    assert_eq!(state_problems, ran);
    assert!(ran > objects / 2);
    let id_problems = text
        .iter()
        .filter(|p| p.ends_with("the object already has an id; ids are assigned at submit"))
        .count();
    assert_eq!(id_problems, objects - 1);
    assert!(has(
        "block[0] \"first\" / sequence[0] \"host-0-0\" / action[0] \"copy\": the action already has attempts"
    ));
    assert!(has(
        "block[0] \"first\" / sequence[0] \"host-0-0\" / action[1] \"restart\": the action already has attempts"
    ));
    assert_eq!(
        text.iter()
            .filter(|p| p.contains("already has attempts"))
            .count(),
        2
    );
}

#[test]
fn a_submit_time_alone_marks_the_plan_as_submitted() {
    let mut plan = full_definition();
    plan.submit_time = Some(at(0, 0));
    let problems = validate_plan(&plan, &registry()).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, ObjectPath::default());
    assert!(
        problems[0]
            .message
            .starts_with("the plan was already submitted")
    );
}

#[test]
fn a_state_with_times_but_not_started_is_refused() {
    let mut plan = full_definition();
    let loc = Loc::Sequence { block: 1, seq: 1 };
    plan.state_at_mut(loc).unwrap().end = Some(at(1, 0));
    let problems = validate_plan(&plan, &registry()).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].to_string(),
        "block[1] \"second\" / sequence[1] \"host-1-1\": state must be NotStarted with no times before the plan runs, found NotStarted with times set"
    );
}

#[test]
fn an_action_recorded_with_the_wrong_kind_is_one_problem() {
    // An imported plan whose action claims to be a check while it sits in a sequence, and
    // whose plugin is not registered: the recorded kind is all there is to go on.
    let mut plan = full_definition();
    let loc = Loc::Action {
        parent: Parent::Sequence { block: 2, seq: 0 },
        index: 1,
    };
    let action = plan.action_mut(loc).unwrap();
    action.kind = PluginKind::Check;
    action.plugin = "example.com/unknown".into();
    let problems = validate_plan(&plan, &registry()).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "block[2] \"third\" / sequence[0] \"host-2-0\" / action[1] \"restart\": plugin \"example.com/unknown\" is recorded as a check plugin, but only action plugins may be used here",
            "block[2] \"third\" / sequence[0] \"host-2-0\" / action[1] \"restart\": plugin \"example.com/unknown\" is not registered",
        ]
    );
}

#[test]
fn json_null_is_valid_json() {
    assert_eq!(Json::null().as_str(), "null");
    assert_eq!(Json::null().decode::<Option<u8>>().unwrap(), None);
}

/// `walk_mut` visits what `walk` visits, in the same order, with each object's own id, state
/// and (actions only) attempts; resetting the run state through it gives back the definition,
/// and fresh ids come in walk order.
#[test]
fn the_mutable_walk_follows_the_walk_and_resets_to_the_definition() {
    let mut run = full_run();
    let walked: Vec<(Loc, Uuid, State, Option<usize>)> = run
        .walk()
        .map(|(loc, o)| {
            let attempts = match o {
                ObjectRef::Action(a) => Some(a.attempts().len()),
                _ => None,
            };
            (loc, o.id(), o.state(), attempts)
        })
        .collect();
    let mut visited = Vec::new();
    run.walk_mut(|loc, o| visited.push((loc, *o.id, *o.state, o.attempts.map(|a| a.len()))));
    assert_eq!(visited, walked);
    assert!(walked.iter().any(|(_, _, _, a)| a.is_some_and(|n| n > 0)));
    assert!(!run.is_definition());

    let mut def = full_definition();
    def.assign_ids();
    let ids: Vec<Uuid> = def.walk().map(|(_, o)| o.id()).collect();
    assert!(ids.is_sorted(), "ids are handed out in walk order");
    assert!(def.is_definition());
    let mut reset = run.definition();
    assert!(reset.is_definition());
    assert_eq!(reset.walk().count(), run.walk().count());
    reset.walk_mut(|loc, o| assert_eq!(Some(*o.id), run.id_at(loc), "ids kept"));
}

/// Each object's JSON is its definition's (the derived form the stores keep) with its run
/// state added, and nothing else: the views' serializers and the definitions' `#[serde]`
/// attributes cannot drift apart. (Falsified by leaving `descr`'s emptiness check out of
/// `SequenceView`'s serializer.)
#[test]
fn the_json_form_is_the_definition_and_the_run_state() {
    fn without_run(mut value: serde_json::Value) -> serde_json::Value {
        let object = value.as_object_mut().expect("an object");
        object.remove("state").expect("every object has its state");
        object.remove("attempts");
        value
    }
    fn same<T: serde::Serialize>(view: &impl serde::Serialize, def: &T, what: &str) {
        let view = serde_json::to_value(view).unwrap();
        let mut def = serde_json::to_value(def).unwrap();
        // The containers' children are compared one by one below.
        for field in ["actions", "sequences", "checks"] {
            if let (Some(v), Some(d)) = (view.get(field), def.get_mut(field)) {
                assert_eq!(v.is_null(), d.is_null(), "{what}: {field}");
                *d = v.clone();
            }
        }
        assert_eq!(without_run(view), def, "{what}");
    }
    // And a plan of defaults: no keys, no descriptions, no checks.
    let bare = Plan::builder("bare")
        .block(
            Block::builder("b").sequence(Sequence::builder("s").action(ActionSpec::new::<
                FakeAction,
            >(
                "a", FakeReq::ok()
            ))),
        )
        .build();
    for plan in [full_definition(), full_run(), bare] {
        let mut actions_with_attempts = 0;
        for (loc, object) in plan.walk() {
            let what = format!("{loc:?}");
            match object {
                ObjectRef::Plan(_) => {}
                ObjectRef::Checks(c) => same(&c, c.definition(), &what),
                ObjectRef::Block(b) => same(&b, b.definition(), &what),
                ObjectRef::Sequence(s) => same(&s, s.definition(), &what),
                ObjectRef::Batch(d) => same(&d, d.definition(), &what),
                ObjectRef::Action(a) => {
                    let value = serde_json::to_value(a).unwrap();
                    assert_eq!(value["state"], serde_json::to_value(a.state()).unwrap());
                    if a.attempts().is_empty() {
                        assert!(value.get("attempts").is_none(), "{what}");
                    } else {
                        actions_with_attempts += 1;
                        assert_eq!(
                            value["attempts"],
                            serde_json::to_value(a.attempts()).unwrap()
                        );
                    }
                    same(&a, a.definition(), &what);
                }
            }
        }
        assert_eq!(actions_with_attempts > 0, !plan.run.blocks.is_empty());
    }
}

/// The run state is written where it happens: a location nothing was written at reads as not
/// started, plans are equal however sparsely their run state was written, and the lists on
/// the way to a written location take the definition's size, not twice it.
#[test]
fn run_state_is_kept_by_location_and_sparse() {
    let def = full_definition();
    assert!(def.run.blocks.is_empty(), "a definition has no run state");
    let last = Loc::Action {
        parent: Parent::Sequence { block: 2, seq: 0 },
        index: 1,
    };
    let running = State {
        status: Status::Running,
        start: Some(at(1, 0)),
        end: None,
    };
    let mut sparse = def.clone();
    *sparse.state_at_mut(last).unwrap() = running;
    sparse.attempts_mut(last).unwrap().push(Attempt {
        start: at(1, 0),
        end: None,
        outcome: None,
    });
    assert_eq!(sparse.state_at(last), Some(running));
    assert_eq!(sparse.action(last).unwrap().attempts().len(), 1);
    // Everything else reads as not started, through every accessor.
    for (loc, object) in sparse.walk() {
        if loc != last && loc != Loc::Plan {
            assert_eq!(object.state(), State::default(), "{loc:?}");
            assert_eq!(sparse.state_at(loc), Some(State::default()), "{loc:?}");
        }
    }
    // Room for exactly the definition's objects on the way, and no run state elsewhere.
    assert_eq!(sparse.run.blocks.capacity(), def.blocks.len());
    assert_eq!(
        sparse.run.blocks[2].sequences.capacity(),
        def.blocks[2].sequences.len()
    );
    assert_eq!(
        sparse.run.blocks[2].sequences[0].actions.capacity(),
        def.blocks[2].sequences[0].actions.len()
    );
    assert!(def.blocks[2].sequences[0].actions.len() >= 2);
    assert!(sparse.run.blocks[0].sequences.is_empty());
    // The same run state written densely (every object) is the same plan.
    let mut dense = def.clone();
    dense.walk_mut(|loc, o| {
        if loc == last {
            *o.state = running;
            o.attempts.unwrap().push(Attempt {
                start: at(1, 0),
                end: None,
                outcome: None,
            });
        }
    });
    assert!(!dense.run.blocks[0].sequences.is_empty());
    assert_eq!(dense, sparse);
    let mut other = dense.clone();
    *other.state_at_mut(Loc::Block(0)).unwrap() = running;
    assert_ne!(other, sparse, "a state written anywhere makes a difference");
    // A location the definition does not have is refused, and writes nothing.
    let nowhere = Loc::Action {
        parent: Parent::Sequence { block: 2, seq: 9 },
        index: 0,
    };
    assert_eq!(sparse.state_at(nowhere), None);
    assert!(sparse.state_at_mut(nowhere).is_none());
    assert!(sparse.attempts_mut(nowhere).is_none());
    assert!(sparse.run.blocks[2].sequences.len() <= def.blocks[2].sequences.len());
    // Written whole (as a display copy is), every list has the definition's size.
    let whole = def.clone().into_display();
    assert_eq!(whole.run.blocks.capacity(), def.blocks.len());
    for (b, block) in def.blocks.iter().enumerate() {
        assert_eq!(
            whole.run.blocks[b].sequences.capacity(),
            block.sequences.len()
        );
        for (s, seq) in block.sequences.iter().enumerate() {
            assert_eq!(
                whole.run.blocks[b].sequences[s].actions.capacity(),
                seq.actions.len()
            );
        }
    }
    // Back to the definition drops it all.
    sparse.reset_run_state();
    assert!(sparse.run.blocks.is_empty());
    assert_eq!(sparse, def);
}

/// A check section given as `null` (as an `Option` may be written by hand) reads as absent, as
/// it did when the run state was read with the definition.
#[test]
fn a_null_check_section_reads_as_absent() {
    let mut value: serde_json::Value = serde_json::from_str(&full_run().to_json()).unwrap();
    value["checks"]["bypass"] = serde_json::Value::Null;
    value["blocks"][0]["checks"]["post"] = serde_json::Value::Null;
    let plan = Plan::from_json(&value.to_string()).unwrap();
    assert!(plan.checks().get(CheckSlot::Bypass).is_none());
    assert!(plan.blocks()[0].checks().get(CheckSlot::Post).is_none());
    assert!(plan.checks().get(CheckSlot::Pre).is_some());
}

/// A page's cut leaves out the actions of a sequence with their run state (attempts hold
/// responses: nothing of them stays in memory), and keeps the sequence's own.
#[test]
fn leaving_out_a_sequences_actions_leaves_out_their_run_state() {
    let mut plan = full_run();
    let seq = Loc::Sequence { block: 0, seq: 0 };
    let state = plan.state_at(seq).unwrap();
    assert!(!plan.run.blocks[0].sequences[0].actions.is_empty());
    assert!(
        plan.sequence_at(seq)
            .unwrap()
            .actions()
            .iter()
            .any(|a| !a.attempts().is_empty()),
        "the fixture has attempts there"
    );
    plan.leave_out_actions(0, 0);
    assert!(plan.sequence_at(seq).unwrap().actions().is_empty());
    assert!(plan.run.blocks[0].sequences[0].actions.is_empty());
    assert_eq!(plan.state_at(seq), Some(state));
    plan.leave_out_actions(7, 7); // nothing there: nothing happens
}

/// Errors reading a plan's JSON name a plan, as the derived reader's did (not the type that
/// reads its definition).
#[test]
fn a_plan_that_is_not_an_object_is_named_a_plan() {
    for text in ["\"x\"", "[]"] {
        let e = Plan::from_json(text).unwrap_err().to_string();
        assert!(!e.contains("PlanDefinition"), "{text}: {e}");
        assert!(e.contains("struct Plan"), "{text}: {e}");
    }
}

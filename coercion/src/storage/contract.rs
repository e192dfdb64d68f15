//! The storage contract: checks every [`Store`] must pass, run by the tests of each store
//! (`tests/storage_contract.rs` runs them against [`MemoryStore`](super::MemoryStore) and
//! [`SqliteStore`](super::SqliteStore)).
//!
//! Each check is an `async fn` that takes the store under test and panics with a message naming
//! the store when the store breaks the contract. The checks create their own plans with fresh
//! ids and filter listings by their own group ids, so they may share one store and run in any
//! order; [`all`] runs every one of them.
//!
//! What [`Change::apply_to`] does to an in-memory plan *is* the meaning of a change: the checks
//! compare what the store reads back with that model.

use std::time::Duration;

use chrono::TimeZone as _;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::{Change, ListFilter, PlanSummary, Store, StoreError, prune};
use crate::builder::{ActionSpec, CheckSpec};
use crate::plugin::PluginError;
use crate::testing::{FakeAction, FakeCheck, FakeReq};
use crate::workflow::{
    Attempt, Block, Checks, DeferredBatch, Json, Loc, ObjectRef, Outcome, Plan, PlanId, Reason,
    Sequence, State, Status, Timestamp, Tolerance, When,
};

/// Runs every check of the contract against `store`, with the default sizes.
pub async fn all(store: &dyn Store) {
    create_then_read(store).await;
    duplicate_create(store).await;
    unknown_plan(store).await;
    every_change_kind(store).await;
    batches_are_atomic(store).await;
    a_batch_applied_twice_reads_as_once(store).await;
    random_changes(store, 0x5eed, 150).await;
    concurrent_applies_complete_in_order(store, 300).await;
    list_filters_and_paging(store).await;
    delete_rules(store).await;
    prune_rules(store).await;
    large_plan(store, 20_000).await;
    hostile_text(store).await;
}

/// A time near 2023-11-14 with nanoseconds, so stores must keep full precision.
pub fn at(secs: i64, nanos: u32) -> Timestamp {
    chrono::Utc
        .timestamp_opt(1_700_000_000 + secs, nanos)
        .single()
        .unwrap_or_default()
}

/// Gives the plan and every object in it a fresh UUIDv7, as submit does.
pub fn assign_ids(plan: &mut Plan) {
    plan.assign_ids();
}

fn check_section(tag: &str) -> crate::builder::ChecksBuilder {
    Checks::builder()
        .key(format!("{tag}-checks"))
        .action(
            CheckSpec::new::<FakeCheck>(format!("{tag} check"), FakeReq::ok().tag(tag))
                .key(format!("{tag}-c0")),
        )
        .action(CheckSpec::new::<FakeCheck>(
            format!("{tag} check 2"),
            FakeReq::fail_times(1),
        ))
}

/// A submitted, not yet started plan with every kind of object: all five check sections on the
/// plan and on a block, three blocks, several sequences, deferred batches with every `When`.
/// Fresh ids; submitted at `at(0, 1)`.
pub fn sample_plan(name: &str) -> Plan {
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
                .timeout(Duration::from_millis(1_500))
                .retries(3),
            )
            .action(ActionSpec::new::<FakeAction>("restart", FakeReq::ok()))
    };
    let mut plan = Plan::builder(name)
        .descr("a plan with every kind of object")
        .group_id(Uuid::now_v7())
        .meta(vec![0u8, 159, 255])
        .bypass_checks(check_section("plan-bypass"))
        .pre_checks(check_section("plan-pre"))
        .cont_checks(check_section("plan-cont").delay(Duration::from_millis(2_500)))
        .post_checks(check_section("plan-post"))
        .deferred_checks(check_section("plan-deferred"))
        .block(
            Block::builder("first")
                .key("block-0")
                .concurrency(3)
                .tolerated_failures(Tolerance::Count(1))
                .bypass_checks(check_section("b0-bypass"))
                .pre_checks(check_section("b0-pre"))
                .cont_checks(check_section("b0-cont"))
                .post_checks(check_section("b0-post"))
                .deferred_checks(check_section("b0-deferred"))
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
                .fail_plan(true)
                .action(ActionSpec::new::<FakeAction>("undo", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("announce", When::OnSuccess)
                .action(ActionSpec::new::<FakeAction>("announce", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("notify", When::Always)
                .action(ActionSpec::new::<FakeAction>("notify a", FakeReq::ok()))
                .action(ActionSpec::new::<FakeAction>("notify b", FakeReq::fail())),
        )
        .build();
    assign_ids(&mut plan);
    plan.submit_time = Some(at(0, 1));
    plan
}

fn error_with_source(text: &str) -> PluginError {
    let mut e = PluginError::new(format!("{text}: connection refused")).with_code(7);
    e.source = Some(Box::new(PluginError::permanent(format!("{text}: dns"))));
    e
}

/// [`sample_plan`] as it looks in the middle of a run: every status and time combination,
/// attempts with responses, errors (with causes) and one still running, a reason, a
/// heartbeat, paused.
pub fn sample_run(name: &str) -> Plan {
    let mut plan = sample_plan(name);
    let statuses = [
        Status::NotStarted,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Stopped,
    ];
    let locs: Vec<Loc> = plan.walk().map(|(loc, _)| loc).collect();
    for (i, loc) in locs.iter().enumerate() {
        let status = statuses[i % statuses.len()];
        let state = match status {
            Status::NotStarted => State::default(),
            Status::Running => State {
                status,
                start: Some(at(i as i64, 7)),
                end: None,
            },
            _ => State {
                status,
                start: Some(at(i as i64, 3)),
                end: Some(at(i as i64 + 1, 999_999_999)),
            },
        };
        *plan.state_at_mut(*loc).expect("a walked location") = state;
        if let Some(attempts) = plan.attempts_mut(*loc) {
            match i % 4 {
                0 => {}
                1 => attempts.push(Attempt {
                    start: at(i as i64, 11),
                    end: Some(at(i as i64, 12)),
                    outcome: Some(Outcome::Response(
                        Json::encode(&serde_json::json!({"ok": i}))
                            .unwrap_or_else(|_| Json::null()),
                    )),
                }),
                2 => {
                    attempts.push(Attempt {
                        start: at(i as i64, 1),
                        end: Some(at(i as i64, 2)),
                        outcome: Some(Outcome::Error(Box::new(error_with_source("first")))),
                    });
                    attempts.push(Attempt {
                        start: at(i as i64, 3),
                        end: None,
                        outcome: None,
                    });
                }
                _ => attempts.push(Attempt {
                    start: at(i as i64, 5),
                    end: Some(at(i as i64, 6)),
                    outcome: Some(Outcome::Error(Box::new(PluginError::permanent("gave up")))),
                }),
            }
        }
    }
    let run = plan.run_mut();
    *run.reason = Reason::Block;
    *run.heartbeat = Some(at(100, 999_999_999));
    *run.paused = true;
    plan
}

async fn must<T>(store: &dyn Store, what: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("[{}] {what} failed: {e}", store.describe()),
    }
}

async fn read_equals(store: &dyn Store, expected: &Plan, what: &str) {
    let got = must(
        store,
        &format!("reading plan {} ({what})", expected.id),
        store.read(expected.id).await,
    )
    .await;
    if got != *expected {
        let diff = first_difference(expected, &got);
        panic!(
            "[{}] {what}: the plan read back differs from the expected one: {diff}",
            store.describe()
        );
    }
}

/// The first object (or plan field) where two plans differ, for readable failures.
fn first_difference(expected: &Plan, got: &Plan) -> String {
    for ((loc, a), (_, b)) in expected.walk().zip(got.walk()) {
        let (sa, sb) = (a.state(), b.state());
        if sa != sb {
            return format!("state at {loc:?}: expected {sa:?}, got {sb:?}");
        }
        if let (ObjectRef::Action(x), ObjectRef::Action(y)) = (a, b)
            && (x.definition(), x.attempts()) != (y.definition(), y.attempts())
        {
            return format!("action at {loc:?}: expected {x:?}, got {y:?}");
        }
    }
    let own = |p: &Plan| (p.reason(), p.heartbeat(), p.is_paused());
    if own(expected) != own(got) {
        return format!(
            "reason/heartbeat/paused: expected {:?}, got {:?}",
            own(expected),
            own(got)
        );
    }
    format!("expected {expected:?}\ngot {got:?}")
}

/// Applies `changes` to `model` as the contract says: all of them, or none if one fails.
fn model_apply(model: &mut Plan, changes: &[Change]) -> Result<(), StoreError> {
    let mut scratch = model.clone();
    for c in changes {
        c.apply_to(&mut scratch)?;
    }
    *model = scratch;
    Ok(())
}

/// A plan read back right after `create` equals it — a fresh plan and one in mid-run.
pub async fn create_then_read(store: &dyn Store) {
    let fresh = sample_plan("create then read (fresh)");
    must(store, "create", store.create(&fresh).await).await;
    read_equals(store, &fresh, "a fresh plan").await;

    let running = sample_run("create then read (mid-run)");
    must(store, "create", store.create(&running).await).await;
    read_equals(store, &running, "a plan in mid-run").await;

    let mut bare = Plan::builder("no checks, no deferred")
        .block(
            Block::builder("b").sequence(Sequence::builder("s").action(ActionSpec::new::<
                FakeAction,
            >(
                "a", FakeReq::ok()
            ))),
        )
        .build();
    assign_ids(&mut bare);
    must(store, "create", store.create(&bare).await).await;
    read_equals(store, &bare, "a plan without checks or submit time").await;
}

/// Creating a plan whose id is taken fails with `AlreadyExists` and leaves the first one alone.
pub async fn duplicate_create(store: &dyn Store) {
    let plan = sample_run("duplicate");
    must(store, "create", store.create(&plan).await).await;
    let mut other = sample_plan("another plan with the same id");
    other.id = plan.id;
    let err = store.create(&other).await;
    assert_eq!(
        err,
        Err(StoreError::AlreadyExists(plan.id)),
        "[{}] a duplicate create",
        store.describe()
    );
    read_equals(store, &plan, "after a refused duplicate").await;
}

/// Reading, changing or deleting a plan that does not exist fails with `NotFound`.
pub async fn unknown_plan(store: &dyn Store) {
    let id = PlanId::new_v7();
    let d = store.describe();
    assert_eq!(
        store.read(id).await.err(),
        Some(StoreError::NotFound(id)),
        "[{d}] read of an unknown plan"
    );
    assert_eq!(
        store.delete(id).await,
        Err(StoreError::NotFound(id)),
        "[{d}] delete of an unknown plan"
    );
    assert_eq!(
        store.apply(id, &[]).await,
        Err(StoreError::NotFound(id)),
        "[{d}] an empty apply to an unknown plan"
    );
    for change in [
        Change::Reason(Reason::Block),
        Change::Heartbeat(at(1, 1)),
        Change::Paused(true),
        Change::Owner(crate::workflow::Owner {
            at: at(1, 1),
            by: "pid 1 on a host".to_owned(),
            epoch: Some(7),
            resumed: true,
        }),
        Change::Decided(crate::workflow::Decision::new(
            Loc::Action {
                parent: crate::workflow::Parent::Sequence { block: 0, seq: 0 },
                index: 0,
            },
            true,
            "alice",
            None,
        )),
        Change::State {
            loc: Loc::Plan,
            id: id.0,
            state: State {
                status: Status::Running,
                start: Some(at(1, 1)),
                end: None,
            },
        },
        Change::State {
            loc: Loc::Block(0),
            id: Uuid::now_v7(),
            state: State::default(),
        },
    ] {
        assert_eq!(
            store.apply(id, std::slice::from_ref(&change)).await,
            Err(StoreError::NotFound(id)),
            "[{d}] {change:?} applied to an unknown plan"
        );
    }
}

/// Every kind of change, on every kind of object, reads back as [`Change::apply_to`] says.
pub async fn every_change_kind(store: &dyn Store) {
    let mut model = sample_plan("every change kind");
    must(store, "create", store.create(&model).await).await;
    let objects: Vec<(Loc, Uuid, bool)> = model
        .walk()
        .map(|(loc, o)| (loc, o.id(), matches!(o, ObjectRef::Action(_))))
        .collect();
    let mut step = 0i64;
    for (loc, id, is_action) in objects {
        step += 1;
        let mut batches = vec![
            vec![Change::State {
                loc,
                id,
                state: State {
                    status: Status::Running,
                    start: Some(at(step, 1)),
                    end: None,
                },
            }],
            vec![Change::State {
                loc,
                id,
                state: State {
                    status: Status::Completed,
                    start: Some(at(step, 1)),
                    end: Some(at(step, 999)),
                },
            }],
        ];
        if is_action {
            let running = Attempt {
                start: at(step, 2),
                end: None,
                outcome: None,
            };
            let failed = Attempt {
                start: at(step, 2),
                end: Some(at(step, 3)),
                outcome: Some(Outcome::Error(Box::new(error_with_source("x")))),
            };
            let ok = Attempt {
                start: at(step, 4),
                end: Some(at(step, 5)),
                outcome: Some(Outcome::Response(
                    Json::from_text(r#"{"n": 1, "s": "ok"}"#).unwrap_or_else(|_| Json::null()),
                )),
            };
            batches.extend([
                vec![Change::Attempt {
                    loc,
                    id,
                    index: 0,
                    attempt: running,
                }],
                vec![Change::Attempt {
                    loc,
                    id,
                    index: 0,
                    attempt: failed,
                }],
                vec![Change::Attempt {
                    loc,
                    id,
                    index: 1,
                    attempt: ok.clone(),
                }],
                vec![Change::Attempt {
                    loc,
                    id,
                    index: 2,
                    attempt: ok.clone(),
                }],
                // Rewrites the last attempt.
                vec![Change::Attempt {
                    loc,
                    id,
                    index: 2,
                    attempt: ok.clone(),
                }],
                vec![Change::Reset { loc, id }],
                vec![Change::Attempt {
                    loc,
                    id,
                    index: 0,
                    attempt: ok,
                }],
            ]);
        }
        batches.extend([
            vec![Change::Reason(Reason::PostCheck)],
            vec![Change::Heartbeat(at(step, 77))],
            vec![Change::Paused(step % 2 == 0)],
        ]);
        for batch in batches {
            must(
                store,
                &format!("applying {batch:?}"),
                store.apply(model.id, &batch).await,
            )
            .await;
            model_apply(&mut model, &batch)
                .unwrap_or_else(|e| panic!("the model refused {batch:?}: {e}"));
            read_equals(store, &model, &format!("after {batch:?}")).await;
        }
    }
}

/// A batch with one bad change fails as a whole: nothing of it is applied.
pub async fn batches_are_atomic(store: &dyn Store) {
    let model = sample_run("atomic batches");
    must(store, "create", store.create(&model).await).await;
    let (action_loc, action_id) = model
        .walk()
        .find_map(|(loc, o)| {
            matches!(o, ObjectRef::Action(a) if a.attempts().is_empty()).then_some((loc, o.id()))
        })
        .expect("an action without attempts");
    let (block_loc, block_id) = (Loc::Block(0), model.blocks[0].id);
    let good = [
        Change::State {
            loc: action_loc,
            id: action_id,
            state: State {
                status: Status::Running,
                start: Some(at(9, 9)),
                end: None,
            },
        },
        Change::Attempt {
            loc: action_loc,
            id: action_id,
            index: 0,
            attempt: Attempt {
                start: at(9, 9),
                end: None,
                outcome: None,
            },
        },
        Change::Reason(Reason::Stopped),
        Change::Paused(false),
    ];
    let bad = [
        Change::State {
            loc: Loc::Block(999),
            id: Uuid::now_v7(),
            state: State::default(),
        },
        Change::Attempt {
            loc: block_loc,
            id: block_id,
            index: 0,
            attempt: Attempt {
                start: at(1, 1),
                end: None,
                outcome: None,
            },
        },
        Change::Reset {
            loc: block_loc,
            id: block_id,
        },
    ];
    for b in &bad {
        for position in 0..=good.len() {
            let mut batch = good.to_vec();
            batch.insert(position, b.clone());
            let result = store.apply(model.id, &batch).await;
            assert!(
                matches!(result, Err(StoreError::Permanent { .. })),
                "[{}] a batch with a bad change ({b:?} at {position}) must fail with a permanent error, got {result:?}",
                store.describe()
            );
            read_equals(store, &model, &format!("after the refused batch {batch:?}")).await;
        }
    }
}

/// A batch applied again, as the engine does when a write's answer was lost after the store
/// took it (a transient error): the interrupted attempt closed and the next one started, the
/// action's state, the heartbeat. Every store takes it, and the plan reads back as after one
/// apply.
pub async fn a_batch_applied_twice_reads_as_once(store: &dyn Store) {
    let mut model = sample_plan("applied twice");
    must(store, "create", store.create(&model).await).await;
    let (loc, id) = model
        .walk()
        .find_map(|(loc, o)| matches!(o, ObjectRef::Action(_)).then_some((loc, o.id())))
        .expect("an action");
    let attempt = |i: u32, ended: bool| Change::Attempt {
        loc,
        id,
        index: i,
        attempt: Attempt {
            start: at(i64::from(i), 0),
            end: ended.then(|| at(i64::from(i), 5)),
            outcome: ended
                .then(|| Outcome::Error(Box::new(PluginError::new(format!("interrupted {i}"))))),
        },
    };
    let first = [attempt(0, false)];
    let again = [
        attempt(0, true),
        attempt(1, false),
        Change::State {
            loc,
            id,
            state: State {
                status: Status::Running,
                start: Some(at(0, 0)),
                end: None,
            },
        },
        Change::Heartbeat(at(1, 1)),
    ];
    for batch in [&first[..], &again[..], &again[..]] {
        must(store, "apply", store.apply(model.id, batch).await).await;
    }
    for batch in [&first[..], &again[..]] {
        model_apply(&mut model, batch)
            .unwrap_or_else(|e| panic!("the model refused a change: {e}"));
    }
    read_equals(store, &model, "after a batch applied twice").await;
}

/// Random sequences of changes (seeded; about one batch in eight holds an invalid change)
/// applied to a plan with every kind of object: after every batch the store reads back exactly
/// what the model holds, and the store refuses exactly the batches the model refuses.
pub async fn random_changes(store: &dyn Store, seed: u64, batches: usize) {
    random_changes_in_flight(store, seed, batches, 1).await;
}

/// [`random_changes`] with `in_flight` batches sent at once (called in order, then awaited
/// together): a store that commits the writes queued at one moment together (group commit)
/// must give each the answer, and the plan the state, that the same batches one after another
/// give — a refused batch refused alone, the others applied in order around it.
pub async fn random_changes_in_flight(
    store: &dyn Store,
    seed: u64,
    batches: usize,
    in_flight: usize,
) {
    let in_flight = in_flight.max(1);
    let mut pending: Vec<(usize, Vec<Change>, Result<(), StoreError>)> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = sample_run(&format!("random changes, seed {seed:#x}"));
    must(store, "create", store.create(&model).await).await;
    let objects: Vec<(Loc, Uuid)> = model.walk().map(|(loc, o)| (loc, o.id())).collect();
    let actions: Vec<(Loc, Uuid)> = model
        .walk()
        .filter(|(_, o)| matches!(o, ObjectRef::Action(_)))
        .map(|(loc, o)| (loc, o.id()))
        .collect();
    let statuses = [
        Status::NotStarted,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Stopped,
    ];
    let reasons = [
        Reason::None,
        Reason::PreCheck,
        Reason::Block,
        Reason::DeferredCheck,
        Reason::ExceedRecovery,
    ];
    let time = |rng: &mut fastrand::Rng| at(rng.i64(0..1_000_000), rng.u32(0..1_000_000_000));
    let maybe_time = |rng: &mut fastrand::Rng| if rng.bool() { Some(time(rng)) } else { None };
    for n in 0..batches {
        let mut scratch = model.clone();
        let mut batch = Vec::new();
        for _ in 0..rng.usize(1..6) {
            let change = match rng.u8(0..12) {
                0..=2 => {
                    let (loc, id) = objects[rng.usize(..objects.len())];
                    Change::State {
                        loc,
                        id,
                        state: State {
                            status: statuses[rng.usize(..5)],
                            start: maybe_time(&mut rng),
                            end: maybe_time(&mut rng),
                        },
                    }
                }
                3..=5 => {
                    let (loc, id) = actions[rng.usize(..actions.len())];
                    let len = scratch.attempts_at(loc).map_or(0, <[_]>::len) as u32;
                    let outcome = match rng.u8(0..3) {
                        0 => None,
                        1 => Some(Outcome::Response(
                            Json::encode(
                                &serde_json::json!({"n": rng.u32(..), "text": "réponse ✓"}),
                            )
                            .unwrap_or_else(|_| Json::null()),
                        )),
                        _ => Some(Outcome::Error(Box::new(error_with_source(&format!(
                            "attempt {len}"
                        ))))),
                    };
                    let attempt = Attempt {
                        start: time(&mut rng),
                        end: maybe_time(&mut rng),
                        outcome,
                    };
                    // The next attempt, or the last one written again.
                    Change::Attempt {
                        loc,
                        id,
                        index: rng.u32(len.saturating_sub(1)..=len),
                        attempt,
                    }
                }
                6 => {
                    let (loc, id) = actions[rng.usize(..actions.len())];
                    Change::Reset { loc, id }
                }
                7 => Change::Reason(reasons[rng.usize(..reasons.len())]),
                8 => Change::Heartbeat(time(&mut rng)),
                9 => Change::Owner(crate::workflow::Owner {
                    at: time(&mut rng),
                    // Names as odd as a host's may be, quotes and all.
                    by: format!("pid {} on h\"ost-{}", rng.u32(..), rng.u8(..)),
                    epoch: rng.bool().then(|| rng.u64(..)),
                    resumed: rng.bool(),
                }),
                10 => {
                    let (loc, _) = actions[rng.usize(..actions.len())];
                    Change::Decided(crate::workflow::Decision {
                        gate: loc,
                        approved: rng.bool(),
                        by: format!("us\"er-{} (uid {})", rng.u8(..), rng.u32(..)),
                        at: time(&mut rng),
                        comment: rng
                            .bool()
                            .then(|| format!("why {} — ✓ 'quoted'", rng.u32(..))),
                    })
                }
                _ => Change::Paused(rng.bool()),
            };
            let _ = change.apply_to(&mut scratch);
            batch.push(change);
        }
        if rng.u8(0..8) == 0 {
            let bad = match rng.u8(0..3) {
                0 => Change::State {
                    loc: Loc::Sequence { block: 0, seq: 99 },
                    id: Uuid::now_v7(),
                    state: State::default(),
                },
                // An attempt of a block (a store refuses it; attempt indexes are checked above
                // the stores, by `check_changes`).
                1 => Change::Attempt {
                    loc: Loc::Block(0),
                    id: model.blocks[0].id,
                    index: 0,
                    attempt: Attempt {
                        start: time(&mut rng),
                        end: None,
                        outcome: None,
                    },
                },
                _ => Change::Reset {
                    loc: Loc::Block(1),
                    id: model.blocks[1].id,
                },
            };
            let position = rng.usize(..=batch.len());
            batch.insert(position, bad);
        }
        let expected = model_apply(&mut model, &batch);
        pending.push((n, batch, expected));
        if pending.len() < in_flight && n + 1 < batches {
            continue;
        }
        let answers = futures_util::future::join_all(
            pending
                .iter()
                .map(|(_, batch, _)| store.apply(model.id, batch))
                .collect::<Vec<_>>(),
        )
        .await;
        for ((n, batch, expected), got) in pending.drain(..).zip(answers) {
            assert_eq!(
                got.is_ok(),
                expected.is_ok(),
                "[{}] seed {seed:#x}, batch {n} ({in_flight} in flight): {batch:?}: the store answered {got:?}, the model {expected:?}",
                store.describe()
            );
        }
        read_equals(store, &model, &format!("seed {seed:#x}, after batch {n}")).await;
        pages_equal(store, &model, &format!("seed {seed:#x}, after batch {n}")).await;
    }
}

/// Every page of `expected` a store reads ([`Store::read_page`]) is the page of the plan it
/// reads whole: the same objects, the actions of the same sequences, the same counts.
async fn pages_equal(store: &dyn Store, expected: &Plan, what: &str) {
    use crate::storage::{PageSpec, PlanPage};
    let specs = [
        PageSpec::from(0),
        PageSpec {
            from: 0,
            len: 1,
            attention: 1,
        },
        PageSpec {
            from: 1,
            len: 1,
            attention: 0,
        },
        PageSpec {
            from: 0,
            len: 0,
            attention: usize::MAX,
        },
        PageSpec {
            from: usize::MAX,
            len: usize::MAX,
            attention: 0,
        },
    ];
    for spec in specs {
        let got = must(
            store,
            &format!("reading page {spec:?} of plan {} ({what})", expected.id),
            store.read_page(expected.id, spec).await,
        )
        .await;
        let want = PlanPage::of(expected.clone(), spec);
        if got != want {
            let diff = first_difference(want.plan(), got.plan());
            panic!(
                "[{}] {what}: page {spec:?} differs from the page of the whole plan: {diff}\n\
                 counts: expected {:?} {:?}, got {:?} {:?}; shown: expected {:?}, got {:?}",
                store.describe(),
                want.actions(),
                want.failure_counts(),
                got.actions(),
                got.failure_counts(),
                (0..want.plan().blocks().len())
                    .map(|b| want.shown(b).to_vec())
                    .collect::<Vec<_>>(),
                (0..got.plan().blocks().len())
                    .map(|b| got.shown(b).to_vec())
                    .collect::<Vec<_>>(),
            );
        }
    }
}

/// `count` applies to one plan, all created before any is awaited: each succeeds (each adds the
/// next attempt and moves the action's end and the heartbeat), none completes before one
/// created earlier, and the plan reads back as applying them in that order.
pub async fn concurrent_applies_complete_in_order(store: &dyn Store, count: usize) {
    let mut model = sample_plan("concurrent applies");
    must(store, "create", store.create(&model).await).await;
    let (loc, id) = model
        .walk()
        .find_map(|(loc, o)| matches!(o, ObjectRef::Action(_)).then_some((loc, o.id())))
        .expect("an action");
    let batches: Vec<Vec<Change>> = (0..count)
        .map(|i| {
            let t = at(i as i64, i as u32);
            vec![
                Change::Attempt {
                    loc,
                    id,
                    index: i as u32,
                    attempt: Attempt {
                        start: t,
                        end: Some(t),
                        outcome: Some(Outcome::Error(Box::new(PluginError::new(format!(
                            "try {i}"
                        ))))),
                    },
                },
                Change::State {
                    loc,
                    id,
                    state: State {
                        status: Status::Running,
                        start: Some(at(0, 0)),
                        end: Some(t),
                    },
                },
                Change::Heartbeat(t),
            ]
        })
        .collect();
    let mut writes: Vec<Option<_>> = batches
        .iter()
        .map(|batch| Some(store.apply(model.id, batch)))
        .collect();
    // Wait for some write, then every write created before it must be complete already.
    let mut checkpoints: Vec<usize> = vec![count / 3, count / 2, count - 1];
    checkpoints.retain(|&i| i < count);
    for checkpoint in checkpoints {
        if let Some(write) = writes[checkpoint].take() {
            must(
                store,
                &format!("concurrent apply {checkpoint}"),
                write.await,
            )
            .await;
        }
        for (i, slot) in writes.iter_mut().enumerate().take(checkpoint) {
            if let Some(write) = slot.take() {
                // Unconstrained: tokio's cooperative budget would report a ready write as pending.
                match tokio::task::unconstrained(write).now_or_never() {
                    Some(result) => must(store, &format!("concurrent apply {i}"), result).await,
                    None => panic!(
                        "[{}] apply {checkpoint} completed while apply {i}, created before it, had not",
                        store.describe()
                    ),
                }
            }
        }
    }
    for batch in &batches {
        model_apply(&mut model, batch)
            .unwrap_or_else(|e| panic!("the model refused {batch:?}: {e}"));
    }
    read_equals(store, &model, "after concurrent applies").await;
}

/// `list` with every filter, alone and combined, and paging: newest submitted first (plans
/// without a submit time last), ties broken by id, descending.
pub async fn list_filters_and_paging(store: &dyn Store) {
    let group = Uuid::now_v7();
    let other_group = Uuid::now_v7();
    let token = Uuid::now_v7().simple().to_string();
    let specs: [(&str, Status, Option<i64>, Uuid); 9] = [
        ("alpha", Status::NotStarted, Some(10), group),
        ("beta", Status::Running, Some(20), group),
        ("gamma", Status::Completed, Some(30), group),
        ("delta", Status::Failed, Some(30), group),
        ("epsilon", Status::Stopped, Some(40), group),
        ("zeta", Status::Completed, Some(50), group),
        ("eta", Status::Running, None, group),
        ("theta", Status::Completed, Some(60), other_group),
        ("Alpha upper", Status::Completed, Some(25), group),
    ];
    let mut summaries = Vec::new();
    for (name, status, submit, g) in specs {
        let mut plan = sample_plan(&format!("{name} {token}"));
        plan.group_id = Some(g);
        plan.submit_time = submit.map(|s| at(s, 5));
        must(store, "create", store.create(&plan).await).await;
        if status != Status::NotStarted {
            let state = State {
                status,
                start: Some(at(1, 2)),
                end: status.is_terminal().then(|| at(3, 4)),
            };
            let changes = [
                Change::State {
                    loc: Loc::Plan,
                    id: plan.id.0,
                    state,
                },
                Change::Reason(Reason::PreCheck),
            ];
            must(store, "apply", store.apply(plan.id, &changes).await).await;
            model_apply(&mut plan, &changes)
                .unwrap_or_else(|e| panic!("the model refused a change: {e}"));
        }
        summaries.push(PlanSummary::of(&plan));
    }
    let ours = |list: Vec<PlanSummary>| -> Vec<PlanSummary> {
        list.into_iter()
            .filter(|s| summaries.iter().any(|o| o.id == s.id))
            .collect()
    };
    let expected = |filter: &ListFilter| -> Vec<PlanSummary> {
        let mut all: Vec<PlanSummary> = summaries
            .iter()
            .filter(|s| filter.matches(s))
            .cloned()
            .collect();
        all.sort_by(|a, b| b.submit_time.cmp(&a.submit_time).then(b.id.cmp(&a.id)));
        all.into_iter()
            .skip(filter.offset)
            .take(filter.limit.unwrap_or(usize::MAX))
            .collect()
    };
    let names = |list: &[PlanSummary]| -> Vec<String> {
        list.iter()
            .map(|s| s.name.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    };
    let d = store.describe();

    // Unfiltered and by group: the order is spelled out, not only computed.
    let everything = ours(must(store, "list", store.list(&ListFilter::default()).await).await);
    let (gamma, delta) = (&summaries[2], &summaries[3]);
    let (tie_first, tie_second) = if gamma.id > delta.id {
        ("gamma", "delta")
    } else {
        ("delta", "gamma")
    };
    assert_eq!(
        names(&everything),
        [
            "theta", "zeta", "epsilon", tie_first, tie_second, "Alpha", "beta", "alpha", "eta"
        ],
        "[{d}] unfiltered: newest first, equal times by id descending, no submit time last"
    );
    assert_eq!(
        everything,
        expected(&ListFilter::default()),
        "[{d}] unfiltered listing"
    );

    let by_group = ListFilter {
        group_id: Some(group),
        ..ListFilter::default()
    };
    let listed = must(store, "list", store.list(&by_group).await).await;
    assert_eq!(listed.len(), 8, "[{d}] plans of one group");
    assert_eq!(listed, expected(&by_group), "[{d}] plans of one group");

    let filters = vec![
        ListFilter {
            statuses: vec![Status::Completed],
            group_id: Some(group),
            ..ListFilter::default()
        },
        ListFilter {
            statuses: vec![Status::Running, Status::Failed],
            group_id: Some(group),
            ..ListFilter::default()
        },
        ListFilter {
            statuses: vec![Status::NotStarted],
            group_id: Some(group),
            ..ListFilter::default()
        },
        ListFilter {
            group_id: Some(other_group),
            ..ListFilter::default()
        },
        ListFilter {
            group_id: Some(Uuid::now_v7()),
            ..ListFilter::default()
        },
        ListFilter {
            name_contains: Some(format!("lpha {token}")),
            ..ListFilter::default()
        },
        ListFilter {
            name_contains: Some(format!("Alpha upper {token}")),
            ..ListFilter::default()
        },
        ListFilter {
            name_contains: Some(format!("ALPHA {token}")),
            ..ListFilter::default()
        },
        ListFilter {
            name_contains: Some(token.clone()),
            group_id: Some(group),
            ..ListFilter::default()
        },
        ListFilter {
            submitted_after: Some(at(30, 5)),
            group_id: Some(group),
            ..ListFilter::default()
        },
        ListFilter {
            submitted_before: Some(at(30, 5)),
            group_id: Some(group),
            ..ListFilter::default()
        },
        ListFilter {
            submitted_after: Some(at(20, 5)),
            submitted_before: Some(at(40, 6)),
            group_id: Some(group),
            ..ListFilter::default()
        },
        ListFilter {
            statuses: vec![Status::Completed, Status::Stopped],
            group_id: Some(group),
            name_contains: Some("a ".to_owned()),
            submitted_after: Some(at(26, 0)),
            submitted_before: Some(at(55, 0)),
            ..ListFilter::default()
        },
    ];
    let expected_counts = [3, 3, 1, 1, 0, 1, 1, 0, 8, 4, 3, 5, 2];
    for (filter, count) in filters.iter().zip(expected_counts) {
        let listed = ours(must(store, "list", store.list(filter).await).await);
        assert_eq!(
            listed.len(),
            count,
            "[{d}] {filter:?} lists {:?}",
            names(&listed)
        );
        assert_eq!(listed, expected(filter), "[{d}] {filter:?}");
        // Every filter above names a group or this run's token: nothing else matches.
        let counted = must(store, "count", store.count(filter).await).await;
        assert_eq!(counted, count as u64, "[{d}] count of {filter:?}");
    }

    // Paging: pages of every size are the slices of the whole listing.
    let whole = expected(&by_group);
    for limit in 1..=whole.len() + 1 {
        let mut paged = Vec::new();
        for offset in (0..whole.len() + 2).step_by(limit) {
            let page_filter = ListFilter {
                offset,
                limit: Some(limit),
                ..by_group.clone()
            };
            let page = must(store, "list", store.list(&page_filter).await).await;
            assert!(
                page.len() <= limit,
                "[{d}] a page of {} plans with limit {limit}",
                page.len()
            );
            assert_eq!(page, expected(&page_filter), "[{d}] page {page_filter:?}");
            let counted = must(store, "count", store.count(&page_filter).await).await;
            assert_eq!(counted, page.len() as u64, "[{d}] count of {page_filter:?}");
            paged.extend(page);
        }
        assert_eq!(paged, whole, "[{d}] pages of {limit} put together");
    }
    let none = ListFilter {
        limit: Some(0),
        ..by_group.clone()
    };
    assert!(
        must(store, "list", store.list(&none).await)
            .await
            .is_empty(),
        "[{d}] limit 0"
    );
    let past = ListFilter {
        offset: 100,
        ..by_group.clone()
    };
    assert!(
        must(store, "list", store.list(&past).await)
            .await
            .is_empty(),
        "[{d}] offset past the end"
    );
    let huge = ListFilter {
        offset: usize::MAX,
        limit: Some(usize::MAX),
        ..by_group
    };
    assert!(
        must(store, "list", store.list(&huge).await)
            .await
            .is_empty(),
        "[{d}] offset usize::MAX"
    );
}

/// [`prune`] deletes the plans that ended before the cut — and only
/// those: not plans running or not started, not plans that ended after it, not plans outside
/// its filter; a dry run deletes nothing; a second prune finds nothing.
pub async fn prune_rules(store: &dyn Store) {
    let d = store.describe();
    let group = Uuid::now_v7();
    // (name, status, submitted, ended): the cut is at(50).
    let specs: [(&str, Status, i64, Option<i64>); 7] = [
        ("old-completed", Status::Completed, 1, Some(10)),
        ("old-failed", Status::Failed, 2, Some(20)),
        ("old-stopped", Status::Stopped, 3, Some(49)),
        ("recent", Status::Completed, 4, Some(51)),
        ("running", Status::Running, 5, None),
        ("not-started", Status::NotStarted, 6, None),
        ("at-the-cut", Status::Completed, 7, Some(50)),
    ];
    let mut ids = Vec::new();
    for (name, status, submit, end) in specs {
        let mut plan = sample_plan(name);
        plan.group_id = Some(group);
        plan.submit_time = Some(at(submit, 0));
        must(store, "create", store.create(&plan).await).await;
        if status != Status::NotStarted {
            let state = State {
                status,
                start: Some(at(submit, 1)),
                end: end.map(|e| at(e, 0)),
            };
            let changes = [Change::State {
                loc: Loc::Plan,
                id: plan.id.0,
                state,
            }];
            must(store, "apply", store.apply(plan.id, &changes).await).await;
        }
        ids.push((name, plan.id));
    }
    // Another group's old plan is outside the filter.
    let mut other = sample_plan("other group");
    other.group_id = Some(Uuid::now_v7());
    other.submit_time = Some(at(1, 0));
    must(store, "create", store.create(&other).await).await;
    let ended = [Change::State {
        loc: Loc::Plan,
        id: other.id.0,
        state: State {
            status: Status::Completed,
            start: Some(at(1, 1)),
            end: Some(at(2, 0)),
        },
    }];
    must(store, "apply", store.apply(other.id, &ended).await).await;

    let filter = ListFilter {
        group_id: Some(group),
        ..ListFilter::default()
    };
    let names =
        |list: &[PlanSummary]| -> Vec<String> { list.iter().map(|s| s.name.clone()).collect() };
    let remaining = || async {
        let mut left = names(&must(store, "list", store.list(&filter).await).await);
        left.sort();
        left
    };
    let all_names = {
        let mut all: Vec<String> = specs.iter().map(|s| s.0.to_owned()).collect();
        all.sort();
        all
    };
    let dry = must(
        store,
        "prune --dry-run",
        prune(store, &filter, at(50, 0), true)
            .await
            .map_err(|e| e.error),
    )
    .await;
    assert_eq!(
        names(&dry),
        ["old-stopped", "old-failed", "old-completed"],
        "[{d}] a dry run names the plans that ended before the cut, newest submitted first"
    );
    assert_eq!(
        remaining().await,
        all_names,
        "[{d}] a dry run deletes nothing"
    );
    let only_failed = ListFilter {
        statuses: vec![Status::Failed, Status::Running],
        ..filter.clone()
    };
    let failed = must(
        store,
        "prune",
        prune(store, &only_failed, at(50, 0), false)
            .await
            .map_err(|e| e.error),
    )
    .await;
    assert_eq!(
        names(&failed),
        ["old-failed"],
        "[{d}] statuses restrict a prune"
    );
    let pruned = must(
        store,
        "prune",
        prune(store, &filter, at(50, 0), false)
            .await
            .map_err(|e| e.error),
    )
    .await;
    assert_eq!(
        names(&pruned),
        ["old-stopped", "old-completed"],
        "[{d}] prune"
    );
    assert_eq!(
        remaining().await,
        ["at-the-cut", "not-started", "recent", "running"],
        "[{d}] what a prune keeps"
    );
    for (name, id) in &ids {
        let gone = matches!(store.read(*id).await, Err(StoreError::NotFound(_)));
        assert_eq!(
            gone,
            name.starts_with("old-"),
            "[{d}] after the prune, {name} is {}",
            if gone { "gone" } else { "there" }
        );
    }
    assert!(
        must(
            store,
            "prune",
            prune(store, &filter, at(50, 0), false)
                .await
                .map_err(|e| e.error)
        )
        .await
        .is_empty(),
        "[{d}] a second prune finds nothing"
    );
    store
        .read(other.id)
        .await
        .unwrap_or_else(|e| panic!("[{d}] a plan outside the filter was pruned: {e}"));
}

/// A running plan cannot be deleted; any other plan can, with everything in it: its id (and its
/// objects' ids) can be used again afterwards.
pub async fn delete_rules(store: &dyn Store) {
    let d = store.describe();
    for end in [Status::Completed, Status::Failed, Status::Stopped] {
        let plan = sample_run(&format!("delete after {end}"));
        must(store, "create", store.create(&plan).await).await;
        let mut model = plan.clone();
        let running = [Change::State {
            loc: Loc::Plan,
            id: plan.id.0,
            state: State {
                status: Status::Running,
                start: Some(at(1, 1)),
                end: None,
            },
        }];
        must(store, "apply", store.apply(plan.id, &running).await).await;
        model_apply(&mut model, &running)
            .unwrap_or_else(|e| panic!("the model refused a change: {e}"));
        assert_eq!(
            store.delete(plan.id).await,
            Err(StoreError::Running(plan.id)),
            "[{d}] deleting a running plan"
        );
        read_equals(store, &model, "after a refused delete").await;

        let ended = [Change::State {
            loc: Loc::Plan,
            id: plan.id.0,
            state: State {
                status: end,
                start: Some(at(1, 1)),
                end: Some(at(2, 2)),
            },
        }];
        must(store, "apply", store.apply(plan.id, &ended).await).await;
        must(store, "delete", store.delete(plan.id).await).await;
        assert_eq!(
            store.read(plan.id).await.err(),
            Some(StoreError::NotFound(plan.id)),
            "[{d}] reading a deleted plan"
        );
        assert_eq!(
            store.delete(plan.id).await,
            Err(StoreError::NotFound(plan.id)),
            "[{d}] deleting twice"
        );
        assert_eq!(
            store.apply(plan.id, &ended).await,
            Err(StoreError::NotFound(plan.id)),
            "[{d}] changing a deleted plan"
        );
        let listed = must(
            store,
            "list",
            store
                .list(&ListFilter {
                    group_id: plan.group_id,
                    ..ListFilter::default()
                })
                .await,
        )
        .await;
        assert!(
            listed.is_empty(),
            "[{d}] a deleted plan is still listed: {listed:?}"
        );

        // Nothing of it is left: the same plan (same ids) can be created again.
        let fresh = plan.definition();
        must(store, "re-create after delete", store.create(&fresh).await).await;
        read_equals(store, &fresh, "re-created after delete").await;
    }
    let never_started = sample_plan("delete before start");
    must(store, "create", store.create(&never_started).await).await;
    must(store, "delete", store.delete(never_started.id).await).await;
    assert_eq!(
        store.read(never_started.id).await.err(),
        Some(StoreError::NotFound(never_started.id)),
        "[{d}] read after delete"
    );
}

/// A plan of at least `actions` actions (in blocks of 100 sequences of 10 actions) round-trips,
/// takes changes and can be deleted.
pub async fn large_plan(store: &dyn Store, actions: usize) {
    let blocks = actions.div_ceil(1_000).max(1);
    let mut plan = Plan::builder(format!("large plan of {actions} actions"))
        .pre_checks(check_section("large-pre"))
        .blocks((0..blocks).map(|b| {
            Block::builder(format!("block {b}"))
                .concurrency(50)
                .sequences((0..100).map(move |s| {
                    Sequence::builder(format!("host-{b}-{s}")).actions((0..10).map(move |a| {
                        ActionSpec::new::<FakeAction>(
                            format!("step {a}"),
                            FakeReq::ok().tag(format!("{b}/{s}/{a}")),
                        )
                    }))
                }))
        }))
        .build();
    assign_ids(&mut plan);
    plan.submit_time = Some(at(5, 5));
    assert!(
        plan.action_count() >= actions,
        "the large plan has {} actions",
        plan.action_count()
    );
    let locs: Vec<Loc> = plan.walk().map(|(loc, _)| loc).collect();
    for (i, loc) in locs.iter().enumerate().step_by(7) {
        if let Some(attempts) = plan.attempts_mut(*loc) {
            attempts.push(Attempt {
                start: at(i as i64, 1),
                end: Some(at(i as i64, 2)),
                outcome: Some(Outcome::Response(Json::null())),
            });
            *plan.state_at_mut(*loc).expect("an action") = State {
                status: Status::Completed,
                start: Some(at(i as i64, 1)),
                end: Some(at(i as i64, 2)),
            };
        }
    }
    must(store, "create a large plan", store.create(&plan).await).await;
    read_equals(store, &plan, "a large plan").await;

    let mut model = plan.clone();
    let last = *locs.last().expect("objects");
    let last_action = locs
        .iter()
        .rev()
        .find(|l| model.action(**l).is_some())
        .copied()
        .expect("an action");
    let changes = vec![
        Change::State {
            loc: Loc::Plan,
            id: plan.id.0,
            state: State {
                status: Status::Completed,
                start: Some(at(0, 0)),
                end: Some(at(9, 9)),
            },
        },
        Change::State {
            loc: last,
            id: model.id_at(last).unwrap_or_default(),
            state: State {
                status: Status::Failed,
                start: None,
                end: Some(at(9, 9)),
            },
        },
        Change::Attempt {
            loc: last_action,
            id: model.id_at(last_action).unwrap_or_default(),
            index: 0,
            attempt: Attempt {
                start: at(8, 8),
                end: None,
                outcome: None,
            },
        },
    ];
    must(
        store,
        "apply to a large plan",
        store.apply(plan.id, &changes).await,
    )
    .await;
    model_apply(&mut model, &changes).unwrap_or_else(|e| panic!("the model refused a change: {e}"));
    read_equals(store, &model, "a large plan after changes").await;
    pages_equal(store, &model, "a large plan after changes").await;
    must(store, "delete a large plan", store.delete(plan.id).await).await;
    assert_eq!(
        store.read(plan.id).await.err(),
        Some(StoreError::NotFound(plan.id)),
        "[{}] a deleted large plan",
        store.describe()
    );
}

/// Unicode, quotes, SQL, HTML and control characters in names, descriptions, keys, requests,
/// responses and errors survive unchanged, and can be searched for.
pub async fn hostile_text(store: &dyn Store) {
    let nasty = "Déploiement 'prod' \"eu\" <script>alert('x')</script> 🚀 日本語 עברית ; DROP TABLE plans; -- %_\\";
    let control = "tab\there\nnewline\r\u{0}nul \u{202e}rtl \u{feff}bom";
    let mut plan = Plan::builder(nasty)
        .descr(control)
        .pre_checks(
            Checks::builder()
                .key(format!("{nasty}-key"))
                .action(CheckSpec::new::<FakeCheck>(nasty, FakeReq::ok().tag(nasty))),
        )
        .block(
            Block::builder(nasty).descr(control).key(control).sequence(
                Sequence::builder(nasty).descr(control).action(
                    ActionSpec::new::<FakeAction>(nasty, FakeReq::ok().tag(control))
                        .key(nasty)
                        .descr(nasty),
                ),
            ),
        )
        .deferred(
            DeferredBatch::builder(nasty, When::Always)
                .descr(control)
                .action(ActionSpec::new::<FakeAction>(control, FakeReq::ok())),
        )
        .build();
    assign_ids(&mut plan);
    plan.submit_time = Some(at(1, 1));
    plan.group_id = Some(Uuid::now_v7());
    must(store, "create", store.create(&plan).await).await;
    read_equals(store, &plan, "hostile text").await;

    let mut model = plan.clone();
    let loc = model
        .walk()
        .find_map(|(loc, o)| matches!(o, ObjectRef::Action(_)).then_some(loc))
        .expect("an action");
    let id = model.id_at(loc).unwrap_or_default();
    let changes = [
        Change::Attempt {
            loc,
            id,
            index: 0,
            attempt: Attempt {
                start: at(2, 2),
                end: Some(at(3, 3)),
                outcome: Some(Outcome::Error(Box::new(PluginError::new(format!(
                    "{nasty} {control}"
                ))))),
            },
        },
        Change::Attempt {
            loc,
            id,
            index: 1,
            attempt: Attempt {
                start: at(2, 2),
                end: Some(at(3, 3)),
                outcome: Some(Outcome::Response(
                    Json::encode(&serde_json::json!({ "echo": nasty, "ctl": control }))
                        .unwrap_or_else(|_| Json::null()),
                )),
            },
        },
    ];
    must(store, "apply", store.apply(plan.id, &changes).await).await;
    model_apply(&mut model, &changes).unwrap_or_else(|e| panic!("the model refused a change: {e}"));
    read_equals(store, &model, "hostile text in attempts").await;

    for needle in [
        "<script>",
        "日本語",
        "'prod' \"eu\"",
        "; DROP TABLE plans; --",
        "%_\\",
        "🚀",
    ] {
        let filter = ListFilter {
            name_contains: Some(needle.to_owned()),
            group_id: plan.group_id,
            ..ListFilter::default()
        };
        let listed = must(store, "list", store.list(&filter).await).await;
        assert_eq!(
            listed,
            vec![PlanSummary::of(&model)],
            "[{}] searching for {needle:?}",
            store.describe()
        );
    }
    for needle in ["%", "_", "<SCRIPT>"] {
        let filter = ListFilter {
            name_contains: Some(format!("x{needle}")),
            group_id: plan.group_id,
            ..ListFilter::default()
        };
        let listed = must(store, "list", store.list(&filter).await).await;
        assert!(
            listed.is_empty(),
            "[{}] {needle:?} is not a wildcard or case-insensitive: {listed:?}",
            store.describe()
        );
    }
}

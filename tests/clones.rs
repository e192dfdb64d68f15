//! The three clones of a plan (SPEC §12) and the failure report.
//!
//! - `clone_for_resubmit`: definitions only (no ids, states, attempts, reason), keys and secrets
//!   kept, same group; resubmitting it runs the same work under fresh ids.
//! - `clone_for_display`: everything kept except secrets, redacted in requests and responses; its
//!   export holds no ciphertext, and it cannot be resubmitted.
//! - `clone_retry_failed`: only the failed, stopped and never-run sequences, without their
//!   completed actions; completed (and bypassed) blocks dropped; checks and deferred batches kept;
//!   same group. Resubmitting it runs exactly the work that had not succeeded; `None` when
//!   everything succeeded.
//!
//! The plugins here decide their outcome by the request's tag from a map the test changes between
//! runs, so a clone (whose requests are those of the original) can fail first and succeed later.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coercion::prelude::*;
use coercion::secret::{REDACTED, SECRET_MARKER};
use coercion::testing::{FakeAction, FakeReq, Fakes, outline};
use coercion::workflow::{CheckSlot, ObjectRef, Outcome};
use coercion::{Error, State, Uuid};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// A plugin whose outcome is decided by its tag
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Succeed,
    Fail,
    /// Succeed after this long (tokio's clock).
    Slow(Duration),
}

#[derive(Default)]
struct ScriptInner {
    behaviours: HashMap<String, Behaviour>,
    calls: Vec<String>,
    tokens: Vec<String>,
}

/// Shared by the test and the plugins: what each tag does, and which tags were called.
#[derive(Clone, Default)]
struct Script(Arc<Mutex<ScriptInner>>);

impl Script {
    fn set(&self, tag: &str, behaviour: Behaviour) {
        self.0
            .lock()
            .unwrap()
            .behaviours
            .insert(tag.to_owned(), behaviour);
    }
    /// Every tag succeeds from now on.
    fn all_succeed(&self) {
        self.0.lock().unwrap().behaviours.clear();
    }
    /// The tags called since the last call of `take_calls`, in call order.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().calls)
    }
    /// The plaintext tokens the plugins got since the last call of `take_tokens`.
    fn take_tokens(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().tokens)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StepReq {
    tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<Secret<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StepResp {
    tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<Secret<String>>,
}

async fn step(script: &Script, req: StepReq) -> Result<StepResp, PluginError> {
    let behaviour = {
        let mut s = script.0.lock().unwrap();
        s.calls.push(req.tag.clone());
        if let Some(t) = &req.token {
            s.tokens.push(t.expose().clone());
        }
        s.behaviours
            .get(&req.tag)
            .copied()
            .unwrap_or(Behaviour::Succeed)
    };
    match behaviour {
        Behaviour::Succeed => {}
        Behaviour::Fail => {
            return Err(PluginError::permanent(format!(
                "{}: scripted failure",
                req.tag
            )));
        }
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
    }
    Ok(StepResp {
        tag: req.tag,
        token: req.token,
    })
}

/// An action plugin driven by the [`Script`].
#[coercion::plugin(name = "clones-test/step")]
#[derive(Clone, Default)]
struct Step {
    script: Script,
}

impl Plugin for Step {
    type Request = StepReq;
    type Response = StepResp;
    async fn execute(&self, _ctx: &Context, req: StepReq) -> Result<StepResp, PluginError> {
        step(&self.script, req).await
    }
}

/// A check plugin driven by the same [`Script`].
#[coercion::plugin(check, name = "clones-test/probe")]
#[derive(Clone, Default)]
struct Probe {
    script: Script,
}

impl Plugin for Probe {
    type Request = StepReq;
    type Response = StepResp;
    async fn execute(&self, _ctx: &Context, req: StepReq) -> Result<StepResp, PluginError> {
        step(&self.script, req).await
    }
}

async fn workstream() -> (Workstream, Script) {
    let script = Script::default();
    let registry = Registry::new()
        .with(Step {
            script: script.clone(),
        })
        .unwrap()
        .with(Probe {
            script: script.clone(),
        })
        .unwrap();
    (Workstream::in_memory(registry).await.unwrap(), script)
}

/// An action called `tag` whose plugin call is logged as `tag`.
fn a(tag: &str) -> ActionSpec {
    ActionSpec::new::<Step>(
        tag,
        StepReq {
            tag: tag.into(),
            token: None,
        },
    )
}

/// An action called `tag` that carries the secret `token`.
fn secret_action(tag: &str, token: &str) -> ActionSpec {
    ActionSpec::new::<Step>(
        tag,
        StepReq {
            tag: tag.into(),
            token: Some(Secret::new(token.into())),
        },
    )
}

/// A check section of one check called `tag`.
fn c(tag: &str) -> coercion::ChecksBuilder {
    Checks::builder().action(CheckSpec::new::<Probe>(
        tag,
        StepReq {
            tag: tag.into(),
            token: None,
        },
    ))
}

fn seq(name: &str, actions: impl IntoIterator<Item = ActionSpec>) -> coercion::SequenceBuilder {
    Sequence::builder(name).actions(actions)
}

fn sorted(tags: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = tags.into_iter().map(Into::into).collect();
    v.sort();
    v
}

/// The ids of every object of `plan` (the plan's own included).
fn all_ids(plan: &Plan) -> Vec<Uuid> {
    plan.walk()
        .map(|(_, o)| match o {
            ObjectRef::Plan(p) => p.id().0,
            ObjectRef::Checks(c) => c.id(),
            ObjectRef::Block(b) => b.id(),
            ObjectRef::Sequence(s) => s.id(),
            ObjectRef::Batch(b) => b.id(),
            ObjectRef::Action(a) => a.id(),
        })
        .collect()
}

/// The key of every object of `plan` that has one, with its path.
fn all_keys(plan: &Plan) -> Vec<(String, String)> {
    plan.walk()
        .filter_map(|(loc, o)| {
            let key = match o {
                ObjectRef::Plan(_) => None,
                ObjectRef::Checks(c) => c.key(),
                ObjectRef::Block(b) => b.key(),
                ObjectRef::Sequence(s) => s.key(),
                ObjectRef::Batch(b) => b.key(),
                ObjectRef::Action(a) => a.key(),
            };
            key.map(|k| (plan.path(loc).to_string(), k.to_owned()))
        })
        .collect()
}

/// The definition of every action: path, plugin, request, timeout, retries.
fn action_definitions(plan: &Plan) -> Vec<(String, String, String, Duration, u32)> {
    plan.walk()
        .filter_map(|(loc, o)| match o {
            ObjectRef::Action(a) => Some((
                plan.path(loc).to_string(),
                a.plugin().to_owned(),
                a.request_json().as_str().to_owned(),
                a.timeout(),
                a.retries(),
            )),
            _ => None,
        })
        .collect()
}

/// Asserts that no object of `plan` holds run-time state: a definition, ready to submit.
#[track_caller]
fn assert_definitions_only(plan: &Plan) {
    assert!(plan.id().is_nil());
    assert_eq!(plan.reason(), Reason::None);
    assert_eq!(plan.submit_time(), None);
    assert_eq!(plan.heartbeat(), None);
    assert!(!plan.is_paused());
    for (loc, obj) in plan.walk() {
        let path = plan.path(loc);
        assert_eq!(obj.state(), State::default(), "{path} keeps a state");
        if let ObjectRef::Action(a) = obj {
            assert!(a.attempts().is_empty(), "{path} keeps its attempts");
        }
    }
    assert!(
        all_ids(plan).iter().all(Uuid::is_nil),
        "a clone keeps ids: {:?}",
        all_ids(plan)
    );
}

/// Every `{"$secret": …}` value in a JSON text.
fn secret_values(json: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(s)) = map.get(SECRET_MARKER) {
                    out.push(s.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let value: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    let mut out = Vec::new();
    walk(&value, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// clone_for_resubmit
// ---------------------------------------------------------------------------------------------

fn deploy_plan(token: &str) -> Plan {
    Plan::builder("deploy")
        .descr("deploy the web tier")
        .meta(b"opaque".to_vec())
        .pre_checks(c("pre"))
        .block(
            Block::builder("web")
                .key("web")
                .concurrency(2)
                .tolerated_failures(1)
                .sequence(
                    seq(
                        "web-1",
                        [
                            secret_action("copy-1", token).key("copy-1").retries(2),
                            a("restart-1"),
                        ],
                    )
                    .key("web-1"),
                )
                .sequence(seq(
                    "web-2",
                    [a("copy-2").timeout(Duration::from_secs(5)), a("restart-2")],
                )),
        )
        .deferred(
            DeferredBatch::builder("notify", When::Always)
                .key("notify")
                .action(a("notify")),
        )
        .deferred_checks(c("final"))
        .build()
}

#[tokio::test(start_paused = true)]
async fn clone_for_resubmit_keeps_definitions_keys_and_secrets_and_runs_the_same_work() {
    let (ws, script) = workstream().await;
    let token = format!("token-{}", Uuid::now_v7());
    let original = ws.run(deploy_plan(&token)).await.unwrap();
    assert_eq!(
        original.status(),
        Status::Completed,
        "{}",
        outline(&original)
    );
    let first_calls = sorted(script.take_calls());
    assert_eq!(script.take_tokens(), [token.as_str()]);
    assert_eq!(original.group_id(), None);

    let clone = original.clone_for_resubmit();
    assert_definitions_only(&clone);
    // In the original's group: it had none, so its own id is the group.
    assert_eq!(clone.group_id(), Some(original.id().0));
    // Definitions, keys and (sealed) secrets are those of the original.
    assert_eq!(
        (clone.name(), clone.descr(), clone.meta()),
        (original.name(), original.descr(), original.meta())
    );
    assert_eq!(action_definitions(&clone), action_definitions(&original));
    assert_eq!(all_keys(&clone), all_keys(&original));
    assert_eq!(all_keys(&clone).len(), 4);
    assert_eq!(
        clone.blocks()[0].concurrency(),
        original.blocks()[0].concurrency()
    );
    assert_eq!(clone.blocks()[0].tolerated_failures(), Tolerance::Count(1));
    assert_eq!(clone.deferred()[0].when(), When::Always);
    assert_eq!(clone.walk().count(), original.walk().count());

    // Resubmitted, it runs the same work, secrets decrypted, under fresh ids in the same group.
    let again = ws.run(clone).await.unwrap();
    assert_eq!(again.status(), Status::Completed, "{}", outline(&again));
    assert_eq!(sorted(script.take_calls()), first_calls);
    assert_eq!(
        script.take_tokens(),
        [token.as_str()],
        "the secret was kept"
    );
    assert_eq!(again.group_id(), Some(original.id().0));
    let (old_ids, new_ids) = (all_ids(&original), all_ids(&again));
    assert!(new_ids.iter().all(|id| !id.is_nil()));
    assert_eq!(
        new_ids.iter().collect::<BTreeSet<_>>().len(),
        new_ids.len(),
        "ids are unique"
    );
    assert!(
        new_ids.iter().all(|id| !old_ids.contains(id)),
        "the resubmitted plan has fresh ids"
    );
    assert_eq!(all_keys(&again), all_keys(&original));

    // A clone of a plan that has a group stays in that group.
    assert_eq!(again.clone_for_resubmit().group_id(), Some(original.id().0));
    // A plan never submitted has no id, so its clone has no group.
    assert_eq!(deploy_plan(&token).clone_for_resubmit().group_id(), None);
}

#[tokio::test(start_paused = true)]
async fn clone_for_resubmit_of_a_failed_plan_runs_everything_again() {
    let (ws, script) = workstream().await;
    script.set("restart-1", Behaviour::Fail);
    script.set("restart-2", Behaviour::Fail);
    let original = ws.run(deploy_plan("t")).await.unwrap();
    assert_eq!(original.status(), Status::Failed, "{}", outline(&original));
    let first_calls = sorted(script.take_calls());
    script.all_succeed();
    let again = ws.run(original.clone_for_resubmit()).await.unwrap();
    assert_eq!(again.status(), Status::Completed, "{}", outline(&again));
    // Everything, the actions that had completed included.
    assert_eq!(sorted(script.take_calls()), first_calls);
}

// ---------------------------------------------------------------------------------------------
// clone_for_display
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn clone_for_display_keeps_state_and_redacts_secrets_in_requests_and_responses() {
    let (ws, script) = workstream().await;
    script.set("restart-2", Behaviour::Fail);
    let token = format!("token-{}", Uuid::now_v7());
    let plan = Plan::builder("display")
        .pre_checks(Checks::builder().action(CheckSpec::new::<Probe>(
            "pre",
            StepReq {
                tag: "pre".into(),
                token: Some(Secret::new(token.clone())),
            },
        )))
        .block(
            Block::builder("web")
                .tolerated_failures(1)
                .sequence(seq(
                    "web-1",
                    [secret_action("copy-1", &token), a("restart-1")],
                ))
                .sequence(seq(
                    "web-2",
                    [secret_action("copy-2", &token), a("restart-2")],
                )),
        )
        .deferred(
            DeferredBatch::builder("notify", When::Always).action(secret_action("notify", &token)),
        )
        .build();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert_eq!(script.take_tokens().len(), 4);
    assert_eq!(script.take_calls().len(), 6);

    let display = done.clone_for_display();
    // State kept: ids, statuses, times, attempts, errors, reason, group.
    assert_eq!(all_ids(&display), all_ids(&done));
    assert_eq!(
        (display.id(), display.group_id(), display.reason()),
        (done.id(), done.group_id(), done.reason())
    );
    assert_eq!(display.submit_time(), done.submit_time());
    assert_eq!(outline(&display), outline(&done));
    let errors = |p: &Plan| {
        p.failures()
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(errors(&display), errors(&done));
    assert_eq!(errors(&display).len(), 2, "{:?}", errors(&display));
    for ((_, d), (_, o)) in display.walk().zip(done.walk()) {
        assert_eq!(d.state(), o.state());
        if let (ObjectRef::Action(d), ObjectRef::Action(o)) = (d, o) {
            assert_eq!(d.attempts().len(), o.attempts().len());
            for (da, oa) in d.attempts().iter().zip(o.attempts()) {
                assert_eq!(
                    (da.start, da.end, da.error()),
                    (oa.start, oa.end, oa.error())
                );
            }
        }
    }

    // Secrets: sealed in the plan (4 requests, 4 responses echo them), redacted in the clone.
    let sealed = secret_values(&done.to_json());
    assert_eq!(sealed.len(), 8, "{}", done.to_json());
    assert!(sealed.iter().all(|s| s != REDACTED));
    let export = display.to_json();
    let redacted = secret_values(&export);
    assert_eq!(redacted.len(), 8, "{export}");
    assert!(redacted.iter().all(|s| s == REDACTED), "{redacted:?}");
    for s in &sealed {
        assert!(
            !export.contains(s.as_str()),
            "the export holds secret ciphertext {s}"
        );
    }
    // Responses are redacted too, the rest of them kept.
    let copy = display.blocks()[0].sequences()[0].actions()[0];
    match &copy.attempts()[0].outcome {
        Some(Outcome::Response(json)) => {
            assert!(json.as_str().contains(REDACTED), "{json:?}");
            assert!(json.as_str().contains("copy-1"), "{json:?}");
        }
        other => panic!("expected a response, got {other:?}"),
    }
    // The request keeps its other fields.
    assert!(copy.request_json().as_str().contains("copy-1"));
    // Typed access to a redacted secret fails instead of giving a fake value.
    assert!(copy.request::<Step>().is_err());

    // A display copy (or its export, imported) cannot be run: its secrets are gone.
    for plan in [
        display.clone_for_resubmit(),
        Plan::from_json(&export).unwrap().clone_for_resubmit(),
    ] {
        match ws.submit(plan).await {
            Err(Error::Invalid(problems)) => {
                assert!(
                    problems.iter().any(|p| p.to_string().contains("redacted")),
                    "{problems:?}"
                );
            }
            other => panic!("a redacted plan was accepted: {other:?}"),
        }
    }
    assert!(
        script.take_calls().is_empty(),
        "nothing of the redacted plan ran"
    );
}

// ---------------------------------------------------------------------------------------------
// clone_retry_failed
// ---------------------------------------------------------------------------------------------

/// - pre-check `pre`; deferred checks `final`;
/// - `b0`: everything completes (dropped from the retry);
/// - `b1` (tolerates 1, one at a time, post-check `b1-post`): `s1a` fails at `x2` after `x1`
///   completed (`x3` never runs), `s1b` completes — the block completes with a tolerated failure;
/// - `b2` (tolerates 0, two at a time): `s2b` fails at once at `z2` while `s2a` is in its slow
///   `z1`, which completes; then `s2a` stops (`z1b` never runs) and `s2c` never starts — the block
///   fails;
/// - `b3`: never runs;
/// - deferred batches `undo` (on failure) and `notify` (always).
fn retry_plan() -> Plan {
    Plan::builder("rollout")
        .pre_checks(c("pre"))
        .block(
            Block::builder("b0")
                .key("b0")
                .sequence(seq("s0a", [a("a1"), a("a2")]))
                .sequence(seq("s0b", [a("a3")])),
        )
        .block(
            Block::builder("b1")
                .key("b1")
                .tolerated_failures(1)
                .post_checks(c("b1-post"))
                .sequence(seq("s1a", [a("x1"), a("x2").key("x2"), a("x3")]).key("s1a"))
                .sequence(seq("s1b", [a("y1")])),
        )
        .block(
            Block::builder("b2")
                .concurrency(2)
                .sequence(seq("s2a", [a("z1"), a("z1b")]))
                .sequence(seq("s2b", [a("z2")]))
                .sequence(seq("s2c", [a("z3")])),
        )
        .block(
            Block::builder("b3")
                .sequence(seq("s3a", [a("w1")]))
                .sequence(seq("s3b", [a("w2"), a("w3")])),
        )
        .deferred(DeferredBatch::builder("undo", When::OnFailure).action(a("d-undo")))
        .deferred(DeferredBatch::builder("notify", When::Always).action(a("d-notify")))
        .deferred_checks(c("final"))
        .build()
}

/// The tags of the sequence actions of `plan` that did not complete.
fn unfinished_sequence_actions(plan: &Plan) -> BTreeSet<String> {
    plan.blocks()
        .iter()
        .flat_map(|b| b.sequences())
        .flat_map(|s| s.actions())
        .filter(|a| a.status() != Status::Completed)
        .map(|a| a.name().to_owned())
        .collect()
}

/// The shape of a plan's blocks: `block: sequence(action action), …; block: …`.
fn shape(plan: &Plan) -> String {
    plan.blocks()
        .iter()
        .map(|b| {
            let seqs: Vec<String> = b
                .sequences()
                .iter()
                .map(|s| {
                    let actions: Vec<&str> = s.actions().iter().map(|a| a.name()).collect();
                    format!("{}({})", s.name(), actions.join(" "))
                })
                .collect();
            format!("{}: {}", b.name(), seqs.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(start_paused = true)]
async fn clone_retry_failed_holds_exactly_the_work_that_did_not_succeed() {
    let (ws, script) = workstream().await;
    script.set("x2", Behaviour::Fail);
    script.set("z1", Behaviour::Slow(Duration::from_secs(1)));
    script.set("z2", Behaviour::Fail);
    let original = ws.run(retry_plan()).await.unwrap();
    assert_eq!(original.status(), Status::Failed);
    assert_eq!(original.reason(), Reason::Block);
    let expected_tree = "\
plan \"rollout\": Failed (Block)
  pre_checks: Completed
    action[0] \"pre\": Completed (attempts: 1)
  block[0] \"b0\": Completed
    sequence[0] \"s0a\": Completed
      action[0] \"a1\": Completed (attempts: 1)
      action[1] \"a2\": Completed (attempts: 1)
    sequence[1] \"s0b\": Completed
      action[0] \"a3\": Completed (attempts: 1)
  block[1] \"b1\": Completed
    sequence[0] \"s1a\": Failed
      action[0] \"x1\": Completed (attempts: 1)
      action[1] \"x2\": Failed (attempts: 1)
      action[2] \"x3\": NotStarted (attempts: 0)
    sequence[1] \"s1b\": Completed
      action[0] \"y1\": Completed (attempts: 1)
    post_checks: Completed
      action[0] \"b1-post\": Completed (attempts: 1)
  block[2] \"b2\": Failed
    sequence[0] \"s2a\": Stopped
      action[0] \"z1\": Completed (attempts: 1)
      action[1] \"z1b\": NotStarted (attempts: 0)
    sequence[1] \"s2b\": Failed
      action[0] \"z2\": Failed (attempts: 1)
    sequence[2] \"s2c\": NotStarted
      action[0] \"z3\": NotStarted (attempts: 0)
  block[3] \"b3\": NotStarted
    sequence[0] \"s3a\": NotStarted
      action[0] \"w1\": NotStarted (attempts: 0)
    sequence[1] \"s3b\": NotStarted
      action[0] \"w2\": NotStarted (attempts: 0)
      action[1] \"w3\": NotStarted (attempts: 0)
  deferred batch[0] \"undo\": Completed
    action[0] \"d-undo\": Completed (attempts: 1)
  deferred batch[1] \"notify\": Completed
    action[0] \"d-notify\": Completed (attempts: 1)
  deferred_checks: Completed
    action[0] \"final\": Completed (attempts: 1)
";
    assert_eq!(
        outline(&original),
        expected_tree,
        "the original ran as scripted"
    );
    script.take_calls();

    let retry = original
        .clone_retry_failed()
        .expect("some work did not succeed");
    assert_definitions_only(&retry);
    assert_eq!(
        retry.group_id(),
        Some(original.id().0),
        "same group as the original"
    );
    assert_eq!(retry.name(), original.name());
    // Failed, stopped and never-run sequences without their completed actions; completed
    // sequences and the completed block b0 dropped.
    assert_eq!(
        shape(&retry),
        "b1: s1a(x2 x3); b2: s2a(z1b), s2b(z2), s2c(z3); b3: s3a(w1), s3b(w2 w3)"
    );
    // Checks and deferred work kept, with their definitions.
    assert_eq!(
        retry
            .checks()
            .get(CheckSlot::Pre)
            .map(|c| c.actions()[0].name()),
        Some("pre")
    );
    assert_eq!(
        retry
            .checks()
            .get(CheckSlot::Deferred)
            .map(|c| c.actions()[0].name()),
        Some("final")
    );
    assert_eq!(
        retry.blocks()[0]
            .checks()
            .get(CheckSlot::Post)
            .map(|c| c.actions()[0].name()),
        Some("b1-post")
    );
    let batches: Vec<_> = retry
        .deferred()
        .iter()
        .map(|d| (d.name().to_owned(), d.when()))
        .collect();
    assert_eq!(
        batches,
        [
            ("undo".to_owned(), When::OnFailure),
            ("notify".to_owned(), When::Always)
        ]
    );
    assert_eq!(retry.blocks()[0].tolerated_failures(), Tolerance::Count(1));
    assert_eq!(retry.blocks()[1].concurrency().get(), 2);
    // Keys of the kept objects are kept (b0's went with it).
    let keys: Vec<String> = all_keys(&retry).into_iter().map(|(_, k)| k).collect();
    assert_eq!(keys, ["b1", "s1a", "x2"]);

    // Resubmitted with everything now succeeding, it runs exactly the sequence actions that had
    // not completed, plus the checks and the deferred work that runs on success.
    script.all_succeed();
    let retried = ws.run(retry).await.unwrap();
    assert_eq!(retried.status(), Status::Completed, "{}", outline(&retried));
    assert_eq!(retried.group_id(), Some(original.id().0));
    let calls = script.take_calls();
    let unfinished = unfinished_sequence_actions(&original);
    assert_eq!(
        unfinished,
        ["x2", "x3", "z1b", "z2", "z3", "w1", "w2", "w3"]
            .map(String::from)
            .into()
    );
    let called_actions: Vec<&String> = calls.iter().filter(|t| unfinished.contains(*t)).collect();
    assert_eq!(
        called_actions.len(),
        unfinished.len(),
        "each unfinished action ran once: {calls:?}"
    );
    assert_eq!(
        sorted(calls.clone()),
        sorted(
            unfinished
                .iter()
                .cloned()
                .chain(["pre", "b1-post", "d-notify", "final"].map(String::from))
        ),
        "the retry ran exactly the work that had not succeeded"
    );
    // Nothing left to retry.
    assert!(
        retried.clone_retry_failed().is_none(),
        "{}",
        outline(&retried)
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_of_a_retry_stays_in_the_group_and_shrinks() {
    let (ws, script) = workstream().await;
    script.set("x2", Behaviour::Fail);
    script.set("z2", Behaviour::Fail);
    let original = ws.run(retry_plan()).await.unwrap();
    assert_eq!(original.status(), Status::Failed);

    // First retry: w3 still fails.
    script.all_succeed();
    script.set("w3", Behaviour::Fail);
    let first = ws
        .run(original.clone_retry_failed().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status(), Status::Failed, "{}", outline(&first));
    script.take_calls();

    let second = first.clone_retry_failed().unwrap();
    assert_eq!(
        second.group_id(),
        Some(original.id().0),
        "the retry of a retry stays in the first group"
    );
    // b1 and b2 completed in the first retry: dropped; only w3 is left.
    assert_eq!(shape(&second), "b3: s3b(w3)");

    script.all_succeed();
    let done = ws.run(second).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert_eq!(
        sorted(script.take_calls()),
        sorted(["pre", "w3", "d-notify", "final"])
    );
    assert!(done.clone_retry_failed().is_none());
}

#[tokio::test(start_paused = true)]
async fn clone_retry_failed_is_none_when_everything_succeeded() {
    let (ws, _script) = workstream().await;
    let done = ws.run(retry_plan()).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert!(done.clone_retry_failed().is_none());
}

#[tokio::test(start_paused = true)]
async fn clone_retry_failed_drops_bypassed_blocks_and_is_none_for_a_bypassed_plan() {
    let (ws, script) = workstream().await;
    // A block whose bypass check passes completes without running its sequences: nothing to
    // retry there, while the failed block next to it is kept.
    script.set("broken", Behaviour::Fail);
    let plan = Plan::builder("bypass")
        .block(
            Block::builder("done already")
                .bypass_checks(c("skip?"))
                .sequence(seq("s", [a("never")])),
        )
        .block(Block::builder("broken").sequence(seq("t", [a("broken")])))
        .build();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(done.status(), Status::Failed, "{}", outline(&done));
    assert_eq!(done.blocks()[0].status(), Status::Completed);
    let retry = done.clone_retry_failed().unwrap();
    assert_eq!(shape(&retry), "broken: t(broken)");

    // A plan whose bypass check passes completed without running anything: nothing to retry.
    let plan = Plan::builder("bypassed plan")
        .bypass_checks(c("plan skip?"))
        .block(Block::builder("b").sequence(seq("s", [a("never")])))
        .build();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert_eq!(done.blocks()[0].status(), Status::NotStarted);
    assert!(
        done.clone_retry_failed().is_none(),
        "a bypassed plan succeeded: {:?}",
        done.clone_retry_failed().map(|p| shape(&p))
    );
}

#[tokio::test(start_paused = true)]
async fn clone_retry_failed_after_a_failed_pre_check_keeps_every_block() {
    let (ws, script) = workstream().await;
    script.set("pre", Behaviour::Fail);
    let original = ws.run(retry_plan()).await.unwrap();
    assert_eq!(original.reason(), Reason::PreCheck);
    let retry = original.clone_retry_failed().unwrap();
    assert_eq!(shape(&retry), shape(&retry_plan()));
    script.all_succeed();
    script.take_calls();
    let done = ws.run(retry).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    // Everything runs (the pre-check again too), the deferred work of a success only.
    let everything = [
        "pre", "a1", "a2", "a3", "x1", "x2", "x3", "y1", "b1-post", "z1", "z1b", "z2", "z3", "w1",
        "w2", "w3", "d-notify", "final",
    ];
    assert_eq!(sorted(script.take_calls()), sorted(everything));
}

// ---------------------------------------------------------------------------------------------
// The failure report
// ---------------------------------------------------------------------------------------------

/// Replaces every duration the report prints (` in 0ns`, ` in 12µs`, ` in 12ms`, ` in 1.5s`,
/// ` in 2m05s`, ` in 2h05m`, ` in 1d02h`) with ` in <d>`.
fn normalize_durations(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(" in ") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 4..];
        let len = after
            .find(|ch: char| !(ch.is_ascii_digit() || ".msµnhd".contains(ch)))
            .unwrap_or(after.len());
        let token = &after[..len];
        let is_duration =
            token.starts_with(|ch: char| ch.is_ascii_digit()) && token.ends_with(['s', 'm', 'h']);
        if is_duration {
            out.push_str(" in <d>");
            rest = &after[len..];
        } else {
            out.push_str(" in ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn fake(tag: &str, req: FakeReq) -> ActionSpec {
    ActionSpec::new::<FakeAction>(tag, req.tag(tag))
}

#[tokio::test]
async fn the_failure_report_is_a_summary_and_a_tree_of_what_failed() {
    let fakes = Fakes::new();
    let ms = Duration::from_millis;
    let plan = Plan::builder("deploy")
        .block(
            Block::builder("web")
                .tolerated_failures(1)
                .sequence(seq(
                    "web-1",
                    [
                        fake("copy", FakeReq::ok()),
                        fake("restart", FakeReq::fail().after(ms(20))).retries(2),
                    ],
                ))
                .sequence(seq("web-2", [fake("copy 2", FakeReq::ok())])),
        )
        .block(
            Block::builder("db")
                .concurrency(2)
                .sequence(seq(
                    "db-1",
                    [fake("migrate", FakeReq::fail_permanently().after(ms(20)))],
                ))
                .sequence(seq(
                    "db-2",
                    [
                        fake("backup", FakeReq::sleep(ms(150))),
                        fake("verify", FakeReq::ok()),
                    ],
                )),
        )
        .block(Block::builder("never").sequence(seq("n", [fake("unrun", FakeReq::ok())])))
        .build();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(done.status(), Status::Failed, "{}", outline(&done));

    let report = done.failure_report();
    let normalized = normalize_durations(&report).replace(&done.id().to_string(), "<id>");
    let expected = "\
plan \"deploy\" (<id>) Failed (reason: Block) in <d>: 2 of 5 sequences failed, 1 stopped, 2 action(s) failed
  block[0] \"web\"
    sequence[0] \"web-1\": Failed in <d>
      action[1] \"restart\": Failed in <d>, 3 attempt(s)
        error: restart: scripted failure on attempt 3
  block[1] \"db\": Failed in <d>
    sequence[0] \"db-1\": Failed in <d>
      action[0] \"migrate\": Failed in <d>, 1 attempt(s)
        error: migrate: scripted failure on attempt 1
    sequence[1] \"db-2\": Stopped in <d>
";
    assert_eq!(normalized, expected, "the report:\n{report}");
    // The durations are the real ones: three attempts of 20 ms and two pauses of ≥ 50 ms.
    let restart = &done.blocks()[0].sequences()[0].actions()[1];
    assert!(
        restart.state().duration().unwrap() >= ms(150),
        "{:?}",
        restart.state()
    );
    assert!(report.lines().nth(3).unwrap().contains(" in "), "{report}");
    assert_eq!(format!("{done}"), report, "Display prints the report");

    // The same failures, as data.
    let failures = done.failures();
    let paths: Vec<String> = failures.iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        paths,
        [
            r#"block[0] "web" / sequence[0] "web-1""#,
            r#"block[0] "web" / sequence[0] "web-1" / action[1] "restart""#,
            r#"block[1] "db""#,
            r#"block[1] "db" / sequence[0] "db-1""#,
            r#"block[1] "db" / sequence[0] "db-1" / action[0] "migrate""#,
            r#"block[1] "db" / sequence[1] "db-2""#,
        ]
    );
    assert_eq!(
        failures[1].to_string(),
        r#"block[0] "web" / sequence[0] "web-1" / action[1] "restart": Failed after 3 attempt(s): restart: scripted failure on attempt 3"#
    );
}

#[tokio::test(start_paused = true)]
async fn the_report_of_a_successful_plan_is_its_summary_line() {
    let fakes = Fakes::new();
    let plan = Plan::builder("fine")
        .block(Block::builder("b").sequence(seq("s", [fake("ok", FakeReq::ok())])))
        .build();
    let done = coercion::testing::run_in_memory(fakes.registry(), plan)
        .await
        .unwrap();
    let report = done.failure_report();
    assert_eq!(report.lines().count(), 1, "{report}");
    let normalized = normalize_durations(&report).replace(&done.id().to_string(), "<id>");
    assert_eq!(
        normalized,
        "plan \"fine\" (<id>) Completed in <d>: 0 of 1 sequences failed, 0 action(s) failed\n"
    );
    assert!(done.failures().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_plan_that_failed_only_in_its_checks_has_no_sequence_to_retry() {
    let (ws, script) = workstream().await;
    script.set("b-post", Behaviour::Fail);
    let plan = Plan::builder("checks only")
        .block(
            Block::builder("b")
                .post_checks(c("b-post"))
                .sequence(seq("s", [a("x")])),
        )
        .build();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(
        (done.status(), done.reason()),
        (Status::Failed, Reason::Block),
        "{}",
        outline(&done)
    );
    assert_eq!(done.blocks()[0].sequences()[0].status(), Status::Completed);
    // Every sequence completed: nothing for a retry-failed clone to hold (a block needs
    // sequences), as documented; the way to run it again is a resubmit clone.
    assert!(done.clone_retry_failed().is_none());
    script.all_succeed();
    script.take_calls();
    let again = ws.run(done.clone_for_resubmit()).await.unwrap();
    assert_eq!(again.status(), Status::Completed);
    assert_eq!(sorted(script.take_calls()), sorted(["x", "b-post"]));
}

// ---------------------------------------------------------------------------------------------
// Workstream::retry: the retry an operator asks for
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retry_runs_the_failed_work_as_a_new_plan_that_names_the_old_one_and_who_asked() {
    let (ws, script) = workstream().await;
    script.set("x2", Behaviour::Fail);
    script.set("z2", Behaviour::Fail);
    let original = ws.run(retry_plan()).await.unwrap();
    assert_eq!(original.status(), Status::Failed);
    assert_eq!(
        coercion::storage::retried_by(&**ws.store(), &original)
            .await
            .unwrap(),
        None
    );

    script.all_succeed();
    script.take_calls();
    let id = ws.retry(original.id(), "alice (uid 1000)").await.unwrap();
    let retried = ws.wait(id).await.unwrap();
    assert_eq!(retried.status(), Status::Completed, "{}", outline(&retried));
    let of = retried
        .retry_of()
        .expect("the new plan names the plan it retries");
    assert_eq!(of.plan, original.id());
    assert_eq!(of.requested_by, "alice (uid 1000)");
    assert_eq!(retried.group_id(), Some(original.id().0), "same group");
    assert_eq!(
        shape(&retried),
        shape(&original.clone_retry_failed().unwrap()),
        "exactly the work clone_retry_failed keeps"
    );
    assert!(
        !script.take_calls().contains(&"a1".to_owned()),
        "completed work does not run again"
    );
    // Both directions: the store finds the retry from the old plan; the stored plan keeps the
    // link through a read.
    assert_eq!(
        coercion::storage::retried_by(&**ws.store(), &original)
            .await
            .unwrap(),
        Some(id)
    );
    assert_eq!(
        ws.store()
            .read(id)
            .await
            .unwrap()
            .retry_of()
            .map(|r| r.plan),
        Some(original.id())
    );
    // A retry of the retry is a clone of it: it does not inherit the link to the first plan.
    assert!(retried.clone_for_resubmit().retry_of().is_none());

    // A second retry of the same plan would run the same work twice: refused, naming the retry.
    match ws.retry(original.id(), "bob (uid 1001)").await {
        Err(Error::CannotRetry(plan, why)) => {
            assert_eq!(plan, original.id());
            assert!(why.contains(&id.to_string()), "{why}");
        }
        other => panic!("a second retry must be refused, got {other:?}"),
    }
    // The retry completed: nothing to retry.
    match ws.retry(id, "alice (uid 1000)").await {
        Err(Error::CannotRetry(_, why)) => {
            assert!(why.contains("none of its sequences failed"), "{why}")
        }
        other => panic!("a completed plan has nothing to retry, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn retry_refuses_a_plan_that_has_not_ended_and_two_concurrent_retries_make_one_plan() {
    let (ws, script) = workstream().await;
    script.set("a1", Behaviour::Slow(Duration::from_secs(60)));
    let id = ws.submit(retry_plan()).await.unwrap();
    match ws.retry(id, "x").await {
        Err(Error::CannotRetry(_, why)) => assert!(why.contains("has not ended"), "{why}"),
        other => panic!("a plan not started cannot be retried, got {other:?}"),
    }
    ws.start(id).await.unwrap();
    match ws.retry(id, "x").await {
        Err(Error::CannotRetry(_, why)) => assert!(why.contains("it is Running"), "{why}"),
        other => panic!("a running plan cannot be retried, got {other:?}"),
    }
    ws.stop(id).await.unwrap();
    let stopped = ws.wait(id).await.unwrap();
    assert_eq!(stopped.status(), Status::Stopped);

    script.all_succeed();
    let (a, b) = tokio::join!(ws.retry(id, "first"), ws.retry(id, "second"));
    let made: Vec<PlanId> = [&a, &b]
        .into_iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(
        made.len(),
        1,
        "one of two concurrent retries is refused: {a:?} {b:?}"
    );
    let refused = if a.is_err() { a } else { b };
    assert!(
        matches!(refused, Err(Error::CannotRetry(..))),
        "{refused:?}"
    );
    let done = ws.wait(made[0]).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert!(done.retry_of().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_submitted_plan_cannot_claim_to_be_a_retry() {
    let (ws, script) = workstream().await;
    script.set("x2", Behaviour::Fail);
    let original = ws.run(retry_plan()).await.unwrap();
    // A plan whose JSON says it retries the failed one, asked by someone made up.
    let mut json: serde_json::Value = serde_json::from_str(&retry_plan().to_json()).unwrap();
    json["retry_of"] = serde_json::json!({"plan": original.id(), "requested_by": "root (uid 0)"});
    let forged = Plan::from_json(&json.to_string()).unwrap();
    assert!(forged.retry_of().is_some());
    script.all_succeed();
    let id = ws.submit(forged).await.unwrap();
    assert_eq!(
        ws.read(id).await.unwrap().retry_of(),
        None,
        "dropped at submit"
    );
    // So the real retry of the failed plan is not refused as already retried.
    let retry = ws.retry(original.id(), "alice (uid 1000)").await.unwrap();
    assert_eq!(
        ws.read(retry)
            .await
            .unwrap()
            .retry_of()
            .map(|r| r.requested_by.as_str()),
        Some("alice (uid 1000)")
    );
}

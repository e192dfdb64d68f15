//! What the two SQL stores share, written once: the column forms of values (times as integer
//! nanoseconds since the Unix epoch, statuses, reasons and object kinds as their names,
//! outcomes as JSON), a [`Change`] encoded for a writer ([`Op`]), the plan's own row decoded
//! ([`PlanRow`]), the checks a reader makes of what it reads back, the shape of a schema's
//! migrations and of a request to a writer.
//!
//! Each backend keeps its SQL, its schema, its error mapping, how it stores ids, names and
//! locations, and (SQLite) its journal.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::DateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::storage::{Change, StoreError};
use crate::workflow::{
    Action, Attempt, Loc, ObjectRef, Outcome, Plan, PlanId, Reason, State, Status, Timestamp,
};

/// A time as nanoseconds since the epoch; times outside 1677..2262 cannot be stored.
pub(crate) fn ns(t: Timestamp) -> Result<i64, StoreError> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        StoreError::permanent(format!(
            "time {t} cannot be stored: the store holds times between 1677-09-21 and 2262-04-11"
        ))
    })
}

pub(crate) fn opt_ns(t: Option<Timestamp>) -> Result<Option<i64>, StoreError> {
    t.map(ns).transpose()
}

pub(crate) fn from_ns(n: i64) -> Timestamp {
    DateTime::from_timestamp_nanos(n)
}

/// A bound for a time filter: times out of range clamp to the ends of the range.
pub(crate) fn clamp_ns(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() > 0 {
        i64::MAX
    } else {
        i64::MIN
    })
}

/// The name an object's kind is stored under (the `kind` column).
pub(crate) fn kind_of(object: &ObjectRef<'_>) -> &'static str {
    object.stored_kind()
}

/// A state in column form: status name, start and end.
#[derive(Debug, Clone)]
pub(crate) struct StateCols {
    pub status: &'static str,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl StateCols {
    pub fn of(state: &State) -> Result<StateCols, StoreError> {
        Ok(StateCols {
            status: state.status.as_str(),
            start: opt_ns(state.start)?,
            end: opt_ns(state.end)?,
        })
    }

    /// The state of columns read back.
    pub fn decode(status: &str, start: Option<i64>, end: Option<i64>) -> Result<State, String> {
        Ok(State {
            status: Status::from_str(status)?,
            start: start.map(from_ns),
            end: end.map(from_ns),
        })
    }
}

/// An attempt in column form.
#[derive(Debug, Clone)]
pub(crate) struct AttemptCols {
    pub start: i64,
    pub end: Option<i64>,
    pub outcome: Option<String>,
}

impl AttemptCols {
    pub fn of(attempt: &Attempt) -> Result<AttemptCols, StoreError> {
        let outcome = match &attempt.outcome {
            None => None,
            Some(o) => Some(serde_json::to_string(o).map_err(|e| {
                StoreError::permanent("an attempt's outcome does not serialize").caused_by(e)
            })?),
        };
        Ok(AttemptCols {
            start: ns(attempt.start)?,
            end: opt_ns(attempt.end)?,
            outcome,
        })
    }

    pub fn decode(start: i64, end: Option<i64>, outcome: Option<&str>) -> Result<Attempt, String> {
        let outcome = match outcome {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Outcome>(text)
                    .map_err(|e| format!("unreadable attempt outcome: {e}"))?,
            ),
        };
        Ok(Attempt {
            start: from_ns(start),
            end: end.map(from_ns),
            outcome,
        })
    }
}

/// An object of a plan being created (any but the plan itself), in column form.
pub(crate) struct EncodedObject<'p> {
    /// Its place in [`Plan::walk`]'s order.
    #[cfg_attr(
        not(feature = "sqlite"),
        allow(dead_code, reason = "SQLite orders rows by it")
    )]
    pub position: usize,
    pub id: Uuid,
    pub loc: Loc,
    pub kind: &'static str,
    pub state: StateCols,
    /// Whether its state is not the default one or it has attempts: it needs a row where a
    /// store keeps rows only for such objects.
    #[cfg_attr(
        not(feature = "sqlite"),
        allow(dead_code, reason = "SQLite omits rows by it")
    )]
    pub touched: bool,
    /// Its attempts, if it is an action.
    pub attempts: &'p [Attempt],
}

/// The objects of `plan` other than the plan itself, in walk order, in column form. Fails if
/// two objects share an id (ids address objects in the store) or a time is out of range.
pub(crate) fn encode_objects(
    plan: &Plan,
) -> impl Iterator<Item = Result<EncodedObject<'_>, StoreError>> {
    let mut seen: HashMap<Uuid, Loc> = HashMap::new();
    plan.walk()
        .enumerate()
        .filter_map(move |(position, (loc, object))| {
            let id = object.id();
            if let Some(first) = seen.insert(id, loc) {
                return Some(Err(StoreError::permanent(format!(
                    "plan {}: object id {id} is used twice (at {} and at {}); ids must be unique within a plan",
                    plan.id,
                    plan.path(first),
                    plan.path(loc)
                ))));
            }
            let attempts: &[Attempt] = match object {
                ObjectRef::Plan(_) => return None,
                ObjectRef::Action(action) => action.attempts(),
                _ => &[],
            };
            let state = object.state();
            Some(StateCols::of(&state).map(|cols| EncodedObject {
                position,
                id,
                loc,
                kind: kind_of(&object),
                state: cols,
                touched: state != State::default() || !attempts.is_empty(),
                attempts,
            }))
        })
}

/// One change as the rows it writes. A [`Change`] is lowered here, once ([`Op::of`]); the
/// writers apply these forms without knowing which change they came from, so that a new
/// `Change` that writes columns the stores already have touches `storage/mod.rs` (the variant,
/// [`Change::apply_to`], [`check_changes`](crate::storage::check_changes)) and this function,
/// nothing else. Objects are named by their id and location: the writer checks them against
/// what it stores.
#[derive(Debug)]
pub(crate) enum Op {
    /// Columns of the plan's own row (boxed: rare, and larger than the others).
    Plan(Box<PlanSet>),
    /// The state of a non-plan object.
    ObjectState {
        id: Uuid,
        loc: Loc,
        state: StateCols,
    },
    /// Sets attempt `index` of an action and drops later ones.
    Attempt {
        id: Uuid,
        loc: Loc,
        index: u32,
        cols: AttemptCols,
    },
    /// An action back to `NotStarted` without attempts.
    Reset { id: Uuid, loc: Loc },
}

/// What one change writes on the plan's own row: the columns it sets (`None`: left as they
/// are) and the JSON values it appends to the row's lists. Each backend applies it with
/// statements of its own (SQLite writes the indexed state apart from the rest); a new column is
/// a field here, a column in each schema, and those statements.
#[derive(Debug, Default)]
pub(crate) struct PlanSet {
    /// Status, start and end.
    pub state: Option<StateCols>,
    /// The failure reason's name.
    pub reason: Option<String>,
    /// The heartbeat (on a shared store, also a renewal of the writer's lease).
    pub heartbeat: Option<i64>,
    /// Whether the plan is paused.
    pub paused: Option<bool>,
    /// An owner to append to `resumptions`, as JSON.
    pub owner: Option<String>,
    /// A gate's decision to append to `decisions`, as JSON.
    pub decision: Option<String>,
}

impl Op {
    /// `change`, a change of plan `plan`, as the rows it writes.
    pub fn of(plan: PlanId, change: &Change) -> Result<Op, StoreError> {
        let json = |value: Result<String, serde_json::Error>, what: &str| {
            value.map_err(|e| {
                StoreError::permanent(format!("{what} does not serialize")).caused_by(e)
            })
        };
        let set = |set: PlanSet| Ok(Op::Plan(Box::new(set)));
        match change {
            Change::State {
                loc: Loc::Plan,
                id,
                state,
            } => {
                if *id != plan.0 {
                    return Err(StoreError::permanent(format!(
                        "plan {plan} has no object {id} at Plan"
                    )));
                }
                set(PlanSet {
                    state: Some(StateCols::of(state)?),
                    ..PlanSet::default()
                })
            }
            Change::State { loc, id, state } => Ok(Op::ObjectState {
                id: *id,
                loc: *loc,
                state: StateCols::of(state)?,
            }),
            Change::Attempt {
                loc,
                id,
                index,
                attempt,
            } => Ok(Op::Attempt {
                id: *id,
                loc: *loc,
                index: *index,
                cols: AttemptCols::of(attempt)?,
            }),
            Change::Reset { loc, id } => Ok(Op::Reset { id: *id, loc: *loc }),
            Change::Reason(r) => set(PlanSet {
                reason: Some(r.to_string()),
                ..PlanSet::default()
            }),
            Change::Heartbeat(t) => set(PlanSet {
                heartbeat: Some(ns(*t)?),
                ..PlanSet::default()
            }),
            Change::Paused(p) => set(PlanSet {
                paused: Some(*p),
                ..PlanSet::default()
            }),
            Change::Owner(o) => set(PlanSet {
                owner: Some(json(serde_json::to_string(o), "an owner")?),
                ..PlanSet::default()
            }),
            Change::Decided(d) => set(PlanSet {
                decision: Some(json(serde_json::to_string(d), "a gate's decision")?),
                ..PlanSet::default()
            }),
        }
    }
}

/// A write sent to a writer, and where its result goes.
pub(crate) struct Request<W> {
    pub write: W,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Why a write of a group failed: its own error (the others may still commit), or a failure of
/// the database or the connection that spoils the whole group.
pub(crate) enum Failure {
    Request(StoreError),
    Group(StoreError),
}

impl Failure {
    pub fn into_error(self) -> StoreError {
        match self {
            Failure::Request(e) | Failure::Group(e) => e,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Request(e)
    }
}

/// What a store's writers did with the writes sent to them.
#[derive(Debug, Default)]
pub(crate) struct GroupCounters {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub failed_writes: AtomicU64,
    pub largest_group: AtomicU64,
}

impl GroupCounters {
    /// A group of `n` writes is about to run.
    pub fn group(&self, n: usize) {
        let n = n as u64;
        self.writes.fetch_add(n, Ordering::Relaxed);
        self.largest_group.fetch_max(n, Ordering::Relaxed);
    }

    /// A transaction committed.
    pub fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// The results of a group's writes are known.
    pub fn results(&self, results: &[Result<(), StoreError>]) {
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        self.failed_writes.fetch_add(failed, Ordering::Relaxed);
    }
}

/// Plan `id` read back from `store` is not what was written.
pub(crate) fn corrupt(store: &str, id: PlanId, what: impl std::fmt::Display) -> StoreError {
    StoreError::permanent(format!(
        "{store}: plan {id} is stored inconsistently: {what}"
    ))
}

/// The columns of a plan's own row (and its definition) as read back.
pub(crate) struct PlanRow<'a> {
    pub status: &'a str,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub reason: &'a str,
    pub heartbeat: Option<i64>,
    pub paused: bool,
    pub definition: &'a str,
    /// The `resumptions` column: the owners, a JSON array.
    pub owners: &'a str,
    pub decisions: &'a str,
}

/// The owner of a plan's summary: the last element of its owners (column `resumptions`), as
/// JSON text; `None` for a plan not started.
pub fn decode_owner(
    store: &str,
    id: PlanId,
    json: Option<&str>,
) -> Result<Option<crate::workflow::Owner>, StoreError> {
    json.map(|j| serde_json::from_str(j).map_err(|e| corrupt(store, id, format!("its owner: {e}"))))
        .transpose()
}

impl PlanRow<'_> {
    /// Plan `id` as its row says, every object as in the definition; fails naming what is
    /// unreadable.
    pub fn decode(&self, store: &str, id: PlanId) -> Result<Plan, StoreError> {
        let plan = match self.definition.strip_prefix(SKELETON_OPEN) {
            Some(_) => serde_json::from_str::<Skeleton>(self.definition)
                .map(|s| s.skeleton)
                .map_err(|e| corrupt(store, id, format_args!("its definition: {e}")))?,
            None => Plan::from_json(self.definition).map_err(|e| corrupt(store, id, e))?,
        };
        self.finish(store, id, plan)
    }

    /// Whether the definition is a skeleton wrapped as [`wrap_skeleton`] makes it: the
    /// sequences are in `sequence_definitions`.
    #[cfg(feature = "postgres")]
    pub fn is_wrapped_skeleton(&self) -> bool {
        self.definition.starts_with(SKELETON_OPEN)
    }

    /// `plan`, read from the definition, with the row's own columns.
    pub fn finish(&self, store: &str, id: PlanId, mut plan: Plan) -> Result<Plan, StoreError> {
        let bad = |e: String| corrupt(store, id, e);
        if plan.id != id {
            return Err(bad(format!("its definition carries id {}", plan.id)));
        }
        let run = plan.run_mut();
        *run.state = StateCols::decode(self.status, self.start, self.end).map_err(bad)?;
        *run.reason = Reason::from_str(self.reason).map_err(bad)?;
        *run.heartbeat = self.heartbeat.map(from_ns);
        *run.paused = self.paused;
        *run.owners = serde_json::from_str(self.owners)
            .map_err(|e| bad(format!("its owners (column resumptions): {e}")))?;
        *run.decisions = serde_json::from_str(self.decisions)
            .map_err(|e| bad(format!("its gates' decisions: {e}")))?;
        Ok(plan)
    }
}

/// Appends attempt `idx`, read back, to `action` (object `object` of plan `id`): attempts are
/// read in order, so one that does not come next follows a gap.
pub(crate) fn push_attempt(
    store: &str,
    id: PlanId,
    object: Uuid,
    attempts: Option<&mut Vec<Attempt>>,
    idx: i64,
    attempt: Attempt,
) -> Result<(), StoreError> {
    let attempts = attempts.ok_or_else(|| {
        corrupt(
            store,
            id,
            format_args!("attempts of {object}, which is not an action"),
        )
    })?;
    if usize::try_from(idx).ok() != Some(attempts.len()) {
        return Err(corrupt(
            store,
            id,
            format_args!("attempt {idx} of action {object} follows a gap"),
        ));
    }
    attempts.push(attempt);
    Ok(())
}

/// A schema's migrations, oldest first: the SQL of step `i` takes the schema from version `i`
/// to `i + 1`. The last one's version is the schema this build writes.
pub(crate) struct Migrations(pub &'static [&'static str]);

impl Migrations {
    /// The schema version this build reads and writes.
    pub const fn latest(&self) -> i64 {
        self.0.len() as i64
    }

    /// The steps after version `current`, each with the version it brings the schema to.
    pub fn after(&self, current: i64) -> impl Iterator<Item = (i64, &'static str)> + '_ {
        (1..)
            .zip(self.0.iter().copied())
            .filter(move |(version, _)| *version > current)
    }
}

/// How many consecutive sequences of a block a row of `sequence_definitions` holds at most
/// (SQLite's schema version 5 migration splits by the same number).
pub(crate) const CHUNK: usize = 64;

/// One row of `sequence_definitions`: consecutive sequences of a block, as stored.
#[derive(Debug)]
pub(crate) struct ChunkDef {
    pub block: i64,
    /// The index of its first sequence.
    pub first: i64,
    /// The JSON array of each sequence's number of actions.
    pub counts: String,
    /// The JSON array of the sequences without their actions (`actions: []`).
    pub heads: String,
    /// The JSON array of each sequence's actions (an array).
    pub bodies: String,
}

/// The definition of `plan` in pieces: the plan without its blocks' sequences, and its
/// sequences in chunks (see SQLite's schema version 5).
pub(crate) fn definition_parts(plan: &Plan) -> Result<(String, Vec<ChunkDef>), StoreError> {
    if plan.is_definition() {
        parts_of(plan)
    } else {
        parts_of(&plan.definition())
    }
}

/// The pieces of `def`, a plan that is only a definition.
fn parts_of(def: &Plan) -> Result<(String, Vec<ChunkDef>), StoreError> {
    let failed = |e: serde_json::Error| {
        StoreError::permanent(format!("plan {} does not serialize", def.id)).caused_by(e)
    };
    let mut chunks = Vec::new();
    for (b, block) in def.blocks.iter().enumerate() {
        for (c, seqs) in block.sequences.chunks(CHUNK).enumerate() {
            let counts: Vec<usize> = seqs.iter().map(|s| s.actions.len()).collect();
            let heads: Vec<crate::workflow::Sequence> = seqs
                .iter()
                .map(crate::workflow::Sequence::without_actions)
                .collect();
            let bodies: Vec<&Vec<crate::workflow::Action>> =
                seqs.iter().map(|s| &s.actions).collect();
            chunks.push(ChunkDef {
                block: b as i64,
                first: (c * CHUNK) as i64,
                counts: serde_json::to_string(&counts).map_err(failed)?,
                heads: serde_json::to_string(&heads).map_err(failed)?,
                bodies: serde_json::to_string(&bodies).map_err(failed)?,
            });
        }
    }
    let skeleton = serde_json::to_string(&def.without_sequences()).map_err(failed)?;
    Ok((skeleton, chunks))
}

/// How a definition without its sequences begins when a store wraps it ([`wrap_skeleton`]).
const SKELETON_OPEN: &str = "{\"skeleton\":";

/// A definition without its sequences, wrapped so that a build that does not know of
/// `sequence_definitions` cannot read it as a plan of empty blocks (it fails, naming a missing
/// field, instead of running nothing): PostgreSQL, where workers of two versions share a store
/// during an upgrade.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Skeleton {
    skeleton: Plan,
}

/// `skeleton` (the JSON of a plan without its sequences) wrapped as `{"skeleton": …}`.
#[cfg(feature = "postgres")]
pub(crate) fn wrap_skeleton(skeleton: &str) -> String {
    format!("{SKELETON_OPEN}{skeleton}}}")
}

/// A row of `sequence_definitions` as read: a chunk of consecutive sequences of a block.
pub(crate) struct ChunkRow<'a> {
    pub block: i64,
    pub first: i64,
    pub counts: &'a str,
    pub heads: &'a str,
}

impl ChunkRow<'_> {
    /// How many actions each of the chunk's sequences has, and each without its actions.
    pub fn decode(&self) -> Result<(Vec<u32>, Vec<crate::workflow::Sequence>), String> {
        let counts: Vec<u32> =
            serde_json::from_str(self.counts).map_err(|e| self.error(format!("counts: {e}")))?;
        let heads: Vec<crate::workflow::Sequence> =
            serde_json::from_str(self.heads).map_err(|e| self.error(format!("heads: {e}")))?;
        if counts.len() != heads.len() {
            return Err(self.error(format!("{} counts but {} heads", counts.len(), heads.len())));
        }
        if let Some(i) = heads.iter().position(|h| !h.actions.is_empty()) {
            return Err(self.error(format!(
                "the head of sequence {} holds actions",
                self.first + i as i64
            )));
        }
        Ok((counts, heads))
    }

    /// Appends the chunk's sequences, without their actions, to `plan`; their counts.
    pub fn place(&self, plan: &mut Plan) -> Result<Vec<u32>, String> {
        let (counts, heads) = self.decode()?;
        for (i, head) in heads.into_iter().enumerate() {
            place_sequence(plan, self.block, self.first + i as i64, head)
                .map_err(|e| self.error(e))?;
        }
        Ok(counts)
    }

    /// Appends the chunk's sequences with their actions (`bodies`) to `plan`.
    pub fn attach(&self, plan: &mut Plan, bodies: &str) -> Result<(), String> {
        let (counts, heads) = self.decode()?;
        let bodies: Vec<Vec<Action>> =
            serde_json::from_str(bodies).map_err(|e| self.error(format!("bodies: {e}")))?;
        if bodies.len() != heads.len() {
            return Err(self.error(format!("{} heads but {} bodies", heads.len(), bodies.len())));
        }
        for (i, ((mut head, body), n)) in heads.into_iter().zip(bodies).zip(counts).enumerate() {
            let seq = self.first + i as i64;
            if body.len() != n as usize {
                return Err(self.error(format!(
                    "sequence {seq} has {} actions, its row says {n}",
                    body.len()
                )));
            }
            head.actions = body;
            place_sequence(plan, self.block, seq, head).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn error(&self, e: impl std::fmt::Display) -> String {
        format!(
            "the sequences of block {} from {}: {e}",
            self.block, self.first
        )
    }
}

/// Appends `sequence`, read as sequence `seq` of block `block`, to the plan: sequences are
/// read in order, so one that does not come next is out of place.
fn place_sequence(
    plan: &mut Plan,
    block: i64,
    seq: i64,
    sequence: crate::workflow::Sequence,
) -> Result<(), String> {
    let blocks = plan.blocks.len();
    let target = usize::try_from(block)
        .ok()
        .and_then(|b| plan.blocks.get_mut(b))
        .ok_or_else(|| {
            format!("a sequence of block {block}, which is not in its definition ({blocks} blocks)")
        })?;
    if usize::try_from(seq).ok() != Some(target.sequences.len()) {
        return Err(format!(
            "sequence {seq} of block {block} follows sequence {} of it",
            target.sequences.len() as i64 - 1
        ));
    }
    target.sequences.push(sequence);
    Ok(())
}

//! Reading a page of a plan ([`Store::read_page`](crate::storage::Store::read_page)) without
//! reading the whole plan, in one `REPEATABLE READ` snapshot: the definition without its
//! sequences, every sequence's head, the states of everything but the sequences' actions and
//! of the page's actions (by id), the page's chunks of actions, and the actions counted by
//! status in SQL. A plan created before schema version 7 (its definition whole) is cut from a
//! whole read.

use std::collections::HashMap;

use uuid::Uuid;

use super::codec::pg_error;
use super::reader::{HEAD, chunk_row, plan_row, push_attempt_row, read_plan, snapshot};
use crate::report::{ActionCounts, FailureCounts};
use crate::storage::sql::{StateCols, corrupt};
use crate::storage::{PageSpec, PlanPage, StoreError};
use crate::workflow::{Action, CheckSlot, Loc, ObjectRef, Parent, Plan, PlanId, Status};

const HEADS: &str = "SELECT block, first, counts, heads FROM sequence_definitions \
     WHERE plan_id = $1 ORDER BY block, first";
const BODIES: &str = "SELECT block, first, bodies FROM sequence_definitions \
     WHERE plan_id = $1 AND (block, first) IN (SELECT * FROM unnest($2::integer[], $3::integer[]))";
const STATES: &str =
    "SELECT id, status, start_ns, end_ns FROM objects WHERE plan_id = $1 AND id = ANY($2)";
/// Through the partial index `objects_containers`.
const CONTAINERS: &str = "SELECT loc, status, start_ns, end_ns FROM objects \
     WHERE plan_id = $1 AND kind <> 'action'";
const ATTEMPTS: &str = "SELECT action_id, idx, start_ns, end_ns, outcome FROM attempts \
     WHERE plan_id = $1 AND action_id = ANY($2) ORDER BY action_id, idx";
const COUNTS: &str = "SELECT status, count(*) FROM objects WHERE plan_id = $1 AND kind = 'action' \
     GROUP BY status";

/// Reads the page `spec` of plan `id`. With a `second` connection, the actions are counted on
/// it while the rest is read, in the same snapshot (exported by the first transaction and
/// imported by the second): the count is the longest read.
pub(super) async fn read_page(
    conn: &mut deadpool_postgres::Object,
    second: Option<deadpool_postgres::Object>,
    store: &str,
    id: PlanId,
    spec: PageSpec,
) -> Result<PlanPage, StoreError> {
    let page = {
        let err =
            |e: tokio_postgres::Error| pg_error(store, &format!("reading a page of plan {id}"), e);
        let tx = snapshot(conn).await.map_err(err)?;
        let page = match second {
            None => {
                let (page, counted) =
                    tokio::join!(read_in(&tx, store, id, spec), count(&tx, store, id));
                finish(page?, counted?)
            }
            Some(mut other) => {
                let exported: String = tx
                    .query_one("SELECT pg_export_snapshot()", &[])
                    .await
                    .map_err(err)?
                    .get(0);
                // Counted on the other connection in this snapshot; should that connection
                // fail (a socket the server closed, say), on this one, still in the snapshot.
                let elsewhere = async {
                    if !exported.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                        return None;
                    }
                    let tx2 = snapshot(&mut other).await.ok()?;
                    tx2.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{exported}'"))
                        .await
                        .ok()?;
                    let counted = count(&tx2, store, id).await;
                    // Read-only: nothing to lose if the commit fails.
                    let _ = tx2.commit().await;
                    Some(counted)
                };
                let (page, counted) = tokio::join!(read_in(&tx, store, id, spec), elsewhere);
                let counted = match counted {
                    Some(Ok(c)) => Ok(c),
                    _ => count(&tx, store, id).await,
                };
                finish(page?, counted?)
            }
        };
        tx.commit().await.map_err(err)?;
        page
    };
    match page {
        Some(page) => Ok(page),
        None => Ok(PlanPage::of(read_plan(conn, store, id).await?, spec)),
    }
}

/// The page but for the counts of its actions, or `None` for a plan whose definition is whole
/// (created before version 7).
async fn read_in(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
    id: PlanId,
    spec: PageSpec,
) -> Result<Option<Read>, StoreError> {
    let err =
        |e: tokio_postgres::Error| pg_error(store, &format!("reading a page of plan {id}"), e);
    let bad = |e: String| corrupt(store, id, e);
    let key = id.0;
    let (head, heads) = {
        let head = tx.prepare_cached(HEAD).await.map_err(err)?;
        let heads = tx.prepare_cached(HEADS).await.map_err(err)?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
        // Pipelined on the connection.
        let (head, heads) = tokio::join!(tx.query_opt(&head, &params), tx.query(&heads, &params));
        (head.map_err(err)?, heads.map_err(err)?)
    };
    let Some(row) = head else {
        return Err(StoreError::NotFound(id));
    };
    let plan_row = plan_row(&row);
    if !plan_row.is_wrapped_skeleton() {
        // Stored whole, before version 7.
        return Ok(None);
    }
    let mut plan = plan_row.decode(store, id)?;
    let mut counts: Vec<Vec<u32>> = vec![Vec::new(); plan.blocks.len()];
    let mut chunks: Vec<Vec<i64>> = vec![Vec::new(); plan.blocks.len()];
    for r in &heads {
        let chunk = chunk_row(r);
        let n = chunk.place(&mut plan).map_err(bad)?;
        counts[chunk.block as usize].extend(n);
        chunks[chunk.block as usize].push(chunk.first);
    }
    drop(heads);

    // Everything but actions, placed by their stored location (a row at a wrong place is
    // refused), read as a stream; then the actions of checks and deferred batches by id.
    {
        let containers = tx.prepare_cached(CONTAINERS).await.map_err(err)?;
        let rows = tx.query_raw(&containers, [&key]).await.map_err(err)?;
        futures_util::pin_mut!(rows);
        while let Some(r) = futures_util::StreamExt::next(&mut rows).await {
            let r = r.map_err(err)?;
            let text: &str = r.get(0);
            let loc: Loc = serde_json::from_str(text)
                .map_err(|e| bad(format!("an object's location {text:?}: {e}")))?;
            let state = StateCols::decode(r.get(1), r.get(2), r.get(3)).map_err(bad)?;
            match (loc, plan.state_at_mut(loc)) {
                (Loc::Plan | Loc::Action { .. }, _) | (_, None) => {
                    return Err(bad(format!("a row of kind other than action at {loc:?}")));
                }
                (_, Some(s)) => *s = state,
            }
        }
    }
    let mut locs: HashMap<Uuid, Loc> = plan
        .walk()
        .filter(|(loc, _)| matches!(loc, Loc::Action { .. }))
        .map(|(loc, o)| (o.id(), loc))
        .collect();
    let ids: Vec<Uuid> = locs.keys().copied().collect();
    load(tx, store, id, &mut plan, &locs, &ids).await?;

    // The page's sequences, whole.
    let mut shown = Vec::with_capacity(plan.blocks.len());
    let mut left_out = Vec::with_capacity(plan.blocks.len());
    let mut wanted: Vec<(i32, i32)> = Vec::new();
    for (b, block) in plan.blocks().iter().enumerate() {
        let (keep, left) = PlanPage::choose(
            spec,
            block.sequences().iter().map(|s| s.status()).enumerate(),
        );
        for &s in &keep {
            let first = match chunks[b].binary_search(&(s as i64)) {
                Ok(i) => chunks[b][i],
                Err(0) => return Err(bad(format!("no row holds sequence {s} of block {b}"))),
                Err(i) => chunks[b][i - 1],
            };
            let w = (b as i32, first as i32);
            if wanted.last() != Some(&w) {
                wanted.push(w);
            }
        }
        shown.push(keep);
        left_out.push(left);
    }
    let (blocks, firsts): (Vec<i32>, Vec<i32>) = wanted.into_iter().unzip();
    let bodies = tx.prepare_cached(BODIES).await.map_err(err)?;
    let mut action_ids = Vec::new();
    // A row at a time: the rows of a page's sequences can hold much of the plan.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&key, &blocks, &firsts];
    let rows = tx.query_raw(&bodies, params).await.map_err(err)?;
    futures_util::pin_mut!(rows);
    while let Some(r) = futures_util::StreamExt::next(&mut rows).await {
        let r = r.map_err(err)?;
        let (block, first) = (r.get::<_, i32>(0), i64::from(r.get::<_, i32>(1)));
        let Some(b) = usize::try_from(block).ok().filter(|&b| b < shown.len()) else {
            return Err(bad(format!(
                "a row of block {block}, which is not in its definition"
            )));
        };
        let text: &str = r.get(2);
        let all: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)
            .map_err(|e| bad(format!("the sequences of block {b} from {first}: {e}")))?;
        // As many as the row's heads: up to the next row's first sequence, or the block's end.
        let held = chunks[b]
            .iter()
            .find(|&&f| f > first)
            .map_or(counts[b].len() as i64, |&f| f)
            - first;
        if all.len() as i64 != held {
            return Err(bad(format!(
                "the sequences of block {b} from {first}: {} bodies for {held} heads",
                all.len()
            )));
        }
        for &s in &shown[b] {
            let Some(raw) = (s as i64)
                .checked_sub(first)
                .and_then(|i| all.get(i as usize))
            else {
                continue;
            };
            let actions: Vec<Action> = serde_json::from_str(raw.get())
                .map_err(|e| bad(format!("the actions of sequence {s} of block {b}: {e}")))?;
            let n = counts[b].get(s).copied().unwrap_or(0) as usize;
            if actions.len() != n {
                return Err(bad(format!(
                    "sequence {s} of block {b} has {} actions, its row says {n}",
                    actions.len()
                )));
            }
            for (index, a) in actions.iter().enumerate() {
                let loc = Loc::Action {
                    parent: Parent::Sequence { block: b, seq: s },
                    index,
                };
                locs.insert(a.id, loc);
                action_ids.push(a.id);
            }
            plan.blocks[b].sequences[s].actions = actions;
        }
    }
    for (b, keep) in shown.iter().enumerate() {
        if let Some(&s) = keep
            .iter()
            .find(|&&s| plan.blocks[b].sequences[s].actions.len() != counts[b][s] as usize)
        {
            return Err(bad(format!(
                "no row holds the actions of sequence {s} of block {b}"
            )));
        }
    }
    load(tx, store, id, &mut plan, &locs, &action_ids).await?;

    Ok(Some(Read {
        plan,
        spec,
        shown,
        left_out,
        counts,
    }))
}

/// A page read but for the counts of its actions.
struct Read {
    plan: Plan,
    spec: PageSpec,
    shown: Vec<Vec<usize>>,
    left_out: Vec<usize>,
    /// Each sequence's number of actions, by block.
    counts: Vec<Vec<u32>>,
}

/// The plan's actions by status, as stored.
async fn count(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
    id: PlanId,
) -> Result<ActionCounts, StoreError> {
    let err =
        |e: tokio_postgres::Error| pg_error(store, &format!("reading a page of plan {id}"), e);
    let counts = tx.prepare_cached(COUNTS).await.map_err(err)?;
    let mut actions = ActionCounts::default();
    for r in tx.query(&counts, &[&id.0]).await.map_err(err)? {
        let status: &str = r.get(0);
        let n = usize::try_from(r.get::<_, i64>(1)).unwrap_or(0);
        let status = StateCols::decode(status, None, None)
            .map_err(|e| corrupt(store, id, e))?
            .status;
        match status {
            // Counted in `finish`: every action of the definition not counted otherwise.
            Status::NotStarted => {}
            Status::Running => actions.running += n,
            Status::Completed => actions.completed += n,
            Status::Failed => actions.failed += n,
            Status::Stopped => actions.stopped += n,
        }
    }
    Ok(actions)
}

/// The page from what was read and the actions counted; `None` as [`read_in`] gives it.
fn finish(read: Option<Read>, mut actions: ActionCounts) -> Option<PlanPage> {
    let Read {
        plan,
        spec,
        shown,
        left_out,
        counts,
    } = read?;
    let mut bypass = ActionCounts::default();
    let (mut failed_sequences, mut stopped_sequences) = (0, 0);
    actions.total = counts.iter().flatten().map(|&n| n as usize).sum();
    for (loc, object) in plan.walk() {
        if let (
            ObjectRef::Action(_),
            Loc::Action {
                parent: Parent::Checks { .. } | Parent::Batch(_),
                ..
            },
        ) = (object, loc)
        {
            actions.total += 1;
        }
        match (object, loc) {
            (
                ObjectRef::Action(a),
                Loc::Action {
                    parent:
                        Parent::Checks {
                            slot: CheckSlot::Bypass,
                            ..
                        },
                    ..
                },
            ) => bypass.add(a.status()),
            (ObjectRef::Sequence(q), _) => match q.status() {
                Status::Failed => failed_sequences += 1,
                Status::Stopped => stopped_sequences += 1,
                _ => {}
            },
            _ => {}
        }
    }
    actions.not_started = actions
        .total
        .saturating_sub(actions.running + actions.completed + actions.failed + actions.stopped);
    let failures = FailureCounts {
        sequences: counts.iter().map(Vec::len).sum(),
        failed_sequences,
        stopped_sequences,
        failed_actions: actions.failed.saturating_sub(bypass.failed),
        stopped_actions: actions.stopped.saturating_sub(bypass.stopped),
    };
    Some(PlanPage::from_parts(
        plan, spec, shown, left_out, actions, failures,
    ))
}

/// The states of the objects `ids` (placed by `locs`) and the attempts of those that are
/// actions, into `plan`.
async fn load(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
    id: PlanId,
    plan: &mut Plan,
    locs: &HashMap<Uuid, Loc>,
    ids: &[Uuid],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let err =
        |e: tokio_postgres::Error| pg_error(store, &format!("reading a page of plan {id}"), e);
    let bad = |e: String| corrupt(store, id, e);
    let key = id.0;
    let states = tx.prepare_cached(STATES).await.map_err(err)?;
    let attempts = tx.prepare_cached(ATTEMPTS).await.map_err(err)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&key, &ids];
    let (states, attempts) = tokio::join!(tx.query(&states, &params), tx.query(&attempts, &params));
    for r in states.map_err(err)? {
        let object: Uuid = r.get(0);
        let state = StateCols::decode(r.get(1), r.get(2), r.get(3)).map_err(bad)?;
        if let Some(s) = locs.get(&object).and_then(|loc| plan.state_at_mut(*loc)) {
            *s = state;
        }
    }
    for r in attempts.map_err(err)? {
        push_attempt_row(store, id, plan, &r, |object| locs.get(&object).copied())?;
    }
    Ok(())
}

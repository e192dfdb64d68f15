//! Reading a page of a plan ([`Store::read_page`](crate::storage::Store::read_page)) without
//! reading the whole plan: the definition without its sequences, every sequence's head (not
//! its actions), the actions of the page's sequences, and counts by SQL.
//!
//! What it reads, for a plan of `S` sequences and a page of `P` of them: the plan's row, `S`
//! sequence heads and states (range reads in key order), the bodies, states and attempts of the
//! `P` sequences' actions (point reads), one `GROUP BY` over the plan's object rows for the
//! counts, and the plan's journal rows not folded yet. The journal names objects by id: the
//! changes of an action of a sequence off the page are counted by finding its sequence — one
//! that the journal also changes, since an action changes only while its sequence runs and
//! folding keeps the journal's order — and reading that sequence's action ids. Should an id
//! remain unknown, the page is made from a whole read instead (never a wrong count).

use std::collections::HashMap;

use rusqlite::Connection;
use uuid::Uuid;

use super::codec::{Layout, sql_error};
use super::journal;
use super::reader::{entry_change, read_head, read_plan};
use crate::report::{ActionCounts, FailureCounts};
use crate::storage::sql::{AttemptCols, StateCols, corrupt, push_attempt};
use crate::storage::{PageSpec, PlanPage, StoreError};
use crate::workflow::{Action, CheckSlot, Loc, ObjectRef, Parent, Plan, PlanId, State, Status};

/// An object whose journal changes were applied: its status in the tables and now.
struct Touched {
    /// An action of a sequence: counted from the tables, so corrected by the journal.
    counted: bool,
    table: Status,
    now: Status,
}

/// Reads the page `spec` of plan `id`.
pub(super) fn read_page(
    conn: &Connection,
    store: &str,
    id: PlanId,
    spec: PageSpec,
) -> Result<PlanPage, StoreError> {
    match read_part(conn, store, id, spec)? {
        Some(page) => Ok(page),
        None => Ok(PlanPage::of(read_plan(conn, store, id, false)?.0, spec)),
    }
}

/// The page, read without reading the whole plan; `None` if the journal names an object the
/// reading cannot place (then only a whole read can make the page).
pub(super) fn read_part(
    conn: &Connection,
    store: &str,
    id: PlanId,
    spec: PageSpec,
) -> Result<Option<PlanPage>, StoreError> {
    let err = |e| sql_error(store, &format!("reading a page of plan {id}"), e);
    let tx = conn.unchecked_transaction().map_err(err)?;
    let page = Reading::new(&tx, store, id)?.page(spec)?;
    tx.finish().map_err(err)?;
    Ok(page)
}

struct Reading<'c> {
    conn: &'c Connection,
    store: &'c str,
    id: PlanId,
    pk: i64,
    plan: Plan,
    counts: Vec<Vec<u32>>,
    /// Per block, the first sequence of each of its rows of `sequence_definitions`.
    chunks: Vec<Vec<i64>>,
    layout: Layout,
    /// Where the objects the journal changes are, of those placed so far (a plan's own
    /// objects and sequences at once, the page's actions once read).
    known: HashMap<Uuid, Loc>,
    /// The objects the journal changes.
    journaled: std::collections::HashSet<Uuid>,
}

impl<'c> Reading<'c> {
    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql_error(
            self.store,
            &format!("reading a page of plan {}", self.id),
            e,
        )
    }

    fn corrupt(&self, what: impl std::fmt::Display) -> StoreError {
        corrupt(self.store, self.id, what)
    }

    /// The plan with every sequence's head, and where its objects are.
    fn new(conn: &'c Connection, store: &'c str, id: PlanId) -> Result<Reading<'c>, StoreError> {
        let (pk, mut plan) = read_head(conn, store, id)?;
        let err = |e| sql_error(store, &format!("reading a page of plan {id}"), e);
        let mut counts: Vec<Vec<u32>> = vec![Vec::new(); plan.blocks.len()];
        let mut chunks: Vec<Vec<i64>> = vec![Vec::new(); plan.blocks.len()];
        {
            // Room for every sequence at once (no copy of a large list as it grows).
            let mut stmt = conn
                .prepare_cached(
                    "SELECT block, sum(json_array_length(counts)) FROM sequence_definitions \
                     WHERE plan_pk = ?1 GROUP BY block",
                )
                .map_err(err)?;
            let mut rows = stmt.query([pk]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                let (block, n): (i64, i64) = (r.get(0).map_err(err)?, r.get(1).map_err(err)?);
                if let (Some(b), Ok(n)) = (plan.blocks.get_mut(block as usize), usize::try_from(n))
                {
                    b.sequences.reserve_exact(n);
                    counts[block as usize].reserve_exact(n);
                }
            }
        }
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT block, first, counts, heads FROM sequence_definitions \
                     WHERE plan_pk = ?1 ORDER BY block, first",
                )
                .map_err(err)?;
            let mut rows = stmt.query([pk]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                let (block, first): (i64, i64) = (r.get(0).map_err(err)?, r.get(1).map_err(err)?);
                let text = |at| -> Result<&str, StoreError> {
                    r.get_ref(at)
                        .map_err(err)?
                        .as_str()
                        .map_err(|e| err(e.into()))
                };
                let chunk = crate::storage::sql::ChunkRow {
                    block,
                    first,
                    counts: text(2)?,
                    heads: text(3)?,
                };
                let n = chunk.place(&mut plan).map_err(|e| corrupt(store, id, e))?;
                counts[block as usize].extend(n);
                chunks[block as usize].push(first);
            }
        }
        let layout = Layout::new(&plan, &counts);
        Ok(Reading {
            conn,
            store,
            id,
            pk,
            plan,
            counts,
            chunks,
            layout,
            known: HashMap::new(),
            journaled: Default::default(),
        })
    }

    /// The page, or `None` if the journal names an object this reading cannot place.
    fn page(mut self, spec: PageSpec) -> Result<Option<PlanPage>, StoreError> {
        // Rows past the plan's last object: its counts do not match its rows.
        let last: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(ord) FROM objects WHERE plan_pk = ?1")
            .and_then(|mut s| s.query_row([self.pk], |r| r.get(0)))
            .map_err(|e| self.err(e))?;
        if let Some(last) = last.filter(|&l| l >= self.layout.end()) {
            return Err(self.corrupt(format_args!(
                "object #{last} is not in its definition ({} objects)",
                self.layout.end()
            )));
        }
        // States and attempts in the tables: of everything but the sequences' actions.
        for block in 0..self.plan.blocks.len() {
            let range = self.layout.sequences(block);
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT ord, kind, status, start_ns, end_ns FROM objects \
                     WHERE plan_pk = ?1 AND ord >= ?2 AND ord < ?3",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt
                .query(rusqlite::params![self.pk, range.start, range.end])
                .map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                let ord: i64 = r.get(0).map_err(|e| self.err(e))?;
                self.check_kind(r, 1, ord, "sequence")?;
                let state = self.state_cols(r, 2)?;
                let loc = Loc::Sequence {
                    block,
                    seq: (ord - range.start) as usize,
                };
                *self
                    .plan
                    .state_at_mut(loc)
                    .expect("a sequence of this page") = state;
            }
        }
        let outside: Vec<(Loc, i64)> = self
            .plan
            .walk()
            .filter_map(|(loc, _)| self.layout.outside(loc).map(|ord| (loc, ord)))
            .collect();
        for (loc, ord) in outside {
            self.load(loc, ord)?;
        }

        // The journal: first the changes of what is placed (sequences included: which ones
        // the page shows depends on their states).
        let rows = journal::read(self.conn, self.pk, None).map_err(|e| self.err(e))?;
        let mut entries = Vec::new();
        for (seq, blob, _) in &rows {
            entries.extend(
                journal::decode(blob)
                    .map_err(|e| self.corrupt(format_args!("journal row {seq}: {e}")))?,
            );
        }
        self.journaled = entries.iter().map(journal::Entry::id).collect();
        if !self.journaled.is_empty() {
            for (loc, object) in self.plan.walk() {
                if loc != Loc::Plan && self.journaled.contains(&object.id()) {
                    self.known.insert(object.id(), loc);
                }
            }
        }
        let mut touched: HashMap<Uuid, Touched> = HashMap::new();
        let mut pending = Vec::new();
        for entry in entries {
            if self.known.contains_key(&entry.id()) {
                self.apply(entry, &mut touched)?;
            } else {
                pending.push(entry);
            }
        }

        // The page's sequences, whole.
        let mut shown = Vec::with_capacity(self.plan.blocks.len());
        let mut left_out = Vec::with_capacity(self.plan.blocks.len());
        for block in 0..self.plan.blocks.len() {
            let (keep, left) = PlanPage::choose(
                spec,
                self.plan
                    .block_at(Loc::Block(block))
                    .expect("a block of the plan")
                    .sequences()
                    .iter()
                    .map(|s| s.status())
                    .enumerate(),
            );
            let bodies = self.bodies(block, &keep)?;
            for ((seq, ords), actions) in keep
                .iter()
                .zip(self.layout.actions(block, &keep))
                .zip(bodies)
            {
                for (index, action) in actions.iter().enumerate() {
                    let loc = Loc::Action {
                        parent: Parent::Sequence { block, seq: *seq },
                        index,
                    };
                    if self.journaled.contains(&action.id) {
                        self.known.insert(action.id, loc);
                    }
                }
                self.plan.blocks[block].sequences[*seq].actions = actions;
                for (index, ord) in ords.iter().enumerate() {
                    let loc = Loc::Action {
                        parent: Parent::Sequence { block, seq: *seq },
                        index,
                    };
                    self.load(loc, *ord)?;
                }
            }
            shown.push(keep);
            left_out.push(left);
        }

        // Then the changes of the page's actions; those of actions off the page only count.
        let mut off_page: HashMap<Uuid, i64> = HashMap::new();
        if pending.iter().any(|e| !self.known.contains_key(&e.id())) {
            // Their sequences are among those the journal changes.
            for (block, seqs) in self.changed_off_page(&touched, &shown) {
                let bodies = self.bodies(block, &seqs)?;
                for (ords, actions) in self.layout.actions(block, &seqs).into_iter().zip(bodies) {
                    for (action, ord) in actions.iter().zip(ords) {
                        off_page.insert(action.id, ord);
                    }
                }
            }
        }
        for entry in pending {
            let id = entry.id();
            if self.known.contains_key(&id) {
                self.apply(entry, &mut touched)?;
                continue;
            }
            let Some(&ord) = off_page.get(&id) else {
                return Ok(None);
            };
            let table = match touched.get(&id) {
                Some(t) => t.table,
                None => self.table_status(ord)?,
            };
            let t = touched.entry(id).or_insert(Touched {
                counted: true,
                table,
                now: table,
            });
            match entry {
                journal::Entry::State { status, .. } => t.now = status,
                journal::Entry::Reset { .. } => t.now = Status::NotStarted,
                journal::Entry::Attempt { .. } => {}
            }
        }

        let (actions, failures) = self.counts(&touched)?;
        Ok(Some(PlanPage::from_parts(
            self.plan, spec, shown, left_out, actions, failures,
        )))
    }

    /// The states and attempts in the tables of the object at `loc` (`ord`).
    fn load(&mut self, loc: Loc, ord: i64) -> Result<(), StoreError> {
        let state = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT kind, status, start_ns, end_ns FROM objects WHERE plan_pk = ?1 AND ord = ?2",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt
                .query(rusqlite::params![self.pk, ord])
                .map_err(|e| self.err(e))?;
            match rows.next().map_err(|e| self.err(e))? {
                Some(r) => {
                    self.check_kind(r, 0, ord, loc.stored_kind())?;
                    Some(self.state_cols(r, 1)?)
                }
                None => None,
            }
        };
        if let (Some(state), Some(slot)) = (state, self.plan.state_at_mut(loc)) {
            *slot = state;
        }
        if self.plan.action(loc).is_none() {
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, start_ns, end_ns, outcome FROM attempts \
                 WHERE plan_pk = ?1 AND ord = ?2 ORDER BY idx",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(rusqlite::params![self.pk, ord])
            .map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let idx: i64 = r.get(0).map_err(|e| self.err(e))?;
            let outcome = r
                .get_ref(3)
                .map_err(|e| self.err(e))?
                .as_str_or_null()
                .map_err(|e| self.err(e.into()))?;
            let attempt = AttemptCols::decode(
                r.get(1).map_err(|e| self.err(e))?,
                r.get(2).map_err(|e| self.err(e))?,
                outcome,
            )
            .map_err(|e| self.corrupt(e))?;
            let object = self.plan.action(loc).map_or(Uuid::nil(), |a| a.id);
            push_attempt(
                self.store,
                self.id,
                object,
                self.plan.attempts_mut(loc),
                idx,
                attempt,
            )?;
        }
        Ok(())
    }

    /// Refuses a row whose kind (column `at`) is not `kind`, the kind of the object its `ord`
    /// places it at: counts that do not match the rows shift every place after them.
    fn check_kind(
        &self,
        r: &rusqlite::Row<'_>,
        at: usize,
        ord: i64,
        kind: &str,
    ) -> Result<(), StoreError> {
        let found = r
            .get_ref(at)
            .map_err(|e| self.err(e))?
            .as_str()
            .map_err(|e| self.err(e.into()))?;
        if found != kind {
            return Err(self.corrupt(format_args!(
                "the row of {kind} #{ord} is marked as kind `{found}`"
            )));
        }
        Ok(())
    }

    fn state_cols(&self, r: &rusqlite::Row<'_>, at: usize) -> Result<State, StoreError> {
        let status = r
            .get_ref(at)
            .map_err(|e| self.err(e))?
            .as_str()
            .map_err(|e| self.err(e.into()))?;
        StateCols::decode(
            status,
            r.get(at + 1).map_err(|e| self.err(e))?,
            r.get(at + 2).map_err(|e| self.err(e))?,
        )
        .map_err(|e| self.corrupt(e))
    }

    /// The status in the tables of the object `ord` (`NotStarted` without a row).
    fn table_status(&self, ord: i64) -> Result<Status, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, status FROM objects WHERE plan_pk = ?1 AND ord = ?2")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(rusqlite::params![self.pk, ord])
            .map_err(|e| self.err(e))?;
        match rows.next().map_err(|e| self.err(e))? {
            None => Ok(Status::NotStarted),
            Some(r) => {
                self.check_kind(r, 0, ord, "action")?;
                let name = r
                    .get_ref(1)
                    .map_err(|e| self.err(e))?
                    .as_str()
                    .map_err(|e| self.err(e.into()))?;
                StateCols::decode(name, None, None)
                    .map(|s| s.status)
                    .map_err(|e| self.corrupt(e))
            }
        }
    }

    /// The actions of the sequences `seqs` (ascending) of block `block`, read from the rows
    /// that hold them.
    fn bodies(&self, block: usize, seqs: &[usize]) -> Result<Vec<Vec<Action>>, StoreError> {
        let firsts = self.chunks.get(block).map_or(&[][..], Vec::as_slice);
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        while at < seqs.len() {
            let seq = seqs[at] as i64;
            let first = match firsts.binary_search(&seq) {
                Ok(i) => firsts[i],
                Err(0) => {
                    return Err(
                        self.corrupt(format_args!("no row holds sequence {seq} of block {block}"))
                    );
                }
                Err(i) => firsts[i - 1],
            };
            let text: String = self
                .conn
                .prepare_cached(
                    "SELECT bodies FROM sequence_definitions WHERE plan_pk = ?1 AND block = ?2 AND first = ?3",
                )
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![self.pk, block as i64, first], |r| r.get(0))
                })
                .map_err(|e| self.err(e))?;
            let all: Vec<&serde_json::value::RawValue> =
                serde_json::from_str(&text).map_err(|e| {
                    self.corrupt(format_args!(
                        "the sequences of block {block} from {first}: {e}"
                    ))
                })?;
            // Every wanted sequence this row holds (at least the one it was read for).
            let before = at;
            while let Some(&s) = seqs.get(at) {
                let Some(raw) = (s as i64)
                    .checked_sub(first)
                    .and_then(|i| all.get(i as usize))
                else {
                    break;
                };
                let actions: Vec<Action> = serde_json::from_str(raw.get()).map_err(|e| {
                    self.corrupt(format_args!(
                        "the actions of sequence {s} of block {block}: {e}"
                    ))
                })?;
                let n = self.counts[block].get(s).copied().unwrap_or(0) as usize;
                if actions.len() != n {
                    return Err(self.corrupt(format_args!(
                        "sequence {s} of block {block} has {} actions, its row says {n}",
                        actions.len()
                    )));
                }
                out.push(actions);
                at += 1;
            }
            if at == before {
                return Err(self.corrupt(format_args!(
                    "the row of block {block} from {first} does not hold sequence {seq}"
                )));
            }
        }
        Ok(out)
    }

    /// Applies a journal entry of a placed object to the plan, noting its statuses.
    fn apply(
        &mut self,
        entry: journal::Entry<'_>,
        touched: &mut HashMap<Uuid, Touched>,
    ) -> Result<(), StoreError> {
        let id = entry.id();
        let loc = self.known[&id];
        let before = self.plan.state_at(loc).unwrap_or_default().status;
        let change = entry_change(entry, loc).map_err(|e| self.corrupt(e))?;
        change
            .apply_to(&mut self.plan)
            .map_err(|e| self.corrupt(e))?;
        let now = self.plan.state_at(loc).unwrap_or_default().status;
        touched
            .entry(id)
            .or_insert(Touched {
                counted: matches!(
                    loc,
                    Loc::Action {
                        parent: Parent::Sequence { .. },
                        ..
                    }
                ),
                table: before,
                now,
            })
            .now = now;
        Ok(())
    }

    /// Per block, the sequences off the page that the journal changed or that run: those whose
    /// actions the journal can change (an action changes only while its sequence runs, and the
    /// journal is folded in order).
    fn changed_off_page(
        &self,
        touched: &HashMap<Uuid, Touched>,
        shown: &[Vec<usize>],
    ) -> Vec<(usize, Vec<usize>)> {
        let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
        for (b, block) in self.plan.blocks().iter().enumerate() {
            let seqs: Vec<usize> = block
                .sequences()
                .iter()
                .enumerate()
                .filter(|(s, q)| {
                    (touched.contains_key(&q.id) || q.status() == Status::Running)
                        && shown[b].binary_search(s).is_err()
                })
                .map(|(s, _)| s)
                .collect();
            if !seqs.is_empty() {
                out.push((b, seqs));
            }
        }
        out
    }

    /// The counts of the whole plan. The actions of the blocks' sequences are counted in the
    /// tables — each block's rows by key range, the few not `Completed` through the partial
    /// index `objects_unfinished`, none read whole — and corrected by the journal's changes;
    /// everything else is in the plan as read.
    fn counts(
        &self,
        touched: &HashMap<Uuid, Touched>,
    ) -> Result<(ActionCounts, FailureCounts), StoreError> {
        let slot = |s: Status| journal::STATUSES.iter().position(|x| *x == s).unwrap_or(0);
        let ranges: Vec<std::ops::Range<i64>> = (0..self.plan.blocks.len())
            .map(|b| self.layout.action_range(b))
            .collect();
        let mut rows: i64 = 0;
        for range in ranges.iter().filter(|r| !r.is_empty()) {
            rows += self
                .conn
                .prepare_cached(
                    "SELECT count(*) FROM objects WHERE plan_pk = ?1 AND ord >= ?2 AND ord < ?3",
                )
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![self.pk, range.start, range.end], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .map_err(|e| self.err(e))?;
        }
        // Rows by status (`STATUSES` order); the rest are `Completed`.
        let mut by = [0i64; 5];
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT ord, status FROM objects WHERE plan_pk = ?1 AND status <> 'Completed'",
                )
                .map_err(|e| self.err(e))?;
            let mut found = stmt.query([self.pk]).map_err(|e| self.err(e))?;
            while let Some(r) = found.next().map_err(|e| self.err(e))? {
                let ord: i64 = r.get(0).map_err(|e| self.err(e))?;
                if !ranges.iter().any(|range| range.contains(&ord)) {
                    continue;
                }
                let status: String = r.get(1).map_err(|e| self.err(e))?;
                let status = StateCols::decode(&status, None, None)
                    .map_err(|e| self.corrupt(e))?
                    .status;
                by[slot(status)] += 1;
            }
        }
        by[slot(Status::Completed)] = rows - by.iter().sum::<i64>();
        for t in touched.values().filter(|t| t.counted) {
            by[slot(t.table)] -= 1;
            by[slot(t.now)] += 1;
        }
        let get = |s: Status| usize::try_from(by[slot(s)]).unwrap_or(0);
        let mut actions = ActionCounts {
            total: self.counts.iter().flatten().map(|&n| n as usize).sum(),
            running: get(Status::Running),
            completed: get(Status::Completed),
            failed: get(Status::Failed),
            stopped: get(Status::Stopped),
            ..ActionCounts::default()
        };
        actions.not_started = actions
            .total
            .saturating_sub(actions.running + actions.completed + actions.failed + actions.stopped);

        // Everything else: the actions of checks and deferred batches, and the sequences.
        let mut bypass = ActionCounts::default();
        let (mut failed_sequences, mut stopped_sequences) = (0, 0);
        for (loc, object) in self.plan.walk() {
            match (object, loc) {
                (
                    ObjectRef::Action(_),
                    Loc::Action {
                        parent: Parent::Sequence { .. },
                        ..
                    },
                ) => {}
                (ObjectRef::Action(a), _) => {
                    actions.add(a.status());
                    if let Loc::Action {
                        parent:
                            Parent::Checks {
                                slot: CheckSlot::Bypass,
                                ..
                            },
                        ..
                    } = loc
                    {
                        bypass.add(a.status());
                    }
                }
                (ObjectRef::Sequence(q), _) => match q.status() {
                    Status::Failed => failed_sequences += 1,
                    Status::Stopped => stopped_sequences += 1,
                    _ => {}
                },
                _ => {}
            }
        }
        let failures = FailureCounts {
            sequences: self.counts.iter().map(Vec::len).sum(),
            failed_sequences,
            stopped_sequences,
            failed_actions: actions.failed.saturating_sub(bypass.failed),
            stopped_actions: actions.stopped.saturating_sub(bypass.stopped),
        };
        Ok((actions, failures))
    }
}

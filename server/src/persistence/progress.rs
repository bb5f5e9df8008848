//! Set-based statements for the hot paths: executions moving forward (agent updates) and
//! new executions (dispatch). Each renders a few statements for a whole group, whatever its
//! size, joining the tables with a `VALUES` list: SQLite parses each statement once per group
//! instead of two or three times per task, which was a fifth of scitqd's CPU with one busy
//! agent. `UPDATE … FROM (VALUES …)` runs on SQLite (3.33 and later) and PostgreSQL alike;
//! both name a `VALUES` list's columns `column1`, `column2`, …

use sea_orm::sea_query::{
    Alias, BinOper, Expr, ExprTrait, Func, Query, TableRef, Value, ValueTuple,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryTrait};

use super::batch::StatementBatch;
use super::entities::{execution, task};
use super::executions::Applied;
use super::{inputs_seen_to_json, now_ms, uploaded_to_json};
use crate::core::agent::Update;
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::state::{ExecState, TaskStatus};

/// The alias of the `VALUES` list in the statements below.
const V: &str = "v";

/// Column `n` (from 1) of the `VALUES` list.
fn v(n: usize) -> Expr {
    Expr::col((Alias::new(V), Alias::new(format!("column{n}"))))
}

fn values_list(rows: Vec<Vec<Value>>) -> TableRef {
    TableRef::ValuesList(
        rows.into_iter().map(ValueTuple::Many).collect(),
        Alias::new(V).into(),
    )
}

/// One execution's final report, as stored.
#[derive(Debug)]
struct Ended {
    execution: i64,
    exit_code: Option<i32>,
    message: String,
    /// JSON of the files uploaded; `None` keeps what is stored.
    uploaded: Option<String>,
    /// JSON of what the inputs held when staged; `None` keeps what is stored.
    inputs_seen: Option<String>,
}

/// Updates of executions that move forward without failing (accepted, running, uploading,
/// succeeded), grouped by target state. Rendering them in the order of the state machine is
/// the same as applying them in the order they came: an execution only moves forward, and
/// every UPDATE is guarded by the legal predecessors of its target, so a replayed or late
/// update matches no row.
#[derive(Debug, Default)]
pub struct Progress {
    groups: Vec<(ExecState, TaskStatus, Vec<Ended>)>,
}

impl Progress {
    /// Records one update; `applied` learns at once what it will change.
    pub fn add(
        &mut self,
        update: &Update,
        target: ExecState,
        status: TaskStatus,
        applied: &mut Applied,
    ) {
        let row = Ended {
            execution: update.execution.0,
            exit_code: update.exit_code,
            message: update.message.clone(),
            uploaded: (!update.uploaded.is_empty()).then(|| uploaded_to_json(&update.uploaded)),
            inputs_seen: (!update.inputs.is_empty()).then(|| inputs_seen_to_json(&update.inputs)),
        };
        match self.groups.iter_mut().find(|(state, ..)| *state == target) {
            Some((.., rows)) => rows.push(row),
            None => self.groups.push((target, status, vec![row])),
        }
        if target.is_final() {
            applied.finished.push(ExecutionId(update.execution.0));
            if target == ExecState::Succeeded {
                applied.succeeded.push(ExecutionId(update.execution.0));
                crate::metrics::metrics()
                    .execution_ended(ExecState::Succeeded, crate::core::state::Failure::None);
            }
        }
        applied.executions.insert(ExecutionId(update.execution.0));
    }

    /// Renders the recorded updates into `batch` and forgets them.
    pub fn render(&mut self, batch: &mut StatementBatch, worker: WorkerId) {
        let mut groups = std::mem::take(&mut self.groups);
        groups.sort_by_key(|(state, ..)| ExecState::ALL.iter().position(|s| s == state));
        let now = now_ms();
        for (target, status, rows) in groups {
            if target.is_final() {
                render_final(batch, worker, target, status, rows, now);
            } else {
                render_forward(batch, worker, target, status, rows, now);
            }
        }
    }
}

/// Accepted, running, uploading: the state (and the start time) of the execution, the status
/// of its task.
fn render_forward(
    batch: &mut StatementBatch,
    worker: WorkerId,
    target: ExecState,
    status: TaskStatus,
    rows: Vec<Ended>,
    now: i64,
) {
    let ids: Vec<i64> = rows.iter().map(|r| r.execution).collect();
    let mut exec_update = execution::Entity::update_many()
        .col_expr(execution::Column::State, Expr::value(target.as_str()))
        .filter(execution::Column::Id.is_in(ids.clone()))
        .filter(execution::Column::WorkerId.eq(worker.0))
        .filter(execution::Column::State.is_in(ExecState::predecessors(target)));
    if target != ExecState::Accepted {
        exec_update = exec_update.col_expr(
            execution::Column::StartedAt,
            Func::coalesce([Expr::col(execution::Column::StartedAt), Expr::value(now)]).into(),
        );
    }
    batch.push(&exec_update.into_query());
    batch.push(
        &task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(status.as_str()))
            .col_expr(task::Column::UpdatedAt, Expr::value(now))
            .filter(task::Column::ExecutionId.is_in(ids))
            .filter(task::Column::WorkerId.eq(worker.0))
            .filter(task::Column::Status.is_in(TaskStatus::predecessors(status)))
            .into_query(),
    );
}

/// Succeeded: the report on the execution, the status and exit code on its task. A report
/// for an execution that failed or was canceled meanwhile (its lease expired) is recorded in
/// its message, not applied.
fn render_final(
    batch: &mut StatementBatch,
    worker: WorkerId,
    target: ExecState,
    status: TaskStatus,
    rows: Vec<Ended>,
    now: i64,
) {
    use execution::Column as E;
    let exec_col = |c: E| Expr::col((execution::Entity, c));
    let late: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| {
            vec![
                r.execution.into(),
                format!(
                    "late report: {} (exit code {}) after the execution ended; ",
                    target.as_str(),
                    r.exit_code.map_or("none".to_owned(), |c| c.to_string())
                )
                .into(),
            ]
        })
        .collect();
    batch.push(
        Query::update()
            .table(execution::Entity)
            .value(
                E::Message,
                v(2).binary(BinOper::Custom("||"), exec_col(E::Message)),
            )
            .from(values_list(late))
            .and_where(exec_col(E::Id).eq(v(1)))
            .and_where(exec_col(E::WorkerId).eq(worker.0))
            .and_where(exec_col(E::State).is_in(["failed", "canceled"])),
    );

    let codes: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| vec![r.execution.into(), r.exit_code.into()])
        .collect();
    let reports: Vec<Vec<Value>> = rows
        .into_iter()
        .map(|r| {
            vec![
                r.execution.into(),
                r.exit_code.into(),
                r.message.into(),
                r.uploaded.into(),
                r.inputs_seen.into(),
            ]
        })
        .collect();
    let integer = |e: Expr| e.cast_as("integer");
    batch.push(
        Query::update()
            .table(execution::Entity)
            .value(E::State, target.as_str())
            .value(
                E::StartedAt,
                Func::coalesce([exec_col(E::StartedAt), Expr::value(now)]),
            )
            .value(E::FinishedAt, now)
            .value(E::ExitCode, integer(v(2)))
            .value(E::Message, v(3))
            .value(
                E::Uploaded,
                Func::coalesce([v(4).cast_as("text"), exec_col(E::Uploaded)]),
            )
            .value(
                E::InputsSeen,
                Func::coalesce([v(5).cast_as("text"), exec_col(E::InputsSeen)]),
            )
            .from(values_list(reports))
            .and_where(exec_col(E::Id).eq(v(1)))
            .and_where(exec_col(E::WorkerId).eq(worker.0))
            .and_where(exec_col(E::State).is_in(ExecState::predecessors(target))),
    );
    let task_col = |c: task::Column| Expr::col((task::Entity, c));
    batch.push(
        Query::update()
            .table(task::Entity)
            .value(task::Column::Status, status.as_str())
            .value(task::Column::UpdatedAt, now)
            .value(task::Column::ExitCode, integer(v(2)))
            .from(values_list(codes))
            .and_where(task_col(task::Column::ExecutionId).eq(v(1)))
            .and_where(task_col(task::Column::WorkerId).eq(worker.0))
            .and_where(task_col(task::Column::Status).is_in(TaskStatus::predecessors(status))),
    );
}

/// New executions, one per `(task, worker)` pick with its id: each copies its task's spec as
/// it is now, if the task is still pending, and the task becomes assigned.
pub fn render_assign(batch: &mut StatementBatch, picks: &[(i64, TaskId, WorkerId)], now: i64) {
    use execution::Column as E;
    use task::Column as T;
    if picks.is_empty() {
        return;
    }
    let rows = || -> Vec<Vec<Value>> {
        picks
            .iter()
            .map(|(exec, task, worker)| vec![(*exec).into(), worker.0.into(), task.0.into()])
            .collect()
    };
    let task_col = |c: T| Expr::col((task::Entity, c));
    let select = Query::select()
        .expr(v(1))
        .column((task::Entity, T::Id))
        .expr(v(2))
        .expr(Expr::val(ExecState::Assigned.as_str()))
        .columns(
            [
                T::Command,
                T::Shell,
                T::Container,
                T::ContainerOptions,
                T::Inputs,
                T::Output,
                T::Resources,
            ]
            .map(|c| (task::Entity, c)),
        )
        .expr(Expr::val(Option::<i32>::None))
        .expr(Expr::val(""))
        .expr(Expr::val(""))
        .expr(Expr::val(now))
        .expr(Expr::val(Option::<i64>::None))
        .expr(Expr::val(Option::<i64>::None))
        .expr(Expr::val(0i64))
        .expr(Expr::val(0i64))
        .column((task::Entity, T::RunTimeoutS))
        .from(values_list(rows()))
        .inner_join(
            task::Entity,
            task_col(T::Id).equals((Alias::new(V), Alias::new("column3"))),
        )
        // Also what keeps SQLite from reading the join's ON as an upsert clause.
        .and_where(task_col(T::Status).eq(TaskStatus::Pending.as_str()))
        .to_owned();
    batch.push(
        Query::insert()
            .into_table(execution::Entity)
            .columns([
                E::Id,
                E::TaskId,
                E::WorkerId,
                E::State,
                E::Command,
                E::Shell,
                E::Container,
                E::ContainerOptions,
                E::Inputs,
                E::Output,
                E::Resources,
                E::ExitCode,
                E::Failure,
                E::Message,
                E::AssignedAt,
                E::StartedAt,
                E::FinishedAt,
                E::StdoutBytes,
                E::StderrBytes,
                E::RunTimeoutS,
            ])
            .select_from(select)
            .expect("the select has one value per column"),
    );
    batch.push(
        Query::update()
            .table(task::Entity)
            .value(T::Status, TaskStatus::Assigned.as_str())
            .value(T::StatusReason, "")
            .value(T::ExecutionId, v(1))
            .value(T::WorkerId, v(2))
            .value(T::ExitCode, Option::<i32>::None)
            .value(T::UpdatedAt, now)
            .from(values_list(rows()))
            .and_where(task_col(T::Id).eq(v(3)))
            .and_where(task_col(T::Status).eq(TaskStatus::Pending.as_str())),
    );
}

//! Recruitment records (m0016): recruiter rules, recruited machines and their provisioning
//! jobs. A job is written before its cloud call is made, so a scitqd killed in the middle
//! finds it `running` at its next start and settles it against the provider's listing.

use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{Store, StoreError, now_ms};
use crate::core::ids::{MachineId, RecruiterId};
use crate::core::recruit::{
    FlavorChoice, Job, JobKind, JobStatus, MachineRecord, RecordState, Rule,
};

mod recruiter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "recruiter")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub batch: String,
        pub provider: String,
        pub region: Option<String>,
        /// A flavor by name; `None`: the minimums.
        pub flavor: Option<String>,
        pub min_cpu: i32,
        pub min_mem_gib: i32,
        pub min_disk_gib: i32,
        pub gpu: i32,
        pub max_workers: i32,
        pub rounds: i32,
        pub concurrency: i32,
        pub prefetch: Option<i32>,
        pub idle_timeout_ms: i64,
        pub paused: bool,
        pub paused_reason: Option<String>,
        pub failures: i32,
        pub retry_at: Option<i64>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod machine {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "machine")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub provider: String,
        pub region: String,
        pub flavor: String,
        pub cpu: i32,
        pub memory_mib: i64,
        pub provider_id: Option<String>,
        pub recruiter_id: Option<i64>,
        pub batch: Option<String>,
        pub concurrency: i32,
        pub prefetch: Option<i32>,
        pub idle_timeout_ms: Option<i64>,
        pub state: String,
        pub created_at: i64,
        pub connected_at: Option<i64>,
        pub ended_at: Option<i64>,
        pub reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "job")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub machine_id: i64,
        pub kind: String,
        pub status: String,
        pub attempts: i32,
        pub error_class: Option<String>,
        pub log: String,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod setting {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "server_setting")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn corrupt(what: &'static str, id: i64, field: &'static str, value: &str) -> StoreError {
    StoreError::Corrupt {
        what,
        id: id.to_string(),
        field,
        value: value.to_owned(),
    }
}

fn to_u32(what: &'static str, id: i64, field: &'static str, v: i32) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(what, id, field, &v.to_string()))
}

/// The id every machine this server creates is tagged with: made once, kept in the
/// database (so a restarted scitqd, or one moved to another host, owns the same machines).
pub async fn owner_id(store: &Store) -> Result<String, StoreError> {
    const KEY: &str = "owner_id";
    if let Some(row) = setting::Entity::find_by_id(KEY.to_owned())
        .one(&store.db)
        .await?
    {
        return Ok(row.value);
    }
    let fresh = format!("scitq-{}", &crate::auth::generate()[..12]);
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                // Another writer may have made it meanwhile: the first one stays.
                if let Some(row) = setting::Entity::find_by_id(KEY.to_owned()).one(txn).await? {
                    return Ok(row.value);
                }
                setting::Entity::insert(setting::ActiveModel {
                    key: Set(KEY.to_owned()),
                    value: Set(fresh.clone()),
                })
                .exec_without_returning(txn)
                .await?;
                Ok(fresh)
            })
        })
        .await
}

async fn next_id<E>(txn: &DatabaseTransaction, id: E::Column) -> Result<i64, StoreError>
where
    E: EntityTrait,
{
    let max: Option<Option<i64>> = E::find()
        .select_only()
        .column_as(id.max(), "m")
        .into_tuple()
        .one(txn)
        .await?;
    Ok(max.flatten().unwrap_or(0) + 1)
}

// --- Rules.

fn rule_of(row: recruiter::Model) -> Result<Rule, StoreError> {
    let id = row.id;
    let u = |field, v| to_u32("recruiter", id, field, v);
    let flavor = match row.flavor {
        Some(name) => FlavorChoice::Named(name),
        None => FlavorChoice::Minimums {
            cpu: u("min_cpu", row.min_cpu)?,
            memory_gib: u("min_mem_gib", row.min_mem_gib)?,
            disk_gib: u("min_disk_gib", row.min_disk_gib)?,
            gpu: u("gpu", row.gpu)?,
        },
    };
    Ok(Rule {
        id: RecruiterId(id),
        batch: row.batch,
        provider: row.provider,
        region: row.region,
        flavor,
        max_workers: u("max_workers", row.max_workers)?,
        rounds: u("rounds", row.rounds)?,
        concurrency: u("concurrency", row.concurrency)?,
        prefetch: row.prefetch.map(|p| u("prefetch", p)).transpose()?,
        idle_timeout: Duration::from_millis(row.idle_timeout_ms.max(0) as u64),
        paused: row.paused,
        retry_at: row.retry_at,
        paused_reason: row.paused_reason,
        failures: u("failures", row.failures)?,
    })
}

/// Stores a new rule (its id is given by the store).
pub async fn insert_rule(store: &Store, rule: Rule) -> Result<Rule, StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                let id = next_id::<recruiter::Entity>(txn, recruiter::Column::Id).await?;
                let (flavor, min) = match &rule.flavor {
                    FlavorChoice::Named(name) => (Some(name.clone()), [0; 4]),
                    FlavorChoice::Minimums {
                        cpu,
                        memory_gib,
                        disk_gib,
                        gpu,
                    } => (None, [*cpu, *memory_gib, *disk_gib, *gpu]),
                };
                let i = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
                let row = recruiter::Model {
                    id,
                    batch: rule.batch.clone(),
                    provider: rule.provider.clone(),
                    region: rule.region.clone(),
                    flavor,
                    min_cpu: i(min[0]),
                    min_mem_gib: i(min[1]),
                    min_disk_gib: i(min[2]),
                    gpu: i(min[3]),
                    max_workers: i(rule.max_workers),
                    rounds: i(rule.rounds),
                    concurrency: i(rule.concurrency),
                    prefetch: rule.prefetch.map(i),
                    idle_timeout_ms: i64::try_from(rule.idle_timeout.as_millis())
                        .unwrap_or(i64::MAX),
                    paused: rule.paused,
                    paused_reason: None,
                    failures: 0,
                    retry_at: None,
                    created_at: now_ms(),
                };
                recruiter::Entity::insert(recruiter::ActiveModel::from(row.clone()))
                    .exec_without_returning(txn)
                    .await?;
                rule_of(row)
            })
        })
        .await
}

pub async fn rules(db: &impl ConnectionTrait) -> Result<Vec<Rule>, StoreError> {
    recruiter::Entity::find()
        .order_by_asc(recruiter::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(rule_of)
        .collect()
}

pub async fn rule(db: &impl ConnectionTrait, id: RecruiterId) -> Result<Rule, StoreError> {
    let row = recruiter::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "recruiter",
            id: id.to_string(),
        })?;
    rule_of(row)
}

/// Deletes a rule; its machines stay, served by no rule (destroyed when idle).
pub async fn delete_rule(store: &Store, id: RecruiterId) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                let done = recruiter::Entity::delete_by_id(id.0).exec(txn).await?;
                if done.rows_affected == 0 {
                    return Err(StoreError::NotFound {
                        what: "recruiter",
                        id: id.to_string(),
                    });
                }
                Ok(())
            })
        })
        .await
}

/// Pauses (with the reason, when the rule paused itself) or resumes a rule. Resuming
/// forgets its failures.
pub async fn set_paused(
    store: &Store,
    id: RecruiterId,
    paused: bool,
    reason: Option<String>,
) -> Result<Rule, StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                let mut update = recruiter::Entity::update_many()
                    .col_expr(recruiter::Column::Paused, Expr::value(paused))
                    .col_expr(recruiter::Column::PausedReason, Expr::value(reason));
                if !paused {
                    update = update
                        .col_expr(recruiter::Column::Failures, Expr::value(0))
                        .col_expr(recruiter::Column::RetryAt, Expr::value(Option::<i64>::None));
                }
                let done = update
                    .filter(recruiter::Column::Id.eq(id.0))
                    .exec(txn)
                    .await?;
                if done.rows_affected == 0 {
                    return Err(StoreError::NotFound {
                        what: "recruiter",
                        id: id.to_string(),
                    });
                }
                rule(txn, id).await
            })
        })
        .await
}

/// Records a rule's failed deployments in a row and when it may try again.
pub async fn set_failures(
    store: &Store,
    id: RecruiterId,
    failures: u32,
    retry_at: Option<i64>,
) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                recruiter::Entity::update_many()
                    .col_expr(
                        recruiter::Column::Failures,
                        Expr::value(i32::try_from(failures).unwrap_or(i32::MAX)),
                    )
                    .col_expr(recruiter::Column::RetryAt, Expr::value(retry_at))
                    .filter(recruiter::Column::Id.eq(id.0))
                    .exec(txn)
                    .await?;
                Ok(())
            })
        })
        .await
}

// --- Machines and jobs.

fn machine_of(row: machine::Model) -> Result<MachineRecord, StoreError> {
    let id = row.id;
    let state = RecordState::parse(&row.state)
        .ok_or_else(|| corrupt("machine", id, "state", &row.state))?;
    Ok(MachineRecord {
        id: MachineId(id),
        name: row.name,
        provider: row.provider,
        region: row.region,
        flavor: row.flavor,
        cpu: to_u32("machine", id, "cpu", row.cpu)?,
        memory_mib: u64::try_from(row.memory_mib)
            .map_err(|_| corrupt("machine", id, "memory_mib", &row.memory_mib.to_string()))?,
        provider_id: row.provider_id,
        rule: row.recruiter_id.map(RecruiterId),
        batch: row.batch,
        concurrency: to_u32("machine", id, "concurrency", row.concurrency)?,
        prefetch: row
            .prefetch
            .map(|p| to_u32("machine", id, "prefetch", p))
            .transpose()?,
        idle_timeout: row
            .idle_timeout_ms
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        state,
        created_at: row.created_at,
        connected_at: row.connected_at,
        ended_at: row.ended_at,
        reason: row.reason,
    })
}

fn job_of(row: job::Model, machine_name: String) -> Result<Job, StoreError> {
    let id = row.id;
    Ok(Job {
        id,
        machine: MachineId(row.machine_id),
        machine_name,
        kind: JobKind::parse(&row.kind).ok_or_else(|| corrupt("job", id, "kind", &row.kind))?,
        status: JobStatus::parse(&row.status)
            .ok_or_else(|| corrupt("job", id, "status", &row.status))?,
        attempts: to_u32("job", id, "attempts", row.attempts)?,
        error_class: row.error_class,
        log: row.log,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A machine to create: what the record starts with.
#[derive(Debug, Clone)]
pub struct NewMachine {
    pub provider: String,
    pub region: String,
    pub flavor: String,
    pub cpu: u32,
    pub memory_mib: u64,
    pub rule: Option<RecruiterId>,
    pub batch: Option<String>,
    pub concurrency: u32,
    pub prefetch: Option<u32>,
    pub idle_timeout: Option<Duration>,
}

async fn insert_job(
    txn: &DatabaseTransaction,
    machine: MachineId,
    kind: JobKind,
    log: String,
) -> Result<i64, StoreError> {
    let id = next_id::<job::Entity>(txn, job::Column::Id).await?;
    let now = now_ms();
    job::Entity::insert(job::ActiveModel::from(job::Model {
        id,
        machine_id: machine.0,
        kind: kind.as_str().to_owned(),
        status: JobStatus::Running.as_str().to_owned(),
        attempts: 1,
        error_class: None,
        log,
        created_at: now,
        updated_at: now,
    }))
    .exec_without_returning(txn)
    .await?;
    Ok(id)
}

/// Writes down a machine about to be created and its create job, in one transaction,
/// before the cloud is called. Its name is `PREFIX-ID`.
pub async fn begin_create(
    store: &Store,
    prefix: String,
    new: NewMachine,
    log: String,
) -> Result<(MachineRecord, i64), StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                let id = next_id::<machine::Entity>(txn, machine::Column::Id).await?;
                let i = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
                let row = machine::Model {
                    id,
                    name: format!("{prefix}-{id}"),
                    provider: new.provider,
                    region: new.region,
                    flavor: new.flavor,
                    cpu: i(new.cpu),
                    memory_mib: i64::try_from(new.memory_mib).unwrap_or(i64::MAX),
                    provider_id: None,
                    recruiter_id: new.rule.map(|r| r.0),
                    batch: new.batch,
                    concurrency: i(new.concurrency),
                    prefetch: new.prefetch.map(i),
                    idle_timeout_ms: new
                        .idle_timeout
                        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    state: RecordState::Creating.as_str().to_owned(),
                    created_at: now_ms(),
                    connected_at: None,
                    ended_at: None,
                    reason: None,
                };
                machine::Entity::insert(machine::ActiveModel::from(row.clone()))
                    .exec_without_returning(txn)
                    .await?;
                let job = insert_job(txn, MachineId(id), JobKind::Create, log).await?;
                Ok((machine_of(row)?, job))
            })
        })
        .await
}

/// Marks a machine being destroyed and writes its destroy job. `None` when it is already
/// being destroyed or gone (nothing to do).
pub async fn begin_destroy(
    store: &Store,
    id: MachineId,
    reason: String,
) -> Result<Option<(MachineRecord, i64)>, StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                let row = machine::Entity::find_by_id(id.0)
                    .one(txn)
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        what: "machine",
                        id: id.to_string(),
                    })?;
                let record = machine_of(row)?;
                if !record.state.is_live() || record.state == RecordState::Destroying {
                    return Ok(None);
                }
                machine::Entity::update_many()
                    .col_expr(
                        machine::Column::State,
                        Expr::value(RecordState::Destroying.as_str()),
                    )
                    .col_expr(machine::Column::Reason, Expr::value(reason.clone()))
                    .filter(machine::Column::Id.eq(id.0))
                    .exec(txn)
                    .await?;
                let job =
                    insert_job(txn, id, JobKind::Destroy, format!("destroy: {reason}\n")).await?;
                Ok(Some((
                    MachineRecord {
                        state: RecordState::Destroying,
                        reason: Some(reason),
                        ..record
                    },
                    job,
                )))
            })
        })
        .await
}

/// What changes on a machine's record.
#[derive(Debug, Clone, Default)]
pub struct MachineChange {
    pub state: Option<RecordState>,
    pub provider_id: Option<String>,
    pub connected_at: Option<i64>,
    pub ended: bool,
    pub reason: Option<String>,
    /// Moved to a rule: its rule, batch, settings and idle timeout.
    pub rule: Option<(RecruiterId, String, u32, Option<u32>, Duration)>,
}

/// Ends a job (its status, the error class when it failed, a line for its log), and
/// applies `change` to its machine, in one transaction.
pub async fn finish_job(
    store: &Store,
    job: Option<i64>,
    status: JobStatus,
    error_class: Option<String>,
    line: String,
    machine: MachineId,
    change: MachineChange,
) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move {
                let now = now_ms();
                if let Some(job) = job {
                    let Some(row) = job::Entity::find_by_id(job).one(txn).await? else {
                        return Err(StoreError::NotFound {
                            what: "job",
                            id: job.to_string(),
                        });
                    };
                    let mut log = row.log;
                    log.push_str(&line);
                    log.push('\n');
                    job::Entity::update_many()
                        .col_expr(job::Column::Status, Expr::value(status.as_str()))
                        .col_expr(job::Column::ErrorClass, Expr::value(error_class))
                        .col_expr(job::Column::Log, Expr::value(log))
                        .col_expr(job::Column::UpdatedAt, Expr::value(now))
                        .filter(job::Column::Id.eq(job))
                        .exec(txn)
                        .await?;
                }
                change_machine(txn, machine, change, now).await
            })
        })
        .await
}

/// Applies a change to a machine's record.
pub async fn update_machine(
    store: &Store,
    machine: MachineId,
    change: MachineChange,
) -> Result<(), StoreError> {
    store
        .writer
        .write(move |txn, _| {
            Box::pin(async move { change_machine(txn, machine, change, now_ms()).await })
        })
        .await
}

async fn change_machine(
    txn: &DatabaseTransaction,
    id: MachineId,
    change: MachineChange,
    now: i64,
) -> Result<(), StoreError> {
    let mut update = machine::Entity::update_many().filter(machine::Column::Id.eq(id.0));
    if let Some(state) = change.state {
        update = update.col_expr(machine::Column::State, Expr::value(state.as_str()));
    }
    if let Some(provider_id) = change.provider_id {
        update = update.col_expr(machine::Column::ProviderId, Expr::value(provider_id));
    }
    if let Some(at) = change.connected_at {
        update = update.col_expr(machine::Column::ConnectedAt, Expr::value(at));
    }
    if change.ended {
        update = update.col_expr(machine::Column::EndedAt, Expr::value(now));
    }
    if let Some(reason) = change.reason {
        update = update.col_expr(machine::Column::Reason, Expr::value(reason));
    }
    if let Some((rule, batch, concurrency, prefetch, idle)) = change.rule {
        let i = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        update = update
            .col_expr(machine::Column::RecruiterId, Expr::value(rule.0))
            .col_expr(machine::Column::Batch, Expr::value(batch))
            .col_expr(machine::Column::Concurrency, Expr::value(i(concurrency)))
            .col_expr(machine::Column::Prefetch, Expr::value(prefetch.map(i)))
            .col_expr(
                machine::Column::IdleTimeoutMs,
                Expr::value(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX)),
            );
    }
    update.exec(txn).await?;
    Ok(())
}

/// Machines that may exist at their provider (not destroyed, not failed).
pub async fn live_machines(db: &impl ConnectionTrait) -> Result<Vec<MachineRecord>, StoreError> {
    machine::Entity::find()
        .filter(machine::Column::State.is_not_in([
            RecordState::Destroyed.as_str(),
            RecordState::Failed.as_str(),
        ]))
        .order_by_asc(machine::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(machine_of)
        .collect()
}

pub async fn machine(
    db: &impl ConnectionTrait,
    id: MachineId,
) -> Result<MachineRecord, StoreError> {
    let row = machine::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "machine",
            id: id.to_string(),
        })?;
    machine_of(row)
}

/// The live machine of that name (a worker's name), if scitqd recruited it.
pub async fn machine_named(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<MachineRecord>, StoreError> {
    machine::Entity::find()
        .filter(machine::Column::Name.eq(name))
        .one(db)
        .await?
        .map(machine_of)
        .transpose()
}

/// Jobs, newest first; `running_only` for the ones still being carried out.
pub async fn jobs(
    db: &impl ConnectionTrait,
    running_only: bool,
    limit: u64,
) -> Result<Vec<Job>, StoreError> {
    let mut query = job::Entity::find().order_by_desc(job::Column::Id);
    if running_only {
        query = query.filter(job::Column::Status.eq(JobStatus::Running.as_str()));
    }
    let rows = query.limit(limit).all(db).await?;
    let ids: Vec<i64> = rows.iter().map(|j| j.machine_id).collect();
    let names: std::collections::HashMap<i64, String> = machine::Entity::find()
        .filter(machine::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    rows.into_iter()
        .map(|row| {
            let name = names.get(&row.machine_id).cloned().unwrap_or_default();
            job_of(row, name)
        })
        .collect()
}

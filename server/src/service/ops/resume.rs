//! Resume (`CreateTasks.resume`, as Nextflow's `-resume`): a task whose identical spec
//! already succeeded in its batch is not run again. The earlier task is kept, and its id
//! given in place of a new one, when
//! - its dependencies have all succeeded (a dependency that runs again may change its inputs),
//! - every input holds what it held when the kept execution's agent staged it: the same
//!   files with the same sizes and etags, or modification times where the store gives no
//!   etag (`core::inputs_seen`; a `run+fastq://` accession never changes). An input the
//!   agent did not record (an older agent, a run re-attached after an agent restart) was
//!   not modified since the execution started, by the store's modification times,
//! - every file that execution uploaded is still there, with the same size.
//!
//! Anything that cannot be checked (a store that gives no time, an input that is gone)
//! means the task runs again.

use std::time::UNIX_EPOCH;

use scitq_storage::{Entry, Remotes, Storage, split_actions};

use super::{Ops, OpsError};
use crate::core::ids::TaskId;
use crate::core::inputs_seen::{self, SeenFile};
use crate::core::model::Execution;
use crate::core::state::TaskStatus;
use crate::core::task::{NewTask, SpecError, TaskSpec, UriCheck};
use crate::persistence::{resume, tasks};

impl Ops {
    /// Creates tasks, keeping instead the earlier identical ones that need not run again.
    /// Returns an id per spec, in order.
    pub async fn create_tasks_resuming(
        &self,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<TaskId>, OpsError> {
        if specs.is_empty() {
            return Err(OpsError::NoTask);
        }
        let uris = UriCheck::new(&self.rclone_config);
        let checked = specs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, spec)| {
                let task = NewTask::validate(i, spec)?;
                task.check_uris(i, &uris)?;
                Ok(task)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        let remotes = Remotes::parse(&self.rclone_config).unwrap_or_else(|_| Remotes::empty());
        let storage = Storage::new(remotes);
        let mut ids: Vec<Option<TaskId>> = vec![None; specs.len()];
        let mut fresh = Vec::new();
        for ((i, task), spec) in checked.iter().enumerate().zip(specs) {
            match self.kept(&storage, task).await? {
                Some((id, reason)) => {
                    resume::mark_kept(&self.store, id, reason).await?;
                    ids[i] = Some(id);
                }
                None => fresh.push((i, spec)),
            }
        }
        if !fresh.is_empty() {
            let (places, specs): (Vec<usize>, Vec<TaskSpec>) = fresh.into_iter().unzip();
            let created = self.create_tasks(specs).await?;
            for (place, id) in places.into_iter().zip(created) {
                ids[place] = Some(id);
            }
        }
        Ok(ids
            .into_iter()
            .map(|id| id.expect("every spec has an id"))
            .collect())
    }

    /// The earlier task to keep for `task`, with the reason to show, if one may be kept.
    async fn kept(
        &self,
        storage: &Storage,
        task: &NewTask,
    ) -> Result<Option<(TaskId, String)>, OpsError> {
        for dep in &task.depends_on {
            let dep = tasks::get(&self.store.db, TaskId(*dep)).await?;
            if dep.status != TaskStatus::Succeeded {
                return Ok(None);
            }
        }
        for (id, execution) in resume::candidates(&self.store.db, task).await? {
            if !inputs_unchanged(storage, task, &execution).await {
                continue;
            }
            if !outputs_present(storage, &execution).await {
                continue;
            }
            let reason = format!(
                "kept by resume: execution {} of this task succeeded with the same command, \
                 container, inputs and output; its inputs hold what they held when it ran \
                 and its {} uploaded file(s) are still there, so it was not run again",
                execution.id,
                execution.uploaded.len()
            );
            return Ok(Some((id, reason)));
        }
        Ok(None)
    }
}

/// Whether every input holds what it held when `execution` staged it.
async fn inputs_unchanged(storage: &Storage, task: &NewTask, execution: &Execution) -> bool {
    for input in &task.inputs {
        let Ok((location, _actions)) = split_actions(input) else {
            return false;
        };
        if location.starts_with("run+fastq://") {
            continue;
        }
        let Ok(entries) = storage.list(location, true).await else {
            return false;
        };
        let files: Vec<&Entry> = entries.iter().filter(|e| !e.is_dir).collect();
        let same = match execution.inputs_seen.iter().find(|s| s.uri == location) {
            Some(staged) => inputs_seen::unchanged(staged, &seen_files(&files)),
            None => not_modified_since_start(&files, execution),
        };
        if !same {
            return false;
        }
    }
    true
}

fn seen_files(files: &[&Entry]) -> Vec<SeenFile> {
    files
        .iter()
        .map(|e| SeenFile {
            path: e.path.clone(),
            size: e.size,
            etag: e.etag.clone(),
            modified: e.last_modified.clone(),
        })
        .collect()
}

/// Whether no file was modified since `execution` started (for an input its agent did not
/// record).
fn not_modified_since_start(files: &[&Entry], execution: &Execution) -> bool {
    let Some(started) = execution.started_at else {
        return false;
    };
    files.iter().all(|entry| {
        entry
            .last_modified
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|modified| modified.as_millis() as i64 <= started)
    })
}

/// Whether every file `execution` uploaded is still there with its size.
async fn outputs_present(storage: &Storage, execution: &Execution) -> bool {
    for file in &execution.uploaded {
        match storage.list(&file.uri, false).await {
            Ok(entries) if entries.iter().any(|e| e.size == file.size) => {}
            _ => return false,
        }
    }
    true
}

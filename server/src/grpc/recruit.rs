//! RecruitService: recruiter rules, flavors, machines recruited by hand and provisioning
//! jobs, through `service::ops` (the loop is `service::recruiter`).

use std::time::Duration;

use scitq_proto::v1;
use scitq_proto::v1::recruit_service_server::RecruitService;
use tonic::{Request, Response, Status};

use super::{State, convert, status};
use crate::auth::require_admin;
use crate::core::ids::RecruiterId;
use crate::core::recruit::FlavorChoice;
use crate::service::ops::{DEFAULT_IDLE_TIMEOUT, Deploy, NewRule, RuleView};

pub struct Recruit(pub State);

fn recruiter(view: RuleView) -> v1::Recruiter {
    let rule = view.rule;
    let (flavor, [min_cpu, min_mem_gib, min_disk_gib, gpu]) = match rule.flavor {
        FlavorChoice::Named(name) => (name, [0; 4]),
        FlavorChoice::Minimums {
            cpu,
            memory_gib,
            disk_gib,
            gpu,
        } => (String::new(), [cpu, memory_gib, disk_gib, gpu]),
    };
    v1::Recruiter {
        id: rule.id.0,
        batch: rule.batch,
        provider: rule.provider,
        region: rule.region.unwrap_or_default(),
        flavor,
        min_cpu,
        min_mem_gib,
        min_disk_gib,
        gpu,
        max_workers: rule.max_workers,
        rounds: rule.rounds,
        concurrency: rule.concurrency,
        prefetch: rule.prefetch,
        idle_timeout_s: rule.idle_timeout.as_secs(),
        paused: rule.paused,
        paused_reason: rule.paused_reason.unwrap_or_default(),
        failures: rule.failures,
        machines: view.machines,
    }
}

fn minimums(cpu: u32, memory_gib: u32, disk_gib: u32, gpu: u32) -> FlavorChoice {
    FlavorChoice::Minimums {
        cpu,
        memory_gib,
        disk_gib,
        gpu,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

#[tonic::async_trait]
impl RecruitService for Recruit {
    async fn create_recruiter(
        &self,
        request: Request<v1::CreateRecruiterRequest>,
    ) -> Result<Response<v1::Recruiter>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let has_minimums =
            req.min_cpu > 0 || req.min_mem_gib > 0 || req.min_disk_gib > 0 || req.gpu > 0;
        // Neither a flavor nor minimums: the cheapest flavor.
        let flavor = match (non_empty(req.flavor), has_minimums) {
            (Some(name), false) => FlavorChoice::Named(name),
            (None, _) => minimums(req.min_cpu, req.min_mem_gib, req.min_disk_gib, req.gpu),
            (Some(_), true) => {
                return Err(Status::invalid_argument(
                    "give a flavor or minimums (cpu, memory, disk, gpu), not both",
                ));
            }
        };
        let view = self
            .0
            .ops
            .create_recruiter(NewRule {
                batch: req.batch,
                provider: req.provider,
                region: non_empty(req.region),
                flavor,
                max_workers: req.max_workers,
                rounds: req.rounds.max(1),
                concurrency: req.concurrency.max(1),
                prefetch: req.prefetch,
                idle_timeout: match req.idle_timeout_s {
                    0 => DEFAULT_IDLE_TIMEOUT,
                    s => Duration::from_secs(s),
                },
            })
            .await
            .map_err(status)?;
        Ok(Response::new(recruiter(view)))
    }

    async fn list_recruiters(
        &self,
        request: Request<v1::ListRecruitersRequest>,
    ) -> Result<Response<v1::ListRecruitersResponse>, Status> {
        require_admin(&request)?;
        let views = self.0.ops.recruiters().await.map_err(status)?;
        Ok(Response::new(v1::ListRecruitersResponse {
            recruiters: views.into_iter().map(recruiter).collect(),
        }))
    }

    async fn delete_recruiter(
        &self,
        request: Request<v1::RecruiterRef>,
    ) -> Result<Response<v1::DeleteRecruiterResponse>, Status> {
        require_admin(&request)?;
        let id = RecruiterId(request.into_inner().id);
        self.0.ops.delete_recruiter(id).await.map_err(status)?;
        Ok(Response::new(v1::DeleteRecruiterResponse {}))
    }

    async fn pause_recruiter(
        &self,
        request: Request<v1::RecruiterRef>,
    ) -> Result<Response<v1::Recruiter>, Status> {
        require_admin(&request)?;
        let id = RecruiterId(request.into_inner().id);
        let view = self.0.ops.pause_recruiter(id, true).await.map_err(status)?;
        Ok(Response::new(recruiter(view)))
    }

    async fn resume_recruiter(
        &self,
        request: Request<v1::RecruiterRef>,
    ) -> Result<Response<v1::Recruiter>, Status> {
        require_admin(&request)?;
        let id = RecruiterId(request.into_inner().id);
        let view = self
            .0
            .ops
            .pause_recruiter(id, false)
            .await
            .map_err(status)?;
        Ok(Response::new(recruiter(view)))
    }

    async fn list_flavors(
        &self,
        request: Request<v1::ListFlavorsRequest>,
    ) -> Result<Response<v1::ListFlavorsResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let provider = non_empty(req.provider);
        let (found, errors) = self
            .0
            .ops
            .flavors(
                provider.as_deref(),
                minimums(req.min_cpu, req.min_mem_gib, req.min_disk_gib, req.gpu),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListFlavorsResponse {
            flavors: found
                .into_iter()
                .map(|(provider, f)| v1::Flavor {
                    provider,
                    name: f.name,
                    cpu: f.cpu,
                    memory_mib: f.memory_mib,
                    disk_gib: f.disk_gib,
                    gpu: f.gpu,
                    price_per_hour: f.price_per_hour,
                })
                .collect(),
            errors,
        }))
    }

    async fn deploy_workers(
        &self,
        request: Request<v1::DeployWorkersRequest>,
    ) -> Result<Response<v1::DeployWorkersResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let machines = self
            .0
            .ops
            .deploy_workers(Deploy {
                provider: req.provider,
                flavor: req.flavor,
                region: non_empty(req.region),
                count: req.count.max(1),
                batch: non_empty(req.batch),
                concurrency: (req.concurrency > 0).then_some(req.concurrency),
                prefetch: req.prefetch,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(v1::DeployWorkersResponse {
            machines: machines.into_iter().map(convert::machine).collect(),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        require_admin(&request)?;
        let limit = match request.into_inner().limit {
            0 => 100,
            n => u64::from(n.min(10_000)),
        };
        let jobs = self.0.ops.jobs(limit).await.map_err(status)?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs
                .into_iter()
                .map(|j| v1::Job {
                    id: j.id,
                    machine: j.machine_name,
                    kind: j.kind.as_str().to_owned(),
                    status: j.status.as_str().to_owned(),
                    attempts: j.attempts,
                    error_class: j.error_class.unwrap_or_default(),
                    log: j.log,
                    created_at: Some(convert::timestamp(j.created_at)),
                    updated_at: Some(convert::timestamp(j.updated_at)),
                })
                .collect(),
        }))
    }
}

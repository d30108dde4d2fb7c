//! The `redraft.v1.Orchestrator` gRPC service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use redraft_proto::orchestrator_server::Orchestrator;
use redraft_proto::{
    CancelJobRequest, GetJobRequest, InfoRequest, Job, JobEvent, JobStatus, ListJobsRequest,
    ListJobsResponse, OrchestratorInfo, Replica as ReplicaInfo, SubmitJobRequest, WatchJobRequest,
    job_event,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::OrchestratorError;
use crate::pool::Pool;
use crate::runner::new_job;
use crate::spec::{SpecLimits, resolve};
use crate::store::{JobStore, is_finished};

/// Jobs `ListJobs` returns when the request sets no limit.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// A stream of job events.
pub type JobEventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;

/// gRPC front of the job store and queue.
pub struct OrchestratorService {
    store: Arc<JobStore>,
    queue: mpsc::Sender<String>,
    queue_capacity: usize,
    limits: SpecLimits,
    generators: Arc<Pool>,
    critics: Arc<Pool>,
}

impl OrchestratorService {
    /// Creates the service.
    pub fn new(
        store: Arc<JobStore>,
        queue: mpsc::Sender<String>,
        queue_capacity: usize,
        limits: SpecLimits,
        generators: Arc<Pool>,
        critics: Arc<Pool>,
    ) -> Self {
        Self {
            store,
            queue,
            queue_capacity,
            limits,
            generators,
            critics,
        }
    }

    fn submit(&self, request: SubmitJobRequest) -> Result<Job, OrchestratorError> {
        let spec = resolve(request.spec, &self.limits)?;
        let job = new_job(spec);
        self.store.insert(job.clone());
        if let Err(error) = self.queue.try_send(job.id.clone()) {
            self.store.remove(&job.id);
            return Err(match error {
                mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_) => {
                    OrchestratorError::QueueFull {
                        capacity: self.queue_capacity,
                    }
                }
            });
        }
        crate::metrics::queue_depth(self.store.count_status(JobStatus::Queued));
        tracing::info!(job_id = %job.id, prompt = %job.spec.as_ref().map(|spec| spec.prompt.as_str()).unwrap_or_default(), "job queued");
        Ok(job)
    }

    fn watch(&self, job_id: &str) -> Result<JobEventStream, OrchestratorError> {
        let (snapshot, events) = self.store.subscribe(job_id)?;
        Ok(Box::pin(watch_stream(self.store.clone(), snapshot, events)))
    }
}

/// Streams a snapshot, then every event until the job finishes. A watcher
/// that falls behind gets a fresh snapshot in place of the events it missed.
fn watch_stream(
    store: Arc<JobStore>,
    snapshot: Job,
    mut events: broadcast::Receiver<JobEvent>,
) -> impl Stream<Item = Result<JobEvent, Status>> {
    async_stream_events(move |sender| async move {
        let job_id = snapshot.id.clone();
        let finished = is_finished(snapshot.status);
        let first = JobEvent {
            job_id: job_id.clone(),
            status: snapshot.status,
            event: Some(if finished {
                job_event::Event::Finished(snapshot)
            } else {
                job_event::Event::Snapshot(snapshot)
            }),
        };
        if sender.send(Ok(first)).await.is_err() || finished {
            return;
        }
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(%job_id, missed, "watcher fell behind; sending a snapshot");
                    let Ok(job) = store.get(&job_id) else { return };
                    JobEvent {
                        job_id: job_id.clone(),
                        status: job.status,
                        event: Some(if is_finished(job.status) {
                            job_event::Event::Finished(job)
                        } else {
                            job_event::Event::Snapshot(job)
                        }),
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let last = matches!(event.event, Some(job_event::Event::Finished(_)));
            if sender.send(Ok(event)).await.is_err() || last {
                return;
            }
        }
    })
}

/// Runs `produce` on its own task, feeding a channel-backed stream.
fn async_stream_events<F, Fut>(produce: F) -> impl Stream<Item = Result<JobEvent, Status>>
where
    F: FnOnce(mpsc::Sender<Result<JobEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(produce(sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

fn record<T>(method: &'static str, started: Instant, outcome: &Result<T, OrchestratorError>) {
    let error_type = outcome.as_ref().err().map(OrchestratorError::error_type);
    if let Err(error) = outcome {
        tracing::warn!(method, %error, error_type = error.error_type(), "request failed");
    }
    redraft_common::telemetry::record_rpc("orchestrator", method, started.elapsed(), error_type);
}

fn replica_infos(pool: &Pool) -> Vec<ReplicaInfo> {
    pool.replicas()
        .iter()
        .map(|replica| ReplicaInfo {
            address: replica.address().to_string(),
            healthy: replica.is_healthy(),
            outstanding: replica.outstanding() as u32,
            failures: replica.failures(),
        })
        .collect()
}

#[tonic::async_trait]
impl Orchestrator for OrchestratorService {
    async fn info(
        &self,
        _request: Request<InfoRequest>,
    ) -> Result<Response<OrchestratorInfo>, Status> {
        Ok(Response::new(OrchestratorInfo {
            build: Some(redraft_common::build_info()),
            max_iterations: self.limits.max_iterations,
            max_candidates_per_iteration: self.limits.max_candidates,
            max_prompt_chars: self.limits.max_prompt_chars as u32,
            max_deadline_seconds: self.limits.max_deadline_seconds,
            queue_capacity: self.queue_capacity as u32,
            max_generator_calls: self.limits.max_generator_calls,
            generators: replica_infos(&self.generators),
            critics: replica_infos(&self.critics),
        }))
    }

    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let started = Instant::now();
        let outcome = self.submit(request.into_inner());
        record("submit_job", started, &outcome);
        Ok(Response::new(outcome?))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let started = Instant::now();
        let outcome = self.store.get(&request.into_inner().job_id);
        record("get_job", started, &outcome);
        Ok(Response::new(outcome?))
    }

    type WatchJobStream = JobEventStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let started = Instant::now();
        let outcome = self.watch(&request.into_inner().job_id);
        record("watch_job", started, &outcome);
        Ok(Response::new(outcome?))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let started = Instant::now();
        let job_id = request.into_inner().job_id;
        let outcome = self.store.cancel_token(&job_id).and_then(|token| {
            let job = self.store.update(&job_id, |job| {
                if job.status != JobStatus::Queued as i32 {
                    return None;
                }
                // A queued job ends here; the worker skips it.
                job.status = JobStatus::Cancelled as i32;
                job.error = "cancelled by a client before it started".to_string();
                Some(job_event::Event::Finished(job.clone()))
            })?;
            token.cancel();
            tracing::info!(%job_id, "job cancel requested");
            Ok(job)
        });
        record("cancel_job", started, &outcome);
        Ok(Response::new(outcome?))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let started = Instant::now();
        let limit = match request.into_inner().limit {
            0 => DEFAULT_LIST_LIMIT,
            limit => limit as usize,
        };
        let outcome: Result<_, OrchestratorError> = Ok(ListJobsResponse {
            jobs: self.store.list(limit),
        });
        record("list_jobs", started, &outcome);
        Ok(Response::new(outcome?))
    }

    type GenerateStream = JobEventStream;

    async fn generate(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let started = Instant::now();
        let outcome = self
            .submit(request.into_inner())
            .and_then(|job| self.watch(&job.id));
        record("generate", started, &outcome);
        Ok(Response::new(outcome?))
    }
}

//! The job store: every job's state and history, the event feed of each job,
//! and its cancellation token. The orchestrator is the only writer.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use redraft_proto::{Job, JobEvent, JobStatus, job_event};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::OrchestratorError;

/// Events a slow watcher may fall behind by before it gets a fresh snapshot.
const EVENT_BUFFER: usize = 256;

struct Entry {
    job: Job,
    events: broadcast::Sender<JobEvent>,
    cancel: CancellationToken,
}

/// In-memory store of jobs, newest last. Finished jobs beyond
/// `max_finished` are dropped, oldest first.
// NOTE: jobs live in memory only, so an orchestrator restart loses them.
pub struct JobStore {
    inner: Mutex<Inner>,
    max_finished: usize,
}

struct Inner {
    jobs: HashMap<String, Entry>,
    order: VecDeque<String>,
}

/// True for SATISFIED, EXHAUSTED, FAILED and CANCELLED.
pub fn is_finished(status: i32) -> bool {
    matches!(
        JobStatus::try_from(status),
        Ok(JobStatus::Satisfied | JobStatus::Exhausted | JobStatus::Failed | JobStatus::Cancelled)
    )
}

impl JobStore {
    /// Creates an empty store that keeps up to `max_finished` finished jobs.
    pub fn new(max_finished: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                order: VecDeque::new(),
            }),
            max_finished,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a new job.
    pub fn insert(&self, job: Job) {
        let mut inner = self.lock();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        inner.order.push_back(job.id.clone());
        inner.jobs.insert(
            job.id.clone(),
            Entry {
                job,
                events,
                cancel: CancellationToken::new(),
            },
        );
        self.evict(&mut inner);
    }

    /// Removes a job, for a submission whose queueing failed.
    pub fn remove(&self, job_id: &str) {
        let mut inner = self.lock();
        inner.jobs.remove(job_id);
        inner.order.retain(|id| id != job_id);
    }

    fn evict(&self, inner: &mut Inner) {
        let finished = inner
            .order
            .iter()
            .filter(|id| {
                inner
                    .jobs
                    .get(*id)
                    .is_some_and(|entry| is_finished(entry.job.status))
            })
            .count();
        let mut excess = finished.saturating_sub(self.max_finished);
        let mut kept = VecDeque::with_capacity(inner.order.len());
        for id in inner.order.drain(..) {
            let finished = inner
                .jobs
                .get(&id)
                .is_some_and(|entry| is_finished(entry.job.status));
            if excess > 0 && finished {
                inner.jobs.remove(&id);
                excess -= 1;
            } else {
                kept.push_back(id);
            }
        }
        inner.order = kept;
    }

    /// Returns a copy of the job.
    pub fn get(&self, job_id: &str) -> Result<Job, OrchestratorError> {
        let inner = self.lock();
        inner
            .jobs
            .get(job_id)
            .map(|entry| entry.job.clone())
            .ok_or_else(|| not_found(job_id))
    }

    /// The job's cancellation token.
    pub fn cancel_token(&self, job_id: &str) -> Result<CancellationToken, OrchestratorError> {
        let inner = self.lock();
        inner
            .jobs
            .get(job_id)
            .map(|entry| entry.cancel.clone())
            .ok_or_else(|| not_found(job_id))
    }

    /// Applies `change` to the job and publishes the event it returns, if any.
    /// Returns the job after the change.
    pub fn update(
        &self,
        job_id: &str,
        change: impl FnOnce(&mut Job) -> Option<job_event::Event>,
    ) -> Result<Job, OrchestratorError> {
        let mut inner = self.lock();
        let entry = inner
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| not_found(job_id))?;
        let event = change(&mut entry.job);
        if let Some(event) = event {
            // An error here only means that no client is watching.
            let _ = entry.events.send(JobEvent {
                job_id: job_id.to_string(),
                status: entry.job.status,
                event: Some(event),
            });
        }
        let job = entry.job.clone();
        if is_finished(job.status) {
            self.evict(&mut inner);
        }
        Ok(job)
    }

    /// Returns a snapshot of the job and a receiver of every later event,
    /// taken together so that no event falls between them.
    pub fn subscribe(
        &self,
        job_id: &str,
    ) -> Result<(Job, broadcast::Receiver<JobEvent>), OrchestratorError> {
        let inner = self.lock();
        let entry = inner.jobs.get(job_id).ok_or_else(|| not_found(job_id))?;
        Ok((entry.job.clone(), entry.events.subscribe()))
    }

    /// Lists up to `limit` jobs, newest first, without candidate images.
    pub fn list(&self, limit: usize) -> Vec<Job> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.jobs.get(id))
            .take(limit)
            .map(|entry| without_images(&entry.job))
            .collect()
    }

    /// Jobs by status, for the queue-depth and running gauges.
    pub fn count_status(&self, status: JobStatus) -> usize {
        let inner = self.lock();
        inner
            .jobs
            .values()
            .filter(|entry| entry.job.status == status as i32)
            .count()
    }
}

fn not_found(job_id: &str) -> OrchestratorError {
    OrchestratorError::JobNotFound {
        job_id: job_id.to_string(),
    }
}

/// Copies a job with every candidate image removed.
pub fn without_images(job: &Job) -> Job {
    let mut job = job.clone();
    for iteration in &mut job.iterations {
        for candidate in &mut iteration.candidates {
            candidate.image = None;
        }
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, status: JobStatus) -> Job {
        Job {
            id: id.to_string(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn unknown_job_not_found() {
        let store = JobStore::new(10);
        let error = store.get("nope").unwrap_err();
        assert!(matches!(error, OrchestratorError::JobNotFound { .. }));
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::NotFound);
    }

    #[test]
    fn oldest_finished_jobs_evicted() {
        let store = JobStore::new(2);
        store.insert(job("running", JobStatus::Running));
        for id in ["a", "b", "c"] {
            store.insert(job(id, JobStatus::Satisfied));
        }
        assert!(store.get("a").is_err());
        assert!(store.get("b").is_ok());
        assert!(store.get("c").is_ok());
        assert!(store.get("running").is_ok());
    }

    #[test]
    fn subscriber_sees_updates() {
        let store = JobStore::new(10);
        store.insert(job("j", JobStatus::Queued));
        let (snapshot, mut events) = store.subscribe("j").unwrap();
        assert_eq!(snapshot.status, JobStatus::Queued as i32);
        store
            .update("j", |job| {
                job.status = JobStatus::Running as i32;
                Some(job_event::Event::Snapshot(job.clone()))
            })
            .unwrap();
        let event = events.try_recv().unwrap();
        assert_eq!(event.status, JobStatus::Running as i32);
    }

    #[test]
    fn list_is_newest_first() {
        let store = JobStore::new(10);
        store.insert(job("first", JobStatus::Queued));
        store.insert(job("second", JobStatus::Queued));
        let ids: Vec<String> = store.list(10).into_iter().map(|job| job.id).collect();
        assert_eq!(ids, vec!["second", "first"]);
        assert_eq!(store.list(1).len(), 1);
    }
}

//! The self-review loop across real processes: a job to completion, a
//! generator replica killed mid-job, cancellation, and the job listing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redraft_proto::{
    Action, CancelJobRequest, GetJobRequest, JobStatus, ListJobsRequest, Strategy, WatchJobRequest,
    job_event,
};
use redraft_tests::{TestStack, metric_sum, run_job, scrape_metrics, spec};

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_to_completion() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = stack.client().await;

    // Threshold 1 cannot be met by random weights, so the job runs every iteration.
    let job = run_job(&mut client, spec("a red circle", 1.0, 2, 3), |_| {})
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Exhausted as i32, "{}", job.error);
    assert_eq!(job.iterations.len(), 2);
    for (index, iteration) in job.iterations.iter().enumerate() {
        assert_eq!(iteration.index as usize, index);
        assert_eq!(iteration.action, Action::Reseed as i32);
        assert!(!iteration.reason.is_empty());
        assert_eq!(iteration.candidates.len(), 3);
        assert!(iteration.seconds > 0.0);
    }

    // Every candidate has its own seed, a decodable image and a critique.
    let mut seeds: Vec<u64> = Vec::new();
    for candidate in job
        .iterations
        .iter()
        .flat_map(|iteration| &iteration.candidates)
    {
        seeds.push(candidate.seed);
        let image = candidate.image.as_ref().unwrap();
        let decoded = image::load_from_memory(&image.png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 64));
        let critique = candidate.critique.as_ref().unwrap();
        assert!((0.0..=1.0).contains(&critique.score));
        assert!(!critique.checks.is_empty());
        assert!(!critique.summary.is_empty());
        let timings = candidate.timings.unwrap();
        assert!(timings.generate_seconds > 0.0);
        assert!(timings.critique_seconds > 0.0);
        assert_eq!(candidate.params.as_ref().unwrap().steps, Some(4));
    }
    seeds.sort();
    assert_eq!(seeds, vec![1, 2, 3, 4, 5, 6]);

    // The best candidate is the highest-scoring one.
    let best = job.best.unwrap();
    let best_candidate =
        &job.iterations[best.iteration as usize].candidates[best.candidate as usize];
    let top = job
        .iterations
        .iter()
        .flat_map(|iteration| &iteration.candidates)
        .map(|candidate| candidate.critique.as_ref().unwrap().score)
        .fold(f32::MIN, f32::max);
    assert_eq!(best_candidate.critique.as_ref().unwrap().score, top);
    assert_eq!(job.best_score, top);

    let totals = job.totals.unwrap();
    assert_eq!(totals.generator_calls, 6);
    assert_eq!(totals.critic_calls, 6);
    assert!(totals.wall_seconds > 0.0);

    // GetJob returns the same finished job, and ListJobs lists it without images.
    let fetched = client
        .get_job(GetJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, job);
    let listed = client
        .list_jobs(ListJobsRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, job.id);
    assert!(listed[0].iterations[0].candidates[0].image.is_none());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_obeys_budget() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = stack.client().await;
    for strategy in [
        Strategy::BestOfN,
        Strategy::Reprompt,
        Strategy::Refine,
        Strategy::Adaptive,
    ] {
        // Threshold 1 is never met, so only the budget of 5 calls ends the job.
        let mut job_spec = spec("two red circles left of a square", 1.0, 10, 2);
        let policy = job_spec.policy.as_mut().unwrap();
        policy.strategy = strategy as i32;
        policy.max_generator_calls = Some(5);
        let job = run_job(&mut client, job_spec, |_| {}).await.unwrap();

        assert_eq!(
            job.status,
            JobStatus::Exhausted as i32,
            "{strategy:?}: {}",
            job.error
        );
        assert_eq!(
            job.spec.as_ref().unwrap().policy.as_ref().unwrap().strategy,
            strategy as i32
        );
        let sizes: Vec<usize> = job
            .iterations
            .iter()
            .map(|iteration| iteration.candidates.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1], "{strategy:?}");
        let totals = job.totals.unwrap();
        assert_eq!(totals.budget_spent, 5, "{strategy:?}");
        assert_eq!(totals.generator_calls, 5, "{strategy:?}");

        // Each candidate records how it was drawn.
        for iteration in &job.iterations {
            assert!(!iteration.reason.is_empty());
            for candidate in &iteration.candidates {
                let action = Action::try_from(candidate.action).unwrap();
                if action == Action::Refine {
                    let from = candidate.init_from.unwrap();
                    assert!(from.iteration < iteration.index, "{strategy:?}");
                    assert!(candidate.strength > 0.0, "{strategy:?}");
                    assert!(candidate.strength <= 1.0, "{strategy:?}");
                } else {
                    assert!(candidate.init_from.is_none(), "{strategy:?}");
                    assert_eq!(candidate.strength, 0.0);
                }
                if strategy == Strategy::BestOfN {
                    assert_eq!(action, Action::Reseed);
                }
            }
        }
        assert!(
            job.iterations[0]
                .candidates
                .iter()
                .all(|candidate| candidate.action == Action::Reseed as i32),
            "{strategy:?}: the first iteration reseeds"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_zero_is_satisfied_at_once() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = stack.client().await;
    let job = run_job(&mut client, spec("a blue square", 0.0, 5, 1), |_| {})
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Satisfied as i32, "{}", job.error);
    assert_eq!(job.iterations.len(), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_generator_replica_job_completes() {
    let stack = TestStack::start(EXE.as_ref(), 2, 1).await.unwrap();
    let mut client = stack.client().await;
    let victim = stack.actor("generator-1");
    let victim_pid = victim.pid().unwrap();
    let victim_url = victim.url();

    // Many steps on a larger image keep both first calls in flight for a
    // while, so the kill lands while the victim still draws its candidate.
    let mut job_spec = spec("two green triangles", 1.0, 4, 2);
    let params = job_spec.params.as_mut().unwrap();
    params.steps = Some(100);
    params.width = 128;
    params.height = 128;
    let killed = AtomicBool::new(false);
    let job = run_job(&mut client, job_spec, |event| {
        if let Some(job_event::Event::Progress(progress)) = &event.event
            && progress.iteration == 0
            && progress.step < progress.total_steps / 2
            && !killed.swap(true, Ordering::SeqCst)
        {
            kill(Pid::from_raw(victim_pid as i32), Signal::SIGKILL).unwrap();
        }
    })
    .await
    .unwrap();

    assert!(
        killed.load(Ordering::SeqCst),
        "no progress event of the first half of iteration 0 arrived, so nothing was killed"
    );
    assert_eq!(job.status, JobStatus::Exhausted as i32, "{}", job.error);
    assert_eq!(job.iterations.len(), 4);
    let candidates: Vec<_> = job
        .iterations
        .iter()
        .flat_map(|iteration| &iteration.candidates)
        .collect();
    assert_eq!(candidates.len(), 8);
    // After the first iteration the dead replica serves nothing.
    for candidate in job.iterations[1..]
        .iter()
        .flat_map(|iteration| &iteration.candidates)
    {
        assert_ne!(candidate.generator, victim_url);
    }
    // The interrupted calls were retried, so there were more calls than candidates.
    assert!(job.totals.unwrap().generator_calls > 8);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_inflight_generation() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = stack.client().await;
    let generator_metrics = stack.actor("generator-1").addrs.metrics;

    let mut job_spec = spec("a yellow circle", 1.0, 10, 1);
    job_spec.params.as_mut().unwrap().steps = Some(150);
    job_spec.params.as_mut().unwrap().width = 256;
    job_spec.params.as_mut().unwrap().height = 256;
    let job = client
        .submit_job(redraft_proto::SubmitJobRequest {
            spec: Some(job_spec),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = client
        .watch_job(WatchJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // Cancel at the first progress event, then wait for the job to end.
    let mut cancelled = false;
    let finished = loop {
        let event = events
            .message()
            .await
            .unwrap()
            .expect("the stream ends with the finished job");
        match event.event {
            Some(job_event::Event::Progress(_)) if !cancelled => {
                client
                    .cancel_job(CancelJobRequest {
                        job_id: job.id.clone(),
                    })
                    .await
                    .unwrap();
                cancelled = true;
            }
            Some(job_event::Event::Finished(job)) => break job,
            _ => {}
        }
    };
    assert_eq!(finished.status, JobStatus::Cancelled as i32);
    assert!(finished.error.contains("cancelled"), "{}", finished.error);

    // The generator stopped the request early, and it logs that as a cancellation.
    let mut cancellations = 0.0;
    for _ in 0..100 {
        let exposition = scrape_metrics(generator_metrics).await.unwrap();
        cancellations = metric_sum(
            &exposition,
            "redraft_request_errors_total",
            &["error_type=\"cancelled\""],
        );
        if cancellations > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cancellations, 1.0);

    // Cancelling a finished job returns it unchanged.
    let again = client
        .cancel_job(CancelJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, JobStatus::Cancelled as i32);
    stack.stop().await;
}

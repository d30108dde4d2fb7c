//! The orchestrator follows replicas as a DNS name's answers change: a job
//! completes while its critic set grows from one to three replicas and
//! shrinks back to one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use redraft_cli::launcher::{ActorSpec, RunningActor};
use redraft_orchestrator::discovery::{ResolveFuture, Resolver};
use redraft_proto::{InfoRequest, JobStatus, job_event};
use redraft_tests::{launcher, run_job, spec, tiny_models};

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

/// Resolver that returns the addresses the test sets, for every lookup.
#[derive(Default)]
struct ScriptedResolver {
    answers: Mutex<Vec<SocketAddr>>,
}

impl ScriptedResolver {
    fn answer(&self, addresses: Vec<SocketAddr>) {
        *self.answers.lock().unwrap() = addresses;
    }
}

impl Resolver for ScriptedResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> ResolveFuture<'a> {
        assert_eq!(host, "critics.test");
        let answers = self.answers.lock().unwrap().clone();
        Box::pin(async move { Ok(answers) })
    }
}

#[derive(Parser)]
struct OrchestratorCommand {
    #[command(flatten)]
    args: redraft_orchestrator::OrchestratorArgs,
}

fn actor(
    role: &'static str,
    name: &str,
    model: &std::path::Path,
    service: &'static str,
) -> ActorSpec {
    ActorSpec {
        role,
        name: name.to_string(),
        service,
        args: vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--model".into(),
            model.display().to_string(),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_survives_critic_scaling() {
    let launcher = launcher(EXE.as_ref());
    let models = tiny_models();
    let mut actors: Vec<RunningActor> = Vec::new();
    actors.push(
        launcher
            .start(&actor(
                "generator",
                "generator-1",
                &models.generator,
                "redraft.v1.Generator",
            ))
            .await
            .unwrap(),
    );
    for index in 1..=3 {
        let name = format!("critic-{index}");
        actors.push(
            launcher
                .start(&actor("critic", &name, &models.critic, "redraft.v1.Critic"))
                .await
                .unwrap(),
        );
    }
    let critic = |index: usize| actors[index].addrs.grpc;
    let resolver = Arc::new(ScriptedResolver::default());
    resolver.answer(vec![critic(1)]);

    let command = OrchestratorCommand::parse_from([
        "orchestrator",
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--generator",
        &actors[0].url(),
        "--critic",
        "dns:///critics.test:50052",
        "--resolve-interval-seconds",
        "0.1",
    ]);
    let started = redraft_orchestrator::start(command.args, resolver.clone())
        .await
        .unwrap();
    let url = format!("http://{}", started.grpc_addr);
    let mut client = redraft_cli::connect_orchestrator(&url).await.unwrap();
    let info_client = client.clone();
    let mut job_client = client.clone();

    // Waits until the orchestrator reports `count` healthy critics and its
    // generator healthy, so no job starts before its replicas can serve it.
    let healthy_critics = |count: usize| {
        let mut info_client = info_client.clone();
        async move {
            for _ in 0..200 {
                let info = info_client.info(InfoRequest {}).await.unwrap().into_inner();
                let healthy = info.critics.iter().filter(|critic| critic.healthy).count();
                let generators_healthy = info.generators.iter().all(|generator| generator.healthy);
                if info.critics.len() == count && healthy == count && generators_healthy {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the orchestrator never saw {count} healthy critics");
        }
    };
    healthy_critics(1).await;

    // Grow to three critics after the second iteration, shrink back after the sixth.
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut job_spec = spec("a red circle and a blue square", 1.0, 12, 3);
    job_spec.params.as_mut().unwrap().steps = Some(20);
    let job = tokio::spawn(async move {
        run_job(&mut client, job_spec, |event| {
            if let Some(job_event::Event::IterationFinished(iteration)) = &event.event {
                let _ = events_tx.send((event.job_id.clone(), iteration.index));
            }
        })
        .await
    });
    let mut first_after_shrink = None;
    while let Some((job_id, index)) = events_rx.recv().await {
        if index == 1 {
            resolver.answer(vec![critic(1), critic(2), critic(3)]);
            healthy_critics(3).await;
        }
        if index == 5 {
            resolver.answer(vec![critic(1)]);
            healthy_critics(1).await;
            // Iterations that had not started yet cannot use a removed critic.
            let request = redraft_proto::GetJobRequest { job_id };
            let started = job_client.get_job(request).await.unwrap().into_inner();
            first_after_shrink = Some(started.iterations.len());
        }
    }
    let job = job.await.unwrap().unwrap();

    assert_eq!(job.status, JobStatus::Exhausted as i32, "{}", job.error);
    assert_eq!(job.iterations.len(), 12);
    assert!(
        job.iterations
            .iter()
            .all(|iteration| iteration.candidates.len() == 3)
    );

    // Critics 2 and 3 judged some candidates while they were in the set.
    let url_of = |index: usize| format!("http://{}", critic(index));
    let judged_by = |index: usize| {
        job.iterations
            .iter()
            .flat_map(|iteration| &iteration.candidates)
            .filter(|candidate| candidate.critic == url_of(index))
            .count()
    };
    assert!(
        judged_by(2) + judged_by(3) > 0,
        "no candidate went to the added critics"
    );

    // Iterations that started after the shrink use critic 1 only.
    let first_after = first_after_shrink.expect("the job reached its sixth iteration");
    assert!(
        first_after < job.iterations.len(),
        "the job ended before the shrink"
    );
    for iteration in &job.iterations[first_after..] {
        for candidate in &iteration.candidates {
            assert_eq!(
                candidate.critic,
                url_of(1),
                "iteration {} used a removed critic",
                iteration.index
            );
        }
    }

    started.shutdown.cancel();
    started.task.await.unwrap().unwrap();
    launcher.stop_all(&mut actors).await;
}

//! Every actor serves gRPC health and server reflection, so probes and
//! grpcurl work without the .proto files.

use redraft_proto::InfoRequest;
use redraft_proto::critic_client::CriticClient;
use redraft_proto::generator_client::GeneratorClient;
use redraft_proto::orchestrator_client::OrchestratorClient;
use redraft_tests::TestStack;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn listed_services(url: &str) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_serve_health_and_reflection() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let actors = [
        ("generator-1", "redraft.v1.Generator"),
        ("critic-1", "redraft.v1.Critic"),
        ("orchestrator", "redraft.v1.Orchestrator"),
    ];
    for (name, service) in actors {
        let url = stack.url(name);
        let mut health = HealthClient::new(channel(&url).await);
        for checked in ["", service] {
            let status = health
                .check(HealthCheckRequest {
                    service: checked.to_string(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(
                status,
                ServingStatus::Serving as i32,
                "{name} health for {checked:?}"
            );
        }
        let services = listed_services(&url).await;
        assert!(
            services.contains(&service.to_string()),
            "{name}: {services:?}"
        );
        assert!(
            services.contains(&"grpc.health.v1.Health".to_string()),
            "{name}: {services:?}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_reports_limits_and_replicas() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();

    let generator = GeneratorClient::connect(stack.url("generator-1"))
        .await
        .unwrap()
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(generator.default_width, 64);
    assert_eq!(generator.max_steps, 150);
    assert_eq!(
        generator.schedulers,
        vec!["ddim", "euler_ancestral", "ddpm"]
    );
    assert_eq!(generator.build.unwrap().api, "redraft.v1");

    let critic = CriticClient::connect(stack.url("critic-1"))
        .await
        .unwrap()
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(critic.image_size, 32);
    assert_eq!(critic.max_prompt_chars, 1000);

    let orchestrator = OrchestratorClient::connect(stack.url("orchestrator"))
        .await
        .unwrap()
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(orchestrator.generators.len(), 1);
    assert!(orchestrator.generators[0].healthy);
    assert_eq!(orchestrator.generators[0].address, stack.url("generator-1"));
    assert_eq!(orchestrator.critics.len(), 1);
    assert_eq!(orchestrator.max_iterations, 32);
    stack.stop().await;
}

//! Every kind of bad input gets INVALID_ARGUMENT or NOT_FOUND naming the
//! field, the value and the limit, from real actor processes.

use redraft_proto::critic_client::CriticClient;
use redraft_proto::generator_client::GeneratorClient;
use redraft_proto::{
    CancelJobRequest, CritiqueRequest, GenerateRequest, GenerationParams, GetJobRequest, Image,
    JobSpec, LoopPolicy, SubmitJobRequest, WatchJobRequest,
};
use redraft_tests::{TestStack, spec};
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

fn assert_invalid(status: &tonic::Status, field: &str, value: &str, limit: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let message = status.message();
    assert!(
        message.contains(field),
        "{message:?} does not name the field {field}"
    );
    assert!(
        message.contains(value),
        "{message:?} does not name the value {value}"
    );
    assert!(
        message.contains(limit),
        "{message:?} does not name the limit {limit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_rejected_with_field() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = stack.client().await;
    let base = spec("a red circle", 0.5, 2, 2);
    let with_params = |change: fn(&mut GenerationParams)| {
        let mut spec = base.clone();
        change(spec.params.as_mut().unwrap());
        spec
    };
    let with_policy = |change: fn(&mut LoopPolicy)| {
        let mut spec = base.clone();
        change(spec.policy.as_mut().unwrap());
        spec
    };
    let cases: Vec<(JobSpec, &str, &str, &str)> = vec![
        (
            JobSpec {
                prompt: String::new(),
                ..base.clone()
            },
            "spec.prompt",
            "\"\"",
            "non-empty",
        ),
        (
            JobSpec {
                prompt: "x".repeat(1001),
                ..base.clone()
            },
            "spec.prompt",
            "1001 characters",
            "at most 1000",
        ),
        (
            with_params(|params| params.width = 100),
            "spec.params.width",
            "100",
            "multiple of 8",
        ),
        (
            with_params(|params| params.height = 2048),
            "spec.params.height",
            "2048",
            "up to 1024",
        ),
        (
            with_params(|params| params.steps = Some(0)),
            "spec.params.steps",
            "0",
            "from 1 to 150",
        ),
        (
            with_params(|params| params.steps = Some(151)),
            "spec.params.steps",
            "151",
            "from 1 to 150",
        ),
        (
            with_policy(|policy| policy.threshold = Some(1.5)),
            "spec.policy.threshold",
            "1.5",
            "[0, 1]",
        ),
        (
            with_policy(|policy| policy.threshold = Some(-0.5)),
            "spec.policy.threshold",
            "-0.5",
            "[0, 1]",
        ),
        (
            with_policy(|policy| policy.candidates_per_iteration = Some(0)),
            "spec.policy.candidates_per_iteration",
            "0",
            "from 1 to 16",
        ),
        (
            with_policy(|policy| policy.max_iterations = Some(33)),
            "spec.policy.max_iterations",
            "33",
            "from 1 to 32",
        ),
        (
            with_policy(|policy| policy.deadline_seconds = Some(-1.0)),
            "spec.policy.deadline_seconds",
            "-1",
            "above 0",
        ),
        (
            with_policy(|policy| policy.max_generator_calls = Some(0)),
            "spec.policy.max_generator_calls",
            "0",
            "from 1 to 256",
        ),
        (
            with_policy(|policy| policy.max_generator_calls = Some(257)),
            "spec.policy.max_generator_calls",
            "257",
            "from 1 to 256",
        ),
        (
            with_policy(|policy| policy.strategy = 9),
            "spec.policy.strategy",
            "9",
            "BEST_OF_N, REPROMPT, REFINE or ADAPTIVE",
        ),
    ];
    for (spec, field, value, limit) in cases {
        let status = client
            .submit_job(SubmitJobRequest {
                spec: Some(spec.clone()),
            })
            .await
            .unwrap_err();
        assert_invalid(&status, field, value, limit);
        // Generate validates the same way before it streams anything.
        let status = client
            .generate(SubmitJobRequest { spec: Some(spec) })
            .await
            .unwrap_err();
        assert_invalid(&status, field, value, limit);
    }
    // Nothing was queued by the rejected submissions.
    let listed = client
        .list_jobs(redraft_proto::ListJobsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_job_id_not_found() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = stack.client().await;
    let id = "no-such-job".to_string();
    let statuses = [
        client
            .get_job(GetJobRequest { job_id: id.clone() })
            .await
            .unwrap_err(),
        client
            .cancel_job(CancelJobRequest { job_id: id.clone() })
            .await
            .unwrap_err(),
        client
            .watch_job(WatchJobRequest { job_id: id.clone() })
            .await
            .unwrap_err(),
    ];
    for status in statuses {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("no-such-job"), "{status:?}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_generate_requests_rejected() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = GeneratorClient::connect(stack.url("generator-1"))
        .await
        .unwrap();
    let base = GenerateRequest {
        prompt: "a red circle".to_string(),
        steps: Some(2),
        ..Default::default()
    };
    let cases: Vec<(GenerateRequest, &str, &str, &str)> = vec![
        (
            GenerateRequest {
                prompt: "  ".to_string(),
                ..base.clone()
            },
            "prompt",
            "\"  \"",
            "non-empty",
        ),
        (
            GenerateRequest {
                width: 72,
                ..base.clone()
            },
            "width",
            "72",
            "a multiple of 16",
        ),
        (
            GenerateRequest {
                height: 2048,
                ..base.clone()
            },
            "height",
            "2048",
            "to 1024",
        ),
        (
            GenerateRequest {
                steps: Some(0),
                ..base.clone()
            },
            "steps",
            "0",
            "from 1 to 150",
        ),
        (
            GenerateRequest {
                steps: Some(1000),
                ..base.clone()
            },
            "steps",
            "1000",
            "from 1 to 150",
        ),
        (
            GenerateRequest {
                scheduler: "pndm".to_string(),
                ..base.clone()
            },
            "scheduler",
            "pndm",
            "ddim, euler_ancestral, ddpm",
        ),
        (
            GenerateRequest {
                init_image: Some(Image {
                    png: b"not a png".to_vec(),
                    width: 64,
                    height: 64,
                }),
                strength: 0.5,
                ..base.clone()
            },
            "init_image.png",
            "9 bytes",
            "PNG",
        ),
    ];
    for (request, field, value, limit) in cases {
        let status = client.generate(request).await.unwrap_err();
        assert_invalid(&status, field, value, limit);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_critique_requests_rejected() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = CriticClient::connect(stack.url("critic-1")).await.unwrap();
    let png = redraft_common::images::encode_png(&image::RgbImage::new(16, 16));
    let image = |png: Vec<u8>, width, height| Some(Image { png, width, height });
    let cases: Vec<(CritiqueRequest, &str, &str, &str)> = vec![
        (
            CritiqueRequest {
                prompt: "a red circle".into(),
                image: image(b"GIF89a".to_vec(), 16, 16),
                request_id: String::new(),
            },
            "image.png",
            "6 bytes",
            "PNG",
        ),
        (
            CritiqueRequest {
                prompt: "a red circle".into(),
                image: image(png.clone(), 32, 16),
                request_id: String::new(),
            },
            "image.width/height",
            "32x16",
            "16x16",
        ),
        (
            CritiqueRequest {
                prompt: "a red circle".into(),
                image: None,
                request_id: String::new(),
            },
            "image",
            "unset",
            "a PNG image",
        ),
        (
            CritiqueRequest {
                prompt: String::new(),
                image: image(png, 16, 16),
                request_id: String::new(),
            },
            "prompt",
            "\"\"",
            "non-empty",
        ),
    ];
    for (request, field, value, limit) in cases {
        let status = client.critique(request).await.unwrap_err();
        assert_invalid(&status, field, value, limit);
    }
    stack.stop().await;
}

//! The critic's probes and its CritiqueBatch call, on a real critic process
//! with the tiny random-weight model.

use redraft_proto::critic_client::CriticClient;
use redraft_proto::{CheckKind, CritiqueBatchRequest, CritiqueRequest, Image, InfoRequest};
use redraft_tests::TestStack;
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_redraft-under-test");

const PROMPT: &str = "a photo of two red circles to the left of a blue square";

fn image(seed: u8) -> Image {
    let picture = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, seed.wrapping_mul(40)])
    });
    Image {
        png: redraft_common::images::encode_png(&picture),
        width: 32,
        height: 32,
    }
}

fn kinds(critique: &redraft_proto::Critique) -> Vec<CheckKind> {
    critique
        .checks
        .iter()
        .map(|check| CheckKind::try_from(check.kind).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_matches_single_critiques() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = CriticClient::connect(stack.url("critic-1")).await.unwrap();

    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.max_batch_images, 16);
    for kind in [CheckKind::Count, CheckKind::Color, CheckKind::Relation] {
        assert!(info.check_kinds.contains(&i32::from(kind)), "{info:?}");
    }

    let images: Vec<Image> = (0..3).map(image).collect();
    let batch = client
        .critique_batch(CritiqueBatchRequest {
            prompt: PROMPT.to_string(),
            images: images.clone(),
            request_id: "batch".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.critiques.len(), 3);

    for (image, batched) in images.into_iter().zip(&batch.critiques) {
        let single = client
            .critique(CritiqueRequest {
                prompt: PROMPT.to_string(),
                image: Some(image),
                request_id: "single".to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(kinds(&single), kinds(batched));
        assert!((single.score - batched.score).abs() < 1e-4);
        for (a, b) in single.checks.iter().zip(&batched.checks) {
            assert!((a.score - b.score).abs() < 1e-4, "{a:?} vs {b:?}");
            assert_eq!(a.passed, b.passed, "{a:?} vs {b:?}");
        }
    }

    // Two objects with counts and colours, and one relation.
    let critique = &batch.critiques[0];
    let count_of = |kind: CheckKind| kinds(critique).iter().filter(|k| **k == kind).count();
    assert_eq!(count_of(CheckKind::Alignment), 1);
    assert_eq!(count_of(CheckKind::Presence), 2);
    assert_eq!(count_of(CheckKind::Count), 2);
    assert_eq!(count_of(CheckKind::Color), 2);
    assert_eq!(count_of(CheckKind::Relation), 1);

    let relation = critique
        .checks
        .iter()
        .find(|check| check.kind == i32::from(CheckKind::Relation))
        .unwrap();
    assert_eq!(relation.subject, "two red circles left of a blue square");
    assert_eq!(relation.expected, "left of");
    assert_eq!(relation.variants.len(), 2, "left of and its opposite");
    let own: Vec<_> = relation
        .variants
        .iter()
        .filter(|variant| variant.value.is_empty())
        .collect();
    assert_eq!(own.len(), 1, "{:?}", relation.variants);
    assert_eq!(own[0].text, relation.subject);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_rejected() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = CriticClient::connect(stack.url("critic-1")).await.unwrap();
    let request = |prompt: &str, images: Vec<Image>| CritiqueBatchRequest {
        prompt: prompt.to_string(),
        images,
        request_id: String::new(),
    };
    let broken = Image {
        png: b"GIF89a".to_vec(),
        width: 32,
        height: 32,
    };
    let cases = [
        (
            request(PROMPT, Vec::new()),
            "images",
            "0 images",
            "from 1 to 16 images",
        ),
        (
            request(PROMPT, (0..17).map(|_| image(1)).collect()),
            "images",
            "17 images",
            "from 1 to 16 images",
        ),
        (
            request(PROMPT, vec![image(1), broken]),
            "images[1].png",
            "6 bytes",
            "PNG",
        ),
        (request("", vec![image(1)]), "prompt", "\"\"", "non-empty"),
    ];
    for (request, field, value, limit) in cases {
        let status = client.critique_batch(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let message = status.message();
        assert!(message.contains(field), "{message:?} does not name {field}");
        assert!(message.contains(value), "{message:?} does not name {value}");
        assert!(message.contains(limit), "{message:?} does not name {limit}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_words_keep_judging() {
    let stack = TestStack::start(EXE.as_ref(), 1, 1).await.unwrap();
    let mut client = CriticClient::connect(stack.url("critic-1")).await.unwrap();
    let critique = client
        .critique(CritiqueRequest {
            prompt: "a photo of two zebras next to a red circle".to_string(),
            image: Some(image(2)),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        critique.summary.contains("\"zebras\""),
        "{}",
        critique.summary
    );
    // The alignment check judges the whole prompt; the probes skip the zebras.
    let subjects: Vec<&str> = critique
        .checks
        .iter()
        .filter(|check| !check.variants.is_empty())
        .map(|check| check.subject.as_str())
        .collect();
    assert!(subjects.contains(&"a circle"), "{subjects:?}");
    assert!(
        !subjects.iter().any(|subject| subject.contains("zebra")),
        "{subjects:?}"
    );
    stack.stop().await;
}

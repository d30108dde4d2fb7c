//! The model thread: owns the pipeline, takes requests from a bounded queue,
//! runs each request's images in batches of at most the pipeline's max
//! batch, and streams progress and one result per image back, so the async
//! runtime never blocks on a forward pass.

use std::time::Instant;

use redraft_proto::{
    GenerateEvent, GenerateProgress, GenerateRequest, GenerateResult, GenerateTimings, Image,
    generate_event,
};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument as _;

use crate::GeneratorError;
use crate::metrics as gen_metrics;
use crate::pipeline::{GenerationInput, Pipeline, StageTimings, StepProgress};
use crate::request::image_count;

/// Sender half of a `Generate` response stream.
pub type EventSender = mpsc::Sender<Result<GenerateEvent, Status>>;

/// One queued request.
pub struct WorkItem {
    /// Validated input.
    pub input: GenerationInput,
    /// The request as resolved, echoed in the result.
    pub resolved: GenerateRequest,
    /// Destination of the events. A closed channel cancels the work.
    pub events: EventSender,
    /// When the request was queued.
    pub queued_at: Instant,
    /// The RPC's span, entered on the model thread.
    pub span: tracing::Span,
}

/// Handle to the model thread.
#[derive(Clone)]
pub struct ModelHandle {
    queue: mpsc::Sender<WorkItem>,
    capacity: usize,
}

impl ModelHandle {
    /// Starts the model thread with a queue of `capacity` requests.
    pub fn spawn(pipeline: Pipeline, capacity: usize) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel(capacity);
        std::thread::Builder::new()
            .name("generator-model".to_string())
            .spawn(move || run_model_thread(pipeline, receiver))?;
        Ok(Self { queue, capacity })
    }

    /// Queues a request, or fails at once when the queue is full.
    pub fn submit(&self, item: WorkItem) -> Result<(), GeneratorError> {
        match self.queue.try_send(item) {
            Ok(()) => {
                gen_metrics::queue_depth(self.queue_depth());
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(GeneratorError::QueueFull {
                capacity: self.capacity,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(GeneratorError::Unavailable),
        }
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.queue.capacity()
    }

    /// Runs one request and waits for its first result, discarding progress
    /// and any further images; used for the warm-up and in tests.
    pub async fn run_to_completion(
        &self,
        input: GenerationInput,
        resolved: GenerateRequest,
    ) -> Result<GenerateResult, Status> {
        let (events, mut receiver) = mpsc::channel(event_capacity(&input, &resolved));
        self.submit(WorkItem {
            input,
            resolved,
            events,
            queued_at: Instant::now(),
            span: tracing::Span::current(),
        })?;
        while let Some(event) = receiver.recv().in_current_span().await {
            if let Some(generate_event::Event::Result(result)) = event?.event {
                return Ok(result);
            }
        }
        Err(Status::internal(
            "the model thread ended the stream without a result",
        ))
    }
}

fn run_model_thread(pipeline: Pipeline, mut receiver: mpsc::Receiver<WorkItem>) {
    while let Some(item) = receiver.blocking_recv() {
        gen_metrics::queue_depth(receiver.len());
        let span = item.span.clone();
        let _entered = span.enter();
        if item.events.is_closed() {
            tracing::info!("client went away before the request started; skipped");
            continue;
        }
        let outcome = run_request(&pipeline, &item);
        let error_type = outcome.as_ref().err().map(GeneratorError::error_type);
        redraft_common::telemetry::record_rpc(
            "generator",
            "generate",
            item.queued_at.elapsed(),
            error_type,
        );
        match outcome {
            Ok(()) => {}
            Err(GeneratorError::Cancelled { step, total }) => {
                tracing::info!(
                    step,
                    total,
                    "generation cancelled because the client went away"
                );
            }
            Err(error) => {
                tracing::error!(%error, error_type = error.error_type(), "generation failed");
                let _ = item.events.blocking_send(Err(error.into()));
            }
        }
    }
    tracing::info!("model thread stopped");
}

/// Returns the event channel capacity for a request: one progress event per
/// step of each batch (at most one batch per image) and one result per
/// image. With that room the model thread never blocks on a slow client.
pub fn event_capacity(input: &GenerationInput, resolved: &GenerateRequest) -> usize {
    (input.steps + 1) * image_count(resolved) + 1
}

/// Runs every image of `item`, in batches of at most the pipeline's max
/// batch, and sends each image's result as soon as its batch is decoded.
fn run_request(pipeline: &Pipeline, item: &WorkItem) -> Result<(), GeneratorError> {
    let started = Instant::now();
    let queue_seconds = started.duration_since(item.queued_at).as_secs_f64();
    let count = image_count(&item.resolved);
    let max_batch = pipeline.max_batch();
    let batches = count.div_ceil(max_batch);

    for batch in 0..batches {
        let first = batch * max_batch;
        let size = max_batch.min(count - first);
        let input = GenerationInput {
            seed: item.input.seed.wrapping_add(first as u64),
            ..item.input.clone()
        };
        // Progress counts the steps of all batches, so it rises monotonically.
        let mut on_step = |progress: StepProgress| {
            let event = GenerateEvent {
                event: Some(generate_event::Event::Progress(GenerateProgress {
                    step: (batch * progress.total + progress.step) as u32,
                    total_steps: (batches * progress.total) as u32,
                    elapsed_seconds: started.elapsed().as_secs_f64(),
                })),
            };
            // A full channel only drops a progress event; a closed one cancels.
            !matches!(
                item.events.try_send(Ok(event)),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        };
        let (images, stages) = pipeline.generate_batch(&input, size, &mut on_step)?;

        for (offset, image) in images.into_iter().enumerate() {
            let index = first + offset;
            let result = image_result(item, index, &image, &stages, size, queue_seconds);
            tracing::info!(
                seed = result.seed,
                index,
                steps = item.input.steps,
                seconds = started.elapsed().as_secs_f64(),
                "image generated"
            );
            gen_metrics::image_done(&result);
            let event = GenerateEvent {
                event: Some(generate_event::Event::Result(result)),
            };
            // A receiver dropped after the last image only loses the result
            // it stopped waiting for. Before that, the remaining images are
            // not needed.
            if item.events.blocking_send(Ok(event)).is_err() && index + 1 < count {
                return Err(GeneratorError::Cancelled {
                    step: (batch + 1) * item.input.steps,
                    total: batches * item.input.steps,
                });
            }
        }
    }
    Ok(())
}

/// Encodes image `index` of a request as its `GenerateResult`. `stages` are
/// the timings of its batch of `batch_size` images.
fn image_result(
    item: &WorkItem,
    index: usize,
    image: &image::RgbImage,
    stages: &StageTimings,
    batch_size: usize,
    queue_seconds: f64,
) -> GenerateResult {
    let encode_started = Instant::now();
    let png = redraft_common::images::encode_png(image);
    let decode_seconds =
        stages.decode.as_secs_f64() / batch_size as f64 + encode_started.elapsed().as_secs_f64();
    GenerateResult {
        image: Some(Image {
            png,
            width: image.width(),
            height: image.height(),
        }),
        seed: item.input.seed.wrapping_add(index as u64),
        resolved: Some(item.resolved.clone()),
        timings: Some(GenerateTimings {
            queue_seconds,
            text_encode_seconds: stages.text_encode.as_secs_f64(),
            denoise_seconds: stages.denoise.as_secs_f64(),
            decode_seconds,
            total_seconds: item.queued_at.elapsed().as_secs_f64(),
        }),
        index: index as u32,
    }
}

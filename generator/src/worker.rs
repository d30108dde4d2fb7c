//! The model thread: owns the pipeline, takes requests from a bounded queue,
//! and streams progress and the result back, so the async runtime never
//! blocks on a forward pass.

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
use crate::pipeline::{GenerationInput, Pipeline, StepProgress};

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

    /// Runs one request and waits for its result, discarding progress; used
    /// for the warm-up and in tests.
    pub async fn run_to_completion(
        &self,
        input: GenerationInput,
        resolved: GenerateRequest,
    ) -> Result<GenerateResult, Status> {
        let (events, mut receiver) = mpsc::channel(input.steps + 2);
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
        let outcome = run_one(&pipeline, &item);
        let error_type = outcome.as_ref().err().map(GeneratorError::error_type);
        redraft_common::telemetry::record_rpc(
            "generator",
            "generate",
            item.queued_at.elapsed(),
            error_type,
        );
        match outcome {
            Ok(result) => {
                gen_metrics::image_done(&result);
                let event = GenerateEvent {
                    event: Some(generate_event::Event::Result(result)),
                };
                // A receiver dropped at the very end only loses the result it stopped waiting for.
                let _ = item.events.blocking_send(Ok(event));
            }
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

fn run_one(pipeline: &Pipeline, item: &WorkItem) -> Result<GenerateResult, GeneratorError> {
    let started = Instant::now();
    let queue_seconds = started.duration_since(item.queued_at).as_secs_f64();
    let mut on_step = |progress: StepProgress| {
        let event = GenerateEvent {
            event: Some(generate_event::Event::Progress(GenerateProgress {
                step: progress.step as u32,
                total_steps: progress.total as u32,
                elapsed_seconds: started.elapsed().as_secs_f64(),
            })),
        };
        // A full channel only drops a progress event; a closed one cancels.
        !matches!(
            item.events.try_send(Ok(event)),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    };
    let (image, stages) = pipeline.generate(&item.input, &mut on_step)?;
    let encode_started = Instant::now();
    let png = redraft_common::images::encode_png(&image);
    let decode_seconds = stages.decode.as_secs_f64() + encode_started.elapsed().as_secs_f64();
    tracing::info!(
        seed = item.input.seed,
        steps = item.input.steps,
        seconds = started.elapsed().as_secs_f64(),
        "image generated"
    );
    Ok(GenerateResult {
        image: Some(Image {
            png,
            width: image.width(),
            height: image.height(),
        }),
        seed: item.input.seed,
        resolved: Some(item.resolved.clone()),
        timings: Some(GenerateTimings {
            queue_seconds,
            text_encode_seconds: stages.text_encode.as_secs_f64(),
            denoise_seconds: stages.denoise.as_secs_f64(),
            decode_seconds,
            total_seconds: item.queued_at.elapsed().as_secs_f64(),
        }),
    })
}

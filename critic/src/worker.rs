//! The model thread: owns the CLIP model and judges queued images one at a
//! time, so the async runtime never blocks on a forward pass.

use std::time::Instant;

use image::RgbImage;
use redraft_proto::Critique;
use tokio::sync::{mpsc, oneshot};

use crate::CriticError;
use crate::judge::Judge;

struct WorkItem {
    prompt: String,
    images: Vec<RgbImage>,
    reply: oneshot::Sender<Result<Vec<Critique>, CriticError>>,
    span: tracing::Span,
}

/// Handle to the model thread.
#[derive(Clone)]
pub struct JudgeHandle {
    queue: mpsc::Sender<WorkItem>,
    capacity: usize,
}

const QUEUE_DEPTH: &str = "redraft_critic_queue_depth";

/// Describes the critic's own metrics; call once at start-up.
pub fn describe_metrics() {
    metrics::describe_gauge!(QUEUE_DEPTH, "Requests waiting for the model thread.");
}

impl JudgeHandle {
    /// Starts the model thread with a queue of `capacity` requests.
    pub fn spawn(judge: Judge, capacity: usize) -> std::io::Result<Self> {
        let (queue, mut receiver) = mpsc::channel::<WorkItem>(capacity);
        std::thread::Builder::new()
            .name("critic-model".to_string())
            .spawn(move || {
                while let Some(item) = receiver.blocking_recv() {
                    metrics::gauge!(QUEUE_DEPTH).set(receiver.len() as f64);
                    let _entered = item.span.enter();
                    if item.reply.is_closed() {
                        tracing::info!("client went away before the critique started; skipped");
                        continue;
                    }
                    let outcome = judge.critique_batch(&item.prompt, &item.images);
                    // A dropped receiver only means the client stopped waiting.
                    let _ = item.reply.send(outcome);
                }
                tracing::info!("model thread stopped");
            })?;
        Ok(Self { queue, capacity })
    }

    /// Judges `image` against `prompt` on the model thread.
    pub async fn critique(&self, prompt: String, image: RgbImage) -> Result<Critique, CriticError> {
        let mut critiques = self.critique_batch(prompt, vec![image]).await?;
        critiques.pop().ok_or_else(|| {
            CriticError::Unavailable("the model thread returned no critique".to_string())
        })
    }

    /// Judges each of `images` against `prompt` on the model thread, as one
    /// batch that takes one place in the queue.
    pub async fn critique_batch(
        &self,
        prompt: String,
        images: Vec<RgbImage>,
    ) -> Result<Vec<Critique>, CriticError> {
        let (reply, receiver) = oneshot::channel();
        let item = WorkItem {
            prompt,
            images,
            reply,
            span: tracing::Span::current(),
        };
        match self.queue.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(CriticError::QueueFull {
                    capacity: self.capacity,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(CriticError::Unavailable(
                    "the model thread stopped".to_string(),
                ));
            }
        }
        metrics::gauge!(QUEUE_DEPTH).set((self.capacity - self.queue.capacity()) as f64);
        let queued = Instant::now();
        let outcome = receiver
            .await
            .map_err(|_| CriticError::Unavailable("the model thread stopped".to_string()))?;
        tracing::debug!(
            seconds = queued.elapsed().as_secs_f64(),
            "critique finished"
        );
        outcome
    }
}

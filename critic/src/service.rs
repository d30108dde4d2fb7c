//! The `redraft.v1.Critic` gRPC service.

use std::sync::Arc;
use std::time::Instant;

use redraft_common::invalid::check_prompt;
use redraft_common::{InvalidArgument, images};
use redraft_proto::critic_server::Critic;
use redraft_proto::{CriticInfo, Critique, CritiqueRequest, InfoRequest};
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::CriticError;
use crate::worker::JudgeHandle;

/// The loaded model, with the `Info` response the service uses.
pub struct Loaded {
    /// The model thread.
    pub handle: JudgeHandle,
    /// The `Info` response.
    pub info: CriticInfo,
}

/// gRPC front of the model thread. Until the model is loaded, calls get UNAVAILABLE.
#[derive(Clone)]
pub struct CriticService {
    loaded: Arc<OnceCell<Loaded>>,
    max_prompt_chars: usize,
    max_image_side: u32,
}

impl CriticService {
    /// Creates a service that serves once `loaded` is set.
    pub fn new(
        loaded: Arc<OnceCell<Loaded>>,
        max_prompt_chars: usize,
        max_image_side: u32,
    ) -> Self {
        Self {
            loaded,
            max_prompt_chars,
            max_image_side,
        }
    }

    async fn judge(&self, request: CritiqueRequest) -> Result<Critique, CriticError> {
        let loaded = self.loaded.get().ok_or_else(|| {
            CriticError::Unavailable("the critic model is still loading".to_string())
        })?;
        check_prompt("prompt", &request.prompt, self.max_prompt_chars)?;
        let image = request
            .image
            .ok_or_else(|| InvalidArgument::new("image", "unset", "a PNG image"))?;
        let image = images::decode_png(
            "image",
            &image.png,
            image.width,
            image.height,
            self.max_image_side,
        )?;
        loaded.handle.critique(request.prompt, image).await
    }
}

#[tonic::async_trait]
impl Critic for CriticService {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<CriticInfo>, Status> {
        let loaded = self
            .loaded
            .get()
            .ok_or_else(|| Status::unavailable("the critic model is still loading"))?;
        Ok(Response::new(loaded.info.clone()))
    }

    async fn critique(
        &self,
        request: Request<CritiqueRequest>,
    ) -> Result<Response<Critique>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let span = tracing::info_span!("critique", request_id = %request.request_id);
        let outcome = self.judge(request).instrument(span.clone()).await;
        let error_type = outcome.as_ref().err().map(CriticError::error_type);
        if let Err(error) = &outcome {
            span.in_scope(
                || tracing::warn!(%error, error_type = error.error_type(), "critique failed"),
            );
        }
        redraft_common::telemetry::record_rpc("critic", "critique", started.elapsed(), error_type);
        Ok(Response::new(outcome?))
    }
}

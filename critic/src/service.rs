//! The `redraft.v1.Critic` gRPC service.

use std::sync::Arc;
use std::time::Instant;

use redraft_common::invalid::check_prompt;
use redraft_common::{InvalidArgument, images};
use redraft_proto::critic_server::Critic;
use redraft_proto::{
    CriticInfo, Critique, CritiqueBatchRequest, CritiqueBatchResponse, CritiqueRequest, Image,
    InfoRequest,
};
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
    max_batch_images: u32,
}

impl CriticService {
    /// Creates a service that serves once `loaded` is set.
    pub fn new(
        loaded: Arc<OnceCell<Loaded>>,
        max_prompt_chars: usize,
        max_image_side: u32,
        max_batch_images: u32,
    ) -> Self {
        Self {
            loaded,
            max_prompt_chars,
            max_image_side,
            max_batch_images,
        }
    }

    fn loaded(&self) -> Result<&Loaded, CriticError> {
        self.loaded.get().ok_or_else(|| {
            CriticError::Unavailable("the critic model is still loading".to_string())
        })
    }

    fn decode(&self, field: &str, image: &Image) -> Result<image::RgbImage, CriticError> {
        Ok(images::decode_png(
            field,
            &image.png,
            image.width,
            image.height,
            self.max_image_side,
        )?)
    }

    async fn judge_batch(
        &self,
        request: CritiqueBatchRequest,
    ) -> Result<Vec<Critique>, CriticError> {
        let loaded = self.loaded()?;
        check_prompt("prompt", &request.prompt, self.max_prompt_chars)?;
        let count = request.images.len();
        if count == 0 || count > self.max_batch_images as usize {
            return Err(InvalidArgument::new(
                "images",
                format!("{count} images"),
                format!("from 1 to {} images", self.max_batch_images),
            )
            .into());
        }
        let mut decoded = Vec::with_capacity(count);
        for (index, image) in request.images.iter().enumerate() {
            decoded.push(self.decode(&format!("images[{index}]"), image)?);
        }
        loaded.handle.critique_batch(request.prompt, decoded).await
    }

    async fn judge(&self, request: CritiqueRequest) -> Result<Critique, CriticError> {
        let loaded = self.loaded()?;
        check_prompt("prompt", &request.prompt, self.max_prompt_chars)?;
        let image = request
            .image
            .ok_or_else(|| InvalidArgument::new("image", "unset", "a PNG image"))?;
        let image = self.decode("image", &image)?;
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

    async fn critique_batch(
        &self,
        request: Request<CritiqueBatchRequest>,
    ) -> Result<Response<CritiqueBatchResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let span = tracing::info_span!(
            "critique_batch",
            request_id = %request.request_id,
            images = request.images.len()
        );
        let outcome = self.judge_batch(request).instrument(span.clone()).await;
        let error_type = outcome.as_ref().err().map(CriticError::error_type);
        if let Err(error) = &outcome {
            span.in_scope(
                || tracing::warn!(%error, error_type = error.error_type(), "batch critique failed"),
            );
        }
        redraft_common::telemetry::record_rpc(
            "critic",
            "critique_batch",
            started.elapsed(),
            error_type,
        );
        Ok(Response::new(CritiqueBatchResponse {
            critiques: outcome?,
        }))
    }
}
